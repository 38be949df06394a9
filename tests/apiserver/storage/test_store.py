"""Registry-store semantics over a real SQLite datastore: create/get/update/delete, CAS,
generation, the status split, finalizers, graceful pod deletion, namespace termination."""

from __future__ import annotations

import asyncio
import re
from dataclasses import replace

import pytest

from sampan.api.errors import (
    AlreadyExists,
    BadRequest,
    Conflict,
    Invalid,
    NotFound,
    RequestEntityTooLarge,
)
from sampan.apiserver.storage import DeleteOptions, ResourceStore, Storage
from sampan.apiserver.storage.store import GENERATE_NAME_ALPHABET
from sampan.datastore.sqlite import SQLiteBackend

from .conftest import configmap, deployment, pod

RFC3339_SECONDS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


async def test_create_fills_system_metadata(configmaps: ResourceStore) -> None:
    created = await configmaps.create(configmap("a"))
    meta = created["metadata"]
    assert created["apiVersion"] == "v1" and created["kind"] == "ConfigMap"
    assert re.fullmatch(r"[0-9a-f-]{36}", meta["uid"])
    assert RFC3339_SECONDS.match(meta["creationTimestamp"])
    assert int(meta["resourceVersion"]) > 0
    assert "generation" not in meta  # configmaps do not track generation
    got = await configmaps.get("default", "a")
    assert got == created


async def test_resource_version_is_not_stored(
    configmaps: ResourceStore, backend: SQLiteBackend
) -> None:
    created = await configmaps.create(configmap("a"))
    _, kv = await backend.get("/registry/configmaps/default/a")
    assert kv is not None
    assert b"resourceVersion" not in kv.value
    assert str(kv.mod_revision) == created["metadata"]["resourceVersion"]


async def test_create_generate_name(configmaps: ResourceStore) -> None:
    body = configmap("")
    del body["metadata"]["name"]
    body["metadata"]["generateName"] = "web-"
    names = set()
    for _ in range(5):
        created = await configmaps.create(body)
        name = created["metadata"]["name"]
        assert name.startswith("web-") and len(name) == len("web-") + 5
        assert set(name[4:]) <= set(GENERATE_NAME_ALPHABET)
        names.add(name)
    assert len(names) == 5


async def test_create_existing_is_already_exists(configmaps: ResourceStore) -> None:
    await configmaps.create(configmap("a"))
    with pytest.raises(AlreadyExists) as err:
        await configmaps.create(configmap("a"))
    assert err.value.code == 409
    assert err.value.message == 'configmaps "a" already exists'


async def test_create_without_name_is_invalid(configmaps: ResourceStore) -> None:
    body = configmap("x")
    del body["metadata"]["name"]
    with pytest.raises(Invalid) as err:
        await configmaps.create(body)
    assert err.value.code == 422
    assert any(c.field == "metadata.name" for c in err.value.causes)


async def test_create_with_resource_version_is_refused(configmaps: ResourceStore) -> None:
    body = configmap("a")
    body["metadata"]["resourceVersion"] = "5"
    with pytest.raises(Exception, match="resourceVersion should not be set"):
        await configmaps.create(body)


async def test_dry_run_create_writes_nothing(
    configmaps: ResourceStore, backend: SQLiteBackend
) -> None:
    before = await backend.current_revision()
    out = await configmaps.create(configmap("a"), dry_run=True)
    assert out["metadata"]["name"] == "a" and out["metadata"]["uid"]
    assert await backend.current_revision() == before
    with pytest.raises(NotFound):
        await configmaps.get("default", "a")
    await configmaps.create(configmap("a"))
    with pytest.raises(AlreadyExists):
        await configmaps.create(configmap("a"), dry_run=True)


async def test_value_too_large(storage: Storage, registry) -> None:
    # A kind without size validation, so only the datastore limit applies.
    base = registry.by_resource("", "v1", "configmaps")
    info = replace(
        base,
        group="example.com",
        kind="Blob",
        plural="blobs",
        singular="blob",
        storage_resource="example.com/blobs",
        storage_version="example.com/v1",
    )
    registry.add(info)
    blobs = storage.for_resource(info)
    body = {
        "apiVersion": "example.com/v1",
        "kind": "Blob",
        "metadata": {"name": "big", "namespace": "default"},
        "spec": {"payload": "x" * (2 * 1024 * 1024)},
    }
    with pytest.raises(RequestEntityTooLarge):
        await blobs.create(body)
    with pytest.raises(NotFound):
        await blobs.get("default", "big")


