"""The scheduling queue: activeQ, backoffQ and the unschedulable pods, as upstream's.

This module owns which pending pod is tried next and when a rejected pod is tried again.

* **activeQ** is a heap ordered by the profile's QueueSort key (PrioritySort: higher priority
  first, then earlier timestamp). ``pop()`` waits for it.
* **backoffQ** holds pods waiting out their backoff: ``initial_backoff_s * 2^(attempts-1)``
  capped at ``max_backoff_s`` (1 s -> 10 s by default) after the last failure; ``flush`` moves
  expired ones to activeQ every second.
* **unschedulable pods** were rejected by some plugins; a cluster event one of those plugins
  registered for (``Plugin.events``) moves them back (to backoffQ if still backing off, else
  to activeQ). Pods left there longer than ``max_unschedulable_s`` (5 min) are moved anyway.
  A pod rejected while a move event happened during its cycle goes to backoffQ instead, so the
  event is not lost (upstream's ``moveRequestCycle``).
* **Scheduling gates**: PreEnqueue plugins run before a pod enters activeQ; a rejected (gated)
  pod waits among the unschedulable pods and only a change to the pod itself re-checks it.

Removal from the heaps is lazy: entries carry a generation and stale ones are skipped. All
methods run on the event loop; ``run()`` is the periodic flusher task.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from sampan.scheduler.framework import PodInfo, Status

__all__ = [
    "DEFAULT_INITIAL_BACKOFF_S",
    "DEFAULT_MAX_BACKOFF_S",
    "DEFAULT_MAX_UNSCHEDULABLE_S",
    "QueuedPodInfo",
    "SchedulingQueue",
]

log = logging.getLogger(__name__)

DEFAULT_INITIAL_BACKOFF_S = 1.0
DEFAULT_MAX_BACKOFF_S = 10.0
DEFAULT_MAX_UNSCHEDULABLE_S = 300.0
BACKOFF_FLUSH_INTERVAL_S = 1.0
UNSCHEDULABLE_FLUSH_INTERVAL_S = 30.0

_ACTIVE = "active"
_BACKOFF = "backoff"
_UNSCHEDULABLE = "unschedulable"
_IN_FLIGHT = "in-flight"


class QueuedPodInfo:
    """A pending pod with its queue bookkeeping."""

    __slots__ = (
        "attempts",
        "backoff_expiry_s",
        "gated",
        "initial_s",
        "pod",
        "seq",
        "timestamp_s",
        "unschedulable_plugins",
        "where",
    )

    def __init__(self, pod: PodInfo, now_s: float) -> None:
        self.pod = pod
        self.timestamp_s = now_s
        self.initial_s = now_s
        self.attempts = 0
        self.unschedulable_plugins: set[str] = set()
        self.gated = False
        self.backoff_expiry_s = 0.0
        self.seq = 0
        self.where = ""

    def __repr__(self) -> str:
        return f"QueuedPodInfo({self.pod.key}, {self.where}, attempts={self.attempts})"


class SchedulingQueue:
    """See the module docstring. ``sort_key(qpi)`` orders activeQ; ``pre_enqueue(pod)``
    returns a rejecting Status for a gated pod; ``plugin_events`` maps plugin names to the
    cluster events that may help pods they rejected."""

    def __init__(
        self,
        sort_key: Callable[[QueuedPodInfo], Any],
        pre_enqueue: Callable[[PodInfo], Status | None],
        plugin_events: Mapping[str, frozenset[str]],
        *,
        initial_backoff_s: float = DEFAULT_INITIAL_BACKOFF_S,
        max_backoff_s: float = DEFAULT_MAX_BACKOFF_S,
        max_unschedulable_s: float = DEFAULT_MAX_UNSCHEDULABLE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sort_key = sort_key
        self.pre_enqueue = pre_enqueue
        self.plugin_events = plugin_events
        self.initial_backoff_s = initial_backoff_s
        self.max_backoff_s = max_backoff_s
        self.max_unschedulable_s = max_unschedulable_s
        self.clock = clock
        self.pods: dict[str, QueuedPodInfo] = {}
        """uid -> entry for every pod the queue knows (any sub-queue, or in flight)."""
        self._active: list[tuple[Any, int, QueuedPodInfo]] = []
        self._backoff: list[tuple[float, int, QueuedPodInfo]] = []
        self.unschedulable: dict[str, QueuedPodInfo] = {}
        self._seq = itertools.count()
        self._ready = asyncio.Event()
        self._closed = False
        self.scheduling_cycle = 0
        self.move_request_cycle = -1

    # -- sizes (diagnostics, tests) ----------------------------------------------------------

    def counts(self) -> dict[str, int]:
        out = {_ACTIVE: 0, _BACKOFF: 0, _UNSCHEDULABLE: 0, _IN_FLIGHT: 0}
        for q in self.pods.values():
            out[q.where] = out.get(q.where, 0) + 1
        return out

    def __len__(self) -> int:
        return len(self.pods)

    # -- internal moves ----------------------------------------------------------------------

    def _to_active(self, q: QueuedPodInfo) -> None:
        self.unschedulable.pop(q.pod.uid, None)
        q.where = _ACTIVE
        q.seq = next(self._seq)
        heapq.heappush(self._active, (self.sort_key(q), q.seq, q))
        self._ready.set()

    def _to_backoff(self, q: QueuedPodInfo) -> None:
        self.unschedulable.pop(q.pod.uid, None)
        q.where = _BACKOFF
        q.seq = next(self._seq)
        heapq.heappush(self._backoff, (q.backoff_expiry_s, q.seq, q))

    def _to_unschedulable(self, q: QueuedPodInfo) -> None:
        q.where = _UNSCHEDULABLE
        q.seq = next(self._seq)
        self.unschedulable[q.pod.uid] = q

    def backoff_duration_s(self, attempts: int) -> float:
        duration = self.initial_backoff_s
        for _ in range(1, attempts):
            duration *= 2
            if duration > self.max_backoff_s:
                return self.max_backoff_s
        return duration

    def _backing_off(self, q: QueuedPodInfo) -> bool:
        return q.attempts > 0 and q.backoff_expiry_s > self.clock()

    def _gate(self, q: QueuedPodInfo) -> bool:
        """Run PreEnqueue; True if the pod may enter activeQ."""
        st = self.pre_enqueue(q.pod)
        q.gated = st is not None and not st.ok
        return not q.gated

    # -- informer-driven ---------------------------------------------------------------------

    def add(self, pod: PodInfo) -> None:
        """A new pending pod (or one seen again)."""
        if pod.uid in self.pods:
            self.update(pod)
            return
        q = QueuedPodInfo(pod, self.clock())
        self.pods[pod.uid] = q
        if self._gate(q):
            self._to_active(q)
        else:
            self._to_unschedulable(q)

    def update(self, pod: PodInfo) -> None:
        """The pending pod changed: re-run PreEnqueue; a pod waiting as unschedulable is tried
        again (the change may help), respecting its backoff."""
        q = self.pods.get(pod.uid)
        if q is None:
            self.add(pod)
            return
        q.pod = pod
        if q.where == _IN_FLIGHT:
            return
        if q.where == _UNSCHEDULABLE:
            if not self._gate(q):
                return
            if self._backing_off(q):
                self._to_backoff(q)
            else:
                self._to_active(q)
        elif q.where == _ACTIVE:
            self._to_active(q)  # re-sort; the old heap entry is now stale
        elif q.where == _BACKOFF:
            self._to_backoff(q)

    def delete(self, uid: str) -> None:
        q = self.pods.pop(uid, None)
        if q is not None:
            self.unschedulable.pop(uid, None)
            q.where = ""

    # -- the scheduling loop -----------------------------------------------------------------

    def pop_nowait(self) -> QueuedPodInfo | None:
        while self._active:
            _, seq, q = heapq.heappop(self._active)
            if q.where != _ACTIVE or q.seq != seq or self.pods.get(q.pod.uid) is not q:
                continue
            q.where = _IN_FLIGHT
            q.attempts += 1
            self.scheduling_cycle += 1
            return q
        self._ready.clear()
        return None

    async def pop(self) -> QueuedPodInfo | None:
        """The next pod to schedule (None once closed)."""
        while not self._closed:
            q = self.pop_nowait()
            if q is not None:
                return q
            await self._ready.wait()
        return None

    def done(self, uid: str) -> None:
        """The pod was scheduled (assumed): the queue forgets it."""
        q = self.pods.get(uid)
        if q is not None and q.where == _IN_FLIGHT:
            del self.pods[uid]

    def add_unschedulable(self, q: QueuedPodInfo, pod_cycle: int, plugins: set[str]) -> None:
        """The pod was rejected in cycle ``pod_cycle`` by ``plugins`` (empty: unknown)."""
        if self.pods.get(q.pod.uid) is not q:
            return  # deleted or replaced meanwhile
        now = self.clock()
        q.timestamp_s = now
        q.unschedulable_plugins = set(plugins)
        q.backoff_expiry_s = now + self.backoff_duration_s(q.attempts)
        if self.move_request_cycle >= pod_cycle:
            self._to_backoff(q)
        else:
            self._to_unschedulable(q)

    def add_backoff(self, q: QueuedPodInfo) -> None:
        """The pod failed for an error (not a rejection): retry after its backoff."""
        if self.pods.get(q.pod.uid) is not q:
            return
        now = self.clock()
        q.timestamp_s = now
        q.backoff_expiry_s = now + self.backoff_duration_s(q.attempts)
        self._to_backoff(q)

    def requeue(self, pod: PodInfo, attempts: int) -> None:
        """A pod whose binding failed comes back (with backoff)."""
        q = QueuedPodInfo(pod, self.clock())
        q.attempts = attempts
        self.pods[pod.uid] = q
        q.backoff_expiry_s = self.clock() + self.backoff_duration_s(attempts)
        self._to_backoff(q)

    # -- cluster events ----------------------------------------------------------------------

    def _helps(self, q: QueuedPodInfo, event: str) -> bool:
        if q.gated:
            return False
        if not q.unschedulable_plugins:
            return True
        for name in q.unschedulable_plugins:
            if event in self.plugin_events.get(name, ()):
                return True
        return False

    def move_all(self, event: str, only: Callable[[QueuedPodInfo], bool] | None = None) -> int:
        """``event`` happened: move the unschedulable pods it may help. Returns how many."""
        moved = 0
        for q in list(self.unschedulable.values()):
            if not self._helps(q, event) or (only is not None and not only(q)):
                continue
            if self._backing_off(q):
                self._to_backoff(q)
            else:
                self._to_active(q)
            moved += 1
        self.move_request_cycle = self.scheduling_cycle
        return moved

    def flush_backoff(self) -> None:
        now = self.clock()
        while self._backoff and self._backoff[0][0] <= now:
            _, seq, q = heapq.heappop(self._backoff)
            if q.where != _BACKOFF or q.seq != seq or self.pods.get(q.pod.uid) is not q:
                continue
            self._to_active(q)

    def flush_unschedulable(self) -> None:
        now = self.clock()
        for q in list(self.unschedulable.values()):
            if q.gated or now - q.timestamp_s < self.max_unschedulable_s:
                continue
            if self._backing_off(q):
                self._to_backoff(q)
            else:
                self._to_active(q)

    async def run(self) -> None:
        """Flush backoffQ every second and old unschedulable pods every 30 s (a task)."""
        last_unschedulable_s = self.clock()
        while True:
            await asyncio.sleep(BACKOFF_FLUSH_INTERVAL_S)
            self.flush_backoff()
            if self.clock() - last_unschedulable_s >= UNSCHEDULABLE_FLUSH_INTERVAL_S:
                last_unschedulable_s = self.clock()
                self.flush_unschedulable()

    def close(self) -> None:
        self._closed = True
        self._ready.set()
