"""The proxy's Prometheus series, named as kube-proxy's (in the node registry, served on the
kubelet API's ``/metrics``; see ``sampan.client.metrics``):

* ``kubeproxy_sync_proxy_rules_duration_seconds`` — every sync, failed ones included,
  buckets ``ExponentialBuckets(0.001, 2, 15)``;
* ``kubeproxy_sync_proxy_rules_last_timestamp_seconds`` — Unix time of the last sync that
  succeeded.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge

from sampan.client.metrics import CompactHistogram, exponential_buckets

__all__ = ["SYNC_BUCKETS", "ProxyMetrics"]

SYNC_BUCKETS = exponential_buckets(0.001, 2, 15)


class ProxyMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.sync_duration = CompactHistogram(
            "kubeproxy_sync_proxy_rules_duration_seconds",
            "[ALPHA] SyncProxyRules latency in seconds",
            buckets=SYNC_BUCKETS,
            registry=registry,
        )
        self.last_sync = Gauge(
            "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
            "[ALPHA] The last time proxy rules were successfully synced",
            registry=registry,
        )
