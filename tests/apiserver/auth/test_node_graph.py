"""The Node authorizer's graph and decisions, over a scripted change feed (the HTTP-level
behaviour is in test_node_authorizer.py)."""

from __future__ import annotations

from typing import Any

from sampan.apiserver.auth import Attributes, UserInfo
from sampan.apiserver.auth.bootstrap import node_rules
from sampan.apiserver.auth.node import NodeAuthorizer, NodeGraph, node_identity
from sampan.apiserver.storage.store import CacheCursor, CacheDelta


class Feed:
    """A ``ChangeSource`` whose changes the test scripts; ``reload()`` forces a full list."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.pending: list[tuple[str, str, dict[str, Any] | None]] = []
        self.generation = 0
        self.reloaded = False

    def put(self, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        key = (meta.get("namespace", ""), meta["name"])
        self.objects[key] = obj
        self.pending.append((*key, obj))
        self.generation += 1

    def drop(self, namespace: str, name: str) -> None:
        self.objects.pop((namespace, name), None)
        self.pending.append((namespace, name, None))
        self.generation += 1

    def reload(self) -> None:
        self.reloaded = True
        self.pending = []
        self.generation += 1

    def cached_changes(self, cursor: CacheCursor | None) -> CacheDelta | None:
        if cursor is not None and cursor.generation == self.generation:
            return None
        new = CacheCursor(0, self.generation, self.generation)
        if cursor is None or self.reloaded:
            self.reloaded = False
            self.pending = []
            return CacheDelta(new, True, [(ns, n, o) for (ns, n), o in self.objects.items()])
        changes, self.pending = self.pending, []
        return CacheDelta(new, False, changes)


def pod(name: str, node: str, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}"},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i"}], **spec},
    }


FULL_SPEC: dict[str, Any] = {
    "serviceAccountName": "sa",
    "imagePullSecrets": [{"name": "pull"}],
    "initContainers": [
        {"name": "i", "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "env-s"}}}]}
    ],
    "containers": [
        {
            "name": "c",
            "envFrom": [{"configMapRef": {"name": "env-cm"}}, {"secretRef": {"name": "from-s"}}],
            "env": [{"name": "Y", "valueFrom": {"configMapKeyRef": {"name": "key-cm"}}}],
        }
    ],
    "ephemeralContainers": [{"name": "e", "envFrom": [{"secretRef": {"name": "eph-s"}}]}],
    "volumes": [
        {"name": "s", "secret": {"secretName": "vol-s"}},
        {"name": "c", "configMap": {"name": "vol-cm"}},
        {
            "name": "p",
            "projected": {
                "sources": [
                    {"secret": {"name": "proj-s"}},
                    {"configMap": {"name": "proj-cm"}},
                    {"serviceAccountToken": {"path": "token"}},
                ]
            },
        },
        {"name": "csi", "csi": {"driver": "d", "nodePublishSecretRef": {"name": "csi-s"}}},
        {"name": "claim", "persistentVolumeClaim": {"claimName": "data"}},
        {"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}},
    ],
    "resourceClaims": [
        {"name": "gpu", "resourceClaimName": "shared-gpu"},
        {"name": "tpl", "resourceClaimTemplateName": "t"},
    ],
}


def graph() -> tuple[NodeGraph, Feed, Feed, Feed]:
    pods, pvs, vas = Feed(), Feed(), Feed()
    return NodeGraph(pods, pvs, vas), pods, pvs, vas


def test_every_reference_of_a_pod_reaches_its_node_only() -> None:
    g, pods, _pvs, _vas = graph()
    full = pod("p", "n1", **FULL_SPEC)
    full["status"] = {"resourceClaimStatuses": [{"name": "tpl", "resourceClaimName": "p-tpl-x"}]}
    pods.put(full)
    expected = {
        "secret": ["pull", "env-s", "from-s", "eph-s", "vol-s", "proj-s", "csi-s"],
        "configmap": ["env-cm", "key-cm", "vol-cm", "proj-cm"],
        "serviceaccount": ["sa"],
        "pvc": ["data", "p-scratch"],
        "resourceclaim": ["shared-gpu", "p-tpl-x"],
        "pod": ["p"],
    }
    for kind, names in expected.items():
        for name in names:
            assert g.reaches("n1", kind, "ns", name), (kind, name)
            assert not g.reaches("n2", kind, "ns", name), (kind, name)
            assert not g.reaches("n1", kind, "other", name), (kind, name)
    assert not g.reaches("n1", "secret", "ns", "unrelated")


def test_pods_come_and_go() -> None:
    g, pods, _pvs, _vas = graph()
    volume = {"volumes": [{"name": "s", "secret": {"secretName": "s"}}]}
    pods.put(pod("a", "n1", **volume))
    pods.put(pod("b", "n1", **volume))
    pods.put(pod("pending", "", **{"volumes": [{"name": "x", "secret": {"secretName": "x"}}]}))
    assert g.reaches("n1", "secret", "ns", "s")
    assert not g.reaches("n1", "secret", "ns", "x")  # not bound yet
    pods.drop("ns", "a")
    assert g.reaches("n1", "secret", "ns", "s")  # b still uses it
    pods.put(pod("b", "n2", **volume))  # recreated elsewhere
    assert not g.reaches("n1", "secret", "ns", "s")
    assert g.reaches("n2", "secret", "ns", "s")
    pods.reload()  # the cache relisted: rebuilt from its objects
    assert g.reaches("n2", "secret", "ns", "s") and g.reaches("n2", "pod", "ns", "b")
    pods.drop("ns", "b")
    assert not g.reaches("n2", "secret", "ns", "s")


def test_a_mirror_pod_reaches_nothing_but_its_node() -> None:
    g, pods, _pvs, _vas = graph()
    mirror = pod("m", "n1", serviceAccountName="sa", imagePullSecrets=[{"name": "pull"}])
    mirror["metadata"]["annotations"] = {"kubernetes.io/config.mirror": "h"}
    pods.put(mirror)
    assert g.reaches("n1", "pod", "ns", "m")
    assert not g.reaches("n1", "serviceaccount", "ns", "sa")
    assert not g.reaches("n1", "secret", "ns", "pull")


def test_volumes_and_attachments() -> None:
    g, pods, pvs, vas = graph()
    pods.put(pod("p", "n1", volumes=[{"name": "d", "persistentVolumeClaim": {"claimName": "c"}}]))
    pvs.put(
        {
            "metadata": {"name": "pv"},
            "spec": {
                "claimRef": {"namespace": "ns", "name": "c"},
                "csi": {"nodeStageSecretRef": {"name": "stage", "namespace": "secrets"}},
                "rbd": {"secretRef": {"name": "rbd"}},  # no namespace: the claim's
            },
        }
    )
    vas.put({"metadata": {"name": "va"}, "spec": {"nodeName": "n1"}})
    assert g.reaches("n1", "pv", "", "pv") and not g.reaches("n2", "pv", "", "pv")
    assert g.reaches("n1", "secret", "secrets", "stage")
    assert g.reaches("n1", "secret", "ns", "rbd")
    assert g.reaches("n1", "volumeattachment", "", "va")
    assert not g.reaches("n2", "volumeattachment", "", "va")
    pvs.put({"metadata": {"name": "pv"}, "spec": {"claimRef": {"namespace": "ns", "name": "z"}}})
    assert not g.reaches("n1", "pv", "", "pv")
    assert not g.reaches("n1", "secret", "secrets", "stage")


def attrs(user: UserInfo, verb: str, resource: str, **kw: Any) -> Attributes:
    return Attributes(user=user, verb=verb, resource=resource, **kw)


N1 = UserInfo("system:node:n1", groups=("system:nodes", "system:authenticated"))


def test_identity() -> None:
    assert node_identity(N1) == ("n1", True)
    assert node_identity(UserInfo("system:node:n1")) == ("", False)  # not in system:nodes
    assert node_identity(UserInfo("jane", groups=("system:nodes",))) == ("", False)
    assert node_identity(UserInfo("system:node:", groups=("system:nodes",))) == ("", True)


def test_decisions() -> None:
    g, pods, _pvs, _vas = graph()
    pods.put(pod("p", "n1", volumes=[{"name": "s", "secret": {"secretName": "s"}}]))
    authz = NodeAuthorizer(g, node_rules())

    def decide(verb: str, resource: str, user: UserInfo = N1, **kw: Any) -> tuple[bool, str]:
        decision = authz.authorize(attrs(user, verb, resource, **kw))
        return decision.allowed, decision.reason

    assert decide("get", "secrets", namespace="ns", name="s") == (True, "")
    assert decide("watch", "secrets", namespace="ns", name="s") == (True, "")
    assert decide("update", "secrets", namespace="ns", name="s") == (
        False,
        "can only read resources of this type",
    )
    assert decide("list", "secrets", namespace="ns") == (False, "No Object name found")
    assert decide("list", "secrets", name="s") == (
        False,
        "can only read namespaced object of this type",
    )
    assert decide("list", "pods", field_selector="spec.nodeName=n1") == (True, "")
    assert decide("list", "pods", field_selector="spec.nodeName=n2")[0] is False
    assert decide("create", "pods", namespace="ns") == (True, "")  # NodeRestriction decides
    assert decide("update", "pods", namespace="ns", name="p") == (False, "")
    assert decide("get", "pods", namespace="ns", name="p", subresource="log") == (False, "")
    assert decide("patch", "nodes", name="n2", subresource="status") == (True, "")
    assert decide("delete", "nodes", name="n1") == (False, "")
    lease = {"api_group": "coordination.k8s.io", "namespace": "kube-node-lease"}
    assert decide("update", "leases", name="n1", **lease) == (True, "")
    assert decide("update", "leases", name="n2", **lease) == (
        False,
        "can only access node lease with the same name as the requesting node",
    )
    assert decide("list", "leases", **lease)[0] is False
    assert decide("create", "tokenreviews", api_group="authentication.k8s.io") == (True, "")
    assert decide("create", "events", namespace="ns") == (True, "")
    assert decide("get", "services", namespace="ns", name="x") == (True, "")
    assert decide("create", "services", namespace="ns") == (False, "")
    nameless = UserInfo("system:node:", groups=("system:nodes",))
    assert decide("get", "services", nameless, namespace="ns") == (
        False,
        'unknown node for user "system:node:"',
    )
    assert decide("get", "secrets", UserInfo("jane"), namespace="ns", name="s") == (False, "")
