"""One worker per pod: make the runtime match the pod, then report the pod's status.

``PodWorker`` owns one pod (by uid) for as long as the kubelet has anything of it: a named
task that re-syncs whenever it is woken (informer event, PLEG change, probe verdict, a
backoff expiring) or every ``sync_frequency_s``. A sync is level-triggered and idempotent:

1. pod gone, being deleted, or unknown (an orphan from before a restart): stop containers
   (preStop, SIGTERM, SIGKILL after the grace period), stop and remove the sandbox, tear down
   volumes and the pod cgroup, delete the API object with grace 0; the worker then ends;
2. otherwise: pod cgroup with its limits, volumes, sandbox (a new one if it is not ready),
   init containers one at a time, then app containers, each started with its image pulled,
   its env and mounts, restarted as ``restartPolicy`` says with upstream's backoff (10 s
   doubling to 5 min, reset after 10 min of running); liveness failures kill the container;
3. status (phase, conditions, IPs, container statuses) handed to the status manager
   (``sampan.kubelet.statusmanager``), which writes ``pods/status`` only when a field changed.

What the runtime holds is read back from CRI at every sync (labels carry the pod uid and the
container name; annotations the restart count and the spec hash), so containers created by a
previous kubelet are adopted, never duplicated. Failures of one pod stay in its worker.

A worker uses nothing of the kubelet but its ``PodWorkerHost`` (``sampan.kubelet.workerhost``):
the CRI services, volume/probe/cgroup/source managers, the status manager, the event recorder,
the clock it reads all time from, and the node's options and facts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sampan.api import times
from sampan.api.strictfields import FieldTypeError
from sampan.kubelet import specs
from sampan.kubelet.cgroups import PodCgroupLimits, pod_cgroup_parent
from sampan.kubelet.credentials import pull_credentials
from sampan.kubelet.env import ConfigError, build_env, expand_args
from sampan.kubelet.podutil import (
    CFS_PERIOD_US,
    cpu_quota_us,
    cpu_shares,
    pod_log_dir,
    pod_resource_totals,
    qos_class,
)
from sampan.kubelet.probes import ProbeTarget, run_action
from sampan.kubelet.runtime import cri, pb
from sampan.kubelet.status import (
    ContainerFacts,
    container_status,
    pod_phase,
    rfc3339,
    with_conditions,
)
from sampan.kubelet.volumes import VolumeError

if TYPE_CHECKING:
    from sampan.kubelet.workerhost import PodWorkerHost

__all__ = ["BACKOFF_RESET_S", "PodWorker"]

log = logging.getLogger("sampan.kubelet.pods")

BACKOFF_RESET_S = 600.0
"""A container that ran this long before exiting restarts with the initial backoff again."""
DEFAULT_GRACE_PERIOD_S = 30
MAX_TERMINATION_MESSAGE_BYTES = 4096
FALLBACK_LOG_LINES = 80
FALLBACK_LOG_BYTES = 2048
RETRY_AFTER_ERROR_S = 2.0
VOLUME_RETRY_S = 2.0
HOOK_TIMEOUT_S = 30.0
DEADLINE_MESSAGE = "Pod was active on the node longer than the specified deadline"
_TERMINAL = ("Succeeded", "Failed")
_STATE_NAMES = {
    pb.ContainerState.CONTAINER_CREATED: "created",
    pb.ContainerState.CONTAINER_RUNNING: "running",
    pb.ContainerState.CONTAINER_EXITED: "exited",
    pb.ContainerState.CONTAINER_UNKNOWN: "unknown",
}


@dataclass
class _Backoff:
    delay_s: float
    until_s: float  # the host clock's monotonic time


class _Wait(Exception):
    """This sync cannot go further now; re-sync after ``delay_s`` (or when woken)."""

    def __init__(self, delay_s: float | None = None) -> None:
        super().__init__()
        self.delay_s = delay_s


def _ref(pod: Mapping[str, Any], container: str | None = None, init: bool | None = None) -> dict:
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    if init is None:
        inits = spec.get("initContainers") or []
        init = any(c.get("name") == container for c in inits)
    ephemeral = not init and any(
        c.get("name") == container for c in spec.get("ephemeralContainers") or []
    )
    ref = {
        "kind": "Pod",
        "apiVersion": "v1",
        "namespace": meta.get("namespace"),
        "name": meta.get("name"),
        "uid": meta.get("uid"),
    }
    if container:
        kind = "initContainers" if init else "ephemeralContainers" if ephemeral else "containers"
        ref["fieldPath"] = f"spec.{kind}{{{container}}}"
    return ref


def grace_period_s(pod: Mapping[str, Any] | None) -> int:
    if pod is None:
        return DEFAULT_GRACE_PERIOD_S
    meta = pod.get("metadata") or {}
    grace = meta.get("deletionGracePeriodSeconds")
    if meta.get("deletionTimestamp") and isinstance(grace, int):
        return max(0, grace)
    spec_grace = (pod.get("spec") or {}).get("terminationGracePeriodSeconds")
    return spec_grace if isinstance(spec_grace, int) else DEFAULT_GRACE_PERIOD_S


class PodWorker:
    """Keeps one pod's containers as the pod says (see the module docstring)."""

    def __init__(self, uid: str, host: PodWorkerHost) -> None:
        self.host = host
        self.uid = uid
        self.wake_event = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.waiting: dict[str, tuple[str, str]] = {}
        self.crash_backoff: dict[str, _Backoff] = {}
        self.pull_backoff: dict[str, _Backoff] = {}
        self.last_pod: dict[str, Any] | None = None
        self.pod_ips: list[str] = []
        self.sandbox_id = ""
        self.sandbox_config: pb.PodSandboxConfig | None = None
        self.terminated = False
        self._exited_cache: dict[str, pb.ContainerStatus] = {}
        self._events_sent: set[tuple[str, str, str]] = set()
        self._reported_status: dict[str, Any] | None = None
        self._stopping = False
        self.first_sync_done = asyncio.Event()
        self.first_seen_s = host.clock.monotonic()
        """When this kubelet first saw the pod (``kubelet_pod_start_duration_seconds``)."""
        self._start_observed = False

    # -- life --------------------------------------------------------------------------------

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=f"pod-worker-{self.uid}")
        self.task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            log.error("pod worker %s failed: %r", self.uid, exc, exc_info=exc)
        self.host.worker_done(self)

    def wake(self) -> None:
        self.wake_event.set()

    async def stop(self) -> None:
        """Stop the worker only (containers keep running)."""
        self._stopping = True
        if self.task is not None:
            self.task.cancel()
            await asyncio.wait([self.task])

    async def _run(self) -> None:
        delay_s: float | None = 0.0
        while True:
            if delay_s is None or delay_s > 0:
                try:
                    async with asyncio.timeout(delay_s):
                        await self.wake_event.wait()
                except TimeoutError:
                    pass
            self.wake_event.clear()
            delay_s = await self.sync_once()
            if self.terminated:
                return
            if delay_s is None:
                delay_s = self.host.options.args.sync_frequency_s

    async def sync_once(self) -> float | None:
        """One pass of the worker's task: read the pod, then terminate it (gone or being
        deleted: ``terminated`` is set once everything is cleaned up) or sync it. Returns
        seconds until the next pass (None: the periodic resync); failures are logged here."""
        pod = self.host.desired_pod(self.uid)
        if pod is not None:
            self.last_pod = pod
        try:
            if pod is None or (pod.get("metadata") or {}).get("deletionTimestamp"):
                await self.terminate(pod)
                return None
            return await self.sync(pod)
        except _Wait as wait:
            return wait.delay_s
        except cri.UnavailableError as exc:
            log.warning("pod %s: container runtime unavailable: %s", self.name, exc)
            return RETRY_AFTER_ERROR_S
        except Exception:
            log.exception("pod %s: sync failed", self.name)
            return RETRY_AFTER_ERROR_S
        finally:
            self.first_sync_done.set()

    @property
    def name(self) -> str:
        meta = (self.last_pod or {}).get("metadata") or {}
        if meta:
            return f"{meta.get('namespace')}/{meta.get('name')}"
        return self.uid

    def _event_once(
        self,
        pod: Mapping[str, Any],
        container: str | None,
        event_type: str,
        reason: str,
        message: str,
        *,
        unique: str = "",
    ) -> None:
        """Record an event once per (container, reason, unique) for this worker's life."""
        key = (container or "", reason, unique or message)
        if key in self._events_sent:
            return
        self._events_sent.add(key)
        self.host.recorder.event(_ref(pod, container), event_type, reason, message)

    # -- CRI facts ---------------------------------------------------------------------------

    async def _sandboxes(self) -> list[pb.PodSandbox]:
        items = await self.host.runtime.list_pod_sandbox(
            pb.PodSandboxFilter(label_selector={specs.LABEL_POD_UID: self.uid})
        )
        return sorted(items, key=lambda s: s.created_at)

    async def _containers(self) -> list[pb.Container]:
        items = await self.host.runtime.list_containers(
            pb.ContainerFilter(label_selector={specs.LABEL_POD_UID: self.uid})
        )
        return sorted(items, key=lambda c: (c.metadata.attempt, c.created_at))

    async def _status(self, container: pb.Container) -> pb.ContainerStatus | None:
        cached = self._exited_cache.get(container.id)
        if cached is not None:
            return cached
        try:
            status = (await self.host.runtime.container_status(container.id)).status
        except cri.NotFoundError:
            return None
        if status.state == pb.ContainerState.CONTAINER_EXITED:
            self._exited_cache[container.id] = status
        return status

    # -- sync ------------------------------------------------------------------------------

    async def sync(self, pod: dict[str, Any]) -> float | None:
        """One pass; returns when to sync again (None: the periodic resync)."""
        status = pod.get("status") or {}
        reported_phase = (self._reported_status or {}).get("phase")
        if status.get("phase") in _TERMINAL or reported_phase in _TERMINAL:
            # Finished (maybe under a previous kubelet): nothing runs again, no new sandbox.
            await self._kill_all(pod, grace_period_s(pod), remove=False)
            return None
        try:
            specs.check_pod(pod)
        except FieldTypeError as exc:
            await self._refuse_spec(pod, exc)
        deadline_wait_s = self._active_deadline_wait_s(pod)
        if deadline_wait_s is not None and deadline_wait_s <= 0:
            self.host.recorder.event(_ref(pod), "Normal", "DeadlineExceeded", DEADLINE_MESSAGE)
            await self._kill_all(pod, grace_period_s(pod), remove=False)
            await self._report(
                pod,
                await self._containers(),
                sandbox_ready=False,
                failed=("DeadlineExceeded", DEADLINE_MESSAGE),
            )
            return None
        host_network = specs.pod_security(pod).host_network
        if not host_network and not self.host.network_ready():
            await self._report(pod, await self._containers(), sandbox_ready=False)
            raise _Wait(None)
        qos = qos_class(pod)
        cgroup = pod_cgroup_parent(self.host.options.cgroup_root, qos, self.uid)
        await self._ensure_cgroup(pod, cgroup)
        await self.host.sources.prepare(self.uid, pod)  # its Secrets and ConfigMaps, watched
        try:
            volumes = await self.host.volumes.setup(pod, self.host.allocatable)
        except VolumeError as exc:
            self._event_once(
                pod, None, "Warning", "FailedMount", f"MountVolume.SetUp failed: {exc}"
            )
            await self._report(pod, await self._containers(), sandbox_ready=False)
            raise _Wait(VOLUME_RETRY_S) from exc
        self._events_sent = {e for e in self._events_sent if e[1] != "FailedMount"}
        sandbox_id = await self._ensure_sandbox(pod, cgroup)
        containers = await self._containers()
        try:
            next_s = await self._sync_containers(pod, qos, volumes, sandbox_id, containers)
        except _Wait:
            await self._report(pod, await self._containers(), sandbox_ready=True)
            raise
        containers = await self._containers()
        phase = await self._report(pod, containers, sandbox_ready=True)
        if phase in ("Succeeded", "Failed"):
            await self._kill_all(pod, grace_period_s(pod), remove=False)
            return None
        if deadline_wait_s is not None:
            next_s = deadline_wait_s if next_s is None else min(next_s, deadline_wait_s)
        return next_s

    async def _refuse_spec(self, pod: dict[str, Any], exc: FieldTypeError) -> None:
        """A security-relevant field has the wrong type: nothing of the pod may run (what an
        older reading may have started is stopped); every container waits with
        CreateContainerConfigError and the reason, and the pod is looked at again at the
        periodic resync. Raises ``_Wait``."""
        message = f"invalid pod spec: {exc}"
        self._event_once(pod, None, "Warning", "Failed", f"Error: {message}")
        log.warning("pod %s: not started: %s", self.name, message)
        await self._kill_all(pod, grace_period_s(pod), remove=False)
        spec = pod.get("spec") or {}
        for key in ("initContainers", "containers"):
            items = spec.get(key)
            for container in items if isinstance(items, list) else []:
                if isinstance(container, dict):
                    name = str(container.get("name", ""))
                    self.waiting[name] = ("CreateContainerConfigError", message)
        await self._report(pod, await self._containers(), sandbox_ready=False)
        raise _Wait(None)

    def _active_deadline_wait_s(self, pod: Mapping[str, Any]) -> float | None:
        """Seconds left before ``activeDeadlineSeconds`` runs out (None: no deadline)."""
        deadline = (pod.get("spec") or {}).get("activeDeadlineSeconds")
        started = (pod.get("status") or {}).get("startTime")
        if not isinstance(deadline, int) or not started:
            return None
        start = times.parse(started)
        if start is None:
            return None
        return deadline - (self.host.clock.now() - start).total_seconds()

    async def _ensure_cgroup(self, pod: Mapping[str, Any], cgroup: str) -> None:
        req_cpu, lim_cpu, lim_mem = pod_resource_totals(pod)
        pids = self.host.options.args.pod_max_pids
        limits = PodCgroupLimits(
            cpu_shares=cpu_shares(req_cpu),
            cpu_quota_us=cpu_quota_us(lim_cpu),
            cpu_period_us=CFS_PERIOD_US,
            memory_limit_bytes=lim_mem,
            pids_limit=pids if pids > 0 else None,
        )
        await asyncio.to_thread(self.host.cgroups.ensure, cgroup, limits)

    def _log_dir(self, pod: Mapping[str, Any]) -> Path:
        return pod_log_dir(self.host.options.pod_logs_dir, pod)

    async def _ensure_sandbox(self, pod: dict[str, Any], cgroup: str) -> str:
        sandboxes = await self._sandboxes()
        ready = [s for s in sandboxes if s.state == pb.PodSandboxState.SANDBOX_READY]
        attempt = (sandboxes[-1].metadata.attempt + 1) if sandboxes else 0
        grace = grace_period_s(pod)
        config = specs.sandbox_config(
            pod,
            attempt=attempt,
            log_directory=self._log_dir(pod),
            cgroup_parent=cgroup,
            dns=self.host.dns_settings,
            grace_period_s=grace,
        )
        if ready:
            current = ready[-1]
            if current.id != self.sandbox_id or not self.pod_ips:
                status = await self.host.runtime.pod_sandbox_status(current.id)
                self.pod_ips = _sandbox_ips(status.status)
                self.sandbox_id = current.id
                # The config the sandbox was created with (the attempt number is its own).
                config.metadata.attempt = current.metadata.attempt
                self.sandbox_config = config
            for stale in ready[:-1]:
                await self._remove_sandbox(stale.id)
            if self.sandbox_config is None:
                config.metadata.attempt = current.metadata.attempt
                self.sandbox_config = config
            return current.id
        # No ready sandbox: (re)create it. Containers of a dead sandbox are stopped first.
        if sandboxes:
            self._event_once(
                pod,
                None,
                "Normal",
                "SandboxChanged",
                "Pod sandbox changed, it will be killed and re-created.",
                unique=str(attempt),
            )
            for container in await self._containers():
                if container.state == pb.ContainerState.CONTAINER_RUNNING:
                    await self._stop_container(pod, container, grace)
            for sandbox in sandboxes:
                with contextlib.suppress(cri.NotFoundError):
                    await self.host.runtime.stop_pod_sandbox(sandbox.id)
        await asyncio.to_thread(self._log_dir(pod).mkdir, parents=True, exist_ok=True)
        try:
            async with self.host.sandbox_slots:
                sandbox_id = await self.host.runtime.run_pod_sandbox(config)
        except cri.CRIError as exc:
            self.host.recorder.event(
                _ref(pod),
                "Warning",
                "FailedCreatePodSandBox",
                f"Failed to create pod sandbox: {exc}",
            )
            raise _Wait(RETRY_AFTER_ERROR_S) from exc
        status = await self.host.runtime.pod_sandbox_status(sandbox_id)
        self.pod_ips = _sandbox_ips(status.status)
        self.sandbox_id = sandbox_id
        self.sandbox_config = config
        if not specs.pod_security(pod).host_network:
            await asyncio.to_thread(self._write_hosts, pod)
        return sandbox_id

    def _hosts_path(self) -> Path:
        return self.host.volumes.pod_dir(self.uid) / "etc-hosts"

    def _write_hosts(self, pod: Mapping[str, Any]) -> None:
        spec = pod.get("spec") or {}
        hostname = specs.pod_hostname(pod)
        lines = [
            "# Kubernetes-managed hosts file.",
            "127.0.0.1\tlocalhost",
            "::1\tlocalhost ip6-localhost ip6-loopback",
            "fe00::0\tip6-localnet",
            "fe00::0\tip6-mcastprefix",
            "fe00::1\tip6-allnodes",
            "fe00::2\tip6-allrouters",
        ]
        subdomain = spec.get("subdomain")
        namespace = (pod.get("metadata") or {}).get("namespace", "default")
        for ip in self.pod_ips:
            if subdomain:
                domain = self.host.options.effective_cluster_domain
                fqdn = f"{hostname}.{subdomain}.{namespace}.svc.{domain}"
                lines.append(f"{ip}\t{fqdn}\t{hostname}")
            else:
                lines.append(f"{ip}\t{hostname}")
        for alias in spec.get("hostAliases") or []:
            lines.append(
                f"\n# Entries added by HostAliases.\n{alias.get('ip')}\t"
                + "\t".join(alias.get("hostnames") or [])
            )
        path = self._hosts_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text("\n".join(lines) + "\n")
        os.replace(tmp, path)

    async def _remove_sandbox(self, sandbox_id: str) -> None:
        with contextlib.suppress(cri.NotFoundError):
            await self.host.runtime.stop_pod_sandbox(sandbox_id)
        with contextlib.suppress(cri.NotFoundError):
            await self.host.runtime.remove_pod_sandbox(sandbox_id)

    # -- containers --------------------------------------------------------------------------

    async def _sync_containers(
        self,
        pod: dict[str, Any],
        qos: str,
        volumes: Mapping[str, Any],
        sandbox_id: str,
        containers: list[pb.Container],
    ) -> float | None:
        spec = pod.get("spec") or {}
        policy = spec.get("restartPolicy") or "Always"
        latest: dict[str, pb.Container] = {}
        for container in containers:
            if container.pod_sandbox_id != sandbox_id:
                continue
            latest[container.metadata.name] = container  # sorted by attempt: last wins
        previous_attempts = _last_attempts(containers)
        wake_in: list[float] = []
        ephemeral_wait = await self._sync_ephemeral(
            pod, qos, volumes, sandbox_id, latest, previous_attempts
        )
        if ephemeral_wait is not None:
            wake_in.append(ephemeral_wait)
        # Init containers, in order; sidecars (restartPolicy Always) keep running.
        for init in spec.get("initContainers") or []:
            name = init.get("name", "")
            sidecar = init.get("restartPolicy") == "Always"
            current = latest.get(name)
            if current is not None and current.state == pb.ContainerState.CONTAINER_EXITED:
                status = await self._status(current)
                exit_code = status.exit_code if status else 1
                if not sidecar and exit_code == 0:
                    continue
                if not sidecar and policy == "Never":
                    return None  # the pod has failed; status says so
                delay = self._restart_delay(pod, name, status)
                if delay is not None:
                    wake_in.append(delay)
                    return min(wake_in)
                await self._start(
                    pod,
                    init,
                    qos,
                    volumes,
                    sandbox_id,
                    previous_attempts.get(name, -1) + 1,
                    init=True,
                )
                return None
            if current is None:
                await self._start(
                    pod,
                    init,
                    qos,
                    volumes,
                    sandbox_id,
                    previous_attempts.get(name, -1) + 1,
                    init=True,
                )
                if not sidecar:
                    return None
                continue
            if current.state == pb.ContainerState.CONTAINER_CREATED:
                await self._remove_container(current)
                return 0.0
            if current.state == pb.ContainerState.CONTAINER_RUNNING:
                await self._check_running(pod, init, current, sandbox_id)
                if not sidecar:
                    return None  # wait for it to finish
                if not self.host.probes.started(current.id):
                    return None
        for app in spec.get("containers") or []:
            try:
                delay = await self._sync_app_container(
                    pod, app, qos, volumes, sandbox_id, latest, previous_attempts, policy
                )
            except _Wait as wait:
                delay = wait.delay_s
            if delay is not None:
                wake_in.append(delay)
        # Probes of containers that are gone.
        live = {c.id for c in containers if c.state == pb.ContainerState.CONTAINER_RUNNING}
        for cid in self.host.probes.containers_of(self.uid):
            if cid not in live:
                await self.host.probes.forget(cid)
        return min(wake_in) if wake_in else None

    async def _sync_ephemeral(
        self,
        pod: dict[str, Any],
        qos: str,
        volumes: Mapping[str, Any],
        sandbox_id: str,
        latest: Mapping[str, pb.Container],
        previous_attempts: Mapping[str, int],
    ) -> float | None:
        """Start each ephemeral container once; never restarted, never probed. One with a
        ``targetContainerName`` joins that container's PID namespace, so it waits for the
        target to run."""
        wake_in: list[float] = []
        for container in (pod.get("spec") or {}).get("ephemeralContainers") or []:
            name = container.get("name", "")
            if name in latest or name in previous_attempts:
                continue  # started once (maybe in an earlier sandbox): it stays as it ended
            target_id = ""
            target = container.get("targetContainerName") or ""
            if target:
                running = latest.get(target)
                if running is None or running.state != pb.ContainerState.CONTAINER_RUNNING:
                    self.waiting[name] = (
                        "ContainerCreating",
                        f"target container {target!r} is not running",
                    )
                    wake_in.append(RETRY_AFTER_ERROR_S)
                    continue
                target_id = running.id
            try:
                await self._start(pod, container, qos, volumes, sandbox_id, 0, target_id=target_id)
            except _Wait as wait:
                if wait.delay_s is not None:
                    wake_in.append(wait.delay_s)
        return min(wake_in) if wake_in else None

    async def _sync_app_container(
        self,
        pod: dict[str, Any],
        app: Mapping[str, Any],
        qos: str,
        volumes: Mapping[str, Any],
        sandbox_id: str,
        latest: Mapping[str, pb.Container],
        previous_attempts: Mapping[str, int],
        policy: str,
    ) -> float | None:
        """Start, check or restart one app container; seconds until it needs a look again."""
        name = app.get("name", "")
        current = latest.get(name)
        if current is None:
            await self._start(
                pod, app, qos, volumes, sandbox_id, previous_attempts.get(name, -1) + 1
            )
            return None
        if current.state == pb.ContainerState.CONTAINER_RUNNING:
            await self._check_running(pod, app, current, sandbox_id)
            return None
        if current.state == pb.ContainerState.CONTAINER_CREATED:
            await self._remove_container(current)
            await self._start(
                pod, app, qos, volumes, sandbox_id, previous_attempts.get(name, -1) + 1
            )
            return None
        await self.host.probes.forget(current.id)
        status = await self._status(current)
        exit_code = status.exit_code if status else 1
        if policy == "Never" or (policy == "OnFailure" and exit_code == 0):
            return None
        delay = self._restart_delay(pod, name, status)
        if delay is not None:
            return delay
        await self._start(pod, app, qos, volumes, sandbox_id, current.metadata.attempt + 1)
        return None

    def _restart_delay(
        self, pod: Mapping[str, Any], name: str, status: pb.ContainerStatus | None
    ) -> float | None:
        """None: restart now (and lengthen the backoff); else seconds to wait, meanwhile
        waiting in CrashLoopBackOff. Upstream: the first restart is immediate, then 10 s,
        20 s ... up to 5 min; a run of 10 min resets it."""
        now = self.host.clock.monotonic()
        backoff = self.crash_backoff.get(name)
        ran_s = 0.0
        if status is not None and status.finished_at and status.started_at:
            ran_s = (status.finished_at - status.started_at) / 1e9
        if backoff is not None and ran_s >= BACKOFF_RESET_S:
            backoff = None
        if backoff is None or now >= backoff.until_s:
            if backoff is None:
                delay = self.host.options.crash_backoff_initial_s
            else:
                delay = min(backoff.delay_s * 2, self.host.options.crash_backoff_max_s)
            self.crash_backoff[name] = _Backoff(delay, now + delay)
            return None
        remaining = backoff.until_s - now
        meta = pod.get("metadata") or {}
        self.waiting[name] = (
            "CrashLoopBackOff",
            f"back-off {_fmt_s(backoff.delay_s)} restarting failed container={name} "
            f"pod={meta.get('name')}_{meta.get('namespace')}({self.uid})",
        )
        self._event_once(
            pod,
            name,
            "Warning",
            "BackOff",
            f"Back-off restarting failed container {name} in pod {meta.get('name')}",
            unique=str(int(backoff.until_s)),
        )
        return remaining

    async def _check_running(
        self,
        pod: dict[str, Any],
        container: Mapping[str, Any],
        current: pb.Container,
        sandbox_id: str,
    ) -> None:
        name = container.get("name", "")
        self.waiting.pop(name, None)
        desired_hash = specs.container_hash(container)
        if current.annotations.get(specs.ANN_CONTAINER_HASH, desired_hash) != desired_hash:
            self.host.recorder.event(
                _ref(pod, name),
                "Normal",
                "Killing",
                f"Container {name} definition changed, will be restarted",
            )
            await self._stop_container(pod, current, grace_period_s(pod))
            self.crash_backoff.pop(name, None)
            self.host.wake(self.uid)
            return
        failure = self.host.probes.liveness_failed(current.id)
        if failure is not None:
            self.host.recorder.event(
                _ref(pod, name),
                "Normal",
                "Killing",
                f"Container {name} {failure}, will be restarted",
            )
            await self._stop_container(pod, current, grace_period_s(pod))
            await self.host.probes.forget(current.id)
            self.crash_backoff.pop(name, None)
            self.host.wake(self.uid)
            return
        self.host.probes.ensure(
            self.uid, container, self._target(pod, container, current.id), pod_ref=_ref(pod)
        )

    def _target(
        self, pod: Mapping[str, Any], container: Mapping[str, Any], cid: str
    ) -> ProbeTarget:
        spec = pod.get("spec") or {}
        if spec.get("hostNetwork") is True or not self.pod_ips:
            host = self.host.node_ips[0] if self.host.node_ips else "127.0.0.1"
        else:
            host = self.pod_ips[0]
        ports = {
            p["name"]: int(p.get("containerPort") or 0)
            for p in container.get("ports") or []
            if p.get("name")
        }
        return ProbeTarget(container_id=cid, host=host, ports=ports)

    async def _ensure_image(self, pod: dict[str, Any], container: Mapping[str, Any]) -> str:
        name = container.get("name", "")
        image = container.get("image") or ""
        policy = container.get("imagePullPolicy") or (
            "Always"
            if image.endswith(":latest") or ":" not in image.rsplit("/", 1)[-1]
            else "IfNotPresent"
        )
        if not image:
            self.waiting[name] = ("InvalidImageName", "no image given")
            raise _Wait(None)
        present = None
        if policy != "Always":
            with contextlib.suppress(cri.NotFoundError):
                present = await self.host.images.image_status(image)
        if present is not None:
            self._event_once(
                pod,
                name,
                "Normal",
                "Pulled",
                f'Container image "{image}" already present on machine',
                unique=image,
            )
            return present.id
        if policy == "Never":
            self.waiting[name] = (
                "ErrImageNeverPull",
                f'Container image "{image}" is not present with pull policy of Never',
            )
            self._event_once(
                pod, name, "Warning", "ErrImageNeverPull", self.waiting[name][1], unique=image
            )
            raise _Wait(None)
        clock = self.host.clock
        backoff = self.pull_backoff.get(image)
        if backoff is not None and clock.monotonic() < backoff.until_s:
            self.waiting[name] = ("ImagePullBackOff", f'Back-off pulling image "{image}"')
            raise _Wait(backoff.until_s - clock.monotonic())
        self.host.recorder.event(_ref(pod, name), "Normal", "Pulling", f'Pulling image "{image}"')
        started = clock.monotonic()
        try:
            ref = await self._pull(pod, image)
        except cri.CRIError as exc:
            delay = min(
                (backoff.delay_s * 2) if backoff else self.host.options.crash_backoff_initial_s,
                self.host.options.crash_backoff_max_s,
            )
            self.pull_backoff[image] = _Backoff(delay, clock.monotonic() + delay)
            message = f'Failed to pull image "{image}": {exc}'
            self.waiting[name] = ("ErrImagePull", message)
            self.host.recorder.event(_ref(pod, name), "Warning", "Failed", message)
            self.host.recorder.event(_ref(pod, name), "Warning", "Failed", "Error: ErrImagePull")
            raise _Wait(delay) from exc
        self.pull_backoff.pop(image, None)
        self.host.recorder.event(
            _ref(pod, name),
            "Normal",
            "Pulled",
            f'Successfully pulled image "{image}" in {clock.monotonic() - started:.3f}s',
        )
        return ref

    async def _pull(self, pod: Mapping[str, Any], image: str) -> str:
        """Pull with each matching imagePullSecrets credential, then anonymously."""
        namespace = (pod.get("metadata") or {}).get("namespace", "default")
        secrets_ = []
        for ref in (pod.get("spec") or {}).get("imagePullSecrets") or []:
            secret = self.host.sources.secret(namespace, ref.get("name", ""))
            if secret is not None:
                secrets_.append(secret)
        error: cri.CRIError | None = None
        for auth in [*pull_credentials(image, secrets_), None]:
            try:
                return await self.host.images.pull_image(
                    image, auth=auth, sandbox_config=self.sandbox_config
                )
            except cri.CRIError as exc:
                error = exc
        assert error is not None
        raise error

    async def _start(
        self,
        pod: dict[str, Any],
        container: Mapping[str, Any],
        qos: str,
        volumes: Mapping[str, Any],
        sandbox_id: str,
        attempt: int,
        *,
        init: bool = False,
        target_id: str = "",
    ) -> None:
        name = container.get("name", "")
        ref = _ref(pod, name, True if init else None)
        image_ref = await self._ensure_image(pod, container)
        try:
            env = build_env(
                pod,
                container,
                self.host.sources,
                self.host.allocatable,
                master_services=self.host.master_services(),
            )
        except ConfigError as exc:
            self.waiting[name] = ("CreateContainerConfigError", str(exc))
            self.host.recorder.event(ref, "Warning", "Failed", f"Error: {exc}")
            raise _Wait(None) from exc
        await self._check_non_root(pod, container, image_ref)
        env_map = dict(env)
        command = expand_args(container.get("command"), env_map)
        args = expand_args(container.get("args"), env_map)
        try:
            mounts, missing = specs.volume_mounts(container, volumes)
        except (FieldTypeError, specs.SpecError) as exc:
            self.waiting[name] = ("CreateContainerConfigError", str(exc))
            self.host.recorder.event(ref, "Warning", "Failed", f"Error: {exc}")
            raise _Wait(None) from exc
        if missing:
            message = f"cannot find volume {missing[0]!r} to mount into container {name!r}"
            self.waiting[name] = ("CreateContainerConfigError", message)
            raise _Wait(None)
        termination_file = await asyncio.to_thread(self._termination_file, name, mounts)
        term_path = container.get("terminationMessagePath") or (
            specs.DEFAULT_TERMINATION_MESSAGE_PATH
        )
        extra = [pb.Mount(container_path=term_path, host_path=termination_file)]
        if (
            not specs.pod_security(pod).host_network
            and self._hosts_path().exists()
            and not any(m.container_path == "/etc/hosts" for m in mounts)
        ):
            extra.append(pb.Mount(container_path="/etc/hosts", host_path=str(self._hosts_path())))
        try:
            config = specs.container_config(
                pod,
                container,
                attempt=attempt,
                env=env,
                command=command,
                args=args,
                mounts=[*mounts, *extra],
                qos=qos,
                memory_capacity_bytes=self.host.memory_capacity_bytes,
                termination_file=termination_file,
                image=image_ref,
                grace_period_s=grace_period_s(pod),
                seccomp_root=self.host.options.kubelet_dir / "seccomp",
                target_id=target_id,
            )
        except (FieldTypeError, specs.SpecError) as exc:
            self.waiting[name] = ("CreateContainerConfigError", str(exc))
            self.host.recorder.event(ref, "Warning", "Failed", f"Error: {exc}")
            raise _Wait(None) from exc
        assert self.sandbox_config is not None
        try:
            cid = await self.host.runtime.create_container(sandbox_id, config, self.sandbox_config)
        except cri.CRIError as exc:
            self.waiting[name] = ("CreateContainerError", str(exc))
            self.host.recorder.event(ref, "Warning", "Failed", f"Error: {exc}")
            raise _Wait(RETRY_AFTER_ERROR_S) from exc
        self.host.recorder.event(ref, "Normal", "Created", f"Created container {name}")
        try:
            await self.host.runtime.start_container(cid)
        except cri.CRIError as exc:
            self.waiting[name] = ("RunContainerError", str(exc))
            self.host.recorder.event(ref, "Warning", "Failed", f"Error: {exc}")
            return
        self.waiting.pop(name, None)
        self.host.recorder.event(ref, "Normal", "Started", f"Started container {name}")
        await self._prune_old(name, attempt)
        post_start = (container.get("lifecycle") or {}).get("postStart")
        if post_start:
            ok, message = await run_action(
                self.host.runtime, post_start, self._target(pod, container, cid), HOOK_TIMEOUT_S
            )
            if not ok:
                self.host.recorder.event(
                    ref, "Warning", "FailedPostStartHook", f"PostStartHook failed: {message}"
                )
                with contextlib.suppress(cri.CRIError):
                    await self.host.runtime.stop_container(cid, grace_period_s=grace_period_s(pod))

    async def _check_non_root(
        self, pod: Mapping[str, Any], container: Mapping[str, Any], image_ref: str
    ) -> None:
        security = specs.container_security(pod, container)
        if security.run_as_non_root is not True:
            return
        user = security.run_as_user
        name = container.get("name", "")
        message = ""
        if user == 0:
            message = "container's runAsUser breaks non-root policy"
        elif user is None:
            image = await self.host.images.image_status(image_ref)
            uid = image.uid.value if image is not None and image.HasField("uid") else None
            if image is not None and image.username and not image.HasField("uid"):
                message = (
                    "container has runAsNonRoot and image has non-numeric user "
                    f"({image.username}), cannot verify user is non-root"
                )
            elif uid in (None, 0):
                message = "container has runAsNonRoot and image will run as root"
        if message:
            self.waiting[name] = ("CreateContainerConfigError", message)
            self.host.recorder.event(_ref(pod, name), "Warning", "Failed", f"Error: {message}")
            raise _Wait(None)

    def _termination_file(self, name: str, _mounts: list[pb.Mount]) -> str:
        for mount in _mounts:
            path = Path(mount.host_path)
            if not path.exists():
                path.mkdir(parents=True, exist_ok=True)
        directory = self.host.volumes.pod_dir(self.uid) / "containers" / name
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / secrets.token_hex(4)
        path.touch(mode=0o666)
        os.chmod(path, 0o666)
        return str(path)

    async def _prune_old(self, name: str, attempt: int) -> None:
        """Keep the newest exited run of ``name`` (for lastState); remove older ones."""
        for container in await self._containers():
            if container.metadata.name == name and container.metadata.attempt < attempt - 1:
                await self._remove_container(container)

    async def _remove_container(self, container: pb.Container) -> None:
        await self.host.probes.forget(container.id)
        self._exited_cache.pop(container.id, None)
        path = container.annotations.get(specs.ANN_TERMINATION_FILE)
        with contextlib.suppress(cri.NotFoundError):
            await self.host.runtime.remove_container(container.id)
        if path:
            await asyncio.to_thread(_unlink_quietly, Path(path))

    async def _stop_container(
        self, pod: Mapping[str, Any] | None, container: pb.Container, grace_s: int
    ) -> None:
        started = self.host.clock.monotonic()
        pre_stop_text = container.annotations.get(specs.ANN_PRESTOP)
        if pre_stop_text and container.state == pb.ContainerState.CONTAINER_RUNNING:
            try:
                pre_stop = json.loads(pre_stop_text)
            except ValueError:
                pre_stop = None
            if pre_stop:
                target = ProbeTarget(
                    container_id=container.id,
                    host=self.pod_ips[0] if self.pod_ips else "127.0.0.1",
                )
                try:
                    async with asyncio.timeout(max(grace_s, 1)):
                        ok, message = await run_action(
                            self.host.runtime, pre_stop, target, float(max(grace_s, 1))
                        )
                except TimeoutError:
                    ok, message = False, "timed out"
                if not ok and pod is not None:
                    self.host.recorder.event(
                        _ref(pod, container.metadata.name),
                        "Warning",
                        "FailedPreStopHook",
                        f"PreStopHook failed: {message}",
                    )
        remaining = max(0, int(grace_s - (self.host.clock.monotonic() - started)))
        if pod is not None:
            self.host.recorder.event(
                _ref(pod, container.metadata.name),
                "Normal",
                "Killing",
                f"Stopping container {container.metadata.name}",
            )
        with contextlib.suppress(cri.NotFoundError):
            await self.host.runtime.stop_container(container.id, grace_period_s=remaining)
        await self.host.probes.forget(container.id)

    async def _kill_all(self, pod: Mapping[str, Any] | None, grace_s: int, *, remove: bool) -> None:
        containers = await self._containers()
        running = [c for c in containers if c.state == pb.ContainerState.CONTAINER_RUNNING]
        if running:
            await asyncio.gather(*(self._stop_container(pod, c, grace_s) for c in running))
        for sandbox in await self._sandboxes():
            if remove:
                await self._remove_sandbox(sandbox.id)
            elif sandbox.state == pb.PodSandboxState.SANDBOX_READY:
                with contextlib.suppress(cri.NotFoundError):
                    await self.host.runtime.stop_pod_sandbox(sandbox.id)
        if remove:
            for container in await self._containers():
                await self._remove_container(container)

    async def terminate(self, pod: dict[str, Any] | None) -> None:
        """Kill everything of the pod, clean up, delete the API object (grace 0)."""
        source = pod or self.last_pod
        grace = grace_period_s(pod) if pod is not None else self._orphan_grace()
        leftovers = bool(await self._sandboxes() or await self._containers())
        if pod is not None or leftovers:
            log.info("pod %s: terminating (grace %ss)", self.name, grace)
        if pod is not None and leftovers:
            # Not ready from the start of the grace period, so Services stop sending to it.
            await self._report(pod, await self._containers(), sandbox_ready=True, terminating=True)
        await self._kill_all(source, grace, remove=False)
        if pod is not None:
            await self._report(pod, await self._containers(), sandbox_ready=False, terminating=True)
        await self._kill_all(source, 0, remove=True)
        await self.host.volumes.teardown(self.uid)
        if source is not None:
            qos = qos_class(source)
            await asyncio.to_thread(
                self.host.cgroups.remove,
                pod_cgroup_parent(self.host.options.cgroup_root, qos, self.uid),
            )
        await asyncio.to_thread(self._remove_logs, source)
        if pod is not None:
            await self.host.status_manager.delete_pod_object(pod)
        self.terminated = True

    def _orphan_grace(self) -> int:
        return DEFAULT_GRACE_PERIOD_S if self.last_pod is not None else 2

    def _remove_logs(self, pod: Mapping[str, Any] | None) -> None:
        if pod is None:
            return
        shutil.rmtree(self._log_dir(pod), ignore_errors=True)

    # -- status ----------------------------------------------------------------------------

    async def _facts(
        self, pod: Mapping[str, Any], container: Mapping[str, Any], runs: list[pb.Container]
    ) -> ContainerFacts:
        name = container.get("name", "")
        facts = ContainerFacts(name=name, image=container.get("image", ""))
        waiting = self.waiting.get(name)
        if not runs:
            if waiting:
                facts.waiting_reason, facts.waiting_message = waiting
            return facts
        current = runs[-1]
        facts.restart_count = int(
            current.annotations.get(specs.ANN_RESTART_COUNT, current.metadata.attempt)
        )
        await self._fill(facts, current)
        if len(runs) > 1:
            last = ContainerFacts(name=name, image=facts.image)
            await self._fill(last, runs[-2])
            facts.last = last
        if facts.state == "running":
            facts.started = self.host.probes.started(current.id) or (
                not self.host.probes.tracked(current.id) and container.get("startupProbe") is None
            )
            facts.ready = self.host.probes.ready(current.id) or (
                not self.host.probes.tracked(current.id)
                and container.get("readinessProbe") is None
                and container.get("startupProbe") is None
            )
            self.waiting.pop(name, None)
        elif waiting:
            facts.waiting_reason, facts.waiting_message = waiting
        return facts

    async def _fill(self, facts: ContainerFacts, container: pb.Container) -> None:
        status = await self._status(container)
        facts.container_id = container.id
        facts.image_id = container.image_ref
        if status is None:
            facts.state = "terminated"
            facts.reason = "ContainerStatusUnknown"
            facts.exit_code = 137
            return
        facts.image_id = status.image_ref or container.image_ref
        facts.started_at_ns = status.started_at
        facts.finished_at_ns = status.finished_at
        if status.state == pb.ContainerState.CONTAINER_RUNNING:
            facts.state = "running"
        elif status.state == pb.ContainerState.CONTAINER_CREATED:
            facts.state = "waiting"
        else:
            facts.state = "terminated"
            facts.exit_code = status.exit_code
            facts.reason = status.reason or ("Completed" if status.exit_code == 0 else "Error")
            if status.started_at == 0 and status.exit_code != 0 and status.reason != "OOMKilled":
                facts.reason = "ContainerCannotRun"
            facts.message = await asyncio.to_thread(_termination_message, container, status)

    async def _report(
        self,
        pod: Mapping[str, Any],
        containers: list[pb.Container],
        *,
        sandbox_ready: bool,
        terminating: bool = False,
        failed: tuple[str, str] | None = None,
    ) -> str:
        spec = pod.get("spec") or {}
        old = pod.get("status") or {}
        runs: dict[str, list[pb.Container]] = {}
        for container in containers:
            if (
                self.sandbox_id
                and container.pod_sandbox_id != self.sandbox_id
                and (container.state == pb.ContainerState.CONTAINER_RUNNING)
            ):
                continue
            runs.setdefault(container.metadata.name, []).append(container)
        init_statuses = []
        init_done = True
        init_failed = False
        incomplete: list[str] = []
        for init in spec.get("initContainers") or []:
            facts = await self._facts(pod, init, runs.get(init.get("name", ""), []))
            init_statuses.append(container_status(facts))
            sidecar = init.get("restartPolicy") == "Always"
            if sidecar:
                if facts.state != "running" or not facts.started:
                    init_done = False
                    incomplete.append(facts.name)
            elif not (facts.state == "terminated" and facts.exit_code == 0):
                init_done = False
                incomplete.append(facts.name)
                if facts.state == "terminated":
                    init_failed = True
        app_statuses = []
        unready: list[str] = []
        for app in spec.get("containers") or []:
            facts = await self._facts(pod, app, runs.get(app.get("name", ""), []))
            if not init_done and not facts.container_id and not facts.waiting_reason:
                facts.waiting_reason = "PodInitializing"
            app_statuses.append(container_status(facts))
            if not facts.ready:
                unready.append(facts.name)
        ephemeral_statuses = []
        for container in spec.get("ephemeralContainers") or []:
            facts = await self._facts(pod, container, runs.get(container.get("name", ""), []))
            facts.ready = False  # upstream: an ephemeral container is never ready
            ephemeral_status = container_status(facts)
            ephemeral_status.pop("started", None)  # only probed containers report it
            ephemeral_statuses.append(ephemeral_status)
        policy = spec.get("restartPolicy") or "Always"
        phase = pod_phase(policy, init_done, init_failed, app_statuses)
        if failed is not None:
            phase = "Failed"
        if old.get("phase") in ("Succeeded", "Failed"):
            phase = old["phase"]
        if phase == "Running" and not self._start_observed:
            self._start_observed = True
            if old.get("phase") in (None, "Pending"):
                self.host.metrics.pod_start.observe(self.host.clock.monotonic() - self.first_seen_s)
        now = rfc3339(self.host.clock.now())
        containers_ready = not unready and phase == "Running"
        gates_ok = all(
            any(
                c.get("type") == g.get("conditionType") and c.get("status") == "True"
                for c in old.get("conditions") or []
            )
            for g in spec.get("readinessGates") or []
        )
        ready_reason = (
            ""
            if containers_ready
            else ("PodCompleted" if phase in ("Succeeded", "Failed") else "ContainersNotReady")
        )
        ready_message = (
            ""
            if containers_ready or ready_reason == "PodCompleted"
            else (f"containers with unready status: [{' '.join(unready)}]")
        )
        wanted = [
            ("PodReadyToStartContainers", sandbox_ready and not terminating, "", ""),
            (
                "Initialized",
                init_done,
                "" if init_done else "ContainersNotInitialized",
                "" if init_done else f"containers with incomplete status: [{' '.join(incomplete)}]",
            ),
            (
                "Ready",
                containers_ready and gates_ok and not terminating,
                ready_reason if not (containers_ready and gates_ok) else "",
                ready_message,
            ),
            ("ContainersReady", containers_ready, ready_reason, ready_message),
        ]
        status: dict[str, Any] = {
            "phase": phase,
            "conditions": with_conditions(old.get("conditions"), wanted, now),
            "hostIP": self.host.node_ips[0] if self.host.node_ips else None,
            "hostIPs": [{"ip": ip} for ip in self.host.node_ips] or None,
            "startTime": old.get("startTime") or now,
            "qosClass": qos_class(pod),
            "containerStatuses": app_statuses,
        }
        ips = self.host.node_ips if spec.get("hostNetwork") is True else self.pod_ips
        if ips and sandbox_ready:
            status["podIP"] = ips[0]
            status["podIPs"] = [{"ip": ip} for ip in ips]
        if init_statuses:
            status["initContainerStatuses"] = init_statuses
        if ephemeral_statuses:
            status["ephemeralContainerStatuses"] = ephemeral_statuses
        if failed is not None:
            status["reason"], status["message"] = failed
        elif old.get("reason"):
            status["reason"] = old["reason"]
            if old.get("message"):
                status["message"] = old["message"]
        status = {k: v for k, v in status.items() if v is not None}
        if await self.host.status_manager.set_pod_status(pod, status):
            self._reported_status = status
        elif self._reported_status is None:
            self._reported_status = status
        return phase


