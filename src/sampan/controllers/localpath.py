"""The local-path provisioner, server half (K3s's ``rancher.io/local-path``).

Owns creating volumes for claims whose StorageClass names the provisioner
``rancher.io/local-path``. A claim is provisioned when the PersistentVolume controller has
handed it to this provisioner (annotation ``volume.kubernetes.io/storage-provisioner``) and the
scheduler chose its node (``volume.kubernetes.io/selected-node``; the packaged class binds
``WaitForFirstConsumer``). The volume:

* is named ``pvc-<claim uid>`` (so creating it twice is a harmless AlreadyExists);
* is a hostPath ``<storage root>/pvc-<uid>_<namespace>_<name>`` of type
  ``DirectoryOrCreate`` (the kubelet of that node creates the directory when it mounts it);
* has required node affinity ``kubernetes.io/hostname In [<node>]``, the claim's access modes,
  volume mode and requested capacity, the class's reclaim policy (Delete by default) and
  mount options, ``pv.kubernetes.io/provisioned-by: rancher.io/local-path``, and a
  ``claimRef`` with the claim's uid (pre-bound: the PersistentVolume controller binds it).

Events on the claim, from ``rancher.io/local-path``: ``Provisioning``,
``ProvisioningSucceeded``, ``ProvisioningFailed`` (Block volume mode, or no selected node).
Deleting the directory and the volume once it is Released is the node half's job
(``sampan.kubelet.localpath``): only the node holding the directory can remove it.

Runs as the controller "local-path-provisioner"; ``--disable=local-storage`` leaves it out.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sampan.api.localpath import HOSTNAME_LABEL, PROVISIONER, pv_name, volume_path
from sampan.client import AlreadyExistsError
from sampan.client.api import NODES, PVCS, PVS, STORAGECLASSES
from sampan.client.events import TYPE_NORMAL, TYPE_WARNING
from sampan.client.informer import object_key
from sampan.controllers.base import ControllerContext, QueueController

__all__ = ["LocalPathProvisioner"]

log = logging.getLogger(__name__)

ANN_STORAGE_PROVISIONER = "volume.kubernetes.io/storage-provisioner"
ANN_STORAGE_PROVISIONER_BETA = "volume.beta.kubernetes.io/storage-provisioner"
ANN_SELECTED_NODE = "volume.kubernetes.io/selected-node"
ANN_PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"

Obj = dict[str, Any]


def _meta(obj: Any) -> dict[str, Any]:
    return (obj or {}).get("metadata") or {}


class LocalPathProvisioner(QueueController):
    """Creates local-path volumes for claims; see the module docstring."""

    name = "local-path-provisioner"

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.client = ctx.client
        self.root = Path(ctx.options.local_storage_path)
        self.recorder = ctx.recorder(PROVISIONER)
        self.claims = self.watch(ctx.informers.informer(PVCS))
        self.volumes = self.watch(ctx.informers.informer(PVS))
        self.classes = self.watch(ctx.informers.informer(STORAGECLASSES))
        self.nodes = self.watch(ctx.informers.informer(NODES))
        self.claims.add_event_handler(
            on_add=self._claim_event, on_update=lambda old, new: self._claim_event(new)
        )

    def _claim_event(self, claim: Obj) -> None:
        annotations = _meta(claim).get("annotations") or {}
        if PROVISIONER in (
            annotations.get(ANN_STORAGE_PROVISIONER),
            annotations.get(ANN_STORAGE_PROVISIONER_BETA),
        ) and not (claim.get("spec") or {}).get("volumeName"):
            self.queue.add(object_key(claim))

    async def reconcile(self, key: str) -> None:
        claim = self.claims.cache.get(key)
        if claim is None or _meta(claim).get("deletionTimestamp"):
            return
        spec = claim.get("spec") or {}
        annotations = _meta(claim).get("annotations") or {}
        if spec.get("volumeName") or PROVISIONER not in (
            annotations.get(ANN_STORAGE_PROVISIONER),
            annotations.get(ANN_STORAGE_PROVISIONER_BETA),
        ):
            return
        name = pv_name(claim)
        if self.volumes.cache.get(name) is not None:
            return
        klass = self.classes.cache.get(spec.get("storageClassName") or "")
        if klass is None or klass.get("provisioner") != PROVISIONER:
            return
        node = annotations.get(ANN_SELECTED_NODE)
        if not node:
            if klass.get("volumeBindingMode") == "WaitForFirstConsumer":
                return  # the scheduler has not chosen a node yet
            self._failed(claim, klass, "configuration error, no node was specified")
            return
        if (spec.get("volumeMode") or "Filesystem") != "Filesystem":
            self._failed(claim, klass, f"volume mode {spec.get('volumeMode')} is not supported")
            return
        self.recorder.event(
            claim,
            TYPE_NORMAL,
            "Provisioning",
            f'External provisioner is provisioning volume for claim "{key}"',
        )
        node_obj = self.nodes.cache.get(node)
        hostname = ((_meta(node_obj).get("labels") or {}).get(HOSTNAME_LABEL)) or node
        storage = ((spec.get("resources") or {}).get("requests") or {}).get("storage") or "0"
        volume: Obj = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": name, "annotations": {ANN_PROVISIONED_BY: PROVISIONER}},
            "spec": {
                "capacity": {"storage": storage},
                "accessModes": list(spec.get("accessModes") or ["ReadWriteOnce"]),
                "persistentVolumeReclaimPolicy": klass.get("reclaimPolicy") or "Delete",
                "storageClassName": _meta(klass).get("name"),
                "volumeMode": "Filesystem",
                "hostPath": {"path": volume_path(self.root, claim), "type": "DirectoryOrCreate"},
                "nodeAffinity": {
                    "required": {
                        "nodeSelectorTerms": [
                            {
                                "matchExpressions": [
                                    {"key": HOSTNAME_LABEL, "operator": "In", "values": [hostname]}
                                ]
                            }
                        ]
                    }
                },
                "claimRef": {
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "namespace": _meta(claim).get("namespace"),
                    "name": _meta(claim).get("name"),
                    "uid": _meta(claim).get("uid"),
                    "resourceVersion": _meta(claim).get("resourceVersion"),
                },
            },
        }
        if klass.get("mountOptions"):
            volume["spec"]["mountOptions"] = list(klass["mountOptions"])
        try:
            await self.client.create(PVS, volume)
        except AlreadyExistsError:
            return
        log.info("provisioned %s for claim %s on node %s", name, key, node)
        self.recorder.event(
            claim, TYPE_NORMAL, "ProvisioningSucceeded", f"Successfully provisioned volume {name}"
        )

    def _failed(self, claim: Obj, klass: Obj, why: str) -> None:
        self.recorder.event(
            claim,
            TYPE_WARNING,
            "ProvisioningFailed",
            f'failed to provision volume with StorageClass "{_meta(klass).get("name")}": {why}',
        )
