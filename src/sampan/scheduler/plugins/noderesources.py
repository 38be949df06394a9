"""NodeResourcesFit and NodeResourcesBalancedAllocation, as upstream's ``noderesources``.

Fit -- Filter: the pod's requests (containers, init containers incl. sidecars, overhead) must
fit in ``allocatable - requested`` for every resource it asks for, and one more pod must fit
under ``allocatable.pods``; reasons "Insufficient cpu", "Insufficient memory", "Too many pods"
(Unschedulable, so preemption may help). Pods nominated to the node (preemptors waiting for
their victims to go) with a priority at least the incoming pod's count as already there.
Score, by ``scoringStrategy``:

* LeastAllocated (default): per resource ``(alloc - req) * 100 // alloc`` (0 when over),
  weighted mean with integer division;
* MostAllocated: ``min(req, alloc) * 100 // alloc``, weighted mean;
* RequestedToCapacityRatio: the shape (utilization 0..100 -> score 0..10, scaled by 10) is
  interpolated linearly at ``req * 100 // alloc``; weighted mean rounded.

``req`` counts the node's non-zero requests plus the pod's (a container without a cpu/memory
request counts as 100m / 200Mi). A resource the node does not have is left out of the mean.

BalancedAllocation -- Score: ``(1 - std(fractions)) * 100`` over the chosen resources'
requested/allocatable fractions (capped at 1), with actual (not non-zero) requests; skipped for
pods that request nothing.

Speed: with the default resources (cpu and memory, weight 1) both scores are memoised on the
``NodeInfo`` per pod request shape until the node's ``generation`` changes, so the replicas of
one workload reuse them across cycles; the values are exactly those computed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from sampan.scheduler.framework import (
    EV_ASSIGNED_POD_DELETE,
    EV_ASSIGNED_POD_UPDATE,
    EV_NODE_ADD,
    EV_NODE_UPDATE,
    MAX_NODE_SCORE,
    SKIP,
    UNSCHEDULABLE,
    CycleState,
    Handle,
    NodeInfo,
    Plugin,
    PodInfo,
    Resources,
    Status,
)

__all__ = [
    "LEAST_ALLOCATED",
    "MOST_ALLOCATED",
    "REQUESTED_TO_CAPACITY_RATIO",
    "SCORING_STRATEGIES",
    "BalancedAllocation",
    "Fit",
    "least_requested_score",
    "most_requested_score",
]

LEAST_ALLOCATED = "LeastAllocated"
MOST_ALLOCATED = "MostAllocated"
REQUESTED_TO_CAPACITY_RATIO = "RequestedToCapacityRatio"
SCORING_STRATEGIES = (LEAST_ALLOCATED, MOST_ALLOCATED, REQUESTED_TO_CAPACITY_RATIO)
DEFAULT_RESOURCES = ({"name": "cpu", "weight": 1}, {"name": "memory", "weight": 1})
MAX_CUSTOM_PRIORITY_SCORE = 10


def least_requested_score(requested: int, capacity: int) -> int:
    if capacity == 0 or requested > capacity:
        return 0
    return (capacity - requested) * MAX_NODE_SCORE // capacity


def most_requested_score(requested: int, capacity: int) -> int:
    if capacity == 0:
        return 0
    if requested > capacity:
        requested = capacity
    return requested * MAX_NODE_SCORE // capacity


def broken_linear(shape: list[tuple[int, int]]) -> Callable[[int], int]:
    """Piecewise linear through (utilization, score) points, flat outside them."""

    def f(p: int) -> int:
        for i, (u, s) in enumerate(shape):
            if p <= u:
                if i == 0:
                    return shape[0][1]
                u0, s0 = shape[i - 1]
                return s0 + (s - s0) * (p - u0) // (u - u0)
        return shape[-1][1]

    return f


def _pod_amount(res: Resources, name: str) -> int:
    return res.get(name)


class _Scorer:
    """Per-resource (node allocatable, requested incl. the pod) -> one node score."""

    def __init__(self, strategy: Mapping[str, Any]) -> None:
        self.type = strategy.get("type") or LEAST_ALLOCATED
        resources = strategy.get("resources") or DEFAULT_RESOURCES
        self.resources = [(r["name"], int(r.get("weight") or 1)) for r in resources]
        if self.type == REQUESTED_TO_CAPACITY_RATIO:
            shape = (strategy.get("requestedToCapacityRatio") or {}).get("shape") or [
                {"utilization": 0, "score": 10},
                {"utilization": 100, "score": 0},
            ]
            scale = MAX_NODE_SCORE // MAX_CUSTOM_PRIORITY_SCORE
            points = [
                (int(p.get("utilization") or 0), int(p.get("score") or 0) * scale) for p in shape
            ]
            raw = broken_linear(points)

            def rtcr(requested: int, capacity: int) -> int:
                if capacity == 0 or requested > capacity:
                    return raw(100)
                return raw(requested * 100 // capacity)

            self.per_resource = rtcr
        elif self.type == MOST_ALLOCATED:
            self.per_resource = most_requested_score
        else:
            self.per_resource = least_requested_score

    def score_nodes(self, pod: PodInfo, nodes: list[NodeInfo]) -> list[int]:
        f = self.per_resource
        rounding = self.type == REQUESTED_TO_CAPACITY_RATIO
        if self.type == LEAST_ALLOCATED and self.resources == [("cpu", 1), ("memory", 1)]:
            return _least_cpu_memory(pod, nodes)
        pod_req = [(name, w, pod.non_zero.get(name)) for name, w in self.resources]
        out = []
        for n in nodes:
            total = 0
            weights = 0
            for name, w, preq in pod_req:
                if name == "cpu":
                    alloc, req = n.alloc.milli_cpu, n.non_zero.milli_cpu + preq
                elif name == "memory":
                    alloc, req = n.alloc.memory, n.non_zero.memory + preq
                else:
                    if preq == 0 and name != "ephemeral-storage":
                        continue
                    alloc, req = n.alloc.get(name), n.requested.get(name) + preq
                if alloc == 0:
                    continue
                total += f(req, alloc) * w
                weights += w
            if weights == 0:
                out.append(0)
            elif rounding:
                out.append(math.floor(total / weights + 0.5))
            else:
                out.append(total // weights)
        return out


MEMO_LIMIT = 32
"""Memo entries kept per node before the memo is cleared (distinct pod request shapes)."""


def _least_cpu_memory(pod: PodInfo, nodes: list[NodeInfo]) -> list[int]:
    """The default strategy, unrolled (this is the hottest loop of the scheduler). A node's
    score depends only on its own numbers and the pod's requests, so it is memoised per node
    until the node changes (replicas of one workload share the entries)."""
    pc = pod.non_zero.milli_cpu
    pm = pod.non_zero.memory
    key = ("least", pc, pm)
    out = []
    append = out.append
    for n in nodes:
        hit = n.memo.get(key)
        if hit is not None and hit[0] == n.generation:
            append(hit[1])
            continue
        ac = n.a_cpu
        am = n.a_mem
        rc = n.z_cpu + pc
        rm = n.z_mem + pm
        if ac and am:
            score = (
                ((ac - rc) * 100 // ac if rc <= ac else 0)
                + ((am - rm) * 100 // am if rm <= am else 0)
            ) // 2
        elif ac:
            score = (ac - rc) * 100 // ac if rc <= ac else 0
        elif am:
            score = (am - rm) * 100 // am if rm <= am else 0
        else:
            score = 0
        memo = n.memo
        if len(memo) >= MEMO_LIMIT:
            memo.clear()
        memo[key] = (n.generation, score)
        append(score)
    return out


class Fit(Plugin):
    name = "NodeResourcesFit"
    events = frozenset(
        {EV_NODE_ADD, EV_NODE_UPDATE, EV_ASSIGNED_POD_DELETE, EV_ASSIGNED_POD_UPDATE}
    )
    args_keys = frozenset({"ignoredResources", "ignoredResourceGroups", "scoringStrategy"})

    def __init__(self, args: Mapping[str, Any], handle: Handle) -> None:
        super().__init__(args, handle)
        self.ignored = set(args.get("ignoredResources") or ())
        self.ignored_groups = set(args.get("ignoredResourceGroups") or ())
        self.scorer = _Scorer(args.get("scoringStrategy") or {})

    def _scalars(self, pod: PodInfo) -> list[tuple[str, int]]:
        out = []
        for name, amount in pod.request.scalars.items():
            if amount <= 0 or name in self.ignored:
                continue
            if name.split("/", 1)[0] in self.ignored_groups:
                continue
            out.append((name, amount))
        return out

    def filter(
        self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo], failed: dict[str, Status]
    ) -> list[NodeInfo]:
        req = pod.request
        cpu, mem, eph = req.milli_cpu, req.memory, req.ephemeral
        scalars = self._scalars(pod) if req.scalars else []
        out = []
        append = out.append
        simple = not scalars and not eph
        for n in nodes:
            if (
                simple
                and cpu <= n.a_cpu - n.r_cpu
                and mem <= n.a_mem - n.r_mem
                and len(n.pods) < n.alloc_pods
                and not n.nominated
            ):
                append(n)
                continue
            reasons = self.insufficient(pod, n, scalars)
            if reasons:
                failed[n.name] = Status(UNSCHEDULABLE, *reasons, plugin=self.name)
            else:
                append(n)
        return out

    def insufficient(
        self, pod: PodInfo, n: NodeInfo, scalars: list[tuple[str, int]] | None = None
    ) -> list[str]:
        """The reasons ``pod`` does not fit on ``n`` (empty: it fits)."""
        if scalars is None:
            scalars = self._scalars(pod)
        used = n.requested.copy()
        pods = len(n.pods)
        for other in n.nominated.values():
            if other.uid != pod.uid and other.priority >= pod.priority and other.uid not in n.pods:
                used.add(other.request)
                pods += 1
        req = pod.request
        a = n.alloc
        reasons = []
        if pods + 1 > n.alloc_pods:
            reasons.append("Too many pods")
        if req.milli_cpu > 0 and req.milli_cpu > a.milli_cpu - used.milli_cpu:
            reasons.append("Insufficient cpu")
        if req.memory > 0 and req.memory > a.memory - used.memory:
            reasons.append("Insufficient memory")
        if req.ephemeral > 0 and req.ephemeral > a.ephemeral - used.ephemeral:
            reasons.append("Insufficient ephemeral-storage")
        for name, amount in scalars:
            if amount > a.scalars.get(name, 0) - used.scalars.get(name, 0):
                reasons.append(f"Insufficient {name}")
        return reasons

    def score(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]) -> list[int]:
        return self.scorer.score_nodes(pod, nodes)


class BalancedAllocation(Plugin):
    name = "NodeResourcesBalancedAllocation"
    args_keys = frozenset({"resources"})

    def __init__(self, args: Mapping[str, Any], handle: Handle) -> None:
        super().__init__(args, handle)
        resources = args.get("resources") or DEFAULT_RESOURCES
        self.resources = [r["name"] for r in resources]

    def pre_score(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]) -> Status | None:
        if all(pod.request.get(name) == 0 for name in self.resources):
            return Status(SKIP)
        return None

    def score(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]) -> list[int]:
        req = pod.request
        if self.resources == ["cpu", "memory"]:
            pc, pm = req.milli_cpu, req.memory
            key = ("balanced", pc, pm)
            out = []
            append = out.append
            for n in nodes:
                hit = n.memo.get(key)
                if hit is not None and hit[0] == n.generation:
                    append(hit[1])
                    continue
                ac = n.a_cpu
                am = n.a_mem
                if ac and am:
                    fc = (n.r_cpu + pc) / ac
                    fm = (n.r_mem + pm) / am
                    if fc > 1:
                        fc = 1.0
                    if fm > 1:
                        fm = 1.0
                    d = fc - fm
                    score = int((1 - (d if d >= 0 else -d) / 2) * MAX_NODE_SCORE)
                else:
                    score = MAX_NODE_SCORE
                memo = n.memo
                if len(memo) >= MEMO_LIMIT:
                    memo.clear()
                memo[key] = (n.generation, score)
                append(score)
            return out
        return [self._score_one(pod, n) for n in nodes]

    def _score_one(self, pod: PodInfo, n: NodeInfo) -> int:
        fractions = []
        for name in self.resources:
            preq = pod.request.get(name)
            if preq == 0 and name not in ("cpu", "memory", "ephemeral-storage"):
                continue
            alloc = n.alloc.get(name)
            if alloc == 0:
                continue
            fractions.append(min(1.0, (n.requested.get(name) + preq) / alloc))
        std = 0.0
        if len(fractions) == 2:
            std = abs((fractions[0] - fractions[1]) / 2)
        elif len(fractions) > 2:
            mean = sum(fractions) / len(fractions)
            std = math.sqrt(sum((f - mean) ** 2 for f in fractions) / len(fractions))
        return int((1 - std) * MAX_NODE_SCORE)
