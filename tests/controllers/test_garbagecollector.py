"""Garbage collector against a real API server: background, foreground, orphan, mixed owners."""

from __future__ import annotations

from typing import Any

import pytest

from sampan.client import Client, NotFoundError
from sampan.client.api import CONFIGMAPS, SECRETS, Resource
from sampan.controllers.garbagecollector import GarbageCollector

from .conftest import eventually

NS = "default"


def _ref(owner: dict[str, Any], *, block: bool = False) -> dict[str, Any]:
    ref = {
        "apiVersion": "v1",
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
    }
    if block:
        ref["blockOwnerDeletion"] = True
    return ref


async def _make(
    client: Client, resource: Resource, name: str, owners: list[dict[str, Any]] = ()
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if owners:
        meta["ownerReferences"] = list(owners)
    obj = await client.create(resource, {"metadata": meta}, namespace=NS)
    obj.setdefault("kind", resource.kind)
    return obj


async def _gone(client: Client, resource: Resource, name: str) -> bool:
    try:
        await client.get(resource, name, namespace=NS)
    except NotFoundError:
        return True
    return False


@pytest.fixture
async def gc(run_controller) -> GarbageCollector:
    controller = await run_controller(GarbageCollector, workers=4)
    await eventually(lambda: _healthy(controller))
    return controller


async def _healthy(controller: GarbageCollector) -> bool:
    return controller.healthy()


async def test_background_deletion_removes_dependents(client: Client, gc) -> None:
    owner = await _make(client, CONFIGMAPS, "owner")
    child = await _make(client, CONFIGMAPS, "child", [_ref(owner)])
    await _make(client, SECRETS, "grandchild", [_ref(child)])
    await _make(client, SECRETS, "unrelated")
    await client.delete(CONFIGMAPS, "owner", namespace=NS)  # default policy: background
    await eventually(lambda: _gone(client, CONFIGMAPS, "child"))
    await eventually(lambda: _gone(client, SECRETS, "grandchild"))
    await client.get(SECRETS, "unrelated", namespace=NS)


async def test_dependent_of_an_owner_that_never_existed_is_deleted(client: Client, gc) -> None:
    phantom = {
        "kind": "ConfigMap",
        "metadata": {"name": "phantom", "uid": "00000000-0000-0000-0000-000000000001"},
    }
    await _make(client, SECRETS, "stray", [_ref(phantom)])
    await eventually(lambda: _gone(client, SECRETS, "stray"))


async def test_orphan_deletion_keeps_dependents(client: Client, gc) -> None:
    owner = await _make(client, CONFIGMAPS, "owner")
    other = await _make(client, CONFIGMAPS, "other-owner")
    await _make(client, SECRETS, "child", [_ref(owner), _ref(other)])
    await client.delete(CONFIGMAPS, "owner", namespace=NS, propagation_policy="Orphan")
    await eventually(lambda: _gone(client, CONFIGMAPS, "owner"))
    child = await client.get(SECRETS, "child", namespace=NS)
    assert [r["name"] for r in child["metadata"]["ownerReferences"]] == ["other-owner"]


async def test_foreground_deletion_waits_for_blocking_dependents(client: Client, gc) -> None:
    owner = await _make(client, CONFIGMAPS, "owner")
    middle = await _make(client, CONFIGMAPS, "middle", [_ref(owner, block=True)])
    await _make(
        client,
        SECRETS,
        "leaf",
        [_ref(middle, block=True)],
    )
    # The leaf holds a finalizer, so the chain must wait for it.
    await client.patch(
        SECRETS, "leaf", {"metadata": {"finalizers": ["example.com/hold"]}}, namespace=NS
    )
    await client.delete(CONFIGMAPS, "owner", namespace=NS, propagation_policy="Foreground")

    async def leaf_terminating() -> bool:
        leaf = await client.get(SECRETS, "leaf", namespace=NS)
        return bool(leaf["metadata"].get("deletionTimestamp"))

    await eventually(leaf_terminating)
    owner_now = await client.get(CONFIGMAPS, "owner", namespace=NS)
    assert "foregroundDeletion" in owner_now["metadata"]["finalizers"]
    middle_now = await client.get(CONFIGMAPS, "middle", namespace=NS)
    assert middle_now["metadata"].get("deletionTimestamp")

    await client.patch(SECRETS, "leaf", {"metadata": {"finalizers": None}}, namespace=NS)
    await eventually(lambda: _gone(client, CONFIGMAPS, "middle"))
    await eventually(lambda: _gone(client, CONFIGMAPS, "owner"))


async def test_a_live_owner_keeps_its_dependent(client: Client, gc) -> None:
    gone = await _make(client, CONFIGMAPS, "gone")
    alive = await _make(client, CONFIGMAPS, "alive")
    await _make(client, SECRETS, "child", [_ref(gone), _ref(alive)])
    await client.delete(CONFIGMAPS, "gone", namespace=NS)

    async def only_alive_left() -> bool:
        child = await client.get(SECRETS, "child", namespace=NS)
        return [r["name"] for r in child["metadata"]["ownerReferences"]] == ["alive"]

    await eventually(only_alive_left)


async def test_replicaset_cascades_to_its_pods(client: Client, gc, run_controller) -> None:
    """With a real owner controller: Foreground, then Background deletion of ReplicaSets."""
    from sampan.client.api import PODS, REPLICASETS
    from sampan.controllers.replicaset import ReplicaSetController

    await run_controller(ReplicaSetController)

    def replicaset(name: str) -> dict[str, Any]:
        labels = {"app": name}
        return {
            "metadata": {"name": name},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "c", "image": "busybox"}]},
                },
            },
        }

    async def pods_of(name: str) -> int:
        listing = await client.list(PODS, namespace=NS, label_selector=f"app={name}")
        return len(listing["items"])

    for name in ("fg", "bg"):
        await client.create(REPLICASETS, replicaset(name), namespace=NS)
        await eventually(lambda name=name: _true(pods_of(name), 2))
    await client.delete(REPLICASETS, "fg", namespace=NS, propagation_policy="Foreground")
    await client.delete(REPLICASETS, "bg", namespace=NS, propagation_policy="Background")
    for name in ("fg", "bg"):
        await eventually(lambda name=name: _true(pods_of(name), 0))
        await eventually(lambda name=name: _gone(client, REPLICASETS, name))


async def _true(count, expected: int) -> bool:
    return await count == expected


async def test_custom_resource_defined_later_owns_dependents(client: Client, gc) -> None:
    from sampan.client.api import CUSTOMRESOURCEDEFINITIONS

    from .test_namespace import WIDGET_CRD, WIDGETS

    await client.create(CUSTOMRESOURCEDEFINITIONS, WIDGET_CRD)

    async def widget_made() -> dict[str, Any] | None:
        try:
            return await client.create(WIDGETS, {"metadata": {"name": "w"}}, namespace=NS)
        except NotFoundError:
            return None  # not served yet

    widget = await eventually(widget_made)
    ref = {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "name": "w",
        "uid": widget["metadata"]["uid"],
    }
    await client.create(
        CONFIGMAPS, {"metadata": {"name": "of-widget", "ownerReferences": [ref]}}, namespace=NS
    )
    await client.delete(WIDGETS, "w", namespace=NS)
    await eventually(lambda: _gone(client, CONFIGMAPS, "of-widget"))
