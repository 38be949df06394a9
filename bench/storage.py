"""Storage benchmark: ``python -m bench.storage [--claims 500] [--replicas 20] [--no-node]``.

**StatefulSet with volumes** (a whole node: ``sampan server`` with containerd and the system
kubectl, as the e2e tests start it; run it under the node lock ``flock
/tmp/sampan-node.lock``): the time from ``kubectl apply`` of a StatefulSet of ``--replicas``
busybox pods (Parallel pod management) to all replicas Ready, first without volumes (the
baseline), then the same set with a local-path ``volumeClaimTemplate`` (every claim provisioned
WaitForFirstConsumer, bound, its directory created and mounted). Goal (issue 15): at most
1.3x the baseline. ``--no-node`` skips this part.

**PersistentVolume binding** (one process: an API server over SQLite in a temporary dir, an
admin client, and the persistentvolume-binder run as the controller manager runs it
(``ControllerContext`` + informers, as ``system:sampan-controller``)). Measured, side by side
in the same run:

* **baseline**: creating ``N`` PersistentVolumes and ``N`` claims (32 writes in flight) with no
  controller: the floor set by the API server;
* **bind backlog**: the binder starts with ``N`` Available volumes and ``N`` pending claims
  already stored: time until every claim is Bound, and the binder's CPU seconds (this
  process's CPU minus the idle API server's share is not separable here, so the figure is the
  whole process's);
* **bind live**: ``N`` more volumes and claims created while the binder runs: time from the
  first create until every claim is Bound, and each claim's bind latency (from its create call
  to the first watch event showing it Bound; p50, p99); in a burst this is mostly queueing;
* **bind one at a time**: ``--sequential`` claims created one after another (each once the
  previous is Bound) against Available volumes: the latency of a single bind (p50, p99).

Volumes have distinct sizes, so each claim's search for the smallest fitting volume scans the
pool (the upstream algorithm is linear in the number of volumes too).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

CONCURRENCY = 32
NAMESPACE = "default"
POLL_S = 0.25
TIMEOUT_S = 600.0


def _pv(prefix: str, index: int) -> dict[str, Any]:
    return {
        "metadata": {"name": f"{prefix}-pv-{index}"},
        "spec": {
            "capacity": {"storage": f"{1024 + index}Mi"},
            "accessModes": ["ReadWriteOnce"],
            "hostPath": {"path": f"/tmp/bench-{prefix}-{index}"},
            "storageClassName": "",
        },
    }


def _pvc(prefix: str, index: int) -> dict[str, Any]:
    return {
        "metadata": {"name": f"{prefix}-claim-{index}"},
        "spec": {
            "storageClassName": "",
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}},
        },
    }


async def _create_all(
    client: Any,
    resource: Any,
    bodies: list[dict[str, Any]],
    started: dict[str, float] | None = None,
) -> None:
    sem = asyncio.Semaphore(CONCURRENCY)

    async def one(body: dict[str, Any]) -> None:
        async with sem:
            if started is not None:
                started[body["metadata"]["name"]] = time.monotonic()
            await client.create(
                resource, body, namespace=NAMESPACE if resource.namespaced else None
            )

    await asyncio.gather(*(one(b) for b in bodies))


async def _bound(client: Any, prefix: str) -> int:
    from sampan.client.api import PVCS

    items = (await client.list_all(PVCS, namespace=NAMESPACE))["items"]
    return sum(
        1
        for c in items
        if c["metadata"]["name"].startswith(prefix)
        and (c.get("status") or {}).get("phase") == "Bound"
    )


async def _wait_bound(client: Any, prefix: str, count: int) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while await _bound(client, prefix) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{prefix}: claims not bound within {TIMEOUT_S:g} s")
        await asyncio.sleep(POLL_S)


async def _wait_available(client: Any, prefix: str, count: int) -> None:
    from sampan.client.api import PVS

    deadline = time.monotonic() + TIMEOUT_S
    while True:
        items = (await client.list_all(PVS))["items"]
        ready = sum(
            1
            for v in items
            if v["metadata"]["name"].startswith(prefix)
            and (v.get("status") or {}).get("phase") == "Available"
        )
        if ready >= count:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{prefix}: volumes not Available within {TIMEOUT_S:g} s")
        await asyncio.sleep(POLL_S)


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))]


async def _watch_bound(
    client: Any,
    prefix: str,
    count: int,
    bound_at: dict[str, float],
    ready: asyncio.Event,
    done: asyncio.Event,
    changed: asyncio.Event | None = None,
) -> None:
    """Note when each claim named ``prefix...`` is first seen Bound (setting ``changed``);
    ``done`` once ``count`` are."""
    from sampan.client.api import PVCS

    async with client.watch(PVCS, namespace=NAMESPACE) as stream:
        ready.set()
        async for _type, claim in stream:
            name = claim["metadata"]["name"]
            if (
                name.startswith(prefix)
                and name not in bound_at
                and (claim.get("status") or {}).get("phase") == "Bound"
            ):
                bound_at[name] = time.monotonic()
                if changed is not None:
                    changed.set()
                if len(bound_at) >= count:
                    done.set()


async def run(claims: int, sequential: int) -> dict[str, Any]:
    from sampan.apiserver import APIServer, APIServerOptions
    from sampan.client import Client, ClientConfig, SharedInformerFactory
    from sampan.client.api import PVCS, PVS
    from sampan.controllers.base import ControllerContext, ControllerManagerOptions
    from sampan.controllers.persistentvolume import PersistentVolumeBinder
    from sampan.datastore import open_backend
    from sampan.pki import ensure_client_kubeconfig

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-storage-") as tmp:
        data_dir = Path(tmp)
        backend = open_backend("", data_dir)
        await backend.start()
        server = APIServer(
            APIServerOptions(
                tls_dir=data_dir / "server" / "tls",
                hostname="localhost",
                node_ips=("127.0.0.1",),
                bind_address="127.0.0.1",
                port=0,
                kubeconfig_path=data_dir / "admin.kubeconfig",
            ),
            backend,
        )
        await server.start()
        ctrl_kubeconfig = data_dir / "controller.kubeconfig"
        await asyncio.to_thread(
            ensure_client_kubeconfig,
            server.pki,
            name="system-sampan-controller",
            common_name="system:sampan-controller",
            path=ctrl_kubeconfig,
            server_url=server.url,
        )
        client = Client(ClientConfig.from_kubeconfig(data_dir / "admin.kubeconfig"))
        ctrl_client = Client(ClientConfig.from_kubeconfig(ctrl_kubeconfig))
        factory = SharedInformerFactory(ctrl_client)
        ctx = ControllerContext(ctrl_client, factory, ControllerManagerOptions())
        task: asyncio.Task[None] | None = None
        watcher: asyncio.Task[None] | None = None
        try:
            start = time.monotonic()
            await _create_all(client, PVS, [_pv("a", i) for i in range(claims)])
            await _create_all(client, PVCS, [_pvc("a", i) for i in range(claims)])
            results["baseline_s"] = time.monotonic() - start

            binder = PersistentVolumeBinder(ctx)
            cpu0 = time.process_time()
            start = time.monotonic()
            factory.start()
            task = asyncio.get_running_loop().create_task(
                binder.run(ctx.options.workers(binder.name))
            )
            await _wait_bound(client, "a-", claims)
            results["backlog_s"] = time.monotonic() - start
            results["backlog_cpu_s"] = time.process_time() - cpu0

            created: dict[str, float] = {}
            bound_at: dict[str, float] = {}
            watching, all_bound = asyncio.Event(), asyncio.Event()
            watcher = asyncio.get_running_loop().create_task(
                _watch_bound(client, "b-", claims, bound_at, watching, all_bound)
            )
            await watching.wait()
            start = time.monotonic()
            await _create_all(client, PVS, [_pv("b", i) for i in range(claims)])
            await _create_all(client, PVCS, [_pvc("b", i) for i in range(claims)], created)
            await asyncio.wait_for(all_bound.wait(), TIMEOUT_S)
            results["live_s"] = time.monotonic() - start
            results["latencies"] = [bound_at[n] - created[n] for n in created]
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)

            # One claim at a time, against volumes already Available: the latency of a
            # single bind, without the queueing of a burst.
            await _create_all(client, PVS, [_pv("c", i) for i in range(sequential)])
            await _wait_available(client, "c-", sequential)
            created, bound_at = {}, {}
            watching, all_bound, changed = asyncio.Event(), asyncio.Event(), asyncio.Event()
            watcher = asyncio.get_running_loop().create_task(
                _watch_bound(client, "c-", sequential, bound_at, watching, all_bound, changed)
            )
            await watching.wait()
            for i in range(sequential):
                body = _pvc("c", i)
                name = body["metadata"]["name"]
                await _create_all(client, PVCS, [body], created)
                while name not in bound_at:
                    await asyncio.wait_for(changed.wait(), TIMEOUT_S)
                    changed.clear()
            results["sequential"] = [bound_at[n] - created[n] for n in created]
        finally:
            for t in (task, watcher):
                if t is not None:
                    t.cancel()
                    await asyncio.gather(t, return_exceptions=True)
            await factory.stop()
            await ctx.aclose()
            await ctrl_client.close()
            await client.close()
            await server.stop()
            await backend.close()
    return results


STATEFULSET = """
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: NAME
spec:
  replicas: REPLICAS
  serviceName: NAME
  podManagementPolicy: Parallel
  selector:
    matchLabels: {app: NAME}
  template:
    metadata:
      labels: {app: NAME}
    spec:
      terminationGracePeriodSeconds: 0
      automountServiceAccountToken: false
      containers:
      - name: c
        image: docker.io/library/busybox:1.36
        command: [sh, -c, "exec sleep 3600"]
