"""DefaultPreemption (PostFilter): make room for a pod by evicting lower-priority pods.

As upstream's ``defaultpreemption`` + ``preemption.Evaluator``:

1. The pod must be eligible: not ``preemptionPolicy: Never``; and if it is already nominated
   to a node where a lower-priority pod is still terminating, it waits for that instead.
2. Candidate nodes are those whose Filter failure was plain Unschedulable (an unresolvable
   failure -- taint, selector -- cannot be fixed by evicting pods: "Preemption is not helpful
   for scheduling"). At most ``max(minCandidateNodesAbsolute, minCandidateNodesPercentage%)``
   candidates are found, starting at a random node.
3. On each candidate (a clone of its ``NodeInfo``): remove every pod of lower priority; if the
   pod still does not pass the filters, the node is out ("No preemption victims found for
   incoming pod"). Otherwise add the victims back, most important first (PodDisruptionBudget
   violators first), keeping each one whose return still lets the pod fit.
4. Pick a node by: fewest PDB violations, lowest highest-victim priority, lowest sum of victim
   priorities, fewest victims, latest start of the highest-priority victims, then the first.
5. Evict the victims (delete, with a "Preempted" event), clear the nomination of
   lower-priority pods nominated to that node, and nominate the pod there
   (``status.nominatedNodeName``); it is retried when the victims are gone.

The what-if runs on a copy of the node and of the cycle state; InterPodAffinity and
PodTopologySpread update their cluster-wide PreFilter counts for each pod removed or added back
(upstream's PreFilterExtensions), so a victim whose anti-affinity blocks the pod counts too.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from sampan.api.labels import SelectorError, selector_from_label_selector
from sampan.scheduler.framework import (
    SUCCESS,
    UNSCHEDULABLE,
    CycleState,
    Handle,
    NodeInfo,
    Plugin,
    PodInfo,
    Status,
)

__all__ = ["DefaultPreemption", "fit_error_message"]

DEFAULT_MIN_CANDIDATE_PERCENTAGE = 10
DEFAULT_MIN_CANDIDATE_ABSOLUTE = 100
NOT_HELPFUL = "Preemption is not helpful for scheduling"
NO_VICTIMS = "No preemption victims found for incoming pod"


def fit_error_message(num_nodes: int, reasons: Mapping[str, int], *extra: str) -> str:
    """``0/N nodes are available: <count reason, ...>.`` plus extra sentences, as upstream's
    ``FitError.Error()`` (reasons sorted as strings)."""
    msg = f"0/{num_nodes} nodes are available:"
    parts = sorted(f"{count} {reason}" for reason, count in reasons.items())
    if parts:
        msg += " " + ", ".join(parts) + "."
    for e in extra:
        if e:
            msg += " " + e + "."
    return msg


def _start_time(pi: PodInfo) -> str:
    status = pi.pod.get("status") or {}
    return status.get("startTime") or (pi.pod.get("metadata") or {}).get("creationTimestamp") or ""


class DefaultPreemption(Plugin):
    name = "DefaultPreemption"
    args_keys = frozenset({"minCandidateNodesPercentage", "minCandidateNodesAbsolute"})

    def __init__(self, args: Mapping[str, Any], handle: Handle) -> None:
        super().__init__(args, handle)
        pct = args.get("minCandidateNodesPercentage")
        absolute = args.get("minCandidateNodesAbsolute")
        self.min_pct = DEFAULT_MIN_CANDIDATE_PERCENTAGE if pct is None else int(pct)
        self.min_abs = DEFAULT_MIN_CANDIDATE_ABSOLUTE if absolute is None else int(absolute)

    def _eligible(self, pod: PodInfo) -> str | None:
        if pod.spec.get("preemptionPolicy") == "Never":
            return "not eligible due to preemptionPolicy=Never."
        nominated = (pod.pod.get("status") or {}).get("nominatedNodeName")
        if nominated:
            info = self.handle.cache.nodes.get(nominated)
            if info is not None:
                for p in info.pods.values():
                    if p.terminating and p.priority < pod.priority:
                        return "not eligible due to a terminating pod on the nominated node."
        return None

    def post_filter(
        self, state: CycleState, pod: PodInfo, failed: dict[str, Status]
    ) -> tuple[str | None, Status]:
        why = self._eligible(pod)
        if why is not None:
            return None, Status(UNSCHEDULABLE, why)
        cache = self.handle.cache
        nodes = cache.node_list
        reasons: dict[str, int] = {}
        potential = []
        for n in nodes:
            st = failed.get(n.name)
            if st is not None and st.code != UNSCHEDULABLE:
                reasons[NOT_HELPFUL] = reasons.get(NOT_HELPFUL, 0) + 1
            else:
                potential.append(n)
        wanted = max(len(potential) * self.min_pct // 100, self.min_abs)
        offset = random.randrange(len(potential)) if potential else 0
        pdbs = self._pdbs()
        candidates = []
        for i in range(len(potential)):
            n = potential[(offset + i) % len(potential)]
            victims = self._select_victims(state, pod, n, pdbs)
            if victims is None:
                reasons[NO_VICTIMS] = reasons.get(NO_VICTIMS, 0) + 1
                continue
            candidates.append((n, *victims))
            if len(candidates) >= wanted:
                break
        if not candidates:
            return None, Status(
                UNSCHEDULABLE, "preemption: " + fit_error_message(len(nodes), reasons)
            )
        node, victims, _violations = min(candidates, key=lambda c: self._rank(c[1], c[2]))
        evict = self.handle.evict
        for victim in victims:
            if evict is not None:
                evict(victim, pod, node.name)
        nominate = self.handle.nominate
        for other in list(node.nominated.values()):
            if other.priority < pod.priority and nominate is not None:
                nominate(other, "")
        return node.name, Status(SUCCESS)

    @staticmethod
    def _rank(victims: list[PodInfo], violations: int) -> tuple[Any, ...]:
        if not victims:
            return (violations, -(2**31), 0, 0, "")
        top = max(v.priority for v in victims)
        top_start = min(_start_time(v) for v in victims if v.priority == top)
        # Latest start time of the highest-priority victims wins: invert by sorting on the
        # negated ordering of ISO timestamps (compare as strings, reversed).
        inverted = "".join(chr(0x10FFFF - ord(ch)) for ch in top_start)
        return (violations, top, sum(v.priority + 2**31 for v in victims), len(victims), inverted)

    def _pdbs(self) -> list[tuple[str, Any, int, set[str]]]:
        out = []
        for pdb in self.handle.list("poddisruptionbudgets"):
            try:
                selector = selector_from_label_selector((pdb.get("spec") or {}).get("selector"))
            except SelectorError:
                continue
            status = pdb.get("status") or {}
            out.append(
                (
                    (pdb.get("metadata") or {}).get("namespace", ""),
                    selector,
                    int(status.get("disruptionsAllowed") or 0),
                    set((status.get("disruptedPods") or {}).keys()),
                )
            )
        return out

    def _fits(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> bool:
        fwk = self.handle.framework
        assert fwk is not None
        return bool(fwk.run_filter(state, pod, [node], {}))

    def _remove(self, state: CycleState, pod: PodInfo, victim: PodInfo, node: NodeInfo) -> None:
        node.remove_pod(victim)
        assert self.handle.framework is not None
        self.handle.framework.run_update_pre_filter(state, pod, victim, node, -1)

    def _add(self, state: CycleState, pod: PodInfo, victim: PodInfo, node: NodeInfo) -> None:
        node.add_pod(victim)
        assert self.handle.framework is not None
        self.handle.framework.run_update_pre_filter(state, pod, victim, node, 1)

    def _select_victims(
        self,
        state: CycleState,
        pod: PodInfo,
        n: NodeInfo,
        pdbs: list[tuple[str, Any, int, set[str]]],
    ) -> tuple[list[PodInfo], int] | None:
        clone = n.clone()
        assert self.handle.framework is not None
        state = state.clone(self.handle.framework.plugins)
        clone.nominated = {u: p for u, p in clone.nominated.items() if p.priority >= pod.priority}
        lower = [p for p in clone.pods.values() if p.priority < pod.priority]
        for p in lower:
            self._remove(state, pod, p, clone)
        if not self._fits(state, pod, clone):
            return None
        lower.sort(key=lambda p: (-p.priority, _start_time(p)))
        allowed = [a for _, _, a, _ in pdbs]
        violating, fine = [], []
        for p in lower:
            breaks = False
            for i, (ns, selector, _, disrupted) in enumerate(pdbs):
                if ns != p.namespace or not selector.matches(p.labels) or p.name in disrupted:
                    continue
                allowed[i] -= 1
                if allowed[i] < 0:
                    breaks = True
            (violating if breaks else fine).append(p)
        victims: list[PodInfo] = []
        violations = 0
        for group, is_violating in ((violating, True), (fine, False)):
            for p in group:
                self._add(state, pod, p, clone)
                if not self._fits(state, pod, clone):
                    self._remove(state, pod, p, clone)
                    victims.append(p)
                    if is_violating:
                        violations += 1
        return victims, violations
