"""Namespace controller against a real API server: content deleted, conditions, finalize."""

from __future__ import annotations

from typing import Any

import pytest

from sampan.client import Client, NotFoundError
from sampan.client.api import (
    CONFIGMAPS,
    CUSTOMRESOURCEDEFINITIONS,
    NAMESPACES,
    PODS,
    SECRETS,
    SERVICEACCOUNTS,
    PatchType,
    Resource,
)
from sampan.controllers.namespace import (
    COND_CONTENT_REMAINING,
    COND_FINALIZERS_REMAINING,
    NamespaceController,
)
from sampan.controllers.serviceaccount import ServiceAccountsController

from .conftest import eventually

POD = {
    "metadata": {"name": "p"},
    "spec": {"containers": [{"name": "c", "image": "busybox"}]},
}


async def _gone(client: Client, name: str) -> bool:
    try:
        await client.get(NAMESPACES, name)
    except NotFoundError:
        return True
    return False


def _condition(ns: dict[str, Any], kind: str) -> dict[str, Any]:
    for cond in (ns.get("status") or {}).get("conditions") or []:
        if cond["type"] == kind:
            return cond
    return {}


async def test_deleting_a_namespace_deletes_its_content(client: Client, run_controller) -> None:
    await run_controller(NamespaceController)
    await run_controller(ServiceAccountsController)  # pods need the default service account
    await client.create(NAMESPACES, {"metadata": {"name": "doomed"}})

    async def has_default_account() -> bool:
        try:
            await client.get(SERVICEACCOUNTS, "default", namespace="doomed")
        except NotFoundError:
            return False
        return True

    await eventually(has_default_account)
    await client.create(CONFIGMAPS, {"metadata": {"name": "cm"}, "data": {}}, namespace="doomed")
    await client.create(SECRETS, {"metadata": {"name": "s"}}, namespace="doomed")
    await client.create(PODS, POD, namespace="doomed")
    await client.create(NAMESPACES, {"metadata": {"name": "kept"}})
    await client.create(CONFIGMAPS, {"metadata": {"name": "cm"}, "data": {}}, namespace="kept")

    await client.delete(NAMESPACES, "doomed")
    await eventually(lambda: _gone(client, "doomed"))
    assert (await client.list(CONFIGMAPS, namespace="doomed"))["items"] == []
    assert (await client.list(PODS, namespace="doomed"))["items"] == []
    # Other namespaces are untouched.
    await client.get(CONFIGMAPS, "cm", namespace="kept")
    assert not (await client.get(NAMESPACES, "kept"))["metadata"].get("deletionTimestamp")


async def test_conditions_explain_what_is_left(client: Client, run_controller) -> None:
    await run_controller(NamespaceController)
    await client.create(NAMESPACES, {"metadata": {"name": "stuck"}})
    await client.create(
        CONFIGMAPS,
        {"metadata": {"name": "held", "finalizers": ["example.com/hold"]}},
        namespace="stuck",
    )
    await client.delete(NAMESPACES, "stuck")

    async def explained() -> dict[str, Any] | None:
        ns = await client.get(NAMESPACES, "stuck")
        remaining = _condition(ns, COND_CONTENT_REMAINING)
        return ns if remaining.get("status") == "True" else None

    ns = await eventually(explained)
    assert ns["status"]["phase"] == "Terminating"
    remaining = _condition(ns, COND_CONTENT_REMAINING)
    assert remaining["reason"] == "SomeResourcesRemain"
    assert "configmaps. has 1 resource instances" in remaining["message"]
    finalizers = _condition(ns, COND_FINALIZERS_REMAINING)
    assert finalizers["status"] == "True"
    assert "example.com/hold in 1 resource instances" in finalizers["message"]
    assert ns["spec"]["finalizers"] == ["kubernetes"]

    await client.patch(
        CONFIGMAPS,
        "held",
        {"metadata": {"finalizers": None}},
        namespace="stuck",
        patch_type=PatchType.MERGE,
    )
    await eventually(lambda: _gone(client, "stuck"))


async def test_a_live_namespace_is_left_alone(client: Client, run_controller) -> None:
    controller = await run_controller(NamespaceController)
    await client.create(NAMESPACES, {"metadata": {"name": "alive"}})
    await client.create(CONFIGMAPS, {"metadata": {"name": "cm"}}, namespace="alive")
    await eventually(lambda: _synced(controller))
    await controller.reconcile("alive")
    await client.get(CONFIGMAPS, "cm", namespace="alive")
    with pytest.raises(NotFoundError):
        await client.get(NAMESPACES, "absent")
    await controller.reconcile("absent")


async def _synced(controller: NamespaceController) -> bool:
    return controller.healthy()


WIDGETS = Resource("example.com", "v1", "widgets", "Widget", True)
WIDGET_CRD = {
    "metadata": {"name": "widgets.example.com"},
    "spec": {
        "group": "example.com",
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "x-kubernetes-preserve-unknown-fields": True,
                    }
                },
            }
        ],
    },
}


async def test_custom_resources_are_deleted_too(client: Client, run_controller) -> None:
    await client.create(CUSTOMRESOURCEDEFINITIONS, WIDGET_CRD)
    await client.create(NAMESPACES, {"metadata": {"name": "crs"}})

    async def widget_made() -> bool:
        try:
            await client.create(WIDGETS, {"metadata": {"name": "w"}}, namespace="crs")
        except NotFoundError:
            return False  # not served yet
        return True

    await eventually(widget_made)
    await run_controller(NamespaceController)
    await client.delete(NAMESPACES, "crs")
    await eventually(lambda: _gone(client, "crs"))
    assert (await client.list(WIDGETS, namespace="crs"))["items"] == []
