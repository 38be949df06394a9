"""Work queue and rate limiters: pure unit tests on a fake clock (nothing sleeps for real)."""

from __future__ import annotations

import asyncio

import pytest

from sampan.client.workqueue import (
    BucketRateLimiter,
    FakeClock,
    ItemExponentialFailureRateLimiter,
    MaxOfRateLimiter,
    QueueShutDown,
    WorkQueue,
    default_controller_rate_limiter,
)


async def settle(rounds: int = 10) -> None:
    """Yield to the loop a few times so the sleepers a ``FakeClock`` woke run to their next
    wait."""
    for _ in range(rounds):
        await asyncio.sleep(0)


async def get_now(queue: WorkQueue[str]) -> str | None:
    """The next key if one is ready without waiting, else None."""
    task = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    if task.done():
        return task.result()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return None


# -- rate limiters ----------------------------------------------------------------------------


def test_exponential_backoff_doubles_and_caps() -> None:
    limiter = ItemExponentialFailureRateLimiter[str](0.005, 1000.0)
    delays = [limiter.when("a") for _ in range(20)]
    assert delays[:4] == [0.005, 0.01, 0.02, 0.04]
    assert delays[-1] == 1000.0
    assert all(d <= 1000.0 for d in delays)
    assert limiter.num_requeues("a") == 20
    # Keys are independent.
    assert limiter.when("b") == 0.005
    limiter.forget("a")
    assert limiter.num_requeues("a") == 0
    assert limiter.when("a") == 0.005


def test_exponential_backoff_never_overflows() -> None:
    limiter = ItemExponentialFailureRateLimiter[str](0.005, 1000.0)
    for _ in range(2000):
        delay = limiter.when("a")
    assert delay == 1000.0


def test_bucket_burst_then_qps_spacing() -> None:
    clock = FakeClock()
    bucket = BucketRateLimiter[str](qps=10, burst=100, clock=clock)
    assert [bucket.when(str(i)) for i in range(100)] == [0.0] * 100
    assert bucket.when("x") == pytest.approx(0.1)
    assert bucket.when("y") == pytest.approx(0.2)
    clock.advance(1.0)  # ten tokens come back, two were already promised
    assert bucket.when("z") == pytest.approx(0.0)
    clock.advance(1000.0)  # the bucket refills only up to the burst
    assert [bucket.when(str(i)) for i in range(100)] == [0.0] * 100
    assert bucket.when("w") > 0


def test_max_of_takes_the_longest_delay() -> None:
    clock = FakeClock()
    limiter = MaxOfRateLimiter[str](
        ItemExponentialFailureRateLimiter(0.005, 1000.0),
        BucketRateLimiter(qps=1, burst=1, clock=clock),
    )
    assert limiter.when("a") == 0.005  # bucket has a token; per-item says 5 ms
    assert limiter.when("a") == pytest.approx(1.0)  # bucket empty: 1 s beats 10 ms
    assert limiter.num_requeues("a") == 2
    limiter.forget("a")
    assert limiter.num_requeues("a") == 0


def test_rate_limiter_parameters_are_checked() -> None:
    with pytest.raises(ValueError):
        ItemExponentialFailureRateLimiter(0, 1)
    with pytest.raises(ValueError):
        BucketRateLimiter(qps=0, burst=1)
    with pytest.raises(ValueError):
        MaxOfRateLimiter()


# -- queue semantics --------------------------------------------------------------------------


async def test_fifo_and_repeated_adds_collapse() -> None:
    queue: WorkQueue[str] = WorkQueue("t", clock=FakeClock())
    for key in ["a", "b", "a", "c", "b"]:
        queue.add(key)
    assert len(queue) == 3
    assert [await queue.get() for _ in range(3)] == ["a", "b", "c"]
    assert await get_now(queue) is None


