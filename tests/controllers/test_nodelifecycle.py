"""Node lifecycle: tolerations (unit), and health/taints/eviction against a real API server
with a FakeClock (monitor passes run explicitly)."""

from __future__ import annotations

from typing import Any

from sampan.client import Client, ConflictError
from sampan.client.api import LEASES, NODES, PODS
from sampan.client.workqueue import FakeClock
from sampan.controllers.nodelifecycle import (
    NODE_LEASE_NAMESPACE,
    TAINT_UNREACHABLE,
    NodeLifecycleController,
    _TokenBucket,
    eviction_delay_s,
    tolerates,
)

from .conftest import eventually

NS = "default"
UNREACHABLE = {"key": TAINT_UNREACHABLE, "effect": "NoExecute"}


def test_tolerations_match_as_upstream() -> None:
    assert tolerates({"operator": "Exists"}, UNREACHABLE)
    assert tolerates({"key": TAINT_UNREACHABLE, "operator": "Exists"}, UNREACHABLE)
    assert tolerates(
        {"key": TAINT_UNREACHABLE, "operator": "Exists", "effect": "NoExecute"}, UNREACHABLE
    )
    assert not tolerates({"key": TAINT_UNREACHABLE, "effect": "NoSchedule"}, UNREACHABLE)
    assert not tolerates({"key": "other", "operator": "Exists"}, UNREACHABLE)
    assert tolerates({"key": "k", "value": "v"}, {"key": "k", "value": "v", "effect": "NoExecute"})
    assert not tolerates({"key": "k", "value": "w"}, {"key": "k", "value": "v", "effect": "X"})


def test_eviction_delay() -> None:
    def pod(*tolerations: dict[str, Any]) -> dict[str, Any]:
        return {"spec": {"tolerations": list(tolerations)}}

    assert eviction_delay_s(pod(), []) is None
    assert eviction_delay_s(pod(), [UNREACHABLE]) == 0.0
    forever = {"key": TAINT_UNREACHABLE, "operator": "Exists"}
    assert eviction_delay_s(pod(forever), [UNREACHABLE]) is None
    timed = {**forever, "tolerationSeconds": 300}
    shorter = {"operator": "Exists", "tolerationSeconds": 20}
    assert eviction_delay_s(pod(timed), [UNREACHABLE]) == 300.0
    assert eviction_delay_s(pod(timed, shorter), [UNREACHABLE]) == 20.0
    negative = {**forever, "tolerationSeconds": -5}
    assert eviction_delay_s(pod(negative), [UNREACHABLE]) == 0.0


def test_token_bucket_rate() -> None:
    bucket = _TokenBucket(0.1, now_s=0.0)
    assert bucket.take(0.0)
    assert not bucket.take(5.0)
    assert bucket.take(10.0)
    stopped = _TokenBucket(0.0, now_s=0.0)
    assert not stopped.take(100.0)


# -- integration -------------------------------------------------------------------------------


def _ready(heartbeat: str) -> list[dict[str, Any]]:
    return [
        {
            "type": "Ready",
            "status": "True",
            "reason": "KubeletReady",
            "lastHeartbeatTime": heartbeat,
            "lastTransitionTime": "2026-01-01T00:00:00Z",
        }
    ]


async def _make_node(client: Client, name: str) -> None:
    node = await client.create(NODES, {"metadata": {"name": name}})
    node["status"] = {"conditions": _ready("2026-01-01T00:00:00Z")}
    await client.update_status(NODES, node)
    await client.create(
        LEASES,
        {
            "metadata": {"name": name},
            "spec": {"holderIdentity": name, "renewTime": "2026-01-01T00:00:00.000000Z"},
        },
        namespace=NODE_LEASE_NAMESPACE,
    )


async def _renew(client: Client, name: str, stamp: str) -> None:
    lease = await client.get(LEASES, name, namespace=NODE_LEASE_NAMESPACE)
    lease["spec"]["renewTime"] = stamp
    await client.update(LEASES, lease, namespace=NODE_LEASE_NAMESPACE)


async def _make_pod(client: Client, name: str, node: str, tolerations: list[dict]) -> None:
    pod = await client.create(
        PODS,
        {
            "metadata": {"name": name},
            "spec": {
                "nodeName": node,
                "tolerations": tolerations,
                "containers": [{"name": "c", "image": "busybox"}],
            },
        },
        namespace=NS,
    )
    pod["status"] = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
    await client.update_status(PODS, pod, namespace=NS)


def _cond(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in obj["status"].get("conditions") or [] if c["type"] == kind), {})


