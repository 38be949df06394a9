"""InterPodAffinity: required and preferred pod affinity / anti-affinity, as upstream.

Filter, in upstream's order: (1) no existing pod's required anti-affinity term may match the
incoming pod within the node's topology domain ("node(s) didn't satisfy existing pods
anti-affinity rules"); (2) every required affinity term must have a matching pod in the
node's domain -- unless no pod anywhere matches and the pod matches its own terms, so the
first replica of a self-affine group can start ("node(s) didn't match pod affinity rules",
unresolvable); (3) no required anti-affinity term may match a pod in the domain ("node(s)
didn't match pod anti-affinity rules").

Score: per topology domain, + weight for each existing pod matching a preferred affinity term
of the incoming pod, - weight for anti-affinity; symmetrically the existing pods' preferred
terms matching the incoming pod, and their required affinity terms with
``hardPodAffinityWeight`` (1). Scores are scaled to 0..100 between the min and max.
Both skip when neither the pod nor any existing pod has terms (the cache counts them).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sampan.scheduler.framework import (
    EV_ASSIGNED_POD_ADD,
    EV_ASSIGNED_POD_DELETE,
    EV_ASSIGNED_POD_UPDATE,
    EV_NAMESPACE,
    EV_NODE_ADD,
    EV_NODE_UPDATE,
    MAX_NODE_SCORE,
    SKIP,
    TERM_PREFERRED_AFFINITY,
    TERM_REQUIRED_AFFINITY,
    TERM_REQUIRED_ANTI_AFFINITY,
    UNSCHEDULABLE,
    UNSCHEDULABLE_AND_UNRESOLVABLE,
    CycleState,
    Handle,
    NodeInfo,
    Plugin,
    PodInfo,
    Status,
)

__all__ = ["InterPodAffinity"]

ERR_EXISTING_ANTI = "node(s) didn't satisfy existing pods anti-affinity rules"
ERR_AFFINITY = "node(s) didn't match pod affinity rules"
ERR_ANTI = "node(s) didn't match pod anti-affinity rules"
DEFAULT_HARD_POD_AFFINITY_WEIGHT = 1


class InterPodAffinity(Plugin):
    name = "InterPodAffinity"
    events = frozenset(
        {
            EV_ASSIGNED_POD_ADD,
            EV_ASSIGNED_POD_UPDATE,
            EV_ASSIGNED_POD_DELETE,
            EV_NODE_ADD,
            EV_NODE_UPDATE,
            EV_NAMESPACE,
        }
    )
    args_keys = frozenset({"hardPodAffinityWeight", "ignorePreferredTermsOfExistingPods"})

    def __init__(self, args: Mapping[str, Any], handle: Handle) -> None:
        super().__init__(args, handle)
        weight = args.get("hardPodAffinityWeight")
        self.hard_weight = DEFAULT_HARD_POD_AFFINITY_WEIGHT if weight is None else int(weight)
        self.ignore_existing_preferred = bool(args.get("ignorePreferredTermsOfExistingPods"))

    def pre_filter(self, state: CycleState, pod: PodInfo) -> Status | None:
        cache = self.handle.cache
        if (
            not pod.required_affinity
            and not pod.required_anti_affinity
            and not cache.anti_affinity_pods
        ):
            return Status(SKIP)
        ns_labels = self.handle.namespace_labels
        existing_anti: dict[tuple[str, str], int] = {}
        affinity: dict[tuple[str, str], int] = {}
        anti: dict[tuple[str, str], int] = {}
        for node in cache.node_list:
            labels = node.labels
            if node.pods_with_required_anti_affinity:
                for _ep, kind, term, _w in node.affinity_terms_for(pod.labels):
                    if kind != TERM_REQUIRED_ANTI_AFFINITY:
                        continue
                    value = labels.get(term.topology_key)
                    if value is not None and term.matches(pod, ns_labels):
                        pair = (term.topology_key, value)
                        existing_anti[pair] = existing_anti.get(pair, 0) + 1
            if not pod.required_affinity and not pod.required_anti_affinity:
                continue
            if pod.required_affinity:
                # a pod all terms match is among the first term's candidates
                for ep in pod.required_affinity[0].candidates(node):
                    if all(t.matches(ep, ns_labels) for t in pod.required_affinity):
                        for t in pod.required_affinity:
                            value = labels.get(t.topology_key)
                            if value is not None:
                                pair = (t.topology_key, value)
                                affinity[pair] = affinity.get(pair, 0) + 1
            for t in pod.required_anti_affinity:
                value = labels.get(t.topology_key)
                if value is None:
                    continue
                for ep in t.candidates(node):
                    if t.matches(ep, ns_labels):
                        pair = (t.topology_key, value)
                        anti[pair] = anti.get(pair, 0) + 1
        state[self.name] = (existing_anti, affinity, anti)
        return None

    @staticmethod
    def copy_state(value: Any) -> Any:
        return tuple(dict(counts) for counts in value)

    def update_pre_filter(
        self, state: CycleState, pod: PodInfo, other: PodInfo, node: NodeInfo, delta: int
    ) -> None:
        existing_anti, affinity, anti = state[self.name]
        ns_labels = self.handle.namespace_labels
        labels = node.labels

        def bump(counts: dict[tuple[str, str], int], key: str) -> None:
            value = labels.get(key)
            if value is not None:
                counts[(key, value)] = counts.get((key, value), 0) + delta

        for term in other.required_anti_affinity:
            if term.matches(pod, ns_labels):
                bump(existing_anti, term.topology_key)
        if pod.required_affinity and all(
            t.matches(other, ns_labels) for t in pod.required_affinity
        ):
            for t in pod.required_affinity:
                bump(affinity, t.topology_key)
        for t in pod.required_anti_affinity:
            if t.matches(other, ns_labels):
                bump(anti, t.topology_key)

    def _self_match(self, pod: PodInfo) -> bool:
        ns_labels = self.handle.namespace_labels
        return all(t.matches(pod, ns_labels) for t in pod.required_affinity)

    def filter(
        self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo], failed: dict[str, Status]
    ) -> list[NodeInfo]:
        existing_anti, affinity, anti = state[self.name]
        out = []
        for n in nodes:
            labels = n.labels
            if existing_anti and any(existing_anti.get(kv, 0) > 0 for kv in labels.items()):
                failed[n.name] = Status(UNSCHEDULABLE, ERR_EXISTING_ANTI, plugin=self.name)
                continue
            if pod.required_affinity:
                ok = True
                exists = True
                for t in pod.required_affinity:
                    value = labels.get(t.topology_key)
                    if value is None:
                        ok = False
                        break
                    if affinity.get((t.topology_key, value), 0) <= 0:
                        exists = False
                if ok and not exists:
                    ok = not affinity and self._self_match(pod)
                if not ok:
                    failed[n.name] = Status(
                        UNSCHEDULABLE_AND_UNRESOLVABLE, ERR_AFFINITY, plugin=self.name
                    )
                    continue
            if pod.required_anti_affinity and any(
                anti.get((t.topology_key, labels.get(t.topology_key, "")), 0) > 0
                for t in pod.required_anti_affinity
                if t.topology_key in labels
            ):
                failed[n.name] = Status(UNSCHEDULABLE, ERR_ANTI, plugin=self.name)
                continue
            out.append(n)
        return out

    # -- score -------------------------------------------------------------------------------

    def pre_score(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]) -> Status | None:
        cache = self.handle.cache
        has_preferred = bool(pod.preferred_affinity or pod.preferred_anti_affinity)
        if not has_preferred and not cache.affinity_pods:
            return Status(SKIP)
        ns_labels = self.handle.namespace_labels
        scores: dict[str, dict[str, int]] = {}

        def add(key: str, labels: Mapping[str, str], weight: int) -> None:
            value = labels.get(key)
            if value is None or weight == 0:
                return
            per_key = scores.setdefault(key, {})
            per_key[value] = per_key.get(value, 0) + weight

        for node in cache.node_list:
            labels = node.labels
            # The incoming pod's terms look at the pods they may match; the existing pods'
            # terms that may match the incoming pod are found by its labels.
            for w in pod.preferred_affinity:
                for ep in w.term.candidates(node):
                    if w.term.matches(ep, ns_labels):
                        add(w.term.topology_key, labels, w.weight)
            for w in pod.preferred_anti_affinity:
                for ep in w.term.candidates(node):
                    if w.term.matches(ep, ns_labels):
                        add(w.term.topology_key, labels, -w.weight)
            if not node.pods_with_affinity:
                continue
            for _ep, kind, term, weight in node.affinity_terms_for(pod.labels):
                if kind == TERM_REQUIRED_AFFINITY:
                    if self.hard_weight > 0 and term.matches(pod, ns_labels):
                        add(term.topology_key, labels, self.hard_weight)
                elif kind == TERM_REQUIRED_ANTI_AFFINITY or self.ignore_existing_preferred:
                    continue
                elif term.matches(pod, ns_labels):
                    sign = 1 if kind == TERM_PREFERRED_AFFINITY else -1
                    add(term.topology_key, labels, sign * weight)
        state[self.name + "/score"] = scores
        return None

    def score(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]) -> list[int]:
        scores = state[self.name + "/score"]
        out = []
        for n in nodes:
            total = 0
            for key, per_value in scores.items():
                value = n.labels.get(key)
                if value is not None:
                    total += per_value.get(value, 0)
            out.append(total)
        return out

    def normalize_score(
        self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo], scores: list[int]
    ) -> None:
        if not state[self.name + "/score"] or not scores:
            return
        low, high = min(scores), max(scores)
        diff = high - low
        for i, s in enumerate(scores):
            scores[i] = int(MAX_NODE_SCORE * ((s - low) / diff)) if diff > 0 else 0
