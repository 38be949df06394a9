"""Storage admission: DefaultStorageClass and StorageObjectInUseProtection (mutating).

* ``DefaultStorageClass`` fills ``spec.storageClassName`` of a new PersistentVolumeClaim that
  has none (the field absent, and no ``volume.beta.kubernetes.io/storage-class``) with the
  default StorageClass: the one annotated ``storageclass.kubernetes.io/is-default-class:
  "true"`` (or the beta key); with several defaults, the newest (then the first by name), as
  upstream since 1.26. ``storageClassName: ""`` is an explicit "no class" and is left alone.
* ``StorageObjectInUseProtection`` adds ``kubernetes.io/pvc-protection`` to every new claim and
  ``kubernetes.io/pv-protection`` to every new volume; the pvc-protection and pv-protection
  controllers remove them when nothing uses the object any more.

Both act on CREATE only, and only on the main resource (not on ``status``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sampan.apiserver.admission.chain import AdmissionAttributes

__all__ = [
    "DEFAULT_CLASS_ANNOTATION",
    "DEFAULT_CLASS_BETA_ANNOTATION",
    "DefaultStorageClass",
    "StorageObjectInUseProtection",
    "default_storage_class",
    "newest_default",
]

DEFAULT_CLASS_ANNOTATION = "storageclass.kubernetes.io/is-default-class"
DEFAULT_CLASS_BETA_ANNOTATION = "storageclass.beta.kubernetes.io/is-default-class"
BETA_CLASS_ANNOTATION = "volume.beta.kubernetes.io/storage-class"
PVC_PROTECTION_FINALIZER = "kubernetes.io/pvc-protection"
PV_PROTECTION_FINALIZER = "kubernetes.io/pv-protection"

ClassLister = Callable[[], list[dict[str, Any]]]


def newest_default(
    classes: list[dict[str, Any]], annotations: tuple[str, ...]
) -> dict[str, Any] | None:
    """The default class among ``classes`` (StorageClasses, IngressClasses): one of
    ``annotations`` is ``"true"``; with several defaults the newest creationTimestamp, then
    the first by name, as upstream since 1.26."""

    def is_default(klass: Mapping[str, Any]) -> bool:
        marks = (klass.get("metadata") or {}).get("annotations") or {}
        return any(marks.get(key) == "true" for key in annotations)

    defaults = sorted(
        (c for c in classes if is_default(c)),
        key=lambda c: (c.get("metadata") or {}).get("name") or "",
    )
    defaults.sort(
        key=lambda c: (c.get("metadata") or {}).get("creationTimestamp") or "", reverse=True
    )
    return defaults[0] if defaults else None


def default_storage_class(classes: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The default StorageClass among ``classes`` (the GA or the beta annotation)."""
    return newest_default(classes, (DEFAULT_CLASS_ANNOTATION, DEFAULT_CLASS_BETA_ANNOTATION))


class DefaultStorageClass:
    """Fills the default StorageClass into new claims that name none."""

    name = "DefaultStorageClass"
    mutating = True

    def __init__(self, list_classes: ClassLister) -> None:
        self._list_classes = list_classes

    async def admit(self, attrs: AdmissionAttributes) -> None:
        if attrs.operation != "CREATE" or not attrs.is_resource("", "persistentvolumeclaims"):
            return
        obj = attrs.obj
        if obj is None:
            return
        spec = obj.setdefault("spec", {})
        if spec.get("storageClassName") is not None:
            return
        annotations = (obj.get("metadata") or {}).get("annotations") or {}
        if BETA_CLASS_ANNOTATION in annotations:
            return
        klass = default_storage_class(self._list_classes())
        if klass is not None:
            spec["storageClassName"] = (klass.get("metadata") or {}).get("name")


class StorageObjectInUseProtection:
    """Adds the protection finalizers to new claims and volumes."""

    name = "StorageObjectInUseProtection"
    mutating = True

    async def admit(self, attrs: AdmissionAttributes) -> None:
        if attrs.operation != "CREATE" or attrs.obj is None:
            return
        if attrs.is_resource("", "persistentvolumeclaims"):
            finalizer = PVC_PROTECTION_FINALIZER
        elif attrs.is_resource("", "persistentvolumes"):
            finalizer = PV_PROTECTION_FINALIZER
        else:
            return
        metadata = attrs.obj.setdefault("metadata", {})
        finalizers = list(metadata.get("finalizers") or ())
        if finalizer not in finalizers:
            finalizers.append(finalizer)
            metadata["finalizers"] = finalizers
