"""Unit tests of one pod worker's state machine (``sampan.kubelet.pods.PodWorker``).

The worker is driven pass by pass (``sync_once``, what its task runs) against a fake CRI
runtime that implements ``workerhost.RuntimeService`` in memory: no containerd, no API
server. Time is a fake clock the test moves, so back-off windows and grace periods are
exact and nothing sleeps. Probes run through the real ``ProbeManager`` (its exec actions
answered by the fake runtime). The status the worker hands to its status writer is applied
to the pod the fake host serves, as the kubelet's status manager and informer would.

Whole-node behaviour (real containerd, real API server) is covered by ``test_pods.py``.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from sampan.kubelet import specs
from sampan.kubelet.cgroups import PodCgroupLimits
from sampan.kubelet.metrics import KubeletMetrics
from sampan.kubelet.options import KubeletOptions
from sampan.kubelet.pods import PodWorker
from sampan.kubelet.probes import ProbeManager
from sampan.kubelet.runtime import cri, pb
from sampan.kubelet.workerhost import PodWorkerHost

UID = "0b6a4d1e-7c1f-4d2c-9a57-3c1f0e5b2a10"
NODE_IP = "192.0.2.10"
POD_IP = "10.42.0.7"
START = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
RUNNING = pb.ContainerState.CONTAINER_RUNNING
EXITED = pb.ContainerState.CONTAINER_EXITED


class FakeClock:
    """Moves only when the test (or the fake runtime) says so."""

    def __init__(self) -> None:
        self.t = 1000.0

    def monotonic(self) -> float:
        return self.t

    def now(self) -> datetime:
        return START + timedelta(seconds=self.t - 1000.0)

    def advance(self, seconds: float) -> None:
        self.t += seconds

    def ns(self) -> int:
        return int(self.now().timestamp() * 1e9)


@dataclass
class _Run:
    """One container as the fake runtime holds it."""

    id: str
    sandbox_id: str
    config: pb.ContainerConfig
    created_at: int
    state: pb.ContainerState.ValueType = pb.ContainerState.CONTAINER_CREATED
    started_at: int = 0
    finished_at: int = 0
    exit_code: int = 0
    reason: str = ""

    @property
    def name(self) -> str:
        return self.config.metadata.name


@dataclass
class FakeRuntime:
    """CRI RuntimeService in memory. ``calls`` records what the worker asked, in order."""

    clock: FakeClock
    sandboxes: dict[str, tuple[pb.PodSandboxConfig, pb.PodSandboxState.ValueType, int]] = field(
        default_factory=dict
    )
    runs: dict[str, _Run] = field(default_factory=dict)
    calls: list[tuple[Any, ...]] = field(default_factory=list)
    exec_handler: Callable[[str, Sequence[str]], int] = lambda _cid, _cmd: 0
    term_exit_code: int = 143  # what a container does on the stop signal
    _ids: Any = field(default_factory=itertools.count)

    # -- test helpers --

    def current(self, name: str) -> _Run:
        return [r for r in self.runs.values() if r.name == name][-1]

    def exit(self, name: str, code: int, *, reason: str = "", ran_s: float = 0.0) -> None:
        run = self.current(name)
        assert run.state == RUNNING, f"{name} is not running"
        self.clock.advance(ran_s)
        run.state, run.exit_code, run.reason = EXITED, code, reason
        run.finished_at = self.clock.ns()

    def started(self) -> list[str]:
        return [c[1] for c in self.calls if c[0] == "start"]

    def name_of(self, cid: str) -> str:
        return self.runs[cid].name

    # -- sandboxes --

    async def run_pod_sandbox(
        self, config: pb.PodSandboxConfig, *, runtime_handler: str = ""
    ) -> str:
        sandbox_id = f"sandbox-{next(self._ids)}"
        self.sandboxes[sandbox_id] = (config, pb.PodSandboxState.SANDBOX_READY, self.clock.ns())
        self.calls.append(("run_pod_sandbox", sandbox_id))
        return sandbox_id

    async def pod_sandbox_status(
        self, pod_sandbox_id: str, *, verbose: bool = False
    ) -> pb.PodSandboxStatusResponse:
        config, state, created = self.sandboxes[pod_sandbox_id]
        return pb.PodSandboxStatusResponse(
            status=pb.PodSandboxStatus(
                id=pod_sandbox_id,
                metadata=config.metadata,
                state=state,
                created_at=created,
                network=pb.PodSandboxNetworkStatus(ip=POD_IP),
            )
        )

    async def list_pod_sandbox(
        self, filter: pb.PodSandboxFilter | None = None
    ) -> list[pb.PodSandbox]:
        selector = dict(filter.label_selector) if filter is not None else {}
        return [
            pb.PodSandbox(
                id=sid,
                metadata=config.metadata,
                state=state,
                created_at=created,
                labels=config.labels,
            )
            for sid, (config, state, created) in self.sandboxes.items()
            if all(config.labels.get(k) == v for k, v in selector.items())
        ]

    async def stop_pod_sandbox(self, pod_sandbox_id: str) -> None:
        self.calls.append(("stop_pod_sandbox", pod_sandbox_id))
        config, _state, created = self.sandboxes[pod_sandbox_id]
        self.sandboxes[pod_sandbox_id] = (config, pb.PodSandboxState.SANDBOX_NOTREADY, created)
        for run in self.runs.values():
            if run.sandbox_id == pod_sandbox_id and run.state == RUNNING:
                run.state, run.exit_code, run.finished_at = EXITED, 137, self.clock.ns()

    async def remove_pod_sandbox(self, pod_sandbox_id: str) -> None:
        self.calls.append(("remove_pod_sandbox", pod_sandbox_id))
        self.sandboxes.pop(pod_sandbox_id, None)

    # -- containers --

    async def create_container(
        self, pod_sandbox_id: str, config: pb.ContainerConfig, sandbox_config: pb.PodSandboxConfig
    ) -> str:
        cid = f"c{next(self._ids)}-{config.metadata.name}"
        self.runs[cid] = _Run(cid, pod_sandbox_id, config, self.clock.ns())
        self.calls.append(("create", config.metadata.name, config.metadata.attempt))
        return cid

    async def start_container(self, container_id: str) -> None:
        run = self.runs[container_id]
        run.state, run.started_at = RUNNING, self.clock.ns()
        self.calls.append(("start", run.name))

    async def stop_container(self, container_id: str, *, grace_period_s: int) -> None:
        run = self.runs.get(container_id)
        if run is None:
            raise cri.NotFoundError("no such container")
        self.calls.append(("stop", run.name, grace_period_s))
        if run.state == RUNNING:
            run.state, run.exit_code, run.finished_at = EXITED, self.term_exit_code, self.clock.ns()

    async def remove_container(self, container_id: str) -> None:
        self.calls.append(("remove", self.runs.pop(container_id).name))

    async def list_containers(self, filter: pb.ContainerFilter | None = None) -> list[pb.Container]:
        selector = dict(filter.label_selector) if filter is not None else {}
        return [
            pb.Container(
                id=r.id,
                pod_sandbox_id=r.sandbox_id,
                metadata=r.config.metadata,
                image=r.config.image,
                image_ref=r.config.image.image,
                state=r.state,
                created_at=r.created_at,
                labels=r.config.labels,
                annotations=r.config.annotations,
            )
            for r in self.runs.values()
            if all(r.config.labels.get(k) == v for k, v in selector.items())
        ]

    async def container_status(
        self, container_id: str, *, verbose: bool = False
    ) -> pb.ContainerStatusResponse:
        run = self.runs.get(container_id)
        if run is None:
            raise cri.NotFoundError("no such container")
        return pb.ContainerStatusResponse(
            status=pb.ContainerStatus(
                id=run.id,
                metadata=run.config.metadata,
                state=run.state,
                created_at=run.created_at,
                started_at=run.started_at,
                finished_at=run.finished_at,
                exit_code=run.exit_code,
                reason=run.reason,
                image=run.config.image,
                image_ref=run.config.image.image,
                labels=run.config.labels,
                annotations=run.config.annotations,
            )
        )

    async def exec_sync(
        self, container_id: str, cmd: Sequence[str], *, timeout_s: int = 0
    ) -> pb.ExecSyncResponse:
        self.calls.append(("exec", self.name_of(container_id), tuple(cmd)))
        return pb.ExecSyncResponse(exit_code=self.exec_handler(container_id, cmd))


class FakeImages:
    async def image_status(self, image: str) -> pb.Image | None:
        return pb.Image(id=f"sha256:{image}")

    async def pull_image(self, image: str, **_: Any) -> str:
        return f"sha256:{image}"


@dataclass
class FakeVolumes:
    root: Path
    torn_down: list[str] = field(default_factory=list)

    def pod_dir(self, uid: str) -> Path:
        return self.root / uid

    async def setup(self, pod: Mapping[str, Any], allocatable: Mapping[str, Decimal]) -> dict:
        return {}

    async def teardown(self, uid: str) -> None:
        self.torn_down.append(uid)


@dataclass
class FakeCgroups:
    ensured: dict[str, PodCgroupLimits] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)

    def ensure(self, cgroup: str, limits: PodCgroupLimits) -> None:
        self.ensured[cgroup] = limits

    def remove(self, cgroup: str) -> bool:
        self.removed.append(cgroup)
        return True


class FakeSources:
    def configmap(self, namespace: str, name: str) -> dict[str, Any] | None:
        return None

    def secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        return None

    def services(self, namespace: str) -> list[dict[str, Any]]:
        return []

    async def prepare(self, uid: str, pod: Mapping[str, Any]) -> None:
        return None


@dataclass
class FakeStatusWriter:
    """Applies what the worker sets to the pod the host serves (as the API server and the
    informer would); counts the writes."""

    pods: dict[str, dict[str, Any]]
    writes: int = 0
    deleted: list[str] = field(default_factory=list)

    async def set_pod_status(self, pod: Mapping[str, Any], status: Mapping[str, Any]) -> bool:
        uid = pod["metadata"]["uid"]
        if self.pods[uid].get("status") == status:
            return False
        self.writes += 1
        self.pods[uid]["status"] = copy.deepcopy(dict(status))
        return True

    async def delete_pod_object(self, pod: Mapping[str, Any]) -> None:
        self.deleted.append(pod["metadata"]["uid"])
        self.pods.pop(pod["metadata"]["uid"], None)


@dataclass
class FakeRecorder:
    events: list[tuple[str, str, str]] = field(default_factory=list)

    def event(
        self,
        involved: Mapping[str, Any],
        event_type: str,
        reason: str,
        message: str,
        *,
        action: str | None = None,
    ) -> None:
        self.events.append((event_type, reason, message))

    def reasons(self) -> list[str]:
        return [reason for _type, reason, _message in self.events]


class FakeHost:
    """A ``PodWorkerHost`` made of fakes (and the real ProbeManager)."""

    def __init__(self, tmp_path: Path, **options: Any) -> None:
        self.options = KubeletOptions(
            node_name="node-1",
            data_dir=tmp_path / "data",
            pod_logs_dir=tmp_path / "logs",
            **options,
        )
        self.clock = FakeClock()
        self.runtime = FakeRuntime(self.clock)
        self.images = FakeImages()
        self.volumes = FakeVolumes(tmp_path / "pods")
        self.woken: list[str] = []
        self.probes = ProbeManager(lambda: self.runtime, self.wake)
        self.cgroups = FakeCgroups()
        self.sources = FakeSources()
        self.pods: dict[str, dict[str, Any]] = {}
        self.status_manager = FakeStatusWriter(self.pods)
        self.recorder = FakeRecorder()
        self.metrics = KubeletMetrics(CollectorRegistry())
        self.node_ips = (NODE_IP,)
        self.allocatable = {"cpu": Decimal(2), "memory": Decimal(4 << 30)}
        self.memory_capacity_bytes = 4 << 30
        self.dns_settings = specs.DNSSettings(
            cluster_dns="10.43.0.10",
            cluster_domain="cluster.local",
            host_servers=("192.0.2.53",),
            host_searches=(),
            host_options=(),
        )
        self.sandbox_slots = asyncio.Semaphore(4)

    def desired_pod(self, uid: str) -> dict[str, Any] | None:
        pod = self.pods.get(uid)
        return copy.deepcopy(pod) if pod is not None else None

    def network_ready(self) -> bool:
        return True

    def master_services(self) -> list[dict[str, Any]]:
        return []

    def wake(self, uid: str) -> None:
        self.woken.append(uid)

    def worker_done(self, worker: PodWorker) -> None:
        return None

    # -- test helpers --

    def status(self) -> dict[str, Any]:
        return self.pods[UID]["status"]

    def condition(self, kind: str) -> dict[str, Any]:
        return next(c for c in self.status()["conditions"] if c["type"] == kind)

    def container_status(self, name: str, key: str = "containerStatuses") -> dict[str, Any]:
        return next(s for s in self.status()[key] if s["name"] == name)


def make_pod(
    containers: list[dict[str, Any]],
    *,
    init: list[dict[str, Any]] | None = None,
    restart_policy: str = "Always",
    **spec: Any,
) -> dict[str, Any]:
    for c in [*containers, *(init or [])]:
        c.setdefault("image", "registry.example/app:1")
        c.setdefault("imagePullPolicy", "IfNotPresent")
    pod_spec: dict[str, Any] = {
        "containers": containers,
        "restartPolicy": restart_policy,
        "nodeName": "node-1",
        **spec,
    }
    if init:
        pod_spec["initContainers"] = init
    return {
        "metadata": {"name": "web", "namespace": "ns", "uid": UID, "resourceVersion": "5"},
        "spec": pod_spec,
        "status": {"phase": "Pending"},
    }


def exec_probe(command: str, **fields: Any) -> dict[str, Any]:
    return {"exec": {"command": [command]}, "periodSeconds": 60, **fields}


@pytest.fixture
async def host(tmp_path: Path) -> Any:
    fake = FakeHost(tmp_path, crash_backoff_initial_s=10.0, crash_backoff_max_s=40.0)
    yield fake
    await fake.probes.stop()


def worker_for(host: FakeHost, pod: dict[str, Any]) -> PodWorker:
    host.pods[UID] = pod
    checked: PodWorkerHost = host  # the fake fits the protocol the kubelet fits
    return PodWorker(UID, checked)


async def let_probes_run() -> None:
    """Probe tasks run their first check at once (no initial delay): give them a few turns."""
    for _ in range(20):
        await asyncio.sleep(0)


# -- status conditions and phase ------------------------------------------------------------


async def test_running_pod_status_phase_and_conditions(host: FakeHost) -> None:
    worker = worker_for(host, make_pod([{"name": "app"}]))
    assert await worker.sync_once() is None

    assert host.runtime.started() == ["app"]
    status = host.status()
    assert status["phase"] == "Running"
    assert status["podIP"] == POD_IP and status["podIPs"] == [{"ip": POD_IP}]
    assert status["hostIP"] == NODE_IP and status["hostIPs"] == [{"ip": NODE_IP}]
    assert status["qosClass"] == "BestEffort"
    assert status["startTime"] == "2026-01-02T03:04:05Z"
    for kind in ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady"):
        condition = host.condition(kind)
        assert condition["status"] == "True", condition
        assert condition["lastTransitionTime"] == "2026-01-02T03:04:05Z"
    app = host.container_status("app")
    assert app["ready"] is True and app["started"] is True and app["restartCount"] == 0
    assert "running" in app["state"]

    # Nothing changed: nothing is written again, and the transition times stay.
    writes = host.status_manager.writes
    host.clock.advance(30)
    await worker.sync_once()
    assert host.status_manager.writes == writes
    assert host.condition("Ready")["lastTransitionTime"] == "2026-01-02T03:04:05Z"


async def test_completed_pod_succeeds_and_is_not_ready(host: FakeHost) -> None:
    worker = worker_for(host, make_pod([{"name": "job"}], restart_policy="Never"))
    await worker.sync_once()
    host.runtime.exit("job", 0)
    await worker.sync_once()

    assert host.status()["phase"] == "Succeeded"
    ready = host.condition("Ready")
    assert ready["status"] == "False" and ready["reason"] == "PodCompleted"
    terminated = host.container_status("job")["state"]["terminated"]
    assert terminated["exitCode"] == 0 and terminated["reason"] == "Completed"
    assert host.runtime.started() == ["job"]  # never restarted
    await worker.sync_once()
    assert host.runtime.started() == ["job"]


# -- init containers ---------------------------------------------------------------------------


async def test_init_containers_run_in_order_before_app_containers(host: FakeHost) -> None:
    pod = make_pod([{"name": "app"}], init=[{"name": "init-a"}, {"name": "init-b"}])
    worker = worker_for(host, pod)

    await worker.sync_once()
    assert host.runtime.started() == ["init-a"]
    initialized = host.condition("Initialized")
    assert initialized["status"] == "False"
    assert initialized["reason"] == "ContainersNotInitialized"
    assert initialized["message"] == "containers with incomplete status: [init-a init-b]"
    assert host.container_status("app")["state"]["waiting"]["reason"] == "PodInitializing"
    assert host.status()["phase"] == "Pending"

    await worker.sync_once()  # init-a still runs: nothing else starts
    assert host.runtime.started() == ["init-a"]

    host.runtime.exit("init-a", 0)
    await worker.sync_once()
    assert host.runtime.started() == ["init-a", "init-b"]
    assert host.condition("Initialized")["message"] == "containers with incomplete status: [init-b]"

    host.runtime.exit("init-b", 0)
    await worker.sync_once()
    assert host.runtime.started() == ["init-a", "init-b", "app"]
    assert host.condition("Initialized")["status"] == "True"
    assert host.status()["phase"] == "Running"
    init_b = host.container_status("init-b", "initContainerStatuses")
    assert init_b["state"]["terminated"]["reason"] == "Completed"


async def test_failed_init_container_fails_the_pod_with_restart_policy_never(
    host: FakeHost,
) -> None:
    pod = make_pod([{"name": "app"}], init=[{"name": "init"}], restart_policy="Never")
    worker = worker_for(host, pod)
    await worker.sync_once()
    host.runtime.exit("init", 1)
    await worker.sync_once()

    assert host.status()["phase"] == "Failed"
    terminated = host.container_status("init", "initContainerStatuses")["state"]["terminated"]
    assert terminated["exitCode"] == 1 and terminated["reason"] == "Error"
    assert host.runtime.started() == ["init"]  # neither retried nor followed by the app
    await worker.sync_once()
    assert host.runtime.started() == ["init"]


async def test_failed_init_container_is_retried_with_back_off_under_always(
    host: FakeHost,
) -> None:
    pod = make_pod([{"name": "app"}], init=[{"name": "init"}])
    worker = worker_for(host, pod)
    await worker.sync_once()
    host.runtime.exit("init", 1)
    await worker.sync_once()  # the first restart is immediate
    assert host.runtime.started() == ["init", "init"]
    assert host.runtime.calls.count(("create", "init", 1)) == 1

    host.runtime.exit("init", 1)
    assert await worker.sync_once() == pytest.approx(10.0)
    waiting = host.container_status("init", "initContainerStatuses")["state"]["waiting"]
    assert waiting["reason"] == "CrashLoopBackOff"
    assert host.status()["phase"] == "Pending"
    assert host.container_status("init", "initContainerStatuses")["restartCount"] == 1

    host.clock.advance(10)
    await worker.sync_once()
    assert host.runtime.started() == ["init", "init", "init"]
    host.runtime.exit("init", 0)
    await worker.sync_once()
    assert host.runtime.started()[-1] == "app"


# -- restarts and back-off ---------------------------------------------------------------------


async def test_crash_loop_back_off_doubles_up_to_the_cap(host: FakeHost) -> None:
    worker = worker_for(host, make_pod([{"name": "app"}]))
    await worker.sync_once()
    host.runtime.exit("app", 2)
    await worker.sync_once()  # first restart: at once
    assert host.runtime.started() == ["app", "app"]

    waits = []
    for _ in range(4):
        host.runtime.exit("app", 2)
        delay = await worker.sync_once()
        assert delay is not None
        waits.append(delay)
        status = host.container_status("app")
        assert status["state"]["waiting"]["reason"] == "CrashLoopBackOff"
        assert status["state"]["waiting"]["message"].startswith(
            f"back-off {int(delay)}s restarting failed container=app pod=web_ns({UID})"
        )
        assert status["lastState"]["terminated"]["exitCode"] == 2
        assert host.status()["phase"] == "Running"  # restarting, not failed
        # Before the window ends nothing restarts.
        host.clock.advance(delay - 1)
        assert await worker.sync_once() == pytest.approx(1.0)
        host.clock.advance(1)
        await worker.sync_once()
    assert waits == [10.0, 20.0, 40.0, 40.0]  # initial 10 s, doubling, capped at 40 s
    assert host.container_status("app")["restartCount"] == 5
    assert "BackOff" in host.recorder.reasons()


async def test_back_off_resets_after_a_long_run(host: FakeHost) -> None:
    worker = worker_for(host, make_pod([{"name": "app"}]))
    await worker.sync_once()
    for _ in range(3):  # back-off grows to 20 s, then to 40 s
        host.runtime.exit("app", 1)
        host.clock.advance(await worker.sync_once() or 0)
        await worker.sync_once()
    host.runtime.exit("app", 1)
    assert await worker.sync_once() == pytest.approx(40.0)
    host.clock.advance(40)
    await worker.sync_once()
    host.runtime.exit("app", 1, ran_s=601)  # ran over 10 min: the back-off starts over
    assert await worker.sync_once() is None
    started = len(host.runtime.started())
    host.runtime.exit("app", 1)
    assert await worker.sync_once() == pytest.approx(10.0)
    assert len(host.runtime.started()) == started


async def test_restart_policy_on_failure_does_not_restart_a_success(host: FakeHost) -> None:
    worker = worker_for(host, make_pod([{"name": "app"}], restart_policy="OnFailure"))
    await worker.sync_once()
    host.runtime.exit("app", 0)
    await worker.sync_once()
    assert host.runtime.started() == ["app"]
    assert host.status()["phase"] == "Succeeded"


async def test_oom_killed_reason_comes_from_the_runtime(host: FakeHost) -> None:
    worker = worker_for(host, make_pod([{"name": "app"}], restart_policy="Never"))
    await worker.sync_once()
    host.runtime.exit("app", 137, reason="OOMKilled")
    await worker.sync_once()
    terminated = host.container_status("app")["state"]["terminated"]
    assert terminated["reason"] == "OOMKilled" and terminated["exitCode"] == 137
    assert host.status()["phase"] == "Failed"


async def test_oom_killed_shows_as_last_state_of_a_restarted_container(host: FakeHost) -> None:
    worker = worker_for(host, make_pod([{"name": "app"}]))
    await worker.sync_once()
    host.runtime.exit("app", 137, reason="OOMKilled")
    await worker.sync_once()
    status = host.container_status("app")
    assert "running" in status["state"] and status["restartCount"] == 1
    assert status["lastState"]["terminated"]["reason"] == "OOMKilled"


# -- probes ------------------------------------------------------------------------------------


async def test_liveness_probe_failure_restarts_the_container(host: FakeHost) -> None:
    host.runtime.exec_handler = lambda _cid, cmd: 1 if cmd == ["alive"] else 0
    pod = make_pod(
        [{"name": "app", "livenessProbe": exec_probe("alive", failureThreshold=1)}],
        terminationGracePeriodSeconds=12,
    )
    worker = worker_for(host, pod)
    await worker.sync_once()  # started
    await worker.sync_once()  # running: its probes start
    await let_probes_run()
    assert ("exec", "app", ("alive",)) in host.runtime.calls
    assert UID in host.woken  # the verdict wakes the worker

    await worker.sync_once()  # the liveness failure: stopped with the pod's grace period
    assert ("stop", "app", 12) in host.runtime.calls
    assert ("Normal", "Killing", "Container app failed liveness probe, will be restarted") in (
        host.recorder.events
    )
    await worker.sync_once()  # exited: restarted at once (a liveness kill is not a crash loop)
    assert host.runtime.started() == ["app", "app"]
    assert host.container_status("app")["restartCount"] == 1


async def test_readiness_probe_decides_the_ready_condition(host: FakeHost) -> None:
    verdict = {"ready": 1}
    host.runtime.exec_handler = lambda _cid, cmd: verdict["ready"]
    pod = make_pod([{"name": "app", "readinessProbe": exec_probe("ready")}])
    worker = worker_for(host, pod)
    await worker.sync_once()
    ready = host.condition("Ready")
    assert ready["status"] == "False" and ready["reason"] == "ContainersNotReady"
    assert ready["message"] == "containers with unready status: [app]"

    await worker.sync_once()  # probes start; the first check fails: still not ready
    await let_probes_run()
    await worker.sync_once()
    assert host.condition("Ready")["status"] == "False"
    assert host.container_status("app")["ready"] is False
    assert host.status()["phase"] == "Running"

    # A new container (same spec) whose first readiness check succeeds is ready.
    verdict["ready"] = 0
    await host.probes.forget(host.runtime.current("app").id)
    await worker.sync_once()
    await let_probes_run()
    await worker.sync_once()
    assert host.condition("Ready")["status"] == "True"
    assert host.condition("ContainersReady")["status"] == "True"
    assert host.container_status("app")["ready"] is True


async def test_startup_probe_gates_readiness_and_liveness(host: FakeHost) -> None:
    host.runtime.exec_handler = lambda _cid, cmd: 1 if cmd == ["started"] else 0
    container = {
        "name": "app",
        "startupProbe": exec_probe("started", failureThreshold=30),
        "readinessProbe": exec_probe("ready"),
        "livenessProbe": exec_probe("alive"),
    }
    worker = worker_for(host, make_pod([container]))
    await worker.sync_once()
    await worker.sync_once()
    await let_probes_run()
    await worker.sync_once()

    execs = [c[2] for c in host.runtime.calls if c[0] == "exec"]
    assert execs == [("started",)]  # nothing else runs before the startup probe succeeds
    app = host.container_status("app")
    assert app["started"] is False and app["ready"] is False
    assert host.condition("Ready")["status"] == "False"


async def test_startup_probe_success_lets_readiness_run(host: FakeHost) -> None:
    container = {
        "name": "app",
        "startupProbe": exec_probe("started"),
        "readinessProbe": exec_probe("ready"),
    }
    worker = worker_for(host, make_pod([container]))
    await worker.sync_once()
    await worker.sync_once()
    await let_probes_run()
    await worker.sync_once()
    execs = [c[2] for c in host.runtime.calls if c[0] == "exec"]
    assert execs == [("started",), ("ready",)]
    app = host.container_status("app")
    assert app["started"] is True and app["ready"] is True


async def test_startup_probe_failure_restarts_the_container(host: FakeHost) -> None:
    host.runtime.exec_handler = lambda _cid, _cmd: 1
    container = {"name": "app", "startupProbe": exec_probe("started", failureThreshold=1)}
    worker = worker_for(host, make_pod([container]))
    await worker.sync_once()
    await worker.sync_once()
    await let_probes_run()
    await worker.sync_once()
    assert ("Normal", "Killing", "Container app failed startup probe, will be restarted") in (
        host.recorder.events
    )
    await worker.sync_once()
    assert host.runtime.started() == ["app", "app"]


# -- graceful termination ----------------------------------------------------------------------


def _being_deleted(host: FakeHost, grace_s: int | None) -> None:
    meta = host.pods[UID]["metadata"]
    meta["deletionTimestamp"] = "2026-01-02T03:05:00Z"
    if grace_s is not None:
        meta["deletionGracePeriodSeconds"] = grace_s


async def test_graceful_termination_runs_pre_stop_then_stops_with_the_grace_left(
    host: FakeHost,
) -> None:
    def pre_stop_takes_5s(_cid: str, cmd: Sequence[str]) -> int:
        if list(cmd) == ["drain"]:
            host.clock.advance(5)
        return 0

    host.runtime.exec_handler = pre_stop_takes_5s
    container = {"name": "app", "lifecycle": {"preStop": {"exec": {"command": ["drain"]}}}}
    pod = make_pod([container], terminationGracePeriodSeconds=45)
    worker = worker_for(host, pod)
    await worker.sync_once()
    _being_deleted(host, 45)

    assert await worker.sync_once() is None
    assert worker.terminated
    calls = host.runtime.calls
    pre_stop = calls.index(("exec", "app", ("drain",)))
    stop = calls.index(("stop", "app", 40))  # the SIGKILL deadline: 45 s minus the hook's 5 s
    assert pre_stop < stop
    assert calls.index(("stop_pod_sandbox", "sandbox-0")) > stop
    assert ("remove", "app") in calls and ("remove_pod_sandbox", "sandbox-0") in calls
    assert "Killing" in host.recorder.reasons()
    # Not ready from the start of the grace period; then cleaned up and the object deleted.
    assert host.status_manager.deleted == [UID]
    assert host.volumes.torn_down == [UID]
    assert host.cgroups.removed == [f"/kubepods/besteffort/pod{UID}"]


async def test_termination_grace_period_seconds_is_honoured(host: FakeHost) -> None:
    pod = make_pod([{"name": "app"}, {"name": "side"}], terminationGracePeriodSeconds=7)
    worker = worker_for(host, pod)
    await worker.sync_once()
    _being_deleted(host, None)  # no deletion grace: the spec's applies
    await worker.sync_once()
    stops = sorted(c for c in host.runtime.calls if c[0] == "stop")
    assert stops == [("stop", "app", 7), ("stop", "side", 7)]


async def test_deletion_grace_period_overrides_the_spec(host: FakeHost) -> None:
    pod = make_pod([{"name": "app"}], terminationGracePeriodSeconds=30)
    worker = worker_for(host, pod)
    await worker.sync_once()
    _being_deleted(host, 0)  # kubectl delete --grace-period=0 --force
    await worker.sync_once()
    assert ("stop", "app", 0) in host.runtime.calls


async def test_terminating_pod_reports_not_ready_before_stopping(host: FakeHost) -> None:
    seen: list[str] = []

    def record_ready(_cid: str, cmd: Sequence[str]) -> int:
        seen.append(host.condition("Ready")["status"])
        return 0

    host.runtime.exec_handler = record_ready
    container = {"name": "app", "lifecycle": {"preStop": {"exec": {"command": ["drain"]}}}}
    worker = worker_for(host, make_pod([container]))
    await worker.sync_once()
    assert host.condition("Ready")["status"] == "True"
    _being_deleted(host, 30)
    await worker.sync_once()
    assert seen == ["False"]  # Services stop sending before the preStop hook runs


async def test_a_gone_pod_is_cleaned_up_without_deleting_an_object(host: FakeHost) -> None:
    worker = worker_for(host, make_pod([{"name": "app"}]))
    await worker.sync_once()
    del host.pods[UID]  # deleted from the API while the kubelet was away
    await worker.sync_once()
    assert worker.terminated
    assert host.runtime.runs == {} and host.runtime.sandboxes == {}
    assert host.status_manager.deleted == []
