"""pods/binding: assigning a pod to a node.

Owns the write behind ``POST .../pods/<name>/binding``. Upstream's BindingREST writes the pod
straight through storage (no update strategy: spec.nodeName is otherwise immutable), sets
spec.nodeName, merges the binding's annotations, and marks the PodScheduled condition True.
The storage layer's ResourceStore has no such path yet, so this module does the
compare-and-swap itself against the datastore (read through the store, write with the
revision read; retry on a lost race). When ResourceStore grows a ``binding`` update, this
module shrinks to a call.

Invariants: a pod already bound, or being deleted, is never rebound (409); the write is a
CAS on the revision that was checked, so two racing binders cannot both win.
"""

from __future__ import annotations

import copy
from typing import Any

from sampan.api import times
from sampan.api.errors import Conflict, NotFound, ServiceUnavailable
from sampan.api.resources import storage_key
from sampan.apiserver.negotiation import dump_json

__all__ = ["BIND_RETRIES", "bind_pod"]

BIND_RETRIES = 5
"""CAS attempts before giving up with 409 (each retry re-reads the pod)."""


def _conflict(name: str, detail: str) -> Conflict:
    return Conflict(
        f'Operation cannot be fulfilled on pods/binding "{name}": {detail}',
        name=name,
        kind="pods/binding",
    )


def _assign(pod: dict[str, Any], name: str, node_name: str, annotations: dict[str, str]) -> None:
    metadata = pod.setdefault("metadata", {})
    if metadata.get("deletionTimestamp"):
        raise _conflict(name, f"pod {name} is being deleted, cannot be assigned to a host")
    spec = pod.setdefault("spec", {})
    bound = spec.get("nodeName")
    if bound:
        raise _conflict(name, f'pod {name} is already assigned to node "{bound}"')
    spec["nodeName"] = node_name
    if annotations:
        metadata["annotations"] = {**(metadata.get("annotations") or {}), **annotations}
    status = pod.setdefault("status", {})
    conditions = [c for c in status.get("conditions") or [] if c.get("type") != "PodScheduled"]
    now = times.now()
    conditions.append(
        {"type": "PodScheduled", "status": "True", "lastProbeTime": None, "lastTransitionTime": now}
    )
    status["conditions"] = conditions


async def bind_pod(
    store: Any,
    backend: Any,
    namespace: str,
    name: str,
    node_name: str,
    annotations: dict[str, str],
    *,
    dry_run: bool = False,
) -> dict[str, Any]:
    from sampan.datastore import ConflictError, KeyNotFoundError, StoreError

    key = storage_key(store.info, namespace, name)
    for _ in range(BIND_RETRIES):
        current = await store.get(namespace, name)
        revision = int(current["metadata"]["resourceVersion"])
        pod = copy.deepcopy(current)
        _assign(pod, name, node_name, annotations)
        if dry_run:
            return pod
        pod["metadata"].pop("resourceVersion", None)
        try:
            record = await backend.update(key, dump_json(pod), revision)
        except ConflictError:
            continue
        except KeyNotFoundError as exc:
            raise NotFound.for_object("pods", "", name) from exc
        except StoreError as exc:
            raise ServiceUnavailable(f"the datastore is unavailable: {type(exc).__name__}") from exc
        pod["metadata"]["resourceVersion"] = str(record.mod_revision)
        return pod
    raise _conflict(name, "the object has been modified; please try again")
