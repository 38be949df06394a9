"""PersistentVolume binder, protection controllers, storage admission and the local-path
provisioner (server half) against a real in-process API server."""

from __future__ import annotations

from typing import Any

import pytest

from sampan.client import Client, NotFoundError
from sampan.client.api import EVENTS, PODS, PVCS, PVS, STORAGECLASSES, InvalidError
from sampan.controllers.base import ControllerManagerOptions
from sampan.controllers.localpath import LocalPathProvisioner
from sampan.controllers.persistentvolume import (
    PersistentVolumeBinder,
    PVCProtectionController,
    PVProtectionController,
)

from .conftest import eventually

NS = "default"


def _pv(
    name: str,
    size: str,
    *,
    klass: str = "",
    modes: tuple[str, ...] = ("ReadWriteOnce",),
    labels: dict[str, str] | None = None,
    policy: str = "Retain",
    claim_ref: dict[str, Any] | None = None,
    mode: str = "Filesystem",
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "capacity": {"storage": size},
        "accessModes": list(modes),
        "hostPath": {"path": f"/tmp/pv-{name}"},
        "persistentVolumeReclaimPolicy": policy,
        "storageClassName": klass,
        "volumeMode": mode,
    }
    if claim_ref:
        spec["claimRef"] = claim_ref
    return {"metadata": {"name": name, "labels": labels or {}}, "spec": spec}


def _pvc(
    name: str,
    size: str = "1Gi",
    *,
    klass: str | None = "",
    modes: tuple[str, ...] = ("ReadWriteOnce",),
    selector: dict[str, Any] | None = None,
    volume_name: str = "",
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "accessModes": list(modes),
        "resources": {"requests": {"storage": size}},
    }
    if klass is not None:
        spec["storageClassName"] = klass
    if selector:
        spec["selector"] = selector
    if volume_name:
        spec["volumeName"] = volume_name
    return {"metadata": {"name": name}, "spec": spec}


async def _claim(client: Client, name: str) -> dict[str, Any]:
    return await client.get(PVCS, name, namespace=NS)


def _bound_to(client: Client, claim: str, volume: str):
    async def check() -> bool:
        pvc = await _claim(client, claim)
        try:
            pv = await client.get(PVS, volume)
        except NotFoundError:
            return False
        return (
            pvc["spec"].get("volumeName") == volume
            and pvc["status"].get("phase") == "Bound"
            and pv["status"].get("phase") == "Bound"
        )

    return check


async def _events(client: Client, name: str) -> list[tuple[str, str, str]]:
    items = (await client.list(EVENTS, namespace=NS))["items"]
    return [
        (e["type"], e["reason"], e["message"])
        for e in items
        if e["involvedObject"].get("name") == name
    ]


def _has_event(client: Client, name: str, reason: str, message: str | None = None):
    async def check() -> bool:
        return any(
            r == reason and (message is None or m == message)
            for _, r, m in await _events(client, name)
        )

    return check


async def test_binds_the_smallest_volume_that_fits(client: Client, run_controller) -> None:
    await client.create(PVS, _pv("big", "10Gi"))
    await client.create(PVS, _pv("small", "2Gi"))
    await client.create(PVS, _pv("tiny", "500Mi"))
    await client.create(PVS, _pv("rox", "1Gi", modes=("ReadOnlyMany",)))
    await client.create(PVS, _pv("fast", "1Gi", klass="fast"))
    await client.create(PVS, _pv("block", "1Gi", mode="Block"))
    await run_controller(PersistentVolumeBinder)
    await client.create(PVCS, _pvc("data", "1Gi"), namespace=NS)
    await eventually(_bound_to(client, "data", "small"))
    pvc = await _claim(client, "data")
    pv = await client.get(PVS, "small")
    assert pvc["metadata"]["annotations"]["pv.kubernetes.io/bind-completed"] == "yes"
    assert pvc["metadata"]["annotations"]["pv.kubernetes.io/bound-by-controller"] == "yes"
    assert pvc["status"]["capacity"] == {"storage": "2Gi"}
    assert pvc["status"]["accessModes"] == ["ReadWriteOnce"]
    assert pv["metadata"]["annotations"]["pv.kubernetes.io/bound-by-controller"] == "yes"
    assert pv["spec"]["claimRef"]["uid"] == pvc["metadata"]["uid"]
    for other in ("big", "tiny", "rox", "fast", "block"):

        async def available(name: str = other) -> bool:
            return (await client.get(PVS, name))["status"].get("phase") == "Available"

        await eventually(available)


