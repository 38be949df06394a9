"""RBAC escalation prevention: covering rules, escalate/bind verbs, messages."""

from __future__ import annotations

import pytest

from sampan.apiserver.auth import SYSTEM_AUTHENTICATED, RBACAuthorizer, StaticRBACSource, UserInfo
from sampan.apiserver.auth.escalation import (
    check_binding_grant,
    check_role_grant,
    escalation_message,
    uncovered_rules,
)


def r(verbs, groups, resources, names=None):
    rule = {"verbs": verbs, "apiGroups": groups, "resources": resources}
    if names:
        rule["resourceNames"] = names
    return rule


COVER_CASES = [
    # (owner rules, requested rule, covered)
    ([r(["get", "list"], [""], ["pods"])], r(["get"], [""], ["pods"]), True),
    ([r(["get"], [""], ["pods"])], r(["get", "delete"], [""], ["pods"]), False),
    ([r(["*"], ["*"], ["*"])], r(["*"], ["apps"], ["deployments/scale"]), True),
    ([r(["get"], [""], ["pods"])], r(["*"], [""], ["pods"]), False),  # '*' needs '*'
    ([r(["get"], ["*"], ["pods"])], r(["get"], ["apps"], ["pods"]), True),
    ([r(["get"], [""], ["pods"])], r(["get"], [""], ["pods/log"]), False),
    ([r(["update"], ["apps"], ["*/scale"])], r(["update"], ["apps"], ["deployments/scale"]), True),
    ([r(["update"], ["apps"], ["*/scale"])], r(["update"], ["apps"], ["deployments"]), False),
    ([r(["get"], [""], ["configmaps"])], r(["get"], [""], ["configmaps"], ["a"]), True),
    ([r(["get"], [""], ["configmaps"], ["a"])], r(["get"], [""], ["configmaps"], ["a"]), True),
    ([r(["get"], [""], ["configmaps"], ["a"])], r(["get"], [""], ["configmaps"], ["b"]), False),
    ([r(["get"], [""], ["configmaps"], ["a"])], r(["get"], [""], ["configmaps"]), False),
    (
        [{"verbs": ["get"], "nonResourceURLs": ["/healthz/*"]}],
        {"verbs": ["get"], "nonResourceURLs": ["/healthz/etcd"]},
        True,
    ),
    (
        [{"verbs": ["get"], "nonResourceURLs": ["/healthz"]}],
        {"verbs": ["get"], "nonResourceURLs": ["/healthz/*"]},
        False,
    ),
    (
        [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
        {"verbs": ["get"], "nonResourceURLs": ["/x"]},
        True,
    ),
]


@pytest.mark.parametrize(("owner", "requested", "covered"), COVER_CASES)
def test_covers(owner, requested, covered) -> None:
    assert (uncovered_rules(owner, [requested]) == []) is covered


def test_uncovered_are_atoms() -> None:
    missing = uncovered_rules(
        [r(["get"], [""], ["pods"])], [r(["get", "delete"], [""], ["pods", "secrets"])]
    )
    assert missing == [
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["delete"]},
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["delete"]},
    ]
    message = escalation_message(UserInfo("jane", groups=("system:authenticated",)), missing[:1])
    assert message == (
        'user "jane" (groups=["system:authenticated"]) is attempting to grant RBAC permissions '
        'not currently held:\n{APIGroups:[""], Resources:["secrets"], Verbs:["get"]}'
    )


def _binding(name, role_kind, role, user, ns):
    return {
        "kind": "RoleBinding",
        "metadata": {"name": name, "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }


@pytest.fixture
def authz() -> RBACAuthorizer:
    rbac = "rbac.authorization.k8s.io"
    cluster_roles = [
        {"metadata": {"name": "pods-rw"}, "rules": [r(["*"], [""], ["pods"])]},
        {"metadata": {"name": "cluster-admin"}, "rules": [r(["*"], ["*"], ["*"])]},
        {
            "metadata": {"name": "role-admin"},
            "rules": [r(["create", "update"], [rbac], ["roles", "rolebindings"])],
        },
        {
            "metadata": {"name": "binder"},
            "rules": [r(["bind"], [rbac], ["clusterroles"], ["cluster-admin"])],
        },
        {"metadata": {"name": "escalator"}, "rules": [r(["escalate"], [rbac], ["roles"])]},
    ]
    role_bindings = [
        _binding("a", "ClusterRole", "pods-rw", "jane", "demo"),
        _binding("b", "ClusterRole", "role-admin", "jane", "demo"),
        _binding("c", "ClusterRole", "binder", "binder", "demo"),
        _binding("d", "ClusterRole", "escalator", "esc", "demo"),
    ]
    return RBACAuthorizer(
        StaticRBACSource(cluster_role_list=cluster_roles, role_binding_list=role_bindings)
    )


def user(name, *groups):
    return UserInfo(name, groups=(*groups, SYSTEM_AUTHENTICATED))


def test_role_grant(authz) -> None:
    jane = user("jane")
    held = [r(["get", "delete"], [""], ["pods"])]
    assert check_role_grant(authz, jane, kind="Role", name="x", namespace="demo", rules=held) == []
    more = [r(["get"], [""], ["secrets"])]
    assert check_role_grant(authz, jane, kind="Role", name="x", namespace="demo", rules=more)
    # held only in demo, so not grantable elsewhere
    assert check_role_grant(authz, jane, kind="Role", name="x", namespace="other", rules=held)
    # escalate verb lets it through; system:masters too
    esc = user("esc")
    assert check_role_grant(authz, esc, kind="Role", name="x", namespace="demo", rules=more) == []
    admin = user("root", "system:masters")
    assert (
        check_role_grant(authz, admin, kind="ClusterRole", name="x", namespace="", rules=more) == []
    )


def test_binding_grant(authz) -> None:
    jane = user("jane")
    pods_rw = {"kind": "ClusterRole", "name": "pods-rw"}
    admin_ref = {"kind": "ClusterRole", "name": "cluster-admin"}
    rules = {"pods-rw": [r(["*"], [""], ["pods"])], "cluster-admin": [r(["*"], ["*"], ["*"])]}
    assert (
        check_binding_grant(
            authz, jane, role_ref=pods_rw, namespace="demo", role_rules=rules["pods-rw"]
        )
        == []
    )
    assert check_binding_grant(
        authz, jane, role_ref=admin_ref, namespace="demo", role_rules=rules["cluster-admin"]
    )
    # "bind" on exactly that role
    binder = user("binder")
    assert (
        check_binding_grant(
            authz, binder, role_ref=admin_ref, namespace="demo", role_rules=rules["cluster-admin"]
        )
        == []
    )
    assert check_binding_grant(
        authz, binder, role_ref=pods_rw, namespace="demo", role_rules=rules["pods-rw"]
    )
    # missing role: only "bind" allows it
    missing = check_binding_grant(
        authz, jane, role_ref={"kind": "Role", "name": "nope"}, namespace="demo", role_rules=None
    )
    assert missing == [
        {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles"], "verbs": ["bind"]}
    ]
