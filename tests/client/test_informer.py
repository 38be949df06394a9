"""Informers against a real in-process API server: list+watch, relist on 410, sharing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest

from sampan.client import informer as informer_module
from sampan.client.api import CONFIGMAPS, NAMESPACES, Client
from sampan.client.informer import (
    INDEX_NAMESPACE,
    INDEX_OWNER_UID,
    Cache,
    Informer,
    SharedInformerFactory,
    _Backoff,
    compact,
    object_key,
    split_key,
)

from .conftest import ApiServerHarness

WAIT_S = 15.0


def configmap(name: str, namespace: str = "default", **labels: str) -> dict:
    return {"metadata": {"name": name, "namespace": namespace, "labels": labels}, "data": {}}


class Recorder:
    """Handlers that only record (as real handlers only enqueue), plus a way to wait."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.changed = asyncio.Event()

    def on_add(self, obj: dict) -> None:
        self._record("add", obj)

    def on_update(self, old: dict, new: dict) -> None:
        assert object_key(old) == object_key(new)
        self._record("update", new)

    def on_delete(self, obj: dict) -> None:
        self._record("delete", obj)

    def _record(self, kind: str, obj: dict) -> None:
        self.events.append((kind, object_key(obj)))
        self.changed.set()

    def register(self, informer: Informer, **kwargs: Any) -> None:
        informer.add_event_handler(
            on_add=self.on_add, on_update=self.on_update, on_delete=self.on_delete, **kwargs
        )

    async def wait_for(self, predicate: Callable[[], bool], timeout_s: float = WAIT_S) -> None:
        async with asyncio.timeout(timeout_s):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

    async def wait_event(self, event: tuple[str, str]) -> None:
        await self.wait_for(lambda: event in self.events)


# -- pure units -------------------------------------------------------------------------------


def test_keys() -> None:
    assert object_key({"metadata": {"name": "a", "namespace": "ns"}}) == "ns/a"
    assert object_key({"metadata": {"name": "node1"}}) == "node1"
    assert split_key("ns/a") == ("ns", "a")
    assert split_key("node1") == (None, "node1")


def test_cache_indexes_follow_updates_and_deletes() -> None:
    cache = Cache({"by-app": lambda o: [o["metadata"].get("labels", {}).get("app", "")]})

    def obj(name: str, ns: str, app: str, owner: str | None = None) -> dict:
        meta: dict[str, Any] = {"name": name, "namespace": ns, "labels": {"app": app}}
        if owner:
            meta["ownerReferences"] = [{"uid": owner, "kind": "ReplicaSet", "name": "rs"}]
        return {"metadata": meta}

    cache._upsert(obj("a", "ns1", "web", owner="u1"))
    cache._upsert(obj("b", "ns1", "db", owner="u1"))
    cache._upsert(obj("c", "ns2", "web"))
    assert sorted(object_key(o) for o in cache.by_index(INDEX_NAMESPACE, "ns1")) == [
        "ns1/a",
        "ns1/b",
    ]
    assert sorted(object_key(o) for o in cache.by_index(INDEX_OWNER_UID, "u1")) == [
        "ns1/a",
        "ns1/b",
    ]
    assert sorted(object_key(o) for o in cache.by_index("by-app", "web")) == ["ns1/a", "ns2/c"]
    cache._upsert(obj("a", "ns1", "db"))  # relabelled, owner dropped
    assert [object_key(o) for o in cache.by_index("by-app", "web")] == ["ns2/c"]
    assert [object_key(o) for o in cache.by_index(INDEX_OWNER_UID, "u1")] == ["ns1/b"]
    cache._delete("ns1/b")
    assert [object_key(o) for o in cache.by_index(INDEX_OWNER_UID, "u1")] == []
    cache.add_indexers({"by-name": lambda o: [o["metadata"]["name"]]})
    assert [object_key(o) for o in cache.by_index("by-name", "c")] == ["ns2/c"]
    with pytest.raises(ValueError):
        cache.add_indexers({"by-name": lambda o: []})
    assert cache.get_by_name("c", "ns2") is cache.get("ns2/c")
    assert len(cache) == 2 and "ns1/a" in cache


# -- against the server -----------------------------------------------------------------------


