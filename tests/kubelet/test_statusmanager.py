"""The kubelet's status manager against a real in-process API server: writes only changed
status fields, never to a re-created pod, to a static pod's mirror, remembers its own writes
ahead of the informer, and deletes the pod object at the end."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import pytest

from sampan.client import Client, NotFoundError
from sampan.client.api import PODS
from sampan.kubelet.podutil import MIRROR_ANNOTATION
from sampan.kubelet.statusmanager import StatusManager
from tests.support.apiserver import ApiServerHarness, api_server, client  # noqa: F401

NS = "default"


def _pod(name: str, **metadata: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, **metadata},
        "spec": {
            "nodeName": "node-1",
            "automountServiceAccountToken": False,
            "containers": [{"name": "app", "image": "registry.example/app:1"}],
        },
    }


def _status(phase: str, ready: str, at: str) -> dict[str, Any]:
    return {
        "phase": phase,
        "conditions": [{"type": "Ready", "status": ready, "lastTransitionTime": at}],
    }


def _manager(api: Client, static: Mapping[str, dict[str, Any]] | None = None) -> StatusManager:
    static = static or {}
    return StatusManager(
        api, is_static=lambda uid: uid in static, mirror_of=lambda pod: static.get("mirror")
    )


async def test_writes_changed_fields_only(client: Client) -> None:  # noqa: F811
    pod = await client.create(PODS, _pod("web"), namespace=NS)
    manager = _manager(client)

    assert await manager.set_pod_status(pod, _status("Running", "True", "2026-01-01T00:00:00Z"))
    written = await client.get(PODS, "web", namespace=NS)
    assert written["status"]["phase"] == "Running"
    assert written["status"]["conditions"][0]["status"] == "True"

    # The same status with other transition times is no change: nothing is sent.
    again = _status("Running", "True", "2026-01-01T00:09:00Z")
    assert not await manager.set_pod_status(written, again)
    after = await client.get(PODS, "web", namespace=NS)
    assert after["metadata"]["resourceVersion"] == written["metadata"]["resourceVersion"]


async def test_latest_shows_its_own_write_until_the_informer_catches_up(
    client: Client,  # noqa: F811
) -> None:
    stale = await client.create(PODS, _pod("web"), namespace=NS)
    manager = _manager(client)
    await manager.set_pod_status(stale, _status("Running", "False", "2026-01-01T00:00:00Z"))

    seen = manager.latest(copy.deepcopy(stale))  # the informer has not delivered the write
    assert seen["status"]["phase"] == "Running"
    fresh = await client.get(PODS, "web", namespace=NS)
    fresh["status"]["phase"] = "Succeeded"  # a newer object wins over the cached write
    assert manager.latest(fresh)["status"]["phase"] == "Succeeded"

    manager.forget(stale["metadata"]["uid"])
    assert manager.latest(copy.deepcopy(stale)) == stale


async def test_never_writes_a_pod_re_created_under_the_same_name(
    client: Client,  # noqa: F811
) -> None:
    old = await client.create(PODS, _pod("web"), namespace=NS)
    await client.delete(PODS, "web", namespace=NS, grace_period_s=0)
    new = await client.create(PODS, _pod("web"), namespace=NS)
    manager = _manager(client)

    try:
        await manager.set_pod_status(old, _status("Failed", "False", "2026-01-01T00:00:00Z"))
    finally:
        current = await client.get(PODS, "web", namespace=NS)
        assert current["metadata"]["uid"] == new["metadata"]["uid"]
        assert current["status"].get("phase") != "Failed"
    current = await client.get(PODS, "web", namespace=NS)
    assert current["metadata"]["uid"] == new["metadata"]["uid"]
    assert current["status"].get("phase") != "Failed"


async def test_a_static_pod_status_goes_to_its_mirror(client: Client) -> None:  # noqa: F811
    static = _pod("kube-thing-node-1", uid="static-uid", namespace=NS)
    mirror_body = _pod("kube-thing-node-1", annotations={MIRROR_ANNOTATION: "hash"})
    known: dict[str, dict[str, Any]] = {"static-uid": static}
    manager = _manager(client, known)

    # No mirror yet: nothing to write to.
    assert await manager.set_pod_status(static, _status("Running", "True", "2026-01-01T00:00:00Z"))
    mirror = await client.create(PODS, mirror_body, namespace=NS)
    known["mirror"] = mirror
    assert await manager.set_pod_status(static, _status("Running", "True", "2026-01-01T00:00:00Z"))
    written = await client.get(PODS, "kube-thing-node-1", namespace=NS)
    assert written["status"]["phase"] == "Running"

    # Static and mirror pods are never deleted by the status manager.
    await manager.delete_pod_object(static)
    await manager.delete_pod_object(mirror)
    assert await client.get(PODS, "kube-thing-node-1", namespace=NS)


async def test_delete_pod_object_deletes_with_grace_zero(client: Client) -> None:  # noqa: F811
    pod = await client.create(PODS, _pod("web"), namespace=NS)
    manager = _manager(client)
    await manager.set_pod_status(pod, _status("Running", "True", "2026-01-01T00:00:00Z"))
    await manager.delete_pod_object(pod)
    with pytest.raises(NotFoundError):
        await client.get(PODS, "web", namespace=NS)
    assert manager.latest(pod) == pod  # forgotten
    await manager.delete_pod_object(pod)  # gone already: no error
