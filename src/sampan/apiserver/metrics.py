"""The API server's Prometheus metrics, served on ``/metrics`` (text format, by
``prometheus_client``; names, labels and buckets as kube-apiserver's so dashboards read them).

* ``apiserver_request_total{verb,dry_run,group,version,resource,subresource,scope,component,code}``
* ``apiserver_request_duration_seconds{verb,dry_run,group,version,resource,subresource,scope,
  component}`` (histogram; long-running WATCH and CONNECT requests are not observed, as
  upstream)
* ``apiserver_current_inflight_requests{request_kind="readOnly"|"mutating"}``
* ``apiserver_longrunning_requests{verb,group,version,resource,subresource,scope,component}``
* ``apiserver_storage_objects{resource}`` (``deployments.apps``), from the watch caches
* ``apiserver_watch_cache_bytes{resource}``: Sampan's own (kube-apiserver has no such gauge):
  the bytes the watch caches hold for the current objects, served JSON included (see
  ``storage.cache.entry_bytes``), to compare with the objects' JSON size

Each ``APIServer`` has its own registry (several servers may live in one test process).
``/metrics`` is an ordinary non-resource path: authenticated, and authorized as ``get`` on
``/metrics`` (``system:monitoring`` has it), so no credentials -> 401, no rule -> 403.

Invariant: every request counted once, when its response is known; the in-flight gauge
returns to its value when a request ends, however it ends.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from sampan.apiserver.requestinfo import RequestInfo
from sampan.client.metrics import CompactHistogram

__all__ = ["CONTENT_TYPE_LATEST", "APIServerMetrics"]

COMPONENT = "apiserver"
# kube-apiserver's buckets for apiserver_request_duration_seconds
DURATION_BUCKETS = (
    0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0,
    8.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0,
)  # fmt: skip
_LABELS = ("verb", "dry_run", "group", "version", "resource", "subresource", "scope", "component")
_READ_ONLY = frozenset({"get", "list", "watch"})
_VERBS = {
    "get": "GET",
    "list": "LIST",
    "watch": "WATCH",
    "create": "POST",
    "update": "PUT",
    "patch": "PATCH",
    "delete": "DELETE",
    "deletecollection": "DELETE",
    "proxy": "CONNECT",
}
_LONG_RUNNING = frozenset({"WATCH", "CONNECT"})


class APIServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "apiserver_request",
            "Counter of apiserver requests broken out for each verb, dry run value, group, "
            "version, resource, scope, component, and HTTP response code.",
            (*_LABELS, "code"),
            registry=self.registry,
        )
        self.duration = CompactHistogram(
            "apiserver_request_duration_seconds",
            "Response latency distribution in seconds for each verb, dry run value, group, "
            "version, resource, subresource, scope and component.",
            _LABELS,
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.inflight = Gauge(
            "apiserver_current_inflight_requests",
            "Maximal number of currently used inflight request limit of this apiserver per "
            "request kind in last second.",
            ("request_kind",),
            registry=self.registry,
        )
        self.longrunning = Gauge(
            "apiserver_longrunning_requests",
            "Gauge of all active long-running apiserver requests broken out by verb, group, "
            "version, resource, scope and component. Not all requests are tracked this way.",
            ("verb", "group", "version", "resource", "subresource", "scope", "component"),
            registry=self.registry,
        )
        self._counts: Callable[[], dict[str, int]] = dict
        self._sizes: Callable[[], dict[str, int]] = dict
        self._children: dict[int, dict[tuple[Any, ...], Any]] = {}
        self.registry.register(_StorageObjects(lambda: self._counts(), lambda: self._sizes()))

    @staticmethod
    def _labels(method: str, ri: RequestInfo | None, dry_run: bool) -> dict[str, str]:
        if ri is None or not ri.is_resource_request:
            verb = method.upper()
            return dict.fromkeys(_LABELS, "") | {"verb": verb, "component": COMPONENT}
        verb = _VERBS.get(ri.verb, ri.verb.upper())
        if ri.verb == "patch" and method == "PATCH":
            verb = "PATCH"
        if ri.name:
            scope = "resource"
        elif ri.namespace:
            scope = "namespace"
        else:
            scope = "cluster"
        return {
            "verb": verb,
            "dry_run": "All" if dry_run else "",
            "group": ri.api_group,
            "version": ri.api_version,
            "resource": ri.resource,
            "subresource": ri.subresource,
            "scope": scope,
            "component": COMPONENT,
        }

    @contextmanager
    def track(self, method: str, ri: RequestInfo | None, *, dry_run: bool) -> Iterator[list[int]]:
        """Count one request; the caller puts the response code into the yielded list."""
        labels = self._labels(method, ri, dry_run)
        kind = (
            "readOnly"
            if (ri is not None and ri.verb in _READ_ONLY) or method in ("GET", "HEAD")
            else "mutating"
        )
        long_running = labels["verb"] in _LONG_RUNNING
        key = tuple(labels.items())
        inflight = self._child(self.inflight, (kind,), lambda: self.inflight.labels(kind))
        inflight.inc()
        if long_running:
            longrunning = self._child(
                self.longrunning,
                key,
                lambda: self.longrunning.labels(*(labels[k] for k in _LABELS if k != "dry_run")),
            )
            longrunning.inc()
        started = time.monotonic()
        code: list[int] = []
        try:
            yield code
        finally:
            inflight.dec()
            if long_running:
                longrunning.dec()
            else:
                duration = self._child(self.duration, key, lambda: self.duration.labels(**labels))
                duration.observe(time.monotonic() - started)
            status = str(code[0] if code else 500)
            self._child(
                self.requests, (*key, status), lambda: self.requests.labels(**labels, code=status)
            ).inc()

    def _child(self, metric: Any, key: tuple[Any, ...], make: Callable[[], Any]) -> Any:
        """``metric.labels(...)`` for ``key`` (its label values), looked up once: the client
        library's ``labels`` validates and locks on every call, a cost per request."""
        children = self._children.get(id(metric))
        if children is None:
            children = self._children[id(metric)] = {}
        child = children.get(key)
        if child is None:
            child = children[key] = make()
        return child

    def watch_storage(
        self, counts: Callable[[], dict[str, int]], sizes: Callable[[], dict[str, int]] = dict
    ) -> None:
        """Report ``apiserver_storage_objects{resource}`` from ``counts()`` and
        ``apiserver_watch_cache_bytes{resource}`` from ``sizes()`` at each scrape."""
        self._counts = counts
        self._sizes = sizes

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _StorageObjects(Collector):
    def __init__(
        self, counts: Callable[[], dict[str, int]], sizes: Callable[[], dict[str, int]]
    ) -> None:
        self.counts = counts
        self.sizes = sizes

    def collect(self) -> Iterable[Any]:
        family = GaugeMetricFamily(
            "apiserver_storage_objects",
            "[STABLE] Number of stored objects at the time of last check split by kind.",
            labels=["resource"],
        )
        for resource, count in sorted(self.counts().items()):
            family.add_metric([resource], count)
        yield family
        sizes = GaugeMetricFamily(
            "apiserver_watch_cache_bytes",
            "Bytes held by the watch cache for the current objects (served JSON, key, "
            "parsed filter values) split by resource.",
            labels=["resource"],
        )
        for resource, size in sorted(self.sizes().items()):
            sizes.add_metric([resource], size)
        yield sizes

    def describe(self) -> Iterable[Any]:
        return []
