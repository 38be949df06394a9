"""Unit tests of the broadcaster and the subscribe/catch-up/de-duplicate protocol."""

from __future__ import annotations

import asyncio

import pytest

from sampan.datastore.types import (
    CompactedError,
    Event,
    EventType,
    KeyValue,
    WatchOverflowError,
)
from sampan.datastore.watch import Broadcaster, watch_events
from tests.datastore.helpers import next_events


def put(key: str, revision: int) -> Event:
    return Event(EventType.PUT, KeyValue(key, b"v", revision, revision), None)


class FakeHistory:
    """A history source for watch_events: the log plus a compaction floor."""

    def __init__(self, events: list[Event], floor: int = 0) -> None:
        self.events = events
        self.floor = floor
        self.calls: list[tuple[str, int, int]] = []

    async def __call__(self, prefix: str, after: int, upto: int) -> tuple[int, list[Event]]:
        self.calls.append((prefix, after, upto))
        return self.floor, [
            e for e in self.events if after < e.revision <= upto and e.kv.key.startswith(prefix)
        ]

    async def current(self) -> int:
        return self.events[-1].revision if self.events else 0


async def test_history_then_live_without_duplicates() -> None:
    log = [put("/registry/a/1", 1), put("/registry/b/2", 2), put("/registry/a/3", 3)]
    history = FakeHistory(log)
    broadcaster = Broadcaster(3)
    watch = watch_events(broadcaster, history, history.current, "/registry/a/", 2)
    first = await next_events(watch, 1)
    assert [e.revision for e in first] == [3]
    assert history.calls == [("/registry/a/", 1, 3)]
    # A late publish of an event already replayed, then new ones.
    broadcaster.publish([put("/registry/a/3", 3), put("/registry/a/4", 4)], 4)
    broadcaster.publish([put("/registry/b/5", 5), put("/registry/a/6", 6)], 6)
    live = await next_events(watch, 2)
    assert [e.revision for e in live] == [4, 6]
    await watch.aclose()
    assert broadcaster.subscriber_count == 0


async def test_start_at_or_below_the_floor_is_compacted() -> None:
    history = FakeHistory([put("/registry/a", 5)], floor=4)
    broadcaster = Broadcaster(5)
    with pytest.raises(CompactedError) as caught:
        await anext(watch_events(broadcaster, history, history.current, "/registry/", 4))
    assert caught.value.compact_revision == 4
    assert broadcaster.subscriber_count == 0


async def test_a_slow_watcher_is_ended_instead_of_buffering_forever() -> None:
    history = FakeHistory([put("/registry/x", 1)])
    broadcaster = Broadcaster(1, max_pending_events=10)
    watch = watch_events(broadcaster, history, history.current, "/registry/", 1)
    assert [e.revision for e in await next_events(watch, 1)] == [1]
    for rev in range(2, 14):
        broadcaster.publish([put("/registry/x", rev)], rev)
    with pytest.raises(WatchOverflowError):
        await anext(watch)
    assert broadcaster.subscriber_count == 0
    # Others are not affected.
    other = watch_events(broadcaster, history, history.current, "/registry/", 0)
    pending = asyncio.ensure_future(anext(other))
    await asyncio.sleep(0)  # the fake history never blocks: one step subscribes
    broadcaster.publish([put("/registry/y", 14)], 14)
    assert [e.revision for e in await pending] == [14]
    await other.aclose()


async def test_closing_the_broadcaster_ends_watches() -> None:
    history = FakeHistory([])
    broadcaster = Broadcaster(0)
    watch = watch_events(broadcaster, history, history.current, "/registry/", 0)
    pending = anext(watch)
    broadcaster.close()
    with pytest.raises(StopAsyncIteration):
        await pending
