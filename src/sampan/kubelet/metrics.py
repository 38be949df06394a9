"""The kubelet's own Prometheus series (served on the kubelet API's ``/metrics`` with the
node registry the agent shares with the proxy and DNS; see ``sampan.client.metrics``):

* ``kubelet_pod_start_duration_seconds`` — from the kubelet first seeing a pod (its pod
  worker starting) to the first status that reports it ``Running``, upstream's buckets;
* ``kubelet_running_pods`` / ``kubelet_running_containers{container_state}`` — from the
  stats snapshot taken for the scrape (``sampan.kubelet.server``).

Invariant: a pod's start is observed at most once per pod worker, and only for a pod that
was ``Pending`` (or had no status) before.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from sampan.client.metrics import CompactHistogram

__all__ = ["POD_START_BUCKETS", "KubeletMetrics"]

# upstream's podStartupDurationBuckets
POD_START_BUCKETS = (
    0.5, 1, 2, 3, 4, 5, 6, 8, 10, 20, 30, 45, 60, 120, 180, 240, 300, 360, 480, 600, 900,
    1200, 1800, 2700, 3600,
)  # fmt: skip


class KubeletMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.pod_start = CompactHistogram(
            "kubelet_pod_start_duration_seconds",
            "[ALPHA] Duration in seconds from kubelet seeing a pod for the first time to the "
            "pod starting to run",
            buckets=POD_START_BUCKETS,
            registry=registry,
        )
