"""PersistentVolume binding and protection: kube-controller-manager's persistentvolume-binder,
pvc-protection and pv-protection controllers.

``PersistentVolumeBinder`` (upstream name "persistentvolume-binder") owns the two halves of a
binding and the phases:

* a **claim** (key ``pvc:<ns>/<name>``) without ``spec.volumeName`` gets the smallest Available
  volume that fits: same ``storageClassName``, every requested access mode, capacity at least
  the request, the same ``volumeMode``, labels matching ``spec.selector``; a volume pre-bound
  to it (``claimRef`` naming it, with no or its uid) wins. A claim whose class binds
  ``WaitForFirstConsumer`` only takes pre-bound volumes (the scheduler pre-binds one on the
  node it chose, or asks for provisioning with ``volume.kubernetes.io/selected-node``) and
  waits with a ``WaitForFirstConsumer`` event until then. With no volume: a class -> dynamic
  provisioning by the class's external provisioner (the claim is annotated
  ``volume.kubernetes.io/storage-provisioner`` and the legacy beta key; ``ExternalProvisioning``
  event); no class -> ``FailedBinding``. A claim naming a volume (``spec.volumeName``) binds to
  exactly that one if it fits (else ``VolumeMismatch``).
* binding writes the volume first (``claimRef`` with the claim's uid, ``bound-by-controller``
  when the controller chose it; phase Bound), then the claim (``volumeName``,
  ``bind-completed``, ``bound-by-controller`` when chosen; status Bound with the volume's
  capacity and access modes). Every step is idempotent, so a failure half-way is finished by
  the next sync.
* a **volume** (key ``pv:<name>``): no ``claimRef`` -> Available; its claim gone (or recreated
  with another uid) -> Released, then reclaimed: Retain keeps it Released until an
  administrator clears ``claimRef``; Delete of a dynamically provisioned volume is left to its
  provisioner (``pv.kubernetes.io/provisioned-by``); Delete or Recycle of any other volume has
  no plugin here -> Failed with a ``VolumeFailedDelete``/``VolumeFailedRecycle`` event.
* a claim created with no class at all gets the default StorageClass once one exists
  (upstream's retroactive default assignment; ``storageClassName: ""`` stays classless).
* a bound claim whose volume vanished or was given to another claim -> Lost (``ClaimLost``,
  ``ClaimMisbound``).

``PVCProtectionController`` and ``PVProtectionController`` (upstream "pvc-protection",
"pv-protection") remove the
finalizers the ``StorageObjectInUseProtection`` admission plugin adds: ``kubernetes.io/pvc-
protection`` from a deleted claim once no scheduled pod uses it (checked against the API,
not only the cache), ``kubernetes.io/pv-protection`` from a deleted volume once it is
not Bound.

Invariants: level-triggered (each sync reads the caches and writes what differs); objects from
caches are deep-copied before a write; a conflict re-queues the key.
"""

from __future__ import annotations

import copy
import functools
import logging
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from sampan.api.labels import SelectorError, selector_from_label_selector
from sampan.api.quantity import QuantityError, parse_quantity
from sampan.client import NotFoundError
from sampan.client.api import PODS, PVCS, PVS, STORAGECLASSES
from sampan.client.events import TYPE_NORMAL, TYPE_WARNING
from sampan.client.informer import object_key, split_key
from sampan.controllers.base import ControllerContext, QueueController

__all__ = [
    "ANN_BIND_COMPLETED",
    "ANN_BOUND_BY_CONTROLLER",
    "ANN_PROVISIONED_BY",
    "ANN_SELECTED_NODE",
    "ANN_STORAGE_PROVISIONER",
    "ANN_STORAGE_PROVISIONER_BETA",
    "PVC_PROTECTION_FINALIZER",
    "PV_PROTECTION_FINALIZER",
    "PVCProtectionController",
    "PVProtectionController",
    "PersistentVolumeBinder",
    "find_best_volume",
]

log = logging.getLogger(__name__)

