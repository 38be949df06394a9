"""Job controller: pure helpers and jobs against a real API server (the test is the kubelet)."""

from __future__ import annotations

from typing import Any

import pytest

from sampan.client import Client
from sampan.client.api import EVENTS, JOBS, PODS
from sampan.client.workqueue import FakeClock
from sampan.controllers.job import (
    COMPLETION_INDEX_ANNOTATION,
    JOB_TRACKING_FINALIZER,
    JobController,
    backoff_delay_s,
    format_indexes,
    match_pod_failure_policy,
    parse_indexes,
)

from .conftest import eventually

NS = "default"


def test_indexes_round_trip() -> None:
    assert format_indexes({0, 1, 2, 5, 7, 8}) == "0-2,5,7-8"
    assert parse_indexes("0-2,5,7-8") == {0, 1, 2, 5, 7, 8}
    assert format_indexes(set()) == ""
    assert parse_indexes(None) == set()


def test_backoff_doubles_and_caps() -> None:
    assert [backoff_delay_s(n) for n in range(5)] == [0.0, 10.0, 20.0, 40.0, 80.0]
    assert backoff_delay_s(30) == 360.0


def failed_pod(code: int, container: str = "main", conditions: list | None = None) -> dict:
    return {
        "metadata": {"name": "p", "namespace": "ns"},
        "status": {
            "phase": "Failed",
            "conditions": conditions or [],
            "containerStatuses": [{"name": container, "state": {"terminated": {"exitCode": code}}}],
        },
    }


def test_pod_failure_policy_rules_in_order() -> None:
    policy = {
        "rules": [
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
            {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [42]}},
            {"action": "Count", "onExitCodes": {"operator": "NotIn", "values": [42]}},
        ]
    }
    action, message = match_pod_failure_policy(policy, failed_pod(42))
    assert action == "FailJob"
    assert "exit code 42" in message and "index 1" in message
    assert match_pod_failure_policy(policy, failed_pod(1))[0] == "Count"
    disrupted = failed_pod(1, conditions=[{"type": "DisruptionTarget", "status": "True"}])
    assert match_pod_failure_policy(policy, disrupted)[0] == "Ignore"
    assert match_pod_failure_policy(None, failed_pod(1)) is None


# ---------------------------------------------------------------------------------------------
# integration


def job_body(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": "busybox"}],
                }
            },
            **spec,
        },
    }


