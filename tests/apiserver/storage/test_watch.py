"""Watches from the watch cache: resume from a revision, 410 for a too-old one, synthetic
initial events and the initial-events-end bookmark, selector enter/leave, bookmarks, slow
watchers ended, fan-out, and recovery when the datastore watch breaks."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from sampan.apiserver.storage import DeleteOptions, ResourceStore, Storage, WatchEvent
from sampan.apiserver.storage.watch import INITIAL_EVENTS_END_ANNOTATION

from .conftest import StorageFactory, configmap

EVENT_TIMEOUT_S = 5.0


async def next_event(stream: AsyncIterator[WatchEvent]) -> WatchEvent:
    return await asyncio.wait_for(anext(stream), EVENT_TIMEOUT_S)


async def take(stream: AsyncIterator[WatchEvent], n: int) -> list[tuple[str, str]]:
    out = []
    for _ in range(n):
        ev = await next_event(stream)
        out.append((ev.type, json.loads(ev.object)["metadata"].get("name", "")))
    return out


def rv_of(ev: WatchEvent) -> int:
    return int(json.loads(ev.object)["metadata"]["resourceVersion"])


async def test_watch_from_revision_replays_then_goes_live(configmaps: ResourceStore) -> None:
    a = await configmaps.create(configmap("a"))
    start = a["metadata"]["resourceVersion"]
    await configmaps.create(configmap("b"))
    a["data"] = {"k": "2"}
    await configmaps.update("default", "a", a)
    stream = configmaps.watch("default", resource_version=start)
    try:
        assert await take(stream, 2) == [("ADDED", "b"), ("MODIFIED", "a")]
        await configmaps.delete("default", "b", DeleteOptions())
        ev = await next_event(stream)
        assert ev.type == "DELETED" and json.loads(ev.object)["metadata"]["name"] == "b"
        # A DELETED event carries the revision of the deletion.
        assert rv_of(ev) > int(start)
    finally:
        await stream.aclose()


async def test_watch_revisions_increase_and_resume(configmaps: ResourceStore) -> None:
    stream = configmaps.watch("default", resource_version="0")
    for i in range(5):
        await configmaps.create(configmap(f"c{i}"))
    events = [await next_event(stream) for _ in range(5)]
    await stream.aclose()
    rvs = [rv_of(e) for e in events]
    assert rvs == sorted(rvs) and len(set(rvs)) == 5
    # Resume after the third: exactly the last two again.
    resumed = configmaps.watch("default", resource_version=str(rvs[2]))
    try:
        assert await take(resumed, 2) == [("ADDED", "c3"), ("ADDED", "c4")]
    finally:
        await resumed.aclose()


async def test_watch_too_old_revision_is_410(make_storage: StorageFactory, registry) -> None:
    storage = await make_storage(ring_size=3)
    cms = storage.for_resource(registry.by_resource("", "v1", "configmaps"))
    first = await cms.create(configmap("a"))
    for i in range(5):
        await cms.create(configmap(f"more{i}"))
    stream = cms.watch("default", resource_version=first["metadata"]["resourceVersion"])
    ev = await next_event(stream)
    status = json.loads(ev.object)
    assert ev.type == "ERROR"
    assert status["code"] == 410 and status["reason"] == "Expired"
    assert status["message"].startswith(
        f"too old resource version: {first['metadata']['resourceVersion']} ("
    )
    # The stream ends after the error.
    try:
        await next_event(stream)
        raise AssertionError("stream continued after ERROR")
    except StopAsyncIteration:
        pass


async def test_the_ring_is_bounded_by_bytes_too(make_storage: StorageFactory, registry) -> None:
    """Large objects push old changes out of the ring before its count does (never below 100
    changes): a watch from a revision before the ring's floor gets 410, one inside resumes."""
    storage = await make_storage(ring_size=1_000, ring_max_bytes=1_000_000)
    cms = storage.for_resource(registry.by_resource("", "v1", "configmaps"))
    rvs = []
    for i in range(150):
        created = await cms.create({**configmap(f"big{i}"), "data": {"blob": "x" * 20_000}})
        rvs.append(created["metadata"]["resourceVersion"])
    old = cms.watch("default", resource_version=rvs[10])
    try:
        ev = await next_event(old)
        assert ev.type == "ERROR" and json.loads(ev.object)["code"] == 410
    finally:
        await old.aclose()
    recent = cms.watch("default", resource_version=rvs[139])
    try:
        assert await take(recent, 10) == [("ADDED", f"big{i}") for i in range(140, 150)]
    finally:
        await recent.aclose()


async def test_watch_rv_empty_sends_current_objects(configmaps: ResourceStore) -> None:
    await configmaps.create(configmap("a"))
    await configmaps.create(configmap("b"))
    await configmaps.create(configmap("x", namespace="other"))
    stream = configmaps.watch("default", resource_version="")
    try:
        assert await take(stream, 2) == [("ADDED", "a"), ("ADDED", "b")]
        await configmaps.create(configmap("c"))
        assert await take(stream, 1) == [("ADDED", "c")]
    finally:
        await stream.aclose()