EVENT_SOURCE = "persistentvolume-controller"
RESYNC_PERIOD_S = 15.0
"""Every claim is synced again this often (upstream's --pvclaimbinder-sync-period)."""
ANN_BIND_COMPLETED = "pv.kubernetes.io/bind-completed"
ANN_BOUND_BY_CONTROLLER = "pv.kubernetes.io/bound-by-controller"
ANN_PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"
ANN_SELECTED_NODE = "volume.kubernetes.io/selected-node"
ANN_STORAGE_PROVISIONER = "volume.kubernetes.io/storage-provisioner"
ANN_STORAGE_PROVISIONER_BETA = "volume.beta.kubernetes.io/storage-provisioner"
ANN_BETA_CLASS = "volume.beta.kubernetes.io/storage-class"
ANN_DEFAULT_CLASS = "storageclass.kubernetes.io/is-default-class"
ANN_DEFAULT_CLASS_BETA = "storageclass.beta.kubernetes.io/is-default-class"
PVC_PROTECTION_FINALIZER = "kubernetes.io/pvc-protection"
PV_PROTECTION_FINALIZER = "kubernetes.io/pv-protection"
YES = "yes"

MSG_WAIT_FIRST_CONSUMER = "waiting for first consumer to be created before binding"
MSG_NO_CLASS = "no persistent volumes available for this claim and no storage class is set"
MSG_CLAIM_LOST = "Bound claim has lost reference to PersistentVolume. Data on the volume is lost!"
MSG_CLAIM_MISBOUND = "Two claims are bound to the same volume, this one is bound incorrectly"
MSG_EXTERNAL = (
    "Waiting for a volume to be created either by the external provisioner '{}' or manually by "
    "the system administrator. If volume creation is delayed, please verify that the "
    "provisioner is running and correctly registered."
)

Obj = dict[str, Any]


def _meta(obj: Mapping[str, Any]) -> dict[str, Any]:
    return obj.get("metadata") or {}


def _spec(obj: Mapping[str, Any]) -> dict[str, Any]:
    return obj.get("spec") or {}


def _annotations(obj: Mapping[str, Any]) -> dict[str, str]:
    return _meta(obj).get("annotations") or {}


def _phase(obj: Mapping[str, Any]) -> str:
    return (obj.get("status") or {}).get("phase") or ""


def _storage(value: Any) -> Decimal:
    if value in (None, ""):
        return Decimal(0)
    if isinstance(value, str):
        return _parsed(value)
    try:
        return parse_quantity(value)
    except QuantityError:
        return Decimal(0)


@functools.lru_cache(maxsize=4096)
def _parsed(text: str) -> Decimal:
    """Quantities repeat (every volume of a pool has one of a few sizes): parse each once."""
    try:
        return parse_quantity(text)
    except QuantityError:
        return Decimal(0)


def claim_class(claim: Mapping[str, Any]) -> str:
    """The claim's class: the beta annotation wins, as upstream's GetPersistentVolumeClaimClass."""
    beta = _annotations(claim).get(ANN_BETA_CLASS)
    if beta is not None:
        return beta
    return _spec(claim).get("storageClassName") or ""


def volume_class(volume: Mapping[str, Any]) -> str:
    beta = _annotations(volume).get(ANN_BETA_CLASS)
    if beta is not None:
        return beta
    return _spec(volume).get("storageClassName") or ""


def _requested(claim: Mapping[str, Any]) -> Decimal:
    resources = _spec(claim).get("resources") or {}
    return _storage((resources.get("requests") or {}).get("storage"))


def _capacity(volume: Mapping[str, Any]) -> Decimal:
    return _storage((_spec(volume).get("capacity") or {}).get("storage"))


def _mode(obj: Mapping[str, Any]) -> str:
    return _spec(obj).get("volumeMode") or "Filesystem"


def mismatch(volume: Mapping[str, Any], claim: Mapping[str, Any]) -> str | None:
    """Why ``volume`` cannot satisfy ``claim`` (upstream checkVolumeSatisfyClaim), or None."""
    if _capacity(volume) < _requested(claim):
        return "requested PV is too small"
    if volume_class(volume) != claim_class(claim):
        return "storageClassName does not match"
    if _mode(volume) != _mode(claim):
        return "incompatible volumeMode"
    if not set(_spec(claim).get("accessModes") or ()) <= set(
        _spec(volume).get("accessModes") or ()
    ):
        return "incompatible accessMode"
    return None


