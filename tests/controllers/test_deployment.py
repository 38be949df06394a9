"""Deployment controller: rollout arithmetic (pure) and rollouts against a real API server.

Integration tests run the ReplicaSet and Deployment controllers; a small fake kubelet task
binds every new pod and marks it Running and Ready.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from sampan.client import Client, ConflictError
from sampan.client.api import DEPLOYMENTS, EVENTS, PODS, REPLICASETS
from sampan.client.workqueue import FakeClock
from sampan.controllers.deployment import (
    ANNOTATION_REVISION,
    ANNOTATION_REVISION_HISTORY,
    POD_TEMPLATE_HASH_LABEL,
    DeploymentController,
    max_unavailable,
    new_rs_replicas,
    resolve_fenceposts,
)
from sampan.controllers.replicaset import ReplicaSetController
from tests.support.fakekubelet import FakeKubelet

from .conftest import eventually

NS = "default"


def dep(replicas: int, surge: Any, unavailable: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "d"},
        "spec": {
            "replicas": replicas,
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable},
            },
        },
    }


@pytest.mark.parametrize(
    ("replicas", "surge", "unavailable", "expected"),
    [
        (10, "25%", "25%", (3, 2)),
        (4, "25%", "25%", (1, 1)),
        (1, "25%", "25%", (1, 0)),
        (3, 0, 0, (0, 1)),
        (3, "0%", "0%", (0, 1)),
        (5, 2, "50%", (2, 2)),
    ],
)
def test_fenceposts_round_surge_up_and_unavailable_down(
    replicas, surge, unavailable, expected
) -> None:
    assert resolve_fenceposts(dep(replicas, surge, unavailable)) == expected


def test_max_unavailable_never_exceeds_replicas_and_recreate_has_none() -> None:
    assert max_unavailable(dep(2, 0, 5)) == 2
    recreate = {"spec": {"replicas": 3, "strategy": {"type": "Recreate"}}}
    assert max_unavailable(recreate) == 0
    assert new_rs_replicas(recreate, [], {"spec": {"replicas": 0}}) == 3


def test_new_rs_replicas_respects_surge() -> None:
    d = dep(10, "25%", "25%")  # surge 3 -> at most 13 pods
    old = {"spec": {"replicas": 10}}
    new = {"spec": {"replicas": 0}}
    assert new_rs_replicas(d, [old, new], new) == 3
    new = {"spec": {"replicas": 3}}
    assert new_rs_replicas(d, [old, new], new) == 3  # at the ceiling
    old = {"spec": {"replicas": 5}}
    assert new_rs_replicas(d, [old, new], new) == 8
    old = {"spec": {"replicas": 0}}
    new = {"spec": {"replicas": 8}}
    assert new_rs_replicas(d, [old, new], new) == 10  # never above replicas


# ---------------------------------------------------------------------------------------------
# integration


@pytest.fixture
async def kubelet(client: Client) -> AsyncIterator[set[str]]:
    """Marks every pod Ready unless its name is in the returned set or it is labelled
    ``hold: "yes"``, and finishes the graceful deletion of terminating pods."""
    async with FakeKubelet(client, NS) as fake:
        yield fake.held


def deployment_body(name: str, replicas: int, image: str = "busybox:1", **spec: Any) -> dict:
    return {
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": image}]},
            },
            **spec,
        },
    }


async def patch_deployment(client: Client, name: str, body: dict[str, Any]) -> None:
    """A user's merge patch, retried on 409 (the API server's patch may give up under
    contention with the controllers' status writes)."""
    for _ in range(20):
        try:
            await client.patch(DEPLOYMENTS, name, body, namespace=NS)
            return
        except ConflictError:
            await asyncio.sleep(0.05)
    await client.patch(DEPLOYMENTS, name, body, namespace=NS)


async def rs_of(client: Client, uid: str) -> list[dict[str, Any]]:
    items = (await client.list(REPLICASETS, namespace=NS))["items"]
    return sorted(
        (
            rs
            for rs in items
            if any(r["uid"] == uid for r in rs["metadata"].get("ownerReferences") or ())
        ),
        key=lambda rs: int(rs["metadata"]["annotations"][ANNOTATION_REVISION]),
    )


