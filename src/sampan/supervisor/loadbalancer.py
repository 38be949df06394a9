"""The agent's client-side load balancer: a local TCP proxy in front of every API server
(K3s's agent load balancer on 127.0.0.1:6444).

Every client of an agent (join, kubelet, proxy, network, dns, ...) talks to
``https://127.0.0.1:<port>``; the balancer forwards each TCP connection, bytes untouched (TLS
runs end to end between the client and the server; every server's certificate carries
127.0.0.1), to one API server:

* **Servers**: the ``--server`` address (always kept: the way back in when everything else is
  gone), plus every address of the ``kubernetes`` Endpoints in ``default`` (each server writes
  its own address there while it runs), learned by an informer that itself connects through
  the balancer. The list is saved to ``<data-dir>/agent/etc/<name>-load-balancer.json`` (0600)
  so that an agent restarting while ``--server`` is down still finds the others.
* **Choice**: one *current* server takes every new connection, as in K3s (a client's
  requests and watches stay on one server); a dial that fails or takes longer than
  ``DIAL_TIMEOUT_S`` moves to the next healthy server, then to the unhealthy ones.
* **Health**: every ``HEALTH_INTERVAL_S`` each server gets a TCP connect (``DIAL_TIMEOUT_S``).
  When the current one fails, the balancer switches to a healthy one and closes every
  connection still open to the failed one, so long-running watches reconnect at once instead
  of waiting for TCP timeouts: a dead server is left within ``HEALTH_INTERVAL_S +
  DIAL_TIMEOUT_S`` (3 s), and at once when its host refuses connections (a killed process).

Ports: ``--lb-server-port``; by default the port of ``--server`` plus one (6444 for 6443, as
K3s), for a server's embedded agent ``--https-listen-port`` plus one — so clusters whose API
ports differ on one host never collide; a derived port that is taken falls back to a free one
(logged; the join writes every kubeconfig with the port in use), a ``--lb-server-port`` that is
taken stops the start. The listener binds loopback only.

Invariants: at most ``MAX_CONNECTIONS`` proxied connections (more are refused, not queued);
every connection task is tracked and closed at ``stop``; no address list is ever empty (the
default server stays).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sampan.supervisor.supervisor import ComponentContext

__all__ = [
    "DIAL_TIMEOUT_S",
    "HEALTH_INTERVAL_S",
    "LoadBalancer",
    "LoadBalancerComponent",
    "lb_port",
    "server_address",
]

log = logging.getLogger("sampan.loadbalancer")

LISTEN_HOST = "127.0.0.1"
HEALTH_INTERVAL_S = 1.0
DIAL_TIMEOUT_S = 2.0
MAX_CONNECTIONS = 1024
COPY_CHUNK_BYTES = 64 * 1024
ENDPOINTS_NAMESPACE = "default"
ENDPOINTS_NAME = "kubernetes"
ENDPOINTS_PORT_NAME = "https"


def server_address(url: str) -> str:
    """``host:port`` of an ``https://`` URL (port 443 when absent)."""
    parts = urlsplit(url)
    if not parts.hostname:
        raise ValueError(f"{url!r} has no host")
    host = parts.hostname
    host = f"[{host}]" if ":" in host else host
    return f"{host}:{parts.port or 443}"


def lb_port(configured: int, server_url: str) -> int:
    """``--lb-server-port``, else the port of ``server_url`` plus one."""
    if configured:
        return configured
    port = urlsplit(server_url).port or 443
    return port + 1 if port < 65535 else port - 1


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


