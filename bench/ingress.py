"""Ingress benchmark: ``python -m bench.ingress``.

Runs Sampan's ingress data plane as the controller does (``sampan.ingress.render`` -> nginx
with its own ``-c``/``-p`` under a temp dir, on free loopback ports) in front of three aiohttp
backends in a child process, and measures in the same run:

* requests/s and p99 latency through nginx (Host header, keep-alive, 3 endpoints) beside
  requests/s and p99 straight to one backend (goal: through >= 70% of direct);
* with 500 Ingresses: render time, ``nginx -t`` time, and the time from a changed Ingress to
  nginx answering the new route after a graceful reload (SIGHUP).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import aiohttp

from sampan.ingress.render import RenderOptions, render

BACKEND = textwrap.dedent(
    """
    import asyncio, sys
    from aiohttp import web
    async def ok(request):
        return web.Response(text="ok")
    async def main():
        app = web.Application()
        app.router.add_get("/{tail:.*}", ok)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        for port in sys.argv[1:]:
            await web.TCPSite(runner, "127.0.0.1", int(port)).start()
        await asyncio.Event().wait()
    asyncio.run(main())
    """
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def objects(
    count: int, ports: list[int], path: str = "/"
) -> tuple[list[Any], list[Any], list[Any]]:
    service = {
        "metadata": {"namespace": "default", "name": "echo"},
        "spec": {"ports": [{"name": "http", "port": 80}]},
    }
    eps = {
        "metadata": {
            "namespace": "default",
            "name": "echo-1",
            "labels": {"kubernetes.io/service-name": "echo"},
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": ports[0]}],
        "endpoints": [],
    }
    slices = []
    for i, port in enumerate(ports):
        s = dict(eps, metadata=dict(eps["metadata"], name=f"echo-{i}"))
        s["ports"] = [{"name": "http", "port": port}]
        s["endpoints"] = [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}]
        slices.append(s)
    ingresses = [
        {
            "metadata": {"namespace": "default", "name": f"web{i}"},
            "spec": {
                "rules": [
                    {
                        "host": f"h{i}.example.com",
                        "http": {
                            "paths": [
                                {
                                    "path": path if i == 0 else "/",
                                    "pathType": "Prefix",
                                    "backend": {
                                        "service": {"name": "echo", "port": {"name": "http"}}
                                    },
                                }
                            ]
                        },
                    }
                ]
            },
        }
        for i in range(count)
    ]
    return ingresses, [service], slices


async def load(url: str, host: str, seconds: float, concurrency: int) -> tuple[float, float]:
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                async with session.get(url, headers={"Host": host}) as resp:
                    await resp.read()
                    assert resp.status == 200, resp.status
                latencies.append(time.perf_counter() - start)

        begin = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - begin
    p99 = statistics.quantiles(latencies, n=100)[98]
    return len(latencies) / elapsed, p99 * 1000


async def until_ok(url: str, host: str) -> None:
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(url, headers={"Host": host}) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.005)


def nginx_argv(d: Path, conf: Path) -> list[str]:
    return ["nginx", "-c", str(conf), "-p", f"{d}/", "-e", str(d / "logs" / "error.log")]


async def main(seconds: float, concurrency: int, ingresses: int) -> None:
    ports = [free_port() for _ in range(3)]
    backend = subprocess.Popen([sys.executable, "-c", BACKEND, *map(str, ports)])
    d = Path(tempfile.mkdtemp(prefix="sampan-bench-ingress-"))
    for sub in ("logs", "tmp"):
        (d / sub).mkdir()
    http_port = free_port()
    options = RenderOptions(data_dir=str(d), http_port=http_port)
    conf = d / "nginx.conf"
    ing, services, slices = objects(1, ports)
    conf.write_text(render(ing, services, slices, {}, options).text)
    nginx = subprocess.Popen(nginx_argv(d, conf), start_new_session=True)
    try:
        through = f"http://127.0.0.1:{http_port}/"
        direct = f"http://127.0.0.1:{ports[0]}/"
        await until_ok(through, "h0.example.com")
        await until_ok(direct, "x")
        d_rps, d_p99 = await load(direct, "x", seconds, concurrency)
        i_rps, i_p99 = await load(through, "h0.example.com", seconds, concurrency)
        print(f"direct to one backend: {d_rps:8.0f} req/s  p99 {d_p99:6.2f} ms")
        print(f"through the ingress:   {i_rps:8.0f} req/s  p99 {i_p99:6.2f} ms")
        print(f"ratio: {i_rps / d_rps:.0%} of direct (goal >= 70%)")

        ing, services, slices = objects(ingresses, ports)
        start = time.perf_counter()
        text = render(ing, services, slices, {}, options).text
        render_ms = (time.perf_counter() - start) * 1000
        conf.write_text(text)
        start = time.perf_counter()
        subprocess.run([*nginx_argv(d, conf), "-t", "-q"], check=True)
        test_ms = (time.perf_counter() - start) * 1000
        nginx.send_signal(signal.SIGHUP)
        await until_ok(through, f"h{ingresses - 1}.example.com")
        # the measured change: one Ingress's path, render + nginx -t + reload until served
        start = time.perf_counter()
        ing, services, slices = objects(ingresses, ports, path="/v2")
        conf.write_text(render(ing, services, slices, {}, options).text)
        subprocess.run([*nginx_argv(d, conf), "-t", "-q"], check=True)
        nginx.send_signal(signal.SIGHUP)
        await until_ok(f"http://127.0.0.1:{http_port}/v2/x", "h0.example.com")
        reload_ms = (time.perf_counter() - start) * 1000
        print(
            f"{ingresses} Ingresses: render {render_ms:.0f} ms, nginx -t {test_ms:.0f} ms, "
            f"change to served (render + test + reload) {reload_ms:.0f} ms"
        )
    finally:
        nginx.send_signal(signal.SIGTERM)
        nginx.wait()
        backend.terminate()
        backend.wait()
        subprocess.run(["rm", "-rf", str(d)], check=False)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--ingresses", type=int, default=500)
    args = parser.parse_args()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    asyncio.run(main(args.seconds, args.concurrency, args.ingresses))
