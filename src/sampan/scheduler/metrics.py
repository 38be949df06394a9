"""The scheduler's Prometheus metrics, with kube-scheduler's names, labels and buckets:

* ``scheduler_schedule_attempts_total{result,profile}`` — ``result`` is ``scheduled``,
  ``unschedulable`` or ``error``; ``profile`` the profile's ``schedulerName``;
* ``scheduler_scheduling_attempt_duration_seconds{result,profile}`` — from the start of the
  scheduling cycle to its outcome (binding included for ``scheduled``), buckets
  ``ExponentialBuckets(0.001, 2, 15)``;
* ``scheduler_pending_pods{queue}`` — ``active``, ``backoff``, ``unschedulable`` and
  ``gated`` pods, counted from the scheduling queue when scraped.

The registry is the caller's (the server's shared registry, served on the API server's
``/metrics``). Invariant: every attempt counts once, with its outcome.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from sampan.client.metrics import CompactHistogram, exponential_buckets

__all__ = ["ERROR", "PENDING_QUEUES", "SCHEDULED", "UNSCHEDULABLE", "SchedulerMetrics"]

SCHEDULED = "scheduled"
UNSCHEDULABLE = "unschedulable"
ERROR = "error"
ATTEMPT_BUCKETS = exponential_buckets(0.001, 2, 15)
PENDING_QUEUES = ("active", "backoff", "unschedulable", "gated")


class SchedulerMetrics:
    def __init__(
        self, registry: CollectorRegistry, pending: Callable[[], Mapping[str, int]]
    ) -> None:
        """``pending()`` gives the number of pending pods per queue name (PENDING_QUEUES)."""
        self.attempts = Counter(
            "scheduler_schedule_attempts",
            "[STABLE] Number of attempts to schedule pods, by the result. 'unschedulable' "
            "means a pod could not be scheduled, while 'error' means an internal scheduler "
            "problem.",
            ("result", "profile"),
            registry=registry,
        )
        self.duration = CompactHistogram(
            "scheduler_scheduling_attempt_duration_seconds",
            "[STABLE] Scheduling attempt latency in seconds (scheduling algorithm + binding)",
            ("result", "profile"),
            buckets=ATTEMPT_BUCKETS,
            registry=registry,
        )
        registry.register(_Pending(pending))

    def attempt(self, result: str, profile: str, duration_s: float) -> None:
        self.attempts.labels(result, profile).inc()
        self.duration.labels(result, profile).observe(duration_s)


class _Pending(Collector):
    def __init__(self, pending: Callable[[], Mapping[str, int]]) -> None:
        self._pending = pending

    def collect(self) -> Iterable[Any]:
        family = GaugeMetricFamily(
            "scheduler_pending_pods",
            "[STABLE] Number of pending pods, by the queue type. 'active' means number of pods "
            "in activeQ; 'backoff' means number of pods in backoffQ; 'unschedulable' means "
            "number of pods in unschedulablePods that the scheduler attempted to schedule and "
            "failed; 'gated' is the number of unschedulable pods that the scheduler never "
            "attempted to schedule because they are gated.",
            labels=["queue"],
        )
        counts = self._pending()
        for queue in PENDING_QUEUES:
            family.add_metric([queue], counts.get(queue, 0))
        yield family

    def describe(self) -> Iterable[Any]:
        return []
