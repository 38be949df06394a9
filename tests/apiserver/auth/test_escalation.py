"""RBAC escalation prevention, the pure parts: covering rules, compaction, the message, the
garbage collector's exemption, and the plugin's decisions over an in-memory RBAC source.
(The API-level behaviour, with real users over HTTPS and kubectl, is in
test_escalation_api.py.)"""

from __future__ import annotations

import pytest

from sampan.api.errors import BadRequest, Forbidden, InternalError, NotFound
from sampan.apiserver.admission import AdmissionAttributes
from sampan.apiserver.auth import SYSTEM_AUTHENTICATED, RBACAuthorizer, StaticRBACSource, UserInfo
from sampan.apiserver.auth.escalation import (
    RBACEscalation,
    compact_rules,
    compact_string,
    escalation_message,
    is_only_mutating_gc_fields,
    uncovered_rules,
)

RBAC = "rbac.authorization.k8s.io"


def r(verbs, groups, resources, names=None):
    rule = {"verbs": verbs, "apiGroups": groups, "resources": resources}
    if names:
        rule["resourceNames"] = names
    return rule


def url_rule(verbs, urls):
    return {"verbs": verbs, "nonResourceURLs": urls}


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
    ([url_rule(["get"], ["/healthz/*"])], url_rule(["get"], ["/healthz/etcd"]), True),
    ([url_rule(["get"], ["/healthz"])], url_rule(["get"], ["/healthz/*"]), False),
    ([url_rule(["*"], ["*"])], url_rule(["get"], ["/x"]), True),
    # a resource rule never covers a URL, nor a URL rule a resource
    ([r(["*"], ["*"], ["*"])], url_rule(["get"], ["/x"]), False),
    ([url_rule(["*"], ["*"])], r(["get"], [""], ["pods"]), False),
]


@pytest.mark.parametrize(("owner", "requested", "covered"), COVER_CASES)
def test_covers(owner, requested, covered) -> None:
    assert (uncovered_rules(owner, [requested]) == []) is covered


def test_uncovered_are_atoms_in_breakdown_order() -> None:
    missing = uncovered_rules(
        [r(["get"], [""], ["pods"])], [r(["get", "delete"], [""], ["pods", "secrets"])]
    )
    assert missing == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["delete"]},
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["delete"]},
    ]


def test_compaction_and_message() -> None:
    missing = uncovered_rules(
        [],
        [
            r(["get", "list"], ["apps"], ["deployments"]),
            r(["get"], [""], ["configmaps"], ["a", "b"]),
            url_rule(["get", "post"], ["/metrics"]),
        ],
    )
    compacted = compact_rules(missing)
    assert {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list"]} in (
        compacted
    )
    assert {"nonResourceURLs": ["/metrics"], "verbs": ["get"]} in compacted
    jane = UserInfo("jane", groups=("team-a", SYSTEM_AUTHENTICATED))
    assert escalation_message(jane, missing) == (
        'user "jane" (groups=["team-a" "system:authenticated"]) is attempting to grant RBAC '
        "permissions not currently held:\n"
        '{APIGroups:[""], Resources:["configmaps"], ResourceNames:["a"], Verbs:["get"]}\n'
        '{APIGroups:[""], Resources:["configmaps"], ResourceNames:["b"], Verbs:["get"]}\n'
        '{APIGroups:["apps"], Resources:["deployments"], Verbs:["get" "list"]}\n'
        '{NonResourceURLs:["/metrics"], Verbs:["get"]}\n'
        '{NonResourceURLs:["/metrics"], Verbs:["post"]}'
    )
    one = escalation_message(jane, missing[:1], ['roles.rbac.authorization.k8s.io "x" not found'])
    assert one.endswith('; resolution errors: [roles.rbac.authorization.k8s.io "x" not found]')
    two = escalation_message(jane, missing[:1], ["a", "b", "a"])
    assert two.endswith("; resolution errors: [[a, b]]")
    assert compact_string(r(["get"], [""], ['we"ird'])) == (
        '{APIGroups:[""], Resources:["we\\"ird"], Verbs:["get"]}'
    )


