"""One behaviour suite for every datastore driver (etcd semantics as kine gives them).

Revisions are compared relative to ``base``, the store's revision when the test begins: 0 on
a fresh SQLite or PostgreSQL store, wherever the shared server is on etcd (which also starts
at 1, not 0)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from sampan.datastore.types import (
    MAX_VALUE_BYTES,
    Backend,
    CompactedError,
    ConflictError,
    EventType,
    FutureRevisionError,
    InvalidRequestError,
    KeyExistsError,
    KeyNotFoundError,
)
from tests.datastore.helpers import next_events

P = "/registry/things/"


async def test_create_then_get(backend: Backend) -> None:
    base = await backend.current_revision()
    rev = await backend.create(P + "a", b"one", lease=7)
    assert rev == base + 1
    assert await backend.current_revision() == base + 1
    at, kv = await backend.get(P + "a")
    assert at == base + 1
    assert kv is not None
    assert (kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.lease) == (
        P + "a",
        b"one",
        base + 1,
        base + 1,
        7,
    )
    assert await backend.get(P + "missing") == (base + 1, None)


async def test_create_of_a_live_key_is_refused_and_changes_nothing(backend: Backend) -> None:
    rev = await backend.create(P + "a", b"one")
    with pytest.raises(KeyExistsError):
        await backend.create(P + "a", b"two")
    assert await backend.current_revision() == rev
    assert (await backend.get(P + "a"))[1].value == b"one"


async def test_update_is_compare_and_swap(backend: Backend) -> None:
    rev = await backend.create(P + "a", b"one")
    kv = await backend.update(P + "a", b"two", rev)
    assert (kv.value, kv.create_revision, kv.mod_revision) == (b"two", rev, rev + 1)
    with pytest.raises(ConflictError) as caught:
        await backend.update(P + "a", b"three", rev)
    assert caught.value.current is not None
    assert caught.value.current.value == b"two"
    assert caught.value.current.mod_revision == rev + 1
    assert await backend.current_revision() == rev + 1
    with pytest.raises(KeyNotFoundError):
        await backend.update(P + "nope", b"x", 1)
    with pytest.raises(KeyNotFoundError):
        await backend.update(P + "nope", b"x", 0)


async def test_delete_leaves_a_tombstone_and_history(backend: Backend) -> None:
    rev1 = await backend.create(P + "a", b"one")
    kv2 = await backend.update(P + "a", b"two", rev1)
    with pytest.raises(ConflictError):
        await backend.delete(P + "a", expected_revision=rev1)
    deleted = await backend.delete(P + "a", expected_revision=kv2.mod_revision)
    assert deleted == kv2
    rev3 = await backend.current_revision()
    assert rev3 == kv2.mod_revision + 1
    assert await backend.get(P + "a") == (rev3, None)
    with pytest.raises(KeyNotFoundError):
        await backend.delete(P + "a")
    # The past is still readable.
    assert (await backend.get(P + "a", revision=rev1))[1].value == b"one"
    assert (await backend.get(P + "a", revision=kv2.mod_revision))[1].value == b"two"
    # A new life starts with a new create revision.
    rev4 = await backend.create(P + "a", b"again")
    _, kv4 = await backend.get(P + "a")
    assert (kv4.create_revision, kv4.mod_revision, kv4.value) == (rev4, rev4, b"again")
    assert (await backend.list(P, revision=rev3)).items == []


async def test_list_orders_by_key_and_pages_with_continue(backend: Backend) -> None:
    base = await backend.current_revision()
    names = [f"k{i:02d}" for i in range(10)]
    for name in reversed(names):
        await backend.create(P + name, name.encode())
    await backend.create("/registry/thingsmore/x", b"outside the prefix")
    await backend.create("/registry/other/y", b"other")
    full = await backend.list(P)
    assert [kv.key for kv in full.items] == [P + n for n in names]
    assert full.revision == base + 12
    assert not full.more

    seen: list[str] = []
    start_after = ""
    pages = 0
    while True:
        page = await backend.list(P, revision=full.revision, limit=3, start_after=start_after)
        assert page.revision == full.revision
        seen.extend(kv.key for kv in page.items)
        pages += 1
        if not page.more:
            break
        start_after = page.items[-1].key
    assert seen == [P + n for n in names]
    assert pages == 4
    exact = await backend.list(P, limit=10)
    assert len(exact.items) == 10
    assert not exact.more


async def test_list_and_count_at_an_old_revision(backend: Backend) -> None:
    r1 = await backend.create(P + "a", b"a1")
    r2 = await backend.create(P + "b", b"b1")
    await backend.update(P + "a", b"a2", r1)
    await backend.delete(P + "b")
    await backend.create(P + "c", b"c1")
    at_r2 = await backend.list(P, revision=r2)
    assert [(kv.key, kv.value) for kv in at_r2.items] == [(P + "a", b"a1"), (P + "b", b"b1")]
    assert at_r2.revision == r2
    now = await backend.list(P)
    assert [(kv.key, kv.value) for kv in now.items] == [(P + "a", b"a2"), (P + "c", b"c1")]
    assert await backend.count(P) == (r1 + 4, 2)
    assert await backend.count(P, revision=r1) == (r1, 1)
    assert await backend.count("/registry/none/") == (r1 + 4, 0)


async def test_reads_beyond_the_current_revision_are_refused(backend: Backend) -> None:
    rev = await backend.create(P + "a", b"x")
    with pytest.raises(FutureRevisionError):
        await backend.get(P + "a", revision=rev + 1)
    with pytest.raises(FutureRevisionError):
        await backend.list(P, revision=rev + 4)
    with pytest.raises(FutureRevisionError):
        await backend.count(P, revision=rev + 4)


async def test_bad_input_is_refused_and_the_store_is_unchanged(backend: Backend) -> None:
    rev = await backend.create(P + "a", b"x")
    bad_calls = [
        backend.create("", b"x"),
        backend.create("/elsewhere/a", b"x"),
        backend.create("/registry/", b"x"),
        backend.create(P + "big", b"x" * (MAX_VALUE_BYTES + 1)),
        backend.update(P + "a", b"x" * (MAX_VALUE_BYTES + 1), 1),
        backend.update("", b"x", 1),
        backend.delete("/elsewhere/a"),
        backend.get(""),
        backend.list("/elsewhere/"),
    ]
    for call in bad_calls:
        with pytest.raises(InvalidRequestError):
            await call
    assert await backend.current_revision() == rev
    assert (await backend.get(P + "a"))[1].value == b"x"
    # Exactly the limit is fine.
    await backend.create(P + "max", b"m" * MAX_VALUE_BYTES)


async def test_watch_replays_history_then_follows_live(backend: Backend) -> None:
    r1 = await backend.create(P + "a", b"a1")
    kv2 = await backend.update(P + "a", b"a2", r1)
    await backend.create("/registry/other/x", b"not watched")
    watch = backend.watch(P, r1)
    try:
        history = await next_events(watch, 2)
        assert [(e.type, e.kv.value, e.revision) for e in history] == [
            (EventType.PUT, b"a1", r1),
            (EventType.PUT, b"a2", r1 + 1),
        ]
        assert history[0].prev_kv is None
        assert history[1].prev_kv is not None
        assert (history[1].prev_kv.value, history[1].prev_kv.mod_revision) == (b"a1", r1)
        await backend.delete(P + "a", kv2.mod_revision)
        await backend.create(P + "b", b"b1")
        live = await next_events(watch, 2)
        assert [(e.type, e.kv.key, e.revision) for e in live] == [
            (EventType.DELETE, P + "a", r1 + 3),
            (EventType.PUT, P + "b", r1 + 4),
        ]
        assert live[0].prev_kv is not None
        assert (live[0].prev_kv.value, live[0].prev_kv.create_revision) == (b"a2", r1)
        assert live[0].kv.value == b""
    finally:
        await watch.aclose()


async def test_watch_from_now_sees_only_new_changes(backend: Backend) -> None:
    old = await backend.create(P + "old", b"x")
    watch = backend.watch(P, 0)
    pending = asyncio.ensure_future(next_events(watch, 1))
    try:
        # Keep writing until the watch (which starts "now", at some point) reports one.
        i = 0
        while not pending.done():
            await backend.create(f"{P}new{i}", b"y")
            i += 1
            await asyncio.wait([pending], timeout=0.02)
        events = pending.result()
        assert events[0].kv.key.startswith(P + "new")
        assert events[0].revision > old
        revisions = [e.revision for e in events]
        assert revisions == sorted(set(revisions))
    finally:
        pending.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pending
        await watch.aclose()


async def test_watch_during_writes_is_gap_free_without_duplicates(backend: Backend) -> None:
    total = 200
    base = await backend.current_revision()

    async def writer(n: int) -> None:
        for i in range(total // 4):
            await backend.create(f"{P}w{n}-{i}", b"v")

    writers = [asyncio.ensure_future(writer(n)) for n in range(4)]
    await asyncio.sleep(0.01)
    watch = backend.watch(P, base + 1)  # starts while writes are under way
    try:
        events = await next_events(watch, total, wait_s=30)
        await asyncio.gather(*writers)
        assert [e.revision for e in events] == list(range(base + 1, base + total + 1))
    finally:
        await watch.aclose()
        for task in writers:
            task.cancel()


async def test_compaction_removes_history_but_not_the_present(backend: Backend) -> None:
    base = await backend.current_revision()
    rev = await backend.create(P + "a", b"0")
    for i in range(1, 6):
        rev = (await backend.update(P + "a", str(i).encode(), rev)).mod_revision
    await backend.create(P + "gone", b"x")
    await backend.delete(P + "gone")
    await backend.create(P + "b", b"b")
    current = await backend.current_revision()
    assert current == base + 9
    before = await backend.list(P)
    await backend.compact(base + 8)
    assert await backend.compact_revision() == base + 8
    after = await backend.list(P)
    assert after.items == before.items
    assert await backend.count(P) == (base + 9, 2)
    assert (await backend.get(P + "a", revision=base + 9))[1] is not None
    with pytest.raises(CompactedError):
        await backend.get(P + "a", revision=base + 8)
    with pytest.raises(CompactedError):
        await backend.list(P, revision=base + 3)
    with pytest.raises(CompactedError):
        await backend.count(P, revision=base + 3)
    # Compacting again below the floor is a no-op; beyond the present is refused.
    await backend.compact(base + 5)
    assert await backend.compact_revision() == base + 8
    with pytest.raises(FutureRevisionError):
        await backend.compact(base + 100)
    # A deleted-and-compacted key can be created again as a fresh life.
    rev = await backend.create(P + "gone", b"back")
    assert (await backend.get(P + "gone"))[1].create_revision == rev
    # Updates still chain correctly after the superseded rows are gone.
    _, a = await backend.get(P + "a")
    assert (await backend.update(P + "a", b"new", a.mod_revision)).create_revision == base + 1


async def test_watch_from_a_compacted_revision_fails(backend: Backend) -> None:
    base = await backend.current_revision()
    rev = await backend.create(P + "a", b"0")
    for i in range(3):
        rev = (await backend.update(P + "a", str(i).encode(), rev)).mod_revision
    await backend.compact(base + 3)
    with pytest.raises(CompactedError):
        await anext(backend.watch(P, base + 3))
    watch = backend.watch(P, base + 4)
    try:
        events = await next_events(watch, 1)
        assert [(e.revision, e.prev_kv.mod_revision) for e in events] == [(base + 4, base + 3)]
    finally:
        await watch.aclose()


async def test_concurrent_creates_get_distinct_revisions(backend: Backend) -> None:
    base = await backend.current_revision()
    revs = await asyncio.gather(*(backend.create(f"{P}c{i}", b"v") for i in range(32)))
    assert sorted(revs) == list(range(base + 1, base + 33))
    assert await backend.count(P) == (base + 32, 32)


async def test_racing_updates_of_one_key_have_one_winner(backend: Backend) -> None:
    rev = await backend.create(P + "hot", b"0")
    results = await asyncio.gather(
        *(backend.update(P + "hot", f"w{i}".encode(), rev) for i in range(16)),
        return_exceptions=True,
    )
    winners = [r for r in results if not isinstance(r, BaseException)]
    losers = [r for r in results if isinstance(r, BaseException)]
    assert len(winners) == 1
    assert len(losers) == 15
    for err in losers:
        assert isinstance(err, ConflictError)
        assert err.current is not None
    _, kv = await backend.get(P + "hot")
    assert kv == winners[0]


async def test_refused_writes_leave_no_revision_holes(backend: Backend) -> None:
    base = await backend.current_revision()
    await backend.create(P + "dup", b"v")
    calls = []
    for i in range(20):
        calls.append(backend.create(P + "dup", b"again"))  # always refused
        calls.append(backend.create(f"{P}ok{i}", b"v"))
    await asyncio.gather(*calls, return_exceptions=True)
    assert await backend.current_revision() == base + 21
    watch = backend.watch(P, base + 1)
    try:
        events = await next_events(watch, 21)
        assert [e.revision for e in events] == list(range(base + 1, base + 22))
    finally:
        await watch.aclose()
