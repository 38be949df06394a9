"""Lists from the watch cache and the datastore: resourceVersion semantics, limit/continue
(stable pages while writes happen), selectors, bad and expired tokens."""

from __future__ import annotations

import base64
import json

import pytest

from sampan.api.errors import BadRequest, Gone, Invalid, Timeout
from sampan.apiserver.storage import DeleteOptions, ResourceStore, Storage
from sampan.apiserver.storage.tokens import decode_continue, encode_continue
from sampan.datastore.sqlite import SQLiteBackend

from .conftest import configmap, pod


def names(items: list[bytes]) -> list[str]:
    return [json.loads(i)["metadata"]["name"] for i in items]


async def test_list_is_consistent_and_ordered(configmaps: ResourceStore) -> None:
    for name in ("b", "a", "c"):
        await configmaps.create(configmap(name))
    await configmaps.create(configmap("z", namespace="aaa"))
    page = await configmaps.list("default")
    assert names(page.items) == ["a", "b", "c"]
    assert page.continue_token is None and page.remaining is None
    every = await configmaps.list(None)
    assert names(every.items) == ["z", "a", "b", "c"]  # key order: namespace, then name
    for item in every.items:
        assert json.loads(item)["metadata"]["resourceVersion"]


async def test_list_after_write_sees_it(configmaps: ResourceStore, backend: SQLiteBackend) -> None:
    created = await configmaps.create(configmap("a"))
    page = await configmaps.list("default")
    assert int(page.resource_version) >= int(created["metadata"]["resourceVersion"])
    assert names(page.items) == ["a"]


async def test_namespace_prefix_does_not_leak(configmaps: ResourceStore) -> None:
    await configmaps.create(configmap("x", namespace="ns"))
    await configmaps.create(configmap("y", namespace="ns-2"))
    await configmaps.create(configmap("w", namespace="ns0"))
    assert names((await configmaps.list("ns")).items) == ["x"]


async def test_paging_is_stable_while_writing(configmaps: ResourceStore) -> None:
    for i in range(10):
        await configmaps.create(configmap(f"cm{i:02d}"))
    first = await configmaps.list("default", limit=4)
    assert names(first.items) == [f"cm{i:02d}" for i in range(4)]
    assert first.continue_token and first.remaining == 6
    # Writes between pages: later pages still show the snapshot of the first one.
    await configmaps.create(configmap("cm05a"))
    await configmaps.delete("default", "cm07", DeleteOptions())
    changed = await configmaps.get("default", "cm08")
    changed["data"] = {"k": "changed"}
    await configmaps.update("default", "cm08", changed)
    second = await configmaps.list("default", limit=4, continue_token=first.continue_token)
    assert names(second.items) == ["cm04", "cm05", "cm06", "cm07"]
    assert second.resource_version == first.resource_version
    third = await configmaps.list("default", limit=4, continue_token=second.continue_token)
    assert names(third.items) == ["cm08", "cm09"]
    assert json.loads(third.items[0])["data"] == {"k": "cm08"}
    assert third.continue_token is None
    # A fresh list sees the writes.
    now = await configmaps.list("default")
    assert "cm05a" in names(now.items) and "cm07" not in names(now.items)


async def test_paging_from_cache_when_nothing_changed(configmaps: ResourceStore) -> None:
    for i in range(5):
        await configmaps.create(configmap(f"c{i}"))
    seen: list[str] = []
    token = ""
    while True:
        page = await configmaps.list("default", limit=2, continue_token=token)
        seen += names(page.items)
        if not page.continue_token:
            break
        token = page.continue_token
    assert seen == [f"c{i}" for i in range(5)]


async def test_label_and_field_selectors(configmaps: ResourceStore, pods: ResourceStore) -> None:
    await configmaps.create(configmap("a", app="web", tier="front"))
    await configmaps.create(configmap("b", app="web"))
    await configmaps.create(configmap("c", app="db"))
    assert names((await configmaps.list("default", label_selector="app=web")).items) == ["a", "b"]
    assert names((await configmaps.list("default", label_selector="app!=web")).items) == ["c"]
    assert names((await configmaps.list("default", field_selector="metadata.name=b")).items) == [
        "b"
    ]
    page = await configmaps.list("default", label_selector="app=web", limit=1)
    assert names(page.items) == ["a"] and page.continue_token and page.remaining is None
    rest = await configmaps.list(
        "default", label_selector="app=web", limit=1, continue_token=page.continue_token
    )
    assert names(rest.items) == ["b"] and rest.continue_token is None
    await pods.create(pod("p1", node="n1"))
    await pods.create(pod("p2", node="n2"))
    assert names((await pods.list(None, field_selector="spec.nodeName=n2")).items) == ["p2"]
    with pytest.raises(BadRequest):
        await configmaps.list("default", field_selector="spec.nothing=1")


