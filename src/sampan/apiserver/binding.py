"""pods/binding: assigning a pod to a node.

Owns the write behind ``POST .../pods/<name>/binding``. Upstream's BindingREST writes the pod
straight through storage (no update strategy: spec.nodeName is otherwise immutable), sets
spec.nodeName, merges the binding's annotations, and marks the PodScheduled condition True.
The write goes through the store's ``guaranteed_update`` with ``subresource="binding"``,
which stores the pod as mutated here (system metadata kept, no strategy).

Invariants: a pod already bound, or being deleted, is never rebound (409); the write is a
CAS on the revision that was checked, so two racing binders cannot both win.
"""

from __future__ import annotations

from typing import Any

from sampan.api import times
from sampan.api.errors import Conflict

__all__ = ["bind_pod"]


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
    namespace: str,
    name: str,
    node_name: str,
    annotations: dict[str, str],
    *,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Bind the pod through the store's compare-and-swap (``subresource="binding"``: no
    update strategy, as upstream's BindingREST); a lost race re-reads and re-checks."""

    def assign(pod: dict[str, Any]) -> dict[str, Any]:
        _assign(pod, name, node_name, annotations)
        pod.get("metadata", {}).pop("resourceVersion", None)
        return pod

    bound: dict[str, Any] = await store.guaranteed_update(
        namespace, name, assign, subresource="binding", dry_run=dry_run
    )
    return bound
