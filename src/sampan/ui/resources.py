"""What the explorer shows of each kind: its API path and its table columns.

A ``Kind`` names a resource (group, version, plural, namespaced) and the columns of its list
(each a function of the object giving a short text; templates escape it). Built-in kinds have
columns chosen as ``kubectl get`` shows them; a custom resource (found through its CRD) gets
name, namespace and age. Pure functions only: no I/O here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["BUILTIN", "NAV", "Column", "Kind", "age", "crd_kind", "kind_for", "pod_restarts"]

Obj = dict[str, Any]


@dataclass(frozen=True)
class Column:
    title: str
    value: Callable[[Obj], str]
    wrap: bool = False
    """Long text (a message): wraps instead of being cut."""


@dataclass(frozen=True)
class Kind:
    key: str
    """URL key: ``pods``, ``deployments``, or ``<plural>.<group>`` for custom resources."""
    title: str
    group: str
    version: str
    plural: str
    namespaced: bool
    columns: tuple[Column, ...] = field(default=())
    scalable: bool = False
    restartable: bool = False
    has_pods: bool = False

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def collection_path(self, namespace: str | None) -> str:
        prefix = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            return f"{prefix}/namespaces/{namespace}/{self.plural}"
        return f"{prefix}/{self.plural}"

    def object_path(self, namespace: str | None, name: str) -> str:
        return f"{self.collection_path(namespace if self.namespaced else None)}/{name}"


def _meta(obj: Obj) -> Obj:
    return obj.get("metadata") or {}


def _status(obj: Obj) -> Obj:
    return obj.get("status") or {}


def _spec(obj: Obj) -> Obj:
    return obj.get("spec") or {}


def parse_time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def age(obj: Obj, now: dt.datetime | None = None) -> str:
    created = parse_time(_meta(obj).get("creationTimestamp"))
    if created is None:
        return ""
    seconds = int(((now or dt.datetime.now(dt.UTC)) - created).total_seconds())
    seconds = max(seconds, 0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size * 2 or (unit == "m" and seconds >= 60):
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def pod_restarts(pod: Obj) -> int:
    return sum(int(c.get("restartCount") or 0) for c in _status(pod).get("containerStatuses") or [])


def pod_phase(pod: Obj) -> str:
    if _meta(pod).get("deletionTimestamp"):
        return "Terminating"
    for c in _status(pod).get("containerStatuses") or []:
        waiting = (c.get("state") or {}).get("waiting")
        if waiting and waiting.get("reason"):
            return str(waiting["reason"])
    return str(_status(pod).get("phase") or "Pending")


def _ready_containers(pod: Obj) -> str:
    statuses = _status(pod).get("containerStatuses") or []
    total = len(_spec(pod).get("containers") or []) or len(statuses)
    return f"{sum(1 for c in statuses if c.get('ready'))}/{total}"


def _ready_of(obj: Obj, want: str = "replicas") -> str:
    return f"{_status(obj).get('readyReplicas') or 0}/{_spec(obj).get(want, 1)}"


def _node_ready(node: Obj) -> str:
    for c in _status(node).get("conditions") or []:
        if c.get("type") == "Ready":
            return "Ready" if c.get("status") == "True" else "NotReady"
    return "Unknown"


def _ports(svc: Obj) -> str:
    return ",".join(
        f"{p.get('port')}/{p.get('protocol', 'TCP')}" for p in _spec(svc).get("ports") or []
    )


def _labels(obj: Obj) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted((_meta(obj).get("labels") or {}).items()))


NAME = Column("Name", lambda o: str(_meta(o).get("name", "")))
NAMESPACE = Column("Namespace", lambda o: str(_meta(o).get("namespace", "")))
AGE = Column("Age", age)


def _k(
    key: str,
    title: str,
    group: str,
    version: str,
    namespaced: bool,
    *columns: Column,
    **flags: bool,
) -> Kind:
    base = (NAME, NAMESPACE) if namespaced else (NAME,)
    return Kind(key, title, group, version, key, namespaced, (*base, *columns, AGE), **flags)


BUILTIN: dict[str, Kind] = {
    k.key: k
    for k in (
        _k(
            "nodes",
            "Nodes",
            "",
            "v1",
            False,
            Column("Status", _node_ready),
            Column(
                "Version",
                lambda o: str((_status(o).get("nodeInfo") or {}).get("kubeletVersion", "")),
            ),
            Column("CPU", lambda o: str((_status(o).get("capacity") or {}).get("cpu", ""))),
            Column("Memory", lambda o: str((_status(o).get("capacity") or {}).get("memory", ""))),
            Column("Pods", lambda o: str((_status(o).get("capacity") or {}).get("pods", ""))),
        ),
        _k(
            "namespaces",
            "Namespaces",
            "",
            "v1",
            False,
            Column("Status", lambda o: str(_status(o).get("phase", ""))),
        ),
        _k(
            "pods",
            "Pods",
            "",
            "v1",
            True,
            Column("Ready", _ready_containers),
            Column("Status", pod_phase),
            Column("Restarts", lambda o: str(pod_restarts(o))),
            Column("Node", lambda o: str(_spec(o).get("nodeName", ""))),
        ),
        _k(
            "deployments",
            "Deployments",
            "apps",
            "v1",
            True,
            Column("Ready", _ready_of),
            Column("Up-to-date", lambda o: str(_status(o).get("updatedReplicas") or 0)),
            Column("Available", lambda o: str(_status(o).get("availableReplicas") or 0)),
            scalable=True,
            restartable=True,
            has_pods=True,
        ),
        _k(
            "statefulsets",
            "StatefulSets",
            "apps",
            "v1",
            True,
            Column("Ready", _ready_of),
            scalable=True,
            restartable=True,
            has_pods=True,
        ),
        _k(
            "daemonsets",
            "DaemonSets",
            "apps",
            "v1",
            True,
            Column("Desired", lambda o: str(_status(o).get("desiredNumberScheduled") or 0)),
            Column("Ready", lambda o: str(_status(o).get("numberReady") or 0)),
            restartable=True,
            has_pods=True,
        ),
        _k(
            "jobs",
            "Jobs",
            "batch",
            "v1",
            True,
            Column(
                "Completions",
                lambda o: f"{_status(o).get('succeeded') or 0}/{_spec(o).get('completions', 1)}",
            ),
            Column("Active", lambda o: str(_status(o).get("active") or 0)),
            has_pods=True,
        ),
        _k(
            "cronjobs",
            "CronJobs",
            "batch",
            "v1",
            True,
            Column("Schedule", lambda o: str(_spec(o).get("schedule", ""))),
            Column("Suspend", lambda o: str(bool(_spec(o).get("suspend")))),
            Column("Active", lambda o: str(len(_status(o).get("active") or []))),
        ),
        _k(
            "services",
            "Services",
            "",
            "v1",
            True,
            Column("Type", lambda o: str(_spec(o).get("type", "ClusterIP"))),
            Column("Cluster IP", lambda o: str(_spec(o).get("clusterIP", ""))),
            Column("Ports", _ports),
        ),
        _k(
            "ingresses",
            "Ingresses",
            "networking.k8s.io",
            "v1",
            True,
            Column(
                "Hosts",
                lambda o: ",".join(str(r.get("host", "*")) for r in _spec(o).get("rules") or []),
            ),
        ),
        _k(
            "configmaps",
            "ConfigMaps",
            "",
            "v1",
            True,
            Column("Data", lambda o: str(len(o.get("data") or {}))),
        ),
        _k(
            "secrets",
            "Secrets",
            "",
            "v1",
            True,
            Column("Type", lambda o: str(o.get("type", ""))),
            Column("Data", lambda o: str(len(o.get("data") or {}))),
        ),
        _k(
            "persistentvolumeclaims",
            "PVCs",
            "",
            "v1",
            True,
            Column("Status", lambda o: str(_status(o).get("phase", ""))),
            Column("Volume", lambda o: str(_spec(o).get("volumeName", ""))),
            Column(
                "Capacity", lambda o: str((_status(o).get("capacity") or {}).get("storage", ""))
            ),
        ),
        Kind(
            "events",
            "Events",
            "",
            "v1",
            "events",
            True,
            (
                Column("Type", lambda o: str(o.get("type", ""))),
                Column("Reason", lambda o: str(o.get("reason", ""))),
                Column(
                    "Object",
                    lambda o: (
                        f"{(o.get('involvedObject') or {}).get('kind', '')}/"
                        f"{(o.get('involvedObject') or {}).get('name', '')}"
                    ),
                ),
                Column("Message", lambda o: str(o.get("message", "")), wrap=True),
                Column("Count", lambda o: str(o.get("count") or 1)),
                NAMESPACE,
                AGE,
            ),
        ),
        _k(
            "customresourcedefinitions",
            "Custom resources",
            "apiextensions.k8s.io",
            "v1",
            False,
            Column("Kind", lambda o: str((_spec(o).get("names") or {}).get("kind", ""))),
            Column("Scope", lambda o: str(_spec(o).get("scope", ""))),
        ),
    )
}

NAV: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Cluster", ("nodes", "namespaces", "events")),
    ("Workloads", ("pods", "deployments", "statefulsets", "daemonsets", "jobs", "cronjobs")),
    ("Network", ("services", "ingresses")),
    ("Config & storage", ("configmaps", "secrets", "persistentvolumeclaims")),
    ("Extensions", ("customresourcedefinitions",)),
)


def crd_kind(crd: Obj) -> Kind:
    """The Kind of a CRD's resources (its storage version, or the first served one)."""
    spec = _spec(crd)
    versions = spec.get("versions") or []
    version = next((v for v in versions if v.get("storage")), None) or (versions or [{}])[0]
    names = spec.get("names") or {}
    namespaced = spec.get("scope") == "Namespaced"
    base = (NAME, NAMESPACE) if namespaced else (NAME,)
    return Kind(
        key=f"{names.get('plural')}.{spec.get('group')}",
        title=str(names.get("kind") or names.get("plural")),
        group=str(spec.get("group")),
        version=str(version.get("name", "v1")),
        plural=str(names.get("plural")),
        namespaced=namespaced,
        columns=(*base, AGE),
    )


def kind_for(key: str) -> Kind | None:
    return BUILTIN.get(key)


def sort_events(events: list[Obj]) -> list[Obj]:
    """Warnings first, then the most recent first."""

    def when(e: Obj) -> str:
        return str(
            e.get("lastTimestamp") or e.get("eventTime") or _meta(e).get("creationTimestamp") or ""
        )

    by_time = sorted(events, key=when, reverse=True)
    return sorted(by_time, key=lambda e: e.get("type") != "Warning")


def selector_query(obj: Obj) -> str | None:
    """A workload's pod label selector as a ``labelSelector`` query (matchLabels only)."""
    spec = _spec(obj)
    if "jobTemplate" in spec:
        return None
    labels = (spec.get("selector") or {}).get("matchLabels") or {}
    if not labels:
        return None
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


LABELS = Column("Labels", _labels)
