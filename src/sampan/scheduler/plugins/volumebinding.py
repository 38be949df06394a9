"""VolumeBinding: PersistentVolumeClaims, for bound claims and WaitForFirstConsumer ones.

Enough of upstream's plugin for local storage (hostPath/local PVs, the local-path provisioner):

* PreFilter: every claim the pod uses must exist and not be terminating (else unresolvable
  ``persistentvolumeclaim "x" not found``); an unbound claim whose StorageClass binds
  Immediately rejects the pod ("pod has unbound immediate PersistentVolumeClaims") -- the PV
  controller binds those first. A pod without claims skips the plugin.
* Filter: a bound claim's PV ``nodeAffinity`` must match the node ("node(s) had volume node
  affinity conflict"); an unbound WaitForFirstConsumer claim needs an Available PV of its
  class that fits (size, access modes, node affinity) on the node, or a class with a real
  provisioner (dynamic provisioning) -- else "node(s) didn't find available persistent
  volumes to bind".
* PreBind (on the chosen node): static -> set the PV's ``claimRef``; dynamic -> annotate the
  claim ``volume.kubernetes.io/selected-node``; then wait (``bindTimeoutSeconds``) until every
  claim is bound, as upstream does.

Not done: CSI storage capacity, volume limits, topology of dynamically provisioned volumes
beyond the selected node.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

from sampan.client.api import PVCS, PVS, ClientError, PatchType
from sampan.scheduler.framework import (
    ERROR,
    EV_NODE_ADD,
    EV_NODE_UPDATE,
    EV_PV,
    EV_PVC,
    EV_STORAGE_CLASS,
    SKIP,
    UNSCHEDULABLE_AND_UNRESOLVABLE,
    CycleState,
    Handle,
    NodeInfo,
    Plugin,
    PodInfo,
    Status,
    match_node_selector_terms,
    resources_from,
)

__all__ = ["SELECTED_NODE_ANNOTATION", "VolumeBinding"]

SELECTED_NODE_ANNOTATION = "volume.kubernetes.io/selected-node"
BOUND_BY_CONTROLLER_ANNOTATION = "pv.kubernetes.io/bound-by-controller"
NO_PROVISIONER = "kubernetes.io/no-provisioner"
DEFAULT_BIND_TIMEOUT_S = 600.0
BIND_POLL_INTERVAL_S = 0.2
ERR_UNBOUND_IMMEDIATE = "pod has unbound immediate PersistentVolumeClaims"
ERR_NODE_CONFLICT = "node(s) had volume node affinity conflict"
ERR_NO_PV = "node(s) didn't find available persistent volumes to bind"


def _claim_names(pod: PodInfo) -> list[str]:
    names = []
    for v in pod.spec.get("volumes") or ():
        pvc = v.get("persistentVolumeClaim")
        if pvc and pvc.get("claimName"):
            names.append(pvc["claimName"])
        elif v.get("ephemeral"):
            names.append(f"{pod.name}-{v.get('name', '')}")
    return names


def _pv_matches_node(pv: Mapping[str, Any], node: NodeInfo) -> bool:
    required = ((pv.get("spec") or {}).get("nodeAffinity") or {}).get("required")
    if not required:
        return True
    return match_node_selector_terms(
        list(required.get("nodeSelectorTerms") or ()), node.labels, node.name
    )


def _storage_class(pvc: Mapping[str, Any]) -> str:
    return (pvc.get("spec") or {}).get("storageClassName") or ""


class VolumeBinding(Plugin):
    name = "VolumeBinding"
    events = frozenset({EV_PVC, EV_PV, EV_STORAGE_CLASS, EV_NODE_ADD, EV_NODE_UPDATE})
    args_keys = frozenset({"bindTimeoutSeconds", "shape"})

    def __init__(self, args: Mapping[str, Any], handle: Handle) -> None:
        super().__init__(args, handle)
        self.bind_timeout_s = float(args.get("bindTimeoutSeconds") or DEFAULT_BIND_TIMEOUT_S)

    def pre_filter(self, state: CycleState, pod: PodInfo) -> Status | None:
        names = _claim_names(pod)
        if not names:
            return Status(SKIP)
        bound: list[dict[str, Any]] = []
        delayed: list[dict[str, Any]] = []
        for name in names:
            pvc = self.handle.get("persistentvolumeclaims", f"{pod.namespace}/{name}")
            if pvc is None:
                return Status(
                    UNSCHEDULABLE_AND_UNRESOLVABLE, f'persistentvolumeclaim "{name}" not found'
                )
            if (pvc.get("metadata") or {}).get("deletionTimestamp"):
                return Status(
                    UNSCHEDULABLE_AND_UNRESOLVABLE,
                    f'persistentvolumeclaim "{name}" is being deleted',
                )
            volume_name = (pvc.get("spec") or {}).get("volumeName")
            if volume_name:
                pv = self.handle.get("persistentvolumes", volume_name)
                if pv is None:
                    return Status(
                        UNSCHEDULABLE_AND_UNRESOLVABLE,
                        f'pvc(s) bound to non-existent pv(s): "{volume_name}"',
                    )
                bound.append(pv)
                continue
            sc = self.handle.get("storageclasses", _storage_class(pvc))
            if sc is None or sc.get("volumeBindingMode") != "WaitForFirstConsumer":
                return Status(UNSCHEDULABLE_AND_UNRESOLVABLE, ERR_UNBOUND_IMMEDIATE)
            delayed.append(pvc)
        state[self.name] = {"bound": bound, "delayed": delayed, "by_node": {}}
        return None

    def _find_pv(
        self, pvc: Mapping[str, Any], node: NodeInfo, taken: set[str]
    ) -> dict[str, Any] | None:
        spec = pvc.get("spec") or {}
        want = resources_from(
            {
                "ephemeral-storage": ((spec.get("resources") or {}).get("requests") or {}).get(
                    "storage", 0
                )
            }
        ).ephemeral
        modes = set(spec.get("accessModes") or ())
        klass = _storage_class(pvc)
        best: dict[str, Any] | None = None
        best_size = 0
        for pv in self.handle.list("persistentvolumes"):
            pv_spec = pv.get("spec") or {}
            name = pv["metadata"]["name"]
            if name in taken or (pv.get("status") or {}).get("phase", "Available") != "Available":
                continue
            if pv_spec.get("claimRef") or (pv_spec.get("storageClassName") or "") != klass:
                continue
            if not modes <= set(pv_spec.get("accessModes") or ()):
                continue
            size = resources_from(
                {"ephemeral-storage": (pv_spec.get("capacity") or {}).get("storage", 0)}
            ).ephemeral
            if size < want or not _pv_matches_node(pv, node):
                continue
            if best is None or size < best_size:
                best, best_size = pv, size
        return best

    def filter(
        self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo], failed: dict[str, Status]
    ) -> list[NodeInfo]:
        s = state[self.name]
        out = []
        for n in nodes:
            if not all(_pv_matches_node(pv, n) for pv in s["bound"]):
                failed[n.name] = Status(
                    UNSCHEDULABLE_AND_UNRESOLVABLE, ERR_NODE_CONFLICT, plugin=self.name
                )
                continue
            plan = []
            taken: set[str] = set()
            ok = True
            for pvc in s["delayed"]:
                pv = self._find_pv(pvc, n, taken)
                if pv is not None:
                    taken.add(pv["metadata"]["name"])
                    plan.append((pvc, pv))
                    continue
                sc = self.handle.get("storageclasses", _storage_class(pvc)) or {}
                if sc.get("provisioner", NO_PROVISIONER) == NO_PROVISIONER:
                    ok = False
                    break
                plan.append((pvc, None))
            if not ok:
                failed[n.name] = Status(UNSCHEDULABLE_AND_UNRESOLVABLE, ERR_NO_PV, plugin=self.name)
                continue
            s["by_node"][n.name] = plan
            out.append(n)
        return out

    def reserve(self, state: CycleState, pod: PodInfo, node_name: str) -> Status | None:
        s = state.get(self.name)
        if s is not None:
            s["plan"] = s["by_node"].get(node_name, [])
        return None

    def unreserve(self, state: CycleState, pod: PodInfo, node_name: str) -> None:
        s = state.get(self.name)
        if s is not None:
            s.pop("plan", None)

    async def pre_bind(self, state: CycleState, pod: PodInfo, node_name: str) -> Status | None:
        s = state.get(self.name)
        plan = (s or {}).get("plan") or []
        if not plan:
            return None
        client = self.handle.client
        try:
            for pvc, pv in plan:
                meta = pvc["metadata"]
                if pv is not None:
                    claim_ref = {
                        "apiVersion": "v1",
                        "kind": "PersistentVolumeClaim",
                        "namespace": meta["namespace"],
                        "name": meta["name"],
                        "uid": meta.get("uid"),
                    }
                    # As upstream's binder (GetBindVolumeToClaim): the controller side chose
                    # this volume, so it is marked bound-by-controller.
                    await client.patch(
                        PVS,
                        pv["metadata"]["name"],
                        {
                            "metadata": {"annotations": {BOUND_BY_CONTROLLER_ANNOTATION: "yes"}},
                            "spec": {"claimRef": claim_ref},
                        },
                        patch_type=PatchType.MERGE,
                    )
                else:
                    await client.patch(
                        PVCS,
                        meta["name"],
                        {"metadata": {"annotations": {SELECTED_NODE_ANNOTATION: node_name}}},
                        namespace=meta["namespace"],
                        patch_type=PatchType.MERGE,
                    )
        except ClientError as e:
            return Status(ERROR, f"binding volumes: {e}")
        deadline = time.monotonic() + self.bind_timeout_s
        while True:
            pending = [
                pvc
                for pvc, _ in plan
                if not (
                    (
                        self.handle.get(
                            "persistentvolumeclaims",
                            f"{pvc['metadata']['namespace']}/{pvc['metadata']['name']}",
                        )
                        or {}
                    ).get("spec")
                    or {}
                ).get("volumeName")
            ]
            if not pending:
                return None
            if time.monotonic() > deadline:
                return Status(ERROR, "binding volumes: timed out waiting for the condition")
            await asyncio.sleep(BIND_POLL_INTERVAL_S)