class LoadBalancer:
    """See the module docstring. ``port=0`` picks a free port (tests)."""

    def __init__(
        self,
        name: str,
        default_server: str,
        *,
        port: int,
        state_file: Path | None = None,
        health_interval_s: float = HEALTH_INTERVAL_S,
        dial_timeout_s: float = DIAL_TIMEOUT_S,
        fallback_to_free_port: bool = False,
    ) -> None:
        self.name = name
        self._fallback_to_free_port = fallback_to_free_port
        self.default_server = default_server
        self._port = port
        self._state_file = state_file
        self._health_interval_s = health_interval_s
        self._dial_timeout_s = dial_timeout_s
        self._servers: list[str] = [default_server]
        self._healthy: set[str] = {default_server}
        self.current = default_server
        self._conns: dict[asyncio.Task[None], str] = {}
        self._listener: asyncio.Server | None = None
        self._health_task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"https://{LISTEN_HOST}:{self._port}"

    @property
    def servers(self) -> list[str]:
        return list(self._servers)

    async def start(self) -> None:
        saved = await asyncio.to_thread(self._load_state)
        if saved:
            self.set_servers(saved)
        try:
            self._listener = await asyncio.start_server(
                self._accept, LISTEN_HOST, self._port, reuse_address=True
            )
        except OSError as exc:
            if not self._fallback_to_free_port:
                raise OSError(f"{self.name}: cannot listen on port {self._port}: {exc}") from None
            log.warning(
                "%s: port %d is taken (%s); using a free port (set --lb-server-port)",
                self.name,
                self._port,
                exc.strerror or exc,
            )
            self._listener = await asyncio.start_server(self._accept, LISTEN_HOST, 0)
        self._port = self._listener.sockets[0].getsockname()[1]
        self._health_task = asyncio.get_running_loop().create_task(
            self._health_loop(), name=f"{self.name}:health"
        )
        log.info("%s listening on %s:%d for %s", self.name, LISTEN_HOST, self._port, self.servers)

    async def stop(self) -> None:
        if self._health_task is not None:
            self._health_task.cancel()
            await asyncio.gather(self._health_task, return_exceptions=True)
            self._health_task = None
        if self._listener is not None:
            self._listener.close()
            await self._listener.wait_closed()
            self._listener = None
        tasks = list(self._conns)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- the server list ------------------------------------------------------------------

    def set_servers(self, addresses: Iterable[str]) -> None:
        """The API servers: ``addresses`` plus the default server, in a stable order."""
        wanted = sorted({*addresses, self.default_server})
        if wanted == sorted(self._servers):
            return
        added = set(wanted) - set(self._servers)
        self._servers = wanted
        self._healthy = (self._healthy & set(wanted)) | added  # new ones: healthy until checked
        log.info("%s servers: %s", self.name, ", ".join(wanted))
        if self.current not in wanted:
            self._switch(self._next_healthy(), reason="removed")
        self._save_state_soon()

    def _next_healthy(self) -> str:
        for address in self._servers:
            if address in self._healthy and address != self.current:
                return address
        return self.current if self.current in self._servers else self.default_server

    def _switch(self, address: str, *, reason: str) -> None:
        if address == self.current:
            return
        old, self.current = self.current, address
        log.warning("%s: %s %s; using %s", self.name, old, reason, address)
        for task, upstream in list(self._conns.items()):
            if upstream == old:
                task.cancel()

    def _load_state(self) -> list[str]:
        if self._state_file is None:
            return []
        try:
            doc = json.loads(self._state_file.read_text())
            return [str(a) for a in doc.get("servers", [])]
        except (OSError, ValueError, AttributeError):
            return []

    def _save_state_soon(self) -> None:
        if self._state_file is None:
            return
        data = json.dumps({"servers": self._servers}, indent=2) + "\n"
        path = self._state_file

        def write() -> None:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp = path.with_name(f".{path.name}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(data)
            os.replace(tmp, path)

        with contextlib.suppress(RuntimeError):
            asyncio.get_running_loop().run_in_executor(None, write)

    # --- health -----------------------------------------------------------------------------

    async def _probe(self, address: str) -> bool:
        host, port = _split(address)
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port), self._dial_timeout_s
            )
        except (OSError, TimeoutError):
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True

    async def _health_loop(self) -> None:
        while True:
            await self.check_health()
            await asyncio.sleep(self._health_interval_s)

    async def check_health(self) -> None:
        servers = list(self._servers)
        results = await asyncio.gather(*(self._probe(a) for a in servers))
        healthy = {a for a, ok in zip(servers, results, strict=True) if ok}
        for address in sorted(set(servers) - healthy):
            if address in self._healthy:
                log.warning("%s: server %s failed its health check", self.name, address)
        self._healthy = healthy
        if self.current not in healthy and healthy:
            self._switch(self._next_healthy(), reason="is unhealthy")

    # --- proxying ---------------------------------------------------------------------------

    async def _dial(self) -> tuple[str, asyncio.StreamReader, asyncio.StreamWriter]:
        order = [self.current]
        order += [a for a in self._servers if a in self._healthy and a not in order]
        order += [a for a in self._servers if a not in order]
        last: BaseException | None = None
        for address in order:
            host, port = _split(address)
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(host, port), self._dial_timeout_s
                )
            except (OSError, TimeoutError) as exc:
                last = exc
                self._healthy.discard(address)
                continue
            self._healthy.add(address)
            if address != self.current:
                self._switch(address, reason="cannot be reached")
            return address, reader, writer
        raise OSError(f"no API server reachable: {last}")

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._conns) >= MAX_CONNECTIONS:
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        try:
            address, up_reader, up_writer = await self._dial()
        except OSError as exc:
            log.warning("%s: %s", self.name, exc)
            writer.close()
            return
        self._conns[task] = address
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except asyncio.CancelledError:
            pass  # switched away from this server, or stopping: close both sides
        finally:
            self._conns.pop(task, None)
            for w in (writer, up_writer):
                w.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            data = await reader.read(COPY_CHUNK_BYTES)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            if writer.can_write_eof():
                writer.write_eof()