def _prebound_to(volume: Mapping[str, Any], claim: Mapping[str, Any]) -> bool:
    ref = _spec(volume).get("claimRef")
    if not ref:
        return False
    meta = _meta(claim)
    if ref.get("name") != meta.get("name") or ref.get("namespace") != meta.get("namespace"):
        return False
    return not ref.get("uid") or ref.get("uid") == meta.get("uid")


def find_best_volume(
    volumes: list[Mapping[str, Any]],
    claim: Mapping[str, Any],
    *,
    delay_binding: bool,
    taken: Mapping[str, str] | None = None,
) -> Mapping[str, Any] | None:
    """The volume ``claim`` should bind to (upstream findMatchingVolume): a fitting volume
    pre-bound to the claim first, else the smallest fitting Available one (none in delayed
    binding: the scheduler picks those). Volumes being deleted or pre-bound elsewhere are
    skipped, and so are those in ``taken`` (volume name -> uid of the claim it is being bound
    to) for another claim; a claim selector must match the volume's labels."""
    try:
        selector = selector_from_label_selector(_spec(claim).get("selector") or {})
    except SelectorError:
        return None
    best: Mapping[str, Any] | None = None
    best_size = Decimal(0)
    claim_meta = _meta(claim)
    claim_uid = claim_meta.get("uid")
    want_size = _requested(claim)
    want_class = claim_class(claim)
    want_mode = _mode(claim)
    want_modes = set(_spec(claim).get("accessModes") or ())
    for volume in volumes:
        meta = _meta(volume)
        spec = _spec(volume)
        if meta.get("deletionTimestamp"):
            continue
        ref = spec.get("claimRef")
        if ref:
            # Only a volume pre-bound to this very claim is a candidate.
            if (
                ref.get("name") != claim_meta.get("name")
                or ref.get("namespace") != claim_meta.get("namespace")
                or (ref.get("uid") and ref.get("uid") != claim_uid)
            ):
                continue
        elif delay_binding:
            continue
        if taken and taken.get(meta.get("name", ""), claim_uid) != claim_uid:
            continue
        size = _capacity(volume)
        if (
            size < want_size
            or volume_class(volume) != want_class
            or _mode(volume) != want_mode
            or not want_modes <= set(spec.get("accessModes") or ())
        ):
            continue
        if ref:
            return volume
        if _phase(volume) not in ("Available", "Pending", ""):
            continue
        if not selector.matches(meta.get("labels")):
            continue
        if best is None or size < best_size:
            best, best_size = volume, size
    return best


def _claim_ref(claim: Mapping[str, Any]) -> dict[str, Any]:
    meta = _meta(claim)
    return {
        "kind": "PersistentVolumeClaim",
        "namespace": meta.get("namespace"),
        "name": meta.get("name"),
        "uid": meta.get("uid"),
        "apiVersion": "v1",
        "resourceVersion": meta.get("resourceVersion"),
    }


