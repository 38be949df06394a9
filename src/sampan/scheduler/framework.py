"""The scheduling framework: statuses, per-pod and per-node data, plugin contract, one profile.

This module owns the data every plugin reads and the order extension points run in
(upstream's ``pkg/scheduler/framework``):

    PreEnqueue -> (queue, QueueSort) -> PreFilter -> Filter -> [PostFilter] -> PreScore -> Score
    -> NormalizeScore -> Reserve -> Permit  ||  binding cycle: PreBind -> Bind -> PostBind

Design choices, for speed in one Python thread:

* ``PodInfo`` parses a pod once (requests incl. init containers and overhead, tolerations,
  affinity terms, host ports, priority); plugins never re-read the raw dict in hot paths.
* ``NodeInfo`` is kept **incrementally** by the cache: requested and non-zero requested
  resources, pod count, used host ports, pods with affinity terms are updated on pod add/remove,
  never recomputed from every pod.
* **Filter and Score are batch calls** over a list of ``NodeInfo`` (``filter(state, pod, nodes,
  failed)`` returns the nodes that pass and records a ``Status`` for each rejected one;
  ``score(state, pod, nodes)`` returns a list of ints). One Python call per plugin per chunk of
  nodes instead of one per node keeps the interpreter overhead off the per-node path.
* The scheduling cycle runs without awaiting, so the live cache *is* the consistent snapshot of
  that cycle (upstream copies the cache into a snapshot because its cycle runs beside informer
  goroutines; here nothing else runs during the cycle).

A plugin is a class with ``name`` and the methods of the extension points it implements
(see ``Plugin``); ``Framework`` (one per profile) lists the plugin instances per point.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from sampan.api.labels import (
    Operator,
    Requirement,
    Selector,
    SelectorError,
    selector_from_label_selector,
)
from sampan.api.quantity import milli_value as _milli
from sampan.api.quantity import parse_quantity

if TYPE_CHECKING:
    from sampan.scheduler.cache import SchedulerCache

__all__ = [
    "DEFAULT_MEMORY_REQUEST",
    "DEFAULT_MILLI_CPU_REQUEST",
    "ERROR",
    "EV_ASSIGNED_POD_ADD",
    "EV_ASSIGNED_POD_DELETE",
    "EV_ASSIGNED_POD_UPDATE",
    "EV_NAMESPACE",
    "EV_NODE_ADD",
    "EV_NODE_UPDATE",
    "EV_PV",
    "EV_PVC",
    "EV_SERVICE",
    "EV_STORAGE_CLASS",
    "MAX_NODE_SCORE",
    "SKIP",
    "SUCCESS",
    "UNSCHEDULABLE",
    "UNSCHEDULABLE_AND_UNRESOLVABLE",
    "WAIT",
    "AffinityTerm",
    "CycleState",
    "Framework",
    "Handle",
    "NodeInfo",
    "Plugin",
    "PodInfo",
    "Status",
    "WeightedAffinityTerm",
    "default_normalize_score",
    "match_node_selector_terms",
    "pod_tolerates_taint",
]

MAX_NODE_SCORE = 100
DEFAULT_MILLI_CPU_REQUEST = 100
"""Scoring counts a container without a cpu request as 100m (upstream's non-zero default)."""
DEFAULT_MEMORY_REQUEST = 200 * 1024 * 1024
"""... and one without a memory request as 200 MiB."""
DEFAULT_MAX_PODS = 110

# Status codes (upstream's framework.Code values, in the same order).
SUCCESS = 0
ERROR = 1
UNSCHEDULABLE = 2
UNSCHEDULABLE_AND_UNRESOLVABLE = 3
WAIT = 4
SKIP = 5

# Cluster events that may make a rejected pod schedulable (plugins list the ones they care for).
EV_NODE_ADD = "Node/Add"
EV_NODE_UPDATE = "Node/Update"
EV_ASSIGNED_POD_ADD = "AssignedPod/Add"
EV_ASSIGNED_POD_UPDATE = "AssignedPod/Update"
EV_ASSIGNED_POD_DELETE = "AssignedPod/Delete"
EV_PVC = "PersistentVolumeClaim/*"
EV_PV = "PersistentVolume/*"
EV_STORAGE_CLASS = "StorageClass/*"
EV_SERVICE = "Service/*"
EV_NAMESPACE = "Namespace/*"


class Status:
    """The outcome of one plugin call: a code, the reasons users see, the plugin's name."""

    __slots__ = ("code", "plugin", "reasons")

    def __init__(self, code: int, *reasons: str, plugin: str = "") -> None:
        self.code = code
        self.reasons = reasons
        self.plugin = plugin

    @property
    def ok(self) -> bool:
        return self.code == SUCCESS

    @property
    def rejected(self) -> bool:
        return self.code in (UNSCHEDULABLE, UNSCHEDULABLE_AND_UNRESOLVABLE)

    @property
    def message(self) -> str:
        return ", ".join(self.reasons)

    def __repr__(self) -> str:
        return f"Status({self.code}, {self.reasons!r}, plugin={self.plugin!r})"


class CycleState(dict[str, Any]):
    """Per scheduling cycle data shared between a profile's plugins (keyed by plugin name)."""

    skip_filter: set[str]
    skip_score: set[str]

    def __init__(self) -> None:
        super().__init__()
        self.skip_filter = set()
        self.skip_score = set()

    def clone(self, plugins: Mapping[str, Any]) -> CycleState:
        """A copy for a what-if (preemption): plugins with ``copy_state`` copy their value."""
        other = CycleState()
        other.skip_filter = set(self.skip_filter)
        other.skip_score = set(self.skip_score)
        for key, value in self.items():
            plugin = plugins.get(key)
            copy_state = getattr(plugin, "copy_state", None)
            other[key] = copy_state(value) if copy_state is not None else value
        return other


# ---------------------------------------------------------------------------------------------
# Quantities and requests


def _whole(value: Any) -> int:
    return math.ceil(parse_quantity(value))


@dataclass(slots=True)
class Resources:
    """Requested or allocatable amounts: cpu in millicores, memory and storage in bytes."""

    milli_cpu: int = 0
    memory: int = 0
    ephemeral: int = 0
    scalars: dict[str, int] = field(default_factory=dict)

    def add(self, other: Resources) -> None:
        self.milli_cpu += other.milli_cpu
        self.memory += other.memory
        self.ephemeral += other.ephemeral
        for k, v in other.scalars.items():
            self.scalars[k] = self.scalars.get(k, 0) + v

    def set_max(self, other: Resources) -> None:
        self.milli_cpu = max(self.milli_cpu, other.milli_cpu)
        self.memory = max(self.memory, other.memory)
        self.ephemeral = max(self.ephemeral, other.ephemeral)
        for k, v in other.scalars.items():
            self.scalars[k] = max(self.scalars.get(k, 0), v)

    def copy(self) -> Resources:
        return Resources(self.milli_cpu, self.memory, self.ephemeral, dict(self.scalars))

    def get(self, name: str) -> int:
        if name == "cpu":
            return self.milli_cpu
        if name == "memory":
            return self.memory
        if name == "ephemeral-storage":
            return self.ephemeral
        return self.scalars.get(name, 0)


def resources_from(values: Mapping[str, Any] | None) -> Resources:
    res = Resources()
    for name, value in (values or {}).items():
        if name == "cpu":
            res.milli_cpu = _milli(value)
        elif name == "memory":
            res.memory = _whole(value)
        elif name == "ephemeral-storage":
            res.ephemeral = _whole(value)
        elif name == "pods":
            continue
        elif "/" in name or name.startswith("hugepages-"):
            res.scalars[name] = _whole(value)
    return res


def _container_requests(container: Mapping[str, Any], non_zero: bool) -> Resources:
    requests = (container.get("resources") or {}).get("requests") or {}
    res = resources_from(requests)
    if non_zero:
        if "cpu" not in requests:
            res.milli_cpu = DEFAULT_MILLI_CPU_REQUEST
        if "memory" not in requests:
            res.memory = DEFAULT_MEMORY_REQUEST
    return res


def pod_requests(spec: Mapping[str, Any], *, non_zero: bool = False) -> Resources:
    """What a pod asks for, as upstream's ``resource.PodRequests``: the sum of its containers
    and sidecars (restartable init containers), or the largest init container step if that is
    more, plus ``spec.overhead``. ``non_zero`` counts missing cpu/memory requests as the
    scoring defaults."""
    total = Resources()
    for c in spec.get("containers") or ():
        total.add(_container_requests(c, non_zero))
    sidecars = Resources()
    init_max = Resources()
    for c in spec.get("initContainers") or ():
        req = _container_requests(c, non_zero)
        if c.get("restartPolicy") == "Always":
            total.add(req)
            sidecars.add(req)
            step = sidecars.copy()
        else:
            step = req.copy()
            step.add(sidecars)
        init_max.set_max(step)
    total.set_max(init_max)
    overhead = spec.get("overhead")
    if overhead:
        total.add(resources_from(overhead))
    return total


# ---------------------------------------------------------------------------------------------
# Node selectors and taints


def _match_expression(expr: Mapping[str, Any], value: str | None) -> bool:
    op = expr.get("operator")
    values = expr.get("values") or ()
    if op == "In":
        return value is not None and value in values
    if op == "NotIn":
        return value is None or value not in values
    if op == "Exists":
        return value is not None
    if op == "DoesNotExist":
        return value is None
    if op in ("Gt", "Lt"):
        if value is None or len(values) != 1:
            return False
        try:
            actual, wanted = int(value), int(values[0])
        except ValueError:
            return False
        return actual > wanted if op == "Gt" else actual < wanted
    return False


def match_node_selector_term(term: Mapping[str, Any], labels: Mapping[str, str], name: str) -> bool:
    """One ``NodeSelectorTerm``: every expression and field must match; an empty term matches
    nothing (upstream's rule)."""
    exprs = term.get("matchExpressions") or ()
    fields_ = term.get("matchFields") or ()
    if not exprs and not fields_:
        return False
    for expr in exprs:
        if not _match_expression(expr, labels.get(expr.get("key", ""))):
            return False
    for expr in fields_:
        value = name if expr.get("key") == "metadata.name" else None
        if not _match_expression(expr, value):
            return False
    return True


def match_node_selector_terms(
    terms: list[Mapping[str, Any]], labels: Mapping[str, str], name: str
) -> bool:
    """``NodeSelector``: the terms are ORed."""
    return any(match_node_selector_term(t, labels, name) for t in terms)


def toleration_tolerates(tol: Mapping[str, Any], taint: Mapping[str, Any]) -> bool:
    effect = tol.get("effect") or ""
    if effect and effect != taint.get("effect"):
        return False
    key = tol.get("key") or ""
    if key and key != taint.get("key"):
        return False
    op = tol.get("operator") or "Equal"
    if op == "Exists":
        return True
    if op == "Equal":
        return (tol.get("value") or "") == (taint.get("value") or "")
    return False


def pod_tolerates_taint(tolerations: list[Mapping[str, Any]], taint: Mapping[str, Any]) -> bool:
    return any(toleration_tolerates(t, taint) for t in tolerations)


# ---------------------------------------------------------------------------------------------
# Pods


LabelLookups = tuple[tuple[str, str, str], ...]
"""``NodeInfo.by_label`` keys that together hold every pod a selector can match."""

_EQUALITY = (Operator.EQUALS, Operator.DOUBLE_EQUALS, Operator.IN)


def _narrowest_equality(selector: Selector) -> Requirement | None:
    """The selector's equality or ``in`` requirement with the fewest values (None: none)."""
    best: Requirement | None = None
    for r in selector.requirements:
        if r.operator in _EQUALITY and (best is None or len(r.values) < len(best.values)):
            best = r
    return best


def label_lookups(selector: Selector, namespaces: Iterable[str]) -> LabelLookups | None:
    """The ``by_label`` keys for the pods of ``namespaces`` that ``selector`` may match: the
    values of its equality or ``in`` requirement with the fewest values. None when it has no
    such requirement (every pod is a candidate). A pod has one value per key, so no pod is in
    two of the lists."""
    best = _narrowest_equality(selector)
    if best is None:
        return None
    return tuple((ns, best.key, v) for ns in namespaces for v in best.values)


def label_pairs(selector: Selector) -> tuple[tuple[str, str], ...] | None:
    """The (key, value) labels one of which a pod must have for ``selector`` to match it
    (``label_lookups`` without namespaces); None when no such list exists."""
    best = _narrowest_equality(selector)
    if best is None:
        return None
    return tuple((best.key, v) for v in best.values)


# Kinds of an existing pod's affinity terms in ``NodeInfo.affinity_terms``.
TERM_REQUIRED_AFFINITY = "required-affinity"
TERM_REQUIRED_ANTI_AFFINITY = "required-anti-affinity"
TERM_PREFERRED_AFFINITY = "preferred-affinity"
TERM_PREFERRED_ANTI_AFFINITY = "preferred-anti-affinity"

TermEntry = tuple["PodInfo", str, "AffinityTerm", int]
"""(the pod, the kind of term, the term, its weight: 0 for required terms)."""


@dataclass(frozen=True, slots=True)
class AffinityTerm:
    """A parsed ``PodAffinityTerm``: which pods (namespaces + selector) near which topology."""

    namespaces: frozenset[str]
    namespace_selector: Selector | None  # None: only ``namespaces``; empty Selector: all
    selector: Selector
    topology_key: str
    lookups: LabelLookups | None = None
    """Where the pods the term may match are on a node (None: any pod on it)."""
    pairs: tuple[tuple[str, str], ...] | None = None
    """``label_pairs`` of the selector: a pod the term matches has one of these labels."""

    def candidates(self, node: NodeInfo) -> Iterable[PodInfo]:
        """The pods on ``node`` this term may match (a superset; ``matches`` decides)."""
        return node.matching(self.lookups)

    def matches(self, pod: PodInfo, ns_labels: Callable[[str], Mapping[str, str]]) -> bool:
        if pod.namespace not in self.namespaces:
            if self.namespace_selector is None:
                return False
            if not self.namespace_selector.matches(ns_labels(pod.namespace)):
                return False
        return self.selector.matches(pod.labels)


@dataclass(frozen=True, slots=True)
class WeightedAffinityTerm:
    term: AffinityTerm
    weight: int


def _parse_term(term: Mapping[str, Any], pod: Mapping[str, Any], namespace: str) -> AffinityTerm:
    labels = (pod.get("metadata") or {}).get("labels") or {}
    selector_obj = term.get("labelSelector")
    try:
        selector = selector_from_label_selector(selector_obj)
    except SelectorError:
        selector = Selector.nothing()
    # matchLabelKeys / mismatchLabelKeys merge the incoming pod's label values in.
    extra = []
    for key in term.get("matchLabelKeys") or ():
        if key in labels:
            extra.append({"key": key, "operator": "In", "values": [labels[key]]})
    for key in term.get("mismatchLabelKeys") or ():
        if key in labels:
            extra.append({"key": key, "operator": "NotIn", "values": [labels[key]]})
    if extra and selector_obj is not None:
        merged = dict(selector_obj)
        merged["matchExpressions"] = [*(selector_obj.get("matchExpressions") or ()), *extra]
        try:
            selector = selector_from_label_selector(merged)
        except SelectorError:
            selector = Selector.nothing()
    namespaces = frozenset(term.get("namespaces") or ())
    ns_selector_obj = term.get("namespaceSelector")
    ns_selector: Selector | None = None
    if ns_selector_obj is not None:
        try:
            ns_selector = selector_from_label_selector(ns_selector_obj)
        except SelectorError:
            ns_selector = None
    if not namespaces and ns_selector is None:
        namespaces = frozenset((namespace,))
    return AffinityTerm(
        namespaces,
        ns_selector,
        selector,
        term.get("topologyKey") or "",
        # a namespace selector may match any namespace: no lookup then
        label_lookups(selector, sorted(namespaces)) if ns_selector is None else None,
        label_pairs(selector),
    )


class PodInfo:
    """A pod parsed once for scheduling. ``pod`` is the API object (never mutated)."""

    __slots__ = (
        "affinity",
        "annotations",
        "host_ports",
        "images",
        "key",
        "labels",
        "name",
        "namespace",
        "node_name",
        "non_zero",
        "pod",
        "preferred_affinity",
        "preferred_anti_affinity",
        "priority",
        "request",
        "required_affinity",
        "required_anti_affinity",
        "scheduler_name",
        "terminating",
        "tolerations",
        "uid",
    )

    def __init__(self, pod: dict[str, Any], priority: int | None = None) -> None:
        meta = pod.get("metadata") or {}
        spec = pod.get("spec") or {}
        self.pod = pod
        self.name: str = meta.get("name", "")
        self.namespace: str = meta.get("namespace", "")
        self.key = f"{self.namespace}/{self.name}"
        self.uid: str = meta.get("uid") or self.key
        self.labels: dict[str, str] = meta.get("labels") or {}
        self.annotations: dict[str, str] = meta.get("annotations") or {}
        self.terminating = bool(meta.get("deletionTimestamp"))
        self.node_name: str = spec.get("nodeName") or ""
        self.scheduler_name: str = spec.get("schedulerName") or "default-scheduler"
        self.priority = int(spec.get("priority") or 0) if priority is None else priority
        self.request = pod_requests(spec)
        self.non_zero = pod_requests(spec, non_zero=True)
        self.tolerations: list[dict[str, Any]] = spec.get("tolerations") or []
        ports = []
        for c in (*(spec.get("initContainers") or ()), *(spec.get("containers") or ())):
            for p in c.get("ports") or ():
                host_port = p.get("hostPort") or 0
                if host_port > 0:
                    ports.append(
                        (p.get("protocol") or "TCP", host_port, p.get("hostIP") or "0.0.0.0")
                    )
        self.host_ports: tuple[tuple[str, int, str], ...] = tuple(ports)
        self.images: tuple[str, ...] = tuple(
            c.get("image") or ""
            for c in (*(spec.get("initContainers") or ()), *(spec.get("containers") or ()))
        )
        self.affinity: dict[str, Any] = spec.get("affinity") or {}
        pa = self.affinity.get("podAffinity") or {}
        paa = self.affinity.get("podAntiAffinity") or {}
        ns = self.namespace
        self.required_affinity = tuple(
            _parse_term(t, pod, ns)
            for t in pa.get("requiredDuringSchedulingIgnoredDuringExecution") or ()
        )
        self.required_anti_affinity = tuple(
            _parse_term(t, pod, ns)
            for t in paa.get("requiredDuringSchedulingIgnoredDuringExecution") or ()
        )
        self.preferred_affinity = tuple(
            WeightedAffinityTerm(
                _parse_term(w.get("podAffinityTerm") or {}, pod, ns), int(w.get("weight") or 0)
            )
            for w in pa.get("preferredDuringSchedulingIgnoredDuringExecution") or ()
        )
        self.preferred_anti_affinity = tuple(
            WeightedAffinityTerm(
                _parse_term(w.get("podAffinityTerm") or {}, pod, ns), int(w.get("weight") or 0)
            )
            for w in paa.get("preferredDuringSchedulingIgnoredDuringExecution") or ()
        )

    @property
    def spec(self) -> dict[str, Any]:
        return self.pod.get("spec") or {}

    @property
    def has_affinity(self) -> bool:
        return bool(
            self.required_affinity
            or self.required_anti_affinity
            or self.preferred_affinity
            or self.preferred_anti_affinity
        )

    def with_node(self, node_name: str) -> PodInfo:
        """A copy assigned to ``node_name`` (the assumed pod of a binding in flight)."""
        clone = PodInfo.__new__(PodInfo)
        for slot in PodInfo.__slots__:
            setattr(clone, slot, getattr(self, slot))
        clone.node_name = node_name
        return clone

    def with_pod(self, pod: dict[str, Any]) -> PodInfo:
        """A copy carrying a newer version of the same pod whose spec did not change except
        ``nodeName`` (the bound pod confirming an assumed one): no re-parsing."""
        clone = self.with_node((pod.get("spec") or {}).get("nodeName") or "")
        clone.pod = pod
        meta = pod.get("metadata") or {}
        clone.labels = meta.get("labels") or {}
        clone.annotations = meta.get("annotations") or {}
        clone.terminating = bool(meta.get("deletionTimestamp"))
        return clone

    def __repr__(self) -> str:
        return f"PodInfo({self.key})"


# ---------------------------------------------------------------------------------------------
# Nodes


class NodeInfo:
    """One node and what the pods on it use, kept incrementally by the cache.

    ``node`` is None for a placeholder (pods seen before their node). Plugins read the flat
    attributes; only the cache calls ``add_pod``/``remove_pod``/``set_node``.
    """

    __slots__ = (
        "a_cpu",
        "a_mem",
        "affinity_terms",
        "alloc",
        "alloc_pods",
        "by_label",
        "generation",
        "image_sizes",
        "labels",
        "memo",
        "name",
        "node",
        "nominated",
        "non_zero",
        "pods",
        "pods_with_affinity",
        "pods_with_required_anti_affinity",
        "r_cpu",
        "r_mem",
        "requested",
        "taints",
        "unschedulable",
        "used_ports",
        "z_cpu",
        "z_mem",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.node: dict[str, Any] | None = None
        self.labels: dict[str, str] = {}
        self.taints: list[dict[str, Any]] = []
        self.unschedulable = False
        self.alloc = Resources()
        self.alloc_pods = 0
        self.requested = Resources()
        self.non_zero = Resources()
        self.pods: dict[str, PodInfo] = {}
        self.by_label: dict[tuple[str, str, str], list[PodInfo]] = {}
        """The pods by (namespace, label key, label value): a selector with an equality
        requirement counts its matches from one list instead of every pod on the node."""
        self.pods_with_affinity: dict[str, PodInfo] = {}
        self.pods_with_required_anti_affinity: dict[str, PodInfo] = {}
        self.affinity_terms: dict[tuple[str, str] | None, list[TermEntry]] = {}
        """The affinity terms of the pods on this node by a label a pod must have for the
        term to match it (``AffinityTerm.pairs``; None: terms without such a label), so an
        incoming pod meets only the terms that may match it."""
        self.used_ports: dict[tuple[str, int], list[str]] = {}
        self.image_sizes: dict[str, int] = {}
        self.nominated: dict[str, PodInfo] = {}
        self.generation = 0
        self.memo: dict[tuple[Any, ...], tuple[int, int]] = {}
        """Score plugins' per-node memo: key -> (generation, score); a score computed from
        this node's state and the pod's requests alone is reused while ``generation`` holds."""
        # Flat copies of the hottest numbers (allocatable, requested, non-zero requested cpu
        # in millicores and memory in bytes): plugins' per-node loops read these.
        self.a_cpu = self.a_mem = 0
        self.r_cpu = self.r_mem = 0
        self.z_cpu = self.z_mem = 0

    def _sync_flat(self) -> None:
        self.a_cpu = self.alloc.milli_cpu
        self.a_mem = self.alloc.memory
        self.r_cpu = self.requested.milli_cpu
        self.r_mem = self.requested.memory
        self.z_cpu = self.non_zero.milli_cpu
        self.z_mem = self.non_zero.memory

    def set_node(self, node: dict[str, Any]) -> None:
        meta = node.get("metadata") or {}
        spec = node.get("spec") or {}
        status = node.get("status") or {}
        self.node = node
        self.labels = meta.get("labels") or {}
        self.taints = [t for t in spec.get("taints") or () if t.get("effect")]
        self.unschedulable = bool(spec.get("unschedulable"))
        allocatable = status.get("allocatable") or status.get("capacity") or {}
        self.alloc = resources_from(allocatable)
        pods = allocatable.get("pods")
        self.alloc_pods = _whole(pods) if pods is not None else DEFAULT_MAX_PODS
        sizes: dict[str, int] = {}
        for image in status.get("images") or ():
            size = int(image.get("sizeBytes") or 0)
            for name in image.get("names") or ():
                sizes[normalized_image_name(name)] = size
        self.image_sizes = sizes
        self.generation += 1
        self._sync_flat()

    def add_pod(self, pi: PodInfo) -> None:
        self.pods[pi.uid] = pi
        by_label = self.by_label
        ns = pi.namespace
        for k, v in pi.labels.items():
            same = by_label.get((ns, k, v))
            if same is None:
                by_label[(ns, k, v)] = [pi]
            else:
                same.append(pi)
        r = self.requested
        q = pi.request
        r.milli_cpu += q.milli_cpu
        r.memory += q.memory
        r.ephemeral += q.ephemeral
        if q.scalars:
            for k, v in q.scalars.items():
                r.scalars[k] = r.scalars.get(k, 0) + v
        self.non_zero.milli_cpu += pi.non_zero.milli_cpu
        self.non_zero.memory += pi.non_zero.memory
        if pi.has_affinity:
            self.pods_with_affinity[pi.uid] = pi
            if pi.required_anti_affinity:
                self.pods_with_required_anti_affinity[pi.uid] = pi
            terms = self.affinity_terms
            for entry in _term_entries(pi):
                for pair in entry[2].pairs or (None,):
                    terms.setdefault(pair, []).append(entry)
        for protocol, port, ip in pi.host_ports:
            self.used_ports.setdefault((protocol, port), []).append(ip)
        self.generation += 1
        self._sync_flat()

    def remove_pod(self, pi: PodInfo) -> bool:
        stored = self.pods.pop(pi.uid, None)
        if stored is None:
            return False
        pi = stored
        by_label = self.by_label
        ns = pi.namespace
        for k, v in pi.labels.items():
            same = by_label.get((ns, k, v))
            if same is not None:
                for i, other in enumerate(same):
                    if other is pi:
                        del same[i]
                        break
                if not same:
                    del by_label[(ns, k, v)]
        r = self.requested
        q = pi.request
        r.milli_cpu -= q.milli_cpu
        r.memory -= q.memory
        r.ephemeral -= q.ephemeral
        for k, v in q.scalars.items():
            r.scalars[k] = r.scalars.get(k, 0) - v
        self.non_zero.milli_cpu -= pi.non_zero.milli_cpu
        self.non_zero.memory -= pi.non_zero.memory
        self.pods_with_affinity.pop(pi.uid, None)
        self.pods_with_required_anti_affinity.pop(pi.uid, None)
        if pi.has_affinity:
            terms = self.affinity_terms
            for entry in _term_entries(pi):
                for pair in entry[2].pairs or (None,):
                    kept = [e for e in terms.get(pair, ()) if e[0] is not pi]
                    if kept:
                        terms[pair] = kept
                    else:
                        terms.pop(pair, None)
        for protocol, port, ip in pi.host_ports:
            ips = self.used_ports.get((protocol, port))
            if ips and ip in ips:
                ips.remove(ip)
                if not ips:
                    del self.used_ports[(protocol, port)]
        self.generation += 1
        self._sync_flat()
        return True

    def matching(self, lookups: LabelLookups | None) -> Iterable[PodInfo]:
        """The pods on this node under ``lookups`` (``label_lookups``); all of them for None."""
        if lookups is None:
            return self.pods.values()
        by_label = self.by_label
        if len(lookups) == 1:
            return by_label.get(lookups[0], ())
        return [p for key in lookups for p in by_label.get(key, ())]

    def affinity_terms_for(self, labels: Mapping[str, str]) -> list[TermEntry]:
        """The terms of pods on this node that may match a pod with ``labels`` (a superset:
        ``AffinityTerm.matches`` decides)."""
        terms = self.affinity_terms
        out = list(terms.get(None, ()))
        for pair in labels.items():
            got = terms.get(pair)
            if got:
                out.extend(got)
        return out

    def clone(self) -> NodeInfo:
        """A copy whose pod set and sums may be changed (preemption's what-if)."""
        other = NodeInfo(self.name)
        other.node = self.node
        other.labels = self.labels
        other.taints = self.taints
        other.unschedulable = self.unschedulable
        other.alloc = self.alloc
        other.alloc_pods = self.alloc_pods
        other.requested = self.requested.copy()
        other.non_zero = self.non_zero.copy()
        other.pods = dict(self.pods)
        other.by_label = {k: list(v) for k, v in self.by_label.items()}
        other.pods_with_affinity = dict(self.pods_with_affinity)
        other.pods_with_required_anti_affinity = dict(self.pods_with_required_anti_affinity)
        other.affinity_terms = {k: list(v) for k, v in self.affinity_terms.items()}
        other.used_ports = {k: list(v) for k, v in self.used_ports.items()}
        other.image_sizes = self.image_sizes
        other.nominated = dict(self.nominated)
        other.generation = self.generation
        other._sync_flat()
        return other

    def __repr__(self) -> str:
        return f"NodeInfo({self.name}, pods={len(self.pods)})"


def _term_entries(pi: PodInfo) -> list[TermEntry]:
    return [
        *((pi, TERM_REQUIRED_AFFINITY, t, 0) for t in pi.required_affinity),
        *((pi, TERM_REQUIRED_ANTI_AFFINITY, t, 0) for t in pi.required_anti_affinity),
        *((pi, TERM_PREFERRED_AFFINITY, w.term, w.weight) for w in pi.preferred_affinity),
        *((pi, TERM_PREFERRED_ANTI_AFFINITY, w.term, w.weight) for w in pi.preferred_anti_affinity),
    ]


def normalized_image_name(name: str) -> str:
    """Image names without a tag or digest mean ``:latest`` (as the kubelet reports them)."""
    if name.rfind(":") <= name.rfind("/"):
        return name + ":latest"
    return name


def default_normalize_score(scores: list[int], *, reverse: bool) -> None:
    """Scale scores to 0..100 by the highest one; ``reverse`` flips them (upstream's helper)."""
    top = max(scores, default=0)
    if top == 0:
        if reverse:
            scores[:] = [MAX_NODE_SCORE] * len(scores)
        return
    for i, s in enumerate(scores):
        s = MAX_NODE_SCORE * s // top
        scores[i] = MAX_NODE_SCORE - s if reverse else s


# ---------------------------------------------------------------------------------------------
# Plugins and the profile that runs them


class Handle:
    """What plugins may reach: the cache, listers of other kinds, the API client, the
    profile's own framework (preemption re-runs filters). Set up by the scheduler."""

    def __init__(
        self,
        cache: SchedulerCache,
        listers: Mapping[str, Callable[[], list[dict[str, Any]]]],
        getters: Mapping[str, Callable[[str], dict[str, Any] | None]],
        client: Any = None,
    ) -> None:
        self.cache = cache
        self.listers = listers
        self.getters = getters
        self.client = client
        self.framework: Framework | None = None
        self.nominate: Callable[[PodInfo, str], None] | None = None
        self.evict: Callable[[PodInfo, PodInfo, str], None] | None = None

    def namespace_labels(self, namespace: str) -> Mapping[str, str]:
        get = self.getters.get("namespaces")
        ns = get(namespace) if get else None
        return ((ns or {}).get("metadata") or {}).get("labels") or {}

    def list(self, kind: str) -> list[dict[str, Any]]:
        lister = self.listers.get(kind)
        return lister() if lister else []

    def get(self, kind: str, key: str) -> dict[str, Any] | None:
        getter = self.getters.get(kind)
        return getter(key) if getter else None


class Plugin:
    """Base of every plugin. Subclasses set ``name`` and implement the methods of their
    extension points (a method present means the point is implemented):

    ``pre_enqueue(pod) -> Status|None``; ``sort_key(queued) -> tuple`` (QueueSort);
    ``pre_filter(state, pod) -> Status|None`` (SKIP skips its Filter);
    ``filter(state, pod, nodes, failed) -> nodes that pass``;
    ``post_filter(state, pod, failed) -> (nominated node or None, Status)``;
    ``pre_score(state, pod, nodes) -> Status|None`` (SKIP skips its Score);
    ``score(state, pod, nodes) -> list[int]``; ``normalize_score(state, pod, nodes, scores)``
    (always called after ``score``; the base class's leaves 0..100 scores alone);
    ``reserve``/``unreserve(state, pod, node_name)``; ``permit(state, pod, node_name) ->
    (Status|None, timeout_s)``; ``async pre_bind``, ``async bind`` (SKIP: next binder),
    ``post_bind(state, pod, node_name)``.

    ``events`` are the cluster events that may make a pod this plugin rejected schedulable.
    ``args_keys`` are the accepted ``pluginConfig`` args (validated at configuration time).
    """

    name: ClassVar[str] = ""
    events: ClassVar[frozenset[str]] = frozenset()
    args_keys: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, args: Mapping[str, Any], handle: Handle) -> None:
        self.args = args
        self.handle = handle

    def normalize_score(
        self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo], scores: list[int]
    ) -> None:
        """NormalizeScore: rescale this plugin's raw ``score`` list in place to 0..100. The
        framework calls it for every Score plugin before weighting; raw scores that are counts
        or weight sums (taints, affinity terms, skew) override it. Already 0..100: no-op."""


