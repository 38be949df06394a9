"""The Job controller: run pods to completion.

This module owns the reconcile of ``batch/v1`` Jobs. Per Job key:

* **Claim** pods matching the Job's selector (the API server generates one from
  ``batch.kubernetes.io/controller-uid``) and classify them: active (running or pending, not
  being deleted), succeeded, failed (a pod deleted before it finished counts as failed).
* **Tracking with finalizers** (as upstream): every pod is created with the
  ``batch.kubernetes.io/job-tracking`` finalizer. A finished pod's uid is first written to
  ``status.uncountedTerminatedPods``; then its finalizer is removed; once the cache shows the
  pod without the finalizer (or gone), the uid moves into ``status.succeeded``/``failed``. So
  every pod is counted exactly once even if pods are deleted or the controller restarts.
* **Parallelism**: keep ``min(parallelism, completions - succeeded)`` pods active (work-queue
  Jobs without completions: ``parallelism`` until one succeeded). Indexed Jobs run one pod per
  index not yet completed (``batch.kubernetes.io/job-completion-index`` annotation and label,
  ``JOB_COMPLETION_INDEX`` env, hostname ``<job>-<index>``); ``status.completedIndexes`` is
  written as compressed ranges ("0-2,5").
* **Back-off**: after failures, new pods wait ``10 s * 2^(failures-1)``, capped at 6 minutes.
* **Failure**: more than ``backoffLimit`` failures (BackoffLimitExceeded), longer than
  ``activeDeadlineSeconds`` since ``startTime`` (DeadlineExceeded), or a ``podFailurePolicy``
  FailJob rule (PodFailurePolicy; Ignore rules do not count a failure). A failed Job's active
  pods are deleted. **Success**: enough completions -> Complete with ``completionTime``.
* **Orphans**: pods that keep the tracking finalizer after their Job is gone (deleted, or
  orphaned by the garbage collector) have the finalizer removed.
* **Suspend**: active pods are deleted; condition Suspended (JobSuspended / JobResumed); the
  start time restarts on resume.

Events: SuccessfulCreate, SuccessfulDelete, Completed, BackoffLimitExceeded, DeadlineExceeded,
PodFailurePolicy, Suspended, Resumed.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sampan.api.labels import SelectorError, selector_from_label_selector
from sampan.client.api import JOBS, PODS, NotFoundError, PatchType
from sampan.client.events import TYPE_NORMAL, TYPE_WARNING
from sampan.client.informer import INDEX_NAMESPACE, object_key
from sampan.controllers.base import ControllerContext, QueueController
from sampan.controllers.podcontrol import (
    INDEX_CONTROLLER,
    Expectations,
    PodControl,
    SlowStartError,
    claim,
    claim_candidates,
    condition,
    controller_of,
    deletion_rank,
    format_time,
    index_controller,
    is_pod_ready,
    parse_time,
    pod_from_template,
    set_condition,
    siblings_per_node,
    slow_start,
    wall_now,
)

__all__ = [
    "BACKOFF_BASE_S",
    "BACKOFF_MAX_S",
    "COMPLETION_INDEX_ANNOTATION",
    "JOB_TRACKING_FINALIZER",
    "JobController",
    "backoff_delay_s",
    "format_indexes",
    "match_pod_failure_policy",
    "parse_indexes",
]

log = logging.getLogger(__name__)

JOB_TRACKING_FINALIZER = "batch.kubernetes.io/job-tracking"
COMPLETION_INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
BACKOFF_BASE_S = 10.0
BACKOFF_MAX_S = 360.0
MAX_PODS_PER_SYNC = 500
ORPHAN_KEY_PREFIX = "orphan-pod:"
"""Queue keys of pods (not Jobs) whose tracking finalizer must go: they lost their Job."""
_INDEX_FIELD_PATH = f"metadata.annotations['{COMPLETION_INDEX_ANNOTATION}']"

Obj = dict[str, Any]


# ---------------------------------------------------------------------------------------------
# Pure helpers


def backoff_delay_s(failures: int) -> float:
    """How long new pods wait after ``failures`` failures (0 -> no wait)."""
    if failures <= 0:
        return 0.0
    return min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** min(failures - 1, 16))


def parse_indexes(text: str | None) -> set[int]:
    """ "0-2,5" -> {0, 1, 2, 5}."""
    result: set[int] = set()
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        low, sep, high = part.partition("-")
        if sep:
            result.update(range(int(low), int(high) + 1))
        else:
            result.add(int(low))
    return result


def format_indexes(indexes: Iterable[int]) -> str:
    """{0, 1, 2, 5} -> "0-2,5"."""
    ordered = sorted(set(indexes))
    parts: list[str] = []
    start = prev = None
    for index in ordered:
        if start is None:
            start = prev = index
        elif index == prev + 1:  # type: ignore[operator]
            prev = index
        else:
            parts.append(str(start) if start == prev else f"{start}-{prev}")
            start = prev = index
    if start is not None:
        parts.append(str(start) if start == prev else f"{start}-{prev}")
    return ",".join(parts)


def _exit_code_matches(rule: Mapping[str, Any], pod: Mapping[str, Any]) -> str | None:
    """The name of the first container whose exit code matches ``rule`` (None if none)."""
    container = rule.get("containerName")
    operator = rule.get("operator")
    values = set(rule.get("values") or ())
    statuses = [
        *((pod.get("status") or {}).get("initContainerStatuses") or ()),
        *((pod.get("status") or {}).get("containerStatuses") or ()),
    ]
    for status in statuses:
        if container and status.get("name") != container:
            continue
        terminated = (status.get("state") or {}).get("terminated")
        if not terminated:
            continue
        code = int(terminated.get("exitCode") or 0)
        if operator == "In" and code in values:
            return f"{status.get('name')}:{code}"
        if operator == "NotIn" and code not in values and code != 0:
            return f"{status.get('name')}:{code}"
    return None


def match_pod_failure_policy(
    policy: Mapping[str, Any] | None, pod: Mapping[str, Any]
) -> tuple[str, str] | None:
    """(action, message) of the first rule of ``policy`` matching the failed ``pod``."""
    if not policy:
        return None
    pod_name = (
        f"{(pod.get('metadata') or {}).get('namespace')}/{(pod.get('metadata') or {}).get('name')}"
    )
    for index, rule in enumerate(policy.get("rules") or ()):
        action = rule.get("action")
        on_codes = rule.get("onExitCodes")
        if on_codes:
            hit = _exit_code_matches(on_codes, pod)
            if hit:
                name, code = hit.split(":")
                return action, (
                    f"Container {name} for pod {pod_name} failed with exit code {code} "
                    f"matching {action} rule at index {index}"
                )
            continue
        for pattern in rule.get("onPodConditions") or ():
            cond = condition(pod, pattern.get("type"))
            if cond is not None and cond.get("status") == pattern.get("status", "True"):
                return action, (
                    f"Pod {pod_name} has condition {pattern.get('type')} matching {action} "
                    f"rule at index {index}"
                )
    return None


def _index_of(pod: Mapping[str, Any]) -> int | None:
    value = ((pod.get("metadata") or {}).get("annotations") or {}).get(COMPLETION_INDEX_ANNOTATION)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _finished(job: Mapping[str, Any]) -> str | None:
    for kind in ("Complete", "Failed"):
        cond = condition(job, kind)
        if cond is not None and cond.get("status") == "True":
            return kind
    return None


# ---------------------------------------------------------------------------------------------
# Controller


class JobController(QueueController):
    """See the module docstring."""

    name = "job"
    component = "job-controller"

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.jobs = self.watch(ctx.informers.informer(JOBS))
        self.pods = self.watch(ctx.informers.informer(PODS))
        self.pods.add_indexers({INDEX_CONTROLLER: index_controller})
        self.expectations = Expectations(ctx.clock)
        self.recorder = ctx.recorder(self.component)
        self.pod_control = PodControl(ctx.client, self.recorder)
        # key -> (failures seen, clock time when that count was first seen): back-off start
        self._failures: dict[str, tuple[int, float]] = {}
        self.jobs.add_event_handler(
            on_add=self._enqueue,
            on_update=lambda old, new: self._enqueue(new),
            on_delete=self._job_deleted,
        )
        self.pods.add_event_handler(
            on_add=self._pod_added,
            on_update=self._pod_updated,
            on_delete=self._pod_deleted,
        )

    def _enqueue(self, job: Mapping[str, Any]) -> None:
        self.queue.add(object_key(job))

    def _job_deleted(self, job: Mapping[str, Any]) -> None:
        key = object_key(job)
        self.expectations.forget(key)
        self._failures.pop(key, None)
        self.queue.add(key)

    def _job_key(self, pod: Mapping[str, Any]) -> str | None:
        ref = controller_of(pod)
        if ref is None or ref.get("kind") != "Job":
            return None
        return f"{(pod.get('metadata') or {}).get('namespace')}/{ref.get('name')}"

    def _pod_added(self, pod: Obj) -> None:
        key = self._job_key(pod)
        if key is not None:
            self.expectations.creation_observed(key)
            self.queue.add(key)
        else:
            self._maybe_orphan(pod)

    def _maybe_orphan(self, pod: Obj) -> None:
        """A pod that keeps our finalizer but lost its Job owner (orphaned) is released."""
        meta = pod.get("metadata") or {}
        if JOB_TRACKING_FINALIZER in (meta.get("finalizers") or ()) and controller_of(pod) is None:
            self.queue.add(ORPHAN_KEY_PREFIX + object_key(pod))

    def _pod_updated(self, old: Obj, new: Obj) -> None:
        key = self._job_key(new)
        if key is None:
            self._maybe_orphan(new)
            return
        if new["metadata"].get("deletionTimestamp") and not old["metadata"].get(
            "deletionTimestamp"
        ):
            # a pod with our finalizer is not gone yet, but its deletion was observed
            self.expectations.deletion_observed(key, object_key(new))
        self.queue.add(key)

    def _pod_deleted(self, pod: Obj) -> None:
        key = self._job_key(pod)
        if key is not None:
            self.expectations.deletion_observed(key, object_key(pod))
            self.queue.add(key)

    # -- reconcile --------------------------------------------------------------------------

    async def reconcile(self, key: str) -> None:
        if key.startswith(ORPHAN_KEY_PREFIX):
            pod = self.pods.cache.get(key.removeprefix(ORPHAN_KEY_PREFIX))
            if pod is not None and controller_of(pod) is None:
                if JOB_TRACKING_FINALIZER in (pod["metadata"].get("finalizers") or ()):
                    await self._remove_finalizer(pod)
            return
        cached = self.jobs.cache.get(key)
        if cached is None:
            await self._release_orphans(key)
            return
        job = copy.deepcopy(cached)
        spec = job.get("spec") or {}
        try:
            selector = selector_from_label_selector(spec.get("selector"))
        except SelectorError as exc:
            log.warning("job %s: invalid selector: %s", key, exc)
            return
        candidates = claim_candidates(self.pods.cache, job)
        pods = await claim(
            self.ctx.client, PODS, job, JOBS.api_version, "Job", selector, candidates
        )
        now = wall_now(self.ctx.clock)
        status = copy.deepcopy(job.get("status") or {})
        finished = _finished(job)

        # 1. account for finished pods (uncounted -> finalizer removed -> counted)
        await self._track_finished(job, status, pods)

        active = [
            p
            for p in pods
            if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
            and not p["metadata"].get("deletionTimestamp")
        ]
        indexed = spec.get("completionMode") == "Indexed"
        succeeded = int(status.get("succeeded") or 0)
        failed = int(status.get("failed") or 0)
        completions = spec.get("completions")
        parallelism = int(spec.get("parallelism") if spec.get("parallelism") is not None else 1)
        suspended = bool(spec.get("suspend"))

        if finished is None:
            # start time / suspension
            if suspended:
                if set_condition(status, "Suspended", "True", "JobSuspended", "Job suspended", now):
                    self.recorder.event(job, TYPE_NORMAL, "Suspended", "Job suspended")
            else:
                cond = condition({"status": status}, "Suspended")
                if cond is not None and cond.get("status") == "True":
                    set_condition(status, "Suspended", "False", "JobResumed", "Job resumed", now)
                    self.recorder.event(job, TYPE_NORMAL, "Resumed", "Job resumed")
                    status["startTime"] = format_time(now)
                status.setdefault("startTime", format_time(now))

            # Decide the outcome only once every finished pod is counted (as upstream), so
            # the final counts in the status are complete when Complete/Failed appears.
            settling = bool(status.get("uncountedTerminatedPods"))
            failure = None if settling else self._failure_reason(job, status, pods, failed, now)
            complete = False
            if failure is None and not settling:
                if indexed:
                    done = parse_indexes(status.get("completedIndexes"))
                    complete = completions is not None and len(done) >= int(completions)
                elif completions is not None:
                    complete = succeeded >= int(completions)
                else:
                    complete = succeeded > 0 and not active
            if failure is not None:
                reason, message = failure
                await self._delete_pods(key, job, active)
                active = []
                set_condition(status, "FailureTarget", "True", reason, message, now)
                set_condition(status, "Failed", "True", reason, message, now)
                self.recorder.event(job, TYPE_WARNING, reason, message)
                log.debug("job %s failed: %s", key, reason)
            elif complete:
                await self._delete_pods(key, job, active)
                active = []
                set_condition(
                    status,
                    "SuccessCriteriaMet",
                    "True",
                    "CompletionsReached",
                    "Reached expected number of succeeded pods",
                    now,
                )
                set_condition(
                    status,
                    "Complete",
                    "True",
                    "CompletionsReached",
                    "Reached expected number of succeeded pods",
                    now,
                )
                status["completionTime"] = format_time(now)
                self.recorder.event(job, TYPE_NORMAL, "Completed", "Job completed")
                log.debug("job %s complete", key)
            elif suspended:
                await self._delete_pods(key, job, active)
                active = []
            elif self.expectations.satisfied(key):
                active = await self._manage(key, job, status, pods, active, parallelism, failed)

        status["active"] = len(active)
        status["ready"] = sum(1 for p in active if is_pod_ready(p))
        status.setdefault("succeeded", 0)
        status.setdefault("failed", 0)
        for name in ("active", "succeeded", "failed"):
            if not status.get(name):
                status.pop(name, None)
        if status != (job.get("status") or {}):
            await self._write_status(job, status)
        # wake up for the active deadline
        deadline_s = spec.get("activeDeadlineSeconds")
        start = parse_time(status.get("startTime"))
        if finished is None and _finished({"status": status}) is None and deadline_s and start:
            remaining_s = int(deadline_s) - (now - start).total_seconds()
            self.queue.add_after(key, max(0.0, remaining_s) + 0.1)

    def _failure_reason(
        self, job: Obj, status: Obj, pods: list[Obj], failed: int, now: datetime
    ) -> tuple[str, str] | None:
        spec = job.get("spec") or {}
        policy = spec.get("podFailurePolicy")
        if policy:
            for pod in pods:
                if (pod.get("status") or {}).get("phase") != "Failed":
                    continue
                hit = match_pod_failure_policy(policy, pod)
                if hit is not None and hit[0] == "FailJob":
                    return "PodFailurePolicy", hit[1]
        limit = spec.get("backoffLimit")
        if limit is not None and failed > int(limit):
            return "BackoffLimitExceeded", "Job has reached the specified backoff limit"
        deadline_s = spec.get("activeDeadlineSeconds")
        start = parse_time(status.get("startTime"))
        if deadline_s is not None and start is not None and not spec.get("suspend"):
            if (now - start).total_seconds() >= int(deadline_s):
                return "DeadlineExceeded", "Job was active longer than specified deadline"
        return None

    async def _track_finished(self, job: Obj, status: Obj, pods: list[Obj]) -> None:
        """Move finished pods through uncountedTerminatedPods into the counters."""
        spec = job.get("spec") or {}
        policy = spec.get("podFailurePolicy")
        indexed = spec.get("completionMode") == "Indexed"
        uncounted = status.setdefault("uncountedTerminatedPods", {})
        unc_ok: list[str] = uncounted.setdefault("succeeded", [])
        unc_failed: list[str] = uncounted.setdefault("failed", [])
        by_uid = {p["metadata"]["uid"]: p for p in pods}
        completed = parse_indexes(status.get("completedIndexes")) if indexed else set()

        # (c) uids whose finalizer is gone (or pod gone) are counted now
        def settled(uid: str) -> bool:
            pod = by_uid.get(uid)
            return pod is None or JOB_TRACKING_FINALIZER not in (
                pod["metadata"].get("finalizers") or ()
            )

        for uid in [u for u in unc_ok if settled(u)]:
            unc_ok.remove(uid)
            status["succeeded"] = int(status.get("succeeded") or 0) + 1
        for uid in [u for u in unc_failed if settled(u)]:
            unc_failed.remove(uid)
            status["failed"] = int(status.get("failed") or 0) + 1

        # (a) newly finished pods are recorded as uncounted first
        newly: list[Obj] = []
        for pod in pods:
            meta = pod["metadata"]
            if JOB_TRACKING_FINALIZER not in (meta.get("finalizers") or ()):
                continue
            uid = meta["uid"]
            if uid in unc_ok or uid in unc_failed:
                newly.append(pod)
                continue
            phase = (pod.get("status") or {}).get("phase")
            if phase == "Succeeded":
                index = _index_of(pod)
                if indexed and index is not None:
                    if index in completed:
                        newly.append(pod)  # a duplicate success of a done index
                        continue
                    completed.add(index)
                unc_ok.append(uid)
            elif phase == "Failed" or meta.get("deletionTimestamp"):
                hit = match_pod_failure_policy(policy, pod) if phase == "Failed" else None
                if hit is not None and hit[0] == "Ignore":
                    newly.append(pod)
                    continue
                unc_failed.append(uid)
            else:
                continue
            newly.append(pod)
        if indexed:
            status["completedIndexes"] = format_indexes(completed)
        if not unc_ok:
            uncounted.pop("succeeded")
        if not unc_failed:
            uncounted.pop("failed")
        if not uncounted:
            status.pop("uncountedTerminatedPods")
        if not newly:
            return
        if status != (job.get("status") or {}):
            await self._write_status(job, status)
        # (b) the counts are safe in the status: release the pods
        await asyncio.gather(*(self._remove_finalizer(p) for p in newly))

    async def _release_orphans(self, key: str) -> None:
        """The Job is gone: its pods must not stay blocked by our tracking finalizer."""
        namespace, _, name = key.partition("/")
        live_uids = {
            j["metadata"]["uid"] for j in self.jobs.cache.by_index(INDEX_NAMESPACE, namespace)
        }
        orphans = [
            p
            for p in self.pods.cache.by_index(INDEX_NAMESPACE, namespace)
            if JOB_TRACKING_FINALIZER in (p["metadata"].get("finalizers") or ())
            and (ref := controller_of(p)) is not None
            and ref.get("kind") == "Job"
            and ref.get("name") == name
            and ref.get("uid") not in live_uids
        ]
        if orphans:
            log.debug("job %s gone: releasing %d pods", key, len(orphans))
            await asyncio.gather(*(self._remove_finalizer(p) for p in orphans))

    async def _remove_finalizer(self, pod: Obj) -> None:
        meta = pod["metadata"]
        finalizers = [f for f in meta.get("finalizers") or () if f != JOB_TRACKING_FINALIZER]
        patch = {
            "metadata": {
                "finalizers": finalizers or None,
                "resourceVersion": meta.get("resourceVersion"),
            }
        }
        try:
            await self.ctx.client.patch(
                PODS, meta["name"], patch, namespace=meta["namespace"], patch_type=PatchType.MERGE
            )
        except NotFoundError:
            pass

    async def _manage(
        self,
        key: str,
        job: Obj,
        status: Obj,
        pods: list[Obj],
        active: list[Obj],
        parallelism: int,
        failed: int,
    ) -> list[Obj]:
        spec = job.get("spec") or {}
        namespace = job["metadata"]["namespace"]
        completions = spec.get("completions")
        succeeded = int(status.get("succeeded") or 0) + len(
            (status.get("uncountedTerminatedPods") or {}).get("succeeded") or ()
        )
        indexed = spec.get("completionMode") == "Indexed"
        if indexed:
            done = parse_indexes(status.get("completedIndexes"))
            running = {_index_of(p) for p in active}
            todo = [i for i in range(int(completions or 0)) if i not in done and i not in running]
            want = min(parallelism, int(completions or 0) - len(done))
        elif completions is None:
            want = len(active) if succeeded > 0 else parallelism
            todo = []
        else:
            want = max(0, min(int(completions) - succeeded, parallelism))
            todo = []
        diff = len(active) - want
        if diff > 0:
            ranks = siblings_per_node(active)
            victims = sorted(active, key=lambda p: deletion_rank(p, ranks))[:diff]
            await self._delete_pods(key, job, victims)
            return [p for p in active if p not in victims]
        if diff == 0:
            return active
        # back-off after failures
        failures = failed + len((status.get("uncountedTerminatedPods") or {}).get("failed") or ())
        seen = self._failures.get(key)
        if seen is None or seen[0] != failures:
            seen = (failures, self.ctx.clock.now())
            self._failures[key] = seen
        wait_s = seen[1] + backoff_delay_s(failures) - self.ctx.clock.now() if failures else 0.0
        if wait_s > 0:
            log.debug("job %s: backing off %.1fs after %d failures", key, wait_s, failures)
            self.queue.add_after(key, wait_s)
            return active
        count = min(-diff, MAX_PODS_PER_SYNC)
        if indexed:
            todo = todo[:count]
            count = len(todo)
        if count <= 0:
            return active
        self.expectations.expect(key, adds=count)
        template = spec.get("template") or {}
        name = job["metadata"]["name"]

        async def create(i: int) -> None:
            extra_labels: dict[str, str] = {}
            if indexed:
                index = todo[i]
                body = pod_from_template(
                    template,
                    job,
                    JOBS.api_version,
                    "Job",
                    generate_name=f"{name}-{index}-",
                    extra_labels={COMPLETION_INDEX_ANNOTATION: str(index)},
                )
                body["metadata"].setdefault("annotations", {})[COMPLETION_INDEX_ANNOTATION] = str(
                    index
                )
                pod_spec = body["spec"]
                pod_spec.setdefault("hostname", f"{name}-{index}")
                for container in [
                    *(pod_spec.get("initContainers") or ()),
                    *(pod_spec.get("containers") or ()),
                ]:
                    env = container.setdefault("env", [])
                    if not any(e.get("name") == "JOB_COMPLETION_INDEX" for e in env):
                        env.append(
                            {
                                "name": "JOB_COMPLETION_INDEX",
                                "valueFrom": {"fieldRef": {"fieldPath": _INDEX_FIELD_PATH}},
                            }
                        )
            else:
                body = pod_from_template(
                    template, job, JOBS.api_version, "Job", extra_labels=extra_labels
                )
            body["metadata"]["finalizers"] = [
                *body["metadata"].get("finalizers", []),
                JOB_TRACKING_FINALIZER,
            ]
            try:
                await self.pod_control.create(namespace, body, job)
            except BaseException:
                self.expectations.creations_failed(key, 1)
                raise

        log.debug("job %s: creating %d pods", key, count)
        try:
            await slow_start(count, create)
        except SlowStartError as exc:
            if count - exc.attempted > 0:
                self.expectations.creations_failed(key, count - exc.attempted)
            raise
        return active

    async def _delete_pods(self, key: str, job: Obj, pods: list[Obj]) -> None:
        if not pods:
            return
        self.expectations.expect(key, deletes=[object_key(p) for p in pods])
        namespace = job["metadata"]["namespace"]

        async def delete(pod: Obj) -> None:
            try:
                await self.pod_control.delete(namespace, pod["metadata"]["name"], job)
            except BaseException:
                self.expectations.deletion_observed(key, object_key(pod))
                raise

        results = await asyncio.gather(*(delete(p) for p in pods), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _write_status(self, job: Obj, status: Obj) -> None:
        body = copy.deepcopy(job)
        body["status"] = status
        written = await self.ctx.client.update_status(
            JOBS, body, namespace=job["metadata"]["namespace"]
        )
        job["status"] = copy.deepcopy(written.get("status") or status)
        job["metadata"]["resourceVersion"] = written["metadata"]["resourceVersion"]
