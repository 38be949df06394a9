"""Scheduler benchmark: ``python -m bench.scheduler [--nodes N --pods M] [--profile]``.

Shaped like upstream's scheduler_perf ``SchedulingBasic``: N simulated nodes (4 CPU, 32 GiB,
110 pods; Node objects only, no kubelet), then M pending pods with small requests (100m CPU,
500 MiB), all written through the API. Then the scheduler starts in this process and binds
them; the run ends when its pod informer has seen all M pods bound (seen through the API's
watch).

Process split, so the figures separate: the API server (datastore + APIServer, SQLite) runs in
a child process; this process runs the node/pod writers first and only the scheduler while
measuring. Reported per size:

* pods/s: M / (time from the scheduler's start of work to the last bind seen through the API),
  and the same excluding the initial informer sync;
* scheduler CPU seconds (``resource.getrusage`` of this process over the same window) and CPU
  ms per pod; the API server child's CPU seconds over the window (from /proc);
* the baseline: upstream's Go scheduler must stay above 680 pods/s on SchedulingBasic with
  5,000 nodes (its CI threshold), which is the goal here on one Python core.

Defaults: N=1,000/M=5,000 and N=5,000/M=10,000. ``--profile`` runs the scheduler under
cProfile and prints the top functions. ``--replicasets K`` gives the pods K ReplicaSet owners
(round robin, with their labels), as a Deployment's pods have: the default topology spread
constraints then apply to every pod, as they do in ``bench.scale``'s ramp (SchedulingBasic's
pods have no owner, so it never runs that plugin). ``--anti-affinity`` adds what many Helm
charts give their pods: a preferred pod anti-affinity to the pods of the same ReplicaSet, per
hostname (InterPodAffinity then looks at the existing pods for each pod).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import os
import pstats
import resource
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from sampan.client import Client, ClientConfig
from sampan.client.api import NODES, PODS, REPLICASETS
from sampan.scheduler import Scheduler, SchedulerOptions
from sampan.scheduler.framework import PodInfo

READY_TIMEOUT_S = 60.0
RUN_TIMEOUT_S = 600.0
WRITERS = 64
UPSTREAM_BASELINE_PODS_PER_S = 680
DEFAULT_SIZES = ((1000, 5000), (5000, 10000))

SERVER = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from sampan.apiserver import APIServer, APIServerOptions
    from sampan.datastore import open_backend

    async def main(data_dir):
        backend = open_backend("", data_dir)
        await backend.start()
        server = APIServer(APIServerOptions(
            tls_dir=data_dir / "server" / "tls", hostname="localhost", node_ips=("127.0.0.1",),
            bind_address="127.0.0.1", port=0, kubeconfig_path=data_dir / "admin.kubeconfig",
        ), backend)
        await server.start()
        print("READY", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        await server.stop()
        await backend.close()

    asyncio.run(main(Path(sys.argv[1])))
    """
)


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def node(i: int) -> dict[str, Any]:
    name = f"node-{i}"
    res = {"cpu": "4", "memory": "32Gi", "pods": "110"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {"capacity": res, "allocatable": res, "phase": "Running"},
    }


def replicaset(j: int) -> dict[str, Any]:
    labels = {"app": f"rs-{j}", "pod-template-hash": f"h{j:08x}"}
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {"name": f"rs-{j}", "namespace": "default", "labels": labels},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10"}]},
            },
        },
    }