def test_gc_fields_only() -> None:
    old = {
        "metadata": {"name": "x", "resourceVersion": "5", "finalizers": ["f"]},
        "rules": [r(["get"], [""], ["pods"])],
    }
    gc = {
        "metadata": {
            "name": "x",
            "ownerReferences": [{"uid": "u"}],
            "managedFields": [{"manager": "gc"}],
        },
        "rules": [r(["get"], [""], ["pods"])],
    }
    assert is_only_mutating_gc_fields(gc, old)
    assert not is_only_mutating_gc_fields({**gc, "rules": [r(["*"], ["*"], ["*"])]}, old)
    labelled = {"metadata": {**gc["metadata"], "labels": {"a": "b"}}, "rules": gc["rules"]}
    assert not is_only_mutating_gc_fields(labelled, old)
    assert not is_only_mutating_gc_fields(gc, None)


# --- the plugin over an in-memory RBAC source ----------------------------------------------------


def _binding(kind, name, role_kind, role, subject, ns=""):
    meta = {"name": name, "namespace": ns} if ns else {"name": name}
    return {
        "kind": kind,
        "metadata": meta,
        "roleRef": {"apiGroup": RBAC, "kind": role_kind, "name": role},
        "subjects": [{"apiGroup": RBAC, "kind": "User", "name": subject}],
    }


CLUSTER_ROLES = [
    {"metadata": {"name": "pods-rw"}, "rules": [r(["*"], [""], ["pods"])]},
    {
        "metadata": {"name": "cluster-admin"},
        "rules": [r(["*"], ["*"], ["*"]), url_rule(["*"], ["*"])],
    },
    {"metadata": {"name": "binder"}, "rules": [r(["bind"], [RBAC], ["clusterroles"], ["pods-rw"])]},
    {"metadata": {"name": "escalator"}, "rules": [r(["escalate"], [RBAC], ["roles"], ["named"])]},
]


@pytest.fixture
def plugin() -> RBACEscalation:
    source = StaticRBACSource(
        cluster_role_list=CLUSTER_ROLES,
        role_binding_list=[
            _binding("RoleBinding", "a", "ClusterRole", "pods-rw", "jane", "demo"),
            _binding("RoleBinding", "b", "ClusterRole", "binder", "binder", "demo"),
            _binding("RoleBinding", "c", "ClusterRole", "escalator", "esc", "demo"),
            _binding("RoleBinding", "d", "Role", "ghost", "jane", "demo"),
        ],
        cluster_role_binding_list=[
            _binding("ClusterRoleBinding", "root", "ClusterRole", "cluster-admin", "root"),
        ],
    )
    authorizer = RBACAuthorizer(source)

    async def get_object(group, plural, namespace, name):
        if plural == "clusterroles":
            return next((c for c in CLUSTER_ROLES if c["metadata"]["name"] == name), None)
        return None

    return RBACEscalation(authorizer.authorize, authorizer.resolved_rules, get_object)


def user(name, *groups):
    return UserInfo(name, groups=(*groups, SYSTEM_AUTHENTICATED))


def write(resource, obj, who, *, operation="CREATE", old=None, request_name=None):
    namespace = obj["metadata"].get("namespace", "")
    return AdmissionAttributes(
        operation=operation,
        group=RBAC,
        version="v1",
        resource=resource,
        subresource="",
        namespace=namespace,
        name=obj["metadata"]["name"],
        namespaced=bool(namespace),
        obj=obj,
        old_obj=old,
        user=who,
        request_name=request_name,
    )


def role(name, rules, ns="demo"):
    return {"kind": "Role", "metadata": {"name": name, "namespace": ns}, "rules": rules}