async def test_get_missing_is_not_found(configmaps: ResourceStore, deployments) -> None:
    with pytest.raises(NotFound) as err:
        await configmaps.get("default", "nope")
    assert err.value.message == 'configmaps "nope" not found'
    with pytest.raises(NotFound) as err:
        await deployments.get("default", "nope")
    assert err.value.message == 'deployments.apps "nope" not found'


async def test_update_cas(configmaps: ResourceStore) -> None:
    created = await configmaps.create(configmap("a"))
    first = dict(created, data={"k": "1"})
    updated = await configmaps.update("default", "a", first)
    assert int(updated["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])
    assert updated["data"] == {"k": "1"}
    assert updated["metadata"]["uid"] == created["metadata"]["uid"]
    # The same stale resourceVersion again: 409 with upstream's wording.
    stale = dict(created, data={"k": "2"})
    with pytest.raises(Conflict) as err:
        await configmaps.update("default", "a", stale)
    assert err.value.message == (
        'Operation cannot be fulfilled on configmaps "a": the object has been modified; '
        "please apply your changes to the latest version and try again"
    )
    assert (await configmaps.get("default", "a"))["data"] == {"k": "1"}


async def test_update_without_resource_version_is_unconditional(
    configmaps: ResourceStore,
) -> None:
    await configmaps.create(configmap("a"))
    body = configmap("a")
    body["data"] = {"k": "forced"}
    out = await configmaps.update("default", "a", body)
    assert out["data"] == {"k": "forced"}


async def test_update_keeps_system_metadata(configmaps: ResourceStore) -> None:
    created = await configmaps.create(configmap("a"))
    body = configmap("a")
    body["metadata"]["creationTimestamp"] = "2000-01-01T00:00:00Z"
    out = await configmaps.update("default", "a", body)
    assert out["metadata"]["creationTimestamp"] == created["metadata"]["creationTimestamp"]
    assert out["metadata"]["uid"] == created["metadata"]["uid"]
    body["metadata"]["uid"] = "0000"
    with pytest.raises(Invalid) as err:
        await configmaps.update("default", "a", body)
    assert any(c.field == "metadata.uid" for c in err.value.causes)


async def test_update_name_mismatch(configmaps: ResourceStore) -> None:
    await configmaps.create(configmap("a"))
    with pytest.raises(BadRequest):
        await configmaps.update("default", "a", configmap("b"))


async def test_update_missing_is_not_found(configmaps: ResourceStore) -> None:
    with pytest.raises(NotFound):
        await configmaps.update("default", "ghost", configmap("ghost"))


async def test_noop_update_writes_nothing(
    configmaps: ResourceStore, backend: SQLiteBackend
) -> None:
    created = await configmaps.create(configmap("a"))
    before = await backend.current_revision()
    out = await configmaps.update("default", "a", created)
    assert out["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]
    assert await backend.current_revision() == before


async def test_generation_bumps_on_spec_change_only(deployments: ResourceStore) -> None:
    created = await deployments.create(deployment("web"))
    assert created["metadata"]["generation"] == 1
    relabelled = dict(created)
    relabelled["metadata"] = dict(created["metadata"], labels={"tier": "front"})
    out = await deployments.update("default", "web", relabelled)
    assert out["metadata"]["generation"] == 1
    scaled = dict(out, spec=dict(out["spec"], replicas=3))
    out = await deployments.update("default", "web", scaled)
    assert out["metadata"]["generation"] == 2
    assert out["spec"]["replicas"] == 3


async def test_status_split(deployments: ResourceStore) -> None:
    created = await deployments.create(deployment("web"))
    # The main resource ignores status.
    body = dict(created, status={"replicas": 7})
    out = await deployments.update("default", "web", body)
    assert out.get("status", {}).get("replicas") != 7
    # The status subresource changes only status.
    body = dict(out, status={"replicas": 2}, spec=dict(out["spec"], replicas=9))
    body["metadata"] = dict(out["metadata"], labels={"changed": "yes"})
    out = await deployments.update("default", "web", body, subresource="status")
    assert out["status"]["replicas"] == 2
    assert out["spec"]["replicas"] == 1
    assert "changed" not in (out["metadata"].get("labels") or {})
    assert out["metadata"]["generation"] == 1


async def test_guaranteed_update_retries_and_preconditions(configmaps: ResourceStore) -> None:
    created = await configmaps.create(configmap("a"))
    calls = []

    def add_key(obj: dict) -> dict:
        calls.append(obj["metadata"]["resourceVersion"])
        obj["data"]["extra"] = "1"
        return obj

    out = await configmaps.guaranteed_update("default", "a", add_key)
    assert out["data"]["extra"] == "1"

    def stale(obj: dict) -> dict:
        obj["metadata"]["resourceVersion"] = created["metadata"]["resourceVersion"]
        obj["data"]["more"] = "2"
        return obj

    with pytest.raises(Conflict):
        await configmaps.guaranteed_update("default", "a", stale)

    def refuse(obj: dict) -> dict:
        raise BadRequest("no")

    with pytest.raises(BadRequest):
        await configmaps.guaranteed_update("default", "a", refuse)


async def test_concurrent_unconditional_updates_all_land(configmaps: ResourceStore) -> None:
    await configmaps.create(configmap("counter"))

    async def bump(i: int) -> None:
        def add(obj: dict) -> dict:
            obj["data"][f"k{i}"] = str(i)
            return obj

        await configmaps.guaranteed_update("default", "counter", add)

    await asyncio.gather(*(bump(i) for i in range(4)))
    got = await configmaps.get("default", "counter")
    assert {f"k{i}" for i in range(4)} <= set(got["data"])


# --- delete ----------------------------------------------------------------------------------


async def test_delete_now(configmaps: ResourceStore) -> None:
    await configmaps.create(configmap("a"))
    obj, deleted = await configmaps.delete("default", "a", DeleteOptions())
    assert deleted and obj["metadata"]["name"] == "a"
    with pytest.raises(NotFound):
        await configmaps.get("default", "a")
    with pytest.raises(NotFound):
        await configmaps.delete("default", "a", DeleteOptions())


async def test_delete_preconditions(configmaps: ResourceStore) -> None:
    created = await configmaps.create(configmap("a"))
    with pytest.raises(Conflict) as err:
        await configmaps.delete("default", "a", DeleteOptions(precondition_uid="other"))
    assert "Precondition failed: UID in precondition: other" in err.value.message
    with pytest.raises(Conflict) as err:
        await configmaps.delete("default", "a", DeleteOptions(precondition_rv="999"))
    assert "Precondition failed: ResourceVersion in precondition: 999" in err.value.message
    _, deleted = await configmaps.delete(
        "default",
        "a",
        DeleteOptions(
            precondition_uid=created["metadata"]["uid"],
            precondition_rv=created["metadata"]["resourceVersion"],
        ),
    )
    assert deleted


async def test_dry_run_delete(configmaps: ResourceStore) -> None:
    await configmaps.create(configmap("a"))
    _, deleted = await configmaps.delete("default", "a", DeleteOptions(dry_run=True))
    assert deleted
    await configmaps.get("default", "a")


async def test_finalizers_keep_object_until_removed(configmaps: ResourceStore) -> None:
    body = configmap("a")
    body["metadata"]["finalizers"] = ["example.com/hold"]
    await configmaps.create(body)
    obj, deleted = await configmaps.delete("default", "a", DeleteOptions())
    assert not deleted
    assert obj["metadata"]["deletionTimestamp"]
    assert obj["metadata"]["deletionGracePeriodSeconds"] == 0
    # A second delete returns the terminating object unchanged.
    again, deleted = await configmaps.delete("default", "a", DeleteOptions())
    assert not deleted and again["metadata"]["deletionTimestamp"]
    # Updates cannot clear deletionTimestamp; removing the last finalizer deletes.
    current = await configmaps.get("default", "a")
    current["metadata"]["finalizers"] = []
    current["metadata"].pop("deletionTimestamp")
    out = await configmaps.update("default", "a", current)
    assert out["metadata"]["deletionTimestamp"]
    with pytest.raises(NotFound):
        await configmaps.get("default", "a", resource_version="")


async def test_propagation_policy_finalizers(configmaps: ResourceStore) -> None:
    await configmaps.create(configmap("orphaned"))
    obj, deleted = await configmaps.delete(
        "default", "orphaned", DeleteOptions(propagation_policy="Orphan")
    )
    assert not deleted and obj["metadata"]["finalizers"] == ["orphan"]
    await configmaps.create(configmap("fg"))
    obj, deleted = await configmaps.delete(
        "default", "fg", DeleteOptions(propagation_policy="Foreground")
    )
    assert not deleted and obj["metadata"]["finalizers"] == ["foregroundDeletion"]
    await configmaps.create(configmap("bg"))
    _, deleted = await configmaps.delete(
        "default", "bg", DeleteOptions(propagation_policy="Background")
    )
    assert deleted


async def test_pod_graceful_deletion(pods: ResourceStore) -> None:
    await pods.create(pod("bound", node="node-1", terminationGracePeriodSeconds=45))
    obj, deleted = await pods.delete("default", "bound", DeleteOptions())
    assert not deleted
    assert obj["metadata"]["deletionGracePeriodSeconds"] == 45
    assert obj["metadata"]["deletionTimestamp"] > obj["metadata"]["creationTimestamp"]
    # A shorter grace period wins; the kubelet's grace 0 deletes.
    obj, deleted = await pods.delete("default", "bound", DeleteOptions(grace_period_s=10))
    assert not deleted and obj["metadata"]["deletionGracePeriodSeconds"] == 10
    _, deleted = await pods.delete("default", "bound", DeleteOptions(grace_period_s=0))
    assert deleted
    with pytest.raises(NotFound):
        await pods.get("default", "bound")


async def test_pod_default_grace_and_unbound(pods: ResourceStore) -> None:
    await pods.create(pod("bound", node="node-1"))
    obj, deleted = await pods.delete("default", "bound", DeleteOptions())
    assert not deleted and obj["metadata"]["deletionGracePeriodSeconds"] == 30
    await pods.create(pod("pending"))
    _, deleted = await pods.delete("default", "pending", DeleteOptions())
    assert deleted


async def test_pod_with_finalizer_after_grace_zero(pods: ResourceStore) -> None:
    body = pod("held", node="node-1")
    body["metadata"]["finalizers"] = ["example.com/hold"]
    await pods.create(body)
    obj, deleted = await pods.delete("default", "held", DeleteOptions(grace_period_s=0))
    assert not deleted and obj["metadata"]["deletionGracePeriodSeconds"] == 0

    def release(o: dict) -> dict:
        o["metadata"]["finalizers"] = []
        return o

    await pods.guaranteed_update("default", "held", release)
    with pytest.raises(NotFound):
        await pods.get("default", "held")


async def test_namespace_terminating_and_finalize(
    namespaces: ResourceStore, storage: Storage
) -> None:
    ns = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": "demo"},
        "spec": {"finalizers": ["kubernetes"]},
    }
    await namespaces.create(ns)
    obj, deleted = await namespaces.delete(None, "demo", DeleteOptions())
    assert not deleted
    assert obj["status"]["phase"] == "Terminating"
    assert obj["metadata"]["deletionTimestamp"]
    # Main-resource updates cannot drop spec.finalizers; finalize can.
    current = await namespaces.get(None, "demo")
    current["spec"]["finalizers"] = []
    out = await namespaces.update(None, "demo", current)
    assert out["spec"]["finalizers"] == ["kubernetes"]
    again, deleted = await namespaces.delete(None, "demo", DeleteOptions())
    assert not deleted and again["status"]["phase"] == "Terminating"
    current = await namespaces.get(None, "demo")
    current["spec"]["finalizers"] = []
    await namespaces.update(None, "demo", current, subresource="finalize")
    with pytest.raises(NotFound):
        await namespaces.get(None, "demo")


async def test_namespace_without_finalizers_deletes_now(namespaces: ResourceStore) -> None:
    created = await namespaces.create({"metadata": {"name": "bare"}})
    assert created["spec"]["finalizers"] == ["kubernetes"]  # defaulted on create
    body = dict(created, spec={"finalizers": []})
    out = await namespaces.update(None, "bare", body, subresource="finalize")
    assert not out.get("spec", {}).get("finalizers")
    assert await namespaces.get(None, "bare")  # not terminating: finalize alone keeps it
    _, deleted = await namespaces.delete(None, "bare", DeleteOptions())
    assert deleted


async def test_delete_collection(configmaps: ResourceStore) -> None:
    for i in range(5):
        await configmaps.create(configmap(f"c{i}", app="x" if i % 2 else "y"))
    await configmaps.create(configmap("other", namespace="kube-system", app="x"))
    deleted = await configmaps.delete_collection(
        "default", label_selector="app=x", options=DeleteOptions()
    )
    assert sorted(o["metadata"]["name"] for o in deleted) == ["c1", "c3"]
    page = await configmaps.list(None)
    assert len(page.items) == 4


async def test_background_delete_drops_orphan_finalizer(configmaps: ResourceStore) -> None:
    await configmaps.create(configmap("a"))
    obj, deleted = await configmaps.delete(
        "default", "a", DeleteOptions(propagation_policy="Orphan")
    )
    assert not deleted and obj["metadata"]["finalizers"] == ["orphan"]
    _, deleted = await configmaps.delete(
        "default", "a", DeleteOptions(propagation_policy="Background")
    )
    assert deleted
    with pytest.raises(NotFound):
        await configmaps.get("default", "a")


async def test_versions_sharing_storage(storage: Storage, registry) -> None:
    core = storage.for_resource(registry.by_resource("", "v1", "events"))
    new = storage.for_resource(registry.by_resource("events.k8s.io", "v1", "events"))
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": "e1", "namespace": "default"},
        "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"},
        "reason": "Started",
        "message": "hello",
        "source": {"component": "kubelet"},
        "type": "Normal",
    }
    await core.create(event)
    # The other version's store reads the same objects, in the storage version.
    got = await new.get("default", "e1")
    assert got["apiVersion"] == "v1" and got["message"] == "hello"
    page = await new.list("default")
    assert len(page.items) == 1
    # An object handed over in the other served version is converted to the storage one.
    hpa_v1 = storage.for_resource(
        registry.by_resource("autoscaling", "v1", "horizontalpodautoscalers")
    )
    created = await hpa_v1.create(
        {
            "apiVersion": "autoscaling/v1",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "h", "namespace": "default"},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "minReplicas": 1,
                "maxReplicas": 3,
                "targetCPUUtilizationPercentage": 50,
            },
        }
    )
    assert created["apiVersion"] == "autoscaling/v2"
    assert created["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 50


async def test_other_served_version_is_converted_on_write(storage: Storage, registry) -> None:
    hpa_v2 = storage.for_resource(
        registry.by_resource("autoscaling", "v2", "horizontalpodautoscalers")
    )
    created = await hpa_v2.create(
        {
            "apiVersion": "autoscaling/v1",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "h", "namespace": "default"},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "maxReplicas": 3,
                "targetCPUUtilizationPercentage": 70,
            },
        }
    )
    assert created["apiVersion"] == "autoscaling/v2"
    assert created["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 70


async def test_job_selector_uses_the_stored_uid_and_name(storage: Storage, registry) -> None:
    jobs = storage.for_resource(registry.by_resource("batch", "v1", "jobs"))
    created = await jobs.create(
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"generateName": "pi-", "namespace": "default"},
            "spec": {
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [{"name": "pi", "image": "perl:5.34"}],
                    }
                }
            },
        }
    )
    meta = created["metadata"]
    labels = created["spec"]["template"]["metadata"]["labels"]
    assert labels["batch.kubernetes.io/controller-uid"] == meta["uid"]
    assert labels["batch.kubernetes.io/job-name"] == meta["name"]
    assert created["spec"]["selector"]["matchLabels"] == {
        "batch.kubernetes.io/controller-uid": meta["uid"]
    }