async def test_key_is_never_handed_out_twice_at_once() -> None:
    queue: WorkQueue[str] = WorkQueue("t", clock=FakeClock())
    queue.add("a")
    key = await queue.get()
    assert key == "a" and queue.processing == {"a"}
    queue.add("a")  # changed again while a worker holds it
    queue.add("a")
    assert await get_now(queue) is None  # not handed to a second worker
    queue.done("a")  # now it is queued again, once
    assert await get_now(queue) == "a"
    queue.done("a")
    assert await get_now(queue) is None


async def test_done_without_readd_does_not_requeue() -> None:
    queue: WorkQueue[str] = WorkQueue("t", clock=FakeClock())
    queue.add("a")
    await queue.get()
    queue.done("a")
    assert len(queue) == 0 and not queue.processing


async def test_waiting_getter_is_woken_by_add() -> None:
    queue: WorkQueue[str] = WorkQueue("t", clock=FakeClock())
    getters = [asyncio.ensure_future(queue.get()) for _ in range(2)]
    await asyncio.sleep(0)
    queue.add("a")
    await asyncio.sleep(0)
    done = [g for g in getters if g.done()]
    assert [g.result() for g in done] == ["a"]
    queue.add("b")
    results = await asyncio.gather(*getters)
    assert sorted(results) == ["a", "b"]


async def test_cancelled_getter_does_not_lose_the_wakeup() -> None:
    queue: WorkQueue[str] = WorkQueue("t", clock=FakeClock())
    first = asyncio.ensure_future(queue.get())
    second = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    queue.add("a")  # wakes `first`
    first.cancel()  # ... which is cancelled before it runs
    await asyncio.sleep(0)
    assert await asyncio.wait_for(second, timeout=5) == "a"
    assert first.cancelled()


async def test_add_after_waits_for_the_clock() -> None:
    clock = FakeClock()
    queue: WorkQueue[str] = WorkQueue("t", clock=clock)
    queue.add_after("a", 10.0)
    queue.add_after("b", 5.0)
    await settle()
    assert queue.waiting == 2 and await get_now(queue) is None
    clock.advance(5.0)
    await settle()
    assert await get_now(queue) == "b"
    clock.advance(4.9)
    await settle()
    assert await get_now(queue) is None
    clock.advance(0.1)
    await settle()
    assert await get_now(queue) == "a"
    assert queue.waiting == 0
    queue.shutdown()


async def test_add_after_keeps_the_earlier_time() -> None:
    clock = FakeClock()
    queue: WorkQueue[str] = WorkQueue("t", clock=clock)
    queue.add_after("a", 100.0)
    await settle()
    queue.add_after("a", 1.0)  # earlier: wins
    queue.add_after("a", 50.0)  # later: ignored
    await settle()
    clock.advance(1.0)
    await settle()
    assert await get_now(queue) == "a"
    queue.done("a")
    clock.advance(100.0)
    await settle()
    assert await get_now(queue) is None  # the superseded 100 s entry does not fire again
    queue.shutdown()


async def test_add_after_zero_is_immediate() -> None:
    queue: WorkQueue[str] = WorkQueue("t", clock=FakeClock())
    queue.add_after("a", 0)
    assert await get_now(queue) == "a"


async def test_add_rate_limited_backs_off_per_key_and_forget_resets() -> None:
    clock = FakeClock()
    queue: WorkQueue[str] = WorkQueue("t", clock=clock)
    expected_s = 0.005
    for attempt in range(1, 6):
        queue.add_rate_limited("a")
        await settle()
        assert queue.num_requeues("a") == attempt
        clock.advance(expected_s * 0.99)
        await settle()
        assert await get_now(queue) is None, f"attempt {attempt} came back early"
        clock.advance(expected_s * 0.01 + 1e-9)
        await settle()
        assert await get_now(queue) == "a", f"attempt {attempt} did not come back"
        queue.done("a")
        expected_s *= 2
    queue.forget("a")
    assert queue.num_requeues("a") == 0
    queue.add_rate_limited("a")
    await settle()
    clock.advance(0.005)
    await settle()
    assert await get_now(queue) == "a"
    queue.shutdown()


