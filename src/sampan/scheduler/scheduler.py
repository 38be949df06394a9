"""The scheduler component: informers -> cache + queue -> scheduling cycle -> binding cycle.

This module owns the loop that assigns pending pods to nodes (upstream's ``scheduleOne``):

1. Informers keep the ``SchedulerCache`` (nodes, assigned pods) and the ``SchedulingQueue``
   (pending pods whose ``schedulerName`` is one of our profiles; others stay Pending,
   untouched). Cluster events move unschedulable pods back (see ``queue``).
2. **Scheduling cycle** (synchronous: no await, so the cache is a consistent snapshot): pop
   the next pod, PreFilter, Filter over a sample of nodes (``percentageOfNodesToScore``,
   adaptive by default: ``max(5, 50 - nodes/125)`` percent, at least 100 nodes; starting
   where the previous cycle stopped), PostFilter (preemption) when nothing fits, PreScore /
   Score / NormalizeScore, pick the best node (ties broken at random), **assume** the pod on
   it in the cache, Reserve, Permit.
3. **Binding cycle** (a task per pod, running beside the next scheduling cycles; at most
   ``MAX_BINDS_IN_FLIGHT``): wait on Permit, PreBind, Bind (``pods/binding``), PostBind; an
   Event ``Scheduled`` ("Successfully assigned ns/pod to node"). A failed binding forgets the
   assumed pod and requeues it with backoff.
4. A pod that fits nowhere gets the ``PodScheduled=False`` condition (reason Unschedulable)
   and a ``FailedScheduling`` Event with upstream's summary ("0/3 nodes are available: ...").

Runs under leader election (Lease ``kube-system/kube-scheduler``) unless disabled; informers
run (and the cache warms) before leadership is won, as upstream. Losing the lease ends the
*term*: scheduling stops at once (the elector cancels it before the lease can expire), then
everything the term built — informers, cache, queue, in-flight binding tasks, the event
recorder, the client — is torn down and a fresh term competes again from fresh informers.
Upstream's kube-scheduler exits instead (``leaderelection lost``, and a restarted process
competes again), and so does K3s's whole server process; here the scheduler shares its
process with the API server and the datastore, so exiting would take the cluster down because
the event loop lagged past the renew deadline. A fresh term is what a restart gives: nothing
survives from the lost one. Pod priority is ``spec.priority``, or -- because no
Priority admission plugin fills it in yet -- the value of ``spec.priorityClassName``'s
PriorityClass (or the global default class).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Mapping
from time import perf_counter
from typing import Any, Protocol

from prometheus_client import CollectorRegistry

from sampan.api import times
from sampan.client import (
    Client,
    ClientConfig,
    EventRecorder,
    LeaderElector,
    SharedInformerFactory,
    compact,
)
from sampan.client.api import (
    NAMESPACES,
    NODES,
    PDBS,
    PODS,
    PRIORITYCLASSES,
    PVCS,
    PVS,
    REPLICASETS,
    REPLICATIONCONTROLLERS,
    SERVICES,
    STATEFULSETS,
    STORAGECLASSES,
    ClientError,
    PatchType,
)
from sampan.client.events import TYPE_NORMAL, TYPE_WARNING
from sampan.client.informer import Informer
from sampan.scheduler.cache import SchedulerCache
from sampan.scheduler.config import (
    SchedulerConfiguration,
    SchedulerOptions,
    build_framework,
    resolve_options,
)
from sampan.scheduler.framework import (
    EV_ASSIGNED_POD_ADD,
    EV_ASSIGNED_POD_DELETE,
    EV_ASSIGNED_POD_UPDATE,
    EV_NAMESPACE,
    EV_NODE_ADD,
    EV_NODE_UPDATE,
    EV_PV,
    EV_PVC,
    EV_SERVICE,
    EV_STORAGE_CLASS,
    WAIT,
    CycleState,
    Framework,
    Handle,
    NodeInfo,
    PodInfo,
    Status,
)
from sampan.scheduler.metrics import (
    ERROR,
    PENDING_QUEUES,
    SCHEDULED,
    UNSCHEDULABLE,
    SchedulerMetrics,
)
from sampan.scheduler.plugins.preemption import fit_error_message
from sampan.scheduler.queue import QueuedPodInfo, SchedulingQueue

__all__ = [
    "LEASE_NAME",
    "LEASE_NAMESPACE",
    "MAX_BINDS_IN_FLIGHT",
    "Scheduler",
    "num_feasible_nodes_to_find",
]

log = logging.getLogger(__name__)

LEASE_NAMESPACE = "kube-system"
LEASE_NAME = "kube-scheduler"
REPORTING_CONTROLLER = "default-scheduler"
MAX_BINDS_IN_FLIGHT = 128
"""Binding cycles running at once; the scheduling loop waits for a slot (backpressure)."""
MAX_STATUS_WRITES_IN_FLIGHT = 16
MIN_FEASIBLE_NODES_TO_FIND = 100
MIN_FEASIBLE_NODES_PERCENTAGE = 5
MIN_FILTER_CHUNK = 32
INFORMER_SYNC_TIMEOUT_S = 60.0
NEW_TERM_RETRY_S = 2.0
"""Pause before building a new term again after building one failed (informers that did not
sync on an overloaded server)."""
CYCLES_PER_YIELD = 1
"""Scheduling cycles between yields to the event loop (binding tasks, informers)."""


class _Context(Protocol):
    def fail(self, reason: str) -> None: ...


def num_feasible_nodes_to_find(percentage: int | None, num_nodes: int) -> int:
    """How many feasible nodes a cycle looks for (upstream's ``numFeasibleNodesToFind``)."""
    if num_nodes < MIN_FEASIBLE_NODES_TO_FIND:
        return num_nodes
    pct = percentage or 0
    if pct == 0:
        pct = 50 - num_nodes // 125
        if pct < MIN_FEASIBLE_NODES_PERCENTAGE:
            pct = MIN_FEASIBLE_NODES_PERCENTAGE
    found = num_nodes * pct // 100
    return max(found, MIN_FEASIBLE_NODES_TO_FIND)


def _now() -> str:
    return times.now()


def _terminal(pod: Mapping[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def _pod_changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Upstream's ``isPodUpdated``: anything but status/resourceVersion/managedFields."""
    if old.get("spec") != new.get("spec"):
        return True
    skip = ("resourceVersion", "generation", "managedFields")
    om = {k: v for k, v in (old.get("metadata") or {}).items() if k not in skip}
    nm = {k: v for k, v in (new.get("metadata") or {}).items() if k not in skip}
    return om != nm


def _node_changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Changes that may make a pod fit: labels, taints, unschedulable, allocatable, images."""
    om, nm = old.get("metadata") or {}, new.get("metadata") or {}
    os_, ns_ = old.get("spec") or {}, new.get("spec") or {}
    ost, nst = old.get("status") or {}, new.get("status") or {}
    return (
        om.get("labels") != nm.get("labels")
        or os_.get("taints") != ns_.get("taints")
        or os_.get("unschedulable") != ns_.get("unschedulable")
        or ost.get("allocatable") != nst.get("allocatable")
        or ost.get("capacity") != nst.get("capacity")
        or ost.get("images") != nst.get("images")
    )


class Scheduler:
    """The scheduler component; see the module docstring.

    Construction validates ``options.args`` and any configuration file they name (raises
    ``SchedulerConfigError``). ``start(ctx)`` returns once the informers have synced;
    ``stop()`` stops everything it started.
    """

    name = "scheduler"

    def __init__(
        self,
        client_config: ClientConfig,
        options: SchedulerOptions,
        *,
        metrics_registry: CollectorRegistry | None = None,
    ) -> None:
        """``metrics_registry`` gets the ``scheduler_*`` series (the supervisor passes the
        registry the API server serves on ``/metrics``; None: a private one)."""
        self.options, self.configuration = resolve_options(options)
        self.client_config = client_config.with_user_agent(
            f"{client_config.user_agent} (scheduler)"
        )
        self.client: Client | None = None
        self.factory: SharedInformerFactory | None = None
        self.cache = SchedulerCache()
        self.frameworks: dict[str, Framework] = {}
        self.queue: SchedulingQueue | None = None
        self.recorder: EventRecorder | None = None
        self.informers: dict[str, Informer] = {}
        self._ctx: _Context | None = None
        self._stopping = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._main: asyncio.Task[None] | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._new_term: asyncio.Task[None] | None = None
        self.terms = 0
        """Terms built so far (one per start, one more after each lost lease)."""
        self._reset_term_state()
        self.scheduled = 0
        """Pods bound so far (for benchmarks and diagnostics)."""
        self.failed_attempts = 0
        self.cycles = 0
        self.cycle_s = 0.0
        """Scheduling cycles run and the wall time spent in them (the algorithm alone)."""
        self.metrics = SchedulerMetrics(
            metrics_registry if metrics_registry is not None else CollectorRegistry(),
            self._pending_counts,
        )
        self._cycle_started = perf_counter()

    @property
    def config(self) -> SchedulerConfiguration:
        return self.configuration

    # -- lifecycle ---------------------------------------------------------------------------

    def _reset_term_state(self) -> None:
        """What one term owns, fresh (the counters and metrics outlive terms)."""
        self.cache = SchedulerCache()
        self.frameworks = {}
        self.queue = None
        self.informers = {}
        self._bind_slots = asyncio.Semaphore(MAX_BINDS_IN_FLIGHT)
        self._status_slots = asyncio.Semaphore(MAX_STATUS_WRITES_IN_FLIGHT)
        self._next_start = 0
        self._waiting: dict[str, asyncio.Future[Status | None]] = {}

    async def start(self, ctx: _Context) -> None:
        self._ctx = ctx
        try:
            await self._begin_term()
        except BaseException:
            await self.stop()
            raise

    async def _begin_term(self) -> None:
        """Client, informers (synced), then compete for the lease (or just schedule)."""
        self.terms += 1
        self.client = Client(self.client_config)
        await self._start_informers()
        if self.options.leader_elect:
            elector = LeaderElector(
                self.client,
                LEASE_NAMESPACE,
                LEASE_NAME,
                self.options.identity,
                on_started_leading=self._lead,
                on_stopped_leading=self._on_stopped_leading,
                lease_duration_s=self.options.lease_duration_s,
                renew_deadline_s=self.options.renew_deadline_s,
                retry_period_s=self.options.retry_period_s,
            )
            self._main = asyncio.get_running_loop().create_task(
                elector.run(), name="scheduler-leader-election"
            )
        else:
            self._main = asyncio.get_running_loop().create_task(self._lead(), name="scheduler-loop")
        self._main.add_done_callback(self._main_ended)

    def _main_ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("scheduler: main task failed", exc_info=exc)
            if self._ctx is not None:
                self._ctx.fail(f"scheduler failed: {exc}")

    def _on_stopped_leading(self) -> None:
        if self._stopping:
            return  # our own shutdown released the lease
        log.warning(
            "scheduler: lost the lease %s/%s; term %d ended, competing again",
            LEASE_NAMESPACE,
            LEASE_NAME,
            self.terms,
        )
        if self._new_term is None or self._new_term.done():
            self._new_term = asyncio.get_running_loop().create_task(
                self._next_term(self._main), name="scheduler-new-term"
            )
            self._new_term.add_done_callback(self._main_ended)

    async def _next_term(self, ended: asyncio.Task[None] | None) -> None:
        """Tear the lost term down and build a new one; retried until it starts or the
        scheduler stops."""
        if ended is not None:
            await asyncio.wait({ended})  # the elector returns right after telling us
        while not self._stopping:
            await self._teardown()
            self._reset_term_state()
            try:
                await self._begin_term()
                return
            except Exception:
                log.exception("scheduler: could not build term %d; trying again", self.terms)
            await asyncio.sleep(NEW_TERM_RETRY_S)

    async def stop(self) -> None:
        self._stopping = True
        current = asyncio.current_task()
        if self._new_term is not None and self._new_term is not current:
            self._new_term.cancel()
            await asyncio.wait({self._new_term})
        await self._teardown()

    async def _teardown(self) -> None:
        """Stop everything the current term started (idempotent)."""
        if self.queue is not None:
            self.queue.close()
        for task in (self._main, self._flusher):
            if task is not None:
                task.cancel()
        pending = [t for t in (self._main, self._flusher) if t is not None]
        if pending:
            await asyncio.wait(pending)
        self._main = self._flusher = None
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks))
        if self.recorder is not None:
            await self.recorder.stop()
            self.recorder = None
        if self.factory is not None:
            await self.factory.stop()
            self.factory = None
        if self.client is not None:
            await self.client.close()
            self.client = None

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("scheduler: task %s failed", task.get_name(), exc_info=task.exception())

    # -- wiring ------------------------------------------------------------------------------

    def build(
        self,
        listers: Mapping[str, Callable[[], list[dict[str, Any]]]],
        getters: Mapping[str, Callable[[str], dict[str, Any] | None]],
    ) -> None:
        """Build the profiles' frameworks and the queue over these object listers/getters
        (the informers' caches; benchmarks and tests may pass their own)."""
        for profile in self.configuration.profiles:
            handle = Handle(self.cache, listers, getters, self.client)
            fwk = build_framework(profile, handle, self.configuration.percentage_of_nodes_to_score)
            handle.framework = fwk
            handle.nominate = self._nominate
            handle.evict = self._evict
            self.frameworks[profile.scheduler_name] = fwk
        first = next(iter(self.frameworks.values()))
        plugin_events: dict[str, frozenset[str]] = {}
        for fwk in self.frameworks.values():
            for name, plugin in fwk.plugins.items():
                plugin_events[name] = plugin.events
        self.queue = SchedulingQueue(
            first.sort_key(),
            self._pre_enqueue,
            plugin_events,
            initial_backoff_s=self.configuration.initial_backoff_s,
            max_backoff_s=self.configuration.max_backoff_s,
        )

    async def _start_informers(self) -> None:
        assert self.client is not None
        self.factory = factory = SharedInformerFactory(self.client, transform=compact)
        kinds = {
            "nodes": NODES,
            "persistentvolumeclaims": PVCS,
            "persistentvolumes": PVS,
            "storageclasses": STORAGECLASSES,
            "services": SERVICES,
            "replicasets": REPLICASETS,
            "statefulsets": STATEFULSETS,
            "replicationcontrollers": REPLICATIONCONTROLLERS,
            "namespaces": NAMESPACES,
            "poddisruptionbudgets": PDBS,
            "priorityclasses": PRIORITYCLASSES,
            "pods": PODS,
        }
        for kind, resource in kinds.items():
            self.informers[kind] = factory.informer(resource)
        listers = {k: inf.cache.list for k, inf in self.informers.items()}
        getters = {k: inf.cache.get for k, inf in self.informers.items()}
        self.build(listers, getters)
        self.recorder = EventRecorder(self.client, REPORTING_CONTROLLER)
        self.recorder.start()
        nodes = self.informers["nodes"]
        nodes.add_event_handler(
            on_add=self._on_node_add, on_update=self._on_node_update, on_delete=self._on_node_delete
        )
        for kind, event in (
            ("persistentvolumeclaims", EV_PVC),
            ("persistentvolumes", EV_PV),
            ("storageclasses", EV_STORAGE_CLASS),
            ("services", EV_SERVICE),
            ("namespaces", EV_NAMESPACE),
        ):
            self.informers[kind].add_event_handler(
                on_add=lambda _o, e=event: self._move(e),
                on_update=lambda _o, _n, e=event: self._move(e),
                on_delete=lambda _o, e=event: self._move(e),
            )
        factory.start()
        others = [inf for k, inf in self.informers.items() if k != "pods"]
        synced = await asyncio.gather(*(inf.wait_synced(INFORMER_SYNC_TIMEOUT_S) for inf in others))
        if not all(synced):
            raise TimeoutError("scheduler: informers did not sync")
        # Pods last: their priority needs the PriorityClasses, their nodes should be known.
        self.informers["pods"].add_event_handler(
            on_add=self._on_pod_add, on_update=self._on_pod_update, on_delete=self._on_pod_delete
        )
        if not await self.informers["pods"].wait_synced(INFORMER_SYNC_TIMEOUT_S):
            raise TimeoutError("scheduler: pod informer did not sync")

    def _move(self, event: str) -> None:
        if self.queue is not None:
            self.queue.move_all(event)

    def _pre_enqueue(self, pod: PodInfo) -> Status | None:
        fwk = self.frameworks.get(pod.scheduler_name)
        return fwk.run_pre_enqueue(pod) if fwk is not None else None

    def _priority(self, pod: Mapping[str, Any]) -> int:
        spec = pod.get("spec") or {}
        if spec.get("priority") is not None:
            return int(spec["priority"])
        pcs = self.informers["priorityclasses"].cache
        name = spec.get("priorityClassName")
        if name:
            pc = pcs.get(name)
            return int((pc or {}).get("value") or 0)
        for pc in pcs.list():
            if pc.get("globalDefault"):
                return int(pc.get("value") or 0)
        return 0

    def _pod_info(self, pod: dict[str, Any]) -> PodInfo:
        return PodInfo(pod, self._priority(pod))

    # -- informer handlers (quick; no awaits) -------------------------------------------------

    def _on_node_add(self, node: dict[str, Any]) -> None:
        self.cache.add_node(node)
        self._move(EV_NODE_ADD)

    def _on_node_update(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        self.cache.update_node(new)
        if _node_changed(old, new):
            self._move(EV_NODE_UPDATE)

    def _on_node_delete(self, node: dict[str, Any]) -> None:
        self.cache.remove_node(node["metadata"]["name"])

    def _responsible(self, pi: PodInfo) -> bool:
        return pi.scheduler_name in self.frameworks

    def _on_pod_add(self, pod: dict[str, Any]) -> None:
        if _terminal(pod):
            return
        pi = self._pod_info(pod)
        if pi.node_name:
            self.cache.add_pod(pi)
            self.cache.set_nominated(pi, None)
            assert self.queue is not None
            if self.queue.unschedulable:
                self.queue.move_all(EV_ASSIGNED_POD_ADD)
            return
        if not self._responsible(pi) or pi.terminating:
            return
        nominated = (pod.get("status") or {}).get("nominatedNodeName")
        self.cache.set_nominated(pi, nominated)
        if self.cache.is_assumed(pi.uid):
            return
        assert self.queue is not None
        self.queue.add(pi)

    def _on_pod_update(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        assert self.queue is not None
        if _terminal(new):
            self._on_pod_delete(new)
            return
        new_node = (new.get("spec") or {}).get("nodeName")
        if new_node:
            was_assigned = bool((old.get("spec") or {}).get("nodeName"))
            uid = (new.get("metadata") or {}).get("uid") or ""
            assumed = self.cache.pod_info(uid) if self.cache.is_assumed(uid) else None
            if assumed is not None and assumed.node_name == new_node and not was_assigned:
                pi = assumed.with_pod(new)  # our own binding confirmed: nothing to re-parse
            else:
                pi = self._pod_info(new)
            self.queue.delete(pi.uid)
            self.cache.set_nominated(pi, None)
            self.cache.update_pod(pi)
            if self.queue.unschedulable:
                if not was_assigned:
                    self.queue.move_all(EV_ASSIGNED_POD_ADD)
                elif (old.get("metadata") or {}).get("labels") != (new.get("metadata") or {}).get(
                    "labels"
                ) or pi.terminating:
                    self.queue.move_all(EV_ASSIGNED_POD_UPDATE)
            return
        pi = self._pod_info(new)
        if not self._responsible(pi):
            return
        if pi.terminating:
            self.queue.delete(pi.uid)
            self.cache.set_nominated(pi, None)
            return
        self.cache.set_nominated(pi, (new.get("status") or {}).get("nominatedNodeName"))
        if self.cache.is_assumed(pi.uid):
            return
        if pi.uid not in self.queue.pods:
            self.queue.add(pi)
        elif _pod_changed(old, new):
            self.queue.update(pi)
        else:
            self.queue.pods[pi.uid].pod = pi

    def _on_pod_delete(self, pod: dict[str, Any]) -> None:
        assert self.queue is not None
        meta = pod.get("metadata") or {}
        uid = meta.get("uid") or f"{meta.get('namespace')}/{meta.get('name')}"
        self.queue.delete(uid)
        self.cache.clear_nominated(uid)
        waiting = self._waiting.pop(uid, None)
        if waiting is not None and not waiting.done():
            waiting.set_result(Status(2, "pod deleted"))
        if self.cache.remove_pod(uid) is not None:
            self.queue.move_all(EV_ASSIGNED_POD_DELETE)

    # -- the loop ----------------------------------------------------------------------------

    async def _lead(self) -> None:
        assert self.queue is not None
        log.info("scheduler: scheduling pods (%d profiles)", len(self.frameworks))
        self._flusher = asyncio.get_running_loop().create_task(
            self.queue.run(), name="scheduler-queue-flush"
        )
        self._flusher.add_done_callback(self._task_done)
        queue = self.queue
        while True:
            q = queue.pop_nowait()
            if q is None:
                q = await queue.pop()
                if q is None:
                    return
            await self._bind_slots.acquire()
            started = self._cycle_started = perf_counter()
            try:
                self.schedule_one(q)
            except Exception:
                self._bind_slots.release()
                log.exception("scheduler: scheduling %s failed", q.pod.key)
                self._attempt(ERROR, q.pod)
                queue.add_backoff(q)
            self.cycles += 1
            self.cycle_s += perf_counter() - started
            # Let binding tasks and informers run between cycles.
            await asyncio.sleep(0)

    def schedule_one(self, q: QueuedPodInfo) -> None:
        """One scheduling cycle (synchronous). Holds one bind slot, released by the binding
        task or here on failure."""
        assert self.queue is not None
        pi = q.pod
        fwk = self.frameworks.get(pi.scheduler_name)
        if fwk is None or pi.uid not in self.queue.pods or pi.terminating:
            self.queue.delete(pi.uid)
            self._bind_slots.release()
            return
        cycle = self.queue.scheduling_cycle
        state = CycleState()
        failed: dict[str, Status] = {}
        nodes = self.cache.node_list
        num_nodes = len(nodes)
        st = fwk.run_pre_filter(state, pi)
        pre_filter_msg = ""
        feasible: list[NodeInfo] = []
        if st is not None:
            if not st.rejected:
                self._fail(fwk, q, cycle, st.message or "PreFilter error", {st.plugin}, error=True)
                return
            pre_filter_msg = st.message
            for n in nodes:
                failed[n.name] = st
        elif num_nodes:
            feasible = self._find_feasible(fwk, state, pi, failed)
        if not feasible:
            if num_nodes == 0:
                self._fail(fwk, q, cycle, "no nodes available to schedule pods", set())
                return
            nominated, post = fwk.run_post_filter(state, pi, failed)
            reasons: dict[str, int] = {}
            if not pre_filter_msg:
                for status in failed.values():
                    for r in status.reasons:
                        reasons[r] = reasons.get(r, 0) + 1
            msg = f"0/{num_nodes} nodes are available:"
            if pre_filter_msg:
                msg += f" {pre_filter_msg}."
                if post is not None and post.message:
                    msg += f" {post.message}."
            else:
                msg = fit_error_message(
                    num_nodes, reasons, post.message if post is not None else ""
                )
            plugins = {s.plugin for s in failed.values() if s.plugin}
            if st is not None and st.plugin:
                plugins.add(st.plugin)
            self._fail(fwk, q, cycle, msg, plugins, nominated=nominated)
            return
        if len(feasible) == 1:
            host = feasible[0]
        else:
            scores = fwk.run_score(state, pi, feasible)
            host = _select_host(feasible, scores)
        self._assume_and_bind(fwk, state, q, host.name)

    def _find_feasible(
        self, fwk: Framework, state: CycleState, pi: PodInfo, failed: dict[str, Status]
    ) -> list[NodeInfo]:
        nodes = self.cache.node_list
        total = len(nodes)
        nominated = (pi.pod.get("status") or {}).get("nominatedNodeName")
        if nominated:
            info = self.cache.nodes.get(nominated)
            if info is not None:
                passed = fwk.run_filter(state, pi, [info], {})
                if passed:
                    return passed
        want = num_feasible_nodes_to_find(fwk.percentage_of_nodes_to_score, total)
        start = self._next_start % total
        feasible: list[NodeInfo] = []
        processed = 0
        index = start
        while len(feasible) < want and processed < total:
            take = min(total - processed, max(want - len(feasible), MIN_FILTER_CHUNK))
            end = index + take
            batch = nodes[index:end]
            if end > total:
                batch += nodes[: end - total]
            processed += take
            index = end % total
            feasible.extend(fwk.run_filter(state, pi, batch, failed))
        self._next_start = (start + processed) % total
        if len(feasible) > want:
            del feasible[want:]
        return feasible

    def _assume_and_bind(
        self, fwk: Framework, state: CycleState, q: QueuedPodInfo, node_name: str
    ) -> None:
        assert self.queue is not None
        pi = q.pod
        assumed = self.cache.assume_pod(pi, node_name)
        self.queue.done(pi.uid)
        st = fwk.run_reserve(state, assumed, node_name)
        wait_s = 0.0
        if st is None:
            st, wait_s = fwk.run_permit(state, assumed, node_name)
            if st is not None and st.code == WAIT:
                st = None
            elif st is not None:
                fwk.run_unreserve(state, assumed, node_name)
        else:
            fwk.run_unreserve(state, assumed, node_name)
        if st is not None:
            self.cache.forget_pod(assumed)
            self.queue.requeue(pi, q.attempts)
            self._bind_slots.release()
            self._attempt(ERROR if st.code == 1 else UNSCHEDULABLE, pi)
            self._report_failure(pi, st.message, error=st.code == 1)
            return
        self._spawn(
            self._binding_cycle(
                fwk, state, pi, assumed, node_name, q.attempts, wait_s, self._cycle_started
            ),
            name=f"scheduler-bind-{pi.key}",
        )

    async def _binding_cycle(
        self,
        fwk: Framework,
        state: CycleState,
        pi: PodInfo,
        assumed: PodInfo,
        node_name: str,
        attempts: int,
        wait_s: float,
        started: float,
    ) -> None:
        try:
            st: Status | None = None
            if wait_s > 0:
                future: asyncio.Future[Status | None] = asyncio.get_running_loop().create_future()
                self._waiting[pi.uid] = future
                try:
                    st = await asyncio.wait_for(future, wait_s)
                except TimeoutError:
                    st = Status(2, "rejected due to timeout after waiting at permit")
                finally:
                    self._waiting.pop(pi.uid, None)
            if st is None:
                st = await fwk.run_pre_bind(state, assumed, node_name)
            if st is None:
                st = await fwk.run_bind(state, assumed, node_name)
            if st is None or st.ok:
                self.scheduled += 1
                self._attempt(SCHEDULED, pi, started)
                fwk.run_post_bind(state, assumed, node_name)
                if self.recorder is not None:
                    self.recorder.event(
                        pi.pod,
                        TYPE_NORMAL,
                        "Scheduled",
                        f"Successfully assigned {pi.namespace}/{pi.name} to {node_name}",
                        action="Binding",
                    )
                return
            fwk.run_unreserve(state, assumed, node_name)
            self.cache.forget_pod(assumed)
            self._attempt(ERROR, pi, started)
            assert self.queue is not None
            self.queue.move_all(EV_ASSIGNED_POD_DELETE)
            current = self.informers["pods"].cache.get(pi.key)
            if current is not None and not (current.get("spec") or {}).get("nodeName"):
                self.queue.requeue(self._pod_info(current), attempts)
                self._report_failure(pi, f"Binding rejected: {st.message}", error=True)
        finally:
            self._bind_slots.release()

    # -- metrics -----------------------------------------------------------------------------

    def _attempt(self, result: str, pi: PodInfo, started: float | None = None) -> None:
        """Count one scheduling attempt of ``pi`` (from ``started``, default: this cycle)."""
        since = self._cycle_started if started is None else started
        self.metrics.attempt(result, pi.scheduler_name, perf_counter() - since)

    def _pending_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(PENDING_QUEUES, 0)
        if self.queue is None:
            return counts
        for q in list(self.queue.pods.values()):
            if q.where == "unschedulable" and q.gated:
                counts["gated"] += 1
            elif q.where in counts:
                counts[q.where] += 1
        return counts

    # -- failures ----------------------------------------------------------------------------

    def _fail(
        self,
        fwk: Framework,
        q: QueuedPodInfo,
        cycle: int,
        message: str,
        plugins: set[str],
        *,
        nominated: str | None = None,
        error: bool = False,
    ) -> None:
        assert self.queue is not None
        self._bind_slots.release()
        self.failed_attempts += 1
        self._attempt(ERROR if error else UNSCHEDULABLE, q.pod)
        if error:
            self.queue.add_backoff(q)
        else:
            self.queue.add_unschedulable(q, cycle, plugins)
        if nominated is not None:
            self.cache.set_nominated(q.pod, nominated or None)
        self._report_failure(q.pod, message, error=error, nominated=nominated)

    def _report_failure(
        self, pi: PodInfo, message: str, *, error: bool = False, nominated: str | None = None
    ) -> None:
        if self.recorder is not None:
            self.recorder.event(
                pi.pod, TYPE_WARNING, "FailedScheduling", message, action="Scheduling"
            )
        reason = "SchedulerError" if error else "Unschedulable"
        status = pi.pod.get("status") or {}
        current = next(
            (c for c in status.get("conditions") or () if c.get("type") == "PodScheduled"), None
        )
        changed = (
            current is None
            or current.get("status") != "False"
            or current.get("reason") != reason
            or current.get("message") != message
        )
        nominated_changed = nominated is not None and nominated != (
            status.get("nominatedNodeName") or ""
        )
        if not changed and not nominated_changed:
            return
        condition = {
            "type": "PodScheduled",
            "status": "False",
            "reason": reason,
            "message": message,
            "lastProbeTime": None,
            "lastTransitionTime": (
                current.get("lastTransitionTime")
                if current is not None and current.get("status") == "False"
                else _now()
            ),
        }
        body: dict[str, Any] = {"status": {"conditions": [condition]}}
        if nominated is not None:
            body["status"]["nominatedNodeName"] = nominated or None
        self._spawn(self._patch_status(pi, body), name=f"scheduler-status-{pi.key}")

    async def _patch_status(self, pi: PodInfo, body: dict[str, Any]) -> None:
        assert self.client is not None
        async with self._status_slots:
            try:
                await self.client.patch(
                    PODS,
                    pi.name,
                    body,
                    namespace=pi.namespace,
                    subresource="status",
                    patch_type=PatchType.STRATEGIC,
                )
            except ClientError as e:
                log.debug("scheduler: updating status of %s: %s", pi.key, e)

    # -- preemption callbacks ----------------------------------------------------------------

    def _nominate(self, pi: PodInfo, node_name: str) -> None:
        """Record (or clear, with "") ``status.nominatedNodeName`` of a pending pod."""
        self.cache.set_nominated(pi, node_name or None)
        if (pi.pod.get("status") or {}).get("nominatedNodeName", "") == node_name:
            return
        body = {"status": {"nominatedNodeName": node_name or None}}
        self._spawn(self._patch_status(pi, body), name=f"scheduler-nominate-{pi.key}")

    def _evict(self, victim: PodInfo, preemptor: PodInfo, node_name: str) -> None:
        if self.recorder is not None:
            self.recorder.event(
                victim.pod,
                TYPE_NORMAL,
                "Preempted",
                f"Preempted by pod {preemptor.uid} on node {node_name}",
                action="Preempting",
            )
        self._spawn(self._delete_victim(victim), name=f"scheduler-preempt-{victim.key}")

    async def _delete_victim(self, victim: PodInfo) -> None:
        assert self.client is not None
        with contextlib.suppress(ClientError):
            await self.client.delete(PODS, victim.name, namespace=victim.namespace)


def _select_host(nodes: list[NodeInfo], scores: list[int]) -> NodeInfo:
    """The highest score; ties broken uniformly at random."""
    best = max(scores)
    ties = [i for i, s in enumerate(scores) if s == best]
    return nodes[ties[0] if len(ties) == 1 else random.choice(ties)]