async def test_silent_node_is_marked_tainted_and_drained(client: Client, run_controller) -> None:
    await _make_node(client, "n1")
    await _make_node(client, "n2")
    exists = {"key": TAINT_UNREACHABLE, "operator": "Exists", "effect": "NoExecute"}
    await _make_pod(client, "intolerant", "n2", [{**exists, "tolerationSeconds": 0}])
    # No tolerations of its own: admission adds the default 300 s ones.
    await _make_pod(client, "tolerant", "n2", [])
    await _make_pod(client, "forever", "n2", [exists])
    await _make_pod(client, "elsewhere", "n1", [])
    clock = FakeClock()
    ctrl = await run_controller(NodeLifecycleController, clock=clock)

    async def seen(check) -> bool:
        return ctrl.healthy() and check()

    await eventually(
        lambda: seen(lambda: len(ctrl.pods.cache) == 4 and len(ctrl.leases.cache) == 2)
    )
    await ctrl.monitor_once()  # t=0: first observation
    clock.advance(30)
    await _renew(client, "n1", "2026-01-01T00:00:30.000000Z")
    await eventually(
        lambda: seen(
            lambda: ctrl.leases.cache.get(f"{NODE_LEASE_NAMESPACE}/n1")["spec"][
                "renewTime"
            ].startswith("2026-01-01T00:00:30")
        )
    )
    await ctrl.monitor_once()
    clock.advance(11)  # t=41: n2 silent for 41 s, n1 for 11 s
    await ctrl.monitor_once()

    n2 = await client.get(NODES, "n2")
    assert _cond(n2, "Ready")["status"] == "Unknown"
    assert _cond(n2, "Ready")["reason"] == "NodeStatusUnknown"
    assert _cond(n2, "MemoryPressure")["reason"] == "NodeStatusNeverUpdated"
    assert _cond(await client.get(NODES, "n1"), "Ready")["status"] == "True"
    pod = await client.get(PODS, "forever", namespace=NS)
    assert _cond(pod, "Ready")["status"] == "False"
    assert _cond(await client.get(PODS, "elsewhere", namespace=NS), "Ready")["status"] == "True"

    async def tainted() -> bool:
        await eventually(
            lambda: seen(
                lambda: _cond(ctrl.nodes.cache.get("n2"), "Ready").get("status") == "Unknown"
            )
        )
        await ctrl.monitor_once()
        node = await client.get(NODES, "n2")
        keys = {(t["key"], t["effect"]) for t in node["spec"].get("taints") or []}
        return (TAINT_UNREACHABLE, "NoExecute") in keys and (
            TAINT_UNREACHABLE,
            "NoSchedule",
        ) in keys

    await eventually(tainted)

    async def terminating(name: str) -> bool:
        pod = await client.get(PODS, name, namespace=NS)
        return bool(pod["metadata"].get("deletionTimestamp"))

    await eventually(lambda: terminating("intolerant"))
    intolerant = await client.get(PODS, "intolerant", namespace=NS)
    assert _cond(intolerant, "DisruptionTarget")["reason"] == "DeletionByTaintManager"
    assert not await terminating("tolerant")

    clock.advance(300)
    await eventually(lambda: terminating("tolerant"))
    assert not await terminating("forever")
    assert not await terminating("elsewhere")

    # The node comes back: its taints go at once.
    async def back() -> bool:
        n2 = await client.get(NODES, "n2")
        n2["status"]["conditions"] = _ready("2026-01-01T00:10:00Z")
        try:
            await client.update_status(NODES, n2)
        except ConflictError:
            return False  # the controller wrote meanwhile: read again
        return True

    await eventually(back)

    async def untainted() -> bool:
        await eventually(
            lambda: seen(lambda: _cond(ctrl.nodes.cache.get("n2"), "Ready").get("status") == "True")
        )
        await ctrl.monitor_once()
        node = await client.get(NODES, "n2")
        return not node["spec"].get("taints")

    await eventually(untainted)


async def test_all_zones_down_means_no_eviction(client: Client, run_controller) -> None:
    await _make_node(client, "only")
    await _make_pod(client, "p", "only", [])
    clock = FakeClock()
    ctrl = await run_controller(NodeLifecycleController, clock=clock)
    await eventually(lambda: _true(ctrl.healthy() and len(ctrl.pods.cache) == 1))
    await ctrl.monitor_once()
    clock.advance(41)
    await ctrl.monitor_once()

    async def unknown_seen() -> bool:
        return _cond(ctrl.nodes.cache.get("only"), "Ready").get("status") == "Unknown"

    await eventually(unknown_seen)
    await ctrl.monitor_once()
    node = await client.get(NODES, "only")
    assert _cond(node, "Ready")["status"] == "Unknown"
    taints = {(t["key"], t["effect"]) for t in node["spec"].get("taints") or []}
    assert taints == {(TAINT_UNREACHABLE, "NoSchedule")}
    pod = await client.get(PODS, "p", namespace=NS)
    assert not pod["metadata"].get("deletionTimestamp")


async def _true(value: bool) -> bool:
    return value
