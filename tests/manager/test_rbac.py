"""The manager's own RBAC on /v3: admins manage clusters, users and bindings; a user bound to
a cluster by a ClusterRoleTemplateBinding sees only that cluster."""

from __future__ import annotations

from sampan.client import Client
from sampan.manager.crds import (
    CLUSTER_ROLE_TEMPLATE_BINDINGS,
    GLOBAL_ROLE_BINDINGS,
    ROLE_TEMPLATES,
    USERS,
)
from tests.manager.conftest import ManagerHTTP

PASSWORD = "a long enough password"


async def _user(http: ManagerHTTP, admin_token: str, username: str) -> tuple[str, str]:
    """Create a user (no change required) and log in: (user id, token)."""
    status, body = await http.call(
        "POST", "/v3/users", token=admin_token, json={"username": username, "password": PASSWORD}
    )
    assert status == 201, body
    status, login = await http.login(username, PASSWORD)
    assert status == 201, login
    return body["id"], login["token"]


async def _cluster(http: ManagerHTTP, admin_token: str, name: str) -> str:
    status, body = await http.call("POST", "/v3/clusters", token=admin_token, json={"name": name})
    assert status == 201, body
    return str(body["id"])


async def test_builtin_role_templates_and_local_cluster(
    http: ManagerHTTP, admin_token: str, client: Client
) -> None:
    names = {t["metadata"]["name"] for t in (await client.list(ROLE_TEMPLATES))["items"]}
    assert {"cluster-owner", "cluster-member", "read-only"} <= names
    status, body = await http.call("GET", "/v3/clusters", token=admin_token)
    local = next(c for c in body["data"] if c["id"] == "local")
    assert local["internal"] is True and local["version"].startswith("v1.32")
    conditions = {c["type"]: c["status"] for c in local["conditions"]}
    assert conditions == {"Connected": "True", "Ready": "True"}
    status, body = await http.call("DELETE", "/v3/clusters/local", token=admin_token)
    assert status == 422


async def test_member_sees_only_bound_clusters(
    http: ManagerHTTP, admin_token: str, client: Client
) -> None:
    edge1 = await _cluster(http, admin_token, "edge-1")
    edge2 = await _cluster(http, admin_token, "edge-2")
    user_id, token = await _user(http, admin_token, "alice")
    # Not bound anywhere: an empty list; any cluster by id is 403.
    status, body = await http.call("GET", "/v3/clusters", token=token)
    assert status == 200 and body["data"] == []
    for cluster in (edge1, "local", "c-doesnotexist"):
        status, body = await http.call("GET", f"/v3/clusters/{cluster}", token=token)
        assert status == 403 and body["code"] == "PermissionDenied", cluster
    status, body = await http.call(
        "POST",
        "/v3/clusterroletemplatebindings",
        token=admin_token,
        json={"userId": user_id, "clusterId": edge1, "roleTemplateId": "read-only"},
    )
    assert status == 201, body
    status, body = await http.call("GET", "/v3/clusters", token=token)
    assert [c["id"] for c in body["data"]] == [edge1]
    assert "registration" not in body["data"][0]  # read-only: no registration commands
    assert (await http.call("GET", f"/v3/clusters/{edge1}", token=token))[0] == 200
    assert (await http.call("GET", f"/v3/clusters/{edge2}", token=token))[0] == 403
    # An owner sees the registration commands of its cluster.
    status, body = await http.call(
        "POST",
        "/v3/clusterroletemplatebindings",
        token=admin_token,
        json={"userId": user_id, "clusterId": edge2, "roleTemplateId": "cluster-owner"},
    )
    status, body = await http.call("GET", f"/v3/clusters/{edge2}", token=token)
    assert status == 200 and "registration" in body
    # The bindings are objects in the local cluster.
    stored = (await client.list(CLUSTER_ROLE_TEMPLATE_BINDINGS))["items"]
    assert {(b["spec"]["clusterName"], b["spec"]["roleTemplateName"]) for b in stored} == {
        (edge1, "read-only"),
        (edge2, "cluster-owner"),
    }
    # Removing the binding removes the visibility.
    binding = next(b for b in stored if b["spec"]["clusterName"] == edge1)
    status, _ = await http.call(
        "DELETE",
        f"/v3/clusterroletemplatebindings/{binding['metadata']['name']}",
        token=admin_token,
    )
    assert status == 200
    status, body = await http.call("GET", "/v3/clusters", token=token)
    assert [c["id"] for c in body["data"]] == [edge2]