# --- the component ------------------------------------------------------------------------------


class LoadBalancerComponent:
    """Starts the balancer before the join (so the join goes through it too) and, once the
    node has credentials, learns the servers from the ``kubernetes`` Endpoints."""

    def __init__(
        self,
        name: str,
        *,
        server_url: Any,
        port: int,
        state_file: Path,
    ) -> None:
        self.name = name
        self._server_url = server_url
        self._port = port
        self._state_file = state_file
        self.balancer: LoadBalancer | None = None

    async def start(self, ctx: ComponentContext) -> None:
        del ctx
        url = self._server_url()
        self.balancer = LoadBalancer(
            self.name,
            server_address(url),
            port=lb_port(self._port, url),
            state_file=self._state_file,
            # A derived port may be taken by something else: every kubeconfig is written at
            # the join with the port in use, so any free one does; a chosen one must hold.
            fallback_to_free_port=not self._port,
        )
        await self.balancer.start()

    @property
    def url(self) -> str:
        return self.started().url

    def started(self) -> LoadBalancer:
        """The running balancer (the component starts before anything that uses it)."""
        assert self.balancer is not None, "the load balancer starts first"
        return self.balancer

    async def stop(self) -> None:
        if self.balancer is not None:
            await self.balancer.stop()
            self.balancer = None


class EndpointsWatcher:
    """Feeds the ``kubernetes`` Endpoints' addresses to a ``LoadBalancer``."""

    name = "load-balancer-endpoints"

    def __init__(self, client_config: Any, balancer: LoadBalancer) -> None:
        self._client_config = client_config
        self._balancer = balancer
        self._client: Any = None
        self._informer: Any = None

    async def start(self, ctx: ComponentContext) -> None:
        from sampan.client import Client, Informer
        from sampan.client.api import ENDPOINTS

        del ctx
        self._client = Client(self._client_config)
        self._informer = Informer(
            self._client,
            ENDPOINTS,
            namespace=ENDPOINTS_NAMESPACE,
            field_selector=f"metadata.name={ENDPOINTS_NAME}",
        )
        self._informer.add_event_handler(
            on_add=self._update, on_update=lambda _old, new: self._update(new)
        )
        self._informer.start()

    def _update(self, endpoints: dict[str, Any]) -> None:
        self._balancer.set_servers(endpoint_addresses(endpoints))

    async def stop(self) -> None:
        if self._informer is not None:
            await self._informer.stop()
            self._informer = None
        if self._client is not None:
            await self._client.close()
            self._client = None


def endpoint_addresses(endpoints: dict[str, Any]) -> list[str]:
    """``host:port`` of every ready address of an Endpoints object's ``https`` port."""
    out = []
    for subset in endpoints.get("subsets") or []:
        ports = [
            p.get("port")
            for p in subset.get("ports") or []
            if p.get("name") in (ENDPOINTS_PORT_NAME, None, "")
        ]
        if not ports:
            continue
        for address in subset.get("addresses") or []:
            ip = address.get("ip")
            if ip:
                host = f"[{ip}]" if ":" in ip else ip
                out.append(f"{host}:{ports[0]}")
    return out
