"""Imported clusters: their agents' tunnels, their health in the Cluster status, their removal.

``ImportedClusters`` owns the manager's ``TunnelServer`` (mounted at ``/v3/connect`` by
``ManagerAPI``) and:

* **authenticates agents**: ``authenticate(token, cluster_name)`` accepts a registration token
  only for the cluster it was issued for (ClusterRegistrationToken ``crt-<cluster>``, compared
  in constant time), not past its ``spec.expiresAt``, for a Cluster that exists and is not
  ``local``; anything else is ``None`` (the tunnel answers 401). The token is never logged;
* **keeps each imported Cluster's status** (``health`` loop): on every tunnel connect and
  disconnect at once, and every ``HEALTH_S`` for every imported cluster: condition
  ``Connected`` (``True``/``AgentConnected``, or ``False`` with ``AgentDisconnected`` and why
  the session ended, ``AgentNotConnected`` while no agent has connected since the manager
  started), ``agentVersion``, ``lastHeartbeat`` (the tunnel's last heartbeat); and, through
  the tunnel with the agent's service-account token, ``Ready`` from the downstream
  ``/readyz``, ``version``, ``nodeCount``, ``capacity``/``allocatable``. A cluster that is
  not connected is ``Ready`` ``Unknown``. An agent that exits closes its tunnel (the agent
  handles SIGTERM); a silent one is dropped by the tunnel's heartbeat (within 1.5 times
  ``heartbeat_s``); either is written at once, so ``Connected`` turns false within 30 s;
* **removes the agent** of a Cluster being deleted while it is connected
  (``remove_agent``): deletes namespace ``sampan-system`` and the ClusterRoleBinding
  ``sampan-cluster-agent`` in the downstream cluster through the tunnel, then closes the
  tunnel (its registration token is gone, so the agent cannot come back);
* **requests downstream** (``downstream_session``): an ``aiohttp.ClientSession`` whose
  connections are tunnel streams to the API server address the agent reported, TLS verified
  against the CA it reported, with its bearer token;
* calls ``on_connected(cluster_id)`` at each agent connect (the component then reconciles
  that cluster's downstream RBAC at once).

``TunnelDialer`` is the authenticating proxy's ``ClusterDialer`` for imported clusters
(``sampan.manager.proxy``), on the same tunnels and agent-reported parameters.

Status writes go through the local API (merge patch of the ``status`` subresource); a write
that fails is logged and done again at the next round. Nothing here holds a secret in a log
line or a repr.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from sampan.api import times
from sampan.client import ApiError, Client, ClientError, NotFoundError
from sampan.manager import credentials, store
from sampan.manager.crds import CLUSTERS, LOCAL_CLUSTER, REGISTRATION_TOKENS
from sampan.manager.manifest import AGENT_NAME, AGENT_NAMESPACE
from sampan.manager.proxy import ByteReader, ByteWriter, ClusterNotConnected, Downstream
from sampan.manager.tunnel import TunnelConnectError, TunnelError, TunnelServer, TunnelState
from sampan.manager.tunnel.server import DEFAULT_HEARTBEAT_S

__all__ = ["HEALTH_S", "DownstreamUnavailable", "ImportedClusters", "TunnelDialer"]

log = logging.getLogger(__name__)

HEALTH_S = 15.0
"""Every imported cluster's status is refreshed this often (and at each connect/disconnect)."""

DOWNSTREAM_TIMEOUT_S = 10.0

STALE_S = 3 * HEALTH_S
"""With several servers running the manager, the agent's tunnel ends on one of them. A server
that does not hold it writes "not connected" at its own disconnect events, but in its
periodic rounds only once the status's ``lastHeartbeat`` is older than this (no server is
refreshing it), so two servers never flap the status."""


class DownstreamUnavailable(Exception):
    """The cluster's downstream API server cannot be reached now (message says why)."""


def _condition(kind: str, status: str, reason: str, message: str = "") -> dict[str, Any]:
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "lastUpdateTime": store.format_time(store.now()),
    }