async def test_selector_and_volume_name_and_claim_ref(client: Client, run_controller) -> None:
    await client.create(PVS, _pv("plain", "1Gi"))
    await client.create(PVS, _pv("labelled", "5Gi", labels={"tier": "gold"}))
    await client.create(PVS, _pv("named", "3Gi"))
    await client.create(
        PVS, _pv("reserved", "8Gi", claim_ref={"namespace": NS, "name": "wants-reserved"})
    )
    await run_controller(PersistentVolumeBinder)
    await client.create(
        PVCS, _pvc("gold", selector={"matchLabels": {"tier": "gold"}}), namespace=NS
    )
    await client.create(PVCS, _pvc("by-name", volume_name="named"), namespace=NS)
    await client.create(PVCS, _pvc("wants-reserved"), namespace=NS)
    await eventually(_bound_to(client, "gold", "labelled"))
    await eventually(_bound_to(client, "by-name", "named"))
    await eventually(_bound_to(client, "wants-reserved", "reserved"))
    by_name = await _claim(client, "by-name")
    # The user chose the volume: not bound by the controller.
    assert "pv.kubernetes.io/bound-by-controller" not in by_name["metadata"]["annotations"]
    reserved = await client.get(PVS, "reserved")
    assert "pv.kubernetes.io/bound-by-controller" not in (
        reserved["metadata"].get("annotations") or {}
    )
    # A claim naming a volume that does not fit waits with VolumeMismatch.
    await client.create(PVS, _pv("too-small", "1Mi"))
    await client.create(PVCS, _pvc("mismatch", "1Gi", volume_name="too-small"), namespace=NS)
    await eventually(
        _has_event(
            client,
            "mismatch",
            "VolumeMismatch",
            'Cannot bind to requested volume "too-small": requested PV is too small',
        )
    )
    assert (await _claim(client, "mismatch"))["status"]["phase"] == "Pending"


async def test_no_volume_and_no_class(client: Client, run_controller) -> None:
    await run_controller(PersistentVolumeBinder)
    await client.create(PVCS, _pvc("lonely"), namespace=NS)
    await eventually(
        _has_event(
            client,
            "lonely",
            "FailedBinding",
            "no persistent volumes available for this claim and no storage class is set",
        )
    )
    assert (await _claim(client, "lonely"))["status"]["phase"] == "Pending"
    # A volume that appears later is taken.
    await client.create(PVS, _pv("late", "1Gi"))
    await eventually(_bound_to(client, "lonely", "late"))


async def test_retain_releases_and_needs_claim_ref_cleared(client: Client, run_controller) -> None:
    await client.create(PVS, _pv("kept", "1Gi"))
    await run_controller(PersistentVolumeBinder)
    await run_controller(PVCProtectionController)
    await run_controller(PVProtectionController)
    await client.create(PVCS, _pvc("first"), namespace=NS)
    await eventually(_bound_to(client, "first", "kept"))
    await client.delete(PVCS, "first", namespace=NS)

    async def released() -> bool:
        return (await client.get(PVS, "kept"))["status"].get("phase") == "Released"

    await eventually(released)
    await client.create(PVCS, _pvc("second"), namespace=NS)
    await eventually(_has_event(client, "second", "FailedBinding"))
    assert (await _claim(client, "second"))["status"]["phase"] == "Pending"
    assert (await client.get(PVS, "kept"))["status"]["phase"] == "Released"
    # The administrator clears claimRef: the volume is Available again and gets bound.
    pv = await client.get(PVS, "kept")
    del pv["spec"]["claimRef"]
    await client.update(PVS, pv)
    await eventually(_bound_to(client, "second", "kept"))


async def test_delete_policy_without_provisioner_fails(client: Client, run_controller) -> None:
    await client.create(PVS, _pv("doomed", "1Gi", policy="Delete"))
    await run_controller(PersistentVolumeBinder)
    await run_controller(PVCProtectionController)
    await client.create(PVCS, _pvc("c"), namespace=NS)
    await eventually(_bound_to(client, "c", "doomed"))
    await client.delete(PVCS, "c", namespace=NS)

    async def failed() -> bool:
        return (await client.get(PVS, "doomed"))["status"].get("phase") == "Failed"

    await eventually(failed)
    await eventually(
        _has_event(
            client,
            "doomed",
            "VolumeFailedDelete",
            'error getting deleter volume plugin for volume "doomed": '
            "no deletable volume plugin matched",
        )
    )


