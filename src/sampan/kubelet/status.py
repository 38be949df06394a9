"""Pod status from what the runtime reports: phase, conditions, container statuses.

Pure functions (no I/O): the pod worker gathers the CRI facts (``ContainerFacts``), the probe
verdicts and the waiting reasons it decided, and ``pod_status`` turns them into the
``status`` the API should show. ``status_patch`` diffs it against the current status so that
only changed fields are written (as a merge patch on ``pods/status``).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sampan.api import times

__all__ = [
    "ContainerFacts",
    "container_status",
    "pod_phase",
    "rfc3339",
    "rfc3339_ns",
    "status_patch",
    "with_conditions",
]


rfc3339 = times.rfc3339


def rfc3339_ns(ns: int) -> str:
    return rfc3339(datetime.fromtimestamp(ns / 1e9, UTC)) if ns > 0 else ""


@dataclass
class ContainerFacts:
    """What the pod worker knows about one container name (from CRI and its own state)."""

    name: str
    image: str
    restart_count: int = 0
    container_id: str = ""
    image_id: str = ""
    state: str = "waiting"  # waiting | running | terminated
    started_at_ns: int = 0
    finished_at_ns: int = 0
    exit_code: int = 0
    reason: str = ""
    message: str = ""
    ready: bool = False
    started: bool = False
    waiting_reason: str = ""
    waiting_message: str = ""
    last: ContainerFacts | None = field(default=None, repr=False)


def _terminated(facts: ContainerFacts) -> dict[str, Any]:
    terminated: dict[str, Any] = {
        "exitCode": facts.exit_code,
        "reason": facts.reason or ("Completed" if facts.exit_code == 0 else "Error"),
        "startedAt": rfc3339_ns(facts.started_at_ns) or None,
        "finishedAt": rfc3339_ns(facts.finished_at_ns) or None,
        "containerID": facts.container_id or None,
    }
    if facts.message:
        terminated["message"] = facts.message
    return {k: v for k, v in terminated.items() if v is not None}


def container_status(facts: ContainerFacts) -> dict[str, Any]:
    if facts.state == "running":
        state: dict[str, Any] = {"running": {"startedAt": rfc3339_ns(facts.started_at_ns)}}
    elif facts.state == "terminated" and not facts.waiting_reason:
        state = {"terminated": _terminated(facts)}
    else:
        waiting: dict[str, Any] = {"reason": facts.waiting_reason or "ContainerCreating"}
        if facts.waiting_message:
            waiting["message"] = facts.waiting_message
        state = {"waiting": waiting}
    last: dict[str, Any] = {}
    previous = facts.last
    if facts.state == "terminated" and facts.waiting_reason:
        previous = facts  # waiting to restart: the run that ended is the last state
    if previous is not None and previous.container_id:
        last = {"terminated": _terminated(previous)}
    status: dict[str, Any] = {
        "name": facts.name,
        "state": state,
        "lastState": last,
        "ready": facts.ready,
        "restartCount": facts.restart_count,
        "image": facts.image,
        "imageID": facts.image_id,
        "started": facts.started if facts.state == "running" else False,
    }
    if facts.container_id:
        status["containerID"] = f"containerd://{facts.container_id}"
    return status


def pod_phase(
    restart_policy: str,
    init_done: bool,
    init_failed: bool,
    statuses: Sequence[Mapping[str, Any]],
) -> str:
    """Upstream's getPhase over the app container statuses."""
    if init_failed and restart_policy == "Never":
        return "Failed"
    if not init_done:
        return "Pending"
    running = waiting = stopped = succeeded = failed = 0
    for status in statuses:
        state = status.get("state") or {}
        if "running" in state:
            running += 1
        elif "terminated" in state:
            stopped += 1
            if state["terminated"].get("exitCode") == 0:
                succeeded += 1
            else:
                failed += 1
        elif (status.get("lastState") or {}).get("terminated"):
            stopped += 1
        else:
            waiting += 1
    if waiting > 0:
        return "Pending"
    if running > 0:
        return "Running"
    if stopped == len(statuses) and stopped > 0:
        if restart_policy == "Always":
            return "Running"
        if restart_policy == "OnFailure":
            return "Succeeded" if succeeded == stopped else "Running"
        return "Failed" if failed > 0 else "Succeeded"
    return "Pending"


def with_conditions(
    old: Sequence[Mapping[str, Any]] | None,
    wanted: Sequence[tuple[str, bool, str, str]],
    now: str,
) -> list[dict[str, Any]]:
    """Conditions (type, status, reason, message); transition times kept when unchanged;
    conditions set by others (PodScheduled, DisruptionTarget...) are kept."""
    by_type = {c.get("type"): dict(c) for c in old or []}
    result: list[dict[str, Any]] = []
    wanted_types = {w[0] for w in wanted}
    for ctype, ok, reason, message in wanted:
        value = "True" if ok else "False"
        previous = by_type.get(ctype)
        condition: dict[str, Any] = {"type": ctype, "status": value}
        if previous is not None and previous.get("status") == value:
            condition["lastTransitionTime"] = previous.get("lastTransitionTime") or now
        else:
            condition["lastTransitionTime"] = now
        condition["lastProbeTime"] = None
        if reason:
            condition["reason"] = reason
        if message:
            condition["message"] = message
        result.append(condition)
    for ctype, condition in by_type.items():
        if ctype not in wanted_types:
            result.append(copy.deepcopy(condition))
    if "PodScheduled" not in by_type and "PodScheduled" not in wanted_types:
        result.append(
            {
                "type": "PodScheduled",
                "status": "True",
                "lastTransitionTime": now,
                "lastProbeTime": None,
            }
        )
    order = ["PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled"]
    result.sort(key=lambda c: order.index(c["type"]) if c["type"] in order else len(order))
    return result


def status_patch(current: Mapping[str, Any], wanted: Mapping[str, Any]) -> dict[str, Any]:
    """Top-level status keys that differ (None for keys to remove); empty: nothing to write."""
    patch: dict[str, Any] = {}
    for key, value in wanted.items():
        if current.get(key) != value:
            patch[key] = value
    return patch
