"""Writing pod status to the API server: the kubelet's status manager.

``StatusManager`` is the one place the kubelet writes ``pods/status`` and deletes pod objects
(upstream's ``status.Manager``). Pod workers compute the status a pod should show
(``sampan.kubelet.status``) and hand it over with ``set_pod_status(pod, status)``; the manager

* compares it with the status the pod has (the informer's copy, or a newer one it wrote
  itself), ignoring transition and probe times, and writes nothing when nothing changed;
* writes the changed top-level fields as a merge patch on ``pods/status`` with the pod's uid
  as precondition (a pod deleted and re-created under the same name is never written);
* writes a static pod's status to its mirror pod (nothing when there is no mirror yet);
* remembers, per pod uid, the status it last wrote with the resourceVersion the API server
  answered, so ``latest(pod)`` shows a status the informer has not delivered yet (a worker
  never re-writes, or acts on, a status older than its own write);
* ``delete_pod_object(pod)`` deletes the API object with grace 0 once the pod's containers
  are gone after a graceful deletion (never static or mirror pods), and forgets the pod.

A write refused with 404 or 409 (pod gone or re-created) is dropped: the next sync reads the
pod again. Invariant: the cache holds only uids of pods that are not static.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from sampan.client import Client, ConflictError, NotFoundError
from sampan.client.api import PODS, InvalidError, PatchType
from sampan.kubelet.podutil import is_mirror_pod
from sampan.kubelet.status import status_patch

__all__ = ["StatusManager"]

log = logging.getLogger("sampan.kubelet.status")


class StatusManager:
    """See the module docstring. ``is_static(uid)`` tells static pods (from manifests) apart;
    ``mirror_of(pod)`` is a static pod's mirror pod in the API, if there is one yet."""

    def __init__(
        self,
        client: Client,
        *,
        is_static: Callable[[str], bool],
        mirror_of: Callable[[Mapping[str, Any]], Mapping[str, Any] | None],
    ) -> None:
        self._client = client
        self._is_static = is_static
        self._mirror_of = mirror_of
        self._written: dict[str, tuple[int, dict[str, Any]]] = {}

    def latest(self, pod: dict[str, Any]) -> dict[str, Any]:
        """``pod`` with the status this manager wrote last, when that write is newer than
        the pod's resourceVersion (the informer has not caught up yet)."""
        uid = (pod.get("metadata") or {}).get("uid", "")
        written = self._written.get(uid)
        rv = int((pod.get("metadata") or {}).get("resourceVersion") or 0)
        if written is not None and written[0] > rv:
            return {**pod, "status": written[1]}
        return pod

    async def set_pod_status(self, pod: Mapping[str, Any], status: Mapping[str, Any]) -> bool:
        """Write the fields of ``status`` that differ from the pod's (times aside); True when
        something differed (and was sent)."""
        changed = status_patch(_without_times(pod.get("status") or {}), _without_times(status))
        if not changed:
            return False
        # Only the fields that changed, but with their fresh transition times.
        await self._write(pod, {k: status[k] for k in changed})
        return True

    async def _write(self, pod: Mapping[str, Any], patch: dict[str, Any]) -> None:
        meta = pod.get("metadata") or {}
        uid = meta.get("uid", "")
        target_uid = uid
        static = self._is_static(uid)
        if static:
            mirror = self._mirror_of(pod)
            if mirror is None:
                return
            target_uid = mirror["metadata"]["uid"]
        body = {"metadata": {"uid": target_uid}, "status": patch}
        try:
            answer = await self._client.patch(
                PODS,
                meta.get("name", ""),
                body,
                namespace=meta.get("namespace"),
                subresource="status",
                patch_type=PatchType.MERGE,
            )
        except (NotFoundError, ConflictError) as exc:
            log.debug(
                "pod %s/%s status not written: %s", meta.get("namespace"), meta.get("name"), exc
            )
            return
        except InvalidError as exc:
            # The uid in the patch is another pod's: this one was deleted and re-created
            # under the same name (the API server refuses a uid change as immutable).
            causes = (exc.status.get("details") or {}).get("causes") or []
            if not any(c.get("field") == "metadata.uid" for c in causes):
                raise
            log.debug("pod %s/%s was re-created; status not written", *_ns_name(meta))
            return
        rv = int((answer.get("metadata") or {}).get("resourceVersion") or 0)
        if not static:
            self._written[uid] = (rv, answer.get("status") or {})

    async def delete_pod_object(self, pod: Mapping[str, Any]) -> None:
        """Delete the pod's API object with grace 0 (its containers are gone)."""
        meta = pod.get("metadata") or {}
        self.forget(meta.get("uid", ""))
        if self._is_static(meta.get("uid", "")) or is_mirror_pod(pod):
            return
        try:
            await self._client.delete(
                PODS,
                meta.get("name", ""),
                namespace=meta.get("namespace"),
                grace_period_s=0,
                precondition_uid=meta.get("uid"),
            )
        except (NotFoundError, ConflictError):
            pass

    def forget(self, uid: str) -> None:
        """Drop what is cached of a pod whose worker has finished with it."""
        self._written.pop(uid, None)


def _without_times(status: Mapping[str, Any]) -> dict[str, Any]:
    result = dict(status)
    if "conditions" in result:
        result["conditions"] = [
            {k: v for k, v in c.items() if k not in ("lastTransitionTime", "lastProbeTime")}
            for c in result["conditions"] or []
        ]
    return result


def _ns_name(meta: dict[str, Any]) -> tuple[str, str]:
    return meta.get("namespace", ""), meta.get("name", "")
