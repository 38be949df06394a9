"""Container log rotation, as the kubelet's container log manager does.

Every ``LOG_ROTATE_INTERVAL_S`` each running container's CRI log file is checked; one larger
than ``container-log-max-size`` (10Mi) is renamed to ``<log>.<UTC timestamp>`` and the
runtime is asked to reopen it (``ReopenContainerLog``); if that fails the rename is undone.
At most ``container-log-max-files`` (5) files per container are kept, the live one included:
older rotated files are deleted. File work runs in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from pathlib import Path

from sampan.kubelet.runtime import cri, pb

__all__ = [
    "DEFAULT_LOG_MAX_FILES",
    "DEFAULT_LOG_MAX_SIZE_BYTES",
    "LOG_ROTATE_INTERVAL_S",
    "LogRotator",
]

log = logging.getLogger("sampan.kubelet.logrotate")

DEFAULT_LOG_MAX_SIZE_BYTES = 10 * 1024 * 1024
DEFAULT_LOG_MAX_FILES = 5
LOG_ROTATE_INTERVAL_S = 10.0


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _rotated_files(path: str) -> list[Path]:
    live = Path(path)
    with contextlib.suppress(OSError):
        return sorted(p for p in live.parent.iterdir() if p.name.startswith(live.name + "."))
    return []


def _prune(path: str, max_files: int) -> None:
    rotated = _rotated_files(path)
    for old in rotated[: max(0, len(rotated) - (max_files - 1))]:
        with contextlib.suppress(OSError):
            old.unlink()


class LogRotator:
    """Rotates the logs of the running containers of one runtime."""

    def __init__(
        self,
        runtime: cri.RuntimeClient,
        *,
        max_size_bytes: int = DEFAULT_LOG_MAX_SIZE_BYTES,
        max_files: int = DEFAULT_LOG_MAX_FILES,
    ) -> None:
        self.runtime = runtime
        self.max_size_bytes = max_size_bytes
        self.max_files = max(2, max_files)
        self._paths: dict[str, str] = {}  # container id -> log path

    async def rotate_once(self) -> int:
        """Check every running container; returns how many logs were rotated."""
        running = await self.runtime.list_containers(
            pb.ContainerFilter(
                state=pb.ContainerStateValue(state=pb.ContainerState.CONTAINER_RUNNING)
            )
        )
        live_ids = {c.id for c in running}
        for cid in list(self._paths):
            if cid not in live_ids:
                del self._paths[cid]
        rotated = 0
        for container in running:
            path = self._paths.get(container.id)
            if path is None:
                try:
                    path = (await self.runtime.container_status(container.id)).status.log_path
                except cri.NotFoundError:
                    continue
                self._paths[container.id] = path
            if not path:
                continue
            if await asyncio.to_thread(_size, path) <= self.max_size_bytes:
                continue
            if await self._rotate(container.id, path):
                rotated += 1
        return rotated

    async def _rotate(self, cid: str, path: str) -> bool:
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        target = f"{path}.{stamp}"
        try:
            await asyncio.to_thread(os.rename, path, target)
        except OSError as exc:
            log.warning("log rotation of %s: %s", path, exc)
            return False
        try:
            await self.runtime.reopen_container_log(cid)
        except cri.CRIError as exc:
            log.warning("log rotation of %s: reopen failed, undoing: %s", path, exc)
            with contextlib.suppress(OSError):
                await asyncio.to_thread(os.rename, target, path)
            return False
        await asyncio.to_thread(_prune, path, self.max_files)
        return True
