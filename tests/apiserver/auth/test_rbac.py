"""RBAC authorizer: rule matching table, bindings and subjects, caching, messages."""

from __future__ import annotations

import pytest

from sampan.apiserver.auth import (
    Attributes,
    RBACAuthorizer,
    StaticRBACSource,
    UserInfo,
    aggregate_cluster_role,
    forbidden_message,
)
from sampan.apiserver.auth.rbac import label_selector_matches

JANE = UserInfo("jane", groups=("devs", "system:authenticated"))


def res(verb, resource, *, group="", ns="demo", name="", sub="", user=JANE) -> Attributes:
    return Attributes(
        user=user,
        verb=verb,
        namespace=ns,
        api_group=group,
        resource=resource,
        subresource=sub,
        name=name,
    )


def url(verb, path, user=JANE) -> Attributes:
    return Attributes(user=user, verb=verb, path=path, resource_request=False)


RULE_CASES = [
    # (rule, attributes, allowed)
    ({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}, res("get", "pods"), True),
    ({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}, res("list", "pods"), False),
    ({"verbs": ["*"], "apiGroups": [""], "resources": ["pods"]}, res("delete", "pods"), True),
    (
        {"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]},
        res("get", "pods", group="apps"),
        False,
    ),
    (
        {"verbs": ["get"], "apiGroups": ["*"], "resources": ["deployments"]},
        res("get", "deployments", group="apps"),
        True,
    ),
    ({"verbs": ["get"], "apiGroups": [""], "resources": ["*"]}, res("get", "secrets"), True),
    # "pods" does not grant subresources
    (
        {"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]},
        res("get", "pods", sub="log"),
        False,
    ),
    (
        {"verbs": ["get"], "apiGroups": [""], "resources": ["pods/log"]},
        res("get", "pods", sub="log"),
        True,
    ),
    (
        {"verbs": ["get"], "apiGroups": [""], "resources": ["pods/log"]},
        res("get", "pods"),
        False,
    ),
    # "*" covers subresources too
    (
        {"verbs": ["get"], "apiGroups": [""], "resources": ["*"]},
        res("get", "pods", sub="log"),
        True,
    ),
    # "*/scale" covers any resource's scale subresource, and nothing else
    (
        {"verbs": ["update"], "apiGroups": ["apps"], "resources": ["*/scale"]},
        res("update", "deployments", group="apps", sub="scale"),
        True,
    ),
    (
        {"verbs": ["update"], "apiGroups": ["apps"], "resources": ["*/scale"]},
        res("update", "deployments", group="apps", sub="status"),
        False,
    ),
    (
        {"verbs": ["update"], "apiGroups": ["apps"], "resources": ["*/scale"]},
        res("update", "deployments", group="apps"),
        False,
    ),
    # resourceNames
    (
        {"verbs": ["get"], "apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["a"]},
        res("get", "configmaps", name="a"),
        True,
    ),
    (
        {"verbs": ["get"], "apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["a"]},
        res("get", "configmaps", name="b"),
        False,
    ),
    (
        {"verbs": ["list"], "apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["a"]},
        res("list", "configmaps"),
        False,
    ),
    # non-resource URLs
    ({"verbs": ["get"], "nonResourceURLs": ["/healthz"]}, url("get", "/healthz"), True),
    ({"verbs": ["get"], "nonResourceURLs": ["/healthz"]}, url("get", "/healthz/etcd"), False),
    ({"verbs": ["get"], "nonResourceURLs": ["/healthz/*"]}, url("get", "/healthz/etcd"), True),
    ({"verbs": ["get"], "nonResourceURLs": ["/apis/*"]}, url("get", "/apis"), False),
    ({"verbs": ["get"], "nonResourceURLs": ["*"]}, url("get", "/anything"), True),
    ({"verbs": ["get"], "nonResourceURLs": ["/version"]}, url("post", "/version"), False),
    # resource rules never match paths, and URL rules never match resources
    ({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}, url("get", "/healthz"), False),
    ({"verbs": ["*"], "nonResourceURLs": ["*"]}, res("get", "pods"), False),
    # a rule without verbs grants nothing
    ({"verbs": [], "apiGroups": ["*"], "resources": ["*"]}, res("get", "pods"), False),
]


@pytest.mark.parametrize(("rule", "attrs", "allowed"), RULE_CASES)
def test_rule_matching(rule, attrs, allowed) -> None:
    # the one rule, in a ClusterRole bound to jane cluster-wide
    only_rule = StaticRBACSource(
        cluster_role_list=[cluster_role("one-rule", [rule])],
        cluster_role_binding_list=[
            binding("ClusterRoleBinding", "one", "ClusterRole", "one-rule", [user_subject("jane")])
        ],
    )
    assert RBACAuthorizer(only_rule).authorize(attrs).allowed is allowed


def cluster_role(name, rules, labels=None, aggregation=None):
    role = {
        "kind": "ClusterRole",
        "metadata": {"name": name, "labels": labels or {}},
        "rules": rules,
    }
    if aggregation is not None:
        role["aggregationRule"] = {"clusterRoleSelectors": aggregation}
    return role


def role(ns, name, rules):
    return {"kind": "Role", "metadata": {"name": name, "namespace": ns}, "rules": rules}


def binding(kind, name, role_kind, role_name, subjects, ns=""):
    meta = {"name": name}
    if ns:
        meta["namespace"] = ns
    return {
        "kind": kind,
        "metadata": meta,
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role_name},
        "subjects": subjects,
    }


def user_subject(name):
    return {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": name}


def group_subject(name):
    return {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": name}


def sa_subject(name, ns=None):
    subject = {"kind": "ServiceAccount", "name": name}
    if ns is not None:
        subject["namespace"] = ns
    return subject


POD_READER = [{"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]}]


@pytest.fixture
def source() -> StaticRBACSource:
    return StaticRBACSource(
        cluster_role_list=[
            cluster_role("pod-reader", POD_READER),
            cluster_role(
                "health", [{"verbs": ["get"], "nonResourceURLs": ["/healthz", "/healthz/*"]}]
            ),
            cluster_role(
                "node-reader", [{"verbs": ["get"], "apiGroups": [""], "resources": ["nodes"]}]
            ),
        ],
        cluster_role_binding_list=[
            binding(
                "ClusterRoleBinding", "nodes", "ClusterRole", "node-reader", [group_subject("devs")]
            ),
            binding(
                "ClusterRoleBinding", "health", "ClusterRole", "health", [user_subject("jane")]
            ),
        ],
        role_list=[
            role(
                "demo",
                "cm-writer",
                [{"verbs": ["create"], "apiGroups": [""], "resources": ["configmaps"]}],
            )
        ],
        role_binding_list=[
            # RoleBinding -> ClusterRole: pod-reader only in "demo"
            binding(
                "RoleBinding",
                "jane-pods",
                "ClusterRole",
                "pod-reader",
                [user_subject("jane")],
                ns="demo",
            ),
            binding("RoleBinding", "cm", "Role", "cm-writer", [group_subject("devs")], ns="demo"),
            # SA subject without namespace: the binding's namespace
            binding(
                "RoleBinding",
                "sa-local",
                "ClusterRole",
                "pod-reader",
                [sa_subject("robot")],
                ns="demo",
            ),
            # SA subject in another namespace
            binding(
                "RoleBinding",
                "sa-cross",
                "ClusterRole",
                "pod-reader",
                [sa_subject("bot", "ci")],
                ns="demo",
            ),
            binding(
                "RoleBinding", "dangling", "Role", "missing-role", [user_subject("jane")], ns="demo"
            ),
        ],
    )


def test_bindings_and_subjects(source: StaticRBACSource) -> None:
    authz = RBACAuthorizer(source)
    # RoleBinding to a ClusterRole grants only in its namespace
    assert authz.authorize(res("get", "pods")).allowed
    assert not authz.authorize(res("get", "pods", ns="other")).allowed
    assert not authz.authorize(res("get", "pods", ns="")).allowed
    # Group subject via Role
    assert authz.authorize(res("create", "configmaps")).allowed
    assert not authz.authorize(res("delete", "configmaps")).allowed
    # ClusterRoleBinding grants everywhere, including cluster scope
    assert authz.authorize(res("get", "nodes", ns="")).allowed
    assert authz.authorize(res("get", "nodes", ns="anything")).allowed
    # non-resource via ClusterRoleBinding
    assert authz.authorize(url("get", "/healthz/ping")).allowed
    assert not authz.authorize(url("get", "/metrics")).allowed
    # another user gets nothing
    bob = UserInfo("bob", groups=("system:authenticated",))
    assert not authz.authorize(res("get", "pods", user=bob)).allowed
    # service accounts
    robot = UserInfo("system:serviceaccount:demo:robot", groups=("system:serviceaccounts",))
    robot_elsewhere = UserInfo("system:serviceaccount:other:robot")
    ci_bot = UserInfo("system:serviceaccount:ci:bot")
    assert authz.authorize(res("list", "pods", user=robot)).allowed
    assert not authz.authorize(res("list", "pods", user=robot_elsewhere)).allowed
    assert authz.authorize(res("list", "pods", user=ci_bot)).allowed
    assert not authz.authorize(res("list", "pods", user=ci_bot, ns="ci")).allowed


def test_allow_reason_names_the_binding(source: StaticRBACSource) -> None:
    decision = RBACAuthorizer(source).authorize(res("get", "pods"))
    assert decision.reason == (
        'RBAC: allowed by RoleBinding "jane-pods" in "demo" of ClusterRole "pod-reader" '
        'to User "jane"'
    )
    denied = RBACAuthorizer(source).authorize(res("delete", "pods"))
    assert denied.allowed is False


def test_system_masters_always_allowed() -> None:
    authz = RBACAuthorizer(StaticRBACSource())
    admin = UserInfo("system:admin", groups=("system:masters", "system:authenticated"))
    assert authz.authorize(res("delete", "anything", group="x.io", user=admin)).allowed
    assert authz.authorize(url("post", "/whatever", user=admin)).allowed
    assert not authz.authorize(res("get", "pods")).allowed


def test_generation_change_invalidates_cache(source: StaticRBACSource) -> None:
    authz = RBACAuthorizer(source)
    assert not authz.authorize(res("delete", "pods")).allowed
    source.cluster_role_list[0]["rules"] = [
        {"verbs": ["*"], "apiGroups": [""], "resources": ["pods"]}
    ]
    # same generation: the cached rule set is used
    assert not authz.authorize(res("delete", "pods")).allowed
    source.bump()
    assert authz.authorize(res("delete", "pods")).allowed
    # removing the binding takes effect after the bump too
    source.role_binding_list = [
        b for b in source.role_binding_list if b["metadata"]["name"] != "jane-pods"
    ]
    source.bump()
    assert not authz.authorize(res("delete", "pods")).allowed


def test_group_change_is_a_different_cache_key(source: StaticRBACSource) -> None:
    authz = RBACAuthorizer(source)
    assert authz.authorize(res("get", "nodes", ns="")).allowed
    not_dev = UserInfo("jane", groups=("system:authenticated",))
    assert not authz.authorize(res("get", "nodes", ns="", user=not_dev)).allowed


def test_rules_for(source: StaticRBACSource) -> None:
    authz = RBACAuthorizer(source)
    resource_rules, non_resource_rules, incomplete = authz.rules_for(JANE, "demo")
    assert {"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]} in resource_rules
    assert {"verbs": ["create"], "apiGroups": [""], "resources": ["configmaps"]} in resource_rules
    assert {"verbs": ["get"], "apiGroups": [""], "resources": ["nodes"]} in resource_rules
    assert non_resource_rules == [{"verbs": ["get"], "nonResourceURLs": ["/healthz", "/healthz/*"]}]
    assert incomplete is True  # the dangling binding
    _, _, incomplete_elsewhere = authz.rules_for(JANE, "other")
    assert incomplete_elsewhere is False


def test_forbidden_messages() -> None:
    jane = UserInfo("jane")
    assert forbidden_message(res("get", "configmaps", name="c", user=jane)) == (
        'configmaps "c" is forbidden: User "jane" cannot get resource "configmaps" '
        'in API group "" in the namespace "demo"'
    )
    assert forbidden_message(res("list", "configmaps", user=jane)) == (
        'configmaps is forbidden: User "jane" cannot list resource "configmaps" '
        'in API group "" in the namespace "demo"'
    )
    assert forbidden_message(res("list", "nodes", ns="", user=jane)) == (
        'nodes is forbidden: User "jane" cannot list resource "nodes" '
        'in API group "" at the cluster scope'
    )
    assert forbidden_message(res("create", "pods", name="p", sub="exec", user=jane)) == (
        'pods "p" is forbidden: User "jane" cannot create resource "pods/exec" '
        'in API group "" in the namespace "demo"'
    )
    assert forbidden_message(res("get", "deployments", group="apps", name="web", user=jane)) == (
        'deployments.apps "web" is forbidden: User "jane" cannot get resource "deployments" '
        'in API group "apps" in the namespace "demo"'
    )
    assert forbidden_message(url("get", "/foo", user=jane)) == (
        'forbidden: User "jane" cannot get path "/foo"'
    )


def test_label_selector() -> None:
    labels = {"a": "1", "b": "2"}
    assert label_selector_matches({}, labels)
    assert label_selector_matches({"matchLabels": {"a": "1"}}, labels)
    assert not label_selector_matches({"matchLabels": {"a": "2"}}, labels)
    expr = lambda op, values=None: {  # noqa: E731
        "matchExpressions": [{"key": "a", "operator": op, "values": values or []}]
    }
    assert label_selector_matches(expr("In", ["1", "3"]), labels)
    assert not label_selector_matches(expr("NotIn", ["1"]), labels)
    assert label_selector_matches(expr("NotIn", ["x"]), {})
    assert label_selector_matches(expr("Exists"), labels)
    assert not label_selector_matches(expr("DoesNotExist"), labels)
    assert not label_selector_matches(expr("Bogus"), labels)


def test_aggregate_cluster_role() -> None:
    rule_a = {"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}
    rule_b = {"verbs": ["list"], "apiGroups": [""], "resources": ["pods"]}
    target = cluster_role(
        "agg",
        [],
        labels={"x": "true"},
        aggregation=[{"matchLabels": {"x": "true"}}, {"matchLabels": {"y": "true"}}],
    )
    roles = [
        target,
        cluster_role("z-part", [rule_b, rule_a], labels={"x": "true"}),
        cluster_role("a-part", [rule_a], labels={"x": "true"}),
        cluster_role(
            "y-part",
            [rule_b, {"verbs": ["watch"], "apiGroups": [""], "resources": ["pods"]}],
            labels={"y": "true"},
        ),
        cluster_role("unrelated", [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}]),
    ]
    rules = aggregate_cluster_role(target, roles)
    # name order within a selector, selectors in order, duplicates dropped, self excluded
    assert rules == [rule_a, rule_b, {"verbs": ["watch"], "apiGroups": [""], "resources": ["pods"]}]
    plain = cluster_role("plain", [rule_a])
    assert aggregate_cluster_role(plain, roles) == [rule_a]