async def test_role_writes(plugin) -> None:
    jane = user("jane")
    held = role("x", [r(["get", "delete"], [""], ["pods"])])
    await plugin.admit(write("roles", held, jane))
    with pytest.raises(Forbidden) as refused:
        await plugin.admit(write("roles", role("x", [r(["get"], [""], ["secrets"])]), jane))
    assert refused.value.message == (
        'roles.rbac.authorization.k8s.io "x" is forbidden: user "jane" '
        '(groups=["system:authenticated"]) is attempting to grant RBAC permissions not '
        'currently held:\n{APIGroups:[""], Resources:["secrets"], Verbs:["get"]}'
        '; resolution errors: [roles.rbac.authorization.k8s.io "ghost" not found]'
    )
    assert refused.value.code == 403
    # held only in demo, so not grantable elsewhere
    with pytest.raises(Forbidden):
        await plugin.admit(write("roles", role("x", held["rules"], ns="other"), jane))
    # only the garbage collector's fields change: no check
    big = role("x", [r(["*"], ["*"], ["*"])])
    gc = {**big, "metadata": {**big["metadata"], "finalizers": ["f"]}}
    await plugin.admit(write("roles", gc, jane, operation="UPDATE", old=big))
    # system:masters: no check
    await plugin.admit(write("roles", big, user("root", "system:masters")))


async def test_escalate_uses_the_request_name(plugin) -> None:
    esc = user("esc")
    big = role("named", [r(["*"], ["*"], ["*"])])
    # PUT (or apply) of "named": the URL names it, escalate on "named" applies
    await plugin.admit(write("roles", big, esc, operation="UPDATE", old=role("named", [])))
    await plugin.admit(write("roles", big, esc))  # create-on-update / apply-create
    # POST create: the URL has no name, so escalate restricted to "named" does not apply
    with pytest.raises(Forbidden):
        await plugin.admit(write("roles", big, esc, request_name=""))


async def test_aggregation_rule_needs_full_authority(plugin) -> None:
    aggregated = {
        "kind": "ClusterRole",
        "metadata": {"name": "agg"},
        "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"a": "b"}}]},
        "rules": [],
    }
    with pytest.raises(Forbidden) as refused:
        await plugin.admit(write("clusterroles", aggregated, user("jane")))
    assert refused.value.message == (
        'clusterroles.rbac.authorization.k8s.io "agg" is forbidden: '
        "must have cluster-admin privileges to use the aggregationRule"
    )
    await plugin.admit(write("clusterroles", aggregated, user("root")))  # holds */*/* and *
    # dropping the aggregationRule needs it too
    plain = {**aggregated, "aggregationRule": None}
    with pytest.raises(Forbidden):
        await plugin.admit(
            write("clusterroles", plain, user("jane"), operation="UPDATE", old=aggregated)
        )


async def test_binding_writes(plugin) -> None:
    jane = user("jane")
    ok = _binding("RoleBinding", "ok", "ClusterRole", "pods-rw", "bob", "demo")
    await plugin.admit(write("rolebindings", ok, jane))
    pwn = _binding("RoleBinding", "pwn", "ClusterRole", "cluster-admin", "jane", "demo")
    with pytest.raises(Forbidden) as refused:
        await plugin.admit(write("rolebindings", pwn, jane))
    assert refused.value.message.startswith(
        'rolebindings.rbac.authorization.k8s.io "pwn" is forbidden: user "jane" '
        '(groups=["system:authenticated"]) is attempting to grant RBAC permissions not '
        'currently held:\n{APIGroups:["*"], Resources:["*"], Verbs:["*"]}\n'
        '{NonResourceURLs:["*"], Verbs:["*"]}'
    )
    # "bind" on exactly that role, in that namespace
    binder = user("binder")
    await plugin.admit(write("rolebindings", ok, binder))
    with pytest.raises(Forbidden):
        await plugin.admit(write("rolebindings", pwn, binder))
    crb = _binding("ClusterRoleBinding", "ok", "ClusterRole", "pods-rw", "bob")
    with pytest.raises(Forbidden):
        await plugin.admit(write("clusterrolebindings", crb, binder))
    # a missing role: 404 unless "bind" allows it
    ghost = _binding("RoleBinding", "g", "Role", "nope", "bob", "demo")
    with pytest.raises(NotFound) as missing:
        await plugin.admit(write("rolebindings", ghost, jane))
    assert missing.value.message == 'roles.rbac.authorization.k8s.io "nope" not found'
    odd = _binding("RoleBinding", "odd", "Foo", "x", "bob", "demo")
    with pytest.raises(InternalError):
        await plugin.admit(write("rolebindings", odd, jane))
    crb_role = _binding("ClusterRoleBinding", "r", "Role", "x", "bob")
    with pytest.raises(BadRequest):
        await plugin.admit(write("clusterrolebindings", crb_role, jane))