POINTS = (
    "pre_enqueue",
    "queue_sort",
    "pre_filter",
    "filter",
    "post_filter",
    "pre_score",
    "score",
    "reserve",
    "permit",
    "pre_bind",
    "bind",
    "post_bind",
)
"""Extension points in configuration order (``queue_sort`` is implemented by ``sort_key``)."""


def implements(plugin_cls: type[Plugin], point: str) -> bool:
    method = "sort_key" if point == "queue_sort" else point
    return callable(getattr(plugin_cls, method, None))


@dataclass
class Framework:
    """One profile: its scheduler name and the plugin instances per extension point."""

    scheduler_name: str
    plugins: dict[str, Plugin]
    points: dict[str, list[Plugin]]
    score_weights: dict[str, int]
    percentage_of_nodes_to_score: int | None
    handle: Handle

    # -- scheduling cycle --------------------------------------------------------------------

    def run_pre_enqueue(self, pod: PodInfo) -> Status | None:
        for pl in self.points["pre_enqueue"]:
            st = pl.pre_enqueue(pod)  # type: ignore[attr-defined]
            if st is not None and not st.ok:
                st.plugin = pl.name
                return st
        return None

    def run_pre_filter(self, state: CycleState, pod: PodInfo) -> Status | None:
        for pl in self.points["pre_filter"]:
            st = pl.pre_filter(state, pod)  # type: ignore[attr-defined]
            if st is None or st.ok:
                continue
            if st.code == SKIP:
                state.skip_filter.add(pl.name)
                continue
            st.plugin = pl.name
            return st
        return None

    def run_filter(
        self,
        state: CycleState,
        pod: PodInfo,
        nodes: list[NodeInfo],
        failed: dict[str, Status],
    ) -> list[NodeInfo]:
        skip = state.skip_filter
        for pl in self.points["filter"]:
            if pl.name in skip:
                continue
            nodes = pl.filter(state, pod, nodes, failed)  # type: ignore[attr-defined]
            if not nodes:
                break
        return nodes

    def run_update_pre_filter(
        self, state: CycleState, pod: PodInfo, other: PodInfo, node: NodeInfo, delta: int
    ) -> None:
        """PreFilterExtensions: ``other`` was added to (+1) or removed from (-1) ``node`` in a
        what-if; plugins whose PreFilter state counts cluster-wide pods update it."""
        for pl in self.points["pre_filter"]:
            update = getattr(pl, "update_pre_filter", None)
            if update is not None and pl.name not in state.skip_filter and pl.name in state:
                update(state, pod, other, node, delta)

    def run_post_filter(
        self, state: CycleState, pod: PodInfo, failed: dict[str, Status]
    ) -> tuple[str | None, Status | None]:
        last: Status | None = None
        for pl in self.points["post_filter"]:
            nominated, st = pl.post_filter(state, pod, failed)  # type: ignore[attr-defined]
            if st is not None and st.ok:
                return nominated, st
            last = st
        return None, last

    def run_score(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]) -> list[int]:
        skip = state.skip_score
        for pl in self.points["pre_score"]:
            st = pl.pre_score(state, pod, nodes)  # type: ignore[attr-defined]
            if st is not None and st.code == SKIP:
                skip.add(pl.name)
        totals: list[int] | None = None
        for pl in self.points["score"]:
            if pl.name in skip:
                continue
            scores = pl.score(state, pod, nodes)  # type: ignore[attr-defined]
            pl.normalize_score(state, pod, nodes, scores)
            weight = self.score_weights.get(pl.name, 1)
            if weight != 1:
                scores = [b * weight for b in scores]
            if totals is None:
                totals = scores
            else:
                totals = [a + b for a, b in zip(totals, scores, strict=True)]
        return totals if totals is not None else [0] * len(nodes)

    def run_reserve(self, state: CycleState, pod: PodInfo, node_name: str) -> Status | None:
        for pl in self.points["reserve"]:
            st = pl.reserve(state, pod, node_name)  # type: ignore[attr-defined]
            if st is not None and not st.ok:
                st.plugin = pl.name
                return st
        return None

    def run_unreserve(self, state: CycleState, pod: PodInfo, node_name: str) -> None:
        for pl in reversed(self.points["reserve"]):
            unreserve = getattr(pl, "unreserve", None)
            if unreserve is not None:
                unreserve(state, pod, node_name)

    def run_permit(
        self, state: CycleState, pod: PodInfo, node_name: str
    ) -> tuple[Status | None, float]:
        """Success (None), a rejection, or WAIT with the longest timeout asked for."""
        wait_s = 0.0
        for pl in self.points["permit"]:
            st, timeout_s = pl.permit(state, pod, node_name)  # type: ignore[attr-defined]
            if st is None or st.ok:
                continue
            st.plugin = pl.name
            if st.code == WAIT:
                wait_s = max(wait_s, timeout_s)
                continue
            return st, 0.0
        if wait_s > 0:
            return Status(WAIT), wait_s
        return None, 0.0

    # -- binding cycle -----------------------------------------------------------------------

    async def run_pre_bind(self, state: CycleState, pod: PodInfo, node_name: str) -> Status | None:
        for pl in self.points["pre_bind"]:
            st = await pl.pre_bind(state, pod, node_name)  # type: ignore[attr-defined]
            if st is not None and not st.ok:
                st.plugin = pl.name
                return st
        return None

    async def run_bind(self, state: CycleState, pod: PodInfo, node_name: str) -> Status | None:
        for pl in self.points["bind"]:
            st = await pl.bind(state, pod, node_name)  # type: ignore[attr-defined]
            if st is not None and st.code == SKIP:
                continue
            if st is not None and not st.ok:
                st.plugin = pl.name
            return st
        return Status(ERROR, "no bind plugin bound the pod")

    def run_post_bind(self, state: CycleState, pod: PodInfo, node_name: str) -> None:
        for pl in self.points["post_bind"]:
            pl.post_bind(state, pod, node_name)  # type: ignore[attr-defined]

    def sort_key(self) -> Callable[[Any], Any]:
        return self.points["queue_sort"][0].sort_key  # type: ignore[attr-defined,no-any-return]

    def has(self, point: str) -> bool:
        return bool(self.points.get(point))