async def test_lost_claim(client: Client, run_controller) -> None:
    await client.create(PVS, _pv("gone", "1Gi"))
    await run_controller(PersistentVolumeBinder)
    await client.create(PVCS, _pvc("orphan"), namespace=NS)
    await eventually(_bound_to(client, "orphan", "gone"))
    pv = await client.get(PVS, "gone")
    pv["metadata"]["finalizers"] = []
    await client.update(PVS, pv)
    await client.delete(PVS, "gone")

    async def lost() -> bool:
        return (await _claim(client, "orphan"))["status"].get("phase") == "Lost"

    await eventually(lost)
    await eventually(
        _has_event(
            client,
            "orphan",
            "ClaimLost",
            "Bound claim has lost reference to PersistentVolume. Data on the volume is lost!",
        )
    )


def _class(name: str, *, default: bool = False, provisioner: str = "example.com/p", **kw: Any):
    body: dict[str, Any] = {"metadata": {"name": name}, "provisioner": provisioner, **kw}
    if default:
        body["metadata"]["annotations"] = {"storageclass.kubernetes.io/is-default-class": "true"}
    return body


async def test_default_class_admission_and_finalizers(client: Client) -> None:
    await client.create(STORAGECLASSES, _class("other"))
    await client.create(STORAGECLASSES, _class("standard", default=True))
    filled = await client.create(PVCS, _pvc("filled", klass=None), namespace=NS)
    assert filled["spec"]["storageClassName"] == "standard"
    assert filled["metadata"]["finalizers"] == ["kubernetes.io/pvc-protection"]
    opted_out = await client.create(PVCS, _pvc("none", klass=""), namespace=NS)
    assert opted_out["spec"].get("storageClassName", "") == ""
    named = await client.create(PVCS, _pvc("named", klass="other"), namespace=NS)
    assert named["spec"]["storageClassName"] == "other"
    pv = await client.create(PVS, _pv("v", "1Gi"))
    assert pv["metadata"]["finalizers"] == ["kubernetes.io/pv-protection"]


async def test_pv_host_path_with_backsteps_is_rejected(client: Client) -> None:
    body = _pv("sneaky", "1Gi")
    body["spec"]["hostPath"]["path"] = "/var/lib/../../etc"
    with pytest.raises(InvalidError) as info:
        await client.create(PVS, body)
    status = info.value.status
    assert status["message"] == (
        'PersistentVolume "sneaky" is invalid: spec.hostPath.path: '
        "Invalid value: \"/var/lib/../../etc\": must not contain '..'"
    )
    assert status["details"]["causes"][0]["field"] == "spec.hostPath.path"


async def test_pvc_protection_waits_for_pods(client: Client, run_controller) -> None:
    await run_controller(PVCProtectionController)
    await client.create(PVCS, _pvc("used"), namespace=NS)
    await client.create(
        PODS,
        {
            "metadata": {"name": "user"},
            "spec": {
                "nodeName": "n1",
                "containers": [{"name": "c", "image": "busybox"}],
                "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "used"}}],
            },
        },
        namespace=NS,
    )
    # An unscheduled pod does not hold a claim (upstream).
    await client.create(PODS, _claim_pod("pending-user", "used"), namespace=NS)
    await client.create(PVCS, _pvc("free"), namespace=NS)
    await client.delete(PVCS, "used", namespace=NS)
    await client.delete(PVCS, "free", namespace=NS)

    async def free_gone() -> bool:
        try:
            await _claim(client, "free")
        except NotFoundError:
            return True
        return False

    await eventually(free_gone)  # the controller has run; "used" is still held
    claim = await _claim(client, "used")
    assert claim["metadata"]["deletionTimestamp"]
    assert claim["metadata"]["finalizers"] == ["kubernetes.io/pvc-protection"]
    await client.delete(PODS, "user", namespace=NS, grace_period_s=0)

    async def gone() -> bool:
        try:
            await _claim(client, "used")
        except NotFoundError:
            return True
        return False

    await eventually(gone)


