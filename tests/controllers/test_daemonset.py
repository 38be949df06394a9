"""DaemonSet controller: node eligibility (pure) and placement/rollout against a real API server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from sampan.client import Client, ConflictError
from sampan.client.api import DAEMONSETS, NODES, PODS
from sampan.controllers.daemonset import (
    DaemonSetController,
    node_should_run,
    should_continue,
    tolerates,
)
from sampan.controllers.history import CONTROLLER_REVISION_HASH_LABEL
from tests.support.fakekubelet import FakeKubelet

from .conftest import eventually

NS = "default"


def node(name: str, labels: dict | None = None, taints: list | None = None) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels or {}}, "spec": {"taints": taints or []}}


def test_tolerations() -> None:
    taint = {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}
    assert tolerates([{"key": "dedicated", "operator": "Exists"}], taint)
    assert tolerates([{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}], taint)
    assert not tolerates([{"key": "dedicated", "value": "cpu"}], taint)
    assert not tolerates([{"key": "dedicated", "operator": "Exists", "effect": "NoExecute"}], taint)
    assert tolerates([{"operator": "Exists"}], taint)
    assert not tolerates([], taint)


def test_node_eligibility() -> None:
    template = {"spec": {"nodeSelector": {"role": "worker"}}}
    assert node_should_run(template, node("a", {"role": "worker"}))
    assert not node_should_run(template, node("b", {"role": "db"}))
    tainted = node("c", {"role": "worker"}, [{"key": "k", "effect": "NoSchedule"}])
    assert not node_should_run(template, tainted)
    assert should_continue(template, tainted)  # NoSchedule does not evict
    evicting = node("d", {"role": "worker"}, [{"key": "k", "effect": "NoExecute"}])
    assert not should_continue(template, evicting)
    # daemon pods tolerate not-ready and unschedulable nodes
    unready = node(
        "e",
        {"role": "worker"},
        [
            {"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"},
            {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"},
        ],
    )
    assert node_should_run(template, unready)
    affinity = {
        "spec": {
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {
                                "matchExpressions": [
                                    {"key": "zone", "operator": "In", "values": ["x"]}
                                ]
                            },
                            {
                                "matchFields": [
                                    {"key": "metadata.name", "operator": "In", "values": ["z"]}
                                ]
                            },
                        ]
                    }
                }
            }
        }
    }
    assert node_should_run(affinity, node("q", {"zone": "x"}))
    assert node_should_run(affinity, node("z"))
    assert not node_should_run(affinity, node("q", {"zone": "y"}))


def _affinity_node(pod: dict[str, Any]) -> str:
    required = pod["spec"]["affinity"]["nodeAffinity"]
    terms = required["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    return terms[0]["matchFields"][0]["values"][0]


@pytest.fixture
async def kubelet(client: Client) -> AsyncIterator[None]:
    """Binds daemon pods to the node of their node affinity and marks them Ready."""
    async with FakeKubelet(client, NS, node_for=_affinity_node):
        yield


def ds_body(name: str, image: str = "busybox:1", **pod_spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": image}], **pod_spec},
            },
        },
    }


async def placement(client: Client, app: str) -> dict[str, list[str]]:
    items = (await client.list(PODS, namespace=NS, label_selector=f"app={app}"))["items"]
    out: dict[str, list[str]] = {}
    for pod in items:
        if pod["metadata"].get("deletionTimestamp"):
            continue
        terms = pod["spec"]["affinity"]["nodeAffinity"][
            "requiredDuringSchedulingIgnoredDuringExecution"
        ]["nodeSelectorTerms"]
        out.setdefault(terms[0]["matchFields"][0]["values"][0], []).append(
            pod["spec"]["containers"][0]["image"]
        )
    return out


async def test_daemonset_places_follows_nodes_and_rolls(client, run_controller, kubelet) -> None:
    await client.create(NODES, node("n1", {"role": "worker"}))
    await client.create(
        NODES,
        node(
            "n2", {"role": "worker"}, [{"key": "dedicated", "value": "x", "effect": "NoSchedule"}]
        ),
    )
    await client.create(NODES, node("n3", {"role": "db"}))
    await run_controller(DaemonSetController)
    await client.create(DAEMONSETS, ds_body("agent", nodeSelector={"role": "worker"}), namespace=NS)

    async def placed(expected: dict[str, list[str]]):
        got = await placement(client, "agent")
        return got if got == expected else None

    await eventually(lambda: placed({"n1": ["busybox:1"]}))

    async def status(**want: int):
        ds = await client.get(DAEMONSETS, "agent", namespace=NS)
        st = ds.get("status") or {}
        return st if all(st.get(k, 0) == v for k, v in want.items()) else None

    await eventually(lambda: status(desiredNumberScheduled=1, numberReady=1, numberAvailable=1))

    # a node gains the label: it gets a pod; another loses it: its pod goes
    await client.patch(NODES, "n3", {"metadata": {"labels": {"role": "worker"}}})
    await eventually(lambda: placed({"n1": ["busybox:1"], "n3": ["busybox:1"]}))
    await client.patch(NODES, "n1", {"metadata": {"labels": {"role": "db"}}})
    await eventually(lambda: placed({"n3": ["busybox:1"]}))
    await client.patch(NODES, "n1", {"metadata": {"labels": {"role": "worker"}}})
    await eventually(lambda: placed({"n1": ["busybox:1"], "n3": ["busybox:1"]}))
    await eventually(
        lambda: status(desiredNumberScheduled=2, numberReady=2, updatedNumberScheduled=2)
    )

    # rolling update: every pod is replaced at the new revision
    for _ in range(20):
        try:
            await client.patch(
                DAEMONSETS,
                "agent",
                {
                    "spec": {
                        "template": {"spec": {"containers": [{"name": "c", "image": "busybox:2"}]}}
                    }
                },
                namespace=NS,
            )
            break
        except ConflictError:
            await asyncio.sleep(0.05)
    await eventually(lambda: placed({"n1": ["busybox:2"], "n3": ["busybox:2"]}), timeout_s=30)
    st = await eventually(
        lambda: status(desiredNumberScheduled=2, numberReady=2, updatedNumberScheduled=2)
    )
    assert st["observedGeneration"] == 2
    items = (await client.list(PODS, namespace=NS, label_selector="app=agent"))["items"]
    hashes = {p["metadata"]["labels"][CONTROLLER_REVISION_HASH_LABEL] for p in items}
    assert len(hashes) == 1


async def test_rolling_update_with_surge_keeps_every_node_served(
    client, run_controller, kubelet
) -> None:
    for name in ("s1", "s2"):
        await client.create(NODES, node(name))
    await run_controller(DaemonSetController)
    body = ds_body("surge")
    body["spec"]["updateStrategy"] = {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    await client.create(DAEMONSETS, body, namespace=NS)

    async def placed(expected: dict[str, list[str]]):
        got = await placement(client, "surge")
        return got if got == expected else None

    await eventually(lambda: placed({"s1": ["busybox:1"], "s2": ["busybox:1"]}))

    async def ready_everywhere():
        ds = await client.get(DAEMONSETS, "surge", namespace=NS)
        return (ds.get("status") or {}).get("numberAvailable") == 2

    await eventually(ready_everywhere)
    served: list[int] = []
    doubled: list[int] = []

    async def sample() -> None:
        while True:
            items = (await client.list(PODS, namespace=NS, label_selector="app=surge"))["items"]
            ready_nodes = {
                p["spec"].get("nodeName")
                for p in items
                if (p.get("status") or {}).get("phase") == "Running"
                and not p["metadata"].get("deletionTimestamp")
            }
            served.append(len(ready_nodes))
            got = await placement(client, "surge")
            doubled.append(sum(1 for v in got.values() if len(v) > 1))
            await asyncio.sleep(0.01)

    task = asyncio.get_running_loop().create_task(sample(), name="test-sample")
    try:
        await client.patch(
            DAEMONSETS,
            "surge",
            {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox:2"}]}}}},
            namespace=NS,
        )
        await eventually(lambda: placed({"s1": ["busybox:2"], "s2": ["busybox:2"]}), timeout_s=30)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert min(served) == 2  # maxUnavailable 0: every node kept a running daemon pod
    assert max(doubled) <= 1  # never more than maxSurge nodes ran two pods at once
    final = await placement(client, "surge")
    assert all(len(v) == 1 for v in final.values())
