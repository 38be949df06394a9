"""Container probes (startup, liveness, readiness) and lifecycle hook actions.

``ProbeManager`` runs one named task per (container id, probe kind) while the container runs
and keeps the latest verdicts: ``started(cid)``, ``ready(cid)``, ``liveness_failed(cid)``.
When a verdict changes it calls ``on_change(pod_uid)`` so the pod worker re-syncs (status, or
a restart after a liveness failure). Upstream's semantics: nothing but the startup probe runs
until it succeeds; a readiness probe starts "not ready"; thresholds count consecutive results.

``run_action`` executes an exec / httpGet / tcpSocket / grpc action once (for probes and for
postStart/preStop hooks) and returns (success, message).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
import grpc
import grpc.aio

from sampan.kubelet.runtime import cri, pb
from sampan.tasks import log_task_end

__all__ = ["ExecRuntime", "ProbeManager", "ProbeTarget", "resolve_port", "run_action"]

log = logging.getLogger("sampan.kubelet.probes")

DEFAULT_PERIOD_S = 10
DEFAULT_TIMEOUT_S = 1
DEFAULT_FAILURE_THRESHOLD = 3
DEFAULT_SUCCESS_THRESHOLD = 1
MAX_PROBE_OUTPUT_CHARS = 10 * 1024
_GRPC_HEALTH_METHOD = "/grpc.health.v1.Health/Check"
_GRPC_SERVING = 1


class ExecRuntime(Protocol):
    """What actions need of the runtime: running a command in a container."""

    async def exec_sync(
        self, container_id: str, cmd: Sequence[str], *, timeout_s: int = 0
    ) -> pb.ExecSyncResponse: ...


@dataclass(frozen=True)
class ProbeTarget:
    """Where a probe or hook action runs: the container and the address to dial."""

    container_id: str
    host: str
    ports: Mapping[str, int] = field(default_factory=dict)  # named container ports


def resolve_port(port: Any, ports: Mapping[str, int]) -> int:
    if isinstance(port, int):
        return port
    if isinstance(port, str):
        if port.isdigit():
            return int(port)
        if port in ports:
            return ports[port]
    raise ValueError(f"unknown port {port!r}")


async def run_action(
    runtime: ExecRuntime,
    action: Mapping[str, Any],
    target: ProbeTarget,
    timeout_s: float,
) -> tuple[bool, str]:
    """Run one handler (exec, httpGet, tcpSocket, grpc); (success, message)."""
    try:
        if action.get("exec") is not None:
            command = list((action["exec"] or {}).get("command") or [])
            try:
                result = await runtime.exec_sync(
                    target.container_id, command, timeout_s=max(1, int(timeout_s))
                )
            except cri.DeadlineExceededError:
                return False, f"command {command} timed out"
            output = (result.stdout + result.stderr).decode(errors="replace")
            output = output[:MAX_PROBE_OUTPUT_CHARS]
            return result.exit_code == 0, output
        if action.get("httpGet") is not None:
            return await _http_get(action["httpGet"], target, timeout_s)
        if action.get("tcpSocket") is not None:
            spec = action["tcpSocket"]
            host = spec.get("host") or target.host
            port = resolve_port(spec.get("port"), target.ports)
            async with asyncio.timeout(timeout_s):
                _reader, writer = await asyncio.open_connection(host, port)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return True, ""
        if action.get("grpc") is not None:
            return await _grpc(action["grpc"], target, timeout_s)
        if action.get("sleep") is not None:
            await asyncio.sleep(float((action["sleep"] or {}).get("seconds") or 0))
            return True, ""
    except (OSError, TimeoutError, ValueError, cri.CRIError, aiohttp.ClientError) as exc:
        return False, str(exc) or type(exc).__name__
    return False, "no handler action"


async def _http_get(
    spec: Mapping[str, Any], target: ProbeTarget, timeout_s: float
) -> tuple[bool, str]:
    scheme = (spec.get("scheme") or "HTTP").lower()
    host = spec.get("host") or target.host
    port = resolve_port(spec.get("port"), target.ports)
    path = spec.get("path") or "/"
    if not path.startswith("/"):
        path = "/" + path
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    headers = {"User-Agent": "kube-probe/1.32", "Accept": "*/*"}
    for header in spec.get("httpHeaders") or []:
        headers[header.get("name", "")] = header.get("value", "")
    ssl_ctx: ssl.SSLContext | bool = False if scheme == "https" else True
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(
            f"{scheme}://{host}:{port}{path}",
            headers=headers,
            ssl=ssl_ctx,
            allow_redirects=False,
        ) as response,
    ):
        body = await response.content.read(MAX_PROBE_OUTPUT_CHARS)
        if 200 <= response.status < 400:
            return True, ""
        return False, f"HTTP probe failed with statuscode: {response.status} {body[:200]!r}"


async def _grpc(spec: Mapping[str, Any], target: ProbeTarget, timeout_s: float) -> tuple[bool, str]:
    port = int(spec.get("port") or 0)
    service = str(spec.get("service") or "").encode()
    request = b"\x0a" + bytes([len(service)]) + service if service else b""
    host = target.host if ":" not in target.host else f"[{target.host}]"
    async with grpc.aio.insecure_channel(f"{host}:{port}") as channel:
        call = channel.unary_unary(
            _GRPC_HEALTH_METHOD,
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        try:
            answer: bytes = await call(request, timeout=timeout_s)
        except grpc.aio.AioRpcError as exc:
            return False, f"rpc error: {exc.code().name}: {exc.details()}"
    # HealthCheckResponse { ServingStatus status = 1; } -> b"\x08\x01" when SERVING.
    status = answer[1] if len(answer) >= 2 and answer[0] == 0x08 else 0
    if status == _GRPC_SERVING:
        return True, ""
    return False, f"service unhealthy (responded with status {status})"


class _ProbeState:
    def __init__(self) -> None:
        self.started = False
        self.ready = False
        self.liveness_failed = False
        self.message = ""
        self.has_readiness = False
        self.tasks: list[asyncio.Task[None]] = []


class ProbeManager:
    """Runs probes of running containers; see the module docstring."""

    def __init__(
        self,
        runtime: Callable[[], ExecRuntime],
        on_change: Callable[[str], None],
        on_failure_event: Callable[[str, str, str, str], None] | None = None,
    ) -> None:
        self._runtime = runtime
        self._on_change = on_change
        self._on_event = on_failure_event
        self._states: dict[str, _ProbeState] = {}
        self._owner: dict[str, str] = {}  # container id -> pod uid

    def started(self, cid: str) -> bool:
        state = self._states.get(cid)
        return state.started if state else False

    def ready(self, cid: str) -> bool:
        state = self._states.get(cid)
        return state.ready if state else False

    def liveness_failed(self, cid: str) -> str | None:
        state = self._states.get(cid)
        return state.message if state and state.liveness_failed else None

    def tracked(self, cid: str) -> bool:
        return cid in self._states

    def ensure(
        self,
        pod_uid: str,
        container: Mapping[str, Any],
        target: ProbeTarget,
        *,
        pod_ref: Mapping[str, Any],
    ) -> None:
        """Start the probes of a running container (once per container id)."""
        cid = target.container_id
        if cid in self._states:
            return
        state = _ProbeState()
        self._states[cid] = state
        self._owner[cid] = pod_uid
        startup = container.get("startupProbe")
        readiness = container.get("readinessProbe")
        liveness = container.get("livenessProbe")
        state.started = startup is None
        state.has_readiness = readiness is not None
        state.ready = readiness is None and state.started
        name = container.get("name", "")
        started_event = asyncio.Event()
        if state.started:
            started_event.set()
        if startup is not None:
            state.tasks.append(
                self._spawn(pod_uid, cid, name, "startup", startup, target, started_event, pod_ref)
            )
        if readiness is not None:
            state.tasks.append(
                self._spawn(
                    pod_uid, cid, name, "readiness", readiness, target, started_event, pod_ref
                )
            )
        if liveness is not None:
            state.tasks.append(
                self._spawn(
                    pod_uid, cid, name, "liveness", liveness, target, started_event, pod_ref
                )
            )

    def _spawn(
        self,
        pod_uid: str,
        cid: str,
        name: str,
        kind: str,
        probe: Mapping[str, Any],
        target: ProbeTarget,
        started: asyncio.Event,
        pod_ref: Mapping[str, Any],
    ) -> asyncio.Task[None]:
        task = asyncio.create_task(
            self._run(pod_uid, cid, name, kind, probe, target, started, pod_ref),
            name=f"probe-{kind}-{name}-{cid[:12]}",
        )
        task.add_done_callback(log_task_end)
        return task

    async def _run(
        self,
        pod_uid: str,
        cid: str,
        name: str,
        kind: str,
        probe: Mapping[str, Any],
        target: ProbeTarget,
        started: asyncio.Event,
        pod_ref: Mapping[str, Any],
    ) -> None:
        state = self._states[cid]
        period_s = float(probe.get("periodSeconds") or DEFAULT_PERIOD_S)
        timeout_s = float(probe.get("timeoutSeconds") or DEFAULT_TIMEOUT_S)
        failure_threshold = int(probe.get("failureThreshold") or DEFAULT_FAILURE_THRESHOLD)
        success_threshold = int(probe.get("successThreshold") or DEFAULT_SUCCESS_THRESHOLD)
        if kind != "startup":
            await started.wait()
        await asyncio.sleep(float(probe.get("initialDelaySeconds") or 0))
        successes = failures = 0
        while True:
            ok, message = await run_action(self._runtime(), probe, target, timeout_s)
            if ok:
                successes, failures = successes + 1, 0
            else:
                successes, failures = 0, failures + 1
                if self._on_event is not None:
                    self._on_event(
                        pod_uid,
                        "Unhealthy",
                        f"{kind.capitalize()} probe failed: {message}".strip(),
                        name,
                    )
            if kind == "startup":
                if ok and successes >= 1:
                    state.started = True
                    if not state.has_readiness:
                        state.ready = True  # ready follows "started" without a readiness probe
                    started.set()
                    self._on_change(pod_uid)
                    return
                if failures >= failure_threshold:
                    state.liveness_failed = True
                    state.message = "failed startup probe"
                    self._on_change(pod_uid)
                    return
            elif kind == "readiness":
                new_ready = state.ready
                if ok and successes >= success_threshold:
                    new_ready = True
                elif not ok and failures >= failure_threshold:
                    new_ready = False
                if new_ready != state.ready:
                    state.ready = new_ready
                    self._on_change(pod_uid)
            elif kind == "liveness" and failures >= failure_threshold:
                state.liveness_failed = True
                state.message = "failed liveness probe"
                self._on_change(pod_uid)
                return
            await asyncio.sleep(period_s)

    async def forget(self, cid: str) -> None:
        """Stop the container's probes (it stopped or was removed)."""
        state = self._states.pop(cid, None)
        self._owner.pop(cid, None)
        if state is None:
            return
        for task in state.tasks:
            task.cancel()
        if state.tasks:
            await asyncio.wait(state.tasks)

    def containers_of(self, pod_uid: str) -> list[str]:
        return [cid for cid, uid in self._owner.items() if uid == pod_uid]

    async def stop(self) -> None:
        for cid in list(self._states):
            await self.forget(cid)