async def test_wait_for_first_consumer_then_local_path(client: Client, run_controller) -> None:
    await client.create(
        STORAGECLASSES,
        _class(
            "local-path",
            default=True,
            provisioner="rancher.io/local-path",
            volumeBindingMode="WaitForFirstConsumer",
            reclaimPolicy="Delete",
        ),
    )
    await run_controller(PersistentVolumeBinder)
    options = ControllerManagerOptions(local_storage_path="/srv/storage")
    await run_controller(LocalPathProvisioner, options=options)
    await run_controller(PVCProtectionController)
    claim = await client.create(PVCS, _pvc("www", "1Gi", klass=None), namespace=NS)
    assert claim["spec"]["storageClassName"] == "local-path"
    await eventually(
        _has_event(
            client,
            "www",
            "WaitForFirstConsumer",
            "waiting for first consumer to be created before binding",
        )
    )
    # An unscheduled pod using it changes the event.
    await client.create(PODS, _claim_pod("web-0", "www"), namespace=NS)
    await eventually(
        _has_event(client, "www", "WaitForPodScheduled", "waiting for pod web-0 to be scheduled")
    )
    # What the scheduler does for the pod that uses it:
    claim = await _claim(client, "www")
    annotations = claim["metadata"].setdefault("annotations", {})
    annotations["volume.kubernetes.io/selected-node"] = "node-a"
    await client.update(PVCS, claim)
    uid = claim["metadata"]["uid"]
    await eventually(_bound_to(client, "www", f"pvc-{uid}"))
    pv = await client.get(PVS, f"pvc-{uid}")
    assert pv["spec"]["hostPath"] == {
        "path": f"/srv/storage/pvc-{uid}_{NS}_www",
        "type": "DirectoryOrCreate",
    }
    assert pv["spec"]["capacity"] == {"storage": "1Gi"}
    assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Delete"
    assert pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"] == [
        {
            "matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": ["node-a"]}
            ]
        }
    ]
    assert pv["metadata"]["annotations"]["pv.kubernetes.io/provisioned-by"] == (
        "rancher.io/local-path"
    )
    claim = await _claim(client, "www")
    assert claim["metadata"]["annotations"]["volume.kubernetes.io/storage-provisioner"] == (
        "rancher.io/local-path"
    )
    await eventually(
        _has_event(
            client,
            "www",
            "ExternalProvisioning",
            "Waiting for a volume to be created either by the external provisioner "
            "'rancher.io/local-path' or manually by the system administrator. If volume creation "
            "is delayed, please verify that the provisioner is running and correctly registered.",
        )
    )
    await eventually(
        _has_event(
            client, "www", "ProvisioningSucceeded", f"Successfully provisioned volume pvc-{uid}"
        )
    )
    # Deleting the claim releases the volume; the binder leaves it to the provisioner.
    await client.delete(PVCS, "www", namespace=NS)

    async def released() -> bool:
        return (await client.get(PVS, f"pvc-{uid}"))["status"].get("phase") == "Released"

    await eventually(released)


async def test_default_class_assigned_retroactively(client: Client, run_controller) -> None:
    await run_controller(PersistentVolumeBinder)
    await client.create(PVCS, _pvc("early", klass=None), namespace=NS)
    await client.create(PVCS, _pvc("classless", klass=""), namespace=NS)
    assert "storageClassName" not in (await _claim(client, "early"))["spec"]
    await client.create(STORAGECLASSES, _class("late-default", default=True))

    async def assigned() -> bool:
        return (await _claim(client, "early"))["spec"].get("storageClassName") == "late-default"

    await eventually(assigned)
    assert (await _claim(client, "classless"))["spec"].get("storageClassName", "") == ""
    # The class, once set, is immutable.
    claim = await _claim(client, "early")
    claim["spec"]["storageClassName"] = "other"
    with pytest.raises(InvalidError):
        await client.update(PVCS, claim)


async def test_newest_default_class_wins(client: Client) -> None:
    first = await client.create(STORAGECLASSES, _class("first", default=True))
    second = await client.create(STORAGECLASSES, _class("second", default=True))
    pvc = await client.create(PVCS, _pvc("c", klass=None), namespace=NS)
    # The newest wins; created in the same second, the first name does.
    same_second = first["metadata"]["creationTimestamp"] == second["metadata"]["creationTimestamp"]
    assert pvc["spec"]["storageClassName"] == ("first" if same_second else "second")
    beta = _pvc("beta", klass=None)
    beta["metadata"]["annotations"] = {"volume.beta.kubernetes.io/storage-class": "x"}
    pvc = await client.create(PVCS, beta, namespace=NS)
    assert "storageClassName" not in pvc["spec"]


class _SchedulerCtx:
    def __init__(self) -> None:
        self.failures: list[str] = []

    def fail(self, reason: str) -> None:
        self.failures.append(reason)