class PersistentVolumeBinder(QueueController):
    """Binds claims to volumes and keeps their phases; see the module docstring."""

    name = "persistentvolume-binder"

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.client = ctx.client
        self.recorder = ctx.recorder(EVENT_SOURCE)
        self.volumes = self.watch(ctx.informers.informer(PVS))
        self.claims = self.watch(ctx.informers.informer(PVCS))
        self.classes = self.watch(ctx.informers.informer(STORAGECLASSES))
        self.pods = self.watch(ctx.informers.informer(PODS))
        self.pods.add_event_handler(on_add=self._pod_added)
        self._taken: dict[str, str] = {}
        """Volume name -> claim uid while a binding of that volume is written and the cache
        has not shown it yet, so two workers never pick the same volume (upstream keeps an
        assume cache for the same reason)."""
        self.volumes.add_event_handler(
            on_add=self._volume_event,
            on_update=lambda old, new: self._volume_event(new),
            on_delete=self._volume_deleted,
        )
        self.claims.add_event_handler(
            on_add=self._claim_event,
            on_update=lambda old, new: self._claim_event(new),
            on_delete=self._claim_deleted,
            resync_period_s=RESYNC_PERIOD_S,
        )
        self.classes.add_event_handler(
            on_add=self._class_event, on_update=lambda old, new: self._class_event(new)
        )

    # -- handlers (enqueue only) -------------------------------------------------------------

    def _volume_event(self, volume: Obj) -> None:
        name = _meta(volume)["name"]
        self.queue.add(f"pv:{name}")
        ref = _spec(volume).get("claimRef") or {}
        if name in self._taken and ref.get("uid") == self._taken[name]:
            del self._taken[name]  # the cache caught up with our write
        if ref.get("name") and ref.get("namespace"):
            self.queue.add(f"pvc:{ref['namespace']}/{ref['name']}")
        elif not _meta(volume).get("deletionTimestamp"):
            # A free volume: claims still waiting may fit it now.
            for claim in self.claims.cache.list():
                if not _spec(claim).get("volumeName"):
                    self.queue.add(f"pvc:{object_key(claim)}")

    def _volume_deleted(self, volume: Obj) -> None:
        self._taken.pop(_meta(volume).get("name", ""), None)
        ref = _spec(volume).get("claimRef") or {}
        if ref.get("name") and ref.get("namespace"):
            self.queue.add(f"pvc:{ref['namespace']}/{ref['name']}")

    def _claim_event(self, claim: Obj) -> None:
        self.queue.add(f"pvc:{object_key(claim)}")
        volume_name = _spec(claim).get("volumeName")
        if volume_name:
            self.queue.add(f"pv:{volume_name}")

    def _claim_deleted(self, claim: Obj) -> None:
        volume_name = _spec(claim).get("volumeName")
        if volume_name:
            self.queue.add(f"pv:{volume_name}")
        for volume in self.volumes.cache.list():
            ref = _spec(volume).get("claimRef") or {}
            if ref.get("uid") and ref.get("uid") == _meta(claim).get("uid"):
                self.queue.add(f"pv:{_meta(volume)['name']}")

    def _pod_added(self, pod: Obj) -> None:
        # A new consumer of a waiting claim: its event changes to WaitForPodScheduled.
        if _spec(pod).get("nodeName"):
            return
        namespace = _meta(pod).get("namespace")
        for volume in _spec(pod).get("volumes") or ():
            name = (volume.get("persistentVolumeClaim") or {}).get("claimName")
            claim = self.claims.cache.get(f"{namespace}/{name}") if name else None
            if claim is not None and not _spec(claim).get("volumeName"):
                self.queue.add(f"pvc:{namespace}/{name}")

    def _class_event(self, klass: Obj) -> None:
        # A class that appears late lets pending claims of that class (or of no class at
        # all, when it is a default) go on.
        name = _meta(klass).get("name")
        for claim in self.claims.cache.list():
            if _spec(claim).get("volumeName"):
                continue
            if claim_class(claim) == name or _spec(claim).get("storageClassName") is None:
                self.queue.add(f"pvc:{object_key(claim)}")

    # -- reconcile ---------------------------------------------------------------------------

    async def reconcile(self, key: str) -> None:
        kind, _, rest = key.partition(":")
        if kind == "pv":
            volume = self.volumes.cache.get(rest)
            if volume is not None:
                await self.sync_volume(volume)
            return
        claim = self.claims.cache.get(rest)
        if claim is not None:
            await self.sync_claim(claim)

    async def sync_claim(self, claim: Obj) -> None:
        if _annotations(claim).get(ANN_BIND_COMPLETED) is None:
            await self._sync_unbound_claim(claim)
        else:
            await self._sync_bound_claim(claim)

    def _delay_binding(self, claim: Mapping[str, Any]) -> bool:
        name = claim_class(claim)
        if not name:
            return False
        klass = self.classes.cache.get(name)
        return (klass or {}).get("volumeBindingMode") == "WaitForFirstConsumer"

    def _default_class(self) -> str | None:
        defaults = [
            c
            for c in self.classes.cache.list()
            if "true"
            in (
                _annotations(c).get(ANN_DEFAULT_CLASS),
                _annotations(c).get(ANN_DEFAULT_CLASS_BETA),
            )
        ]
        if not defaults:
            return None
        # The newest default wins (then the first name), as the DefaultStorageClass plugin.
        defaults.sort(key=lambda c: _meta(c).get("name") or "")
        defaults.sort(key=lambda c: _meta(c).get("creationTimestamp") or "", reverse=True)
        return _meta(defaults[0]).get("name")

    async def _assign_default_class(self, claim: Obj) -> Obj:
        """Upstream's retroactive default StorageClass assignment: a claim created with no
        class at all (not ``""``) while no default existed gets the default once there is
        one."""
        if (
            _spec(claim).get("storageClassName") is not None
            or ANN_BETA_CLASS in _annotations(claim)
            or _spec(claim).get("volumeName")
        ):
            return claim
        name = self._default_class()
        if not name:
            return claim
        body = copy.deepcopy(claim)
        body.setdefault("spec", {})["storageClassName"] = name
        log.info("assigned default StorageClass %s to claim %s", name, object_key(claim))
        return await self.client.update(PVCS, body)

    async def _sync_unbound_claim(self, claim: Obj) -> None:
        claim = await self._assign_default_class(claim)
        volume_name = _spec(claim).get("volumeName")
        if not volume_name:
            delay = self._delay_binding(claim)
            volume = find_best_volume(
                self.volumes.cache.list(), claim, delay_binding=delay, taken=self._taken
            )
            if volume is not None:
                await self._bind_chosen(volume, claim)
                return
            if delay and not _annotations(claim).get(ANN_SELECTED_NODE):
                self._event_unbound_delayed(claim)
            elif claim_class(claim):
                await self._provision(claim)
            else:
                self.recorder.event(claim, TYPE_NORMAL, "FailedBinding", MSG_NO_CLASS)
            await self._claim_phase(claim, "Pending")
            return
        volume = self.volumes.cache.get(volume_name)
        if volume is None:
            await self._claim_phase(claim, "Pending")
            return
        ref = _spec(volume).get("claimRef")
        if not ref or _prebound_to(volume, claim):
            reason = mismatch(volume, claim)
            if reason is not None:
                self.recorder.event(
                    claim,
                    TYPE_WARNING,
                    "VolumeMismatch",
                    f'Cannot bind to requested volume "{volume_name}": {reason}',
                )
                await self._claim_phase(claim, "Pending")
                return
            await self._bind(volume, claim)
            return
        # The volume is bound to another claim: the user asked for a volume that is taken.
        self.recorder.event(
            claim,
            TYPE_WARNING,
            "FailedBinding",
            f'volume "{volume_name}" already bound to a different claim.',
        )
        await self._claim_phase(claim, "Pending")

    def _event_unbound_delayed(self, claim: Obj) -> None:
        """WaitForFirstConsumer, or WaitForPodScheduled naming the unscheduled pods that use
        the claim (upstream's emitEventForUnboundDelayBindingClaim)."""
        name = _meta(claim).get("name", "")
        pods = sorted(
            _meta(p).get("name", "")
            for p in self.pods.cache.by_index("namespace", _meta(claim).get("namespace") or "")
            if not _spec(p).get("nodeName") and _references_claim(p, name)
        )
        if not pods:
            self.recorder.event(claim, TYPE_NORMAL, "WaitForFirstConsumer", MSG_WAIT_FIRST_CONSUMER)
        elif len(pods) == 1:
            self.recorder.event(
                claim,
                TYPE_NORMAL,
                "WaitForPodScheduled",
                f"waiting for pod {pods[0]} to be scheduled",
            )
        else:
            self.recorder.event(
                claim,
                TYPE_NORMAL,
                "WaitForPodScheduled",
                f"waiting for pods {','.join(pods)} to be scheduled",
            )

    async def _sync_bound_claim(self, claim: Obj) -> None:
        volume_name = _spec(claim).get("volumeName")
        volume = self.volumes.cache.get(volume_name) if volume_name else None
        if volume is None:
            if _phase(claim) != "Lost":
                self.recorder.event(claim, TYPE_WARNING, "ClaimLost", MSG_CLAIM_LOST)
            await self._claim_phase(claim, "Lost")
            return
        ref = _spec(volume).get("claimRef")
        if not ref or _prebound_to(volume, claim):
            await self._bind(volume, claim)
            return
        if _phase(claim) != "Lost":
            self.recorder.event(claim, TYPE_WARNING, "ClaimMisbound", MSG_CLAIM_MISBOUND)
        await self._claim_phase(claim, "Lost")

    async def _provision(self, claim: Obj) -> None:
        name = claim_class(claim)
        klass = self.classes.cache.get(name)
        if klass is None:
            self.recorder.event(
                claim,
                TYPE_WARNING,
                "ProvisioningFailed",
                f'storageclass.storage.k8s.io "{name}" not found',
            )
            return
        provisioner = klass.get("provisioner") or ""
        annotations = _annotations(claim)
        if (
            annotations.get(ANN_STORAGE_PROVISIONER) != provisioner
            or annotations.get(ANN_STORAGE_PROVISIONER_BETA) != provisioner
        ):
            body = copy.deepcopy(claim)
            ann = body["metadata"].setdefault("annotations", {})
            ann[ANN_STORAGE_PROVISIONER] = provisioner
            ann[ANN_STORAGE_PROVISIONER_BETA] = provisioner
            claim = await self.client.update(PVCS, body)
        self.recorder.event(
            claim, TYPE_NORMAL, "ExternalProvisioning", MSG_EXTERNAL.format(provisioner)
        )

    async def _bind_chosen(self, volume: Mapping[str, Any], claim: Obj) -> None:
        """Bind a volume this controller chose: reserved in ``_taken`` from the choice (made
        without awaiting) until the cache shows the write, or released if it failed."""
        name = _meta(volume)["name"]
        uid = _meta(claim).get("uid", "")
        self._taken[name] = uid
        try:
            await self._bind(volume, claim)
        except BaseException:
            if self._taken.get(name) == uid:
                del self._taken[name]
            raise
        cached = self.volumes.cache.get(name)
        if cached is not None and (_spec(cached).get("claimRef") or {}).get("uid") == uid:
            self._taken.pop(name, None)

    async def _bind(self, volume: Mapping[str, Any], claim: Obj) -> None:
        """Volume first, then the claim; each write only when something differs."""
        pv = copy.deepcopy(volume)
        pv_spec = pv.setdefault("spec", {})
        ref = pv_spec.get("claimRef")
        claim_meta = _meta(claim)
        if not ref or ref.get("uid") != claim_meta.get("uid"):
            if not ref:
                pv["metadata"].setdefault("annotations", {})[ANN_BOUND_BY_CONTROLLER] = YES
            pv_spec["claimRef"] = _claim_ref(claim)
            pv = await self.client.update(PVS, pv)
            log.info("bound volume %s to claim %s", pv["metadata"]["name"], object_key(claim))
        if _phase(pv) != "Bound":
            pv.setdefault("status", {})
            pv["status"]["phase"] = "Bound"
            pv["status"].pop("reason", None)
            pv["status"].pop("message", None)
            pv = await self.client.update_status(PVS, pv)
        pvc = copy.deepcopy(claim)
        pvc_spec = pvc.setdefault("spec", {})
        ann = pvc["metadata"].setdefault("annotations", {})
        volume_name = pv["metadata"]["name"]
        if pvc_spec.get("volumeName") != volume_name or ann.get(ANN_BIND_COMPLETED) != YES:
            if pvc_spec.get("volumeName") != volume_name:
                ann[ANN_BOUND_BY_CONTROLLER] = YES
                pvc_spec["volumeName"] = volume_name
            ann[ANN_BIND_COMPLETED] = YES
            pvc = await self.client.update(PVCS, pvc)
        status = pvc.get("status") or {}
        capacity = (pv.get("spec") or {}).get("capacity") or {}
        modes = (pv.get("spec") or {}).get("accessModes") or []
        if (
            status.get("phase") != "Bound"
            or status.get("capacity") != capacity
            or status.get("accessModes") != modes
        ):
            pvc["status"] = {**status, "phase": "Bound", "capacity": capacity, "accessModes": modes}
            await self.client.update_status(PVCS, pvc)

    async def _claim_phase(self, claim: Obj, phase: str) -> None:
        if _phase(claim) == phase:
            return
        body = copy.deepcopy(claim)
        status = body.setdefault("status", {})
        status["phase"] = phase
        if phase != "Bound":
            status.pop("capacity", None)
            status.pop("accessModes", None)
        await self.client.update_status(PVCS, body)

    async def _volume_phase(self, volume: Mapping[str, Any], phase: str, message: str = "") -> Obj:
        if _phase(volume) == phase and (volume.get("status") or {}).get("message", "") == message:
            return dict(volume)
        body = copy.deepcopy(dict(volume))
        status = body.setdefault("status", {})
        status["phase"] = phase
        if message:
            status["message"] = message
        else:
            status.pop("message", None)
        status.pop("reason", None)
        return await self.client.update_status(PVS, body)

    async def sync_volume(self, volume: Obj) -> None:
        ref = _spec(volume).get("claimRef")
        if not ref:
            await self._volume_phase(volume, "Available")
            return
        claim = self.claims.cache.get(f"{ref.get('namespace')}/{ref.get('name')}")
        if claim is None and ref.get("uid"):
            # The cache may be behind a claim just created; ask the API server before
            # releasing a volume.
            try:
                claim = await self.client.get(PVCS, ref.get("name"), namespace=ref.get("namespace"))
            except NotFoundError:
                claim = None
        if claim is not None and ref.get("uid") and _meta(claim).get("uid") != ref.get("uid"):
            claim = None  # the claim was deleted and another made with the same name
        if claim is None:
            if not ref.get("uid"):
                await self._volume_phase(volume, "Available")
                return
            if _phase(volume) not in ("Released", "Failed"):
                volume = await self._volume_phase(volume, "Released")
            if _phase(volume) == "Released":
                await self._reclaim(volume)
            return
        claim_volume = _spec(claim).get("volumeName")
        if not claim_volume:
            # Pre-bound (by a user, the scheduler or a provisioner), or bound half-way: the
            # claim's sync finishes it; the volume's phase is left as it is meanwhile.
            self.queue.add(f"pvc:{object_key(claim)}")
            return
        if claim_volume == _meta(volume)["name"]:
            await self._volume_phase(volume, "Bound")
            return
        # The claim is bound to another volume.
        if (
            _annotations(volume).get(ANN_PROVISIONED_BY)
            and _spec(volume).get("persistentVolumeReclaimPolicy") == "Delete"
        ):
            if _phase(volume) not in ("Released", "Failed"):
                volume = await self._volume_phase(volume, "Released")
            await self._reclaim(volume)
        elif _annotations(volume).get(ANN_BOUND_BY_CONTROLLER):
            await self._unbind(volume)
        # else: a user bound it to a claim that went elsewhere; wait for the user.

    async def _unbind(self, volume: Obj) -> None:
        body = copy.deepcopy(volume)
        body["spec"].pop("claimRef", None)
        (body["metadata"].get("annotations") or {}).pop(ANN_BOUND_BY_CONTROLLER, None)
        body = await self.client.update(PVS, body)
        await self._volume_phase(body, "Available")

    async def _reclaim(self, volume: Obj) -> None:
        policy = _spec(volume).get("persistentVolumeReclaimPolicy") or "Retain"
        name = _meta(volume)["name"]
        if policy == "Retain":
            log.debug("volume %s released; reclaim policy Retain keeps it", name)
            return
        if policy == "Delete" and _annotations(volume).get(ANN_PROVISIONED_BY):
            log.debug(
                "volume %s released; its provisioner %s deletes it",
                name,
                _annotations(volume)[ANN_PROVISIONED_BY],
            )
            return
        if policy == "Delete":
            message = (
                f'error getting deleter volume plugin for volume "{name}": '
                "no deletable volume plugin matched"
            )
            self.recorder.event(volume, TYPE_WARNING, "VolumeFailedDelete", message)
        else:
            message = "No recycler plugin found for the volume!"
            self.recorder.event(volume, TYPE_WARNING, "VolumeFailedRecycle", message)
        await self._volume_phase(volume, "Failed", message)