async def test_send_initial_events_ends_with_bookmark(configmaps: ResourceStore) -> None:
    await configmaps.create(configmap("a"))
    stream = configmaps.watch(
        "default", resource_version="", allow_bookmarks=True, send_initial_events=True
    )
    try:
        ev = await next_event(stream)
        assert ev.type == "ADDED"
        bookmark = await next_event(stream)
        assert bookmark.type == "BOOKMARK"
        obj = json.loads(bookmark.object)
        assert obj["kind"] == "ConfigMap" and obj["apiVersion"] == "v1"
        assert obj["metadata"]["annotations"] == {INITIAL_EVENTS_END_ANNOTATION: "true"}
        assert int(obj["metadata"]["resourceVersion"]) >= rv_of(ev)
    finally:
        await stream.aclose()


async def test_send_initial_events_false_starts_now(configmaps: ResourceStore) -> None:
    await configmaps.create(configmap("old"))
    stream = configmaps.watch("default", resource_version="", send_initial_events=False)
    try:
        first = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(0.1)  # let the stream start (not a timing assertion)
        await configmaps.create(configmap("new"))
        ev = await asyncio.wait_for(first, EVENT_TIMEOUT_S)
        assert (ev.type, json.loads(ev.object)["metadata"]["name"]) == ("ADDED", "new")
    finally:
        await stream.aclose()


async def test_selector_enter_and_leave(configmaps: ResourceStore) -> None:
    created = await configmaps.create(configmap("a", app="other"))
    stream = configmaps.watch(
        "default", label_selector="app=web", resource_version=created["metadata"]["resourceVersion"]
    )
    try:
        obj = await configmaps.get("default", "a")
        obj["metadata"]["labels"] = {"app": "web"}
        obj = await configmaps.update("default", "a", obj)
        assert await take(stream, 1) == [("ADDED", "a")]
        obj["data"] = {"k": "changed"}
        obj = await configmaps.update("default", "a", obj)
        assert await take(stream, 1) == [("MODIFIED", "a")]
        obj["metadata"]["labels"] = {"app": "gone"}
        left = await configmaps.update("default", "a", obj)
        ev = await next_event(stream)
        assert ev.type == "DELETED"
        # Upstream: the last matching state, at the revision of the change that left.
        body = json.loads(ev.object)
        assert body["metadata"]["labels"] == {"app": "web"}
        assert body["metadata"]["resourceVersion"] == left["metadata"]["resourceVersion"]
        await configmaps.create(configmap("b", app="other"))
        await configmaps.create(configmap("c", app="web"))
        assert await take(stream, 1) == [("ADDED", "c")]
    finally:
        await stream.aclose()


async def test_field_selector_watch(configmaps: ResourceStore) -> None:
    stream = configmaps.watch("default", field_selector="metadata.name=b", resource_version="0")
    try:
        await configmaps.create(configmap("a"))
        await configmaps.create(configmap("b"))
        assert await take(stream, 1) == [("ADDED", "b")]
    finally:
        await stream.aclose()


async def test_periodic_bookmarks(make_storage: StorageFactory, registry) -> None:
    storage = await make_storage(bookmark_interval_s=0.05)
    cms = storage.for_resource(registry.by_resource("", "v1", "configmaps"))
    secrets = storage.for_resource(registry.by_resource("", "v1", "secrets"))
    created = await cms.create(configmap("a"))
    stream = cms.watch(
        "default", resource_version=created["metadata"]["resourceVersion"], allow_bookmarks=True
    )
    try:
        # Writes to another resource move the bookmark's revision forward too.
        s = await secrets.create(
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "x"}}
        )
        target = int(s["metadata"]["resourceVersion"])
        while True:
            ev = await next_event(stream)
            assert ev.type == "BOOKMARK"
            obj = json.loads(ev.object)
            assert set(obj) == {"kind", "apiVersion", "metadata"}
            assert set(obj["metadata"]) == {"resourceVersion"}
            if int(obj["metadata"]["resourceVersion"]) >= target:
                break
    finally:
        await stream.aclose()


