"""CronJob controller: schedule arithmetic and runs driven by a fake clock."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from sampan.api.cron import parse_schedule
from sampan.client import Client
from sampan.client.api import CRONJOBS, EVENTS, JOBS
from sampan.client.workqueue import FakeClock
from sampan.controllers.cronjob import (
    SCHEDULED_TIMESTAMP_ANNOTATION,
    CronJobController,
    job_name,
    most_recent_schedule,
)
from sampan.controllers.podcontrol import format_time, wall_now

from .conftest import eventually

NS = "default"


def test_job_name_uses_minutes_since_epoch() -> None:
    t = datetime(2026, 1, 1, 12, 30, tzinfo=UTC)
    assert job_name("hello", t) == f"hello-{int(t.timestamp()) // 60}"


def test_most_recent_schedule_counts_missed_runs() -> None:
    every_5 = parse_schedule("*/5 * * * *")
    earliest = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    now = datetime(2026, 1, 1, 12, 17, 30, tzinfo=UTC)
    latest, missed, nxt = most_recent_schedule(every_5, earliest, now)
    assert latest == datetime(2026, 1, 1, 12, 15, tzinfo=UTC)
    assert missed == 3
    assert nxt == datetime(2026, 1, 1, 12, 20, tzinfo=UTC)
    assert most_recent_schedule(every_5, now, now)[0] is None
    # many missed: still the latest one
    every_min = parse_schedule("* * * * *")
    latest, missed, _ = most_recent_schedule(every_min, earliest, datetime(2026, 1, 2, tzinfo=UTC))
    assert latest == datetime(2026, 1, 2, tzinfo=UTC)
    assert missed > 100


def cronjob_body(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "schedule": "* * * * *",
            "jobTemplate": {
                "metadata": {"labels": {"from": name}},
                "spec": {
                    "template": {
                        "spec": {
                            "restartPolicy": "Never",
                            "containers": [{"name": "c", "image": "busybox"}],
                        }
                    }
                },
            },
            **spec,
        },
    }


async def owned_jobs(client: Client, uid: str) -> list[dict[str, Any]]:
    items = (await client.list(JOBS, namespace=NS))["items"]
    return sorted(
        (
            j
            for j in items
            if any(r["uid"] == uid for r in j["metadata"].get("ownerReferences") or ())
        ),
        key=lambda j: j["metadata"]["name"],
    )


async def complete(client: Client, job: dict[str, Any], now: datetime) -> None:
    stamp = format_time(now)
    await client.patch(
        JOBS,
        job["metadata"]["name"],
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


async def test_cronjob_runs_forbids_overlap_and_keeps_history(client, run_controller) -> None:
    clock = FakeClock(time.time())
    await run_controller(CronJobController, clock=clock)
    cj = await client.create(
        CRONJOBS,
        cronjob_body("tick", concurrencyPolicy="Forbid", successfulJobsHistoryLimit=1),
        namespace=NS,
    )
    uid = cj["metadata"]["uid"]
    clock.advance(61)

    async def jobs(n: int):
        got = await owned_jobs(client, uid)
        return got if len(got) == n else None

    [first] = await eventually(lambda: jobs(1))
    scheduled = datetime.fromisoformat(
        first["metadata"]["annotations"][SCHEDULED_TIMESTAMP_ANNOTATION]
    )
    assert first["metadata"]["name"] == job_name("tick", scheduled)
    assert first["metadata"]["labels"]["from"] == "tick"
    assert first["metadata"]["ownerReferences"][0]["kind"] == "CronJob"

    async def status_active():
        got = await client.get(CRONJOBS, "tick", namespace=NS)
        st = got.get("status") or {}
        return st if st.get("active") and st.get("lastScheduleTime") else None

    st = await eventually(status_active)
    assert st["active"][0]["name"] == first["metadata"]["name"]

    # Forbid: the next minute passes while the first job runs -> no second job
    clock.advance(60)

    async def forbidden():
        items = (await client.list(EVENTS, namespace=NS))["items"]
        return any(e["reason"] == "JobAlreadyActive" for e in items)

    await eventually(forbidden)
    assert len(await owned_jobs(client, uid)) == 1

    # the job completes: the skipped run (still due: no starting deadline) starts now
    await complete(client, first, wall_now(clock))

    async def second_job():
        got = await owned_jobs(client, uid)
        later = [j for j in got if j["metadata"]["name"] != first["metadata"]["name"]]
        return later[0] if later else None

    second = await eventually(second_job)
    await complete(client, second, wall_now(clock))

    async def trimmed():
        got = await owned_jobs(client, uid)
        names = [j["metadata"]["name"] for j in got if not j["metadata"].get("deletionTimestamp")]
        return names == [second["metadata"]["name"]]

    await eventually(trimmed)

    async def success_time():
        got = await client.get(CRONJOBS, "tick", namespace=NS)
        return (got.get("status") or {}).get("lastSuccessfulTime")

    await eventually(success_time)


async def test_suspended_and_replace(client, run_controller) -> None:
    clock = FakeClock(time.time())
    await run_controller(CronJobController, clock=clock)
    sus = await client.create(CRONJOBS, cronjob_body("sleepy", suspend=True), namespace=NS)
    rep = await client.create(
        CRONJOBS, cronjob_body("swap", concurrencyPolicy="Replace"), namespace=NS
    )
    clock.advance(61)

    async def one():
        got = await owned_jobs(client, rep["metadata"]["uid"])
        return got if len(got) == 1 else None

    [first] = await eventually(one)
    clock.advance(60)

    async def replaced():
        got = await owned_jobs(client, rep["metadata"]["uid"])
        alive = [j for j in got if not j["metadata"].get("deletionTimestamp")]
        names = {j["metadata"]["name"] for j in alive}
        return alive if len(alive) == 1 and first["metadata"]["name"] not in names else None

    await eventually(replaced)
    assert await owned_jobs(client, sus["metadata"]["uid"]) == []


def test_schedule_in_a_time_zone() -> None:
    from zoneinfo import ZoneInfo

    tokyo = ZoneInfo("Asia/Tokyo")
    nine_am = parse_schedule("0 9 * * *")
    # 00:30 UTC is 09:30 in Tokyo: the 09:00 Tokyo run (00:00 UTC) is due
    now = datetime(2026, 3, 1, 0, 30, tzinfo=UTC).astimezone(tokyo)
    earliest = datetime(2026, 2, 28, 12, 0, tzinfo=UTC).astimezone(tokyo)
    latest, missed, nxt = most_recent_schedule(nine_am, earliest, now)
    assert latest is not None and missed == 1
    assert latest.astimezone(UTC) == datetime(2026, 3, 1, 0, 0, tzinfo=UTC)
    assert nxt is not None and nxt.astimezone(UTC) == datetime(2026, 3, 2, 0, 0, tzinfo=UTC)
    assert job_name("daily", latest) == f"daily-{int(latest.timestamp()) // 60}"
