"""The scale subresource of custom resources: an ``autoscaling/v1`` Scale read from, and written
to, the JSON paths the CRD version names (``specReplicasPath``, ``statusReplicasPath``,
``labelSelectorPath``; simple dotted paths such as ``.spec.replicas``).

Invariant: ``set_replicas`` changes only the value at ``specReplicasPath`` (creating the
objects on the way), never anything else of the custom resource.
"""

from __future__ import annotations

from typing import Any

from sampan.apiserver.crd.model import ScalePaths

__all__ = ["scale_of", "set_replicas"]

JSONObj = dict[str, Any]


def _steps(path: str) -> list[str]:
    return [p for p in path.strip().lstrip(".").split(".") if p]


def _get(obj: Any, path: str) -> Any:
    for step in _steps(path):
        if not isinstance(obj, dict):
            return None
        obj = obj.get(step)
    return obj


def scale_of(paths: ScalePaths, obj: JSONObj) -> JSONObj:
    metadata = obj.get("metadata") or {}
    scale_meta = {
        k: metadata[k]
        for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
        if k in metadata
    }
    spec_replicas = _get(obj, paths.spec_replicas)
    status_replicas = _get(obj, paths.status_replicas)
    status: JSONObj = {
        "replicas": status_replicas if isinstance(status_replicas, int) else 0,
    }
    if paths.label_selector:
        selector = _get(obj, paths.label_selector)
        if isinstance(selector, str) and selector:
            status["selector"] = selector
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": scale_meta,
        "spec": {"replicas": spec_replicas if isinstance(spec_replicas, int) else 0},
        "status": status,
    }


def set_replicas(paths: ScalePaths, obj: JSONObj, replicas: int) -> JSONObj:
    steps = _steps(paths.spec_replicas)
    node: JSONObj = obj
    for step in steps[:-1]:
        child = node.get(step)
        if not isinstance(child, dict):
            child = node[step] = {}
        node = child
    if steps:
        node[steps[-1]] = replicas
    return obj
