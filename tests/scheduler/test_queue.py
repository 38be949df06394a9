"""The scheduling queue: ordering, backoff, unschedulable pods, gates (a fake clock)."""

from __future__ import annotations

from sampan.scheduler.framework import PodInfo, Status
from sampan.scheduler.plugins.basic import PrioritySort, SchedulingGates
from sampan.scheduler.queue import SchedulingQueue


class Clock:
    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


def pod(name: str, priority: int = 0, gates: list[str] | None = None) -> PodInfo:
    spec: dict = {"containers": [], "priority": priority}
    if gates:
        spec["schedulingGates"] = [{"name": g} for g in gates]
    return PodInfo({"metadata": {"name": name, "namespace": "ns", "uid": name}, "spec": spec})


def make_queue(clock: Clock) -> SchedulingQueue:
    gates = SchedulingGates({}, None)  # type: ignore[arg-type]

    def pre_enqueue(p: PodInfo) -> Status | None:
        return gates.pre_enqueue(p)

    events = {
        "NodeResourcesFit": frozenset({"Node/Add"}),
        "NodeAffinity": frozenset({"Node/Update"}),
    }
    return SchedulingQueue(PrioritySort.sort_key, pre_enqueue, events, clock=clock)


def test_priority_then_fifo() -> None:
    clock = Clock()
    queue = make_queue(clock)
    for name, prio in (("a", 0), ("b", 10), ("c", 0), ("d", 10)):
        queue.add(pod(name, prio))
        clock.now_s += 1
    order = []
    while (q := queue.pop_nowait()) is not None:
        order.append(q.pod.name)
    assert order == ["b", "d", "a", "c"]


def test_backoff_doubles_to_the_cap() -> None:
    queue = make_queue(Clock())
    assert [queue.backoff_duration_s(n) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]


def test_unschedulable_pods_move_on_events_their_plugins_registered() -> None:
    clock = Clock()
    queue = make_queue(clock)
    queue.add(pod("fit"))
    queue.add(pod("affinity"))
    q1 = queue.pop_nowait()
    q2 = queue.pop_nowait()
    assert q1 is not None and q2 is not None
    queue.add_unschedulable(q1, queue.scheduling_cycle, {"NodeResourcesFit"})
    queue.add_unschedulable(q2, queue.scheduling_cycle, {"NodeAffinity"})
    assert queue.counts()["unschedulable"] == 2
    assert queue.move_all("Node/Update") == 1
    # Still backing off (1 s after the first attempt): to backoffQ, then active after it.
    assert queue.counts()["backoff"] == 1
    assert queue.pop_nowait() is None
    clock.now_s += 1.5
    queue.flush_backoff()
    q = queue.pop_nowait()
    assert q is not None and q.pod.name == "affinity"


def test_a_move_during_the_cycle_sends_the_pod_to_backoff() -> None:
    queue = make_queue(Clock())
    queue.add(pod("p"))
    q = queue.pop_nowait()
    assert q is not None
    cycle = queue.scheduling_cycle
    queue.move_all("Node/Add")  # an event arrives while "p" is being scheduled
    queue.add_unschedulable(q, cycle, {"NodeAffinity"})
    assert queue.counts()["backoff"] == 1


def test_leftover_unschedulable_pods_are_flushed_after_five_minutes() -> None:
    clock = Clock()
    queue = make_queue(clock)
    queue.add(pod("p"))
    q = queue.pop_nowait()
    assert q is not None
    queue.add_unschedulable(q, queue.scheduling_cycle, {"NodeAffinity"})
    clock.now_s += 299
    queue.flush_unschedulable()
    assert queue.counts()["unschedulable"] == 1
    clock.now_s += 2
    queue.flush_unschedulable()
    assert queue.counts()["active"] == 1


def test_gated_pods_wait_for_their_gates_to_go() -> None:
    queue = make_queue(Clock())
    queue.add(pod("g", gates=["example.com/a"]))
    assert queue.pop_nowait() is None
    assert queue.move_all("Node/Add") == 0
    queue.update(pod("g"))
    q = queue.pop_nowait()
    assert q is not None and q.pod.name == "g"


def test_deleted_pods_leave_every_queue() -> None:
    queue = make_queue(Clock())
    queue.add(pod("p"))
    queue.delete("p")
    assert queue.pop_nowait() is None and len(queue) == 0
