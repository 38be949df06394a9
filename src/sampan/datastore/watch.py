"""Fan-out of committed events to watchers, and the catch-up protocol every driver's watch uses.

One ``Broadcaster`` per backend receives every committed event exactly once, in revision order,
from a single source (the SQLite writer after each group commit; the PostgreSQL poller after
each poll) and hands each subscriber the events under its prefix. No watcher ever queries the
database for live events.

``watch_events`` implements "subscribe, catch up, de-duplicate":

1. subscribe first, so nothing published from now on can be missed;
2. note the broadcaster's high-water mark ``H`` (every event <= ``H`` has been published, and
   every event > ``H`` will be published to this subscription later);
3. read history ``(start - 1, H]`` from the database in one snapshot that also yields the
   compaction floor (CompactedError if ``start <= floor``);
4. then yield live events, dropping those at or below the last revision already yielded.

Invariants: each subscriber's queue is bounded (``WATCH_QUEUE_MAX_EVENTS``); a subscriber that
overflows is ended with ``WatchOverflowError`` instead of growing memory. ``publish`` is only
called on the event loop thread and never blocks.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Awaitable, Callable

from sampan.datastore.types import CompactedError, Event, WatchOverflowError

__all__ = [
    "WATCH_BATCH_MAX_EVENTS",
    "WATCH_QUEUE_MAX_EVENTS",
    "Broadcaster",
    "HistoryReader",
    "Subscription",
    "watch_events",
]

WATCH_QUEUE_MAX_EVENTS = 10_000
"""Events that may wait for one slow watcher before its watch is ended."""

WATCH_BATCH_MAX_EVENTS = 1_000
"""History is yielded in batches of at most this many events."""

HistoryReader = Callable[[str, int, int], Awaitable[tuple[int, list[Event]]]]
"""``(prefix, after_revision, upto_revision) -> (compaction floor, events)`` read in one
snapshot: events under prefix with ``after_revision < revision <= upto_revision``, in order."""


class Subscription:
    """One watcher's bounded queue of event batches, filled by the broadcaster."""

    def __init__(self, broadcaster: Broadcaster, prefix: str, max_pending_events: int) -> None:
        self._broadcaster = broadcaster
        self.prefix = prefix
        self._max_pending_events = max_pending_events
        self._batches: collections.deque[list[Event]] = collections.deque()
        self._pending_events = 0
        self._wakeup = asyncio.Event()
        self._closed = False
        self._overflowed = False

    def _offer(self, events: list[Event]) -> None:
        if self._closed or self._overflowed:
            return
        prefix = self.prefix
        mine = [e for e in events if e.kv.key.startswith(prefix)]
        if not mine:
            return
        if self._pending_events + len(mine) > self._max_pending_events:
            # Unbounded growth is worse than a relist: drop the queue and end this watch.
            self._overflowed = True
            self._batches.clear()
            self._pending_events = 0
        else:
            self._batches.append(mine)
            self._pending_events += len(mine)
        self._wakeup.set()

    def _end(self) -> None:
        self._closed = True
        self._wakeup.set()

    async def next_batch(self) -> list[Event] | None:
        """The next batch of live events; None once the broadcaster has closed.
        WatchOverflowError if this subscriber fell too far behind."""
        while True:
            if self._overflowed:
                raise WatchOverflowError(self.prefix, self._max_pending_events)
            if self._batches:
                batch = self._batches.popleft()
                self._pending_events -= len(batch)
                return batch
            if self._closed:
                return None
            self._wakeup.clear()
            await self._wakeup.wait()

    def close(self) -> None:
        """Stop receiving events (idempotent)."""
        self._closed = True
        self._broadcaster._subscribers.discard(self)


class Broadcaster:
    """Hands committed events to every subscription whose prefix matches."""

    def __init__(self, revision: int, *, max_pending_events: int = WATCH_QUEUE_MAX_EVENTS) -> None:
        self.revision = revision
        """Every event at or below this revision has been published."""
        self.event_revision = revision
        """The revision of the newest published event (below ``revision`` when rows that are
        no event, such as PostgreSQL gap fills, came after it)."""
        self._max_pending_events = max_pending_events
        self._subscribers: set[Subscription] = set()
        # (revision, future) for callers waiting until a revision is published; one per
        # in-flight write, so bounded by the number of concurrent writers.
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def subscribe(self, prefix: str) -> Subscription:
        sub = Subscription(self, prefix, self._max_pending_events)
        if self._closed:
            sub._end()
        else:
            self._subscribers.add(sub)
        return sub

    def publish(self, events: list[Event], revision: int) -> None:
        """Publish ``events`` (in revision order, all above the previous high-water mark) and
        advance the high-water mark to ``revision`` (which may exceed the last event's revision
        when rows outside every prefix, such as gap fills, were committed)."""
        if revision > self.revision:
            self.revision = revision
        if events:
            self.event_revision = max(self.event_revision, events[-1].revision)
            for sub in list(self._subscribers):
                sub._offer(events)
        if self._waiters:
            still_waiting = []
            for wanted, future in self._waiters:
                if wanted <= self.revision:
                    if not future.done():
                        future.set_result(None)
                else:
                    still_waiting.append((wanted, future))
            self._waiters = still_waiting

    async def wait_published(self, revision: int) -> None:
        """Return once every event up to ``revision`` has been published (or on close)."""
        if revision <= self.revision or self._closed:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((revision, future))
        await future

    def close(self) -> None:
        """End every subscription; later subscriptions end at once."""
        self._closed = True
        for sub in list(self._subscribers):
            sub._end()
        self._subscribers.clear()
        for _, future in self._waiters:
            if not future.done():
                future.set_result(None)
        self._waiters.clear()


async def watch_events(
    broadcaster: Broadcaster,
    read_history: HistoryReader,
    current_revision: Callable[[], Awaitable[int]],
    prefix: str,
    start_revision: int,
) -> AsyncIterator[list[Event]]:
    """Events under ``prefix`` from ``start_revision`` on (0: only changes after the store's
    current revision), in revision order, each exactly once; history first, then live."""
    sub = broadcaster.subscribe(prefix)
    try:
        high = broadcaster.revision
        if start_revision <= 0:
            # The store may be ahead of what has been published (PostgreSQL's poller): "now"
            # is the store's revision, and anything up to it is skipped.
            last = max(high, await current_revision())
        else:
            last = start_revision - 1
            floor, history = await read_history(prefix, start_revision - 1, high)
            if start_revision <= floor:
                raise CompactedError(start_revision, floor)
            for i in range(0, len(history), WATCH_BATCH_MAX_EVENTS):
                yield history[i : i + WATCH_BATCH_MAX_EVENTS]
            last = max(last, high)
        while True:
            batch = await sub.next_batch()
            if batch is None:
                return
            if batch[0].revision <= last:
                batch = [e for e in batch if e.revision > last]
                if not batch:
                    continue
            last = batch[-1].revision
            yield batch
    finally:
        sub.close()
