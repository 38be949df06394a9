"""Manager tunnel benchmark: ``python -m bench.manager [--requests 2000] [--events 500]
[--streams 100] [--stream-mib 1]``.

Starts, on loopback: a downstream HTTPS aiohttp server (the stand-in for a downstream API
server: a small JSON GET, a watch that sends one event each time the benchmark triggers it,
and a ``logs -f``-like endpoint streaming ``--stream-mib`` MiB), the manager's tunnel endpoint
(``TunnelServer`` over TLS, in this process) and a cluster agent as its container runs it
(``python -m sampan.manager.tunnel``, a child process). The same ``aiohttp`` client then talks
to the downstream server twice — directly (the baseline) and through the tunnel via
``TunnelServer.connector`` — with TLS end to end in both cases. Printed, side by side:

* GET latency p50/p99 over one kept-alive connection, ``--requests`` sequential requests;
  the overhead is the tunnel's p50 minus the direct p50 (goal: ≤ 2 ms);
* watch-event latency p50/p99: from the server being told to send an event to the client
  having read it, ``--events`` times;
* throughput: ``--streams`` concurrent streaming GETs of ``--stream-mib`` MiB each (a
  ``logs -f`` burst), total MiB/s and the wall time.

A third column goes through the whole manager as kubectl does: an in-process API server (the
manager's "local" cluster, for its Users, Tokens and bindings) runs the real manager component
(``ManagerComponent``: HTTPS API, watch-backed caches, tunnel endpoint); a second agent child
registers cluster ``bench`` with it, and a non-admin user bound ``read-only`` there sends GETs
and a watch to ``/k8s/clusters/<id>/...`` with its token: token authentication, the manager's
RBAC, the proxy (TLS terminated, re-originated through the tunnel, impersonation headers) and
the tunnel, against the same downstream server. Its overhead is against the direct p50 (goal:
≤ 2 ms).

Both ends of the tunnel share this machine's cores with the client and the server, so the
overhead measured here is an upper bound for a manager and an agent on separate hosts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import ssl
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from tests.manager.tunnel.conftest import Pki, free_port, make_pki
from tests.support.apiserver import ApiServerHarness

from sampan.manager.component import ManagerComponent, ManagerOptions
from sampan.manager.tunnel import CACERTS_PATH, TunnelServer, ca_checksum, cacerts_handler

CLUSTER = "bench"
TOKEN = "bench-token"
CHUNK = b"x" * 16384
BENCH_PASSWORD = "a password for the benchmark"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


class Downstream:
    def __init__(self, stream_bytes: int) -> None:
        self.stream_bytes = stream_bytes
        self.trigger: asyncio.Queue[None] = asyncio.Queue()

    async def get(self, _request: web.Request) -> web.Response:
        return web.json_response(
            {"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": "default"}}
        )

    async def watch(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_type = "application/json"
        self.trigger = trigger = asyncio.Queue()  # the newest watch gets the events
        await response.prepare(request)
        while True:
            await trigger.get()
            await response.write(b'{"type":"MODIFIED","object":{"kind":"Pod"}}\n')

    async def logs(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        left = self.stream_bytes
        while left > 0:
            await response.write(CHUNK[: min(left, len(CHUNK))])
            left -= len(CHUNK)
        await response.write_eof()
        return response


@contextlib.asynccontextmanager
async def serve(app: web.Application, pki: Pki, port: int = 0) -> AsyncIterator[int]:
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, ssl_context=pki.server_context())
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


async def get_latencies(http: aiohttp.ClientSession, url: str, n: int) -> list[float]:
    for _ in range(20):  # warm-up: connection, TLS session
        async with http.get(url) as response:
            await response.read()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        async with http.get(url) as response:
            await response.read()
        out.append((time.perf_counter() - t0) * 1000)
    return out


async def watch_latencies(
    http: aiohttp.ClientSession, url: str, down: Downstream, n: int
) -> list[float]:
    out = []
    async with http.get(url) as response:
        for i in range(n + 10):
            t0 = time.perf_counter()
            down.trigger.put_nowait(None)
            await response.content.readline()
            if i >= 10:
                out.append((time.perf_counter() - t0) * 1000)
    return out


async def throughput(http: aiohttp.ClientSession, url: str, streams: int) -> tuple[float, float]:
    async def one() -> int:
        total = 0
        async with http.get(url) as response:
            async for chunk in response.content.iter_any():
                total += len(chunk)
        return total

    t0 = time.perf_counter()
    sizes = await asyncio.gather(*(one() for _ in range(streams)))
    wall = time.perf_counter() - t0
    return sum(sizes) / 2**20 / wall, wall


async def _json(
    http: aiohttp.ClientSession, method: str, url: str, body: object = None, token: str = ""
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.request(method, url, json=body, headers=headers) as response:
        answer = await response.json()
        if response.status >= 300:
            raise RuntimeError(f"{method} {url}: {response.status} {answer}")
        return dict(answer)


def _agent_env(
    manager_url: str, ca_pem: bytes, token: str, cluster: str, target: str
) -> dict[str, str]:
    return dict(
        os.environ,
        SAMPAN_MANAGER_URL=manager_url,
        SAMPAN_CA_CHECKSUM=ca_checksum(ca_pem),
        SAMPAN_TOKEN=token,
        SAMPAN_CLUSTER_NAME=cluster,
        SAMPAN_ALLOWED_TARGETS=target,
    )


@contextlib.asynccontextmanager
async def through_manager(
    directory: Path, down_port: int, down_pki: Pki
) -> AsyncIterator[tuple[aiohttp.ClientSession, str]]:
    """The whole manager in front of the downstream server: a session whose requests carry a
    read-only user's token, and the proxy URL of the downstream (see the module docstring)."""
    harness = ApiServerHarness(directory / "local")
    await harness.start()
    assert harness.server is not None
    manager = ManagerComponent(
        harness.client_config(),
        ManagerOptions(manager_dir=directory / "manager", bind_address="127.0.0.1", port=0),
        harness.server.pki,
    )
    agent: asyncio.subprocess.Process | None = None
    try:
        await manager.start()
        base = f"https://127.0.0.1:{manager.port}"
        ca_pem = harness.server.pki.ca_pem
        context = ssl.create_default_context(cadata=ca_pem.decode())
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as http:
            password = manager.bootstrap_password_path.read_text().strip()
            login = base + "/v3-public/localProviders/local?action=login"
            admin = (await _json(http, "POST", login, {"username": "admin", "password": password}))[
                "token"
            ]
            await _json(
                http,
                "POST",
                base + "/v3/users?action=changepassword",
                {"currentPassword": password, "newPassword": BENCH_PASSWORD},
                admin,
            )
            cluster = await _json(http, "POST", base + "/v3/clusters", {"name": CLUSTER}, admin)
            user = await _json(
                http,
                "POST",
                base + "/v3/users",
                {"username": "reader", "password": BENCH_PASSWORD, "mustChangePassword": False},
                admin,
            )
            await _json(
                http,
                "POST",
                base + "/v3/clusterroletemplatebindings",
                {"userId": user["id"], "clusterId": cluster["id"], "roleTemplateId": "read-only"},
                admin,
            )
            reader = (
                await _json(http, "POST", login, {"username": "reader", "password": BENCH_PASSWORD})
            )["token"]
            accounts = directory / "serviceaccount"
            accounts.mkdir()
            (accounts / "token").write_text("bench-service-account-token")
            (accounts / "ca.crt").write_bytes(down_pki.ca_pem)
            env = _agent_env(
                base,
                ca_pem,
                cluster["registration"]["token"],
                cluster["id"],
                f"127.0.0.1:{down_port}",
            )
            env["SAMPAN_SERVICEACCOUNT_DIR"] = str(accounts)
            agent = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "sampan.manager.tunnel",
                env=env,
                stderr=asyncio.subprocess.DEVNULL,
            )
            deadline = time.monotonic() + 60
            while True:
                view = await _json(http, "GET", f"{base}/v3/clusters/{cluster['id']}", token=admin)
                if any(
                    c["type"] == "Connected" and c["status"] == "True" for c in view["conditions"]
                ):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"cluster {cluster['id']} did not connect: {view}")
                await asyncio.sleep(0.1)
        connector = aiohttp.TCPConnector(ssl=context, limit=0)
        headers = {"Authorization": f"Bearer {reader}"}
        async with aiohttp.ClientSession(connector=connector, headers=headers) as proxied:
            yield proxied, f"{base}/k8s/clusters/{cluster['id']}"
    finally:
        if agent is not None:
            agent.kill()
            await agent.wait()
        await manager.stop()
        await harness.stop()


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="sampan-bench-manager-") as directory:
        manager_pki = make_pki(Path(directory), "manager")
        down_pki = make_pki(Path(directory), "downstream")
        down = Downstream(int(args.stream_mib * 2**20))
        app = web.Application()
        app.router.add_get("/api/v1/namespaces/default", down.get)
        app.router.add_get("/api/v1/pods", down.watch)
        app.router.add_get("/api/v1/namespaces/default/pods/p/log", down.logs)
        connected = asyncio.Event()
        tunnels = TunnelServer(
            lambda token, _name: CLUSTER if token == TOKEN else None,
            on_change=lambda state: connected.set() if state.connected else connected.clear(),
        )
        manager_app = web.Application()
        tunnels.add_routes(manager_app)
        manager_app.router.add_get(CACERTS_PATH, cacerts_handler(manager_pki.ca_pem))
        manager_port = free_port()
        async with serve(app, down_pki) as down_port, serve(manager_app, manager_pki, manager_port):
            env = _agent_env(
                f"https://127.0.0.1:{manager_port}",
                manager_pki.ca_pem,
                TOKEN,
                CLUSTER,
                f"127.0.0.1:{down_port}",
            )
            agent = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "sampan.manager.tunnel",
                env=env,
                stderr=asyncio.subprocess.DEVNULL,
            )
            try:
                await asyncio.wait_for(connected.wait(), 60)
                base = f"https://127.0.0.1:{down_port}"
                context = down_pki.client_context()
                direct = aiohttp.TCPConnector(ssl=context, limit=0)
                tunnel = tunnels.connector(CLUSTER, ssl=context, limit=0)
                async with (
                    aiohttp.ClientSession(connector=direct) as d_http,
                    aiohttp.ClientSession(connector=tunnel) as t_http,
                    through_manager(Path(directory), down_port, down_pki) as (p_http, p_base),
                ):
                    await report(args, base, down, d_http, t_http, (p_http, p_base))
            finally:
                agent.kill()
                await agent.wait()