async def test_non_admin_cannot_manage(http: ManagerHTTP, admin_token: str) -> None:
    edge = await _cluster(http, admin_token, "edge-1")
    user_id, token = await _user(http, admin_token, "bob")
    forbidden = [
        ("POST", "/v3/clusters", {"name": "mine"}),
        ("DELETE", f"/v3/clusters/{edge}", None),
        ("POST", "/v3/users", {"username": "eve", "password": PASSWORD}),
        ("POST", "/v3/globalrolebindings", {"userId": user_id, "globalRoleName": "admin"}),
        (
            "POST",
            "/v3/clusterroletemplatebindings",
            {"userId": user_id, "clusterId": edge, "roleTemplateId": "cluster-owner"},
        ),
        ("GET", "/v3/users/u-admin", None),
        ("POST", "/v3/users/u-admin?action=setpassword", {"newPassword": PASSWORD + "!"}),
    ]
    for method, path, body in forbidden:
        status, answer = await http.call(method, path, token=token, json=body)
        assert status == 403, (method, path, answer)
        assert answer["code"] == "PermissionDenied"
    # What a user may do: see itself (only), its own tokens.
    status, body = await http.call("GET", "/v3/users", token=token)
    assert [u["id"] for u in body["data"]] == [user_id]
    status, body = await http.call("GET", "/v3/tokens", token=token)
    assert {t["userId"] for t in body["data"]} == {user_id}
    # Another user's token cannot be revoked by it.
    admin_token_id = admin_token.partition(":")[0]
    status, _ = await http.call("DELETE", f"/v3/tokens/{admin_token_id}", token=token)
    assert status == 403


async def test_admin_role_by_global_role_binding(
    http: ManagerHTTP, admin_token: str, client: Client
) -> None:
    user_id, token = await _user(http, admin_token, "carol")
    assert (await http.call("POST", "/v3/clusters", token=token, json={"name": "x"}))[0] == 403
    status, binding = await http.call(
        "POST",
        "/v3/globalrolebindings",
        token=admin_token,
        json={"userId": user_id, "globalRoleName": "admin"},
    )
    assert status == 201, binding
    grbs = (await client.list(GLOBAL_ROLE_BINDINGS))["items"]
    assert any(b["spec"] == {"userId": user_id, "globalRoleName": "admin"} for b in grbs)
    status, body = await http.call("POST", "/v3/clusters", token=token, json={"name": "x"})
    assert status == 201
    status, body = await http.call("GET", "/v3/clusters", token=token)
    assert {c["id"] for c in body["data"]} >= {"local"}
    # Bad references are refused.
    status, body = await http.call(
        "POST",
        "/v3/globalrolebindings",
        token=admin_token,
        json={"userId": "u-nobody", "globalRoleName": "admin"},
    )
    assert status == 422 and body["code"] == "InvalidReference"
    status, body = await http.call(
        "POST",
        "/v3/clusterroletemplatebindings",
        token=admin_token,
        json={"userId": user_id, "clusterId": "local", "roleTemplateId": "no-such-template"},
    )
    assert status == 422 and body["code"] == "InvalidReference"


async def test_user_lifecycle(http: ManagerHTTP, admin_token: str, client: Client) -> None:
    user_id, token = await _user(http, admin_token, "dave")
    status, body = await http.call(
        "POST", "/v3/users", token=admin_token, json={"username": "dave", "password": PASSWORD}
    )
    assert status == 409 and body["code"] == "NotUnique"
    status, body = await http.call(
        "POST", "/v3/users", token=admin_token, json={"username": "bad name", "password": PASSWORD}
    )
    assert status == 422
    # An admin sets a password that must be changed at the next login.
    status, body = await http.call(
        "POST",
        f"/v3/users/{user_id}?action=setpassword",
        token=admin_token,
        json={"newPassword": "another long password", "mustChangePassword": True},
    )
    assert status == 200 and body["mustChangePassword"] is True
    status, login = await http.login("dave", "another long password")
    assert status == 201 and login["mustChangePassword"] is True
    # Deleting the user revokes its tokens.
    status, _ = await http.call("DELETE", f"/v3/users/{user_id}", token=admin_token)
    assert status == 200
    assert (await http.call("GET", "/v3/users?me=true", token=token))[0] == 401
    assert not [u for u in (await client.list(USERS))["items"] if u["metadata"]["name"] == user_id]
