"""Apply benchmark: ``python -m bench.apply``.

Starts ``sampan server`` (as bench.api does) and measures, beside a baseline taken in the same
run:

* ``kubectl apply -f <dir>`` of 100 objects (50 ConfigMaps, 50 Deployments): wall time of the
  first apply (creates), the second (all unchanged) and a third that changes every object
  (three-way strategic merge patches), beside ``kubectl create -f`` of the same objects in
  another namespace;
* server-side apply requests/s (32 concurrent clients, aiohttp over TLS): apply that creates,
  apply of an unchanged configuration, apply that changes a field — beside plain POST creates
  of the same ConfigMaps.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import aiohttp

from bench.admission import server_cpu_s
from bench.api import Bench, client_ssl, pct

KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"
APPLY_CONTENT_TYPE = "application/apply-patch+yaml"
KUBECTL_OBJECTS = 100
CONCURRENCY = 32


def manifest(index: int, namespace: str, generation: int) -> dict:
    if index % 2 == 0:
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": f"cm-{index}", "namespace": namespace},
            "data": {"key": f"value-{generation}", "other": "x" * 64},
        }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": f"deploy-{index}", "namespace": namespace},
        "spec": {
            "replicas": 1 + generation,
            "selector": {"matchLabels": {"app": f"d{index}"}},
            "template": {
                "metadata": {"labels": {"app": f"d{index}"}},
                "spec": {
                    "containers": [
                        {
                            "name": "main",
                            "image": f"registry.example/app:{generation}",
                            "ports": [{"containerPort": 8080}],
                        }
                    ]
                },
            },
        },
    }


class ApplyBench(Bench):
    def kubectl(self, *args: str) -> KubectlRun:
        env = dict(os.environ, KUBECONFIG=str(self.kubeconfig), HOME=str(self.workdir))
        children0 = _children_cpu_s()
        server0 = server_cpu_s(self.server_pid)
        t0 = time.perf_counter()
        done = subprocess.run(
            [KUBECTL, *args], env=env, capture_output=True, text=True, check=False
        )
        elapsed = time.perf_counter() - t0
        if done.returncode != 0:
            raise SystemExit(f"kubectl {' '.join(args)} failed: {done.stderr}")
        return KubectlRun(
            elapsed, _children_cpu_s() - children0, server_cpu_s(self.server_pid) - server0
        )

    def write_dir(self, name: str, namespace: str, generation: int, count: int) -> Path:
        directory = self.workdir / name
        directory.mkdir(exist_ok=True)
        for index in range(count):
            obj = manifest(index, namespace, generation)
            (directory / f"{index:03d}.json").write_text(json.dumps(obj))
        return directory

    async def kubectl_apply(self) -> None:
        count = KUBECTL_OBJECTS // 4 if self.quick else KUBECTL_OBJECTS
        print(f"kubectl apply of {count} objects (wall time, one kubectl process each):")
        for namespace in ("bench-apply", "bench-create"):
            await asyncio.to_thread(self.kubectl, "create", "namespace", namespace)
        # Warm kubectl's discovery cache so both sides pay the same.
        await asyncio.to_thread(self.kubectl, "get", "namespaces")
        created = self.write_dir("create", "bench-create", 0, count)
        first = self.write_dir("apply-0", "bench-apply", 0, count)
        changed = self.write_dir("apply-1", "bench-apply", 1, count)
        baseline = await asyncio.to_thread(self.kubectl, "create", "-f", str(created))
        self.report("baseline: kubectl create -f", baseline.describe())
        runs = (
            ("kubectl apply -f (all created)", ("apply", "-f", str(first))),
            ("kubectl apply -f (all unchanged)", ("apply", "-f", str(first))),
            ("kubectl apply -f (all configured)", ("apply", "-f", str(changed))),
        )
        for label, args in runs:
            took = await asyncio.to_thread(self.kubectl, *args)
            self.report(label, took.describe(baseline))
        took = await asyncio.to_thread(
            self.kubectl, "apply", "--server-side", "--force-conflicts", "-f", str(first)
        )
        self.report("kubectl apply --server-side -f (all changed)", took.describe())

    async def rate(
        self,
        session: aiohttp.ClientSession,
        method: str,
        path_of,
        body_of,
        content_type: str,
        total: int,
    ) -> tuple[float, list[float]]:
        latencies: list[float] = []
        counter = iter(range(total))

        async def worker() -> None:
            for i in counter:
                data = json.dumps(body_of(i)).encode()
                t0 = time.perf_counter()
                async with session.request(
                    method, path_of(i), data=data, headers={"Content-Type": content_type}
                ) as resp:
                    body = await resp.read()
                    if resp.status >= 300:
                        raise SystemExit(f"{method} {path_of(i)}: {resp.status} {body[:300]!r}")
                latencies.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        return total / (time.perf_counter() - t0), latencies

    async def server_side_apply(self) -> None:
        total = 500 if self.quick else 3000
        print(f"Server-side apply, {CONCURRENCY} concurrent clients, {total} requests each:")
        ssl_context = client_ssl(self.kubeconfig, self.workdir)
        connector = aiohttp.TCPConnector(ssl=ssl_context, limit=CONCURRENCY)
        async with aiohttp.ClientSession(self.url, connector=connector) as session:
            base = "/api/v1/namespaces/default/configmaps"

            def cm(i: int, value: str) -> dict:
                return {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": f"ssa-{i}"},
                    "data": {"key": value, "other": "x" * 64},
                }

            def posted(i: int) -> dict:
                return {**cm(i, "v"), "metadata": {"name": f"post-{i}"}}

            rate, lat = await self.rate(
                session, "POST", lambda i: base, posted, "application/json", total
            )
            self.report("baseline: POST creates/s", _rate(rate, lat))
            runs = (
                ("apply creating the object", "a"),
                ("apply unchanged", "a"),
                ("apply changing a field", "b"),
            )
            for label, value in runs:
                rate, lat = await self.rate(
                    session,
                    "PATCH",
                    lambda i: f"{base}/ssa-{i}?fieldManager=bench",
                    lambda i, value=value: cm(i, value),
                    APPLY_CONTENT_TYPE,
                    total,
                )
                self.report(f"{label}/s", _rate(rate, lat))

    async def run(self) -> None:
        await self.start_server()
        await self.kubectl_apply()
        await self.server_side_apply()


class KubectlRun:
    """Wall time of one kubectl run and the CPU seconds kubectl and the server spent in it."""

    def __init__(self, wall_s: float, kubectl_cpu_s: float, server_cpu_s: float) -> None:
        self.wall_s = wall_s
        self.kubectl_cpu_s = kubectl_cpu_s
        self.server_cpu_s = server_cpu_s

    def describe(self, baseline: KubectlRun | None = None) -> str:
        ratio = f"({self.wall_s / baseline.wall_s:.2f}x)" if baseline is not None else ""
        return (
            f"{self.wall_s:5.2f} s {ratio:8} kubectl CPU {self.kubectl_cpu_s:5.2f} s"
            f"  server CPU {self.server_cpu_s:5.2f} s"
        )


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _rate(rate: float, latencies: list[float]) -> str:
    p50_ms = pct(latencies, 50) * 1e3
    p99_ms = pct(latencies, 99) * 1e3
    return f"{rate:8.0f}/s  p50 {p50_ms:.1f} ms  p99 {p99_ms:.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sampan-bench-apply-") as tmp:
        bench = ApplyBench(Path(tmp), args.quick)
        try:
            asyncio.run(bench.run())
        finally:
            bench.stop()


if __name__ == "__main__":
    main()