async def test_slow_watcher_is_ended(make_storage: StorageFactory, registry) -> None:
    storage = await make_storage(watcher_queue_size=5)
    cms = storage.for_resource(registry.by_resource("", "v1", "configmaps"))
    slow = cms.watch("default", resource_version="0")
    fast = cms.watch("default", resource_version="0")
    # Start both streams (registration happens at the first iteration).
    first_slow = asyncio.ensure_future(anext(slow))
    first_fast = asyncio.ensure_future(anext(fast))
    await asyncio.sleep(0)
    await cms.create(configmap("c0"))
    assert (await asyncio.wait_for(first_slow, EVENT_TIMEOUT_S)).type == "ADDED"
    assert (await asyncio.wait_for(first_fast, EVENT_TIMEOUT_S)).type == "ADDED"
    fast_seen = 1

    async def drain_fast() -> None:
        nonlocal fast_seen
        async for _ in fast:
            fast_seen += 1
            if fast_seen == 20:
                return

    draining = asyncio.create_task(drain_fast())
    for i in range(1, 20):
        await cms.create(configmap(f"c{i}"))
    await asyncio.wait_for(draining, EVENT_TIMEOUT_S)
    # The slow one gets what it had queued, then its stream ends.
    got = 0
    async for _ in slow:
        got += 1
    assert 1 <= got <= 5
    await fast.aclose()


async def test_fan_out_to_many_watchers(configmaps: ResourceStore) -> None:
    streams = [configmaps.watch(None, resource_version="0") for _ in range(200)]
    firsts = [asyncio.ensure_future(anext(s)) for s in streams]
    await asyncio.sleep(0)
    await configmaps.create(configmap("shared"))
    events = await asyncio.wait_for(asyncio.gather(*firsts), EVENT_TIMEOUT_S)
    assert {e.type for e in events} == {"ADDED"}
    # One serialization shared by every watcher.
    assert len({id(e.object) for e in events}) == 1
    for s in streams:
        await s.aclose()


async def test_cluster_scoped_and_namespaced_watch(storage: Storage, registry) -> None:
    nss = storage.for_resource(registry.by_resource("", "v1", "namespaces"))
    stream = nss.watch(None, resource_version="0")
    try:
        await nss.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n1"}})
        assert await take(stream, 1) == [("ADDED", "n1")]
    finally:
        await stream.aclose()


async def test_relist_after_datastore_watch_breaks(
    storage: Storage, configmaps: ResourceStore, backend
) -> None:
    created = await configmaps.create(configmap("a"))
    stream = configmaps.watch("default", resource_version=created["metadata"]["resourceVersion"])
    pending = asyncio.ensure_future(anext(stream))
    await configmaps.create(configmap("b"))
    assert (await asyncio.wait_for(pending, EVENT_TIMEOUT_S)).type == "ADDED"
    # Break the shared datastore watch: the task relists and ends every watcher.
    storage._restart_watch()
    try:
        await next_event(stream)
        raise AssertionError("expected the stream to end")
    except StopAsyncIteration:
        pass
    await storage.wait_ready(EVENT_TIMEOUT_S)
    await configmaps.create(configmap("c"))
    page = await configmaps.list("default")
    assert [json.loads(i)["metadata"]["name"] for i in page.items] == ["a", "b", "c"]


async def test_lazy_cache_for_new_resource(storage: Storage, registry) -> None:
    from dataclasses import replace

    base = registry.by_resource("", "v1", "configmaps")
    custom = replace(
        base,
        group="example.com",
        version="v1",
        kind="Widget",
        plural="widgets",
        singular="widget",
        storage_resource="example.com/widgets",
        storage_version="example.com/v1",
    )
    registry.add(custom)
    widgets = storage.for_resource(custom)
    body = {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"name": "w", "namespace": "d"},
    }
    created = await widgets.create(body)
    assert created["metadata"]["resourceVersion"]
    page = await widgets.list(None)
    assert [json.loads(i)["metadata"]["name"] for i in page.items] == ["w"]


async def test_direct_writes_and_batches_keep_order(configmaps: ResourceStore) -> None:
    """A stream with a direct writer (declining every third event, as a backed-up connection
    does) delivers every change once and in order, whether written directly or batched."""
    stream = configmaps.watch("default", resource_version="0")
    seen: list[WatchEvent] = []
    calls = 0

    def direct(event: WatchEvent) -> bool:
        nonlocal calls
        calls += 1
        if calls % 3 == 0:
            return False
        seen.append(event)
        return True

    stream.direct = direct
    await configmaps.create(configmap("first"))
    seen.extend(await asyncio.wait_for(stream.next_batch(), EVENT_TIMEOUT_S))
    total = 30  # a multiple of 3: the last change is declined, so the reader's batch ends it
    reader = asyncio.create_task(_read_batches(stream, seen, total + 1))
    for i in range(total):
        await configmaps.create(configmap(f"d{i}"))
        if i % 7 == 0:
            await asyncio.sleep(0)
    await asyncio.wait_for(reader, EVENT_TIMEOUT_S)
    await stream.aclose()
    names = [json.loads(e.object)["metadata"]["name"] for e in seen]
    assert names == ["first"] + [f"d{i}" for i in range(total)]
    assert calls > 0  # the direct path was taken
    rvs = [rv_of(e) for e in seen]
    assert rvs == sorted(set(rvs))


async def _read_batches(stream, seen: list[WatchEvent], want: int) -> None:
    while len(seen) < want:
        seen.extend(await stream.next_batch())
