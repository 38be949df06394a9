"""Static pods: manifests in ``<agent-dir>/pod-manifests/`` run without the API server.

``read_manifests`` turns every ``*.yaml``/``*.yml``/``*.json`` file there into a Pod dict as
upstream's file source does: name ``<name>-<node>``, namespace ``default`` unless given,
``spec.nodeName`` the node, the API's defaults applied, and a uid derived from the manifest
content and the node (so an unchanged manifest keeps its pod across kubelet restarts, and an
edited one replaces it). The annotations ``kubernetes.io/config.source: file`` and
``kubernetes.io/config.hash: <uid>`` mark it. ``mirror_pod`` builds the API object that shows
it (annotation ``kubernetes.io/config.mirror``, owned by the Node). Blocking file I/O: run
``read_manifests`` in a thread.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import yaml

from sampan.api.defaults import default_pod_spec
from sampan.kubelet.podutil import HASH_ANNOTATION, MIRROR_ANNOTATION, SOURCE_ANNOTATION

__all__ = ["MANIFEST_SUFFIXES", "mirror_pod", "read_manifests"]

log = logging.getLogger("sampan.kubelet.static")

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


def _static_uid(pod: dict[str, Any], node_name: str) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    digest.update(json.dumps(pod, sort_keys=True).encode())
    digest.update(node_name.encode())
    h = digest.hexdigest()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def read_manifests(directory: Path, node_name: str) -> dict[str, dict[str, Any]]:
    """uid -> static pod, for every valid manifest in ``directory``."""
    pods: dict[str, dict[str, Any]] = {}
    try:
        files = sorted(p for p in directory.iterdir() if p.suffix in MANIFEST_SUFFIXES)
    except FileNotFoundError:
        return pods
    for path in files:
        if path.name.startswith("."):
            continue
        try:
            docs = list(yaml.safe_load_all(path.read_text()))
        except (OSError, yaml.YAMLError) as exc:
            log.warning("static pod manifest %s: %s", path, exc)
            continue
        for doc in docs:
            if not isinstance(doc, dict) or doc.get("kind") != "Pod":
                if doc is not None:
                    log.warning("static pod manifest %s: not a Pod", path)
                continue
            pod = copy.deepcopy(doc)
            meta = pod.setdefault("metadata", {})
            if not meta.get("name"):
                log.warning("static pod manifest %s: no metadata.name", path)
                continue
            spec = pod.setdefault("spec", {})
            uid = _static_uid(pod, node_name)
            meta["name"] = f"{meta['name']}-{node_name}"
            meta["namespace"] = meta.get("namespace") or "default"
            meta["uid"] = uid
            annotations = meta.setdefault("annotations", {})
            annotations[SOURCE_ANNOTATION] = "file"
            annotations[HASH_ANNOTATION] = uid
            annotations["kubernetes.io/config.seen"] = "static"
            spec["nodeName"] = node_name
            default_pod_spec(spec)
            pod["apiVersion"] = "v1"
            pod["kind"] = "Pod"
            pod["status"] = {}
            pods[uid] = pod
    return pods


def mirror_pod(pod: dict[str, Any], node_uid: str, node_name: str) -> dict[str, Any]:
    mirror = copy.deepcopy(pod)
    meta = mirror["metadata"]
    meta.pop("uid", None)
    meta.pop("resourceVersion", None)
    meta["annotations"][MIRROR_ANNOTATION] = meta["annotations"][HASH_ANNOTATION]
    meta.pop("annotations", {}).pop("kubernetes.io/config.seen", None)
    meta["annotations"] = {
        **{
            k: v
            for k, v in (pod["metadata"].get("annotations") or {}).items()
            if k != "kubernetes.io/config.seen"
        },
        MIRROR_ANNOTATION: pod["metadata"]["annotations"][HASH_ANNOTATION],
    }
    if node_uid:
        meta["ownerReferences"] = [
            {
                "apiVersion": "v1",
                "kind": "Node",
                "name": node_name,
                "uid": node_uid,
                "controller": True,
            }
        ]
    mirror.pop("status", None)
    return mirror
