"""ReplicaSet and ReplicationController controllers against a real in-process API server.

The test plays the kubelet: it marks pods Running and Ready through the status subresource.
"""

from __future__ import annotations

import time
from typing import Any

from sampan.client import Client
from sampan.client.api import EVENTS, PODS, REPLICASETS, REPLICATIONCONTROLLERS
from sampan.client.workqueue import FakeClock
from sampan.controllers.podcontrol import format_time, wall_now
from sampan.controllers.replicaset import ReplicaSetController, ReplicationControllerController
from tests.support.fakekubelet import mark_running

from .conftest import eventually

NS = "default"


def rs_body(name: str, replicas: int, labels: dict[str, str] | None = None) -> dict[str, Any]:
    labels = labels or {"app": name}
    return {
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]},
            },
        },
    }


async def owned_pods(client: Client, owner_uid: str) -> list[dict[str, Any]]:
    items = (await client.list(PODS, namespace=NS))["items"]
    return [
        p
        for p in items
        if any(r.get("uid") == owner_uid for r in p["metadata"].get("ownerReferences") or ())
        and not p["metadata"].get("deletionTimestamp")
    ]


async def test_replicaset_creates_scales_down_and_reports_status(client, run_controller) -> None:
    await run_controller(ReplicaSetController)
    rs = await client.create(REPLICASETS, rs_body("web", 3), namespace=NS)
    uid = rs["metadata"]["uid"]

    async def three_pods():
        pods = await owned_pods(client, uid)
        return pods if len(pods) == 3 else None

    pods = await eventually(three_pods)
    for p in pods:
        assert p["metadata"]["labels"] == {"app": "web"}
        ref = p["metadata"]["ownerReferences"][0]
        assert ref["kind"] == "ReplicaSet" and ref["controller"] and ref["blockOwnerDeletion"]
        assert p["metadata"]["name"].startswith("web-")

    # two become ready; the third stays pending and unassigned -> it is deleted first
    keep = sorted(p["metadata"]["name"] for p in pods)[:2]
    for p in pods:
        if p["metadata"]["name"] in keep:
            await mark_running(client, p)

    async def status_ready():
        got = await client.get(REPLICASETS, "web", namespace=NS)
        st = got.get("status") or {}
        return st if st.get("readyReplicas") == 2 and st.get("availableReplicas") == 2 else None

    status = await eventually(status_ready)
    assert status["replicas"] == 3 and status["fullyLabeledReplicas"] == 3

    await client.patch(REPLICASETS, "web", {"spec": {"replicas": 2}}, namespace=NS)

    async def scaled_down():
        pods = await owned_pods(client, uid)
        return pods if len(pods) == 2 else None

    left = await eventually(scaled_down)
    assert sorted(p["metadata"]["name"] for p in left) == keep

    async def events():
        items = (await client.list(EVENTS, namespace=NS))["items"]
        reasons = {e["reason"] for e in items if e["involvedObject"].get("name") == "web"}
        return reasons if {"SuccessfulCreate", "SuccessfulDelete"} <= reasons else None

    await eventually(events)


async def test_replicaset_replaces_deleted_pod_adopts_and_releases(client, run_controller) -> None:
    await run_controller(ReplicaSetController)
    # an orphan that matches is adopted instead of creating a new pod
    await client.create(
        PODS,
        {
            "metadata": {"name": "orphan", "namespace": NS, "labels": {"app": "db"}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
        },
        namespace=NS,
    )
    rs = await client.create(REPLICASETS, rs_body("db", 2), namespace=NS)
    uid = rs["metadata"]["uid"]

    async def two():
        pods = await owned_pods(client, uid)
        return pods if len(pods) == 2 else None

    pods = await eventually(two)
    assert "orphan" in {p["metadata"]["name"] for p in pods}

    # a pod whose labels stop matching is released and replaced
    await client.patch(PODS, "orphan", {"metadata": {"labels": {"app": "other"}}}, namespace=NS)

    async def released():
        pod = await client.get(PODS, "orphan", namespace=NS)
        pods = await owned_pods(client, uid)
        if pod["metadata"].get("ownerReferences") or len(pods) != 2:
            return None
        return pods

    pods = await eventually(released)
    assert "orphan" not in {p["metadata"]["name"] for p in pods}

    # a deleted pod is replaced
    victim = pods[0]["metadata"]["name"]
    await client.delete(PODS, victim, namespace=NS, grace_period_s=0)

    async def replaced():
        names = {p["metadata"]["name"] for p in await owned_pods(client, uid)}
        return names if len(names) == 2 and victim not in names else None

    await eventually(replaced)


async def test_replicationcontroller_uses_map_selector(client, run_controller) -> None:
    await run_controller(ReplicationControllerController)
    rc = await client.create(
        REPLICATIONCONTROLLERS,
        {
            "metadata": {"name": "legacy", "namespace": NS},
            "spec": {
                "replicas": 2,
                "selector": {"app": "legacy"},
                "template": {
                    "metadata": {"labels": {"app": "legacy"}},
                    "spec": {"containers": [{"name": "c", "image": "busybox"}]},
                },
            },
        },
        namespace=NS,
    )

    async def two():
        pods = await owned_pods(client, rc["metadata"]["uid"])
        return pods if len(pods) == 2 else None

    pods = await eventually(two)
    assert pods[0]["metadata"]["ownerReferences"][0]["kind"] == "ReplicationController"

    async def status():
        got = await client.get(REPLICATIONCONTROLLERS, "legacy", namespace=NS)
        return (got.get("status") or {}).get("replicas") == 2

    await eventually(status)


async def test_min_ready_seconds_with_fake_clock(client, run_controller) -> None:
    clock = FakeClock(time.time())
    await run_controller(ReplicaSetController, clock=clock)
    body = rs_body("slowready", 2)
    body["spec"]["minReadySeconds"] = 30
    rs = await client.create(REPLICASETS, body, namespace=NS)

    async def two():
        pods = await owned_pods(client, rs["metadata"]["uid"])
        return pods if len(pods) == 2 else None

    stamp = format_time(wall_now(clock))
    for pod in await eventually(two):
        await client.patch(
            PODS,
            pod["metadata"]["name"],
            {
                "status": {
                    "phase": "Running",
                    "conditions": [
                        {"type": "Ready", "status": "True", "lastTransitionTime": stamp}
                    ],
                }
            },
            namespace=NS,
            subresource="status",
        )

    async def status(ready: int, available: int):
        got = await client.get(REPLICASETS, "slowready", namespace=NS)
        st = got.get("status") or {}
        return st.get("readyReplicas", 0) == ready and st.get("availableReplicas", 0) == available

    await eventually(lambda: status(2, 0))
    clock.advance(31)
    await eventually(lambda: status(2, 2))
