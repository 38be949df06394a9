"""What a pod refers to by name: the Secrets and ConfigMaps of its spec.

Shared by the API server (the Node authorizer's graph, NodeRestriction admission) and the
kubelet (which watches exactly these objects), like upstream's VisitPodSecretNames and
VisitPodConfigmapNames over all containers (init, app and ephemeral): image pull secrets,
``envFrom`` and ``env[].valueFrom`` references, and the volumes (``secret``, ``configMap``,
``projected`` sources, and the Secret references of the in-tree volume plugins and CSI).
Pure functions over the pod JSON; malformed parts are skipped.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["dicts_of", "dig", "pod_configmap_names", "pod_secret_names", "str_of"]


def dicts_of(value: Any) -> Iterator[dict[str, Any]]:
    """The dict items of a JSON list (nothing for anything else)."""
    if isinstance(value, list):
        for item in value:
            if isinstance(item, dict):
                yield item


def dig(obj: Any, *keys: str) -> Any:
    """``obj[k1][k2]...``, or None where a level is missing or not an object."""
    for key in keys:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def str_of(value: Any) -> str:
    """A JSON string value, or "" for anything else."""
    return value if isinstance(value, str) else ""


def _containers(spec: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    for key in ("initContainers", "containers", "ephemeralContainers"):
        yield from dicts_of(spec.get(key))


# Volume sources whose ``secretRef.name`` names a Secret in the pod's namespace.
_SECRET_REF_VOLUMES = ("cephfs", "cinder", "flexVolume", "rbd", "scaleIO", "iscsi", "storageos")


def pod_secret_names(pod: Mapping[str, Any]) -> set[str]:
    """Every Secret a pod refers to (upstream's VisitPodSecretNames, all containers)."""
    spec = pod.get("spec") if isinstance(pod.get("spec"), dict) else {}
    assert isinstance(spec, dict)
    names = {str_of(ref.get("name")) for ref in dicts_of(spec.get("imagePullSecrets"))}
    for container in _containers(spec):
        for source in dicts_of(container.get("envFrom")):
            names.add(str_of(dig(source, "secretRef", "name")))
        for env in dicts_of(container.get("env")):
            names.add(str_of(dig(env, "valueFrom", "secretKeyRef", "name")))
    for volume in dicts_of(spec.get("volumes")):
        names.add(str_of(dig(volume, "secret", "secretName")))
        names.add(str_of(dig(volume, "azureFile", "secretName")))
        names.add(str_of(dig(volume, "csi", "nodePublishSecretRef", "name")))
        for source_key in _SECRET_REF_VOLUMES:
            names.add(str_of(dig(volume, source_key, "secretRef", "name")))
        for projected in dicts_of(dig(volume, "projected", "sources")):
            names.add(str_of(dig(projected, "secret", "name")))
    names.discard("")
    return names


def pod_configmap_names(pod: Mapping[str, Any]) -> set[str]:
    """Every ConfigMap a pod refers to (upstream's VisitPodConfigmapNames, all containers)."""
    spec = pod.get("spec") if isinstance(pod.get("spec"), dict) else {}
    assert isinstance(spec, dict)
    names: set[str] = set()
    for container in _containers(spec):
        for source in dicts_of(container.get("envFrom")):
            names.add(str_of(dig(source, "configMapRef", "name")))
        for env in dicts_of(container.get("env")):
            names.add(str_of(dig(env, "valueFrom", "configMapKeyRef", "name")))
    for volume in dicts_of(spec.get("volumes")):
        names.add(str_of(dig(volume, "configMap", "name")))
        for projected in dicts_of(dig(volume, "projected", "sources")):
            names.add(str_of(dig(projected, "configMap", "name")))
    names.discard("")
    return names
