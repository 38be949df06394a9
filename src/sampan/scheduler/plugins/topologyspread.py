"""PodTopologySpread: spread matching pods across topology domains, as upstream's plugin.

Constraints come from ``spec.topologySpreadConstraints`` (``labelSelector`` plus
``matchLabelKeys``); a pod without any gets the profile's default constraints -- by default
the system ones (hostname maxSkew 3, zone maxSkew 5, both ScheduleAnyway) -- with a selector
built from the Services, ReplicationController, ReplicaSet or StatefulSet that select it (no
such owner or service: no default constraints).

* Filter (``DoNotSchedule``): for a node with value ``v`` of the topology key,
  ``count(v) + self_match - min_count <= maxSkew``, where counts cover the nodes that have
  every constraint key and pass the inclusion policies (nodeAffinityPolicy Honor,
  nodeTaintsPolicy Ignore by default) and ``min_count`` is 0 while fewer than ``minDomains``
  domains exist. A node without the key is unresolvable ("... (missing required label)").
* Score (``ScheduleAnyway``): ``sum(count * log(domains + 2) + maxSkew - 1)`` per node, then
  ``100 * (max + min - s) // max`` (fewer matching pods is better); nodes missing a key are
  ignored (score 0).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sampan.api.labels import Selector, SelectorError, selector_from_label_selector
from sampan.scheduler.framework import (
    EV_ASSIGNED_POD_ADD,
    EV_ASSIGNED_POD_DELETE,
    EV_ASSIGNED_POD_UPDATE,
    EV_NODE_ADD,
    EV_NODE_UPDATE,
    MAX_NODE_SCORE,
    SKIP,
    UNSCHEDULABLE,
    UNSCHEDULABLE_AND_UNRESOLVABLE,
    CycleState,
    Handle,
    LabelLookups,
    NodeInfo,
    Plugin,
    PodInfo,
    Status,
    label_lookups,
    pod_tolerates_taint,
)
from sampan.scheduler.plugins.nodeaffinity import pod_matches_node_affinity

__all__ = ["SYSTEM_DEFAULT_CONSTRAINTS", "Constraint", "PodTopologySpread"]

HOSTNAME_KEY = "kubernetes.io/hostname"
ZONE_KEY = "topology.kubernetes.io/zone"
SYSTEM_DEFAULT_CONSTRAINTS = (
    {"maxSkew": 3, "topologyKey": HOSTNAME_KEY, "whenUnsatisfiable": "ScheduleAnyway"},
    {"maxSkew": 5, "topologyKey": ZONE_KEY, "whenUnsatisfiable": "ScheduleAnyway"},
)
ERR_CONSTRAINTS = "node(s) didn't match pod topology spread constraints"
ERR_MISSING_LABEL = "node(s) didn't match pod topology spread constraints (missing required label)"


@dataclass(frozen=True, slots=True)
class Constraint:
    max_skew: int
    topology_key: str
    hard: bool
    selector: Selector
    min_domains: int
    honor_affinity: bool
    honor_taints: bool
    lookups: LabelLookups | None
    """Where on a node the pods the selector may match are, in the pod's namespace
    (``label_lookups``; None: every pod on the node is a candidate)."""
    everywhere: bool
    """No node is left out by the inclusion policies for this pod (so ``includes`` is
    always True)."""

    def includes(self, pod: PodInfo, node: NodeInfo) -> bool:
        if self.everywhere:
            return True
        if self.honor_affinity and not pod_matches_node_affinity(pod, node):
            return False
        if self.honor_taints:
            for taint in node.taints:
                if taint.get("effect") in ("NoSchedule", "NoExecute") and not pod_tolerates_taint(
                    pod.tolerations, taint
                ):
                    return False
        return True

    def count(self, node: NodeInfo, namespace: str) -> int:
        """Pods on ``node`` in ``namespace``, not terminating, that the selector matches."""
        selector = self.selector
        if selector.match_nothing:
            return 0
        n = 0
        for p in node.matching(self.lookups):
            if p.namespace == namespace and not p.terminating and selector.matches(p.labels):
                n += 1
        return n


def _constraint(raw: Mapping[str, Any], selector: Selector, pod: PodInfo) -> Constraint:
    honor_affinity = (raw.get("nodeAffinityPolicy") or "Honor") == "Honor"
    honor_taints = (raw.get("nodeTaintsPolicy") or "Ignore") == "Honor"
    # what pod_matches_node_affinity reads (an empty required affinity matches no node)
    constrained = bool(pod.spec.get("nodeSelector")) or (
        (pod.affinity.get("nodeAffinity") or {}).get(
            "requiredDuringSchedulingIgnoredDuringExecution"
        )
        is not None
    )
    return Constraint(
        max_skew=int(raw.get("maxSkew") or 1),
        topology_key=raw.get("topologyKey") or "",
        hard=(raw.get("whenUnsatisfiable") or "DoNotSchedule") == "DoNotSchedule",
        selector=selector,
        min_domains=int(raw.get("minDomains") or 1),
        honor_affinity=honor_affinity,
        honor_taints=honor_taints,
        lookups=label_lookups(selector, (pod.namespace,)),
        everywhere=not honor_taints and not (honor_affinity and constrained),
    )


class PodTopologySpread(Plugin):
    name = "PodTopologySpread"
    events = frozenset(
        {
            EV_NODE_ADD,
            EV_NODE_UPDATE,
            EV_ASSIGNED_POD_ADD,
            EV_ASSIGNED_POD_UPDATE,
            EV_ASSIGNED_POD_DELETE,
        }
    )
    args_keys = frozenset({"defaultConstraints", "defaultingType"})

    def __init__(self, args: Mapping[str, Any], handle: Handle) -> None:
        super().__init__(args, handle)
        self.defaulting_type = args.get("defaultingType") or "System"
        if self.defaulting_type == "System":
            self.default_constraints: tuple[Mapping[str, Any], ...] = SYSTEM_DEFAULT_CONSTRAINTS
        else:
            self.default_constraints = tuple(args.get("defaultConstraints") or ())

    # -- which constraints apply -------------------------------------------------------------

    def _pod_constraints(self, pod: PodInfo) -> tuple[list[Constraint], bool]:
        """(constraints, from the pod itself?)"""
        raw = pod.spec.get("topologySpreadConstraints") or ()
        if raw:
            out = []
            for c in raw:
                sel_obj = c.get("labelSelector")
                keys = [k for k in c.get("matchLabelKeys") or () if k in pod.labels]
                if keys and sel_obj is not None:
                    sel_obj = dict(sel_obj)
                    sel_obj["matchExpressions"] = [
                        *(sel_obj.get("matchExpressions") or ()),
                        *({"key": k, "operator": "In", "values": [pod.labels[k]]} for k in keys),
                    ]
                try:
                    selector = selector_from_label_selector(sel_obj)
                except SelectorError:
                    selector = Selector.nothing()
                out.append(_constraint(c, selector, pod))
            return out, True
        if not self.default_constraints:
            return [], False
        selector = self._default_selector(pod)
        if selector is None:
            return [], False
        return [_constraint(c, selector, pod) for c in self.default_constraints], False

    def _default_selector(self, pod: PodInfo) -> Selector | None:
        match_labels: dict[str, str] = {}
        expressions: list[Any] = []
        for svc in self.handle.list("services"):
            meta = svc.get("metadata") or {}
            sel = (svc.get("spec") or {}).get("selector") or {}
            if meta.get("namespace") != pod.namespace or not sel:
                continue
            if all(pod.labels.get(k) == v for k, v in sel.items()):
                match_labels.update(sel)
        owner = next(
            (
                o
                for o in (pod.pod.get("metadata") or {}).get("ownerReferences") or ()
                if o.get("controller")
            ),
            None,
        )
        if owner is not None:
            kind = owner.get("kind")
            kinds = {
                "ReplicationController": "replicationcontrollers",
                "ReplicaSet": "replicasets",
                "StatefulSet": "statefulsets",
            }
            lister = kinds.get(kind or "")
            obj = (
                self.handle.get(lister, f"{pod.namespace}/{owner.get('name')}") if lister else None
            )
            if obj is not None:
                sel = (obj.get("spec") or {}).get("selector") or {}
                if kind == "ReplicationController":
                    match_labels.update(sel)
                else:
                    match_labels.update(sel.get("matchLabels") or {})
                    expressions.extend(sel.get("matchExpressions") or ())
        if not match_labels and not expressions:
            return None
        try:
            return selector_from_label_selector(
                {"matchLabels": match_labels, "matchExpressions": expressions}
            )
        except SelectorError:
            return None

    # -- filter ------------------------------------------------------------------------------

    def pre_filter(self, state: CycleState, pod: PodInfo) -> Status | None:
        constraints, _ = self._pod_constraints(pod)
        hard = [c for c in constraints if c.hard]
        if not hard:
            return Status(SKIP)
        counts: list[dict[str, int]] = [{} for _ in hard]
        keys = [c.topology_key for c in hard]
        cache = self.handle.cache
        # Every domain counts (a domain without matching pods is the minimum) ...
        for node in cache.node_list:
            labels = node.labels
            if not all(k in labels for k in keys):
                continue
            for i, c in enumerate(hard):
                if c.includes(pod, node):
                    counts[i].setdefault(labels[c.topology_key], 0)
        # ... but only the nodes that may hold a matching pod add to its count.
        for i, c in enumerate(hard):
            hot = cache.nodes_with(c.lookups)
            for node in cache.node_list if hot is None else hot:
                labels = node.labels
                if not all(k in labels for k in keys) or not c.includes(pod, node):
                    continue
                counts[i][labels[c.topology_key]] += c.count(node, pod.namespace)
        state[self.name] = (hard, counts)
        return None

    @staticmethod
    def copy_state(value: Any) -> Any:
        hard, counts = value
        return hard, [dict(c) for c in counts]

    def update_pre_filter(
        self, state: CycleState, pod: PodInfo, other: PodInfo, node: NodeInfo, delta: int
    ) -> None:
        hard, counts = state[self.name]
        if other.namespace != pod.namespace or other.terminating:
            return
        if not all(c.topology_key in node.labels for c in hard):
            return
        for i, c in enumerate(hard):
            if c.includes(pod, node) and c.selector.matches(other.labels):
                value = node.labels[c.topology_key]
                counts[i][value] = counts[i].get(value, 0) + delta

    def filter(
        self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo], failed: dict[str, Status]
    ) -> list[NodeInfo]:
        hard, counts = state[self.name]
        mins = []
        for i, c in enumerate(hard):
            values = counts[i]
            low = min(values.values()) if values else 0
            if len(values) < c.min_domains:
                low = 0
            mins.append(low)
        self_match = [1 if c.selector.matches(pod.labels) else 0 for c in hard]
        out = []
        for n in nodes:
            status = None
            for i, c in enumerate(hard):
                value = n.labels.get(c.topology_key)
                if value is None:
                    status = Status(
                        UNSCHEDULABLE_AND_UNRESOLVABLE, ERR_MISSING_LABEL, plugin=self.name
                    )
                    break
                skew = counts[i].get(value, 0) + self_match[i] - mins[i]
                if skew > c.max_skew:
                    status = Status(UNSCHEDULABLE, ERR_CONSTRAINTS, plugin=self.name)
                    break
            if status is None:
                out.append(n)
            else:
                failed[n.name] = status
        return out

    # -- score -------------------------------------------------------------------------------

    def pre_score(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]) -> Status | None:
        constraints, from_pod = self._pod_constraints(pod)
        soft = [c for c in constraints if not c.hard]
        if not soft:
            return Status(SKIP)
        require_all = from_pod or self.defaulting_type != "System"
        keys = [c.topology_key for c in soft]
        ignored: set[str] = set()
        counts: list[dict[str, int]] = [{} for _ in soft]
        ns = pod.namespace
        cache = self.handle.cache
        key_nodes = cache.key_nodes
        # A key no node has makes no domain: nothing to list or count for it (and unless every
        # key is required, no node to leave out either).
        domains = [
            i
            for i, c in enumerate(soft)
            if c.topology_key != HOSTNAME_KEY and key_nodes.get(c.topology_key)
        ]
        if require_all or domains:
            for n in nodes:
                labels = n.labels
                if require_all and not all(k in labels for k in keys):
                    ignored.add(n.name)
                    continue
                for i in domains:
                    value = labels.get(soft[i].topology_key)
                    if value is not None:
                        counts[i].setdefault(value, 0)
        weights = []
        for i, c in enumerate(soft):
            size = len(nodes) - len(ignored) if c.topology_key == HOSTNAME_KEY else len(counts[i])
            weights.append(math.log(size + 2))
        # Per-node counts for hostname constraints, from the nodes holding candidates alone
        # (None: the selector names no label to look up, so ``score`` counts on each node).
        host_counts: list[dict[str, int] | None] = [None] * len(soft)
        for i, c in enumerate(soft):
            if c.topology_key != HOSTNAME_KEY:
                continue
            hot = cache.nodes_with(c.lookups)
            if hot is None:
                continue
            per_node: dict[str, int] = {}
            for node in hot:
                n = c.count(node, ns)
                if n:
                    per_node[node.name] = n
            host_counts[i] = per_node
        # Cluster-wide counts only for the keys some scored node has (none: skip the walk),
        # over the nodes that may hold a matching pod.
        for i in domains:
            c = soft[i]
            values = counts[i]
            if not values:
                continue
            key = c.topology_key
            hot = cache.nodes_with(c.lookups)
            for node in cache.node_list if hot is None else hot:
                labels = node.labels
                if require_all and not all(k in labels for k in keys):
                    continue
                value = labels.get(key)
                if value is None or value not in values or not c.includes(pod, node):
                    continue
                values[value] += c.count(node, ns)
        state[self.name + "/score"] = (soft, counts, weights, ignored, host_counts)
        return None

    def score(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]) -> list[int]:
        soft, counts, weights, ignored, host_counts = state[self.name + "/score"]
        ns = pod.namespace
        key_nodes = self.handle.cache.key_nodes
        # (key, the constraint when counted on each node, the per-node counts when known,
        #  domain counts, weight, maxSkew - 1); a key no node has adds nothing to any node.
        plan = [
            (
                c.topology_key,
                c if c.topology_key == HOSTNAME_KEY and host_counts[i] is None else None,
                host_counts[i],
                counts[i],
                weights[i],
                c.max_skew - 1,
            )
            for i, c in enumerate(soft)
            if key_nodes.get(c.topology_key)
        ]
        floor = math.floor
        out = []
        for n in nodes:
            if ignored and n.name in ignored:
                out.append(0)
                continue
            total = 0.0
            labels = n.labels
            for key, per_node, known, domain_counts, weight, extra in plan:
                value = labels.get(key)
                if value is None:
                    continue
                if known is not None:
                    cnt = known.get(n.name, 0)
                elif per_node is not None:
                    cnt = per_node.count(n, ns)
                else:
                    cnt = domain_counts.get(value, 0)
                total += cnt * weight + extra
            out.append(floor(total + 0.5))
        return out

    def normalize_score(
        self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo], scores: list[int]
    ) -> None:
        ignored = state[self.name + "/score"][3]
        valid = [s for n, s in zip(nodes, scores, strict=True) if n.name not in ignored]
        if not valid:
            scores[:] = [0] * len(scores)
            return
        low, high = min(valid), max(valid)
        for i, n in enumerate(nodes):
            if n.name in ignored:
                scores[i] = 0
            elif high == 0:
                scores[i] = MAX_NODE_SCORE
            else:
                scores[i] = MAX_NODE_SCORE * (high + low - scores[i]) // high
