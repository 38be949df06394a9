"""The manager's watch-backed caches (``sampan.manager.cache``) on the request path.

A proxied request authenticates its token, finds its user, decides admin or bound, from
memory: the API server's own request counters show no read of Tokens, Users or bindings
while the proxy serves requests. A change made behind the manager's back (a Token deleted or
a binding removed with the Kubernetes API, a User disabled) stops working once its watch
event arrives; what the manager deletes itself is refused at once.
"""

from __future__ import annotations

from collections import Counter

from prometheus_client.parser import text_string_to_metric_families

from sampan.client import Client
from sampan.client.api import CLUSTERROLEBINDINGS
from sampan.manager.component import ManagerComponent
from sampan.manager.crds import CLUSTER_ROLE_TEMPLATE_BINDINGS, GROUP, TOKENS, USERS
from tests.manager.conftest import ManagerHTTP
from tests.manager.test_proxy import _bind, _get, _user
from tests.support.poll import eventually

REQUESTS = 20
PASSWORD = "a long enough password"
# What the request path read per request before the caches (the background loops never do
# these: they list Tokens and get Clusters, which are therefore not counted here).
WATCHED_READS = {
    ("GET", "tokens"),
    ("GET", "users"),
    ("LIST", "globalrolebindings"),
    ("LIST", "clusterroletemplatebindings"),
}


async def _manager_reads(client: Client) -> Counter[tuple[str, str]]:
    text = await client.request_text("/metrics")
    counts: Counter[tuple[str, str]] = Counter()
    for family in text_string_to_metric_families(text):
        if family.name != "apiserver_request":
            continue
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "apiserver_request_total" and labels.get("group") == GROUP:
                counts[(labels["verb"], labels["resource"])] += int(sample.value)
    return Counter({key: n for key, n in counts.items() if key in WATCHED_READS})


async def _cached(manager: ManagerComponent, token: str) -> bool:
    objects = manager.objects
    assert objects is not None
    return objects.token(token.partition(":")[0]) is not None


async def test_proxied_requests_read_no_manager_objects(
    http: ManagerHTTP, admin_token: str, manager: ManagerComponent, client: Client
) -> None:
    member_id, member_token = await _user(http, admin_token, "member")
    binding = await _bind(http, admin_token, member_id, "local", "read-only")
    # The downstream RBAC pass (which reads the caches too) is done; both tokens are cached.
    await eventually(lambda: _get(client, CLUSTERROLEBINDINGS, f"sampan-crtb-{binding}"))
    for token in (admin_token, member_token):
        await eventually(lambda token=token: _cached(manager, token))
    before = await _manager_reads(client)
    for _ in range(REQUESTS):
        for token in (admin_token, member_token):
            status, body = await http.call(
                "GET", "/k8s/clusters/local/api/v1/namespaces/default", token=token
            )
            assert status == 200, body
    after = await _manager_reads(client)
    assert after - before == Counter(), (before, after)


async def test_changes_behind_the_managers_back_take_effect_with_their_watch_event(
    http: ManagerHTTP, admin_token: str, manager: ManagerComponent, client: Client
) -> None:
    path = "/k8s/clusters/local/api/v1/namespaces/default"
    member_id, member_token = await _user(http, admin_token, "member")
    binding = await _bind(http, admin_token, member_id, "local", "read-only")
    await eventually(lambda: _get(client, CLUSTERROLEBINDINGS, f"sampan-crtb-{binding}"))
    await eventually(lambda: _cached(manager, member_token))
    assert (await http.call("GET", path, token=member_token))[0] == 200

    async def answers(token: str, code: int) -> bool:
        return (await http.call("GET", path, token=token))[0] == code

    # The binding removed with the Kubernetes API: 403 (never forwarded) once seen.
    await client.delete(CLUSTER_ROLE_TEMPLATE_BINDINGS, binding)
    await eventually(lambda: answers(member_token, 403), what="the unbound user refused")
    # Bound again, then the user disabled: 401.
    await _bind(http, admin_token, member_id, "local", "read-only")
    await eventually(lambda: answers(member_token, 200), what="the user bound again")
    await client.patch(USERS, member_id, {"spec": {"enabled": False}})
    await eventually(lambda: answers(member_token, 401), what="the disabled user refused")
    # An admin's token deleted with the Kubernetes API: 401.
    status, login = await http.login("admin", "correct horse battery staple")
    assert status == 201, login
    second = login["token"]
    await eventually(lambda: _cached(manager, second))
    assert await answers(second, 200)
    await client.delete(TOKENS, second.partition(":")[0])
    await eventually(lambda: answers(second, 401), what="the deleted token refused")


async def test_what_the_manager_deletes_is_refused_at_once(
    http: ManagerHTTP, admin_token: str, manager: ManagerComponent
) -> None:
    path = "/k8s/clusters/local/api/v1/namespaces/default"
    member_id, member_token = await _user(http, admin_token, "member")
    await eventually(lambda: _cached(manager, member_token))
    status, _ = await http.call(
        "DELETE", f"/v3/tokens/{member_token.partition(':')[0]}", token=admin_token
    )
    assert status == 200
    status, body = await http.call("GET", path, token=member_token)
    assert status == 401 and body["kind"] == "Status", body
    # A binding removed through the manager: refused at once as well.
    _, other_token = await http.login("member", "a long enough password")
    token = other_token["token"]
    binding = await _bind(http, admin_token, member_id, "local", "read-only")
    await eventually(lambda: _cached(manager, token))

    async def allowed() -> bool:
        return (await http.call("GET", path, token=token))[0] == 200

    await eventually(allowed, what="the bound user allowed")
    status, _ = await http.call(
        "DELETE", f"/v3/clusterroletemplatebindings/{binding}", token=admin_token
    )
    assert status == 200
    status, body = await http.call("GET", path, token=token)
    assert status == 403 and body["reason"] == "Forbidden", body


async def test_a_changed_password_is_seen_at_once(http: ManagerHTTP, admin_token: str) -> None:
    status, body = await http.call(
        "POST",
        "/v3/users",
        token=admin_token,
        json={"username": "newcomer", "password": PASSWORD, "mustChangePassword": True},
    )
    assert status == 201, body
    status, login = await http.login("newcomer", PASSWORD)
    assert status == 201, login
    token = login["token"]
    assert (await http.call("GET", "/v3/clusters", token=token))[0] == 403  # must change first
    status, body = await http.call(
        "POST",
        "/v3/users?action=changepassword",
        token=token,
        json={"currentPassword": PASSWORD, "newPassword": "the newcomer's own password"},
    )
    assert status == 200, body
    # The very next request, before or after the User's watch event: allowed.
    status, body = await http.call("GET", "/v3/clusters", token=token)
    assert status == 200, body
