"""The agent's client-side load balancer: real sockets, then real servers on one PostgreSQL.

The acceptance: two ``sampan server`` processes share one PostgreSQL (and so one CA); a client
that reaches them through the balancer learns both from the ``kubernetes`` Endpoints, keeps
working (requests and a watch) when the server it uses is SIGKILLed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from sampan.client import Client, ClientConfig, Informer, TransportError
from sampan.client.api import CONFIGMAPS
from sampan.supervisor.loadbalancer import (
    EndpointsWatcher,
    LoadBalancer,
    endpoint_addresses,
    lb_port,
    server_address,
)
from tests.supervisor.test_server_process import free_port, start_server, wait_for_log
from tests.support.poll import eventually
from tests.support.postgres import postgres_server

__all__ = ["postgres_server"]

WAIT_S = 90.0


class _Echo:
    """A TCP server answering each line with ``<name>:<line>``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> str:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.writers.append(writer)
            while line := await reader.readline():
                writer.write(f"{self.name}:".encode() + line)
                await writer.drain()
            writer.close()

        self.server = await asyncio.start_server(handle, "127.0.0.1", 0)
        return f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def kill(self) -> None:
        """Close the listener; open connections are left hanging (a host that vanished)."""
        assert self.server is not None
        self.server.close()


async def _ask(port: int, line: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(line.encode() + b"\n")
    await writer.drain()
    return reader, writer, (await reader.readline()).decode().strip()


def test_ports_and_addresses() -> None:
    assert lb_port(0, "https://10.0.0.1:6443") == 6444
    assert lb_port(7000, "https://10.0.0.1:6443") == 7000
    assert server_address("https://[fd00::1]:6443/") == "[fd00::1]:6443"
    endpoints = {
        "subsets": [
            {
                "addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}],
                "ports": [{"name": "https", "port": 6443}],
            }
        ]
    }
    assert endpoint_addresses(endpoints) == ["10.0.0.1:6443", "10.0.0.2:6443"]


async def test_fails_over_and_closes_connections_to_a_dead_server(tmp_path: Path) -> None:
    a, b = _Echo("a"), _Echo("b")
    addr_a, addr_b = await a.start(), await b.start()
    state = tmp_path / "lb.json"
    lb = LoadBalancer("test-lb", addr_a, port=0, state_file=state)
    await lb.start()
    try:
        _, w1, answer = await _ask(lb.port, "one")
        assert answer == "a:one"
        lb.set_servers([addr_b])  # learned from Endpoints; the default server stays
        assert lb.servers == sorted([addr_a, addr_b])
        await eventually(lambda: state.exists(), WAIT_S, what="the saved server list")
        assert sorted(json.loads(state.read_text())["servers"]) == sorted([addr_a, addr_b])
        assert state.stat().st_mode & 0o777 == 0o600

        reader1, w1b, answer = await _ask(lb.port, "two")
        assert answer == "a:two"  # one current server for every connection
        await a.kill()
        await lb.check_health()
        assert lb.current == addr_b
        # The connection to the dead server was closed by the balancer, not left hanging.
        assert await reader1.read() == b""
        _, w2, answer = await _ask(lb.port, "three")
        assert answer == "b:three"
        for w in (w1, w1b, w2):
            w.close()
    finally:
        await lb.stop()
        for echo in (a, b):
            if echo.server is not None:
                echo.server.close()
    # A restart finds the learned servers in its state file.
    again = LoadBalancer("test-lb", addr_a, port=0, state_file=state)
    await again.start()
    try:
        assert again.servers == sorted([addr_a, addr_b])
    finally:
        await again.stop()


@pytest.mark.postgres
async def test_agent_client_survives_killing_its_server(
    tmp_path: Path, postgres_server: Any
) -> None:
    dsn = postgres_server.create_database()
    port = free_port()
    procs: list[subprocess.Popen[str]] = []
    lb: LoadBalancer | None = None
    watcher: EndpointsWatcher | None = None
    client: Client | None = None
    informer: Informer | None = None
    try:
        logs = []
        for ip in ("127.0.0.2", "127.0.0.3"):
            home = tmp_path / ip
            home.mkdir()
            proc, log_path = start_server(
                home,
                "--disable-agent",
                "--datastore-endpoint",
                dsn,
                "--token",
                "lb-test-token",
                "--https-listen-port",
                str(port),
                "--bind-address",
                ip,
                "--advertise-address",
                ip,
            )
            procs.append(proc)
            logs.append(log_path)
        for proc, log_path in zip(procs, logs, strict=True):
            wait_for_log(proc, log_path, "all components ready")

        admin = await asyncio.to_thread(
            ClientConfig.from_kubeconfig, tmp_path / "127.0.0.2" / "kubeconfig.yaml"
        )
        lb = LoadBalancer("agent-lb", f"127.0.0.2:{port}", port=0)
        await lb.start()
        through_lb = dataclasses.replace(admin, server=lb.url)
        watcher = EndpointsWatcher(through_lb, lb)
        await watcher.start(None)  # type: ignore[arg-type]
        both = sorted([f"127.0.0.2:{port}", f"127.0.0.3:{port}"])
        await eventually(
            lambda: lb.servers == both, WAIT_S, what="both servers learned from Endpoints"
        )
        assert lb.current == f"127.0.0.2:{port}"

        client = Client(through_lb)
        informer = Informer(client, CONFIGMAPS, namespace="default")
        informer.start()
        await informer.wait_synced()
        await client.create(
            CONFIGMAPS, {"metadata": {"name": "before"}, "data": {}}, namespace="default"
        )
        await eventually(
            lambda: informer.cache.get("default/before") is not None, WAIT_S, what="before"
        )

        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait(timeout=30)

        async def create_after() -> bool:
            try:
                await client.create(
                    CONFIGMAPS, {"metadata": {"name": "after"}, "data": {}}, namespace="default"
                )
            except TransportError:
                return False  # the one request in flight when the server died
            return True

        await eventually(create_after, WAIT_S, what="a write through the surviving server")
        assert lb.current == f"127.0.0.3:{port}"
        # The watch reconnected through the balancer and saw the new object.
        await eventually(
            lambda: informer.cache.get("default/after") is not None, WAIT_S, what="watch"
        )
    finally:
        if informer is not None:
            await informer.stop()
        if client is not None:
            await client.close()
        if watcher is not None:
            await watcher.stop()
        if lb is not None:
            await lb.stop()
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()


async def test_a_taken_port_falls_back_only_when_derived() -> None:
    taken = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = taken.sockets[0].getsockname()[1]
    try:
        chosen = LoadBalancer("lb", "127.0.0.1:1", port=port)
        with pytest.raises(OSError, match=f"cannot listen on port {port}"):
            await chosen.start()
        derived = LoadBalancer("lb", "127.0.0.1:1", port=port, fallback_to_free_port=True)
        await derived.start()
        try:
            assert derived.port != port and derived.url.endswith(f":{derived.port}")
        finally:
            await derived.stop()
    finally:
        taken.close()