def _node(name: str) -> dict[str, Any]:
    resources = {"cpu": "4", "memory": "8Gi", "pods": "110"}
    return {
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {
            "capacity": dict(resources),
            "allocatable": dict(resources),
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


def _claim_pod(name: str, claim: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            "containers": [{"name": "c", "image": "busybox"}],
            "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": claim}}],
        },
    }


async def test_scheduler_binder_and_provisioner_together(
    api_server, client: Client, run_controller
) -> None:
    from sampan.client.api import NODES
    from sampan.scheduler import Scheduler, SchedulerOptions

    for name in ("n1", "n2"):
        await client.create(NODES, _node(name))
    await client.create(
        STORAGECLASSES,
        _class(
            "local-path",
            default=True,
            provisioner="rancher.io/local-path",
            volumeBindingMode="WaitForFirstConsumer",
        ),
    )
    await client.create(
        STORAGECLASSES,
        _class(
            "local-static",
            provisioner="kubernetes.io/no-provisioner",
            **{"volumeBindingMode": "WaitForFirstConsumer"},
        ),
    )
    # A static local volume that only n2 has.
    static = _pv("on-n2", "5Gi", klass="local-static")
    static["spec"]["nodeAffinity"] = {
        "required": {
            "nodeSelectorTerms": [
                {
                    "matchExpressions": [
                        {"key": "kubernetes.io/hostname", "operator": "In", "values": ["n2"]}
                    ]
                }
            ]
        }
    }
    await client.create(PVS, static)
    await run_controller(PersistentVolumeBinder)
    await run_controller(
        LocalPathProvisioner, options=ControllerManagerOptions(local_storage_path="/srv/s")
    )
    config = await api_server.identity_config("system:kube-scheduler")
    scheduler = Scheduler(config, SchedulerOptions(leader_elect=False))
    ctx = _SchedulerCtx()
    await scheduler.start(ctx)
    try:
        await client.create(PVCS, _pvc("static", klass="local-static"), namespace=NS)
        await client.create(PVCS, _pvc("dynamic", klass=None), namespace=NS)
        await client.create(PODS, _claim_pod("uses-static", "static"), namespace=NS)
        await client.create(PODS, _claim_pod("uses-dynamic", "dynamic"), namespace=NS)

        async def node_of(pod: str) -> str | None:
            return (await client.get(PODS, pod, namespace=NS))["spec"].get("nodeName")

        assert await eventually(lambda: node_of("uses-static")) == "n2"
        await eventually(_bound_to(client, "static", "on-n2"))
        node = await eventually(lambda: node_of("uses-dynamic"))
        claim = await _claim(client, "dynamic")
        volume = await client.get(PVS, claim["spec"]["volumeName"])
        assert volume["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0][
            "matchExpressions"
        ][0]["values"] == [node]
        assert claim["metadata"]["annotations"]["volume.kubernetes.io/selected-node"] == node
        # A pod whose claim does not exist is unschedulable with upstream's message.
        await client.create(PODS, _claim_pod("no-claim", "absent"), namespace=NS)
        await eventually(_has_event(client, "no-claim", "FailedScheduling"))
        events = await _events(client, "no-claim")
        assert any('persistentvolumeclaim "absent" not found' in m for _, _, m in events)
    finally:
        await scheduler.stop()
    assert ctx.failures == []


async def test_many_claims_bind_one_to_one_with_the_managers_workers(
    client: Client, run_controller
) -> None:
    # The controller manager runs the binder with several workers: claims created in a burst
    # against as many equal volumes each get their own volume, none bound twice.
    options = ControllerManagerOptions()
    assert options.workers(PersistentVolumeBinder.name) == 2
    count = 12
    for i in range(count):
        await client.create(PVS, _pv(f"v{i}", "1Gi"))
    await run_controller(
        PersistentVolumeBinder, options, workers=options.workers(PersistentVolumeBinder.name)
    )
    for i in range(count):
        await client.create(PVCS, _pvc(f"c{i}"), namespace=NS)

    async def all_bound() -> list[dict[str, Any]] | None:
        claims = (await client.list(PVCS, namespace=NS))["items"]
        if sum(1 for c in claims if c["status"].get("phase") == "Bound") < count:
            return None
        return claims

    claims = await eventually(all_bound)
    names = [c["spec"]["volumeName"] for c in claims]
    assert sorted(names) == sorted(f"v{i}" for i in range(count))
    for claim in claims:
        pv = await client.get(PVS, claim["spec"]["volumeName"])
        assert pv["spec"]["claimRef"]["uid"] == claim["metadata"]["uid"]
        assert pv["status"]["phase"] == "Bound"
