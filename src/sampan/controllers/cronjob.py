"""The CronJob controller: create Jobs on a cron schedule.

This module owns the reconcile of ``batch/v1`` CronJobs. Per CronJob key:

1. Read the Jobs it controls (controller reference) from the informer; keep ``status.active``
   equal to the unfinished ones; a Job seen finished updates ``lastSuccessfulTime`` (Event
   SawCompletedJob).
2. Delete finished Jobs beyond ``successfulJobsHistoryLimit`` / ``failedJobsHistoryLimit``,
   oldest first (Background propagation; Event SuccessfulDelete).
3. Unless suspended or being deleted: find the most recent schedule time that is due
   (``sampan.api.cron``, in ``spec.timeZone`` or UTC), counted from ``lastScheduleTime`` (or
   the creation time) and bounded by ``startingDeadlineSeconds``. More than
   ``MAX_MISSED_SCHEDULES`` missed times -> a TooManyMissedTimes warning, and only the latest
   is considered. A time older than the starting deadline is missed (MissSchedule).
4. ``concurrencyPolicy``: Allow runs Jobs side by side; Forbid skips the run while one is
   active (JobAlreadyActive); Replace deletes the active Jobs first.
5. Create the Job ``<cronjob>-<scheduled time in minutes since the epoch>`` from
   ``jobTemplate`` (annotation ``batch.kubernetes.io/cronjob-scheduled-timestamp``), record it
   in ``status.active`` and ``lastScheduleTime`` (Event SuccessfulCreate). The name makes the
   creation idempotent: an existing Job of that name that this CronJob owns counts as created.
6. Requeue the key for the next schedule time.

The last Job created for a CronJob is remembered in memory and counts as active until the
caches show it (a stale cache must not let Forbid start a second run).

Time comes from ``wall_now(ctx.clock)`` so tests drive schedules with a ``FakeClock``.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sampan.api.cron import CronError, Schedule, parse_schedule
from sampan.client.api import CRONJOBS, JOBS, AlreadyExistsError, NotFoundError
from sampan.client.events import TYPE_NORMAL, TYPE_WARNING
from sampan.client.informer import INDEX_OWNER_UID, object_key
from sampan.controllers.base import ControllerContext, QueueController
from sampan.controllers.podcontrol import (
    condition,
    controller_of,
    format_time,
    owner_reference,
    parse_time,
    wall_now,
)

__all__ = [
    "MAX_MISSED_SCHEDULES",
    "SCHEDULED_TIMESTAMP_ANNOTATION",
    "CronJobController",
    "job_name",
    "most_recent_schedule",
]

log = logging.getLogger(__name__)

MAX_MISSED_SCHEDULES = 100
SCHEDULED_TIMESTAMP_ANNOTATION = "batch.kubernetes.io/cronjob-scheduled-timestamp"
REQUEUE_SLACK_S = 0.1
"""Wake up this much after a schedule time, so the time is surely due."""

Obj = dict[str, Any]


def job_name(cronjob_name: str, scheduled: datetime) -> str:
    """``<cronjob>-<minutes since the epoch>``, as upstream."""
    return f"{cronjob_name}-{int(scheduled.timestamp()) // 60}"


def most_recent_schedule(
    schedule: Schedule, earliest: datetime, now: datetime
) -> tuple[datetime | None, int, datetime | None]:
    """(latest due time in (earliest, now], how many were due, next time after now)."""
    latest: datetime | None = None
    missed = 0
    t = schedule.next_after(earliest)
    while t is not None and t <= now:
        latest = t
        missed += 1
        if missed > MAX_MISSED_SCHEDULES:
            # Too many to walk one by one: jump near ``now`` and find the last one there.
            t = schedule.next_after(now - timedelta(minutes=1, seconds=now.second))
            while t is not None and t <= now:
                latest = t
                t = schedule.next_after(t)
            break
        t = schedule.next_after(t)
    return latest, missed, t


def _finished(job: Mapping[str, Any]) -> str | None:
    for kind in ("Complete", "Failed"):
        cond = condition(job, kind)
        if cond is not None and cond.get("status") == "True":
            return kind
    return None


def _job_ref(job: Mapping[str, Any]) -> Obj:
    meta = job.get("metadata") or {}
    return {
        "kind": "Job",
        "apiVersion": "batch/v1",
        "namespace": meta.get("namespace"),
        "name": meta.get("name"),
        "uid": meta.get("uid"),
        "resourceVersion": meta.get("resourceVersion"),
    }


class CronJobController(QueueController):
    """See the module docstring."""

    name = "cronjob"
    component = "cronjob-controller"

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.cronjobs = self.watch(ctx.informers.informer(CRONJOBS))
        self.jobs = self.watch(ctx.informers.informer(JOBS))
        self.recorder = ctx.recorder(self.component)
        # key -> reference of the last Job this controller created for it: until the caches
        # show it, it still counts as active (concurrency policies must see it)
        self._last_created: dict[str, Obj] = {}
        self.cronjobs.add_event_handler(
            on_add=self._enqueue,
            on_update=lambda old, new: self._enqueue(new),
            on_delete=self._deleted,
        )
        self.jobs.add_event_handler(
            on_add=self._job_event,
            on_update=lambda old, new: self._job_event(new),
            on_delete=self._job_event,
        )

    def _enqueue(self, obj: Mapping[str, Any]) -> None:
        self.queue.add(object_key(obj))

    def _deleted(self, obj: Mapping[str, Any]) -> None:
        self._last_created.pop(object_key(obj), None)
        self.queue.add(object_key(obj))

    def _job_event(self, job: Mapping[str, Any]) -> None:
        ref = controller_of(job)
        if ref is not None and ref.get("kind") == "CronJob":
            self.queue.add(f"{(job.get('metadata') or {}).get('namespace')}/{ref.get('name')}")

    async def reconcile(self, key: str) -> None:
        cached = self.cronjobs.cache.get(key)
        if cached is None:
            return
        cj = copy.deepcopy(cached)
        meta = cj["metadata"]
        namespace = meta["namespace"]
        spec = cj.get("spec") or {}
        now = wall_now(self.ctx.clock)
        status = copy.deepcopy(cj.get("status") or {})
        jobs = [
            j
            for j in self.jobs.cache.by_index(INDEX_OWNER_UID, meta["uid"])
            if (controller_of(j) or {}).get("uid") == meta["uid"]
        ]

        # 1. active list and completions
        active_uids = {ref.get("uid") for ref in status.get("active") or ()}
        active: list[Obj] = []
        for job in jobs:
            state = _finished(job)
            if state is None:
                active.append(_job_ref(job))
                continue
            if job["metadata"]["uid"] in active_uids:
                self.recorder.event(
                    cj,
                    TYPE_NORMAL,
                    "SawCompletedJob",
                    f"Saw completed job: {job['metadata']['name']}, status: {state}",
                )
            if state == "Complete":
                done = parse_time((job.get("status") or {}).get("completionTime"))
                last = parse_time(status.get("lastSuccessfulTime"))
                if done is not None and (last is None or done > last):
                    status["lastSuccessfulTime"] = format_time(done)
        # a recorded job the informer does not show (yet): ask the server before dropping it
        known = {j["metadata"]["uid"] for j in jobs}
        recorded = list(status.get("active") or ())
        last_created = self._last_created.get(key)
        if last_created is not None and all(
            r.get("uid") != last_created.get("uid") for r in recorded
        ):
            recorded.append(last_created)  # our own status write may not be in the cache yet
        listed = {r.get("uid") for r in active}
        for ref in recorded:
            if ref.get("uid") in known or ref.get("uid") in listed:
                continue
            listed.add(ref.get("uid"))
            try:
                job = await self.ctx.client.get(JOBS, ref.get("name") or "", namespace=namespace)
            except NotFoundError:
                continue
            if job["metadata"].get("uid") == ref.get("uid") and _finished(job) is None:
                active.append(ref)
        status["active"] = sorted(active, key=lambda r: r.get("name") or "")

        # 2. history limits
        await self._cleanup(cj, jobs)

        if meta.get("deletionTimestamp") or spec.get("suspend"):
            await self._write_status(cj, status)
            return

        # 3. schedule
        try:
            schedule = parse_schedule(spec.get("schedule") or "")
            zone = ZoneInfo(spec["timeZone"]) if spec.get("timeZone") else UTC
        except (CronError, ZoneInfoNotFoundError, ValueError) as exc:
            self.recorder.event(
                cj, TYPE_WARNING, "UnparseableSchedule", f"unparseable schedule: {exc}"
            )
            await self._write_status(cj, status)
            return
        local_now = now.astimezone(zone)
        earliest = parse_time(status.get("lastScheduleTime")) or parse_time(
            meta.get("creationTimestamp")
        )
        earliest = (earliest or now).astimezone(zone)
        deadline_s = spec.get("startingDeadlineSeconds")
        if deadline_s is not None:
            earliest = max(earliest, local_now - timedelta(seconds=int(deadline_s)))
        scheduled, missed, next_time = most_recent_schedule(schedule, earliest, local_now)
        if missed > MAX_MISSED_SCHEDULES:
            self.recorder.event(
                cj,
                TYPE_WARNING,
                "TooManyMissedTimes",
                f"too many missed start times: {missed}. Set or decrease "
                ".spec.startingDeadlineSeconds or check clock skew",
            )
        if scheduled is not None:
            await self._run(cj, status, scheduled, now, deadline_s)
        await self._write_status(cj, status)
        if next_time is not None:
            delay_s = (next_time - local_now).total_seconds() + REQUEUE_SLACK_S
            self.queue.add_after(key, max(delay_s, REQUEUE_SLACK_S))

    async def _run(
        self, cj: Obj, status: Obj, scheduled: datetime, now: datetime, deadline_s: Any
    ) -> None:
        spec = cj.get("spec") or {}
        namespace = cj["metadata"]["namespace"]
        if deadline_s is not None and (now - scheduled).total_seconds() > int(deadline_s):
            self.recorder.event(
                cj,
                TYPE_WARNING,
                "MissSchedule",
                f"Missed scheduled time to start a job: {scheduled.isoformat()}",
            )
            return
        name = job_name(cj["metadata"]["name"], scheduled)
        if any(ref.get("name") == name for ref in status.get("active") or ()):
            return
        policy = spec.get("concurrencyPolicy") or "Allow"
        if policy == "Forbid" and status.get("active"):
            self.recorder.event(
                cj,
                TYPE_NORMAL,
                "JobAlreadyActive",
                "Not starting job because prior execution is running and concurrency policy "
                "is Forbid",
            )
            return
        if policy == "Replace":
            for ref in list(status.get("active") or ()):
                try:
                    await self.ctx.client.delete(
                        JOBS, ref["name"], namespace=namespace, propagation_policy="Background"
                    )
                except NotFoundError:
                    pass
                self.recorder.event(
                    cj, TYPE_NORMAL, "SuccessfulDelete", f"Deleted job {ref['name']}"
                )
            status["active"] = []
        template = spec.get("jobTemplate") or {}
        tmeta = template.get("metadata") or {}
        annotations = dict(tmeta.get("annotations") or {})
        annotations[SCHEDULED_TIMESTAMP_ANNOTATION] = scheduled.isoformat()
        body = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": dict(tmeta.get("labels") or {}),
                "annotations": annotations,
                "ownerReferences": [owner_reference(cj, CRONJOBS.api_version, "CronJob")],
            },
            "spec": copy.deepcopy(template.get("spec") or {}),
        }
        try:
            job = await self.ctx.client.create(JOBS, body, namespace=namespace)
        except AlreadyExistsError:
            job = await self.ctx.client.get(JOBS, name, namespace=namespace)
            if (controller_of(job) or {}).get("uid") != cj["metadata"]["uid"]:
                self.recorder.event(
                    cj, TYPE_WARNING, "FailedCreate", f"Error creating job: {name} already exists"
                )
                return
            if _finished(job) is not None:
                status["lastScheduleTime"] = format_time(scheduled)
                return
        else:
            log.debug("cronjob %s: created job %s", object_key(cj), name)
            self.recorder.event(cj, TYPE_NORMAL, "SuccessfulCreate", f"Created job {name}")
        self._last_created[object_key(cj)] = _job_ref(job)
        status.setdefault("active", []).append(_job_ref(job))
        status["lastScheduleTime"] = format_time(scheduled)

    async def _cleanup(self, cj: Obj, jobs: list[Obj]) -> None:
        spec = cj.get("spec") or {}
        for state, limit_field in (
            ("Complete", "successfulJobsHistoryLimit"),
            ("Failed", "failedJobsHistoryLimit"),
        ):
            limit = spec.get(limit_field)
            if limit is None:
                continue
            finished = [
                j
                for j in jobs
                if _finished(j) == state and not j["metadata"].get("deletionTimestamp")
            ]
            extra = len(finished) - int(limit)
            if extra <= 0:
                continue

            def started(job: Mapping[str, Any]) -> tuple[str, str]:
                st = job.get("status") or {}
                start = st.get("startTime") or job["metadata"].get("creationTimestamp") or ""
                return start, job["metadata"]["name"]

            for job in sorted(finished, key=started)[:extra]:
                name = job["metadata"]["name"]
                try:
                    await self.ctx.client.delete(
                        JOBS,
                        name,
                        namespace=job["metadata"]["namespace"],
                        propagation_policy="Background",
                    )
                except NotFoundError:
                    continue
                log.debug("cronjob %s: deleted old job %s", object_key(cj), name)
                self.recorder.event(cj, TYPE_NORMAL, "SuccessfulDelete", f"Deleted job {name}")

    async def _write_status(self, cj: Obj, status: Obj) -> None:
        if not status.get("active"):
            status.pop("active", None)
        if status == (cj.get("status") or {}):
            return
        body = copy.deepcopy(cj)
        body["status"] = status
        try:
            await self.ctx.client.update_status(
                CRONJOBS, body, namespace=cj["metadata"]["namespace"]
            )
        except NotFoundError:
            return