def _references_claim(pod: Mapping[str, Any], claim_name: str) -> bool:
    pod_name = _meta(pod).get("name")
    for volume in _spec(pod).get("volumes") or ():
        if (volume.get("persistentVolumeClaim") or {}).get("claimName") == claim_name:
            return True
        if volume.get("ephemeral") is not None and f"{pod_name}-{volume.get('name')}" == claim_name:
            return True
    return False


def _pod_uses_claim(pod: Mapping[str, Any], claim_name: str) -> bool:
    """Upstream's rule: only a scheduled pod counts (the kubelet refuses to start a pod whose
    claim is being deleted); a claim of a generic ephemeral volume stops counting once its
    pod is shut down."""
    if not _spec(pod).get("nodeName"):
        return False
    meta = _meta(pod)
    shut_down = bool(meta.get("deletionTimestamp")) and meta.get("deletionGracePeriodSeconds") == 0
    for volume in _spec(pod).get("volumes") or ():
        source = volume.get("persistentVolumeClaim") or {}
        if source.get("claimName") == claim_name:
            return True
        if (
            volume.get("ephemeral") is not None
            and not shut_down
            and f"{meta.get('name')}-{volume.get('name')}" == claim_name
        ):
            return True
    return False


class PVCProtectionController(QueueController):
    """Removes ``kubernetes.io/pvc-protection`` from a deleted claim no live pod uses."""

    name = "pvc-protection"

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.client = ctx.client
        self.claims = self.watch(ctx.informers.informer(PVCS))
        self.pods = self.watch(ctx.informers.informer(PODS))
        self.claims.add_event_handler(
            on_add=self._claim_event, on_update=lambda old, new: self._claim_event(new)
        )
        self.pods.add_event_handler(
            on_update=lambda old, new: self._pod_event(new), on_delete=self._pod_event
        )

    def _claim_event(self, claim: Obj) -> None:
        if _meta(claim).get("deletionTimestamp"):
            self.queue.add(object_key(claim))

    def _pod_event(self, pod: Obj) -> None:
        namespace = _meta(pod).get("namespace")
        for volume in _spec(pod).get("volumes") or ():
            source = volume.get("persistentVolumeClaim") or {}
            name = source.get("claimName") or (
                f"{_meta(pod).get('name')}-{volume.get('name')}" if volume.get("ephemeral") else ""
            )
            if name:
                claim = self.claims.cache.get(f"{namespace}/{name}")
                if claim is not None and _meta(claim).get("deletionTimestamp"):
                    self.queue.add(f"{namespace}/{name}")

    async def reconcile(self, key: str) -> None:
        claim = self.claims.cache.get(key)
        if claim is None or not _meta(claim).get("deletionTimestamp"):
            return
        if PVC_PROTECTION_FINALIZER not in (_meta(claim).get("finalizers") or ()):
            return
        namespace, name = split_key(key)
        if any(
            _pod_uses_claim(p, name) for p in self.pods.cache.by_index("namespace", namespace or "")
        ):
            return
        # The cache may miss a pod just created: ask the API server too (upstream does).
        listing = await self.client.list(PODS, namespace=namespace)
        if any(_pod_uses_claim(p, name) for p in listing.get("items") or ()):
            return
        await _drop_finalizer(self.client, PVCS, claim, PVC_PROTECTION_FINALIZER)


