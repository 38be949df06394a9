"""The local-path provisioner, node half: removes the directories of released volumes.

Component ``local-path`` of every agent. It watches PersistentVolumes (with the agent's
identity) and acts on a volume only when all of these hold:

* annotated ``pv.kubernetes.io/provisioned-by: rancher.io/local-path``;
* phase Released and reclaim policy Delete;
* its required node affinity names this node (``kubernetes.io/hostname In [<node>]``);
* its hostPath is a ``pvc-...`` directory directly inside this node's storage root once
  symlinks are resolved, with no ``..`` (``sampan.api.localpath.volume_dir``).

Then it removes the directory (``shutil.rmtree`` in a thread; it never follows symlinks out
of the tree) and deletes the volume with a uid precondition. A volume whose path is refused
gets a Warning ``VolumeFailedDelete`` event and is left alone (an administrator decides). The
directory is created by the kubelet when a pod first mounts the volume (``DirectoryOrCreate``).

Invariants: one reconcile per volume at a time (work queue); never touches a path outside the
storage root; a failure is retried with back-off; ``stop()`` leaves no task behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from pathlib import Path
from typing import Any

from sampan.api.localpath import PROVISIONER, UnsafePath, volume_dir, volume_node
from sampan.client import (
    ApiError,
    Client,
    ClientConfig,
    EventRecorder,
    NotFoundError,
    SharedInformerFactory,
)
from sampan.client.api import PVS
from sampan.client.events import TYPE_WARNING
from sampan.client.workqueue import QueueShutDown, WorkQueue

__all__ = ["COMPONENT_NAME", "LocalPathCleaner"]

log = logging.getLogger(__name__)

COMPONENT_NAME = "local-path"
ANN_PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"
EVENT_SOURCE = PROVISIONER


def _wanted(volume: dict[str, Any], node: str) -> bool:
    meta = volume.get("metadata") or {}
    spec = volume.get("spec") or {}
    return (
        (meta.get("annotations") or {}).get(ANN_PROVISIONED_BY) == PROVISIONER
        and (volume.get("status") or {}).get("phase") == "Released"
        and spec.get("persistentVolumeReclaimPolicy") == "Delete"
        and volume_node(volume) == node
    )


def _remove(directory: Path) -> bool:
    """Remove ``directory`` (a real directory, never a symlink); False if it was not there."""
    if not directory.exists():
        return False
    shutil.rmtree(directory)
    return True


class LocalPathCleaner:
    """Deletes released local-path volumes of this node; see the module docstring."""

    name = COMPONENT_NAME

    def __init__(
        self,
        client_config: ClientConfig,
        *,
        node_name: str,
        storage_root: Path,
        hostname: str | None = None,
    ) -> None:
        self.client_config = client_config
        self.node_name = node_name
        self.hostname = hostname or node_name
        self.storage_root = storage_root
        self._client: Client | None = None
        self._factory: SharedInformerFactory | None = None
        self._recorder: EventRecorder | None = None
        self._queue: WorkQueue[str] = WorkQueue("local-path")
        self._task: asyncio.Task[None] | None = None
        self.removed = 0
        """Directories removed (tests read it)."""

    async def start(self, ctx: Any = None) -> None:
        self._client = Client(self.client_config)
        self._recorder = EventRecorder(self._client, EVENT_SOURCE)
        self._factory = SharedInformerFactory(self._client)
        volumes = self._factory.informer(PVS)
        volumes.add_event_handler(
            on_add=self._enqueue, on_update=lambda _old, new: self._enqueue(new)
        )
        self._factory.start()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="local-path")

    async def stop(self) -> None:
        self._queue.shutdown()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._factory is not None:
            await self._factory.stop()
            self._factory = None
        if self._recorder is not None:
            await self._recorder.stop()
            self._recorder = None
        if self._client is not None:
            await self._client.close()
            self._client = None

    def _enqueue(self, volume: dict[str, Any]) -> None:
        if _wanted(volume, self.hostname):
            self._queue.add((volume.get("metadata") or {}).get("name", ""))

    async def _loop(self) -> None:
        while True:
            try:
                name = await self._queue.get()
            except QueueShutDown:
                return
            try:
                await self.reconcile(name)
            except asyncio.CancelledError:
                raise
            except ApiError as exc:
                log.warning("local-path: volume %s: %s; retrying", name, exc)
                self._queue.add_rate_limited(name)
            except Exception:
                log.exception("local-path: volume %s failed; retrying", name)
                self._queue.add_rate_limited(name)
            else:
                self._queue.forget(name)
            finally:
                self._queue.done(name)

    async def reconcile(self, name: str) -> None:
        assert self._factory is not None and self._client is not None
        volume = self._factory.informer(PVS).cache.get(name)
        if volume is None or not _wanted(volume, self.hostname):
            return
        path = ((volume.get("spec") or {}).get("hostPath") or {}).get("path") or ""
        try:
            directory = await asyncio.to_thread(volume_dir, self.storage_root, path)
        except UnsafePath as exc:
            log.warning("local-path: not deleting volume %s: %s", name, exc)
            if self._recorder is not None:
                self._recorder.event(
                    volume, TYPE_WARNING, "VolumeFailedDelete", f"refusing to delete: {exc}"
                )
            return
        removed = await asyncio.to_thread(_remove, directory)
        if removed:
            self.removed += 1
            log.info("local-path: removed %s of volume %s", directory, name)
        try:
            await self._client.delete(
                PVS, name, precondition_uid=(volume.get("metadata") or {}).get("uid")
            )
        except NotFoundError:
            return