def _ssl_context(ca_pem: str) -> ssl.SSLContext:
    if ca_pem:
        return ssl.create_default_context(cadata=ca_pem)
    return ssl.create_default_context()


class ImportedClusters:
    """See the module docstring. ``run()`` is the health loop (a task of the component)."""

    def __init__(
        self,
        client: Client,
        *,
        heartbeat_s: float = DEFAULT_HEARTBEAT_S,
        health_s: float = HEALTH_S,
        on_connected: Callable[[str], None] | None = None,
    ) -> None:
        self._client = client
        self._on_connected = on_connected
        self._health_s = health_s
        self.tunnels = TunnelServer(
            self.authenticate, on_change=self._on_change, heartbeat_s=heartbeat_s
        )
        self._pending: set[str] = set()
        self._wake = asyncio.Event()

    # -- agents --------------------------------------------------------------------------

    async def authenticate(self, token: str, cluster_name: str) -> str | None:
        """The cluster id when ``token`` is that cluster's live registration token."""
        if not cluster_name or cluster_name == LOCAL_CLUSTER or len(cluster_name) > 253:
            return None
        try:
            registration = await self._client.get(REGISTRATION_TOKENS, f"crt-{cluster_name}")
            cluster = await self._client.get(CLUSTERS, cluster_name)
        except NotFoundError:
            return None
        spec = registration.get("spec") or {}
        if spec.get("clusterName") != cluster_name or (cluster.get("spec") or {}).get("internal"):
            return None
        if not credentials.token_secret_matches(
            credentials.hash_token_secret(str(spec.get("token", ""))), token
        ):
            return None
        if store.token_expired(registration):
            return None
        return cluster_name

    def _on_change(self, state: TunnelState) -> None:
        self._pending.add(state.cluster_id)
        self._wake.set()
        if state.connected and self._on_connected is not None:
            self._on_connected(state.cluster_id)

    # -- downstream ----------------------------------------------------------------------

    def params(self, cluster_id: str) -> Mapping[str, str]:
        """What the connected agent reported (``address``, ``caCert``, ``token``)."""
        state = self.tunnels.state(cluster_id)
        if state is None or not state.connected or not self.tunnels.is_connected(cluster_id):
            raise DownstreamUnavailable(f"cluster {cluster_id} is not connected")
        if not state.params.get("address"):
            raise DownstreamUnavailable(
                f"the agent of cluster {cluster_id} did not report its API server"
            )
        return state.params

    @contextlib.asynccontextmanager
    async def downstream_session(self, cluster_id: str) -> AsyncIterator[tuple[Any, str]]:
        """``(session, base_url)`` to the cluster's API server through its tunnel, as its
        agent's service account."""
        params = self.params(cluster_id)
        headers = {"User-Agent": "sampan-manager"}
        if params.get("token"):
            headers["Authorization"] = f"Bearer {params['token']}"
        connector = self.tunnels.connector(cluster_id, ssl=_ssl_context(params.get("caCert", "")))
        timeout = aiohttp.ClientTimeout(total=DOWNSTREAM_TIMEOUT_S)
        async with aiohttp.ClientSession(
            connector=connector, timeout=timeout, headers=headers
        ) as session:
            yield session, f"https://{params['address']}"

    async def _probe(self, cluster_id: str) -> dict[str, Any]:
        """Ready (``/readyz``), version and nodes of the downstream cluster."""
        status: dict[str, Any] = {}
        try:
            async with self.downstream_session(cluster_id) as (session, base):
                async with session.get(f"{base}/readyz") as response:
                    text = await response.text()
                    ready = response.status == 200 and text.strip() == "ok"
                    status["ready"] = (
                        ("True", "ReadyzOK", "")
                        if ready
                        else ("False", "ReadyzFailed", f"/readyz answered {response.status}")
                    )
                async with session.get(f"{base}/version") as response:
                    if response.status == 200:
                        status["version"] = (await response.json()).get("gitVersion", "")
                async with session.get(f"{base}/api/v1/nodes") as response:
                    if response.status == 200:
                        nodes = (await response.json()).get("items") or []
                        status["nodeCount"] = len(nodes)
                        status["capacity"] = store._sum_quantities(nodes, "capacity")
                        status["allocatable"] = store._sum_quantities(nodes, "allocatable")
        except (DownstreamUnavailable, TunnelError, TunnelConnectError) as exc:
            status["ready"] = ("Unknown", "Unreachable", str(exc))
        except (aiohttp.ClientError, TimeoutError, ValueError, ssl.SSLError, OSError) as exc:
            status["ready"] = ("False", "ReadyzFailed", f"{type(exc).__name__}: {exc}")
        return status

    async def remove_agent(self, cluster_id: str) -> bool:
        """Delete the agent's namespace and binding downstream, then close the tunnel;
        False (logged) when the cluster is not connected or the downstream refused."""
        try:
            async with self.downstream_session(cluster_id) as (session, base):
                for path in (
                    f"/api/v1/namespaces/{AGENT_NAMESPACE}",
                    f"/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/{AGENT_NAME}",
                ):
                    async with session.delete(f"{base}{path}") as response:
                        if response.status not in (200, 202, 404):
                            log.warning(
                                "manager: removing the agent of cluster %s: DELETE %s answered %d",
                                cluster_id,
                                path,
                                response.status,
                            )
                            return False
        except (DownstreamUnavailable, TunnelError, TunnelConnectError) as exc:
            log.info("manager: cluster %s: agent not removed: %s", cluster_id, exc)
            return False
        except (aiohttp.ClientError, TimeoutError, ssl.SSLError, OSError) as exc:
            log.warning("manager: removing the agent of cluster %s failed: %s", cluster_id, exc)
            return False
        await self.tunnels.disconnect(cluster_id, "cluster deleted")
        log.info("manager: cluster %s deleted: its agent was removed downstream", cluster_id)
        return True

    # -- status --------------------------------------------------------------------------

    async def refresh(self, cluster_id: str, *, event: bool = False) -> None:
        """Write one imported cluster's status (see the module docstring); ``event``: at a
        connect or disconnect of this server's tunnel (see ``STALE_S``)."""
        try:
            cluster = await self._client.get(CLUSTERS, cluster_id)
        except NotFoundError:
            return
        if (cluster.get("spec") or {}).get("internal") or cluster_id == LOCAL_CLUSTER:
            return
        old = cluster.get("status") or {}
        state = self.tunnels.state(cluster_id)
        connected = state is not None and state.connected
        if not connected and not event and _held_elsewhere(old):
            return
        update: dict[str, Any] = {}
        if state is None:
            connected_condition = _condition(
                "Connected",
                "False",
                "AgentNotConnected",
                "no cluster agent has connected since the manager started",
            )
        elif connected:
            connected_condition = _condition("Connected", "True", "AgentConnected")
            update["agentVersion"] = state.agent_version
        else:
            connected_condition = _condition(
                "Connected", "False", "AgentDisconnected", state.close_reason
            )
        if state is not None and (state.last_heartbeat or state.connected_at):
            beat = state.last_heartbeat or state.connected_at
            assert beat is not None
            update["lastHeartbeat"] = store.format_time(beat)
        if connected:
            probe = await self._probe(cluster_id)
            ready_status, reason, message = probe.pop("ready")
            update.update(probe)
        else:
            ready_status, reason, message = "Unknown", "AgentDisconnected", ""
        conditions = store.merge_conditions(
            old.get("conditions") or [],
            [connected_condition, _condition("Ready", ready_status, reason, message)],
        )
        update["conditions"] = conditions
        if _same(old, update):
            return
        try:
            await self._client.patch(CLUSTERS, cluster_id, {"status": update}, subresource="status")
        except NotFoundError:
            return

    async def refresh_all(self) -> None:
        clusters = (await self._client.list_all(CLUSTERS)).get("items", [])
        for cluster in clusters:
            name = cluster["metadata"]["name"]
            if name != LOCAL_CLUSTER and not (cluster.get("spec") or {}).get("internal"):
                await self._refresh_logged(name)

    async def _refresh_logged(self, cluster_id: str, *, event: bool = False) -> None:
        try:
            await self.refresh(cluster_id, event=event)
        except (ApiError, ClientError, OSError) as exc:
            log.warning("manager: cluster %s: status not written: %s", cluster_id, exc)

    async def run(self) -> None:
        """Forever: changed clusters at once, every cluster every ``health_s``."""
        loop = asyncio.get_running_loop()
        next_round = loop.time()
        while True:
            timeout = max(0.0, next_round - loop.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            self._wake.clear()
            pending, self._pending = self._pending, set()
            for cluster_id in sorted(pending):
                await self._refresh_logged(cluster_id, event=True)
            if loop.time() >= next_round:
                try:
                    await self.refresh_all()
                except (ApiError, ClientError, OSError) as exc:
                    log.warning("manager: cluster health round failed: %s", exc)
                next_round = loop.time() + self._health_s


def _held_elsewhere(status: Mapping[str, Any]) -> bool:
    """The status says Connected with a heartbeat fresher than ``STALE_S``."""
    connected = any(
        c.get("type") == "Connected" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )
    beat = times.parse(status.get("lastHeartbeat"))
    return connected and beat is not None and (store.now() - beat).total_seconds() < STALE_S


def _same(old: Mapping[str, Any], update: Mapping[str, Any]) -> bool:
    """Nothing but ``lastUpdateTime``\\ s would change."""

    def strip(conditions: Any) -> list[Any]:
        return [{k: v for k, v in c.items() if k != "lastUpdateTime"} for c in conditions or []]

    for key, value in update.items():
        if key == "conditions":
            if strip(old.get(key)) != strip(value):
                return False
        elif old.get(key) != value:
            return False
    return True


class TunnelDialer:
    """The proxy's ``ClusterDialer`` for imported clusters (``sampan.manager.proxy``): streams
    are tunnel connections, through the cluster's agent, to the API server address it
    reported; TLS is verified against the CA it reported, for that address's host, and
    requests carry its service-account token (the proxy adds ``Impersonate-*``). A cluster
    without a live tunnel, or whose agent cannot reach its API server, is
    ``ClusterNotConnected`` (the proxy answers 503)."""

    def __init__(self, clusters: ImportedClusters) -> None:
        self._clusters = clusters
        self._contexts: dict[str, tuple[str, ssl.SSLContext]] = {}

    def _params(self, cluster_id: str) -> Mapping[str, str]:
        try:
            return self._clusters.params(cluster_id)
        except DownstreamUnavailable as exc:
            raise ClusterNotConnected(str(exc)) from exc

    async def open(self, cluster_id: str) -> tuple[ByteReader, ByteWriter]:
        host, port = _split_address(self._params(cluster_id)["address"])
        try:
            return await self._clusters.tunnels.dial(
                cluster_id, host, port, timeout_s=DOWNSTREAM_TIMEOUT_S
            )
        except TunnelError as exc:
            raise ClusterNotConnected(f"cluster {cluster_id}: {exc}") from exc

    async def downstream(self, cluster_id: str) -> Downstream:
        params = self._params(cluster_id)
        ca_pem = params.get("caCert", "")
        cached = self._contexts.get(cluster_id)
        if cached is not None and cached[0] == ca_pem:
            context = cached[1]
        else:
            context = await asyncio.to_thread(_ssl_context, ca_pem)
            self._contexts[cluster_id] = (ca_pem, context)  # one per cluster: the latest CA
        host, _ = _split_address(params["address"])
        return Downstream(
            ssl_context=context,
            server_hostname=host,
            host_header=params["address"],
            token=params.get("token") or None,
        )


def _split_address(address: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port)."""
    parts = urlsplit(f"//{address}")
    try:
        port = parts.port
    except ValueError:  # not a number, or out of range
        port = None
    if not parts.hostname or port is None:
        raise ClusterNotConnected(f"the agent reported an unusable API server address: {address}")
    return parts.hostname, port
