"""Pod startup benchmark: ``python -m bench.pods [--pods 50] [--density 100]``.

One real node in this process (API server over SQLite, the kubelet, a private containerd;
the busybox image pre-imported), as the whole-node tests build it (``tests.support.cluster``).

1. Latency: ``--pods`` pods created one after another, each timed from the create call to the
   moment a watch shows it Ready (p50, p99). Beside it, the floor measured in the same run on
   the same containerd: raw CRI RunPodSandbox + CreateContainer + StartContainer of the same
   image, the same number of times.
2. Density: ``--density`` pods created at once; time until all are Ready, then this process's
   RSS and CPU time (it holds the API server too, so that is an upper bound for the agent) and
   containerd's RSS (shims not included).

Goal (issue 7): p99 under 1 s, p50 at most 2x raw CRI.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import resource
import secrets
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.support.cluster import BUSYBOX, NodeHarness, wait_for

from sampan.client.api import PODS
from sampan.kubelet.runtime import pb

DEFAULT_PODS = 50
DEFAULT_DENSITY = 100
READY_TIMEOUT_S = 300.0


def _pod(name: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "automountServiceAccountToken": False,
            "containers": [{"name": "main", "image": BUSYBOX, "command": ["sleep", "3600"]}],
        },
    }


def _ready(pod: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (pod.get("status") or {}).get("conditions") or []
    )


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


class ReadyWatcher:
    """Watches a namespace and notes when each pod is first seen Ready."""

    def __init__(self, node: NodeHarness, namespace: str) -> None:
        self.node = node
        self.namespace = namespace
        self.ready_at: dict[str, float] = {}
        self.events: dict[str, asyncio.Event] = {}
        self._task: asyncio.Task[None] | None = None
        self.started = asyncio.Event()

    def event(self, name: str) -> asyncio.Event:
        return self.events.setdefault(name, asyncio.Event())

    async def _run(self) -> None:
        assert self.node.client is not None
        async with self.node.client.watch(PODS, namespace=self.namespace) as stream:
            self.started.set()
            async for _type, pod in stream:
                name = pod["metadata"]["name"]
                if name not in self.ready_at and _ready(pod):
                    self.ready_at[name] = time.perf_counter()
                    self.event(name).set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="bench-ready-watcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])


async def latency(node: NodeHarness, count: int) -> list[float]:
    namespace = await node.namespace()
    watcher = ReadyWatcher(node, namespace)
    watcher.start()
    await watcher.started.wait()
    samples = []
    try:
        for i in range(count):
            name = f"lat-{i}"
            event = watcher.event(name)
            started = time.perf_counter()
            await node.create_pod(namespace, _pod(name))
            await asyncio.wait_for(event.wait(), READY_TIMEOUT_S)
            samples.append(watcher.ready_at[name] - started)
    finally:
        await watcher.stop()
    return samples


async def raw_cri(node: NodeHarness, count: int, *, at_once: bool = False) -> list[float]:
    assert node.kubelet is not None
    runtime = node.kubelet.runtime
    image = (await node.kubelet.images.image_status(BUSYBOX)).id  # type: ignore[union-attr]
    log_root = Path(tempfile.mkdtemp(prefix="bench-cri-", dir=node.root))
    samples: list[float] = []

    async def one(i: int) -> None:
        uid = secrets.token_hex(8)
        log_dir = log_root / uid
        log_dir.mkdir()
        sandbox = pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=f"raw-{i}", uid=uid, namespace="bench", attempt=0),
            hostname=f"raw-{i}",
            log_directory=str(log_dir),
            labels={"sampan.bench": "raw"},
            linux=pb.LinuxPodSandboxConfig(
                # Below the test cgroup root (cleaned up with it) but outside the tiers the
                # kubelet owns: its housekeeping removes pod cgroups it has no pod for, and
                # once removed this sandbox's cgroup while runc was starting it.
                cgroup_parent=f"{node.names.cgroup_root}/bench-raw/pod{uid}",
                security_context=pb.LinuxSandboxSecurityContext(
                    namespace_options=pb.NamespaceOption(pid=pb.NamespaceMode.CONTAINER)
                ),
            ),
        )
        container = pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name="main", attempt=0),
            image=pb.ImageSpec(image=image),
            command=["sleep", "3600"],
            log_path="main/0.log",
            linux=pb.LinuxContainerConfig(
                security_context=pb.LinuxContainerSecurityContext(
                    namespace_options=pb.NamespaceOption(pid=pb.NamespaceMode.CONTAINER)
                )
            ),
        )
        started = time.perf_counter()
        sandbox_id = await runtime.run_pod_sandbox(sandbox)
        cid = await runtime.create_container(sandbox_id, container, sandbox)
        await runtime.start_container(cid)
        samples.append(time.perf_counter() - (burst_started if at_once else started))

    burst_started = time.perf_counter()
    if at_once:
        await asyncio.gather(*(one(i) for i in range(count)))
    else:
        for i in range(count):
            await one(i)
    for item in await runtime.list_pod_sandbox(
        pb.PodSandboxFilter(label_selector={"sampan.bench": "raw"})
    ):
        await runtime.stop_pod_sandbox(item.id)
        await runtime.remove_pod_sandbox(item.id)
    return samples


def _rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


async def density(node: NodeHarness, count: int) -> dict[str, float]:
    namespace = await node.namespace()
    watcher = ReadyWatcher(node, namespace)
    watcher.start()
    await watcher.started.wait()
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    try:
        await asyncio.gather(*(node.create_pod(namespace, _pod(f"d-{i}")) for i in range(count)))
        await asyncio.wait_for(
            asyncio.gather(*(watcher.event(f"d-{i}").wait() for i in range(count))),
            READY_TIMEOUT_S,
        )
    finally:
        await watcher.stop()
    all_ready_s = time.perf_counter() - started
    await asyncio.sleep(5)  # steady state: PLEG, probes-free status loops
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    assert node.kubelet is not None
    containerd = node.kubelet.runtime_component.containerd
    containerd_pid = containerd.pid if containerd is not None else None
    return {
        "all_ready_s": all_ready_s,
        "per_pod_ms": [watcher.ready_at[f"d-{i}"] - started for i in range(count)],  # type: ignore[dict-item]
        "cpu_s": (cpu_after.ru_utime + cpu_after.ru_stime)
        - (cpu_before.ru_utime + cpu_before.ru_stime),
        "rss_bytes": _rss_bytes(os.getpid()),
        "containerd_rss_bytes": _rss_bytes(containerd_pid) if containerd_pid else 0,
    }


async def steady_cpu(seconds: float) -> float:
    before = resource.getrusage(resource.RUSAGE_SELF)
    await asyncio.sleep(seconds)
    after = resource.getrusage(resource.RUSAGE_SELF)
    return ((after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)) / seconds


async def main(args: argparse.Namespace) -> None:
    cache = Path(tempfile.mkdtemp(prefix="bench-images-"))
    node = NodeHarness(cache)
    try:
        await node.start()
        assert node.kubelet is not None
        kubelet = node.kubelet

        async def network_ready() -> bool:
            return kubelet.network_ready()

        await wait_for(network_ready, what="pod network")
        await latency(node, 3)  # warm up (first sandbox, first connection)
        lat = await latency(node, args.pods)
        raw = await raw_cri(node, args.pods)
        p50, p99 = statistics.median(lat), _percentile(lat, 0.99)
        r50, r99 = statistics.median(raw), _percentile(raw, 0.99)
        print(f"pod start, {args.pods} pods one at a time (create -> Ready seen by a watch):")
        print(f"  sampan kubelet  p50 {p50 * 1000:7.1f} ms   p99 {p99 * 1000:7.1f} ms")
        print(f"  raw CRI         p50 {r50 * 1000:7.1f} ms   p99 {r99 * 1000:7.1f} ms")
        print(f"  ratio at p50    {p50 / r50:.2f}x   (goal: p99 < 1000 ms, p50 <= 2x raw CRI)")
        if args.density:
            dens = await density(node, args.density)
            per_pod = dens.pop("per_pod_ms")  # type: ignore[arg-type]
            idle = await steady_cpu(10.0)
            print(f"density: {args.density} pods created at once on one node")
            print(
                f"  all Ready after {dens['all_ready_s']:.2f} s; per pod p50 "
                f"{statistics.median(per_pod) * 1000:.0f} ms, p99 "  # type: ignore[arg-type]
                f"{_percentile(per_pod, 0.99) * 1000:.0f} ms"
            )  # type: ignore[arg-type]
            print(
                f"  process (API server + kubelet) RSS {dens['rss_bytes'] / 2**20:.0f} MiB, "
                f"CPU {dens['cpu_s']:.1f} s during the burst, "
                f"{idle * 100:.1f}% of a core at rest with {args.density + args.pods + 3} pods"
            )
            raw_burst = await raw_cri(node, args.density, at_once=True)
            print(
                f"  raw CRI, {args.density} sandboxes+containers at once: all started after "
                f"{max(raw_burst):.2f} s; per pod p50 {statistics.median(raw_burst) * 1000:.0f} ms"
            )
            print(f"  containerd RSS {dens['containerd_rss_bytes'] / 2**20:.0f} MiB")
    finally:
        await node.stop()


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--pods", type=int, default=DEFAULT_PODS)
    parser.add_argument("--density", type=int, default=DEFAULT_DENSITY)
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    asyncio.run(main(args))


if __name__ == "__main__":
    cli()