async def job_pods(client: Client, name: str) -> list[dict[str, Any]]:
    items = (
        await client.list(PODS, namespace=NS, label_selector=f"batch.kubernetes.io/job-name={name}")
    )["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


async def finish(client: Client, pod: dict[str, Any], phase: str, code: int = 0) -> None:
    await client.patch(
        PODS,
        pod["metadata"]["name"],
        {
            "status": {
                "phase": phase,
                "containerStatuses": [
                    {
                        "name": "main",
                        "ready": False,
                        "restartCount": 0,
                        "image": "busybox",
                        "imageID": "",
                        "state": {"terminated": {"exitCode": code}},
                    }
                ],
            }
        },
        namespace=NS,
        subresource="status",
    )


def cond(job: dict, kind: str) -> dict:
    for c in (job.get("status") or {}).get("conditions") or ():
        if c["type"] == kind:
            return c
    return {}


async def test_job_runs_completions_with_parallelism(client, run_controller) -> None:
    await run_controller(JobController)
    await client.create(JOBS, job_body("calc", completions=3, parallelism=2), namespace=NS)
    finished = 0
    while finished < 3:

        async def running():
            pods = [
                p
                for p in await job_pods(client, "calc")
                if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
            ]
            return pods or None

        pods = await running()
        pods = pods or await eventually(running)
        assert len(pods) <= 2
        pod = pods[0]
        assert JOB_TRACKING_FINALIZER in pod["metadata"]["finalizers"]
        assert pod["metadata"]["labels"]["batch.kubernetes.io/job-name"] == "calc"
        await finish(client, pod, "Succeeded")
        finished += 1

        async def counted(n=finished):
            job = await client.get(JOBS, "calc", namespace=NS)
            return (job.get("status") or {}).get("succeeded") == n

        await eventually(counted)

    async def complete():
        job = await client.get(JOBS, "calc", namespace=NS)
        return job if cond(job, "Complete").get("status") == "True" else None

    job = await eventually(complete)
    assert job["status"]["succeeded"] == 3
    assert job["status"].get("completionTime")
    assert "uncountedTerminatedPods" not in job["status"] or not any(
        job["status"]["uncountedTerminatedPods"].values()
    )
    # every pod released its tracking finalizer
    for pod in (await client.list(PODS, namespace=NS))["items"]:
        assert JOB_TRACKING_FINALIZER not in (pod["metadata"].get("finalizers") or ())


async def test_backoff_limit_fails_job_with_fake_clock(client, run_controller) -> None:
    clock = FakeClock(1_000_000.0)
    await run_controller(JobController, clock=clock)
    await client.create(JOBS, job_body("flaky", backoffLimit=1), namespace=NS)

    async def one_running():
        pods = [
            p
            for p in await job_pods(client, "flaky")
            if (p.get("status") or {}).get("phase") is None or p["status"].get("phase") == "Pending"
        ]
        return pods[0] if len(pods) == 1 else None

    await finish(client, await eventually(one_running), "Failed", code=1)

    async def failed_count(n):
        job = await client.get(JOBS, "flaky", namespace=NS)
        return (job.get("status") or {}).get("failed") == n

    await eventually(lambda: failed_count(1))
    # back-off: no replacement until 10 s have passed on the controller's clock
    assert not [p for p in await job_pods(client, "flaky") if p["status"].get("phase") == "Pending"]
    clock.advance(11)
    await finish(client, await eventually(one_running), "Failed", code=1)

    async def failed():
        job = await client.get(JOBS, "flaky", namespace=NS)
        return job if cond(job, "Failed").get("reason") == "BackoffLimitExceeded" else None

    job = await eventually(failed)
    assert job["status"]["failed"] == 2

    async def event():
        items = (await client.list(EVENTS, namespace=NS))["items"]
        return any(e["reason"] == "BackoffLimitExceeded" for e in items)

    await eventually(event)


async def test_indexed_job_and_failure_policy(client, run_controller) -> None:
    await run_controller(JobController)
    await client.create(
        JOBS,
        job_body("idx", completions=3, parallelism=3, completionMode="Indexed"),
        namespace=NS,
    )

    async def three():
        pods = await job_pods(client, "idx")
        return pods if len(pods) == 3 else None

    pods = await eventually(three)
    indexes = sorted(int(p["metadata"]["annotations"][COMPLETION_INDEX_ANNOTATION]) for p in pods)
    assert indexes == [0, 1, 2]
    for pod in pods:
        index = pod["metadata"]["annotations"][COMPLETION_INDEX_ANNOTATION]
        assert pod["metadata"]["name"].startswith(f"idx-{index}-")
        assert pod["spec"]["hostname"] == f"idx-{index}"
        env = pod["spec"]["containers"][0]["env"]
        assert env[0]["name"] == "JOB_COMPLETION_INDEX"
    by_index = {int(p["metadata"]["annotations"][COMPLETION_INDEX_ANNOTATION]): p for p in pods}
    await finish(client, by_index[0], "Succeeded")
    await finish(client, by_index[2], "Succeeded")

    async def partial():
        job = await client.get(JOBS, "idx", namespace=NS)
        return (job.get("status") or {}).get("completedIndexes") == "0,2"

    await eventually(partial)
    await finish(client, by_index[1], "Succeeded")

    async def complete():
        job = await client.get(JOBS, "idx", namespace=NS)
        return job if cond(job, "Complete").get("status") == "True" else None

    job = await eventually(complete)
    assert job["status"]["completedIndexes"] == "0-2"

    # podFailurePolicy FailJob on exit code 42
    policy = {"rules": [{"action": "FailJob", "onExitCodes": {"operator": "In", "values": [42]}}]}
    await client.create(
        JOBS, job_body("pfp", backoffLimit=6, podFailurePolicy=policy), namespace=NS
    )

    async def one():
        pods = await job_pods(client, "pfp")
        return pods[0] if pods else None

    await finish(client, await eventually(one), "Failed", code=42)

    async def failed():
        job = await client.get(JOBS, "pfp", namespace=NS)
        return job if cond(job, "Failed").get("reason") == "PodFailurePolicy" else None

    await eventually(failed)


async def test_active_deadline_and_suspend(client, run_controller) -> None:
    clock = FakeClock(2_000_000.0)
    await run_controller(JobController, clock=clock)
    await client.create(JOBS, job_body("slow", activeDeadlineSeconds=30), namespace=NS)

    async def started():
        return bool(await job_pods(client, "slow"))

    await eventually(started)
    clock.advance(31)

    async def deadline():
        job = await client.get(JOBS, "slow", namespace=NS)
        return job if cond(job, "Failed").get("reason") == "DeadlineExceeded" else None

    await eventually(deadline)

    async def gone():
        return not await job_pods(client, "slow")

    await eventually(gone)

    await client.create(
        JOBS, job_body("later", suspend=True, parallelism=2, completions=2), namespace=NS
    )

    async def suspended():
        job = await client.get(JOBS, "later", namespace=NS)
        return cond(job, "Suspended").get("status") == "True"

    await eventually(suspended)
    assert not await job_pods(client, "later")
    await client.patch(JOBS, "later", {"spec": {"suspend": False}}, namespace=NS)

    async def resumed():
        pods = await job_pods(client, "later")
        job = await client.get(JOBS, "later", namespace=NS)
        return len(pods) == 2 and cond(job, "Suspended").get("status") == "False"

    await eventually(resumed)


@pytest.mark.parametrize("mode", ["NonIndexed"])
async def test_work_queue_job_completes_when_one_succeeds(client, run_controller, mode) -> None:
    await run_controller(JobController)
    await client.create(JOBS, job_body("wq", parallelism=2), namespace=NS)

    async def two():
        pods = await job_pods(client, "wq")
        return pods if len(pods) == 2 else None

    pods = await eventually(two)
    await finish(client, pods[0], "Succeeded")
    await finish(client, pods[1], "Succeeded")

    async def complete():
        job = await client.get(JOBS, "wq", namespace=NS)
        return job if cond(job, "Complete").get("status") == "True" else None

    job = await eventually(complete)
    assert job["status"]["succeeded"] == 2


async def test_deleted_job_releases_its_pods(client, run_controller) -> None:
    await run_controller(JobController)
    for name in ("gone", "orphaned"):
        await client.create(JOBS, job_body(name), namespace=NS)

    async def one(name):
        pods = await job_pods(client, name)
        return pods[0] if pods else None

    gone = await eventually(lambda: one("gone"))
    orphaned = await eventually(lambda: one("orphaned"))
    assert JOB_TRACKING_FINALIZER in gone["metadata"]["finalizers"]
    # the Job disappears (no garbage collector runs here: its pod stays)
    await client.delete(JOBS, "gone", namespace=NS, propagation_policy="Background")
    # the pod loses its owner reference (what the GC's Orphan policy does)
    await client.patch(
        PODS, orphaned["metadata"]["name"], {"metadata": {"ownerReferences": None}}, namespace=NS
    )

    async def released(pod):
        got = await client.get(PODS, pod["metadata"]["name"], namespace=NS)
        return JOB_TRACKING_FINALIZER not in (got["metadata"].get("finalizers") or ())

    await eventually(lambda: released(gone))
    await eventually(lambda: released(orphaned))
