"""Workload controller benchmark: ``python -m bench.controllers``.

Three processes, as in a real cluster with KWOK-style simulated nodes:

* an API server (``sampan.apiserver.APIServer`` over SQLite in a temporary dir);
* the controllers under test — ReplicaSet, Deployment and the garbage collector, run exactly as
  the controller manager runs them (``ControllerContext`` + informers), as the controllers'
  identity; their CPU seconds are read from ``/proc/<pid>/stat``;
* this process: the benchmark, which creates ``--nodes`` Ready nodes and plays scheduler and
  kubelet for every pod (bind to a node round-robin, then status Running + Ready; finish the
  graceful deletion of terminating pods).

Measured:

* **baseline**: the simulator alone creates ``--replicas`` pods itself (64 concurrent creates),
  binds them and marks them Ready, then deletes them — the floor set by the API server and the
  simulated kubelet, measured in the same run;
* **create**: a Deployment of ``--replicas`` replicas — time until every pod exists, time until
  its status counts every pod available, and the controllers' CPU seconds meanwhile;
* **delete**: deleting that Deployment (background propagation) — time until no pod is left,
  and the controllers' CPU seconds.

Issue 5's benchmark: a Deployment of 1,000 replicas (the default).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

READY_TIMEOUT_S = 60.0
RUN_TIMEOUT_S = 600.0
SIMULATOR_CONCURRENCY = 64
NAMESPACE = "default"

log = logging.getLogger("bench.controllers")


# ---------------------------------------------------------------------------------------------
# child processes


async def _serve_api(data_dir: Path) -> None:
    from sampan.apiserver import APIServer, APIServerOptions
    from sampan.datastore import open_backend
    from sampan.pki import ensure_client_kubeconfig

    backend = open_backend("", data_dir)
    await backend.start()
    options = APIServerOptions(
        tls_dir=data_dir / "server" / "tls",
        hostname="localhost",
        node_ips=("127.0.0.1",),
        bind_address="127.0.0.1",
        port=0,
        kubeconfig_path=data_dir / "admin.kubeconfig",
    )
    server = APIServer(options, backend)
    await server.start()
    await asyncio.to_thread(
        ensure_client_kubeconfig,
        server.pki,
        name="sampan-controller",
        common_name="system:sampan-controller",
        organizations=(),
        path=data_dir / "controller.kubeconfig",
        server_url=server.url,
    )
    print("READY", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop()
    await backend.close()


async def _run_controllers(kubeconfig: Path) -> None:
    from sampan.client import Client, ClientConfig, SharedInformerFactory
    from sampan.controllers.base import ControllerContext, ControllerManagerOptions
    from sampan.controllers.deployment import DeploymentController
    from sampan.controllers.replicaset import ReplicaSetController

    classes: list[Any] = [ReplicaSetController, DeploymentController]
    try:
        from sampan.controllers.garbagecollector import GarbageCollector

        classes.append(GarbageCollector)
    except ImportError:  # the GC is another helper's module; the delete phase needs it
        log.warning("garbage collector not available")
    client = Client(ClientConfig.from_kubeconfig(kubeconfig))
    factory = SharedInformerFactory(client)
    options = ControllerManagerOptions()
    ctx = ControllerContext(client, factory, options)
    controllers = [cls(ctx) for cls in classes]
    factory.start()
    tasks = [
        asyncio.get_running_loop().create_task(
            c.run(options.workers(c.name)), name=f"bench-controller-{c.name}"
        )
        for c in controllers
    ]
    await factory.wait_synced()
    print("READY", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await factory.stop()
    await ctx.aclose()
    await client.close()


# ---------------------------------------------------------------------------------------------
# the benchmark


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


async def _wait_ready(proc: asyncio.subprocess.Process, what: str) -> None:
    assert proc.stdout is not None
    async with asyncio.timeout(READY_TIMEOUT_S):
        while True:
            line = await proc.stdout.readline()
            if not line:
                raise RuntimeError(f"{what} exited before it was ready")
            if line.strip() == b"READY":
                return


class Simulator:
    """Plays scheduler and kubelet for every pod of the namespace (KWOK-like)."""

    def __init__(self, client: Any, nodes: list[str]) -> None:
        from sampan.client import SharedInformerFactory
        from sampan.client.api import PODS

        self.client = client
        self.nodes = nodes
        self.factory = SharedInformerFactory(client)
        self.pods = self.factory.informer(PODS, namespace=NAMESPACE)
        self.queue: asyncio.Queue[str] = asyncio.Queue()
        self._next = 0
        self._workers: list[asyncio.Task[None]] = []
        self.pods.add_event_handler(
            on_add=lambda p: self.queue.put_nowait(p["metadata"]["name"]),
            on_update=lambda o, n: self.queue.put_nowait(n["metadata"]["name"]),
        )

    async def start(self) -> None:
        self.factory.start()
        await self.factory.wait_synced()
        loop = asyncio.get_running_loop()
        self._workers = [
            loop.create_task(self._work(), name=f"bench-kubelet-{i}")
            for i in range(SIMULATOR_CONCURRENCY)
        ]

    async def stop(self) -> None:
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        await self.factory.stop()

    async def _work(self) -> None:
        from sampan.client import ClientError

        while True:
            name = await self.queue.get()
            try:
                await self._handle(name)
            except ClientError as exc:
                log.debug("simulator %s: %s", name, exc)

    async def _handle(self, name: str) -> None:
        from sampan.client import NotFoundError
        from sampan.client.api import PODS
        from sampan.controllers.podcontrol import format_time, wall_now

        pod = self.pods.cache.get_by_name(name, NAMESPACE)
        if pod is None:
            return
        if pod["metadata"].get("deletionTimestamp"):
            with contextlib.suppress(NotFoundError):
                await self.client.delete(PODS, name, namespace=NAMESPACE, grace_period_s=0)
            return
        if (pod.get("status") or {}).get("phase") == "Running":
            return
        if not pod["spec"].get("nodeName"):
            node = self.nodes[self._next % len(self.nodes)]
            self._next += 1
            binding = {
                "apiVersion": "v1",
                "kind": "Binding",
                "metadata": {"name": name, "namespace": NAMESPACE},
                "target": {"apiVersion": "v1", "kind": "Node", "name": node},
            }
            with contextlib.suppress(NotFoundError):
                await self.client.create_subresource(
                    PODS, name, "binding", binding, namespace=NAMESPACE
                )
        now = format_time(wall_now())
        status = {
            "status": {
                "phase": "Running",
                "podIP": "10.42.0.1",
                "startTime": now,
                "conditions": [
                    {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                    {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                    {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
                    {"type": "Ready", "status": "True", "lastTransitionTime": now},
                ],
            }
        }
        with contextlib.suppress(NotFoundError):
            await self.client.patch(PODS, name, status, namespace=NAMESPACE, subresource="status")


def _pod_template(app: str) -> dict[str, Any]:
    return {
        "metadata": {"labels": {"app": app}},
        "spec": {"containers": [{"name": "c", "image": "registry.local/pause:bench"}]},
    }


async def _poll(predicate: Any, interval_s: float = 0.05) -> None:
    # Polling the API server is the measurement here (what a user would see), not a shortcut.
    async with asyncio.timeout(RUN_TIMEOUT_S):
        while not await predicate():  # noqa: ASYNC110
            await asyncio.sleep(interval_s)


async def benchmark(workdir: Path, replicas: int, node_count: int) -> dict[str, float]:
    from sampan.client import Client, ClientConfig
    from sampan.client.api import DEPLOYMENTS, NODES, PODS

    results: dict[str, float] = {}
    api = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.controllers",
        "--serve-api",
        str(workdir),
        stdout=subprocess.PIPE,
    )
    controllers: asyncio.subprocess.Process | None = None
    client: Client | None = None
    simulator: Simulator | None = None
    try:
        await _wait_ready(api, "API server")
        client = Client(ClientConfig.from_kubeconfig(workdir / "admin.kubeconfig"))
        nodes = [f"sim-{i}" for i in range(node_count)]
        for name in nodes:
            await client.create(
                NODES,
                {
                    "metadata": {"name": name, "labels": {"type": "kwok"}},
                    "status": {"conditions": [{"type": "Ready", "status": "True"}]},
                },
            )
        simulator = Simulator(client, nodes)
        await simulator.start()

        async def pod_count(selector: str) -> int:
            listed = await client.list(PODS, namespace=NAMESPACE, label_selector=selector)
            return len(listed["items"])

        # -- baseline: the simulator's own pods -------------------------------------------
        sem = asyncio.Semaphore(SIMULATOR_CONCURRENCY)

        async def create_pod(i: int) -> None:
            async with sem:
                body = _pod_template("baseline")
                body["metadata"]["name"] = f"base-{i}"
                await client.create(PODS, body, namespace=NAMESPACE)

        start = time.perf_counter()
        await asyncio.gather(*(create_pod(i) for i in range(replicas)))

        async def baseline_ready() -> bool:
            pods = simulator.pods.cache.list()
            ready = sum(
                1
                for p in pods
                if p["metadata"]["name"].startswith("base-")
                and (p.get("status") or {}).get("phase") == "Running"
            )
            return ready >= replicas

        await _poll(baseline_ready)
        results["baseline_create_s"] = time.perf_counter() - start
        start = time.perf_counter()

        async def delete_pod(i: int) -> None:
            async with sem:
                await client.delete(PODS, f"base-{i}", namespace=NAMESPACE)

        await asyncio.gather(*(delete_pod(i) for i in range(replicas)))
        await _poll(lambda: _zero(pod_count("app=baseline")))
        results["baseline_delete_s"] = time.perf_counter() - start

        # -- controllers ------------------------------------------------------------------
        controllers = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.controllers",
            "--run-controllers",
            str(workdir / "controller.kubeconfig"),
            stdout=subprocess.PIPE,
        )
        await _wait_ready(controllers, "controllers")
        cpu0 = cpu_seconds(controllers.pid)
        deployment = {
            "metadata": {"name": "bench", "namespace": NAMESPACE},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "bench"}},
                "template": _pod_template("bench"),
            },
        }
        start = time.perf_counter()
        await client.create(DEPLOYMENTS, deployment, namespace=NAMESPACE)

        async def available() -> bool:
            got = await client.get(DEPLOYMENTS, "bench", namespace=NAMESPACE)
            return int((got.get("status") or {}).get("availableReplicas") or 0) >= replicas

        def bench_pods() -> int:
            return sum(
                1
                for p in simulator.pods.cache.list()
                if (p["metadata"].get("labels") or {}).get("app") == "bench"
            )

        async def exist() -> bool:
            return bench_pods() >= replicas

        await _poll(exist, interval_s=0.01)
        results["exist_s"] = time.perf_counter() - start
        await _poll(available)
        results["create_s"] = time.perf_counter() - start
        cpu1 = cpu_seconds(controllers.pid)
        results["create_cpu_s"] = cpu1 - cpu0
        results["pods"] = float(await pod_count("app=bench"))

        start = time.perf_counter()
        await client.delete(
            DEPLOYMENTS, "bench", namespace=NAMESPACE, propagation_policy="Background"
        )
        await _poll(lambda: _zero(pod_count("app=bench")), interval_s=0.1)
        results["delete_s"] = time.perf_counter() - start
        results["delete_cpu_s"] = cpu_seconds(controllers.pid) - cpu1
        return results
    finally:
        if simulator is not None:
            await simulator.stop()
        if client is not None:
            await client.close()
        for proc in (controllers, api):
            if proc is not None and proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    async with asyncio.timeout(15):
                        await proc.wait()
                except TimeoutError:
                    proc.kill()
                    await proc.wait()


async def _zero(count: Any) -> bool:
    return await count == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=1000)
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="100 replicas")
    parser.add_argument("--serve-api", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--run-controllers", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    if args.serve_api:
        asyncio.run(_serve_api(args.serve_api))
        return
    if args.run_controllers:
        asyncio.run(_run_controllers(args.run_controllers))
        return
    replicas = 100 if args.quick else args.replicas
    with tempfile.TemporaryDirectory(prefix="sampan-bench-controllers-") as tmp:
        r = asyncio.run(benchmark(Path(tmp), replicas, args.nodes))
    print(f"Deployment of {replicas} replicas on {args.nodes} simulated nodes")
    print(f"{'phase':<10}{'controllers':>14}{'baseline':>12}{'ratio':>8}{'ctrl CPU s':>12}")
    for phase in ("create", "delete"):
        took, base = r[f"{phase}_s"], r[f"baseline_{phase}_s"]
        print(
            f"{phase:<10}{took:>13.2f}s{base:>11.2f}s{took / base:>8.2f}"
            f"{r[f'{phase}_cpu_s']:>12.2f}"
        )
    print(
        f"all {replicas} pods existed after {r['exist_s']:.2f}s; "
        f"counted available: {int(r['pods'])}"
    )
    print("baseline = the benchmark creates/deletes the same pods itself (API-bound floor)")


if __name__ == "__main__":
    main()