def pod(
    i: int,
    replicasets: int = 0,
    owner_uids: dict[int, str] | None = None,
    anti_affinity: bool = False,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": f"pod-{i}", "namespace": "default"}
    if replicasets:
        j = i % replicasets
        meta["labels"] = {"app": f"rs-{j}", "pod-template-hash": f"h{j:08x}"}
        meta["ownerReferences"] = [
            {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "name": f"rs-{j}",
                "uid": (owner_uids or {}).get(j, f"rs-uid-{j}"),
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    spec: dict[str, Any] = {
        "containers": [
            {
                "name": "pause",
                "image": "registry.k8s.io/pause:3.10",
                "resources": {"requests": {"cpu": "100m", "memory": "500Mi"}},
            }
        ]
    }
    if anti_affinity and replicasets:
        term = {
            "labelSelector": {"matchLabels": {"app": meta["labels"]["app"]}},
            "topologyKey": "kubernetes.io/hostname",
        }
        spec["affinity"] = {
            "podAntiAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 100, "podAffinityTerm": term}
                ]
            }
        }
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


async def create_all(
    client: Client, what: str, count: int, replicasets: int = 0, anti_affinity: bool = False
) -> float:
    started = time.monotonic()
    next_index = iter(range(count))
    owner_uids: dict[int, str] = {}
    if what == "pods" and replicasets:
        for j in range(replicasets):
            created = await client.create(REPLICASETS, replicaset(j), namespace="default")
            owner_uids[j] = created["metadata"]["uid"]

    async def writer() -> None:
        for i in next_index:
            if what == "nodes":
                await client.create(NODES, node(i))
            else:
                body = pod(i, replicasets, owner_uids, anti_affinity)
                await client.create(PODS, body, namespace="default")

    await asyncio.gather(*(writer() for _ in range(WRITERS)))
    return time.monotonic() - started


class _Ctx:
    def fail(self, reason: str) -> None:
        print(f"scheduler asked to fail: {reason}", file=sys.stderr)


async def run_size(
    num_nodes: int,
    num_pods: int,
    profile: bool,
    gc_freeze: bool = False,
    replicasets: int = 0,
    anti_affinity: bool = False,
) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="sampan-bench-sched-") as tmp:
        data_dir = Path(tmp)
        proc = subprocess.Popen(
            [sys.executable, "-c", SERVER, str(data_dir)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        try:
            assert proc.stdout is not None
            line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), READY_TIMEOUT_S)
            if not line.startswith(b"READY"):
                raise RuntimeError("API server did not start")
            config = ClientConfig.from_kubeconfig(data_dir / "admin.kubeconfig")
            async with Client(config) as client:
                nodes_s = await create_all(client, "nodes", num_nodes)
                pods_s = await create_all(client, "pods", num_pods, replicasets, anti_affinity)
            print(
                f"  wrote {num_nodes} nodes in {nodes_s:.1f} s, {num_pods} pods in {pods_s:.1f} s",
                flush=True,
            )
            return await measure(config, proc.pid, num_pods, profile, gc_freeze)
        finally:
            if proc.stdin is not None:
                proc.stdin.close()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def measure(
    config: ClientConfig, server_pid: int, num_pods: int, profile: bool, gc_freeze: bool = False
) -> dict[str, float]:
    scheduler = Scheduler(config, SchedulerOptions(leader_elect=False, identity="bench"))
    done = asyncio.Event()
    bound: set[str] = set()
    first_bind_at: list[float] = []

    def on_update(_old: dict[str, Any], new: dict[str, Any]) -> None:
        if new["spec"].get("nodeName"):
            if not first_bind_at:
                first_bind_at.append(time.monotonic())
            bound.add(new["metadata"]["name"])
            if len(bound) >= num_pods:
                done.set()

    gc_s = [0.0, 0.0]

    def gc_timer(phase: str, _info: dict[str, int]) -> None:
        if phase == "start":
            gc_s[1] = time.process_time()
        else:
            gc_s[0] += time.process_time() - gc_s[1]

    gc.callbacks.append(gc_timer)
    profiler = cProfile.Profile(time.process_time) if profile else None
    cpu0, wall0, server0 = cpu_s(), time.monotonic(), child_cpu_s(server_pid)
    if profiler is not None:
        profiler.enable()
    await scheduler.start(_Ctx())
    if gc_freeze:
        gc.freeze()  # what a process may do once its caches are loaded
    synced_at = time.monotonic()
    scheduler.informers["pods"].add_event_handler(on_update=on_update)
    try:
        await asyncio.wait_for(done.wait(), RUN_TIMEOUT_S)
        wall1, cpu1, server1 = time.monotonic(), cpu_s(), child_cpu_s(server_pid)
    finally:
        if profiler is not None:
            profiler.disable()
        await scheduler.stop()
        gc.callbacks.remove(gc_timer)
        gc.unfreeze()
    if profiler is not None:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    return {
        "wall_s": wall1 - wall0,
        "sync_s": synced_at - wall0,
        "after_sync_s": wall1 - synced_at,
        "cpu_s": cpu1 - cpu0,
        "server_cpu_s": server1 - server0,
        "pods": num_pods,
        "attempts": scheduler.failed_attempts,
        "cycles": scheduler.cycles,
        "cycle_s": scheduler.cycle_s,
        "gc_s": gc_s[0],
    }


