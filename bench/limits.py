"""Request-limits benchmark: ``python -m bench.limits``.

Starts ``sampan server`` (datastore + API server, no agent) as a child process with a
temporary data dir, creates ConfigMaps until one LIST of them is about 50 MB, then measures in
one run:

* baseline: GET of one object and ``/readyz``, p50/p99, with nothing else running;
* under load: the same GETs and ``/readyz`` while 20 concurrent LISTs of the ~50 MB
  collection run (``curl`` processes, so reading 1 GB of responses does not compete with the
  measuring client for this process's event loop), plus how long each LIST took.

Goal (issue #12, request limits): under load, GET p99 <= 100 ms and ``/readyz`` fast.
``--selector`` runs the LISTs with a label selector (the filtering pass over the cache is one
synchronous step per LIST).
All clients use the admin certificate; 20 LISTs stay far below the in-flight limit (400).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp

from bench.api import Bench, client_ssl, pct

OBJECT_DATA_BYTES = 4800
"""Payload per ConfigMap: with its metadata about 5 KB on the wire."""
CONCURRENT_LISTS = 20
CREATE_CONCURRENCY = 32
PROBE_INTERVAL_S = 0.02


class LimitsBench(Bench):
    def __init__(self, workdir: Path, quick: bool, selector: bool) -> None:
        super().__init__(workdir, quick)
        self.list_mb = 10 if quick else 50
        self.selector = selector

    async def create_objects(self, session: aiohttp.ClientSession, ns_url: str) -> int:
        count = self.list_mb * 1_000_000 // (OBJECT_DATA_BYTES + 300)
        payload = "x" * OBJECT_DATA_BYTES
        counter = iter(range(count))

        async def worker() -> None:
            for i in counter:
                body = {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": f"big-{i:06d}", "labels": {"bench": "limits"}},
                    "data": {"payload": payload},
                }
                async with session.post(ns_url, json=body) as r:
                    if r.status != 201:
                        raise SystemExit(f"create: {r.status} {await r.text()}")

        await asyncio.gather(*(worker() for _ in range(CREATE_CONCURRENCY)))
        return count

    async def probe(
        self, session: aiohttp.ClientSession, url: str, until: asyncio.Event | int
    ) -> list[float]:
        """Sequential GETs of ``url`` until ``until`` is set (or that many times)."""
        latencies: list[float] = []
        n = 0
        while True:
            if isinstance(until, int):
                if n >= until:
                    break
            elif until.is_set():
                break
            t0 = time.perf_counter()
            async with session.get(url) as r:
                await r.read()
                if r.status != 200:
                    raise SystemExit(f"GET {url}: {r.status} {await r.text()}")
            latencies.append(time.perf_counter() - t0)
            n += 1
            await asyncio.sleep(PROBE_INTERVAL_S)
        return latencies

    async def curl_list(self, url: str) -> tuple[float, int]:
        w = self.workdir
        t0 = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            "curl",
            "-sS",
            "--cacert",
            str(w / "ca.crt"),
            "--cert",
            str(w / "client.crt"),
            "--key",
            str(w / "client.key"),
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{size_download}",
            url,
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await proc.communicate()
        status, _, size = out.decode().partition(" ")
        if status != "200":
            raise SystemExit(f"LIST {url}: HTTP {status}")
        return time.perf_counter() - t0, int(size)

    async def run(self) -> None:  # type: ignore[override]
        await self.start_server()
        ctx = client_ssl(self.kubeconfig, self.workdir)  # also writes ca/client files for curl
        conn = aiohttp.TCPConnector(ssl=ctx, limit=0)
        timeout = aiohttp.ClientTimeout(total=None, sock_read=300)
        async with aiohttp.ClientSession(connector=conn, timeout=timeout) as s:
            ns = f"{self.url}/api/v1/namespaces/default/configmaps"
            t0 = time.perf_counter()
            count = await self.create_objects(s, ns)
            print(f"created {count} ConfigMaps in {time.perf_counter() - t0:.1f} s")
            one = f"{ns}/big-000000"
            readyz = f"{self.url}/readyz"
            list_url = f"{ns}?labelSelector=bench%3Dlimits" if self.selector else ns
            warm, size = await self.curl_list(list_url)
            print(f"one LIST alone: {size / 1e6:.1f} MB in {warm * 1e3:.0f} ms")

            n = 100 if self.quick else 300
            base_get = await self.probe(s, one, n)
            base_ready = await self.probe(s, readyz, n)

            done = asyncio.Event()
            lists_task = asyncio.gather(
                *(self.curl_list(list_url) for _ in range(CONCURRENT_LISTS))
            )
            get_task = asyncio.create_task(self.probe(s, one, done))
            ready_task = asyncio.create_task(self.probe(s, readyz, done))
            t0 = time.perf_counter()
            list_results = await lists_task
            wall = time.perf_counter() - t0
            done.set()
            load_get = await get_task
            load_ready = await ready_task

        def line(name: str, values: list[float]) -> None:
            self.report(
                name,
                f"n={len(values):<5} p50 {pct(values, 50) * 1e3:7.1f} ms  "
                f"p99 {pct(values, 99) * 1e3:7.1f} ms  max {max(values) * 1e3:7.1f} ms",
            )

        durations = [d for d, _ in list_results]
        print(f"Baseline (no LIST load), sequential probes every {PROBE_INTERVAL_S * 1e3:.0f} ms:")
        line("GET one ConfigMap", base_get)
        line("GET /readyz", base_ready)
        what = " with a label selector" if self.selector else ""
        print(f"Under load: {CONCURRENT_LISTS} concurrent LISTs{what} of {size / 1e6:.1f} MB:")
        line("GET one ConfigMap", load_get)
        line("GET /readyz", load_ready)
        self.report(
            "LIST durations",
            f"median {statistics.median(durations):.2f} s  max {max(durations):.2f} s  "
            f"(all {CONCURRENT_LISTS} done in {wall:.2f} s)",
        )
        print("Goal: under load, GET p99 <= 100 ms and /readyz fast.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 MB LISTs, fewer probes")
    parser.add_argument(
        "--selector", action="store_true", help="LISTs with a label selector (matching all)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sampan-bench-limits-") as tmp:
        bench = LimitsBench(Path(tmp), args.quick, args.selector)
        try:
            asyncio.run(bench.run())
        finally:
            bench.stop()


if __name__ == "__main__":
    main()
