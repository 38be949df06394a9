"""Bootstrap RBAC policy: shape, consistency, and what the default roles actually grant."""

from __future__ import annotations

import pytest

from sampan.apiserver.auth import (
    ANONYMOUS,
    SYSTEM_AUTHENTICATED,
    Attributes,
    RBACAuthorizer,
    StaticRBACSource,
    UserInfo,
    aggregate_cluster_role,
)
from sampan.apiserver.auth.bootstrap import bootstrap_namespaced_policy, bootstrap_policy

USERS = {
    name: UserInfo(name, groups=(SYSTEM_AUTHENTICATED,)) for name in ("viewer", "editor", "boss")
}


@pytest.fixture(scope="module")
def policy() -> list[dict]:
    return bootstrap_policy()


@pytest.fixture(scope="module")
def authz(policy) -> RBACAuthorizer:
    role_bindings = [
        {
            "kind": "RoleBinding",
            "metadata": {"name": f"{user}-binding", "namespace": "demo"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": role,
            },
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
        }
        for user, role in (("viewer", "view"), ("editor", "edit"), ("boss", "admin"))
    ]
    return RBACAuthorizer(
        StaticRBACSource(
            cluster_role_list=[o for o in policy if o["kind"] == "ClusterRole"],
            cluster_role_binding_list=[o for o in policy if o["kind"] == "ClusterRoleBinding"],
            role_binding_list=role_bindings,
        )
    )


def can(authz, user, verb, resource, *, group="", ns="demo", sub="", name="") -> bool:
    if isinstance(user, str):
        user = USERS.get(user) or UserInfo(user, groups=(SYSTEM_AUTHENTICATED,))
    attrs = Attributes(
        user=user,
        verb=verb,
        namespace=ns,
        api_group=group,
        resource=resource,
        subresource=sub,
        name=name,
    )
    return authz.authorize(attrs).allowed


def can_get_path(authz, user, path) -> bool:
    return authz.authorize(
        Attributes(user=user, verb="get", path=path, resource_request=False)
    ).allowed


def test_objects_are_well_formed(policy) -> None:
    keys = [(o["kind"], o["metadata"]["name"]) for o in policy]
    assert len(keys) == len(set(keys))
    for obj in policy:
        assert obj["apiVersion"] == "rbac.authorization.k8s.io/v1"
        assert obj["kind"] in ("ClusterRole", "ClusterRoleBinding")
        assert obj["metadata"]["labels"]["kubernetes.io/bootstrapping"] == "rbac-defaults"
        assert obj["metadata"]["annotations"] == {
            "rbac.authorization.kubernetes.io/autoupdate": "true"
        }
    # roles come before bindings, so creating them in order never dangles
    kinds = [o["kind"] for o in policy]
    assert kinds == sorted(kinds, key=lambda k: k != "ClusterRole")


def test_every_binding_points_at_an_existing_role(policy) -> None:
    roles = {o["metadata"]["name"] for o in policy if o["kind"] == "ClusterRole"}
    for binding in (o for o in policy if o["kind"] == "ClusterRoleBinding"):
        assert binding["roleRef"]["kind"] == "ClusterRole"
        assert binding["roleRef"]["name"] in roles, binding["metadata"]["name"]
        # system:node alone has no subjects: the Node authorizer grants nodes (as upstream)
        assert bool(binding["subjects"]) == (binding["metadata"]["name"] != "system:node")


def test_expected_names_present(policy) -> None:
    roles = {o["metadata"]["name"] for o in policy if o["kind"] == "ClusterRole"}
    assert {
        "cluster-admin",
        "admin",
        "edit",
        "view",
        "system:aggregate-to-admin",
        "system:aggregate-to-edit",
        "system:aggregate-to-view",
        "system:discovery",
        "system:basic-user",
        "system:public-info-viewer",
        "system:node",
        "system:node-proxier",
        "system:kube-scheduler",
        "system:kube-controller-manager",
        "system:kube-dns",
        "system:auth-delegator",
        "system:monitoring",
        "system:sampan-controller",
    } <= roles


def test_aggregated_roles_have_rules_and_are_stable(policy) -> None:
    roles = [o for o in policy if o["kind"] == "ClusterRole"]
    by_name = {r["metadata"]["name"]: r for r in roles}
    for name in ("admin", "edit", "view"):
        role = by_name[name]
        assert role["rules"], name
        assert "aggregationRule" in role
        # what an aggregation controller would compute now is what we ship
        assert aggregate_cluster_role(role, roles) == role["rules"]
    # view's rules flow into edit, edit's into admin
    assert all(rule in by_name["edit"]["rules"] for rule in by_name["view"]["rules"])
    assert all(rule in by_name["admin"]["rules"] for rule in by_name["edit"]["rules"])


def test_bootstrap_policy_returns_fresh_copies() -> None:
    first = bootstrap_policy()
    first[0]["rules"].clear()
    assert bootstrap_policy()[0]["rules"]


def test_view(authz) -> None:
    assert can(authz, "viewer", "list", "pods")
    assert can(authz, "viewer", "get", "pods", sub="log")
    assert can(authz, "viewer", "watch", "deployments", group="apps")
    assert not can(authz, "viewer", "list", "secrets")
    assert not can(authz, "viewer", "get", "secrets", name="s")
    assert not can(authz, "viewer", "create", "pods")
    assert not can(authz, "viewer", "create", "pods", sub="exec")
    assert not can(authz, "viewer", "list", "pods", ns="other")


