"""Prometheus metrics of the work queues (client-go's ``workqueue_*`` series), and the one
process-wide setting every Sampan registry shares.

This module owns:

* ``WorkQueueMetrics`` — the families client-go's Prometheus provider registers, with the
  same names, help, ``name`` label and buckets (``ExponentialBuckets(1e-6, 10, 10)``):
  ``workqueue_adds_total``, ``workqueue_depth``, ``workqueue_queue_duration_seconds``,
  ``workqueue_work_duration_seconds``, ``workqueue_retries_total``, plus the two gauges
  client-go refreshes on a timer, ``workqueue_unfinished_work_seconds`` and
  ``workqueue_longest_running_processor_seconds``, computed here when scraped.
  ``WorkQueueMetrics.of(registry)`` gives the one instance of a registry (a registry refuses
  a family twice), and ``queue(name)`` the recorder a ``WorkQueue`` calls.
* ``CompactHistogram`` — a histogram family exposed by ``prometheus_client`` like its
  ``Histogram``, but keeping each label set's bucket counts in one array of floats (8 bytes
  a bucket) instead of an object with its own lock per bucket (~150 bytes): the API server's
  240 and more label sets of 24 buckets each made that the largest cost of metrics. It is
  not thread-safe: observe on the event loop (every Sampan component does).
* ``disable_created_metrics()`` at import: Go's client emits no ``*_created`` series, so
  neither do we (it is a process-wide switch of ``prometheus_client``; it also saves a
  float per counter and histogram child).

Where the registries live (decided by the supervisor): the API server, the controllers and
the scheduler of one ``sampan server`` share one registry, served on the API server's
``/metrics`` (K3s serves its in-process components' metrics there the same way); the agent's
kubelet, proxy and DNS share another, served on the kubelet's ``/metrics``.

Invariants: a queue's recorder never raises; ``depth`` is the number of keys added and not
yet handed out (client-go's meaning, counted when scraped); a key's queue time runs from its
first add until ``get`` hands it out, its work time from ``get`` to ``done``.
"""

from __future__ import annotations

import time
import weakref
from array import array
from bisect import bisect_left
from collections.abc import Hashable, Iterable, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from prometheus_client import disable_created_metrics as _disable_created_metrics
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

__all__ = [
    "WORKQUEUE_BUCKETS",
    "CompactHistogram",
    "QueueMetrics",
    "WorkQueueMetrics",
    "exponential_buckets",
]

_disable_created_metrics()  # type: ignore[no-untyped-call]


def exponential_buckets(start: float, factor: float, count: int) -> tuple[float, ...]:
    """Prometheus' ``ExponentialBuckets``: ``count`` upper bounds from ``start``, each the
    previous one times ``factor`` -- multiplied step by step as Go does, so the bounds are the
    same floats (``le="9.999999999999999e-06"`` for ``(1e-6, 10, n)``, as kube-* report)."""
    bounds = []
    bound = start
    for _ in range(count):
        bounds.append(bound)
        bound *= factor
    return tuple(bounds)


WORKQUEUE_BUCKETS = exponential_buckets(1e-6, 10, 10)


