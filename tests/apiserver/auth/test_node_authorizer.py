"""Node authorizer + NodeRestriction against a real API server, with real node credentials
(client certificates ``system:node:<name>`` in ``system:nodes`` from the cluster's client CA,
as the join service issues them)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from sampan.client import ApiError, Client, PatchType
from sampan.client.api import (
    CLUSTERROLEBINDINGS,
    CLUSTERROLES,
    CONFIGMAPS,
    LEASES,
    NODES,
    PODS,
    PVS,
    SECRETS,
    SERVICEACCOUNTS,
    SERVICES,
)
from tests.support.apiserver import ApiServerHarness, api_server, client  # noqa: F401

NS = "default"


async def node_client(api_server: ApiServerHarness, name: str) -> Client:  # noqa: F811
    return Client(await api_server.identity_config(f"system:node:{name}", ("system:nodes",)))


async def refused(call: Any, code: int = 403) -> str:
    with pytest.raises(ApiError) as info:
        await call
    assert info.value.code == code, info.value.status
    return str(info.value.status.get("message", ""))


def node(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}


def pod(name: str, node_name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "nodeName": node_name,
            "containers": [{"name": "main", "image": "busybox"}],
            **spec,
        },
    }


@pytest.fixture
async def world(client: Client) -> AsyncIterator[dict[str, Any]]:  # noqa: F811
    """Nodes n1, n2; pod p1 on n1 (secret s1 volume, configmap c1 envFrom, account sa1, PVC
    claim1), pod p2 on n2 (secret s2); a bootstrap token Secret; PV pv1 bound to claim1 with a
    CSI publish secret."""
    for name in ("n1", "n2"):
        await client.create(NODES, node(name))
    for name in ("s1", "s2", "csi-secret"):
        await client.create(SECRETS, {"metadata": {"name": name}, "data": {}}, namespace=NS)
    await client.create(
        SECRETS,
        {"metadata": {"name": "bootstrap-token-abcdef"}, "type": "bootstrap.kubernetes.io/token"},
        namespace="kube-system",
    )
    for name in ("c1", "c2"):
        await client.create(CONFIGMAPS, {"metadata": {"name": name}}, namespace=NS)
    await client.create(SERVICEACCOUNTS, {"metadata": {"name": "sa1"}}, namespace=NS)
    p1 = await client.create(
        PODS,
        pod(
            "p1",
            "n1",
            serviceAccountName="sa1",
            volumes=[
                {"name": "s", "secret": {"secretName": "s1"}},
                {"name": "data", "persistentVolumeClaim": {"claimName": "claim1"}},
            ],
            containers=[
                {"name": "main", "image": "busybox", "envFrom": [{"configMapRef": {"name": "c1"}}]}
            ],
        ),
        namespace=NS,
    )
    p2 = await client.create(
        PODS, pod("p2", "n2", volumes=[{"name": "s", "secret": {"secretName": "s2"}}]), namespace=NS
    )
    await client.create(
        PVS,
        {
            "metadata": {"name": "pv1"},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"],
                "claimRef": {"namespace": NS, "name": "claim1"},
                "csi": {
                    "driver": "example.com/csi",
                    "volumeHandle": "h1",
                    "nodePublishSecretRef": {"name": "csi-secret", "namespace": NS},
                },
            },
        },
    )
    yield {"p1": p1, "p2": p2}


async def test_reads_only_its_own_pods_objects(
    api_server: ApiServerHarness,  # noqa: F811
    client: Client,  # noqa: F811
    world: dict[str, Any],
) -> None:
    async with await node_client(api_server, "n1") as n1:
        assert (await n1.get(SECRETS, "s1", namespace=NS))["metadata"]["name"] == "s1"
        assert (await n1.get(CONFIGMAPS, "c1", namespace=NS))["metadata"]["name"] == "c1"
        assert (await n1.get(PVS, "pv1"))["metadata"]["name"] == "pv1"  # via claim1
        await n1.get(SECRETS, "csi-secret", namespace=NS)  # pv1's secret
        # one named object may be listed (what the kubelet's per-object informers do)
        listed = await n1.list(SECRETS, namespace=NS, field_selector="metadata.name=s1")
        assert [s["metadata"]["name"] for s in listed["items"]] == ["s1"]

        message = await refused(n1.get(SECRETS, "s2", namespace=NS))
        assert message == (
            'secrets "s2" is forbidden: User "system:node:n1" cannot get resource "secrets" in '
            'API group "" in the namespace "default": no relationship found between node '
            "'n1' and this object"
        )
        await refused(n1.get(SECRETS, "bootstrap-token-abcdef", namespace="kube-system"))
        await refused(n1.get(CONFIGMAPS, "c2", namespace=NS))
        message = await refused(n1.list(SECRETS, namespace=NS))
        assert message.endswith(": No Object name found")
        await refused(n1.list(SECRETS))

        # Nodes: its own only. Pods: its own node's.
        await n1.get(NODES, "n1")
        message = await refused(n1.get(NODES, "n2"))
        assert message.endswith("node 'n1' cannot read 'n2', only its own Node object")
        await refused(n1.list(NODES))
        await n1.list(NODES, field_selector="metadata.name=n1")
        mine = await n1.list(PODS, field_selector="spec.nodeName=n1")
        assert [p["metadata"]["name"] for p in mine["items"]] == ["p1"]
        message = await refused(n1.list(PODS))
        assert message.endswith("can only list/watch pods with spec.nodeName field selector")
        await n1.get(PODS, "p1", namespace=NS)
        await refused(n1.get(PODS, "p2", namespace=NS))
        await n1.list(SERVICES)  # the static node rules still apply

        # The graph follows the pods: a new pod of n1 using s2 opens it, deleting p1 closes s1.
        await client.create(
            PODS,
            pod("p3", "n1", volumes=[{"name": "s", "secret": {"secretName": "s2"}}]),
            namespace=NS,
        )
        await n1.get(SECRETS, "s2", namespace=NS)
        await client.delete(PODS, "p1", namespace=NS, grace_period_s=0)
        await refused(n1.get(SECRETS, "s1", namespace=NS))
        await refused(n1.get(PVS, "pv1"))


async def test_tokens_only_for_its_own_pods(
    api_server: ApiServerHarness,  # noqa: F811
    world: dict[str, Any],
) -> None:
    p1 = world["p1"]
    bound = {"apiVersion": "v1", "kind": "Pod", "name": "p1", "uid": p1["metadata"]["uid"]}
    async with await node_client(api_server, "n1") as n1:
        message = await refused(
            n1.create_subresource(
                SERVICEACCOUNTS,
                "default",
                "token",
                {"spec": {"boundObjectRef": bound}},
                namespace=NS,
            )
        )
        assert message.endswith("no relationship found between node 'n1' and this object")
        answer = await n1.create_subresource(
            SERVICEACCOUNTS, "sa1", "token", {"spec": {"boundObjectRef": bound}}, namespace=NS
        )
        assert answer["status"]["token"]
        message = await refused(
            n1.create_subresource(SERVICEACCOUNTS, "sa1", "token", {"spec": {}}, namespace=NS)
        )
        assert message == (
            'serviceaccounts "sa1" is forbidden: node requested token not bound to a pod'
        )
        no_uid = {k: v for k, v in bound.items() if k != "uid"}
        message = await refused(
            n1.create_subresource(
                SERVICEACCOUNTS, "sa1", "token", {"spec": {"boundObjectRef": no_uid}}, namespace=NS
            )
        )
        assert message.endswith("node requested token with a pod binding without a uid")
    # n2 may not get a token bound to n1's pod even for an account its pods use
    async with await node_client(api_server, "n2") as n2:
        await refused(
            n2.create_subresource(
                SERVICEACCOUNTS, "sa1", "token", {"spec": {"boundObjectRef": bound}}, namespace=NS
            )
        )


async def test_writes_only_its_own_node_and_pods(
    api_server: ApiServerHarness,  # noqa: F811
    client: Client,  # noqa: F811
    world: dict[str, Any],
) -> None:
    n1_node = await client.get(NODES, "n1")
    async with await node_client(api_server, "n1") as n1:
        # pods: only mirror pods bound to itself, owned by its Node
        message = await refused(n1.create(PODS, pod("plain", "n1"), namespace=NS))
        assert message == (
            'pods "plain" is forbidden: pod does not have "kubernetes.io/config.mirror" '
            'annotation, node "n1" can only create mirror pods'
        )
        mirror = pod("static-n1", "n1")
        mirror["metadata"]["annotations"] = {"kubernetes.io/config.mirror": "hash"}
        mirror["metadata"]["ownerReferences"] = [
            {
                "apiVersion": "v1",
                "kind": "Node",
                "name": "n1",
                "uid": n1_node["metadata"]["uid"],
                "controller": True,
            }
        ]
        await n1.create(PODS, mirror, namespace=NS)
        elsewhere = {**mirror, "metadata": {**mirror["metadata"], "name": "static-n2"}}
        elsewhere["spec"] = {**mirror["spec"], "nodeName": "n2"}
        message = await refused(n1.create(PODS, elsewhere, namespace=NS))
        assert message.endswith('node "n1" can only create pods with spec.nodeName set to itself')

        # other nodes: no relabel, no status, no create
        message = await refused(
            n1.patch(NODES, "n2", {"metadata": {"labels": {"a": "b"}}}, patch_type=PatchType.MERGE)
        )
        assert message == 'nodes "n2" is forbidden: node "n1" is not allowed to modify node "n2"'
        status = {"status": {"addresses": [{"type": "InternalIP", "address": "10.9.9.9"}]}}
        await refused(
            n1.patch(NODES, "n2", status, subresource="status", patch_type=PatchType.MERGE)
        )
        await n1.patch(NODES, "n1", status, subresource="status", patch_type=PatchType.MERGE)
        message = await refused(n1.create(NODES, node("n3")))
        assert message == 'nodes "n3" is forbidden: node "n1" is not allowed to modify node "n3"'

        # its own Node: kubelet labels yes, node-role labels and taints no
        await n1.patch(
            NODES,
            "n1",
            {"metadata": {"labels": {"node.kubernetes.io/pool": "a", "example.com/x": "y"}}},
            patch_type=PatchType.MERGE,
        )
        message = await refused(
            n1.patch(
                NODES,
                "n1",
                {"metadata": {"labels": {"node-role.kubernetes.io/master": ""}}},
                patch_type=PatchType.MERGE,
            )
        )
        assert message == (
            'nodes "n1" is forbidden: is not allowed to modify labels: '
            "node-role.kubernetes.io/master"
        )
        taint = {"key": "k", "value": "v", "effect": "NoSchedule"}
        message = await refused(
            n1.patch(NODES, "n1", {"spec": {"taints": [taint]}}, patch_type=PatchType.MERGE)
        )
        assert message.endswith('node "n1" is not allowed to modify taints')

        # pods elsewhere: no delete, no eviction, no status
        message = await refused(n1.delete(PODS, "p2", namespace=NS))
        assert message == (
            'pods "p2" is forbidden: node "n1" can only delete pods with spec.nodeName set '
            "to itself"
        )
        eviction = {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": "p2", "namespace": NS},
        }
        message = await refused(
            n1.create_subresource(PODS, "p2", "eviction", eviction, namespace=NS)
        )
        assert message.endswith("node n1 can only evict pods with spec.nodeName set to itself")
        phase = {"status": {"phase": "Running"}}
        await refused(n1.patch(PODS, "p2", phase, namespace=NS, subresource="status"))
        await n1.patch(PODS, "p1", phase, namespace=NS, subresource="status")
        await n1.delete(PODS, "p1", namespace=NS)

        # leases: its own, in kube-node-lease
        lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease"}
        await n1.create(LEASES, {**lease, "metadata": {"name": "n1"}}, namespace="kube-node-lease")
        message = await refused(
            n1.create(LEASES, {**lease, "metadata": {"name": "n2"}}, namespace="kube-node-lease")
        )
        assert message.endswith(
            "can only access node lease with the same name as the requesting node"
        )
        await refused(
            n1.create(LEASES, {**lease, "metadata": {"name": "n1"}}, namespace="kube-system")
        )


async def test_registering_its_own_node(
    api_server: ApiServerHarness,  # noqa: F811
    client: Client,  # noqa: F811
) -> None:
    async with await node_client(api_server, "n9") as n9:
        labelled = node("n9")
        labelled["metadata"]["labels"] = {
            "kubernetes.io/hostname": "n9",
            "node-role.kubernetes.io/control-plane": "true",
            "node-restriction.kubernetes.io/pool": "x",
        }
        message = await refused(n9.create(NODES, labelled))
        assert message == (
            'nodes "n9" is forbidden: node "n9" is not allowed to set the following labels: '
            "node-restriction.kubernetes.io/pool, node-role.kubernetes.io/control-plane"
        )
        labelled["metadata"]["labels"] = {"kubernetes.io/hostname": "n9"}
        labelled["spec"] = {"taints": [{"key": "k", "effect": "NoSchedule"}]}  # at creation: ok
        await n9.create(NODES, labelled)
        assert (await client.get(NODES, "n9"))["spec"]["taints"][0]["key"] == "k"


async def test_agent_identity_only_reads(
    api_server: ApiServerHarness,  # noqa: F811
    world: dict[str, Any],
) -> None:
    async with Client(await api_server.identity_config("system:sampan-agent")) as agent:
        await agent.list(NODES)
        await agent.list(SERVICES)
        service = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "grab"},
            "spec": {"ports": [{"port": 80}]},
        }
        message = await refused(agent.create(SERVICES, service, namespace="default"))
        assert message == (
            'services is forbidden: User "system:sampan-agent" cannot create resource '
            '"services" in API group "" in the namespace "default"'
        )
        await refused(agent.create(SERVICES, service, namespace="kube-system"))
        await refused(
            agent.patch(
                NODES, "n1", {"metadata": {"labels": {"a": "b"}}}, patch_type=PatchType.MERGE
            )
        )
        await refused(agent.get(SECRETS, "s1", namespace=NS))


async def test_an_older_clusters_broad_grants_are_narrowed_at_start(
    api_server: ApiServerHarness,  # noqa: F811
    client: Client,  # noqa: F811
) -> None:
    """A data dir from before the Node authorizer: system:node bound to every node, the
    agent role with writes. The server's start narrows both (autoupdate stays true)."""
    bindings, roles = CLUSTERROLEBINDINGS, CLUSTERROLES
    old_subject = {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:nodes"}
    await client.patch(
        bindings, "system:node", {"subjects": [old_subject]}, patch_type=PatchType.MERGE
    )
    agent_role = await client.get(roles, "system:sampan-agent")
    wide = {"apiGroups": [""], "resources": ["services"], "verbs": ["create"]}
    await client.patch(
        roles,
        "system:sampan-agent",
        {"rules": [*agent_role["rules"], wide]},
        patch_type=PatchType.MERGE,
    )
    async with await node_client(api_server, "n1") as n1:
        await n1.list(SECRETS)  # the old, broad grant
    await api_server.restart_server()
    async with api_server.new_client() as admin:
        assert not (await admin.get(bindings, "system:node")).get("subjects")
        assert wide not in (await admin.get(roles, "system:sampan-agent"))["rules"]
    async with await node_client(api_server, "n1") as n1:
        await refused(n1.list(SECRETS))


async def test_more_node_restrictions(
    api_server: ApiServerHarness,  # noqa: F811
    client: Client,  # noqa: F811
    world: dict[str, Any],
) -> None:
    n1_uid = (await client.get(NODES, "n1"))["metadata"]["uid"]
    owner = {"apiVersion": "v1", "kind": "Node", "name": "n1", "uid": n1_uid, "controller": True}
    async with await node_client(api_server, "n1") as n1:
        # a mirror pod may not reach other objects, nor carry a foreign or blocking owner
        with_secret = pod("m1", "n1", volumes=[{"name": "s", "secret": {"secretName": "s2"}}])
        with_secret["metadata"]["annotations"] = {"kubernetes.io/config.mirror": "h"}
        with_secret["metadata"]["ownerReferences"] = [owner]
        message = await refused(n1.create(PODS, with_secret, namespace=NS))
        assert message.endswith("a mirror pod may not reference secrets")  # ServiceAccount's
        blocking = pod("m2", "n1")
        blocking["metadata"]["annotations"] = {"kubernetes.io/config.mirror": "h"}
        blocking["metadata"]["ownerReferences"] = [{**owner, "blockOwnerDeletion": True}]
        message = await refused(n1.create(PODS, blocking, namespace=NS))
        assert message.endswith('node "n1" must not set blockOwnerDeletion on an owner reference')
        unowned = pod("m3", "n1")
        unowned["metadata"]["annotations"] = {"kubernetes.io/config.mirror": "h"}
        message = await refused(n1.create(PODS, unowned, namespace=NS))
        assert message.endswith(
            'node "n1" can only create pods with an owner reference set to itself'
        )
        wrong_uid = {
            **unowned,
            "metadata": {**unowned["metadata"], "ownerReferences": [{**owner, "uid": "x"}]},
        }
        message = await refused(n1.create(PODS, wrong_uid, namespace=NS))
        assert message.endswith(f"node n1 UID mismatch: expected x got {n1_uid}")

        # pod status of its own pod, but not its labels
        relabel = {"metadata": {"labels": {"a": "b"}}, "status": {"phase": "Running"}}
        message = await refused(n1.patch(PODS, "p1", relabel, namespace=NS, subresource="status"))
        assert message.endswith('node "n1" cannot update labels through pod status')

        # eviction of a pod that does not exist: 404, as upstream's lister answers
        eviction = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "gone"}}
        await refused(
            n1.create_subresource(PODS, "gone", "eviction", eviction, namespace=NS), code=404
        )