"""

VOLUMES = """
        volumeMounts:
        - {name: data, mountPath: /data}
  volumeClaimTemplates:
  - metadata:
      name: data
    spec:
      accessModes: [ReadWriteOnce]
      resources:
        requests:
          storage: 1Gi
"""


def _statefulset_ready_s(c: Any, name: str, replicas: int, volumes: bool) -> float:
    text = STATEFULSET.replace("NAME", name).replace("REPLICAS", str(replicas))
    if volumes:
        text = text.rstrip("\n") + VOLUMES
    path = c.root / f"{name}.yaml"
    path.write_text(text)

    def ready() -> bool:
        out = c.kubectl("get", "statefulset", name, "-o", "json", check=False)
        try:
            return json.loads(out).get("status", {}).get("readyReplicas", 0) == replicas
        except ValueError:
            return False

    start = time.monotonic()
    c.kubectl("apply", "-f", str(path))
    c.wait(f"statefulset {name} Ready", ready, timeout_s=TIMEOUT_S)
    elapsed = time.monotonic() - start
    c.kubectl("delete", "statefulset", name, "--wait=true")
    c.wait(
        f"pods of {name} gone",
        lambda: (
            not json.loads(c.kubectl("get", "pods", "-l", f"app={name}", "-o", "json"))["items"]
        ),
        timeout_s=TIMEOUT_S,
    )
    return elapsed


def run_statefulsets(replicas: int) -> dict[str, float]:
    """Both StatefulSets on one ``sampan server``; see the module docstring."""
    from tests.e2e.test_single_node import Cluster

    c = Cluster(Path(tempfile.mkdtemp(prefix="bsto-", dir="/tmp")))
    try:
        c.start()

        def node_ready() -> bool:
            out = c.kubectl("get", "nodes", "-o", "json", check=False)
            try:
                nodes = json.loads(out)["items"]
            except (ValueError, KeyError):
                return False
            return any(
                cond["type"] == "Ready" and cond["status"] == "True"
                for n in nodes
                for cond in n.get("status", {}).get("conditions", [])
            )

        c.wait("node Ready", node_ready, timeout_s=TIMEOUT_S)
        c.wait(
            "the local-path class",
            lambda: "local-path" in c.kubectl("get", "storageclass", check=False),
        )
        c.wait(
            "the default service account", lambda: c.kubectl("get", "sa", "default", check=False)
        )
        # A warm-up pod, so the first set does not pay for the first sandbox alone.
        _statefulset_ready_s(c, "warm", 1, False)
        return {
            "plain_s": _statefulset_ready_s(c, "plain", replicas, False),
            "volumes_s": _statefulset_ready_s(c, "vol", replicas, True),
        }
    finally:
        if c.proc is not None and c.proc.poll() is None:
            c.proc.send_signal(signal.SIGTERM)
            try:
                c.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                c.proc.kill()
        c.sampan("killall", "--config", str(c.config), "--data-dir", str(c.data))
        shutil.rmtree(c.root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--claims", type=int, default=500)
    parser.add_argument("--replicas", type=int, default=20)
    parser.add_argument("--sequential", type=int, default=100)
    parser.add_argument("--no-node", action="store_true", help="skip the StatefulSet part")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if not args.no_node:
        s = run_statefulsets(args.replicas)
        print(f"StatefulSet of {args.replicas} replicas, kubectl apply to all Ready:")
        print(f"  without volumes (baseline)             {s['plain_s']:7.2f} s")
        print(
            f"  with local-path volumeClaimTemplates   {s['volumes_s']:7.2f} s"
            f"   {s['volumes_s'] / s['plain_s']:.2f}x the baseline (goal <= 1.3x)"
        )
    r = asyncio.run(run(args.claims, args.sequential))
    n = args.claims
    print(f"PersistentVolume binding, {n} volumes + {n} claims per phase:")
    print(f"  baseline: create them, no controller   {r['baseline_s']:7.2f} s")
    print(
        f"  bind backlog (binder starts after)     {r['backlog_s']:7.2f} s"
        f"   {n / r['backlog_s']:6.0f} claims/s   process CPU {r['backlog_cpu_s']:.2f} s"
    )
    print(f"  create + bind live (binder running)    {r['live_s']:7.2f} s")
    lat = r["latencies"]
    print(
        f"  bind latency, create to Bound (live)   p50 {_percentile(lat, 0.5) * 1000:6.0f} ms"
        f"   p99 {_percentile(lat, 0.99) * 1000:6.0f} ms"
    )
    seq = r["sequential"]
    p50, p99 = _percentile(seq, 0.5) * 1000, _percentile(seq, 0.99) * 1000
    print(
        f"  bind latency, one claim at a time ({len(seq)})  p50 {p50:6.0f} ms   p99 {p99:6.0f} ms"
    )


if __name__ == "__main__":
    main()