def cond(obj: dict, kind: str) -> dict:
    for c in (obj.get("status") or {}).get("conditions") or ():
        if c["type"] == kind:
            return c
    return {}


async def wait_complete(client: Client, name: str, replicas: int) -> dict[str, Any]:
    async def complete():
        d = await client.get(DEPLOYMENTS, name, namespace=NS)
        st = d.get("status") or {}
        ok = (
            st.get("observedGeneration") == d["metadata"]["generation"]
            and st.get("replicas") == replicas
            and st.get("updatedReplicas", 0) == replicas
            and st.get("availableReplicas", 0) == replicas
            and cond(d, "Progressing").get("reason") == "NewReplicaSetAvailable"
        )
        return d if ok else None

    return await eventually(complete, timeout_s=30)


@pytest.fixture
async def controllers(run_controller) -> None:
    await run_controller(ReplicaSetController)
    await run_controller(DeploymentController)


async def test_rollout_update_and_undo(client, controllers, kubelet) -> None:
    created = await client.create(DEPLOYMENTS, deployment_body("web", 3), namespace=NS)
    uid = created["metadata"]["uid"]
    d = await wait_complete(client, "web", 3)
    assert cond(d, "Available")["status"] == "True"
    assert d["metadata"]["annotations"][ANNOTATION_REVISION] == "1"
    [rs1] = await rs_of(client, uid)
    hash1 = rs1["metadata"]["labels"][POD_TEMPLATE_HASH_LABEL]
    assert rs1["metadata"]["name"] == f"web-{hash1}"
    assert rs1["spec"]["selector"]["matchLabels"] == {"app": "web", POD_TEMPLATE_HASH_LABEL: hash1}
    assert rs1["metadata"]["annotations"]["deployment.kubernetes.io/desired-replicas"] == "3"
    assert rs1["metadata"]["annotations"]["deployment.kubernetes.io/max-replicas"] == "4"

    # new template -> revision 2, old scaled to 0
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox:2"}]}}}}
    await patch_deployment(client, "web", patch)
    d = await wait_complete(client, "web", 3)

    async def old_empty():
        sets = await rs_of(client, uid)
        return sets if len(sets) == 2 and sets[0]["spec"]["replicas"] == 0 else None

    rs1, rs2 = await eventually(old_empty)
    assert rs2["spec"]["replicas"] == 3
    assert rs2["metadata"]["annotations"][ANNOTATION_REVISION] == "2"
    assert d["metadata"]["annotations"][ANNOTATION_REVISION] == "2"

    # "kubectl rollout undo": the template goes back; the first set becomes revision 3
    back = {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox:1"}]}}}}
    await patch_deployment(client, "web", back)
    await wait_complete(client, "web", 3)

    async def undone():
        sets = await rs_of(client, uid)
        latest = sets[-1]
        if latest["metadata"]["uid"] != rs1["metadata"]["uid"] or latest["spec"]["replicas"] != 3:
            return None
        return latest

    latest = await eventually(undone)
    assert latest["metadata"]["annotations"][ANNOTATION_REVISION] == "3"
    assert latest["metadata"]["annotations"][ANNOTATION_REVISION_HISTORY] == "1"

    items = (await client.list(EVENTS, namespace=NS))["items"]
    messages = [e["message"] for e in items if e["reason"] == "ScalingReplicaSet"]
    assert f"Scaled up replica set web-{hash1} from 0 to 3" in messages


async def test_rolling_update_keeps_availability(client, controllers, kubelet) -> None:
    body = deployment_body(
        "avail",
        4,
        strategy={"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
    )
    await client.create(DEPLOYMENTS, body, namespace=NS)
    await wait_complete(client, "avail", 4)
    seen_low: list[int] = []

    async def watch_availability() -> None:
        while True:
            d = await client.get(DEPLOYMENTS, "avail", namespace=NS)
            pods = (await client.list(PODS, namespace=NS, label_selector="app=avail"))["items"]
            seen_low.append(len(pods))
            seen_low.append((d.get("status") or {}).get("availableReplicas", 0))
            await asyncio.sleep(0.02)

    task = asyncio.get_running_loop().create_task(watch_availability(), name="test-watch-avail")
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox:9"}]}}}}
    await patch_deployment(client, "avail", patch)
    await wait_complete(client, "avail", 4)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    # maxUnavailable 0: the deployment never counts fewer than 4 available pods
    assert min(seen_low[1::2]) >= 4


async def test_recreate_scales_old_to_zero_before_new(client, controllers, kubelet) -> None:
    body = deployment_body("rec", 2, strategy={"type": "Recreate"})
    created = await client.create(DEPLOYMENTS, body, namespace=NS)
    await wait_complete(client, "rec", 2)
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox:3"}]}}}}
    await patch_deployment(client, "rec", patch)
    await wait_complete(client, "rec", 2)
    rs1, rs2 = await rs_of(client, created["metadata"]["uid"])
    assert rs1["spec"]["replicas"] == 0 and rs2["spec"]["replicas"] == 2
    # the new set was created only once the old one was scaled down to zero
    assert rs2["metadata"]["creationTimestamp"] >= rs1["metadata"]["creationTimestamp"]


async def test_history_limit_pause_and_scaling(client, controllers, kubelet) -> None:
    body = deployment_body("hist", 2, revisionHistoryLimit=1)
    created = await client.create(DEPLOYMENTS, body, namespace=NS)
    uid = created["metadata"]["uid"]
    await wait_complete(client, "hist", 2)
    for image in ("busybox:a", "busybox:b"):
        patch = {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": image}]}}}}
        await patch_deployment(client, "hist", patch)
        await wait_complete(client, "hist", 2)

    async def trimmed():
        sets = await rs_of(client, uid)
        return sets if len(sets) == 2 else None

    sets = await eventually(trimmed)
    assert [s["metadata"]["annotations"][ANNOTATION_REVISION] for s in sets] == ["2", "3"]

    # paused: a template change makes no new set; scaling still works
    await patch_deployment(client, "hist", {"spec": {"paused": True}})

    async def paused():
        d = await client.get(DEPLOYMENTS, "hist", namespace=NS)
        return cond(d, "Progressing").get("reason") == "DeploymentPaused"

    await eventually(paused)
    patch = {
        "spec": {
            "replicas": 3,
            "template": {"spec": {"containers": [{"name": "c", "image": "busybox:c"}]}},
        }
    }
    await patch_deployment(client, "hist", patch)

    async def scaled():
        # no new set while paused (history cleanup may leave only the active one)
        sets = await rs_of(client, uid)
        return sets if sets[-1]["spec"]["replicas"] == 3 else None

    await eventually(scaled)
    await patch_deployment(client, "hist", {"spec": {"paused": False}})
    await wait_complete(client, "hist", 3)
    sets = await rs_of(client, uid)
    assert sets[-1]["metadata"]["annotations"][ANNOTATION_REVISION] == "4"


async def test_progress_deadline_exceeded_with_fake_clock(client, run_controller, kubelet) -> None:
    clock = FakeClock(time.time())
    await run_controller(ReplicaSetController)
    await run_controller(DeploymentController, clock=clock)
    body = deployment_body("stuck", 1)  # progressDeadlineSeconds defaults to 600
    body["spec"]["template"]["metadata"]["labels"]["hold"] = "yes"  # the kubelet skips these
    await client.create(DEPLOYMENTS, body, namespace=NS)

    async def progressing():
        d = await client.get(DEPLOYMENTS, "stuck", namespace=NS)
        c = cond(d, "Progressing")
        st = d.get("status") or {}
        settled = st.get("replicas") == 1 and st.get("updatedReplicas") == 1
        return d if c.get("status") == "True" and settled and clock.sleepers else None

    await eventually(progressing)
    await asyncio.sleep(0.2)  # let the last status write land before time moves
    clock.advance(599)
    await asyncio.sleep(0.2)
    d = await client.get(DEPLOYMENTS, "stuck", namespace=NS)
    assert cond(d, "Progressing")["status"] == "True"
    clock.advance(601)  # well past the deadline even if a late status write moved it

    async def timed_out():
        d = await client.get(DEPLOYMENTS, "stuck", namespace=NS)
        c = cond(d, "Progressing")
        return d if c.get("reason") == "ProgressDeadlineExceeded" else None

    d = await eventually(timed_out)
    assert cond(d, "Progressing")["status"] == "False"
    assert cond(d, "Available")["status"] == "False"


async def kubectl(api_server, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        "kubectl",
        f"--kubeconfig={api_server.kubeconfig}",
        "-n",
        NS,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
async def test_kubectl_rollout_status_history_and_undo(
    api_server, client, controllers, kubelet
) -> None:
    created = await client.create(DEPLOYMENTS, deployment_body("kc", 2), namespace=NS)
    code, out = await kubectl(api_server, "rollout", "status", "deployment/kc", "--timeout=30s")
    assert code == 0, out
    assert "successfully rolled out" in out
    code, out = await kubectl(api_server, "set", "image", "deployment/kc", "c=busybox:2")
    assert code == 0, out
    code, out = await kubectl(api_server, "rollout", "status", "deployment/kc", "--timeout=30s")
    assert code == 0, out
    code, out = await kubectl(api_server, "rollout", "history", "deployment/kc")
    assert code == 0, out
    assert "1 " in out and "2 " in out
    code, out = await kubectl(api_server, "rollout", "undo", "deployment/kc")
    assert code == 0, out
    code, out = await kubectl(api_server, "rollout", "status", "deployment/kc", "--timeout=30s")
    assert code == 0, out
    d = await wait_complete(client, "kc", 2)
    assert d["spec"]["template"]["spec"]["containers"][0]["image"] == "busybox:1"
    sets = await rs_of(client, created["metadata"]["uid"])
    assert sets[-1]["metadata"]["annotations"][ANNOTATION_REVISION] == "3"
    assert sets[-1]["spec"]["template"]["spec"]["containers"][0]["image"] == "busybox:1"
    code, out = await kubectl(api_server, "rollout", "pause", "deployment/kc")
    assert code == 0, out
    assert (await client.get(DEPLOYMENTS, "kc", namespace=NS))["spec"]["paused"] is True
    code, out = await kubectl(api_server, "rollout", "resume", "deployment/kc")
    assert code == 0, out
    assert not (await client.get(DEPLOYMENTS, "kc", namespace=NS))["spec"].get("paused")


async def test_replica_failure_is_reported(client, controllers) -> None:
    body = deployment_body("broken", 1)
    body["spec"]["template"]["spec"]["serviceAccountName"] = "no-such-account"
    await client.create(DEPLOYMENTS, body, namespace=NS)

    async def failure():
        d = await client.get(DEPLOYMENTS, "broken", namespace=NS)
        c = cond(d, "ReplicaFailure")
        return c if c.get("status") == "True" else None

    c = await eventually(failure)
    assert c["reason"] == "FailedCreate"

    async def event():
        items = (await client.list(EVENTS, namespace=NS))["items"]
        return any(e["reason"] == "FailedCreate" for e in items)

    await eventually(event)


async def test_under_the_controller_manager_with_gc(controller_config, client, kubelet) -> None:
    """Every registered controller together, as ``sampan server`` runs them."""
    from sampan.controllers.base import ControllerManagerOptions
    from sampan.controllers.manager import ControllerManager

    manager = ControllerManager(controller_config, ControllerManagerOptions(identity="test"))
    await manager.start()
    try:
        created = await client.create(DEPLOYMENTS, deployment_body("full", 2), namespace=NS)
        await wait_complete(client, "full", 2)

        async def healthy():
            health = manager.health()
            mine = ("deployment", "replicaset", "job", "cronjob", "statefulset", "daemonset")
            return all(health.get(name) for name in mine)

        await eventually(healthy)
        await client.delete(DEPLOYMENTS, "full", namespace=NS, propagation_policy="Background")

        async def all_gone():
            sets = await rs_of(client, created["metadata"]["uid"])
            pods = (await client.list(PODS, namespace=NS, label_selector="app=full"))["items"]
            return not sets and not pods

        await eventually(all_gone, timeout_s=30)
    finally:
        await manager.stop()
