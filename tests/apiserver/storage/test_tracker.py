"""Unit tests of the RevisionTracker (pure, one module): waiters and silent revisions."""

from __future__ import annotations

import asyncio

from sampan.apiserver.storage.cache import RevisionTracker

NEVER_S = 3600.0
GUARD_S = 5.0


async def test_waiters_resolve_in_order() -> None:
    tracker = RevisionTracker()
    tracker.set_ready(3)
    assert await tracker.wait_for(3, NEVER_S)
    waiting = [asyncio.ensure_future(tracker.wait_for(r, NEVER_S)) for r in (7, 5, 9)]
    await asyncio.sleep(0)
    tracker.advance(6)
    assert await asyncio.wait_for(waiting[1], GUARD_S)
    assert not waiting[0].done() and not waiting[2].done()  # 7 and 9 not reached yet
    tracker.advance(9)
    assert await asyncio.wait_for(asyncio.gather(*waiting), GUARD_S) == [True, True, True]


async def test_not_ready_tracker_does_not_satisfy_waits() -> None:
    tracker = RevisionTracker()
    assert not await tracker.wait_for(0, 0.01)
    tracker.set_ready(1)
    assert await tracker.wait_for(0, 0.01)


async def test_silent_revision_costs_one_wait() -> None:
    tracker = RevisionTracker()
    tracker.set_ready(10)
    assert not await tracker.wait_consistent(11, 0.01)
    # The same unreachable revision again: no second wait, even with a huge timeout.
    assert not await asyncio.wait_for(tracker.wait_consistent(11, NEVER_S), GUARD_S)
    # Once the tracker gets there, consistent reads use the cache again.
    tracker.advance(12)
    assert await tracker.wait_consistent(11, NEVER_S)
