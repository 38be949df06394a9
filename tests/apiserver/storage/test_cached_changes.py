"""``ResourceStore.cached_changes``: followers of a watch cache get every change once, in
order, and a full listing when they fell behind the ring."""

from __future__ import annotations

import asyncio

from sampan.apiserver.storage import DeleteOptions, ResourceStore

from .conftest import StorageFactory, resource

CATCH_UP_S = 10.0


def configmap(name: str, value: str = "") -> dict:
    return {"metadata": {"name": name, "namespace": "default"}, "data": {"v": value}}


async def settled(store: ResourceStore, cursor, want_revision: int):
    """The delta once the cache has applied ``want_revision``."""
    async with asyncio.timeout(CATCH_UP_S):
        while True:
            delta = store.cached_changes(cursor)
            if delta is not None and delta.cursor.revision >= want_revision:
                return delta
            await asyncio.sleep(0.01)


def rv(obj: dict) -> int:
    return int(obj["metadata"]["resourceVersion"])


async def test_changes_in_order_then_nothing(configmaps: ResourceStore) -> None:
    first = await configmaps.create(configmap("a"))
    start = await settled(configmaps, None, rv(first))
    assert start.full and [(ns, n) for ns, n, _ in start.changes] == [("default", "a")]
    assert configmaps.cached_changes(start.cursor) is None  # nothing new

    await configmaps.create(configmap("b"))
    await configmaps.update("default", "a", configmap("a", "2"))
    await configmaps.delete("default", "b", DeleteOptions())
    last = await configmaps.create(configmap("c"))
    delta = await settled(configmaps, start.cursor, rv(last))
    assert not delta.full
    seen = [(name, obj["data"]["v"] if obj else None) for _ns, name, obj in delta.changes]
    assert seen == [("b", ""), ("a", "2"), ("b", None), ("c", "")]
    assert delta.cursor.revision == rv(last)


async def test_a_follower_behind_the_ring_gets_everything(
    make_storage: StorageFactory, registry
) -> None:
    storage = await make_storage(ring_size=3)
    cms = storage.for_resource(resource(registry, "", "v1", "configmaps"))
    first = await cms.create(configmap("a"))
    start = await settled(cms, None, rv(first))
    last = None
    for i in range(6):
        last = await cms.create(configmap(f"more{i}"))
    assert last is not None
    delta = await settled(cms, start.cursor, rv(last))
    assert delta.full
    assert sorted(n for _ns, n, _o in delta.changes) == ["a"] + [f"more{i}" for i in range(6)]
