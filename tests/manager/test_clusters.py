"""Imported clusters, wired: a real cluster agent (``run_agent`` from its container's
environment) dials the manager's ``/v3/connect`` with the registration token; the Cluster's
status follows the tunnel (Connected, agentVersion, lastHeartbeat) and, through it, the
downstream API server (Ready, version, node count); a wrong, foreign or expired token is
refused; deleting the Cluster removes the agent's namespace and binding downstream.

The test's one API server plays both the manager's local cluster and the downstream cluster
(the agent's service-account token is a real TokenRequest token of that server)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from sampan.client import Client, NotFoundError, Resource
from sampan.manager.clusters import ImportedClusters, _split_address
from sampan.manager.component import ManagerComponent
from sampan.manager.crds import CLUSTERS, REGISTRATION_TOKENS
from sampan.manager.proxy import ClusterNotConnected
from sampan.manager.tunnel import AgentConfig, run_agent
from sampan.version import __version__
from tests.manager.conftest import ManagerHTTP

NAMESPACES = Resource("", "v1", "namespaces", "Namespace", False)
SERVICE_ACCOUNTS = Resource("", "v1", "serviceaccounts", "ServiceAccount", True)
CLUSTER_ROLE_BINDINGS = Resource(
    "rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False
)
NODES = Resource("", "v1", "nodes", "Node", False)
WAIT_S = 60.0


async def _wait_for(check: Callable[[], Any], what: str) -> Any:
    """Poll ``check()`` (async) until it returns something truthy; a hang guard, not a
    timing assertion."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    while True:
        result = await check()
        if result:
            return result
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def _condition(cluster: dict[str, Any], kind: str) -> dict[str, Any]:
    for condition in (cluster.get("status") or {}).get("conditions") or []:
        if condition["type"] == kind:
            return dict(condition)
    return {}


async def _agent_identity(client: Client, api_server: Any, directory: Path) -> None:
    """What the import manifest creates downstream, and the service-account token files."""
    await client.create(
        NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "sampan-system"}}
    )
    await client.create(
        SERVICE_ACCOUNTS,
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "sampan-cluster-agent"},
        },
        namespace="sampan-system",
    )
    await client.create(
        CLUSTER_ROLE_BINDINGS,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "sampan-cluster-agent"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "cluster-admin",
            },
            "subjects": [
                {
                    "kind": "ServiceAccount",
                    "name": "sampan-cluster-agent",
                    "namespace": "sampan-system",
                }
            ],
        },
    )
    answer = await client.request(
        "POST",
        "/api/v1/namespaces/sampan-system/serviceaccounts/sampan-cluster-agent/token",
        body={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}},
    )
    await asyncio.to_thread(
        _write_identity, directory, answer["status"]["token"], api_server.server.pki.ca_pem
    )


def _write_identity(directory: Path, token: str, ca_pem: bytes) -> None:
    directory.mkdir()
    (directory / "token").write_text(token)
    (directory / "ca.crt").write_bytes(ca_pem)


@contextlib.asynccontextmanager
async def _agent(env: dict[str, str]) -> AsyncIterator[asyncio.Task[Any]]:
    config = AgentConfig.from_env(env)
    task = asyncio.ensure_future(
        run_agent(**config.as_kwargs(), backoff_initial_s=0.05, backoff_max_s=0.5)
    )
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task