async def test_list_then_watch_sees_adds_updates_deletes(client: Client) -> None:
    await client.create(CONFIGMAPS, configmap("before"))
    informer = Informer(client, CONFIGMAPS, namespace="default", page_size=2)
    recorder = Recorder()
    recorder.register(informer)
    informer.start()
    try:
        assert await informer.wait_synced(WAIT_S)
        assert informer.has_synced
        assert ("add", "default/before") in recorder.events
        assert informer.cache.get("default/before") is not None
        assert informer.cache.get("default/before")["kind"] == "ConfigMap"

        await client.create(CONFIGMAPS, configmap("live"))
        await recorder.wait_event(("add", "default/live"))
        await client.patch(CONFIGMAPS, "live", {"data": {"x": "1"}}, namespace="default")
        await recorder.wait_event(("update", "default/live"))
        assert informer.cache.get("default/live")["data"] == {"x": "1"}
        await client.delete(CONFIGMAPS, "live", namespace="default")
        await recorder.wait_event(("delete", "default/live"))
        assert informer.cache.get("default/live") is None
        live_events = [e for e in recorder.events if e[1] == "default/live"]
        assert live_events == [
            ("add", "default/live"),
            ("update", "default/live"),
            ("delete", "default/live"),
        ]
        assert informer.list_count == 1
        assert client.active_watches == 1
    finally:
        await informer.stop()
    assert client.active_watches == 0


async def test_late_handler_gets_existing_objects_and_bad_handler_is_contained(
    client: Client,
) -> None:
    await client.create(CONFIGMAPS, configmap("a"))
    informer = Informer(client, CONFIGMAPS, namespace="default")

    def broken(obj: dict) -> None:
        raise RuntimeError("handler bug")

    informer.add_event_handler(on_add=broken)
    informer.start()
    try:
        assert await informer.wait_synced(WAIT_S)
        late = Recorder()
        late.register(informer)
        assert ("add", "default/a") in late.events
        await client.create(CONFIGMAPS, configmap("b"))
        await late.wait_event(("add", "default/b"))  # the broken handler stopped nothing
    finally:
        await informer.stop()


async def test_selectors_limit_what_is_cached(client: Client) -> None:
    await client.create(CONFIGMAPS, configmap("yes", tier="front"))
    await client.create(CONFIGMAPS, configmap("no", tier="back"))
    informer = Informer(client, CONFIGMAPS, label_selector="tier=front")
    informer.start()
    try:
        assert await informer.wait_synced(WAIT_S)
        assert informer.cache.keys() == ["default/yes"]
    finally:
        await informer.stop()


async def test_transform_shrinks_cached_objects_from_list_and_watch(client: Client) -> None:
    """A transform (client-go's TransformFunc) applies to listed and watched objects alike;
    handlers and the cache see only what it kept."""

    def slim(obj: dict) -> dict:
        meta = obj["metadata"]
        keep = ("name", "namespace", "resourceVersion")
        return {"metadata": {k: meta[k] for k in keep}, "size": len(obj.get("data") or {})}

    await client.create(CONFIGMAPS, {**configmap("listed"), "data": {"a": "1"}})
    informer = Informer(client, CONFIGMAPS, namespace="default", transform=slim)
    recorder = Recorder()
    recorder.register(informer)
    informer.start()
    try:
        assert await informer.wait_synced(WAIT_S)
        await client.create(CONFIGMAPS, {**configmap("watched"), "data": {"a": "1", "b": "2"}})
        await recorder.wait_event(("add", "default/watched"))
        listed = informer.cache.get("default/listed")
        watched = informer.cache.get("default/watched")
        assert listed is not None and watched is not None
        assert (listed["size"], watched["size"]) == (1, 2)
        assert set(listed) == set(watched) == {"metadata", "size"}
        await client.delete(CONFIGMAPS, "watched", namespace="default")
        await recorder.wait_event(("delete", "default/watched"))
        assert "default/watched" not in informer.cache
    finally:
        await informer.stop()


def test_compact_drops_managed_fields_and_shares_repeated_strings() -> None:
    def parsed(name: str) -> dict:
        # Built from text, as the wire gives them: equal values are distinct strings.
        return json.loads(
            json.dumps(
                {
                    "metadata": {
                        "name": name,
                        "namespace": "team-a",
                        "labels": {"app": "web"},
                        "managedFields": [{"manager": "m", "fieldsV1": {"f:data": {}}}],
                    },
                    "spec": {"nodeName": "node-1", "containers": [{"image": "pause:3.10"}]},
                    "data": {"long": "x" * 100},
                }
            )
        )

    first, second = parsed("a"), parsed("b")
    assert first["metadata"]["namespace"] is not second["metadata"]["namespace"]
    first, second = compact(first), compact(second)
    assert "managedFields" not in first["metadata"]
    assert first["metadata"]["namespace"] is second["metadata"]["namespace"]
    assert first["metadata"]["labels"]["app"] is second["metadata"]["labels"]["app"]
    assert first["spec"]["nodeName"] is second["spec"]["nodeName"]
    image = first["spec"]["containers"][0]["image"]
    assert image is second["spec"]["containers"][0]["image"] and image == "pause:3.10"
    assert first["data"]["long"] == "x" * 100  # kept, not interned (over the limit)
    again = compact(json.loads(json.dumps(first)))
    assert again == first  # idempotent, values unchanged


