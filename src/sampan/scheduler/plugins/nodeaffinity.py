"""TaintToleration and NodeAffinity: what a node says about itself against what the pod asks.

TaintToleration (upstream semantics): Filter rejects a node with a NoSchedule/NoExecute taint
the pod does not tolerate ("node(s) had untolerated taint {key: value}", unresolvable);
Score counts the node's PreferNoSchedule taints the pod does not tolerate, normalised in
reverse (fewer is better). When no node in the cluster has a taint, Filter and Score do
nothing (Score would give every node 100, which cannot change the choice).

NodeAffinity: Filter requires ``spec.nodeSelector`` (every pair) and the required node
affinity terms (ORed) -- plus the profile's ``addedAffinity``; Score sums the weights of the
preferred terms a node matches, normalised to 0..100.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sampan.scheduler.framework import (
    EV_NODE_ADD,
    EV_NODE_UPDATE,
    SKIP,
    UNSCHEDULABLE_AND_UNRESOLVABLE,
    CycleState,
    Handle,
    NodeInfo,
    Plugin,
    PodInfo,
    Status,
    default_normalize_score,
    match_node_selector_term,
    match_node_selector_terms,
    toleration_tolerates,
)

__all__ = ["NodeAffinity", "TaintToleration", "pod_matches_node_affinity"]

ERR_AFFINITY = "node(s) didn't match Pod's node affinity/selector"
ERR_ENFORCED = "node(s) didn't match scheduler-enforced node affinity"
_HARD_EFFECTS = ("NoSchedule", "NoExecute")


class TaintToleration(Plugin):
    name = "TaintToleration"
    events = frozenset({EV_NODE_ADD, EV_NODE_UPDATE})

    def filter(
        self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo], failed: dict[str, Status]
    ) -> list[NodeInfo]:
        if not self.handle.cache.tainted_nodes:
            return nodes
        tolerations = pod.tolerations
        out = []
        for n in nodes:
            if not n.taints:
                out.append(n)
                continue
            for taint in n.taints:
                if taint.get("effect") not in _HARD_EFFECTS:
                    continue
                if any(toleration_tolerates(t, taint) for t in tolerations):
                    continue
                failed[n.name] = Status(
                    UNSCHEDULABLE_AND_UNRESOLVABLE,
                    f"node(s) had untolerated taint {{{taint.get('key', '')}: "
                    f"{taint.get('value', '')}}}",
                    plugin=self.name,
                )
                break
            else:
                out.append(n)
        return out

    def pre_score(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]) -> Status | None:
        # With no tainted node anywhere every node scores 100: a constant cannot change which
        # node wins, so the work is skipped (upstream computes the constant).
        if not self.handle.cache.tainted_nodes:
            return Status(SKIP)
        return None

    def score(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]) -> list[int]:
        prefer = [
            t
            for t in pod.tolerations
            if (t.get("effect") or "PreferNoSchedule") == "PreferNoSchedule"
        ]
        scores = []
        for n in nodes:
            count = 0
            if n.taints:
                for taint in n.taints:
                    if taint.get("effect") != "PreferNoSchedule":
                        continue
                    if not any(toleration_tolerates(t, taint) for t in prefer):
                        count += 1
            scores.append(count)
        return scores

    def normalize_score(
        self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo], scores: list[int]
    ) -> None:
        default_normalize_score(scores, reverse=True)


def _required_terms(pod: PodInfo) -> list[Mapping[str, Any]] | None:
    na = pod.affinity.get("nodeAffinity") or {}
    required = na.get("requiredDuringSchedulingIgnoredDuringExecution")
    if required is None:
        return None
    return list(required.get("nodeSelectorTerms") or ())


def pod_matches_node_affinity(pod: PodInfo, node: NodeInfo) -> bool:
    """``spec.nodeSelector`` and required node affinity (PodTopologySpread reuses this)."""
    selector = pod.spec.get("nodeSelector") or {}
    labels = node.labels
    for k, v in selector.items():
        if labels.get(k) != v:
            return False
    terms = _required_terms(pod)
    if terms is not None and not match_node_selector_terms(terms, labels, node.name):
        return False
    return True


class NodeAffinity(Plugin):
    name = "NodeAffinity"
    events = frozenset({EV_NODE_ADD, EV_NODE_UPDATE})
    args_keys = frozenset({"addedAffinity"})

    def __init__(self, args: Mapping[str, Any], handle: Handle) -> None:
        super().__init__(args, handle)
        added = args.get("addedAffinity") or {}
        req = added.get("requiredDuringSchedulingIgnoredDuringExecution")
        self.added_required = list((req or {}).get("nodeSelectorTerms") or ()) if req else None
        self.added_preferred = list(
            added.get("preferredDuringSchedulingIgnoredDuringExecution") or ()
        )

    def pre_filter(self, state: CycleState, pod: PodInfo) -> Status | None:
        if (
            not pod.spec.get("nodeSelector")
            and _required_terms(pod) is None
            and self.added_required is None
        ):
            return Status(SKIP)
        return None

    def filter(
        self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo], failed: dict[str, Status]
    ) -> list[NodeInfo]:
        out = []
        added = self.added_required
        for n in nodes:
            if added is not None and not match_node_selector_terms(added, n.labels, n.name):
                failed[n.name] = Status(
                    UNSCHEDULABLE_AND_UNRESOLVABLE, ERR_ENFORCED, plugin=self.name
                )
            elif not pod_matches_node_affinity(pod, n):
                failed[n.name] = Status(
                    UNSCHEDULABLE_AND_UNRESOLVABLE, ERR_AFFINITY, plugin=self.name
                )
            else:
                out.append(n)
        return out

    def _preferred(self, pod: PodInfo) -> list[Mapping[str, Any]]:
        na = pod.affinity.get("nodeAffinity") or {}
        return [
            *(na.get("preferredDuringSchedulingIgnoredDuringExecution") or ()),
            *self.added_preferred,
        ]

    def pre_score(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]) -> Status | None:
        preferred = self._preferred(pod)
        if not preferred:
            return Status(SKIP)
        state[self.name] = preferred
        return None

    def score(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]) -> list[int]:
        preferred = state[self.name]
        scores = []
        for n in nodes:
            total = 0
            for p in preferred:
                weight = int(p.get("weight") or 0)
                if weight and match_node_selector_term(p.get("preference") or {}, n.labels, n.name):
                    total += weight
            scores.append(total)
        return scores

    def normalize_score(
        self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo], scores: list[int]
    ) -> None:
        default_normalize_score(scores, reverse=False)
