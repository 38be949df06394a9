"""pods/eviction through the real API server: budgets allow, refuse (429) or are skipped."""

from __future__ import annotations

PODS = "/api/v1/namespaces/default/pods"
PDBS = "/apis/policy/v1/namespaces/default/poddisruptionbudgets"


def eviction(name: str) -> dict:
    return {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name}}


async def running_pod(harness, name: str, *, ready: bool = True) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "web"}},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox"}]},
    }
    status, created = await harness.request("POST", PODS, body)
    assert status == 201, created
    created["status"] = {
        "phase": "Running",
        "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
    }
    status, _ = await harness.request("PUT", f"{PODS}/{name}/status", created)
    assert status == 200


async def budget(harness, allowed: int) -> None:
    status, pdb = await harness.request(
        "POST",
        PDBS,
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": "web"},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}},
        },
    )
    assert status == 201, pdb
    pdb["status"] = {
        "disruptionsAllowed": allowed,
        "currentHealthy": 2,
        "desiredHealthy": 1,
        "expectedPods": 2,
        "observedGeneration": pdb["metadata"]["generation"],
    }
    status, body = await harness.request("PUT", f"{PDBS}/web/status", pdb)
    assert status == 200, body


async def test_eviction_respects_budget(harness):
    await running_pod(harness, "a")
    await running_pod(harness, "b")
    await budget(harness, 1)

    status, body = await harness.request("POST", f"{PODS}/a/eviction", eviction("a"))
    assert status == 201, body
    assert body["status"] == "Success"
    status, pod = await harness.request("GET", f"{PODS}/a")
    assert status == 200 and pod["metadata"]["deletionTimestamp"]  # graceful: on a node
    status, pdb = await harness.request("GET", f"{PDBS}/web")
    assert pdb["status"]["disruptionsAllowed"] == 0
    assert set(pdb["status"]["disruptedPods"]) == {"a"}

    status, body = await harness.request("POST", f"{PODS}/b/eviction", eviction("b"))
    assert status == 429
    assert body["message"] == "Cannot evict pod as it would violate the pod's disruption budget."
    (cause,) = body["details"]["causes"]
    assert cause["reason"] == "DisruptionBudget"
    assert cause["message"] == "The disruption budget web needs 1 healthy pods and has 2 currently"
    status, pod = await harness.request("GET", f"{PODS}/b")
    assert "deletionTimestamp" not in pod["metadata"]

    status, body = await harness.request("POST", f"{PODS}/missing/eviction", eviction("missing"))
    assert status == 404


async def test_unbudgeted_and_pending_pods_are_evicted(harness):
    status, _ = await harness.request(
        "POST",
        PODS,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "pending", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
        },
    )
    assert status == 201
    await budget(harness, 0)
    # Pending pods ignore budgets; an unscheduled pod is deleted at once.
    status, body = await harness.request("POST", f"{PODS}/pending/eviction", eviction("pending"))
    assert status == 201, body
    status, _ = await harness.request("GET", f"{PODS}/pending")
    assert status == 404
