"""StatefulSet controller against a real API server; the test plays scheduler and kubelet."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from sampan.client import Client, ConflictError
from sampan.client.api import CONTROLLERREVISIONS, PODS, PVCS, STATEFULSETS
from sampan.controllers.history import CONTROLLER_REVISION_HASH_LABEL, revision_data
from sampan.controllers.statefulset import (
    POD_INDEX_LABEL,
    POD_NAME_LABEL,
    StatefulSetController,
    ordinal_of,
)
from tests.support.fakekubelet import FakeKubelet

from .conftest import eventually

NS = "default"


def test_ordinal_of() -> None:
    assert ordinal_of("web", "web-0") == 0
    assert ordinal_of("web", "web-12") == 12
    assert ordinal_of("web", "web-x") is None
    assert ordinal_of("web", "webby-1") is None
    assert ordinal_of("web", "web-1-2") is None


def test_revision_data_shape() -> None:
    data = revision_data({"metadata": {"labels": {"a": "b"}}, "spec": {}})
    assert data == {
        "spec": {"template": {"metadata": {"labels": {"a": "b"}}, "spec": {}, "$patch": "replace"}}
    }


@pytest.fixture
async def kubelet(client: Client) -> AsyncIterator[FakeKubelet]:
    """Marks pods Ready (in creation order) and finishes deletions. ``paused`` stops it;
    ``started`` records the order in which pods became ready."""
    async with FakeKubelet(client, NS) as fake:
        yield fake


def sts_body(name: str, replicas: int, image: str = "busybox:1", **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "replicas": replicas,
            "serviceName": name,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": image}]},
            },
            **spec,
        },
    }


async def patch_sts(client: Client, name: str, body: dict[str, Any]) -> None:
    for _ in range(20):
        try:
            await client.patch(STATEFULSETS, name, body, namespace=NS)
            return
        except ConflictError:
            await asyncio.sleep(0.05)
    await client.patch(STATEFULSETS, name, body, namespace=NS)


async def pods_of(client: Client, app: str) -> dict[str, dict[str, Any]]:
    items = (await client.list(PODS, namespace=NS, label_selector=f"app={app}"))["items"]
    return {p["metadata"]["name"]: p for p in items if not p["metadata"].get("deletionTimestamp")}


async def wait_ready(client: Client, name: str, replicas: int, revision_check: bool = True):
    async def ready():
        sts = await client.get(STATEFULSETS, name, namespace=NS)
        st = sts.get("status") or {}
        ok = (
            st.get("observedGeneration") == sts["metadata"]["generation"]
            and st.get("replicas") == replicas
            and st.get("readyReplicas", 0) == replicas
            and (not revision_check or st.get("currentRevision") == st.get("updateRevision"))
            and st.get("updatedReplicas", 0) == replicas
        )
        return sts if ok else None

    return await eventually(ready, timeout_s=30)


async def test_ordered_creation_claims_and_identity(client, run_controller, kubelet) -> None:
    body = sts_body(
        "web",
        3,
        volumeClaimTemplates=[
            {
                "metadata": {"name": "data"},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            }
        ],
    )
    await run_controller(StatefulSetController)
    await client.create(STATEFULSETS, body, namespace=NS)
    sts = await wait_ready(client, "web", 3)
    assert kubelet.started[:3] == ["web-0", "web-1", "web-2"]
    pods = await pods_of(client, "web")
    assert sorted(pods) == ["web-0", "web-1", "web-2"]
    for name, pod in pods.items():
        labels = pod["metadata"]["labels"]
        assert labels[POD_NAME_LABEL] == name
        assert labels[POD_INDEX_LABEL] == name.rsplit("-", 1)[1]
        assert labels[CONTROLLER_REVISION_HASH_LABEL]
        assert pod["spec"]["hostname"] == name and pod["spec"]["subdomain"] == "web"
        [volume] = [v for v in pod["spec"]["volumes"] if v["name"] == "data"]
        assert volume == {"name": "data", "persistentVolumeClaim": {"claimName": f"data-{name}"}}
    claims = (await client.list(PVCS, namespace=NS))["items"]
    assert sorted(c["metadata"]["name"] for c in claims) == [
        "data-web-0",
        "data-web-1",
        "data-web-2",
    ]
    revisions = (await client.list(CONTROLLERREVISIONS, namespace=NS))["items"]
    assert [r["metadata"]["name"] for r in revisions] == [sts["status"]["updateRevision"]]

    # scale down: the highest ordinal goes first; claims stay (Retain)
    await patch_sts(client, "web", {"spec": {"replicas": 1}})
    await wait_ready(client, "web", 1)
    assert sorted(await pods_of(client, "web")) == ["web-0"]
    assert len((await client.list(PVCS, namespace=NS))["items"]) == 3


async def test_rolling_update_with_partition_and_rollback(client, run_controller, kubelet) -> None:
    await run_controller(StatefulSetController)
    await client.create(STATEFULSETS, sts_body("db", 3), namespace=NS)
    first = await wait_ready(client, "db", 3)
    rev1 = first["status"]["updateRevision"]

    # partition 2: only db-2 moves to the new template
    await patch_sts(
        client,
        "db",
        {
            "spec": {
                "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 2}},
                "template": {"spec": {"containers": [{"name": "c", "image": "busybox:2"}]}},
            }
        },
    )

    async def partial():
        sts = await client.get(STATEFULSETS, "db", namespace=NS)
        st = sts.get("status") or {}
        pods = await pods_of(client, "db")
        images = {n: p["spec"]["containers"][0]["image"] for n, p in pods.items()}
        ok = (
            st.get("updateRevision") != rev1
            and images == {"db-0": "busybox:1", "db-1": "busybox:1", "db-2": "busybox:2"}
            and st.get("readyReplicas") == 3
            and st.get("updatedReplicas") == 1
        )
        return st if ok else None

    st = await eventually(partial, timeout_s=30)
    assert st["currentRevision"] == rev1
    rev2 = st["updateRevision"]

    # partition 0: the rest follows, highest first
    await patch_sts(client, "db", {"spec": {"updateStrategy": {"rollingUpdate": {"partition": 0}}}})
    done = await wait_ready(client, "db", 3)
    assert done["status"]["currentRevision"] == rev2
    images = {
        n: p["spec"]["containers"][0]["image"] for n, p in (await pods_of(client, "db")).items()
    }
    assert set(images.values()) == {"busybox:2"}

    # back to the old template: the old revision is reused with a new number
    await patch_sts(
        client,
        "db",
        {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox:1"}]}}}},
    )
    back = await wait_ready(client, "db", 3)
    assert back["status"]["updateRevision"] == rev1
    revisions = {
        r["metadata"]["name"]: r["revision"]
        for r in (await client.list(CONTROLLERREVISIONS, namespace=NS))["items"]
    }
    assert revisions[rev1] == 3 and revisions[rev2] == 2


async def test_parallel_policy_creates_without_waiting(client, run_controller, kubelet) -> None:
    kubelet.paused = True  # nothing becomes ready
    await run_controller(StatefulSetController)
    await client.create(
        STATEFULSETS, sts_body("par", 3, podManagementPolicy="Parallel"), namespace=NS
    )

    async def three():
        pods = await pods_of(client, "par")
        return pods if len(pods) == 3 else None

    await eventually(three)
    # OrderedReady, by contrast, stops at the first pod that is not ready
    await client.create(STATEFULSETS, sts_body("ord", 3), namespace=NS)

    async def one():
        return list(await pods_of(client, "ord")) == ["ord-0"]

    await eventually(one)
    await asyncio.sleep(0.3)
    assert list(await pods_of(client, "ord")) == ["ord-0"]


async def test_claim_retention_policy_owner_references(client, run_controller, kubelet) -> None:
    body = sts_body(
        "ret",
        2,
        persistentVolumeClaimRetentionPolicy={"whenDeleted": "Delete", "whenScaled": "Delete"},
        volumeClaimTemplates=[
            {
                "metadata": {"name": "data"},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            }
        ],
    )
    await run_controller(StatefulSetController)
    sts = await client.create(STATEFULSETS, body, namespace=NS)
    await wait_ready(client, "ret", 2)
    pod1 = (await pods_of(client, "ret"))["ret-1"]
    await patch_sts(client, "ret", {"spec": {"replicas": 1}})
    await wait_ready(client, "ret", 1)

    async def owners(claim: str):
        got = await client.get(PVCS, claim, namespace=NS)
        return {r["kind"]: r["uid"] for r in got["metadata"].get("ownerReferences") or ()}

    assert await owners("data-ret-0") == {"StatefulSet": sts["metadata"]["uid"]}
    assert await owners("data-ret-1") == {
        "StatefulSet": sts["metadata"]["uid"],
        "Pod": pod1["metadata"]["uid"],
    }