def _last_attempts(containers: list[pb.Container]) -> dict[str, int]:
    result: dict[str, int] = {}
    for container in containers:
        name = container.metadata.name
        result[name] = max(result.get(name, -1), container.metadata.attempt)
    return result


def _sandbox_ips(status: pb.PodSandboxStatus) -> list[str]:
    ips = []
    if status.network.ip:
        ips.append(status.network.ip)
    ips.extend(ip.ip for ip in status.network.additional_ips if ip.ip)
    return ips


def _fmt_s(seconds: float) -> str:
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)}m0s"
    if seconds >= 60:
        return f"{int(seconds // 60)}m{int(seconds % 60)}s"
    return f"{seconds:g}s"


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def _termination_message(container: pb.Container, status: pb.ContainerStatus) -> str:
    path = container.annotations.get(specs.ANN_TERMINATION_FILE)
    message = ""
    if path:
        with contextlib.suppress(OSError), open(path, "rb") as handle:
            message = handle.read(MAX_TERMINATION_MESSAGE_BYTES).decode(errors="replace")
    policy = container.annotations.get(specs.ANN_TERMINATION_POLICY, "File")
    if not message and policy == "FallbackToLogsOnError" and status.exit_code != 0:
        message = _log_tail(status.log_path)
    if not message and status.message:
        message = status.message
    return message


def _log_tail(log_path: str) -> str:
    if not log_path:
        return ""
    try:
        with open(log_path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            lines = handle.read().decode(errors="replace").splitlines()
    except OSError:
        return ""
    out = []
    for line in lines[-FALLBACK_LOG_LINES:]:
        parts = line.split(" ", 3)
        out.append(parts[3] if len(parts) == 4 else line)
    text = "\n".join(out)
    return text[-FALLBACK_LOG_BYTES:]