def algorithm_only(
    num_nodes: int,
    num_pods: int,
    profile: bool,
    replicasets: int = 0,
    anti_affinity: bool = False,
) -> None:
    """The scheduling cycles alone, in memory: no API server, no binding (assume only)."""
    scheduler = Scheduler(
        ClientConfig(server="https://127.0.0.1:1"), SchedulerOptions(leader_elect=False)
    )
    owners = {f"default/rs-{j}": replicaset(j) for j in range(replicasets)}
    scheduler.build({}, {"replicasets": owners.get})
    for i in range(num_nodes):
        scheduler.cache.add_node(node(i))
    queue = scheduler.queue
    assert queue is not None
    placed: dict[str, int] = {}

    def assume(_fwk: Any, _state: Any, q: Any, node_name: str) -> None:
        scheduler.cache.assume_pod(q.pod, node_name)
        queue.done(q.pod.uid)
        placed[node_name] = placed.get(node_name, 0) + 1
        scheduler._bind_slots.release()

    scheduler._assume_and_bind = assume  # type: ignore[method-assign]
    for i in range(num_pods):
        p = pod(i, replicasets, anti_affinity=anti_affinity)
        p["metadata"]["uid"] = f"uid-{i}"
        queue.add(PodInfo(p))
    profiler = cProfile.Profile(time.process_time) if profile else None
    started_cpu = time.process_time()
    if profiler is not None:
        profiler.enable()
    while (q := queue.pop_nowait()) is not None:
        scheduler._bind_slots._value -= 1  # what the loop's acquire() does
        scheduler.schedule_one(q)
    if profiler is not None:
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(15)
    cpu = time.process_time() - started_cpu
    owned = f", {replicasets} ReplicaSets" if replicasets else ""
    owned += ", anti-affinity" if anti_affinity and replicasets else ""
    print(
        f"algorithm only ({num_nodes} nodes, {num_pods} pods{owned}, in memory): "
        f"{num_pods / cpu:.0f} pods/s, {cpu / num_pods * 1000:.3f} ms CPU/pod, "
        f"{len(placed)} nodes used, at most {max(placed.values())} pods on one",
        flush=True,
    )


def report(num_nodes: int, r: dict[str, float]) -> None:
    pods = r["pods"]
    overall = pods / r["wall_s"]
    after_sync = pods / r["after_sync_s"]
    print(f"SchedulingBasic {num_nodes} nodes / {int(pods)} pods:")
    print(f"  pods/s (start -> last bind seen) {overall:8.0f}")
    print(f"  pods/s (after informer sync)     {after_sync:8.0f}   (sync {r['sync_s']:.2f} s)")
    per_pod_ms = r["cpu_s"] / pods * 1000
    print(f"  scheduler CPU                    {r['cpu_s']:8.2f} s   {per_pod_ms:.2f} ms/pod")
    print(
        f"  pods per scheduler CPU-second    {pods / r['cpu_s']:8.0f}   "
        "(what one dedicated core sustains if the API server keeps up)"
    )
    print(f"  of which garbage collection      {r['gc_s']:8.2f} s")
    print(f"  API server CPU (child process)   {r['server_cpu_s']:8.2f} s")
    print(f"  failed scheduling attempts       {int(r['attempts']):8d}")
    if r["cycle_s"]:
        print(
            f"  scheduling cycles alone          {r['cycles'] / r['cycle_s']:8.0f} pods/s "
            f"({r['cycle_s'] / r['cycles'] * 1000:.2f} ms/cycle; filter+score, no API)"
        )
    print(
        f"  baseline: upstream kube-scheduler (Go) >= {UPSTREAM_BASELINE_PODS_PER_S} pods/s at "
        f"5000 nodes; ratio {after_sync / UPSTREAM_BASELINE_PODS_PER_S:.2f}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, help="number of nodes (with --pods: one size)")
    parser.add_argument("--pods", type=int, help="number of pods")
    parser.add_argument("--profile", action="store_true", help="cProfile the scheduler")
    parser.add_argument(
        "--algorithm-only", action="store_true", help="only the in-memory scheduling cycles"
    )
    parser.add_argument(
        "--gc-freeze", action="store_true", help="gc.freeze() once the scheduler's caches load"
    )
    parser.add_argument(
        "--replicasets",
        type=int,
        default=0,
        metavar="K",
        help="give the pods K ReplicaSet owners, so default topology spreading applies",
    )
    parser.add_argument(
        "--anti-affinity",
        action="store_true",
        help="with --replicasets: a preferred anti-affinity to the same ReplicaSet's pods",
    )
    args = parser.parse_args()
    if args.nodes or args.pods:
        sizes: tuple[tuple[int, int], ...] = ((args.nodes or 1000, args.pods or 5000),)
    else:
        sizes = DEFAULT_SIZES
    for num_nodes, num_pods in sizes:
        algorithm_only(
            num_nodes,
            num_pods,
            args.profile and args.algorithm_only,
            args.replicasets,
            args.anti_affinity,
        )
        if args.algorithm_only:
            continue
        print(f"== {num_nodes} nodes, {num_pods} pods", flush=True)
        result = asyncio.run(
            run_size(
                num_nodes,
                num_pods,
                args.profile,
                args.gc_freeze,
                args.replicasets,
                args.anti_affinity,
            )
        )
        report(num_nodes, result)


if __name__ == "__main__":
    main()