class PVProtectionController(QueueController):
    """Removes ``kubernetes.io/pv-protection`` from a deleted volume that is not Bound."""

    name = "pv-protection"

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.client = ctx.client
        self.volumes = self.watch(ctx.informers.informer(PVS))
        self.volumes.add_event_handler(
            on_add=self._volume_event, on_update=lambda old, new: self._volume_event(new)
        )

    def _volume_event(self, volume: Obj) -> None:
        if _meta(volume).get("deletionTimestamp"):
            self.queue.add(_meta(volume)["name"])

    async def reconcile(self, key: str) -> None:
        volume = self.volumes.cache.get(key)
        if volume is None or not _meta(volume).get("deletionTimestamp"):
            return
        if _phase(volume) == "Bound":
            return
        await _drop_finalizer(self.client, PVS, volume, PV_PROTECTION_FINALIZER)


async def _drop_finalizer(client: Any, resource: Any, obj: Obj, finalizer: str) -> None:
    finalizers = list(_meta(obj).get("finalizers") or ())
    if finalizer not in finalizers:
        return
    body = copy.deepcopy(obj)
    body["metadata"]["finalizers"] = [f for f in finalizers if f != finalizer]
    try:
        await client.update(resource, body)
    except NotFoundError:
        return
    log.debug("removed %s from %s", finalizer, _meta(obj).get("name"))