async def test_bad_continue_token(configmaps: ResourceStore) -> None:
    for bad in ("!!!", "eyJ2IjoibWV0YS5rOHMuaW8vdjAiLCJydiI6MSwic3RhcnQiOiJhIn0"):
        with pytest.raises(BadRequest) as err:
            await configmaps.list("default", continue_token=bad)
        assert err.value.message.startswith("invalid continue token: continue key is not valid")
    token = encode_continue("/registry/configmaps/default/a", "/registry/configmaps/default/", 1)
    with pytest.raises(BadRequest):
        await configmaps.list("default", continue_token=token, resource_version="5")


async def test_expired_continue_token(configmaps: ResourceStore, backend: SQLiteBackend) -> None:
    for i in range(4):
        await configmaps.create(configmap(f"c{i}"))
    first = await configmaps.list("default", limit=2)
    await configmaps.delete("default", "c3", DeleteOptions())
    await backend.compact(await backend.current_revision())
    with pytest.raises(Gone) as err:
        await configmaps.list("default", limit=2, continue_token=first.continue_token)
    assert err.value.code == 410 and err.value.reason == "Expired"
    assert "continue parameter is too old" in err.value.message


async def test_exact_resource_version(configmaps: ResourceStore, backend: SQLiteBackend) -> None:
    await configmaps.create(configmap("a"))
    at = (await configmaps.list("default")).resource_version
    await configmaps.create(configmap("b"))
    old = await configmaps.list("default", resource_version=at, resource_version_match="Exact")
    assert names(old.items) == ["a"] and old.resource_version == at
    await backend.compact(await backend.current_revision())
    with pytest.raises(Gone) as err:
        await configmaps.list("default", resource_version=at, resource_version_match="Exact")
    assert err.value.message == "The resourceVersion for the provided list is too old."


async def test_not_older_than(configmaps: ResourceStore, backend: SQLiteBackend) -> None:
    created = await configmaps.create(configmap("a"))
    rv = created["metadata"]["resourceVersion"]
    page = await configmaps.list(
        "default", resource_version=rv, resource_version_match="NotOlderThan"
    )
    assert names(page.items) == ["a"]
    page = await configmaps.list("default", resource_version="0")
    assert int(page.resource_version) >= 0
    future = str(await backend.current_revision() + 100)
    with pytest.raises(Timeout) as err:
        await configmaps.list("default", resource_version=future)
    assert err.value.code == 504 and "Too large resource version" in err.value.message
    with pytest.raises(Timeout):
        await configmaps.get("default", "a", resource_version=future)


async def test_bad_resource_version(configmaps: ResourceStore) -> None:
    with pytest.raises(BadRequest):
        await configmaps.list("default", resource_version="abc")
    # Invalid list options are a 422 for the kind ListOptions, as kube-apiserver answers.
    with pytest.raises(Invalid, match=r'^ListOptions.meta.k8s.io "" is invalid: '):
        await configmaps.list("default", resource_version="0", resource_version_match="Exact")
    with pytest.raises(BadRequest):
        configmaps.watch("default", resource_version="-1")


async def test_cached_objects_and_generation(storage: Storage, configmaps: ResourceStore) -> None:
    g0 = configmaps.generation
    await configmaps.create(configmap("a", namespace="one"))
    await configmaps.create(configmap("b", namespace="two"))
    await configmaps.list(None)  # consistent read: the cache has caught up
    assert configmaps.generation > g0
    assert sorted(o["metadata"]["name"] for o in configmaps.cached_objects()) == ["a", "b"]
    assert [o["metadata"]["name"] for o in configmaps.cached_objects("two")] == ["b"]


def test_continue_token_round_trip() -> None:
    token = encode_continue("/registry/pods/ns/web-1", "/registry/pods/ns/", 42)
    decoded = decode_continue(token)
    assert decoded.revision == 42 and decoded.start == "web-1\x00"
    raw = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    assert raw == {"v": "meta.k8s.io/v1", "rv": 42, "start": "web-1\x00"}
    with pytest.raises(BadRequest):
        decode_continue(
            base64.urlsafe_b64encode(
                json.dumps({"v": "meta.k8s.io/v1", "rv": 3, "start": "../x"}).encode()
            ).decode()
        )


async def test_undecodable_stored_value_is_skipped(
    configmaps: ResourceStore, backend: SQLiteBackend
) -> None:
    await backend.create("/registry/configmaps/default/bad", b"not json")
    await configmaps.create(configmap("good"))
    page = await configmaps.list("default")
    assert names(page.items) == ["good"]