async def test_default_limiter_bucket_spreads_a_storm() -> None:
    clock = FakeClock()
    queue: WorkQueue[str] = WorkQueue(
        "t", clock=clock, rate_limiter=default_controller_rate_limiter(clock)
    )
    for i in range(110):
        queue.add_rate_limited(f"k{i}")
    await settle()
    clock.advance(0.005)
    await settle()
    assert len(queue) == 100  # the burst; the other ten are spaced at 10 qps
    clock.advance(0.5)
    await settle()
    assert len(queue) == 105
    clock.advance(0.5)
    await settle()
    assert len(queue) == 110
    queue.shutdown()


async def test_shutdown_drains_then_raises_and_ignores_adds() -> None:
    clock = FakeClock()
    queue: WorkQueue[str] = WorkQueue("t", clock=clock)
    queue.add("a")
    queue.add_after("late", 1.0)
    await settle()
    queue.shutdown()
    queue.add("b")
    queue.add_after("c", 1.0)
    queue.add_rate_limited("d")
    assert queue.shutting_down
    assert await queue.get() == "a"
    with pytest.raises(QueueShutDown):
        await queue.get()
    clock.advance(10.0)
    await settle()
    assert len(queue) == 0


async def test_shutdown_wakes_waiting_getters() -> None:
    queue: WorkQueue[str] = WorkQueue("t", clock=FakeClock())
    getter = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    queue.shutdown()
    with pytest.raises(QueueShutDown):
        await asyncio.wait_for(getter, timeout=5)


async def test_workers_in_parallel_never_share_a_key() -> None:
    """Several workers, keys re-added while processed: each key is handled by one at a time."""
    queue: WorkQueue[str] = WorkQueue("t", clock=FakeClock())
    active: set[str] = set()
    overlaps: list[str] = []
    handled: list[str] = []

    async def worker() -> None:
        while True:
            try:
                key = await queue.get()
            except QueueShutDown:
                return
            if key in active:
                overlaps.append(key)
            active.add(key)
            await asyncio.sleep(0)
            queue.add(key if len(handled) < 50 else "other")
            await asyncio.sleep(0)
            handled.append(key)
            active.discard(key)
            queue.done(key)

    workers = [asyncio.ensure_future(worker()) for _ in range(4)]
    for key in ["a", "b", "c"]:
        queue.add(key)
    for _ in range(10_000):
        if len(handled) >= 60:
            break
        await asyncio.sleep(0)
    assert len(handled) >= 60
    queue.shutdown()
    await asyncio.wait_for(asyncio.gather(*workers), timeout=5)
    assert overlaps == []
    assert set(handled) >= {"a", "b", "c"}


async def test_metrics_follow_client_go() -> None:
    """``workqueue_*{name}``: an add per key made dirty, depth = added and not yet handed
    out, one queue and one work observation per ``get``/``done``, a retry per delayed add."""
    from prometheus_client import CollectorRegistry

    from sampan.client.metrics import WorkQueueMetrics

    registry = CollectorRegistry()
    metrics = WorkQueueMetrics.of(registry)
    assert WorkQueueMetrics.of(registry) is metrics
    clock = FakeClock()
    queue: WorkQueue[str] = WorkQueue("things", clock=clock, metrics=metrics)

    def value(metric: str) -> float | None:
        return registry.get_sample_value(metric, {"name": "things"})

    queue.add("a")
    queue.add("a")  # collapses: not counted again
    queue.add("b")
    assert value("workqueue_adds_total") == 2 and value("workqueue_depth") == 2
    key = await queue.get()
    assert value("workqueue_depth") == 1
    assert value("workqueue_queue_duration_seconds_count") == 1
    assert value("workqueue_longest_running_processor_seconds") is not None
    queue.add(key)  # added while processing: pending again
    assert value("workqueue_adds_total") == 3 and value("workqueue_depth") == 2
    queue.done(key)
    assert value("workqueue_work_duration_seconds_count") == 1
    queue.add_rate_limited("c")
    assert value("workqueue_retries_total") == 1
    queue.shutdown()
