"""TTL-after-finished: finished Jobs are deleted once their TTL passed (fake clock)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from sampan.client import NotFoundError
from sampan.client.api import JOBS
from sampan.client.workqueue import FakeClock
from sampan.controllers.podcontrol import format_time
from sampan.controllers.ttlafterfinished import TTLAfterFinishedController, expires_at

from .conftest import eventually

NS = "default"


def test_expires_at() -> None:
    done = datetime(2026, 1, 1, tzinfo=UTC)
    job = {
        "spec": {"ttlSecondsAfterFinished": 30},
        "status": {
            "completionTime": format_time(done),
            "conditions": [{"type": "Complete", "status": "True"}],
        },
    }
    assert expires_at(job) == datetime(2026, 1, 1, 0, 0, 30, tzinfo=UTC)
    assert expires_at({"spec": {}, "status": job["status"]}) is None
    assert expires_at({"spec": {"ttlSecondsAfterFinished": 1}, "status": {}}) is None
    failed = {
        "spec": {"ttlSecondsAfterFinished": 0},
        "status": {
            "conditions": [
                {"type": "Failed", "status": "True", "lastTransitionTime": format_time(done)}
            ]
        },
    }
    assert expires_at(failed) == done


async def test_finished_job_deleted_after_ttl(client, run_controller) -> None:
    clock = FakeClock(time.time())
    await run_controller(TTLAfterFinishedController, clock=clock)
    body = {
        "metadata": {"name": "short", "namespace": NS},
        "spec": {
            "ttlSecondsAfterFinished": 60,
            "template": {
                "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x"}]}
            },
        },
    }
    await client.create(JOBS, body, namespace=NS)
    stamp = format_time(datetime.fromtimestamp(clock.now(), UTC))
    await client.patch(
        JOBS,
        "short",
        {
            "status": {
                "startTime": stamp,
                "completionTime": stamp,
                "succeeded": 1,
                "conditions": [
                    {"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": stamp},
                    {"type": "Complete", "status": "True", "lastTransitionTime": stamp},
                ],
            }
        },
        namespace=NS,
        subresource="status",
    )

    async def waiting():
        ctrl_sleepers = clock.sleepers
        return ctrl_sleepers > 0

    await eventually(waiting)
    await client.get(JOBS, "short", namespace=NS)  # still there before the TTL
    clock.advance(61)

    async def gone():
        try:
            job = await client.get(JOBS, "short", namespace=NS)
        except NotFoundError:
            return True
        return bool(job["metadata"].get("deletionTimestamp"))

    await eventually(gone)
