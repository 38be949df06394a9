"""Integration tests: the scheduler against a real API server with simulated nodes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sampan.client import Client, NotFoundError
from sampan.client.api import (
    EVENTS,
    LEASES,
    NODES,
    PODS,
    PRIORITYCLASSES,
    PVCS,
    PVS,
    STORAGECLASSES,
    PatchType,
)

from .conftest import StartScheduler, eventually, make_node, make_pod

NS = "default"

MOST_ALLOCATED = """\
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
profiles:
- schedulerName: default-scheduler
  pluginConfig:
  - name: NodeResourcesFit
    args:
      scoringStrategy:
        type: MostAllocated
        resources:
        - name: cpu
          weight: 1
        - name: memory
          weight: 1
"""


async def node_of(client: Client, name: str) -> str | None:
    pod = await client.get(PODS, name, namespace=NS)
    return pod["spec"].get("nodeName")


async def events_for(client: Client, name: str, reason: str) -> list[dict[str, Any]]:
    items = (await client.list(EVENTS, namespace=NS))["items"]
    return [
        e for e in items if e["involvedObject"].get("name") == name and e.get("reason") == reason
    ]


async def three_nodes_with_different_free_cpu(client: Client) -> None:
    """n1 has 1 CPU free, n2 3 CPUs, n3 2 CPUs (memory used in the same proportion)."""
    for name, used_cpu in (("n1", 3), ("n2", 1), ("n3", 2)):
        await client.create(NODES, make_node(name, cpu="4", memory="32Gi"))
        await client.create(
            PODS,
            make_pod(
                f"filler-{name}", cpu=str(used_cpu), memory=f"{used_cpu * 8}Gi", nodeName=name
            ),
            namespace=NS,
        )


async def test_default_profile_picks_the_least_allocated_node(
    client: Client, start_scheduler: StartScheduler
) -> None:
    await three_nodes_with_different_free_cpu(client)
    scheduler = await start_scheduler()
    await client.create(PODS, make_pod("p", cpu="500m", memory="4Gi"), namespace=NS)
    assert await eventually(lambda: node_of(client, "p")) == "n2"
    scheduled = await eventually(lambda: events_for(client, "p", "Scheduled"))
    assert scheduled[0]["message"] == "Successfully assigned default/p to n2"
    assert scheduled[0]["source"]["component"] == "default-scheduler"
    pod = await client.get(PODS, "p", namespace=NS)
    conditions = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
    assert conditions["PodScheduled"] == "True"
    assert scheduler.scheduled == 1


async def test_most_allocated_configuration_picks_the_most_allocated_node(
    client: Client, start_scheduler: StartScheduler, tmp_path: Path
) -> None:
    await three_nodes_with_different_free_cpu(client)
    config = tmp_path / "scheduler.yaml"
    config.write_text(MOST_ALLOCATED)
    await start_scheduler(args={"config": str(config)})
    await client.create(PODS, make_pod("p", cpu="500m", memory="4Gi"), namespace=NS)
    assert await eventually(lambda: node_of(client, "p")) == "n1"


async def test_unmatched_node_selector_stays_pending_until_a_node_matches(
    client: Client, start_scheduler: StartScheduler
) -> None:
    for name in ("n1", "n2", "n3"):
        await client.create(NODES, make_node(name))
    await start_scheduler()
    await client.create(PODS, make_pod("p", nodeSelector={"disk": "ssd"}), namespace=NS)
    failed = await eventually(lambda: events_for(client, "p", "FailedScheduling"))
    assert failed[0]["type"] == "Warning"
    assert failed[0]["message"] == (
        "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector. "
        "preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling.."
    )

    async def unschedulable_condition() -> dict[str, Any] | None:
        pod = await client.get(PODS, "p", namespace=NS)
        for c in pod["status"].get("conditions") or ():
            if c["type"] == "PodScheduled" and c["status"] == "False":
                return c
        return None

    condition = await eventually(unschedulable_condition)
    assert condition["reason"] == "Unschedulable"
    assert condition["message"].startswith("0/3 nodes are available")
    assert await node_of(client, "p") is None
    await client.patch(NODES, "n3", {"metadata": {"labels": {"disk": "ssd"}}})
    assert await eventually(lambda: node_of(client, "p")) == "n3"


async def test_tainted_node_is_avoided_unless_tolerated(
    client: Client, start_scheduler: StartScheduler
) -> None:
    taint = {"key": "dedicated", "value": "db", "effect": "NoSchedule"}
    await client.create(NODES, make_node("tainted", taints=[taint]))
    await client.create(NODES, make_node("plain", cpu="1", memory="1Gi"))
    await start_scheduler()
    for i in range(3):
        await client.create(PODS, make_pod(f"p{i}", cpu="100m"), namespace=NS)
    for i in range(3):
        assert await eventually(lambda i=i: node_of(client, f"p{i}")) == "plain"
    tolerant = make_pod(
        "tolerant",
        cpu="100m",
        tolerations=[
            {"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}
        ],
        nodeSelector={"kubernetes.io/hostname": "tainted"},
    )
    await client.create(PODS, tolerant, namespace=NS)
    assert await eventually(lambda: node_of(client, "tolerant")) == "tainted"
    # Without the toleration, only the taint and the selector are reported.
    await client.create(
        PODS, make_pod("blocked", nodeSelector={"kubernetes.io/hostname": "tainted"}), namespace=NS
    )
    failed = await eventually(lambda: events_for(client, "blocked", "FailedScheduling"))
    assert failed[0]["message"].startswith(
        "0/2 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, "
        "1 node(s) had untolerated taint {dedicated: db}."
    )


async def test_topology_spread_spreads_replicas(
    client: Client, start_scheduler: StartScheduler
) -> None:
    for name in ("n1", "n2", "n3"):
        await client.create(NODES, make_node(name))
    await start_scheduler()
    constraint = {
        "maxSkew": 1,
        "topologyKey": "kubernetes.io/hostname",
        "whenUnsatisfiable": "DoNotSchedule",
        "labelSelector": {"matchLabels": {"app": "web"}},
    }
    for i in range(6):
        pod = make_pod(f"web-{i}", labels={"app": "web"}, topologySpreadConstraints=[constraint])
        await client.create(PODS, pod, namespace=NS)
    placed = [await eventually(lambda i=i: node_of(client, f"web-{i}")) for i in range(6)]
    assert sorted(placed) == ["n1", "n1", "n2", "n2", "n3", "n3"]


async def test_anti_affinity_spreads_replicas(
    client: Client, start_scheduler: StartScheduler
) -> None:
    for name in ("n1", "n2", "n3"):
        await client.create(NODES, make_node(name))
    await start_scheduler()
    anti = {
        "podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {
                    "labelSelector": {"matchLabels": {"app": "db"}},
                    "topologyKey": "kubernetes.io/hostname",
                }
            ]
        }
    }
    for i in range(4):
        await client.create(
            PODS, make_pod(f"db-{i}", labels={"app": "db"}, affinity=anti), namespace=NS
        )
    placed = [await eventually(lambda i=i: node_of(client, f"db-{i}")) for i in range(3)]
    assert sorted(placed) == ["n1", "n2", "n3"]
    failed = await eventually(lambda: events_for(client, "db-3", "FailedScheduling"))
    # Upstream checks the existing pods' anti-affinity first; equal priority: no victims.
    assert failed[0]["message"] == (
        "0/3 nodes are available: 3 node(s) didn't satisfy existing pods anti-affinity rules. "
        "preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod.."
    )
    assert await node_of(client, "db-3") is None


async def test_high_priority_pod_preempts_a_low_priority_one(
    client: Client, start_scheduler: StartScheduler
) -> None:
    for name, value in (("low", 10), ("high", 1000)):
        await client.create(
            PRIORITYCLASSES,
            {
                "apiVersion": "scheduling.k8s.io/v1",
                "kind": "PriorityClass",
                "metadata": {"name": name},
                "value": value,
            },
        )
    await client.create(NODES, make_node("full", cpu="1", memory="4Gi"))
    await start_scheduler()
    await client.create(PODS, make_pod("victim", cpu="800m", priorityClassName="low"), namespace=NS)
    assert await eventually(lambda: node_of(client, "victim")) == "full"
    await client.create(
        PODS, make_pod("preemptor", cpu="500m", priorityClassName="high"), namespace=NS
    )

    async def victim_gone() -> bool:
        try:
            pod = await client.get(PODS, "victim", namespace=NS)
        except NotFoundError:
            return True
        if pod["metadata"].get("deletionTimestamp"):
            # No kubelet here: finish the deletion as the kubelet would.
            await client.delete(PODS, "victim", namespace=NS, grace_period_s=0)
        return False

    await eventually(victim_gone)
    assert await eventually(lambda: node_of(client, "preemptor")) == "full"
    assert await events_for(client, "victim", "Preempted")


async def test_scheduling_gates_and_foreign_scheduler_names(
    client: Client, start_scheduler: StartScheduler
) -> None:
    await client.create(NODES, make_node("n1"))
    scheduler = await start_scheduler()
    await client.create(
        PODS, make_pod("gated", schedulingGates=[{"name": "example.com/wait"}]), namespace=NS
    )
    await client.create(PODS, make_pod("foreign", schedulerName="other-scheduler"), namespace=NS)
    await client.create(PODS, make_pod("marker"), namespace=NS)
    assert await eventually(lambda: node_of(client, "marker")) == "n1"
    assert scheduler.queue is not None
    assert any(q.gated for q in scheduler.queue.pods.values())
    foreign = await client.get(PODS, "foreign", namespace=NS)
    assert foreign["spec"].get("nodeName") is None
    assert not foreign.get("status", {}).get("conditions")
    await client.patch(
        PODS,
        "gated",
        [{"op": "remove", "path": "/spec/schedulingGates"}],
        namespace=NS,
        patch_type=PatchType.JSON,
    )
    assert await eventually(lambda: node_of(client, "gated")) == "n1"


async def test_leader_election_takes_the_kube_scheduler_lease(
    client: Client, start_scheduler: StartScheduler
) -> None:
    await client.create(NODES, make_node("n1"))
    scheduler = await start_scheduler(leader_elect=True, identity="test-scheduler")
    await client.create(PODS, make_pod("p"), namespace=NS)
    assert await eventually(lambda: node_of(client, "p")) == "n1"
    lease = await client.get(LEASES, "kube-scheduler", namespace="kube-system")
    assert lease["spec"]["holderIdentity"] == "test-scheduler"
    await scheduler.stop()
    # A clean stop releases the lease and is not reported as a failure.
    lease = await client.get(LEASES, "kube-scheduler", namespace="kube-system")
    assert not lease["spec"].get("holderIdentity")
    assert scheduler._ctx is not None and scheduler._ctx.failures == []  # type: ignore[attr-defined]


async def test_a_lost_lease_ends_the_term_and_the_scheduler_competes_again(
    client: Client, start_scheduler: StartScheduler
) -> None:
    """Upstream's kube-scheduler exits on a lost lease; inside ``sampan server`` that would stop
    the API server too, so the term ends, a fresh one competes again, and nothing is failed."""
    await client.create(NODES, make_node("n1"))
    scheduler = await start_scheduler(
        leader_elect=True,
        identity="victim",
        lease_duration_s=3.0,
        renew_deadline_s=2.0,
        retry_period_s=0.5,
    )
    await client.create(PODS, make_pod("before"), namespace=NS)
    assert await eventually(lambda: node_of(client, "before")) == "n1"
    first_cache = scheduler.cache
    lease = await client.get(LEASES, "kube-scheduler", namespace="kube-system")
    transitions = lease["spec"].get("leaseTransitions", 0)
    # Another holder takes the lease and never renews it: the victim's renewals fail until its
    # renew deadline, then (once the intruder's 3 s have passed unrenewed) it takes it back.
    lease["spec"]["holderIdentity"] = "intruder"
    lease["spec"]["leaseDurationSeconds"] = 3
    await client.update(LEASES, lease, namespace="kube-system")

    async def new_term_leads() -> bool:
        current = await client.get(LEASES, "kube-scheduler", namespace="kube-system")
        return scheduler.terms == 2 and current["spec"]["holderIdentity"] == "victim"

    await eventually(new_term_leads)
    assert scheduler.cache is not first_cache  # nothing survives from the lost term
    await client.create(PODS, make_pod("after"), namespace=NS)
    assert await eventually(lambda: node_of(client, "after")) == "n1"
    lease = await client.get(LEASES, "kube-scheduler", namespace="kube-system")
    assert lease["spec"]["leaseTransitions"] == transitions + 1
    assert scheduler._ctx is not None and scheduler._ctx.failures == []  # type: ignore[attr-defined]


async def test_wait_for_first_consumer_claim_gets_the_chosen_node(
    client: Client, start_scheduler: StartScheduler
) -> None:
    await client.create(
        STORAGECLASSES,
        {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {"name": "local-path"},
            "provisioner": "rancher.io/local-path",
            "volumeBindingMode": "WaitForFirstConsumer",
        },
    )
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data", "namespace": NS},
        "spec": {
            "storageClassName": "local-path",
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}},
        },
    }
    await client.create(PVCS, claim, namespace=NS)
    await client.create(NODES, make_node("n1"))
    await start_scheduler()
    volumes = [{"name": "v", "persistentVolumeClaim": {"claimName": "data"}}]
    await client.create(PODS, make_pod("p", volumes=volumes), namespace=NS)

    async def selected() -> str | None:
        pvc = await client.get(PVCS, "data", namespace=NS)
        return (pvc["metadata"].get("annotations") or {}).get("volume.kubernetes.io/selected-node")

    assert await eventually(selected) == "n1"
    assert await node_of(client, "p") is None  # waits for the claim to be bound
    # Play the provisioner: a PV on n1, and the claim bound to it.
    await client.create(
        PVS,
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": "pv-data"},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "local-path",
                "hostPath": {"path": "/tmp/pv-data"},
                "claimRef": {"namespace": NS, "name": "data"},
            },
        },
    )
    pvc = await client.get(PVCS, "data", namespace=NS)
    pvc["spec"]["volumeName"] = "pv-data"
    await client.update(PVCS, pvc, namespace=NS)
    assert await eventually(lambda: node_of(client, "p")) == "n1"