async def report(
    args: argparse.Namespace,
    base: str,
    down: Downstream,
    direct: aiohttp.ClientSession,
    tunnel: aiohttp.ClientSession,
    proxy: tuple[aiohttp.ClientSession, str],
) -> None:
    def row(name: str, d: list[float], t: list[float], p: list[float]) -> None:
        print(
            f"{name:<20} direct p50 {pct(d, 50):5.2f} p99 {pct(d, 99):5.2f} | "
            f"tunnel p50 {pct(t, 50):5.2f} p99 {pct(t, 99):5.2f} "
            f"(+{pct(t, 50) - pct(d, 50):.2f}) | "
            f"manager proxy p50 {pct(p, 50):5.2f} p99 {pct(p, 99):5.2f} "
            f"(+{pct(p, 50) - pct(d, 50):.2f}) ms; goal overhead p50 <= 2 ms"
        )

    p_http, p_base = proxy
    path = "/api/v1/namespaces/default"
    d = await get_latencies(direct, base + path, args.requests)
    t = await get_latencies(tunnel, base + path, args.requests)
    p = await get_latencies(p_http, p_base + path, args.requests)
    row(f"GET x{args.requests}", d, t, p)
    d = await watch_latencies(direct, f"{base}/api/v1/pods", down, args.events)
    t = await watch_latencies(tunnel, f"{base}/api/v1/pods", down, args.events)
    p = await watch_latencies(p_http, f"{p_base}/api/v1/pods", down, args.events)
    row(f"watch event x{args.events}", d, t, p)
    url = f"{base}/api/v1/namespaces/default/pods/p/log"
    d_rate, d_wall = await throughput(direct, url, args.streams)
    t_rate, t_wall = await throughput(tunnel, url, args.streams)
    print(
        f"{args.streams} streams x {args.stream_mib:g} MiB  "
        f"direct {d_rate:7.1f} MiB/s ({d_wall:.2f} s) | "
        f"tunnel {t_rate:7.1f} MiB/s ({t_wall:.2f} s) | tunnel/direct {t_rate / d_rate:.0%}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--events", type=int, default=500)
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--stream-mib", type=float, default=1.0)
    # The manager's background upkeep (downstream RBAC, cluster health) finds no Kubernetes
    # API behind the stand-in downstream server: its warnings are not the benchmark's.
    logging.basicConfig(level=logging.ERROR)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
