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
* the RSS added by metrics (goal <= 10 MB), each part measured in a fresh interpreter so the
  timing runs above do not count: ``prometheus_client`` itself, imported after the
  libraries a server loads anyway (aiohttp, cryptography, grpc, yaml, the client); the
  metrics code (the metrics-server add-on, the kubelet's stats) imported after every
  component; and the live series and stores of a busy one-node server: the API server's
  (240 request label sets), 30 controllers' work queues, the scheduler's, the kubelet's
  with 100 pods (``/stats/summary``, ``/metrics/resource``, ``/metrics/cadvisor`` rendered),
  the proxy's, the DNS server's, and the add-on's store with two scrapes of 100 pods.
"""

from __future__ import annotations

import asyncio
import gc
import json
import resource
import statistics
import subprocess
import sys
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
    parts = {stage: _rss_stage_mb(stage) for stage in ("library", "code", "series")}
    print(
        f"RSS added by metrics: {sum(parts.values()):.1f} MB (goal <= 10 MB) = "
        f"prometheus_client {parts['library']:.1f} + metrics code {parts['code']:.1f}"
        f" + live series and stores {parts['series']:.1f}"
    )


# --- RSS, each stage in a fresh interpreter --------------------------------------------------


def _rss_stage_mb(stage: str) -> float:
    """The RSS ``stage`` adds (MB), measured in a child process (see ``_rss_child``)."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.metrics", "--rss", stage],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return int(out.stdout.split()[-1]) / 1024


def _settled_rss_kib() -> int:
    gc.collect()
    return _rss_kib()


def _rss_child(stage: str) -> int:
    """KiB of RSS ``stage`` adds on top of what comes before it:

    * ``library``: ``prometheus_client`` after the libraries every server loads anyway;
    * ``code``: the metrics-only modules after every component (which import the small
      per-component metrics modules and ``prometheus_client`` themselves);
    * ``series``: the live registries, samples and stores of a busy one-node server.
    """
    import aiohttp.web  # noqa: F401
    import cryptography.x509  # noqa: F401
    import grpc  # noqa: F401
    import yaml  # noqa: F401

    import sampan.client.informer
    import sampan.pki.tls

    if stage == "library":
        before = _settled_rss_kib()
        import prometheus_client  # noqa: F401

        return _settled_rss_kib() - before
    import sampan.apiserver.server
    import sampan.controllers.manager
    import sampan.dns
    import sampan.kubelet
    import sampan.proxy
    import sampan.scheduler

    if stage == "code":
        before = _settled_rss_kib()
        import sampan.addons.metrics
        import sampan.kubelet.server
        import sampan.kubelet.stats

        return _settled_rss_kib() - before
    import sampan.addons.metrics
    import sampan.kubelet.stats  # noqa: F401

    before = _settled_rss_kib()
    keep = asyncio.run(_live_series())
    after = _settled_rss_kib()
    del keep
    return after - before


async def _live_series() -> list[Any]:
    """Build and exercise every registry and store a busy one-node server holds."""
    from prometheus_client import CollectorRegistry, generate_latest

    from sampan.addons.metrics.store import MetricsStore, parse_resource_metrics
    from sampan.apiserver.metrics import APIServerMetrics
    from sampan.apiserver.requestinfo import RequestInfo
    from sampan.client.metrics import WorkQueueMetrics
    from sampan.dns.metrics import DNSMetrics
    from sampan.kubelet.metrics import KubeletMetrics
    from sampan.kubelet.stats import StatsProvider
    from sampan.proxy.metrics import ProxyMetrics
    from sampan.scheduler.metrics import SchedulerMetrics

    api = APIServerMetrics()
    registry = api.registry
    resources = [f"kind{i}s" for i in range(30)]
    for res in resources:
        for verb in ("get", "list", "watch", "create", "update", "patch", "delete", "proxy"):
            ri = RequestInfo(
                path="/", is_resource_request=True, verb=verb, api_group="", api_version="v1",
                resource=res, namespace="default", name="x" if verb == "get" else "",
            )  # fmt: skip
            with api.track("GET", ri, dry_run=False) as code:
                code.append(200)
    queues = WorkQueueMetrics.of(registry)
    recorders = [queues.queue(f"controller-{i}") for i in range(30)]
    for recorder in recorders:
        for key in range(20):
            recorder.add(key)
            recorder.get(key)
            recorder.done(key)
        recorder.retry()
    scheduler = SchedulerMetrics(registry, dict)
    for result in ("scheduled", "unschedulable", "error"):
        scheduler.attempt(result, "default-scheduler", 0.01)
    node = CollectorRegistry()
    kubelet = KubeletMetrics(node)
    kubelet.pod_start.observe(2.0)
    proxy = ProxyMetrics(node)
    proxy.sync_duration.observe(0.05)
    proxy.last_sync.set_to_current_time()
    dns = DNSMetrics(node, 53)
    query = bytes(12) + b"\x03www\x07example\x03com\x00\x00\x01\x00\x01"
    for rcode in (0, 3):
        reply = query[:3] + bytes([rcode]) + query[4:]
        for tcp in (False, True):
            dns.report(query, reply, tcp=tcp, ipv6=False, plugin="forward", took_s=0.001)
    stats = StatsProvider(_FakeRuntime(PODS), node_name="n1")  # type: ignore[arg-type]
    await stats.sample()
    await stats.summary()
    await stats.cadvisor_metrics()
    await stats.kubelet_metrics(node)
    text = (await stats.resource_metrics()).decode()
    store = MetricsStore()
    for _ in range(2):
        store.add(parse_resource_metrics("n1", text, at=time.time()))
        text = (await stats.resource_metrics()).decode()
    pods = [
        {"metadata": {"name": f"p{i}", "namespace": "default"}, "spec": {"nodeName": "n1"}}
        for i in range(PODS)
    ]
    listing = [store.pod_metrics(pod) for pod in pods]
    generate_latest(registry)  # a scrape (its answer is freed when sent)
    generate_latest(node)
    kept: list[Any] = [api, queues, recorders, scheduler, kubelet, proxy, dns, stats, store]
    return [*kept, listing, node]


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--rss":
        print(_rss_child(sys.argv[2]))
    else:
        asyncio.run(main())