def test_compact_shares_one_dict_per_object_state() -> None:
    def state(rv: str, api_version: str = "v1") -> dict:
        return {
            "apiVersion": api_version,
            "kind": "ConfigMap",
            "metadata": {"name": "a", "uid": "u-compact-1", "resourceVersion": rv},
            "data": {"k": "v"},
        }

    seen_first = compact(state("7"))
    assert compact(state("7")) is seen_first  # a second informer given the same state
    assert compact(state("8")) is not seen_first  # a later state is its own object
    assert compact(state("7", "v2")) is not seen_first  # another version's form of it


async def test_compacting_informers_listing_at_once_keep_one_copy_of_each_object(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two compacting factories (the controller manager's and the scheduler's) listing the
    same objects at once, as after a restart: the second informer holds the first one's
    dicts, however many objects there are beyond the recent states remembered -- and a
    changed object is its own dict again."""
    monkeypatch.setattr(informer_module._SHARED, "capacity", 2)
    for i in range(6):
        await client.create(CONFIGMAPS, {**configmap(f"shared-{i}"), "data": {"i": str(i)}})
    first = SharedInformerFactory(client, transform=compact)
    second = SharedInformerFactory(client, transform=compact)
    plain = SharedInformerFactory(client)
    a = first.informer(CONFIGMAPS, namespace="default")
    b = second.informer(CONFIGMAPS, namespace="default")
    c = plain.informer(CONFIGMAPS, namespace="default")
    for factory in (first, second, plain):
        factory.start()
    try:
        for factory in (first, second, plain):
            assert await factory.wait_synced(WAIT_S)
        keys = [f"default/shared-{i}" for i in range(6)]
        assert all(a.cache.get(k) is b.cache.get(k) for k in keys)
        assert all(c.cache.get(k) is not a.cache.get(k) for k in keys)  # no transform
        assert "managedFields" in (c.cache.get(keys[0]) or {}).get("metadata", {})
        await client.patch(CONFIGMAPS, "shared-0", {"data": {"i": "changed"}}, namespace="default")

        async def changed() -> bool:
            for _ in range(int(WAIT_S * 20)):
                got = [inf.cache.get(keys[0]) or {} for inf in (a, b)]
                if all(g.get("data", {}).get("i") == "changed" for g in got):
                    return got[0] is got[1]
                await asyncio.sleep(0.05)
            return False

        assert await changed()
    finally:
        for factory in (first, second, plain):
            await factory.stop()


async def test_a_factory_transform_applies_to_its_informers_and_writes_keep_managed_fields(
    client: Client,
) -> None:
    """The controller manager's and scheduler's caches hold no managedFields; an update
    written from such a cached copy keeps the stored entries (as upstream's API server does
    for a write that leaves the field out)."""
    await client.create(CONFIGMAPS, {**configmap("trimmed"), "data": {"a": "1"}})
    factory = SharedInformerFactory(client, transform=compact)
    informer = factory.informer(CONFIGMAPS, namespace="default")
    recorder = Recorder()
    recorder.register(informer)
    factory.start()
    try:
        assert await factory.wait_synced(WAIT_S)
        await client.create(CONFIGMAPS, {**configmap("watched"), "data": {"a": "1"}})
        await recorder.wait_event(("add", "default/watched"))
        for name in ("trimmed", "watched"):
            cached = informer.cache.get(f"default/{name}")
            assert cached is not None and "managedFields" not in cached["metadata"]
        # A second component's factory (the scheduler's beside the controller manager's)
        # holds the very same dicts, not copies.
        other = SharedInformerFactory(client, transform=compact)
        other_informer = other.informer(CONFIGMAPS, namespace="default")
        other.start()
        try:
            assert await other.wait_synced(WAIT_S)
            for name in ("trimmed", "watched"):
                key = f"default/{name}"
                assert other_informer.cache.get(key) is informer.cache.get(key)
        finally:
            await other.stop()
        stored = await client.get(CONFIGMAPS, "trimmed", namespace="default")
        assert stored["metadata"]["managedFields"]
        cached = informer.cache.get("default/trimmed")
        assert cached is not None
        changed = json.loads(json.dumps(cached))
        changed["data"] = {"a": "2"}
        updated = await client.update(CONFIGMAPS, changed)
        assert updated["data"] == {"a": "2"}
        managers = [e["manager"] for e in updated["metadata"]["managedFields"]]
        assert {e["manager"] for e in stored["metadata"]["managedFields"]} <= set(managers)
    finally:
        await factory.stop()


async def test_relists_after_expired_resource_version(
    api_server: ApiServerHarness, client: Client
) -> None:
    await client.create(CONFIGMAPS, configmap("keep"))
    await client.create(CONFIGMAPS, configmap("gone"))
    informer = Informer(
        client, CONFIGMAPS, namespace="default", backoff_initial_s=0.05, backoff_max_s=0.2
    )
    recorder = Recorder()
    recorder.register(informer)
    informer.start()
    try:
        assert await informer.wait_synced(WAIT_S)
        gone = informer.cache.get("default/gone")
        assert gone is not None

        async def write_behind_the_informers_back(backend: Any) -> None:
            # While no API server runs, change the datastore directly: the informer cannot
            # see these changes in a watch, and the new server's watch cache starts after them.
            prefix = "/registry/configmaps/default/"
            _, kv = await backend.get(prefix + "gone")
            await backend.delete(prefix + "gone", kv.mod_revision)
            made = dict(configmap("new"))
            made["apiVersion"], made["kind"] = "v1", "ConfigMap"
            made["metadata"] = {
                **made["metadata"],
                "uid": "0b4e8a6e-2d5f-4b53-8b0e-2f3c7f0e0001",
                "creationTimestamp": "2026-01-01T00:00:00Z",
            }
            await backend.create(prefix + "new", json.dumps(made).encode())

        await api_server.restart_server(while_down=write_behind_the_informers_back)
        await recorder.wait_for(
            lambda: (
                ("delete", "default/gone") in recorder.events
                and ("add", "default/new") in recorder.events
            )
        )
        assert informer.list_count == 2
        assert sorted(informer.cache.keys()) == ["default/keep", "default/new"]
        # The relist diff reported the deletion with the last known state.
        assert ("delete", "default/gone") in recorder.events
        # And the informer keeps watching on the new server.
        await client.create(CONFIGMAPS, configmap("after"))
        await recorder.wait_event(("add", "default/after"))
    finally:
        await informer.stop()


async def test_shared_informers_share_one_watch(client: Client) -> None:
    factory = SharedInformerFactory(client)
    first = factory.informer(CONFIGMAPS, namespace="default")
    second = factory.informer(CONFIGMAPS, namespace="default")
    other = factory.informer(NAMESPACES)
    assert first is second and first is not other
    consumer_a, consumer_b = Recorder(), Recorder()
    consumer_a.register(first)
    consumer_b.register(second)
    factory.start()
    try:
        assert await factory.wait_synced(WAIT_S)
        await client.create(CONFIGMAPS, configmap("shared"))
        await consumer_a.wait_event(("add", "default/shared"))
        await consumer_b.wait_event(("add", "default/shared"))
        assert client.active_watches == 2  # configmaps@default and namespaces, one each
        late = factory.informer(CONFIGMAPS, namespace="default")
        assert late is first and client.active_watches == 2
        started_after = factory.informer(CONFIGMAPS, namespace="kube-system")
        assert await started_after.wait_synced(WAIT_S)  # started because the factory runs
    finally:
        await factory.stop()
    assert client.active_watches == 0


async def test_resync_replays_updates(client: Client) -> None:
    await client.create(CONFIGMAPS, configmap("r"))
    informer = Informer(client, CONFIGMAPS, namespace="default")
    recorder = Recorder()
    recorder.register(informer, resync_period_s=0.05)
    informer.start()
    try:
        assert await informer.wait_synced(WAIT_S)
        await recorder.wait_for(lambda: recorder.events.count(("update", "default/r")) >= 2)
    finally:
        await informer.stop()


def test_backoff_grows_with_jitter_and_caps() -> None:
    backoff = _Backoff(0.8, 30.0)
    delays = [backoff.next_delay_s() for _ in range(12)]
    assert 0.8 <= delays[0] <= 1.6
    assert 1.6 <= delays[1] <= 3.2
    assert all(d <= 30.0 for d in delays)
    assert delays[-1] >= 30.0 * 0.99  # capped base, jitter cannot exceed the cap
    backoff.reset()
    assert backoff.next_delay_s() <= 1.6
