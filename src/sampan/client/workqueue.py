"""Rate-limited work queues for controllers, shaped like client-go's ``workqueue``.

This module owns the queue that sits between informer event handlers and reconcile workers.
Handlers call ``add(key)``; workers loop ``key = await queue.get()`` ... ``queue.done(key)``.

Invariants (the contract controllers rely on):

* **Never twice at once.** A key handed out by ``get()`` is *processing* until ``done(key)``;
  no other ``get()`` returns it meanwhile, so one key is never reconciled by two workers at
  the same time.
* **Repeated adds collapse.** A key is in the *dirty* set from ``add`` until ``get`` hands it
  out; adding it again in between is a no-op. A key added while processing is remembered and
  queued again when ``done`` is called, so no change is ever lost.
* **FIFO** among ready keys; delayed keys (``add_after``) join the tail when their time comes;
  a key already waiting keeps the earlier of its two ready times.
* **Back-off per key.** ``add_rate_limited(key)`` delays by the rate limiter's verdict; the
  default limiter is the maximum of a per-key exponential back-off (5 ms doubling to 1000 s)
  and an overall token bucket (10 qps, burst 100), as client-go's default controller limiter.
  ``forget(key)`` after a successful reconcile resets the key's back-off.
* **Shutdown drains.** After ``shutdown()`` new adds are ignored, ``get()`` still returns the
  keys already queued and then raises ``QueueShutDown``.

The queue is unbounded by design: it holds *keys* (one entry per distinct object at most, since
adds collapse), so its size is bounded by the number of objects watched.

**Metrics.** Given ``metrics`` (a ``WorkQueueMetrics``), the queue records client-go's
``workqueue_*`` series under its ``name``: an add when a key becomes dirty, the queue time
when ``get`` hands it out, the work time at ``done``, a retry at each ``add_after`` /
``add_rate_limited`` (client-go counts a retry at every delayed add).

Time comes from an injected ``Clock`` (``now()`` and ``async sleep()``). Production code uses
``MonotonicClock``; tests use ``FakeClock`` and ``advance()`` it, so nothing sleeps for real.
Everything here runs on the event loop and is not thread-safe.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections import deque
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

if TYPE_CHECKING:
    from sampan.client.metrics import QueueMetrics, WorkQueueMetrics

__all__ = [
    "DEFAULT_BASE_DELAY_S",
    "DEFAULT_BUCKET_BURST",
    "DEFAULT_BUCKET_QPS",
    "DEFAULT_MAX_DELAY_S",
    "BucketRateLimiter",
    "Clock",
    "FakeClock",
    "ItemExponentialFailureRateLimiter",
    "MaxOfRateLimiter",
    "MonotonicClock",
    "QueueShutDown",
    "RateLimiter",
    "WorkQueue",
    "default_controller_rate_limiter",
]

log = logging.getLogger(__name__)

DEFAULT_BASE_DELAY_S = 0.005
DEFAULT_MAX_DELAY_S = 1000.0
DEFAULT_BUCKET_QPS = 10.0
DEFAULT_BUCKET_BURST = 100

K = TypeVar("K", bound=Hashable)
K_contra = TypeVar("K_contra", bound=Hashable, contravariant=True)


class QueueShutDown(Exception):
    """Raised by ``WorkQueue.get()`` once the queue is shut down and drained."""


# ---------------------------------------------------------------------------------------------
# Clocks


class Clock(Protocol):
    """A source of time: seconds on a monotonic scale, and a way to wait."""

    def now(self) -> float: ...

    async def sleep(self, delay_s: float) -> None: ...


class MonotonicClock:
    """The real clock: ``time.monotonic`` seconds (via the running loop) and ``asyncio.sleep``."""

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    async def sleep(self, delay_s: float) -> None:
        await asyncio.sleep(max(0.0, delay_s))


class FakeClock:
    """A clock for tests: time stands still until ``advance(delta_s)`` moves it.

    ``sleep`` returns once the clock has been advanced past the sleeper's deadline (a sleep of
    zero or less returns at once). ``advance`` wakes the due sleepers; yield to the
    loop (``await asyncio.sleep(0)``, a few times) afterwards to let them run.
    """

    def __init__(self, start_s: float = 0.0) -> None:
        self._now_s = start_s
        self._seq = itertools.count()
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []

    def now(self) -> float:
        return self._now_s

    async def sleep(self, delay_s: float) -> None:
        if delay_s <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now_s + delay_s, next(self._seq), fut))
        await fut

    @property
    def sleepers(self) -> int:
        """How many sleeps are pending (cancelled ones excluded)."""
        return sum(1 for _, _, fut in self._sleepers if not fut.done())

    def advance(self, delta_s: float) -> None:
        """Move time forward by ``delta_s`` and wake every sleeper whose deadline passed."""
        if delta_s < 0:
            raise ValueError("a clock does not go backwards")
        self._now_s += delta_s
        while self._sleepers and self._sleepers[0][0] <= self._now_s:
            _, _, fut = heapq.heappop(self._sleepers)
            if not fut.done():
                fut.set_result(None)


# ---------------------------------------------------------------------------------------------
# Rate limiters


class RateLimiter(Protocol[K_contra]):
    """Decides how long a key waits before it is retried (client-go's ``RateLimiter``)."""

    def when(self, key: K_contra) -> float:
        """The delay in seconds before ``key`` may be processed again (counts one failure)."""
        ...

    def forget(self, key: K_contra) -> None:
        """Stop tracking ``key`` (it succeeded); its next delay starts from the base again."""
        ...

    def num_requeues(self, key: K_contra) -> int:
        """How many times ``key`` has been rate-limited since it was last forgotten."""
        ...


class ItemExponentialFailureRateLimiter(Generic[K]):
    """Per-key exponential back-off: ``base_delay_s * 2**failures``, capped at ``max_delay_s``."""

    def __init__(
        self,
        base_delay_s: float = DEFAULT_BASE_DELAY_S,
        max_delay_s: float = DEFAULT_MAX_DELAY_S,
    ) -> None:
        if base_delay_s <= 0 or max_delay_s < base_delay_s:
            raise ValueError("need 0 < base_delay_s <= max_delay_s")
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s
        self._failures: dict[K, int] = {}

    def when(self, key: K) -> float:
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        # Cap the exponent so the float never overflows however often a key fails.
        if failures >= 64:
            return self.max_delay_s
        return min(self.base_delay_s * float(2**failures), self.max_delay_s)

    def forget(self, key: K) -> None:
        self._failures.pop(key, None)

    def num_requeues(self, key: K) -> int:
        return self._failures.get(key, 0)


class BucketRateLimiter(Generic[K]):
    """An overall token bucket shared by all keys: ``qps`` tokens a second, ``burst`` at most.

    Each ``when`` reserves one token and returns how long until that token exists, like
    ``rate.Limiter.Reserve().Delay()`` in Go: the first ``burst`` calls are free, later ones are
    spaced ``1/qps`` apart. It does not track keys, so ``forget`` is a no-op.
    """

    def __init__(
        self,
        qps: float = DEFAULT_BUCKET_QPS,
        burst: int = DEFAULT_BUCKET_BURST,
        *,
        clock: Clock | None = None,
    ) -> None:
        if qps <= 0 or burst < 1:
            raise ValueError("need qps > 0 and burst >= 1")
        self.qps = qps
        self.burst = burst
        self._clock: Clock = clock or MonotonicClock()
        self._tokens = float(burst)
        self._last_s: float | None = None

    def when(self, key: K) -> float:
        now_s = self._clock.now()
        if self._last_s is not None:
            self._tokens = min(float(self.burst), self._tokens + (now_s - self._last_s) * self.qps)
        self._last_s = now_s
        self._tokens -= 1.0
        if self._tokens >= 0:
            return 0.0
        return -self._tokens / self.qps

    def forget(self, key: K) -> None:
        return None

    def num_requeues(self, key: K) -> int:
        return 0


class MaxOfRateLimiter(Generic[K]):
    """Combines limiters: the delay is the longest any of them asks for."""

    def __init__(self, *limiters: RateLimiter[K]) -> None:
        if not limiters:
            raise ValueError("need at least one rate limiter")
        self.limiters = limiters

    def when(self, key: K) -> float:
        return max(limiter.when(key) for limiter in self.limiters)

    def forget(self, key: K) -> None:
        for limiter in self.limiters:
            limiter.forget(key)

    def num_requeues(self, key: K) -> int:
        return max(limiter.num_requeues(key) for limiter in self.limiters)


def default_controller_rate_limiter(clock: Clock | None = None) -> MaxOfRateLimiter[Any]:
    """client-go's ``DefaultControllerRateLimiter``: per-key 5 ms..1000 s, overall 10 qps/100."""
    return MaxOfRateLimiter(
        ItemExponentialFailureRateLimiter(DEFAULT_BASE_DELAY_S, DEFAULT_MAX_DELAY_S),
        BucketRateLimiter(DEFAULT_BUCKET_QPS, DEFAULT_BUCKET_BURST, clock=clock),
    )


# ---------------------------------------------------------------------------------------------
# The queue


class WorkQueue(Generic[K]):
    """A work queue with dirty/processing sets, delayed adds and per-key rate limiting.

    Typical worker::

        while True:
            try:
                key = await queue.get()
            except QueueShutDown:
                return
            try:
                await reconcile(key)
            except Exception:
                log.exception("reconcile %s failed", key)
                queue.add_rate_limited(key)
            else:
                queue.forget(key)
            finally:
                queue.done(key)

    ``name`` names the background task that releases delayed keys (``workqueue-<name>``).
    """

    def __init__(
        self,
        name: str = "default",
        *,
        clock: Clock | None = None,
        rate_limiter: RateLimiter[K] | None = None,
        metrics: WorkQueueMetrics | None = None,
    ) -> None:
        self.name = name
        self._metrics: QueueMetrics | None = metrics.queue(name) if metrics is not None else None
        self._clock: Clock = clock or MonotonicClock()
        self._rate_limiter: RateLimiter[K] = rate_limiter or default_controller_rate_limiter(
            self._clock
        )
        self._queue: deque[K] = deque()
        self._dirty: set[K] = set()
        self._processing: set[K] = set()
        self._getters: deque[asyncio.Future[None]] = deque()
        self._shutting_down = False
        # Delayed keys: a heap of (ready_at_s, seq, key) plus each key's current ready time so a
        # later add_after of the same key can keep the earlier time (stale heap rows skipped).
        self._waiting: list[tuple[float, int, K]] = []
        self._waiting_ready_s: dict[K, float] = {}
        self._seq = itertools.count()
        self._waiting_changed = asyncio.Event()
        self._delay_task: asyncio.Task[None] | None = None

    # -- adding ------------------------------------------------------------------------------

    def add(self, key: K) -> None:
        """Queue ``key`` now (collapses with a queued copy; re-queued after ``done`` if busy)."""
        if self._shutting_down or key in self._dirty:
            return
        self._dirty.add(key)
        if self._metrics is not None:
            self._metrics.add(key)
        if key in self._processing:
            return
        self._queue.append(key)
        self._wake_one_getter()

    def add_after(self, key: K, delay_s: float) -> None:
        """Queue ``key`` once ``delay_s`` has passed (at once if ``delay_s <= 0``)."""
        if self._shutting_down:
            return
        if self._metrics is not None:
            self._metrics.retry()
        if delay_s <= 0:
            self.add(key)
            return
        ready_s = self._clock.now() + delay_s
        current = self._waiting_ready_s.get(key)
        if current is not None and current <= ready_s:
            return
        self._waiting_ready_s[key] = ready_s
        heapq.heappush(self._waiting, (ready_s, next(self._seq), key))
        self._waiting_changed.set()
        self._ensure_delay_task()

    def add_rate_limited(self, key: K) -> None:
        """Queue ``key`` after the rate limiter's delay (one more failure for its back-off)."""
        if self._shutting_down:
            return
        self.add_after(key, self._rate_limiter.when(key))

    def forget(self, key: K) -> None:
        """Reset ``key``'s back-off (call after it was processed successfully)."""
        self._rate_limiter.forget(key)

    def num_requeues(self, key: K) -> int:
        """How many times ``key`` was rate-limited since it was last forgotten."""
        return self._rate_limiter.num_requeues(key)

    # -- taking ------------------------------------------------------------------------------

    async def get(self) -> K:
        """The next key to process; it is *processing* until ``done(key)``.

        Waits while the queue is empty. Raises ``QueueShutDown`` once shut down and drained.
        """
        while not self._queue:
            if self._shutting_down:
                raise QueueShutDown(self.name)
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._getters.append(fut)
            try:
                await fut
            except asyncio.CancelledError:
                # If we were woken but cancelled before running, pass the wake-up on so a
                # queued key is not left waiting for the next add.
                if fut.done() and not fut.cancelled():
                    self._wake_one_getter()
                raise
            finally:
                if fut in self._getters:
                    self._getters.remove(fut)
        key = self._queue.popleft()
        self._processing.add(key)
        self._dirty.discard(key)
        if self._metrics is not None:
            self._metrics.get(key)
        return key

    def done(self, key: K) -> None:
        """Mark ``key`` finished; if it was added while processing, queue it again now."""
        self._processing.discard(key)
        if self._metrics is not None:
            self._metrics.done(key)
        if key in self._dirty:
            self._queue.append(key)
            self._wake_one_getter()

    # -- lifecycle ---------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Stop accepting keys; pending ``get`` calls drain the queue and then raise."""
        self._shutting_down = True
        self._waiting.clear()
        self._waiting_ready_s.clear()
        if self._delay_task is not None:
            self._delay_task.cancel()
            self._delay_task = None
        while self._getters:
            fut = self._getters.popleft()
            if not fut.done():
                fut.set_result(None)

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    def __len__(self) -> int:
        """Keys ready to be handed out (not counting processing or delayed keys)."""
        return len(self._queue)

    @property
    def processing(self) -> frozenset[K]:
        """Keys handed out and not yet ``done``."""
        return frozenset(self._processing)

    @property
    def waiting(self) -> int:
        """Keys waiting for a delay to pass."""
        return len(self._waiting_ready_s)

    # -- internals ---------------------------------------------------------------------------

    def _wake_one_getter(self) -> None:
        while self._getters:
            fut = self._getters.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    def _ensure_delay_task(self) -> None:
        if self._delay_task is None or self._delay_task.done():
            self._delay_task = asyncio.get_running_loop().create_task(
                self._release_delayed(), name=f"workqueue-{self.name}"
            )
            self._delay_task.add_done_callback(self._log_delay_task_failure)

    def _log_delay_task_failure(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("work queue %s: delay task failed", self.name, exc_info=task.exception())

    def _release_due(self) -> float | None:
        """Move due keys into the queue; return seconds until the next one (None if none)."""
        now_s = self._clock.now()
        while self._waiting:
            ready_s, _, key = self._waiting[0]
            if self._waiting_ready_s.get(key) != ready_s:
                heapq.heappop(self._waiting)  # superseded by an earlier add_after
                continue
            if ready_s > now_s:
                return ready_s - now_s
            heapq.heappop(self._waiting)
            del self._waiting_ready_s[key]
            self.add(key)
        return None

    async def _release_delayed(self) -> None:
        while not self._shutting_down:
            self._waiting_changed.clear()
            wait_s = self._release_due()
            changed = asyncio.ensure_future(self._waiting_changed.wait())
            if wait_s is None:
                await changed
                continue
            sleeper = asyncio.ensure_future(self._clock.sleep(wait_s))
            try:
                await asyncio.wait({changed, sleeper}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                changed.cancel()
                sleeper.cancel()
