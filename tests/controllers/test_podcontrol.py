"""Pure helpers shared by the workload controllers: ranking, arithmetic, hashing, expectations."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from sampan.client.workqueue import FakeClock
from sampan.controllers.podcontrol import (
    Expectations,
    SlowStartError,
    deletion_rank,
    format_time,
    is_pod_active,
    is_pod_available,
    scaled_value,
    set_condition,
    siblings_per_node,
    slow_start,
    template_hash,
    wall_now,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def pod(
    name: str,
    *,
    node: str = "",
    phase: str = "Running",
    ready_at: datetime | None = None,
    created: datetime = T0,
    restarts: int = 0,
) -> dict:
    conditions = []
    if ready_at is not None:
        conditions.append(
            {"type": "Ready", "status": "True", "lastTransitionTime": format_time(ready_at)}
        )
    return {
        "metadata": {"name": name, "namespace": "ns", "creationTimestamp": format_time(created)},
        "spec": {"nodeName": node} if node else {},
        "status": {
            "phase": phase,
            "conditions": conditions,
            "containerStatuses": [{"restartCount": restarts}],
        },
    }


def test_deletion_rank_prefers_unassigned_pending_notready_then_newest() -> None:
    pods = [
        pod("ready-old", node="n1", ready_at=T0, created=T0),
        pod("ready-new", node="n1", ready_at=T0, created=T0 + timedelta(minutes=5)),
        pod("unassigned", phase="Pending"),
        pod("pending", node="n1", phase="Pending"),
        pod("notready", node="n1"),
        pod("ready-recently", node="n1", ready_at=T0 + timedelta(minutes=1)),
    ]
    counts = siblings_per_node(pods)
    order = [p["metadata"]["name"] for p in sorted(pods, key=lambda p: deletion_rank(p, counts))]
    assert order == [
        "unassigned",
        "pending",
        "notready",
        "ready-recently",
        "ready-new",
        "ready-old",
    ]


def test_deletion_rank_doubled_up_nodes_first_and_restarts() -> None:
    crowded = [pod(f"c{i}", node="crowded", ready_at=T0) for i in range(3)]
    alone = pod("alone", node="alone", ready_at=T0)
    counts = siblings_per_node([*crowded, alone])
    assert min([alone, *crowded], key=lambda p: deletion_rank(p, counts)) is not alone
    restarted = pod("restarted", node="x", ready_at=T0, restarts=4)
    calm = pod("calm", node="x", ready_at=T0)
    assert sorted([calm, restarted], key=deletion_rank)[0] is restarted


@pytest.mark.parametrize(
    ("value", "total", "up", "expected"),
    [
        ("25%", 10, True, 3),
        ("25%", 10, False, 2),
        ("100%", 7, False, 7),
        ("0%", 7, True, 0),
        (3, 10, True, 3),
        ("4", 10, False, 4),
        (None, 10, True, 0),
    ],
)
def test_scaled_value_rounds_as_upstream(value, total, up, expected) -> None:
    assert scaled_value(value, total, round_up=up) == expected


def test_template_hash_is_stable_and_depends_on_template_and_collisions() -> None:
    template = {"metadata": {"labels": {"app": "a"}}, "spec": {"containers": [{"name": "c"}]}}
    reordered = {"spec": {"containers": [{"name": "c"}]}, "metadata": {"labels": {"app": "a"}}}
    first = template_hash(template)
    assert first == template_hash(reordered)
    assert first != template_hash(template, 1)
    assert first != template_hash({**template, "spec": {"containers": [{"name": "d"}]}})
    assert all(ch in "bcdfghjklmnpqrstvwxz2456789" for ch in first)
    assert 1 <= len(first) <= 10


def test_pod_predicates() -> None:
    now = T0 + timedelta(seconds=10)
    ready = pod("r", ready_at=T0)
    assert is_pod_active(ready)
    assert is_pod_available(ready, 0, now)
    assert is_pod_available(ready, 10, now)
    assert not is_pod_available(ready, 11, now)
    done = pod("d", phase="Succeeded")
    assert not is_pod_active(done)
    deleting = pod("x")
    deleting["metadata"]["deletionTimestamp"] = format_time(T0)
    assert not is_pod_active(deleting)


def test_expectations_block_until_observed_or_expired() -> None:
    clock = FakeClock(1000.0)
    exp = Expectations(clock, ttl_s=60)
    assert exp.satisfied("ns/rs")
    exp.expect("ns/rs", adds=2, deletes=["ns/p1"])
    assert not exp.satisfied("ns/rs")
    exp.creation_observed("ns/rs")
    exp.creation_observed("ns/rs")
    assert not exp.satisfied("ns/rs")
    exp.deletion_observed("ns/rs", "ns/p1")
    assert exp.satisfied("ns/rs")
    exp.expect("ns/rs", adds=1)
    clock.advance(61)
    assert exp.satisfied("ns/rs")
    exp.expect("ns/rs", adds=3)
    exp.creations_failed("ns/rs", 3)
    assert exp.satisfied("ns/rs")


async def test_slow_start_doubles_and_stops_at_first_failing_batch() -> None:
    calls: list[int] = []

    async def ok(i: int) -> None:
        calls.append(i)

    assert await slow_start(10, ok) == 10
    assert sorted(calls) == list(range(10))

    calls.clear()

    async def fail_from_3(i: int) -> None:
        calls.append(i)
        if i >= 3:
            raise RuntimeError("quota")

    with pytest.raises(SlowStartError) as info:
        await slow_start(20, fail_from_3)
    # batches 1, 2, 4: the third batch (3..6) fails; no fourth batch is tried
    assert sorted(calls) == list(range(7))
    assert info.value.done == 3
    assert info.value.attempted == 7
    assert await slow_start(0, ok) == 0
    await asyncio.sleep(0)


def test_set_condition_keeps_transition_time_when_status_unchanged() -> None:
    status: dict = {}
    assert set_condition(status, "Available", "False", "A", "m", T0)
    assert not set_condition(status, "Available", "False", "A", "m", T0 + timedelta(1))
    assert set_condition(status, "Available", "False", "B", "m", T0 + timedelta(1))
    assert status["conditions"][0]["lastTransitionTime"] == format_time(T0)
    assert set_condition(status, "Available", "True", "B", "m", T0 + timedelta(2))
    assert status["conditions"][0]["lastTransitionTime"] == format_time(T0 + timedelta(2))


def test_wall_now_follows_a_fake_clock() -> None:
    clock = FakeClock(T0.timestamp())
    assert wall_now(clock) == T0
    clock.advance(30)
    assert wall_now(clock) == T0 + timedelta(seconds=30)


def test_claim_candidates_are_the_owners_and_the_namespaces_orphans() -> None:
    from sampan.client.informer import Cache
    from sampan.controllers.podcontrol import (
        INDEX_CONTROLLER,
        claim_candidates,
        index_controller,
        orphan_key,
    )

    def obj(name: str, namespace: str, controller: str | None, other: str | None = None) -> dict:
        refs = []
        if other is not None:  # an owner that is not the controller
            refs.append({"uid": other, "kind": "ConfigMap", "name": "x"})
        if controller is not None:
            refs.append({"uid": controller, "controller": True, "kind": "ReplicaSet", "name": "x"})
        return {"metadata": {"name": name, "namespace": namespace, "ownerReferences": refs}}

    cache = Cache()
    cache.add_indexers({INDEX_CONTROLLER: index_controller})
    cache.add_indexers({INDEX_CONTROLLER: index_controller})  # a second controller: no-op
    with pytest.raises(ValueError):
        cache.add_indexers({INDEX_CONTROLLER: lambda o: ()})
    for item in (
        obj("mine", "a", "uid-1"),
        obj("mine-too", "a", "uid-1", other="uid-9"),
        obj("theirs", "a", "uid-2"),
        obj("orphan", "a", None),
        obj("owned-not-controlled", "a", None, other="uid-1"),
        obj("elsewhere", "b", "uid-1"),  # an ownerReference never crosses namespaces
        obj("orphan-elsewhere", "b", None),
    ):
        cache._upsert(item)
    owner = {"metadata": {"name": "rs", "namespace": "a", "uid": "uid-1"}}
    names = sorted(o["metadata"]["name"] for o in claim_candidates(cache, owner))
    assert names == ["mine", "mine-too", "orphan", "owned-not-controlled"]
    assert index_controller(obj("o", "a", None)) == (orphan_key("a"),)
    assert "/" in orphan_key("a")  # never a uid
