"""The TTL-after-finished controller: delete finished Jobs once their TTL has passed.

This module owns one rule: a Job with ``spec.ttlSecondsAfterFinished`` whose Complete or
Failed condition is True is deleted (Foreground propagation, so its pods go first, as
upstream) when ``finish time + TTL`` has passed. The finish time is ``status.completionTime``
or, for failed Jobs, the condition's ``lastTransitionTime``. Before deleting, the Job is read
again from the server (the cache may be stale: the TTL may have been changed or the Job
re-created), and the delete carries the uid as a precondition. A Job not yet expired is
requeued for its expiry time. Time comes from ``wall_now(ctx.clock)``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sampan.client.api import JOBS, ConflictError, NotFoundError
from sampan.client.informer import object_key
from sampan.controllers.base import ControllerContext, QueueController
from sampan.controllers.podcontrol import condition, parse_time, wall_now

__all__ = ["TTLAfterFinishedController", "expires_at"]

log = logging.getLogger(__name__)

REQUEUE_SLACK_S = 0.1


def expires_at(job: Mapping[str, Any]) -> datetime | None:
    """When a finished Job with a TTL may be deleted (None: no TTL, or not finished)."""
    ttl_s = (job.get("spec") or {}).get("ttlSecondsAfterFinished")
    if ttl_s is None or (job.get("metadata") or {}).get("deletionTimestamp"):
        return None
    finished: datetime | None = None
    for kind in ("Complete", "Failed"):
        cond = condition(job, kind)
        if cond is not None and cond.get("status") == "True":
            finished = parse_time((job.get("status") or {}).get("completionTime")) or parse_time(
                cond.get("lastTransitionTime")
            )
            break
    if finished is None:
        return None
    return finished + timedelta(seconds=int(ttl_s))


class TTLAfterFinishedController(QueueController):
    """See the module docstring."""

    name = "ttlafterfinished"

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.jobs = self.watch(ctx.informers.informer(JOBS))
        self.jobs.add_event_handler(
            on_add=self._maybe_enqueue,
            on_update=lambda old, new: self._maybe_enqueue(new),
        )

    def _maybe_enqueue(self, job: Mapping[str, Any]) -> None:
        if expires_at(job) is not None:
            self.queue.add(object_key(job))

    async def reconcile(self, key: str) -> None:
        cached = self.jobs.cache.get(key)
        if cached is None:
            return
        expiry = expires_at(cached)
        if expiry is None:
            return
        now = wall_now(self.ctx.clock)
        if now < expiry:
            self.queue.add_after(key, (expiry - now).total_seconds() + REQUEUE_SLACK_S)
            return
        meta = cached["metadata"]
        try:
            fresh = await self.ctx.client.get(JOBS, meta["name"], namespace=meta["namespace"])
        except NotFoundError:
            return
        fresh_expiry = expires_at(fresh)
        if fresh_expiry is None:
            return
        if now < fresh_expiry:
            self.queue.add_after(key, (fresh_expiry - now).total_seconds() + REQUEUE_SLACK_S)
            return
        try:
            await self.ctx.client.delete(
                JOBS,
                meta["name"],
                namespace=meta["namespace"],
                propagation_policy="Foreground",
                precondition_uid=fresh["metadata"]["uid"],
            )
        except (NotFoundError, ConflictError):
            return
        log.debug("ttlafterfinished: deleted job %s (expired %s)", key, fresh_expiry.isoformat())
