"""The runtime as one agent component: containerd (or a given CRI socket), CRI, local images.

``ContainerRuntime.start()`` returns when the kubelet can run pods: CRI answers, the pause
image is imported and visible to CRI, and the archives already in ``<data-dir>/agent/images/``
are imported. A named background task then imports archives that appear later, and another
builds and imports the manager's cluster agent image (``agent_image``; a few seconds of work,
so not on the start path; skipped with a warning when Debian's ``python3`` is missing) when
the runtime lacks its content tag: unchanged inputs (by the sizes and modification times
recorded at the last build) and the tag present mean no build and no child process at all;
changed inputs mean a child that hashes them and builds only if the new content tag is
missing. That check runs at start and again after every restart of our containerd (a
containerd that died during the import lost it), one check at a time: a restart during a
check makes one more check follow it.

Invariants:

* with ``endpoint`` given (``--container-runtime-endpoint``) no containerd is started: that
  socket is used as it is, and images are still imported through it (it must be containerd
  for ``ctr`` to work; another runtime gets a warning and no local images);
* ``stop()`` stops the image watcher, closes the CRI channel and stops containerd, in that
  order; containers keep running (their shims are separate processes).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from pathlib import Path
from typing import Protocol

from sampan.kubelet.runtime import cri
from sampan.kubelet.runtime.agent_image import cluster_agent_image_ref, recorded_content_ref
from sampan.kubelet.runtime.containerd import Containerd, ContainerdConfig, ContainerdError
from sampan.kubelet.runtime.images import (
    IMAGE_DIR_POLL_INTERVAL_S,
    ImageImporter,
    ImageImportError,
    build_pause_archive,
)

__all__ = ["EXTERNAL_READY_TIMEOUT_S", "ContainerRuntime"]

log = logging.getLogger("sampan.kubelet.runtime")

EXTERNAL_READY_TIMEOUT_S = 30.0
"""How long a given ``--container-runtime-endpoint`` may take to answer ``Version``."""

_POLL_INTERVAL_S = 0.05
PAUSE_ARCHIVE_NAME = "sampan-pause.tar"
CLUSTER_AGENT_ARCHIVE_NAME = "sampan-cluster-agent.tar"
CLUSTER_AGENT_INPUTS_NAME = "sampan-cluster-agent.inputs.json"
IMPORT_INDEX_NAME = "sampan-imported-images.json"


class _FailureSink(Protocol):
    def fail(self, reason: str) -> None: ...


def _socket_path(endpoint: str) -> Path:
    return Path(cri.normalize_endpoint(endpoint).removeprefix("unix://"))


class ContainerRuntime:
    """The agent's container runtime component (``name``, ``start(ctx)``, ``stop()``)."""

    name = "containerd"

    def __init__(
        self,
        cfg: ContainerdConfig,
        *,
        endpoint: str = "",
        image_poll_interval_s: float = IMAGE_DIR_POLL_INTERVAL_S,
        cluster_agent_image: bool = True,
    ) -> None:
        self.cfg = cfg
        self.cluster_agent_image = cluster_agent_image
        self._agent_image: asyncio.Task[None] | None = None
        self._agent_image_wanted = asyncio.Event()
        self._agent_image_idle = asyncio.Event()
        self.external_endpoint = endpoint
        self.image_poll_interval_s = image_poll_interval_s
        self.containerd: Containerd | None = None
        self.connection: cri.CRIConnection | None = None
        self.importer: ImageImporter | None = None
        self._watcher: asyncio.Task[None] | None = None

    @property
    def endpoint(self) -> str:
        if self.external_endpoint:
            return cri.normalize_endpoint(self.external_endpoint)
        return self.cfg.endpoint

    @property
    def runtime(self) -> cri.RuntimeClient:
        assert self.connection is not None, "ContainerRuntime not started"
        return self.connection.runtime

    @property
    def images(self) -> cri.ImageClient:
        assert self.connection is not None, "ContainerRuntime not started"
        return self.connection.images

    async def start(self, ctx: _FailureSink | None = None) -> None:
        """Return once pods can run; on failure, leave nothing running behind."""
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        snapshotter: str | None = None
        if self.external_endpoint:
            self.connection = cri.connect(self.endpoint)
            await self._wait_external()
        else:
            self.containerd = Containerd(self.cfg, on_restart=self._check_agent_image_again)
            await self.containerd.start()
            snapshotter = self.containerd.cfg.snapshotter
            self.connection = cri.connect(self.endpoint)
        version = await self.runtime.version()
        log.info(
            "container runtime %s %s (CRI %s) on %s",
            version.runtime_name,
            version.runtime_version,
            version.runtime_api_version,
            self.endpoint,
        )
        self.importer = ImageImporter(
            address=_socket_path(self.endpoint),
            images=self.images,
            index_path=self.cfg.root_dir / IMPORT_INDEX_NAME,
            snapshotter=snapshotter,
        )
        try:
            await self._import_pause()
        except ImageImportError as exc:
            if not self.external_endpoint:
                raise
            log.warning("could not import the pause image into %s: %s", self.endpoint, exc)
        await self.importer.import_dir(self.cfg.images_dir)
        self._watcher = asyncio.create_task(
            self.importer.watch(self.cfg.images_dir, poll_interval_s=self.image_poll_interval_s),
            name="image-archive-watcher",
        )
        self._watcher.add_done_callback(_log_task_failure)
        if self.cluster_agent_image:
            self._agent_image_wanted.set()
            self._agent_image = asyncio.create_task(
                self._keep_cluster_agent_image(), name="cluster-agent-image"
            )
            self._agent_image.add_done_callback(_log_task_failure)

    async def _wait_external(self) -> None:
        deadline = time.monotonic() + EXTERNAL_READY_TIMEOUT_S
        while True:
            try:
                await self.runtime.version(timeout_s=1.0)
                return
            except cri.UnavailableError as exc:
                if time.monotonic() >= deadline:
                    raise ContainerdError(
                        f"container runtime at {self.endpoint} did not answer within "
                        f"{EXTERNAL_READY_TIMEOUT_S:g}s: {exc}"
                    ) from exc
                await asyncio.sleep(_POLL_INTERVAL_S)

    async def _import_pause(self) -> None:
        assert self.importer is not None
        archive = self.cfg.root_dir / PAUSE_ARCHIVE_NAME
        await asyncio.to_thread(build_pause_archive, archive, ref=self.cfg.sandbox_image)
        result = await self.importer.import_archive(archive)
        if self.cfg.sandbox_image not in result.refs:
            raise ImageImportError(
                f"the pause archive {archive} imported as {result.refs}, "
                f"not {self.cfg.sandbox_image}"
            )

    async def _agent_content_refs(self, version_ref: str) -> list[str]:
        """The content tags the runtime holds for the image ``version_ref`` names (those
        imported with it and still naming the same image)."""
        assert self.importer is not None
        image = await self.importer.images.image_status(version_ref)
        if image is None:
            return []
        return [tag for tag in image.repo_tags if tag.startswith(version_ref + "-")]

    def _check_agent_image_again(self) -> None:
        """Containerd restarted: an import it was doing is lost; check the image again."""
        self._agent_image_idle.clear()
        self._agent_image_wanted.set()

    async def _keep_cluster_agent_image(self) -> None:
        """Check the cluster agent image whenever wanted (at start, after each restart of
        containerd), one check at a time; ``_agent_image_idle`` is set while none is due."""
        while True:
            await self._agent_image_wanted.wait()
            self._agent_image_wanted.clear()
            self._agent_image_idle.clear()
            await self.ensure_cluster_agent_image()
            if not self._agent_image_wanted.is_set():
                self._agent_image_idle.set()

    async def ensure_cluster_agent_image(self) -> None:
        """Build the cluster agent image and import it, only when it is missing or stale
        (``agent_image``'s content tag); a failure is one warning: only clusters imported
        into a Sampan manager need the image."""
        assert self.importer is not None
        archive = self.cfg.root_dir / CLUSTER_AGENT_ARCHIVE_NAME
        inputs = self.cfg.root_dir / CLUSTER_AGENT_INPUTS_NAME
        try:
            present = await self._agent_content_refs(cluster_agent_image_ref())
            recorded = await asyncio.to_thread(recorded_content_ref, inputs)
            if recorded is not None and recorded in present:
                log.info("cluster agent image %s is up to date (no build)", recorded)
                return
            # In a child process: the build's memory never lands in the server's RSS.
            present_args = [arg for ref in present for arg in ("--present", ref)]
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "sampan.kubelet.runtime.agent_image",
                str(archive),
                "--inputs",
                str(inputs),
                *present_args,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            try:
                out, err = await proc.communicate()
            except asyncio.CancelledError:
                proc.kill()  # stopping: the archive is rebuilt at the next start
                await proc.wait()
                raise
            if proc.returncode != 0:
                detail = err.decode(errors="replace").strip().splitlines()
                raise ImageImportError(detail[-1] if detail else f"exit {proc.returncode}")
            outcome, _, ref = out.decode(errors="replace").strip().partition(" ")
            if outcome != "built":
                log.info("cluster agent image %s is up to date (inputs checked)", ref)
                return
            # Forced: the same archive may have been imported before and its version tag
            # moved since to another build (a development tree edited, then reverted).
            await self.importer.import_archive(archive, force=True)
        except (ImageImportError, cri.CRIError, OSError) as exc:
            log.warning("no cluster agent image (the manager's import manifest needs it): %s", exc)

    async def stop(self) -> None:
        """Stop watching, close CRI, stop containerd. Idempotent."""
        if self._agent_image is not None:
            self._agent_image.cancel()
            await asyncio.wait([self._agent_image])
            self._agent_image = None
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.wait([self._watcher])
            self._watcher = None
        if self.connection is not None:
            await self.connection.close()
            self.connection = None
        if self.containerd is not None:
            await self.containerd.stop()
            self.containerd = None


def _log_task_failure(task: asyncio.Task[None]) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.error("task %s failed: %r", task.get_name(), exc, exc_info=exc)