def test_edit(authz) -> None:
    assert can(authz, "editor", "create", "deployments", group="apps")
    assert can(authz, "editor", "patch", "deployments", group="apps", sub="scale")
    assert can(authz, "editor", "list", "secrets")
    assert can(authz, "editor", "create", "pods", sub="exec")
    assert can(authz, "editor", "create", "serviceaccounts", sub="token")
    assert can(authz, "editor", "list", "pods")  # through view
    assert not can(authz, "editor", "create", "rolebindings", group="rbac.authorization.k8s.io")
    assert not can(authz, "editor", "update", "resourcequotas")


def test_admin(authz) -> None:
    assert can(authz, "boss", "create", "rolebindings", group="rbac.authorization.k8s.io")
    assert can(authz, "boss", "create", "roles", group="rbac.authorization.k8s.io")
    assert can(authz, "boss", "delete", "deployments", group="apps")
    assert can(authz, "boss", "list", "pods")
    # a RoleBinding never reaches cluster-scoped resources
    assert not can(authz, "boss", "list", "nodes", ns="")
    assert not can(authz, "boss", "list", "pods", ns="kube-system")


def test_discovery_and_public_info(authz) -> None:
    someone = UserInfo("someone", groups=(SYSTEM_AUTHENTICATED,))
    for path in ("/api", "/apis/apps/v1", "/version", "/openapi/v2", "/healthz"):
        assert can_get_path(authz, someone, path), path
    assert can(authz, someone, "create", "selfsubjectreviews", group="authentication.k8s.io", ns="")
    assert can(
        authz, someone, "create", "selfsubjectaccessreviews", group="authorization.k8s.io", ns=""
    )
    assert not can(authz, someone, "list", "pods")
    # anonymous: public info only
    for path in ("/healthz", "/livez", "/readyz", "/version"):
        assert can_get_path(authz, ANONYMOUS, path), path
    assert not can_get_path(authz, ANONYMOUS, "/api")
    assert not can_get_path(authz, ANONYMOUS, "/metrics")


def test_component_identities(authz) -> None:
    admin = UserInfo("system:admin", groups=("system:masters", SYSTEM_AUTHENTICATED))
    assert can(authz, admin, "escalate", "clusterroles", group="rbac.authorization.k8s.io", ns="")
    scheduler = "system:kube-scheduler"
    assert can(authz, scheduler, "create", "pods", sub="binding")
    assert can(
        authz,
        scheduler,
        "update",
        "leases",
        group="coordination.k8s.io",
        ns="kube-system",
        name="kube-scheduler",
    )
    assert not can(
        authz,
        scheduler,
        "update",
        "leases",
        group="coordination.k8s.io",
        ns="kube-system",
        name="other",
    )
    assert not can(authz, scheduler, "create", "pods")
    # RBAC alone grants a kubelet nothing beyond what every user has (auth/node.py does)
    kubelet = UserInfo("system:node:n1", groups=("system:nodes", SYSTEM_AUTHENTICATED))
    assert not can(authz, kubelet, "patch", "nodes", sub="status", ns="")
    assert not can(authz, kubelet, "get", "secrets")
    assert not can(authz, kubelet, "delete", "nodes", ns="")
    proxy = "system:kube-proxy"
    assert can(authz, proxy, "watch", "endpointslices", group="discovery.k8s.io", ns="")
    assert not can(authz, proxy, "create", "services")
    controller = "system:sampan-controller"
    assert can(authz, controller, "create", "pods")
    assert can(authz, controller, "deletecollection", "configmaps")
    assert can(authz, controller, "update", "deployments", group="apps", sub="status")
    assert not can(
        authz, controller, "escalate", "clusterroles", group="rbac.authorization.k8s.io", ns=""
    )
    assert not can(authz, controller, "impersonate", "users", ns="")
    dns = UserInfo("system:serviceaccount:kube-system:kube-dns")
    assert can(authz, dns, "watch", "services", ns="")
    agent = "system:sampan-agent"
    assert can(authz, agent, "watch", "nodes", ns="")
    assert can(authz, agent, "list", "services", ns="")
    assert can(authz, agent, "watch", "endpointslices", group="discovery.k8s.io", ns="")
    for verb in ("create", "update", "patch", "delete"):
        assert not can(authz, agent, verb, "services", ns="default")
        assert not can(authz, agent, verb, "services", ns="kube-system")
        assert not can(authz, agent, verb, "nodes", ns="")
    assert not can(authz, agent, "list", "secrets")
    assert not can(authz, agent, "get", "nodes", sub="status", ns="")
    assert can(authz, proxy, "patch", "services", sub="status", ns="default")
    assert not can(authz, proxy, "update", "services", sub="status", ns="default")


def test_namespaced_policy() -> None:
    objects = bootstrap_namespaced_policy()
    roles = [o for o in objects if o["kind"] == "Role"]
    bindings = [o for o in objects if o["kind"] == "RoleBinding"]
    assert roles and bindings
    assert all(o["metadata"]["namespace"] == "kube-system" for o in objects)
    role_names = {r["metadata"]["name"] for r in roles}
    assert all(b["roleRef"]["name"] in role_names for b in bindings)
    authz = RBACAuthorizer(StaticRBACSource(role_list=roles, role_binding_list=bindings))
    scheduler = UserInfo("system:kube-scheduler")
    cm = "extension-apiserver-authentication"
    assert can(authz, scheduler, "get", "configmaps", ns="kube-system", name=cm)
    assert not can(authz, scheduler, "get", "configmaps", ns="kube-system", name="other")
    assert not can(authz, scheduler, "get", "configmaps", ns="default", name=cm)
    assert can(authz, scheduler, "update", "leases", group="coordination.k8s.io", ns="kube-system")