class _HistogramChild:
    """One label set: counts per bucket (not cumulative), their total and the sum."""

    __slots__ = ("_bounds", "count", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self.counts = array("d", bytes(8 * len(bounds)))
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        index = bisect_left(self._bounds, value)  # the first bound >= value (le)
        if index < len(self.counts):
            self.counts[index] += 1
        self.count += 1
        self.sum += value


class CompactHistogram(Collector):
    """A histogram family with ``prometheus_client``'s exposition (``_bucket{le}``,
    ``_count``, ``_sum``) and small children; see the module docstring."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        *,
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.bounds = tuple(float(b) for b in buckets if b != float("inf"))
        if list(self.bounds) != sorted(set(self.bounds)):
            raise ValueError(f"{name}: buckets must be increasing")
        self._les = [floatToGoString(b) for b in self.bounds]  # type: ignore[no-untyped-call]
        self._children: dict[tuple[str, ...], _HistogramChild] = {}
        registry.register(self)

    def labels(self, *values: str, **by_name: str) -> _HistogramChild:
        """The child of one label set (made on first use), by position or by name."""
        key = tuple(by_name[n] for n in self.labelnames) if by_name else tuple(values)
        if len(key) != len(self.labelnames):
            raise ValueError(f"{self.name}: want labels {self.labelnames}, got {key}")
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = _HistogramChild(self.bounds)
        return child

    def observe(self, value: float) -> None:
        """Observe into the only child of a family without labels."""
        self.labels().observe(value)

    def _family(self) -> HistogramMetricFamily:
        return HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def collect(self) -> Iterable[Any]:
        family = self._family()
        for key, child in list(self._children.items()):
            cumulative = 0.0
            buckets: list[tuple[str, float]] = []
            for le, count in zip(self._les, child.counts, strict=True):
                cumulative += count
                buckets.append((le, cumulative))
            buckets.append(("+Inf", float(child.count)))
            family.add_metric(list(key), buckets, child.sum)
        yield family

    def describe(self) -> Iterable[Any]:
        return [self._family()]


_REGISTRIES: weakref.WeakKeyDictionary[CollectorRegistry, WorkQueueMetrics] = (
    weakref.WeakKeyDictionary()
)


class QueueMetrics:
    """What one named queue records (client-go's ``queueMetrics``)."""

    __slots__ = ("_adds", "_latency", "_processing", "_queued", "_retries", "_work")

    def __init__(self, family: WorkQueueMetrics, name: str) -> None:
        self._adds = family.adds.labels(name)
        self._latency = family.latency.labels(name)
        self._work = family.work.labels(name)
        self._retries = family.retries.labels(name)
        self._queued: dict[Hashable, float] = {}
        self._processing: dict[Hashable, float] = {}
        family.track(name, self._queued, self._processing)

    def add(self, key: Hashable) -> None:
        self._adds.inc()
        self._queued.setdefault(key, time.monotonic())

    def get(self, key: Hashable) -> None:
        now = time.monotonic()
        added = self._queued.pop(key, None)
        if added is not None:
            self._latency.observe(now - added)
        self._processing[key] = now

    def done(self, key: Hashable) -> None:
        started = self._processing.pop(key, None)
        if started is not None:
            self._work.observe(time.monotonic() - started)

    def retry(self) -> None:
        self._retries.inc()


class WorkQueueMetrics:
    """The ``workqueue_*`` families in one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.adds = Counter(
            "workqueue_adds",
            "[BETA] Total number of adds handled by workqueue",
            ("name",),
            registry=registry,
        )
        self.latency = CompactHistogram(
            "workqueue_queue_duration_seconds",
            "[BETA] How long in seconds an item stays in workqueue before being requested.",
            ("name",),
            buckets=WORKQUEUE_BUCKETS,
            registry=registry,
        )
        self.work = CompactHistogram(
            "workqueue_work_duration_seconds",
            "[BETA] How long in seconds processing an item from workqueue takes.",
            ("name",),
            buckets=WORKQUEUE_BUCKETS,
            registry=registry,
        )
        self.retries = Counter(
            "workqueue_retries",
            "[BETA] Total number of retries handled by workqueue",
            ("name",),
            registry=registry,
        )
        self._queues: dict[str, tuple[dict[Hashable, float], dict[Hashable, float]]] = {}
        registry.register(_QueueState(self._queues))

    @classmethod
    def of(cls, registry: CollectorRegistry) -> WorkQueueMetrics:
        """The registry's instance (made on first use)."""
        found = _REGISTRIES.get(registry)
        if found is None:
            found = _REGISTRIES[registry] = cls(registry)
        return found

    def queue(self, name: str) -> QueueMetrics:
        return QueueMetrics(self, name)

    def track(
        self, name: str, queued: dict[Hashable, float], processing: dict[Hashable, float]
    ) -> None:
        """Report ``queued`` and ``processing`` (key -> since) as queue ``name``'s state (a
        queue made again under the same name, e.g. in a new leadership term, replaces the
        old one)."""
        self._queues[name] = (queued, processing)


class _QueueState(Collector):
    """``workqueue_depth``, ``workqueue_unfinished_work_seconds`` and
    ``workqueue_longest_running_processor_seconds``, computed from the queues' keys when
    scraped (so a queue that goes away mid-work leaves no stale count behind)."""

    def __init__(
        self, queues: dict[str, tuple[dict[Hashable, float], dict[Hashable, float]]]
    ) -> None:
        self._queues = queues

    def collect(self) -> Iterable[Any]:
        now = time.monotonic()
        depth = GaugeMetricFamily(
            "workqueue_depth", "[BETA] Current depth of workqueue", labels=["name"]
        )
        unfinished = GaugeMetricFamily(
            "workqueue_unfinished_work_seconds",
            "[BETA] How many seconds of work has done that is in progress and hasn't been "
            "observed by work_duration. Large values indicate stuck threads. One can deduce "
            "the number of stuck threads by observing the rate at which this increases.",
            labels=["name"],
        )
        longest = GaugeMetricFamily(
            "workqueue_longest_running_processor_seconds",
            "[BETA] How many seconds has the longest running processor for workqueue been running.",
            labels=["name"],
        )
        for name, (queued, started) in sorted(self._queues.items()):
            depth.add_metric([name], len(queued))
            ages = [now - s for s in list(started.values())]
            unfinished.add_metric([name], sum(ages))
            longest.add_metric([name], max(ages, default=0.0))
        yield depth
        yield unfinished
        yield longest

    def describe(self) -> Iterable[Any]:
        return []