async def test_agent_connects_status_follows_and_delete_removes_it(
    http: ManagerHTTP,
    admin_token: str,
    manager: ManagerComponent,
    client: Client,
    api_server: Any,
    tmp_path: Path,
) -> None:
    status, created = await http.call(
        "POST", "/v3/clusters", token=admin_token, json={"name": "edge-1"}
    )
    assert status == 201, created
    cluster_id, token = created["id"], created["registration"]["token"]
    await client.create(
        NODES, {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "downstream-node"}}
    )
    await _agent_identity(client, api_server, tmp_path / "sa")
    api = urlsplit(api_server.url)
    env = {
        "SAMPAN_MANAGER_URL": http.base,
        "SAMPAN_CA_CHECKSUM": created["registration"]["caChecksum"],
        "SAMPAN_CLUSTER_NAME": cluster_id,
        "SAMPAN_TOKEN": token,
        "SAMPAN_ALLOWED_TARGETS": f"{api.hostname}:{api.port}",
        "SAMPAN_SERVICEACCOUNT_DIR": str(tmp_path / "sa"),
    }

    # Before any agent: never connected.
    await manager.clusters.refresh(cluster_id)  # type: ignore[union-attr]
    cluster = await client.get(CLUSTERS, cluster_id)
    assert _condition(cluster, "Connected")["reason"] == "AgentNotConnected"

    async with _agent(env):

        async def connected_and_ready() -> dict[str, Any] | None:
            cluster = await client.get(CLUSTERS, cluster_id)
            ok = _condition(cluster, "Connected").get("status") == "True"
            return cluster if ok and _condition(cluster, "Ready").get("status") == "True" else None

        cluster = await _wait_for(connected_and_ready, "Connected and Ready")
        version = await client.request("GET", "/version")
        nodes = (await client.list_all(NODES))["items"]
        status_ = cluster["status"]
        assert status_["agentVersion"] == __version__
        assert status_["version"] == version["gitVersion"]
        assert status_["nodeCount"] == len(nodes) >= 1
        assert status_["lastHeartbeat"]
        assert _condition(cluster, "Ready")["reason"] == "ReadyzOK"
        status, view = await http.call("GET", f"/v3/clusters/{cluster_id}", token=admin_token)
        assert view["state"] == "active" and view["agentVersion"] == __version__

        # The proxy reaches the cluster through the tunnel, as the manager user (the admin's
        # downstream binding is written when the agent connects).
        async def proxied_nodes() -> Any:
            status, body = await http.call(
                "GET", f"/k8s/clusters/{cluster_id}/api/v1/nodes", token=admin_token
            )
            return body if status == 200 else None

        listed = await _wait_for(proxied_nodes, "nodes through the proxy")
        assert [n["metadata"]["name"] for n in listed["items"]] == [
            n["metadata"]["name"] for n in nodes
        ]
        status, review = await http.call(
            "POST",
            f"/k8s/clusters/{cluster_id}/apis/authentication.k8s.io/v1/selfsubjectreviews",
            token=admin_token,
            json={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
        )
        assert status == 201, review
        assert review["status"]["userInfo"]["username"].startswith("u-")

        # Another server running the manager (no tunnel there) leaves the status alone while
        # its heartbeat is fresh, and says "not connected" once it is stale.
        other = ImportedClusters(client)
        await other.refresh(cluster_id)
        cluster = await client.get(CLUSTERS, cluster_id)
        assert _condition(cluster, "Connected")["status"] == "True"
        stale = (datetime.now(UTC) - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
        await client.patch(
            CLUSTERS, cluster_id, {"status": {"lastHeartbeat": stale}}, subresource="status"
        )
        await other.refresh(cluster_id)
        cluster = await client.get(CLUSTERS, cluster_id)
        assert _condition(cluster, "Connected")["reason"] == "AgentNotConnected"

    # The agent is gone: Connected false (written at the disconnect, not at the next round).
    async def disconnected() -> dict[str, Any] | None:
        cluster = await client.get(CLUSTERS, cluster_id)
        condition = _condition(cluster, "Connected")
        return cluster if condition.get("reason") == "AgentDisconnected" else None

    cluster = await _wait_for(disconnected, "Connected false")
    assert _condition(cluster, "Connected")["status"] == "False"
    assert _condition(cluster, "Ready")["status"] == "Unknown"
    status, body = await http.call(
        "GET", f"/k8s/clusters/{cluster_id}/api/v1/nodes", token=admin_token
    )
    assert status == 503 and body["kind"] == "Status", body
    assert (
        body["reason"] == "ServiceUnavailable"
        and body["message"] == f"cluster {cluster_id} is not connected"
    )

    # Back, then the Cluster is deleted while connected: the agent is removed downstream.
    async with _agent(env) as agent:
        await _wait_for(connected_and_ready, "Connected again")
        status, body = await http.call("DELETE", f"/v3/clusters/{cluster_id}", token=admin_token)
        assert status == 200, body
        assert body["agentRemoved"] is True

        async def namespace_going() -> bool:
            try:
                namespace = await client.get(NAMESPACES, "sampan-system")
            except NotFoundError:
                return True
            return bool(namespace["metadata"].get("deletionTimestamp"))

        assert await _wait_for(namespace_going, "namespace sampan-system deleted")
        with pytest.raises(NotFoundError):
            await client.get(CLUSTER_ROLE_BINDINGS, "sampan-cluster-agent")
        # Its registration token went with the Cluster: the agent cannot come back.
        await asyncio.sleep(0.5)
        assert manager.clusters is not None
        assert not manager.clusters.tunnels.is_connected(cluster_id)
        assert not agent.done()  # still trying, with back-off, and refused (401)


async def test_registration_token_authenticates_its_own_cluster_only(
    http: ManagerHTTP, admin_token: str, manager: ManagerComponent, client: Client
) -> None:
    clusters = manager.clusters
    assert clusters is not None
    ids, tokens = [], []
    for name in ("edge-a", "edge-b"):
        status, created = await http.call(
            "POST", "/v3/clusters", token=admin_token, json={"name": name}
        )
        assert status == 201
        ids.append(created["id"])
        tokens.append(created["registration"]["token"])
    assert await clusters.authenticate(tokens[0], ids[0]) == ids[0]
    assert await clusters.authenticate(tokens[1], ids[1]) == ids[1]
    assert await clusters.authenticate(tokens[0], ids[1]) is None  # another cluster's token
    assert await clusters.authenticate("x" * len(tokens[0]), ids[0]) is None
    assert await clusters.authenticate(tokens[0], "local") is None
    assert await clusters.authenticate(tokens[0], "c-nothere") is None
    past = (datetime.now(UTC) - timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    await client.patch(REGISTRATION_TOKENS, f"crt-{ids[0]}", {"spec": {"expiresAt": past}})
    assert await clusters.authenticate(tokens[0], ids[0]) is None  # expired

    # Over the wire: the connect endpoint answers 401 with a Status to a wrong token.
    status, body = await http.call(
        "GET",
        "/v3/connect",
        headers={
            "Authorization": "Bearer wrong",
            "X-Sampan-Cluster": ids[1],
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        },
    )
    assert status == 401 and body["kind"] == "Status" and body["reason"] == "Unauthorized"


@pytest.mark.parametrize(
    ("address", "expected"),
    [("10.43.0.1:443", ("10.43.0.1", 443)), ("[fd00::1]:6443", ("fd00::1", 6443))],
)
def test_agent_reported_addresses_split(address: str, expected: tuple[str, int]) -> None:
    assert _split_address(address) == expected


@pytest.mark.parametrize("address", ["10.43.0.1", "", "host:port"])
def test_unusable_agent_reported_address_is_not_connected(address: str) -> None:
    with pytest.raises(ClusterNotConnected, match="unusable API server address"):
        _split_address(address)
