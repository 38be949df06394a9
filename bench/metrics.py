"""Metrics benchmark: ``python -m bench.metrics``.

Measures, in this process, the code paths of the metrics pipeline with 100 pods on a node,
each beside a baseline taken in the same run:

* ``/stats/summary`` and ``/metrics/resource`` rendering by the kubelet's ``StatsProvider``
  with 100 pods (one container each) — beside the same with 0 pods. The runtime is an
  in-memory stand-in answering the CRI list calls (what is measured is Sampan's work, not
  containerd's);
* the metrics server: parsing one node's ``/metrics/resource`` answer (a scrape) and a LIST of
  100 PodMetrics from the store — beside a JSON round trip of the same list;
* the CPU per node per minute (the kubelet's housekeeping samples every 10 s, and 4 scrapes
  at the 15 s default: render, parse, store), as a percentage of one core (goal < 1 %);
* the RSS added by the metrics modules and a store holding 100 pods (goal <= 10 MB).
"""

from __future__ import annotations

import asyncio
import json
import resource
import statistics
import time
from typing import Any

REPEAT = 50
PODS = 100


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


class _Value:
    def __init__(self, value: int) -> None:
        self.value = value


class _FakeRuntime:
    """Answers ListPodSandbox / ListContainers / ListContainerStats for ``pods`` pods."""

    def __init__(self, pods: int) -> None:
        from sampan.kubelet.runtime import pb

        now = time.time_ns()
        self.sandboxes = [
            pb.PodSandbox(
                id=f"s{i}",
                metadata=pb.PodSandboxMetadata(name=f"p{i}", namespace="default", uid=f"u{i}"),
                state=pb.PodSandboxState.SANDBOX_READY,
                created_at=now,
            )
            for i in range(pods)
        ]
        self.containers = [
            pb.Container(
                id=f"c{i}",
                pod_sandbox_id=f"s{i}",
                metadata=pb.ContainerMetadata(name="app"),
                image=pb.ImageSpec(image="busybox:latest"),
                state=pb.ContainerState.CONTAINER_RUNNING,
                created_at=now,
            )
            for i in range(pods)
        ]
        self.tick = 0

    async def list_pod_sandbox(self) -> list[Any]:
        return self.sandboxes

    async def list_containers(self) -> list[Any]:
        return self.containers

    async def list_container_stats(self) -> list[Any]:
        from sampan.kubelet.runtime import pb

        self.tick += 1
        now = time.time_ns()
        return [
            pb.ContainerStats(
                attributes=pb.ContainerAttributes(id=c.id, metadata=c.metadata),
                cpu=pb.CpuUsage(
                    timestamp=now,
                    usage_core_nano_seconds=pb.UInt64Value(value=self.tick * 10**8),
                ),
                memory=pb.MemoryUsage(
                    timestamp=now,
                    working_set_bytes=pb.UInt64Value(value=20 << 20),
                    usage_bytes=pb.UInt64Value(value=24 << 20),
                    rss_bytes=pb.UInt64Value(value=16 << 20),
                ),
            )
            for c in self.containers
        ]

    async def pod_sandbox_status(self, sandbox_id: str, *, verbose: bool = False) -> Any:
        from sampan.kubelet.runtime import pb

        return pb.PodSandboxStatusResponse(info={"info": "{}"})


async def _median_ms(fn: Any, repeat: int = REPEAT) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        await fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


async def main() -> None:
    # The node agent and the server load these anyway: not the metrics' cost.
    import aiohttp  # noqa: F401

    from sampan.client import Client  # noqa: F401
    from sampan.kubelet.runtime import cri, pb  # noqa: F401

    rss_before = _rss_kib()
    from sampan.addons.metrics.store import MetricsStore, parse_resource_metrics
    from sampan.kubelet.stats import StatsProvider

    full = StatsProvider(_FakeRuntime(PODS), node_name="n1")  # type: ignore[arg-type]
    empty = StatsProvider(_FakeRuntime(0), node_name="n1")  # type: ignore[arg-type]
    await full.sample()
    await empty.sample()
    summary_100 = await _median_ms(full.summary)
    summary_0 = await _median_ms(empty.summary)
    resource_100 = await _median_ms(full.resource_metrics)
    resource_0 = await _median_ms(empty.resource_metrics)
    print(f"/stats/summary      100 pods: {summary_100:7.2f} ms   0 pods: {summary_0:6.2f} ms")
    print(f"/metrics/resource   100 pods: {resource_100:7.2f} ms   0 pods: {resource_0:6.2f} ms")

    store = MetricsStore()
    text = (await full.resource_metrics()).decode()
    pods = [
        {"metadata": {"name": f"p{i}", "namespace": "default"}, "spec": {"nodeName": "n1"}}
        for i in range(PODS)
    ]

    async def scrape() -> None:
        store.add(parse_resource_metrics("n1", text, at=time.time()))

    parse_ms = await _median_ms(scrape)
    store.add(parse_resource_metrics("n1", text, at=time.time()))
    text = (await full.resource_metrics()).decode()  # later samples: rates exist
    store.add(parse_resource_metrics("n1", text, at=time.time()))

    async def list_pods() -> None:
        items = [m for m in map(store.pod_metrics, pods) if m is not None]
        json.dumps({"kind": "PodMetricsList", "items": items})

    listing = [m for m in map(store.pod_metrics, pods) if m is not None]
    encoded = json.dumps(listing)

    async def json_only() -> None:
        json.dumps(json.loads(encoded))

    list_ms = await _median_ms(list_pods)
    json_ms = await _median_ms(json_only)
    print(f"metrics server: parse one scrape ({PODS} pods): {parse_ms:.2f} ms")
    print(
        f"metrics server: LIST {len(listing)} PodMetrics: {list_ms:.2f} ms"
        f"   (JSON round trip of the same list: {json_ms:.2f} ms)"
    )
    sample_ms = await _median_ms(full.sample)
    # the kubelet's housekeeping samples every 10 s; 4 scrapes: kubelet render + server parse
    per_minute_s = (6 * sample_ms + 4 * (parse_ms + resource_100)) / 1000
    print(
        f"add-on CPU per node per minute: {per_minute_s * 1000:.1f} ms = "
        f"{per_minute_s / 60 * 100:.3f} % of one core (goal < 1 %)"
    )
    rss_after = _rss_kib()
    print(
        f"RSS added by the metrics modules and stores: {(rss_after - rss_before) / 1024:.1f} MB"
        " (goal <= 10 MB)"
    )


if __name__ == "__main__":
    asyncio.run(main())
