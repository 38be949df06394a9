"""Discovery data of the built-in registry against what kube-apiserver v1.32 reports."""

from __future__ import annotations

import pytest

from sampan.api.resources import (
    VERBS_ALL,
    ResourceInfo,
    builtin_registry,
    storage_key,
    version_sort_key,
)

# `kubectl api-resources` against kube-apiserver v1.32 (flowcontrol left out on purpose):
# NAME SHORTNAMES APIVERSION NAMESPACED KIND
API_RESOURCES = r"""
bindings - v1 true Binding
componentstatuses cs v1 false ComponentStatus
configmaps cm v1 true ConfigMap
endpoints ep v1 true Endpoints
events ev v1 true Event
limitranges limits v1 true LimitRange
namespaces ns v1 false Namespace
nodes no v1 false Node
persistentvolumeclaims pvc v1 true PersistentVolumeClaim
persistentvolumes pv v1 false PersistentVolume
pods po v1 true Pod
podtemplates - v1 true PodTemplate
replicationcontrollers rc v1 true ReplicationController
resourcequotas quota v1 true ResourceQuota
secrets - v1 true Secret
serviceaccounts sa v1 true ServiceAccount
services svc v1 true Service
mutatingwebhookconfigurations - admissionregistration.k8s.io/v1 false MutatingWebhookConfiguration
validatingadmissionpolicies - admissionregistration.k8s.io/v1 false ValidatingAdmissionPolicy
validatingadmissionpolicybindings - admissionregistration.k8s.io/v1 false \
  ValidatingAdmissionPolicyBinding
validatingwebhookconfigurations - admissionregistration.k8s.io/v1 false \
  ValidatingWebhookConfiguration
customresourcedefinitions crd,crds apiextensions.k8s.io/v1 false CustomResourceDefinition
apiservices - apiregistration.k8s.io/v1 false APIService
controllerrevisions - apps/v1 true ControllerRevision
daemonsets ds apps/v1 true DaemonSet
deployments deploy apps/v1 true Deployment
replicasets rs apps/v1 true ReplicaSet
statefulsets sts apps/v1 true StatefulSet
selfsubjectreviews - authentication.k8s.io/v1 false SelfSubjectReview
tokenreviews - authentication.k8s.io/v1 false TokenReview
localsubjectaccessreviews - authorization.k8s.io/v1 true LocalSubjectAccessReview
selfsubjectaccessreviews - authorization.k8s.io/v1 false SelfSubjectAccessReview
selfsubjectrulesreviews - authorization.k8s.io/v1 false SelfSubjectRulesReview
subjectaccessreviews - authorization.k8s.io/v1 false SubjectAccessReview
horizontalpodautoscalers hpa autoscaling/v2 true HorizontalPodAutoscaler
cronjobs cj batch/v1 true CronJob
jobs - batch/v1 true Job
certificatesigningrequests csr certificates.k8s.io/v1 false CertificateSigningRequest
leases - coordination.k8s.io/v1 true Lease
endpointslices - discovery.k8s.io/v1 true EndpointSlice
events ev events.k8s.io/v1 true Event
ingressclasses - networking.k8s.io/v1 false IngressClass
ingresses ing networking.k8s.io/v1 true Ingress
networkpolicies netpol networking.k8s.io/v1 true NetworkPolicy
runtimeclasses - node.k8s.io/v1 false RuntimeClass
poddisruptionbudgets pdb policy/v1 true PodDisruptionBudget
clusterrolebindings - rbac.authorization.k8s.io/v1 false ClusterRoleBinding
clusterroles - rbac.authorization.k8s.io/v1 false ClusterRole
rolebindings - rbac.authorization.k8s.io/v1 true RoleBinding
roles - rbac.authorization.k8s.io/v1 true Role
priorityclasses pc scheduling.k8s.io/v1 false PriorityClass
csidrivers - storage.k8s.io/v1 false CSIDriver
csinodes - storage.k8s.io/v1 false CSINode
csistoragecapacities - storage.k8s.io/v1 true CSIStorageCapacity
storageclasses sc storage.k8s.io/v1 false StorageClass
volumeattachments - storage.k8s.io/v1 false VolumeAttachment
"""


def _rows() -> list[tuple[str, str, str, bool, str]]:
    rows = []
    for line in API_RESOURCES.replace("\\\n", "").strip().splitlines():
        name, short, api_version, namespaced, kind = line.split()
        rows.append((name, short, api_version, namespaced == "true", kind))
    return rows


def _preferred(registry) -> list[ResourceInfo]:
    """What `kubectl api-resources` lists: each group's preferred version only."""
    out = []
    for group in registry.groups():
        out.extend(registry.resources_for(group.name, group.preferred_version))
    return out


def test_api_resources_table_matches_upstream() -> None:
    registry = builtin_registry()
    ours = {
        (i.plural, ",".join(i.short_names) or "-", i.api_version, i.namespaced, i.kind)
        for i in _preferred(registry)
    }
    assert ours == set(_rows())


def test_every_resource_has_verbs_and_a_known_verb_set() -> None:
    allowed = set(VERBS_ALL)
    for info in builtin_registry().all():
        assert info.verbs, info
        assert set(info.verbs) <= allowed, info
        assert list(info.verbs) == sorted(info.verbs), f"{info.plural} verbs not sorted"
        for sub in info.subresources:
            assert sub.verbs, (info.plural, sub.name)


@pytest.mark.parametrize(
    ("short", "plural"),
    [
        ("po", "pods"),
        ("svc", "services"),
        ("deploy", "deployments"),
        ("rs", "replicasets"),
        ("sts", "statefulsets"),
        ("ds", "daemonsets"),
        ("cm", "configmaps"),
        ("ns", "namespaces"),
        ("no", "nodes"),
        ("ep", "endpoints"),
        ("ev", "events"),
        ("pv", "persistentvolumes"),
        ("pvc", "persistentvolumeclaims"),
        ("rc", "replicationcontrollers"),
        ("sa", "serviceaccounts"),
        ("cj", "cronjobs"),
        ("ing", "ingresses"),
        ("netpol", "networkpolicies"),
        ("pdb", "poddisruptionbudgets"),
        ("sc", "storageclasses"),
        ("crd", "customresourcedefinitions"),
        ("hpa", "horizontalpodautoscalers"),
        ("csr", "certificatesigningrequests"),
        ("limits", "limitranges"),
        ("quota", "resourcequotas"),
        ("pc", "priorityclasses"),
    ],
)
def test_short_names(short: str, plural: str) -> None:
    owners = {i.plural for i in builtin_registry().all() if short in i.short_names}
    assert owners == {plural}


def test_verbs_of_special_resources() -> None:
    reg = builtin_registry()
    assert reg.by_resource("", "v1", "namespaces").verbs == (
        "create",
        "delete",
        "get",
        "list",
        "patch",
        "update",
        "watch",
    )
    assert reg.by_resource("", "v1", "componentstatuses").verbs == ("get", "list")
    assert reg.by_resource("", "v1", "bindings").verbs == ("create",)
    for plural in ("tokenreviews", "selfsubjectreviews"):
        assert reg.by_resource("authentication.k8s.io", "v1", plural).verbs == ("create",)
    assert reg.by_resource("", "v1", "pods").verbs == VERBS_ALL


def test_subresources_kubectl_relies_on() -> None:
    reg = builtin_registry()
    pods = reg.by_resource("", "v1", "pods")
    assert {s.name for s in pods.subresources} == {
        "attach",
        "binding",
        "ephemeralcontainers",
        "eviction",
        "exec",
        "log",
        "portforward",
        "proxy",
        "status",
    }
    eviction = pods.subresource("eviction")
    assert (eviction.group, eviction.version, eviction.kind) == ("policy", "v1", "Eviction")
    assert pods.subresource("exec").verbs == ("create", "get")
    assert pods.subresource("log").verbs == ("get",)
    for group, plural in (
        ("apps", "deployments"),
        ("apps", "replicasets"),
        ("apps", "statefulsets"),
        ("", "replicationcontrollers"),
    ):
        scale = reg.by_resource(group, "v1", plural).subresource("scale")
        assert (scale.group, scale.version, scale.kind) == ("autoscaling", "v1", "Scale")
    token = reg.by_resource("", "v1", "serviceaccounts").subresource("token")
    assert (token.group, token.kind, token.verbs) == (
        "authentication.k8s.io",
        "TokenRequest",
        ("create",),
    )
    ns = reg.by_resource("", "v1", "namespaces")
    assert ns.subresource("finalize").verbs == ("update",)
    csr = reg.by_resource("certificates.k8s.io", "v1", "certificatesigningrequests")
    assert csr.subresource("approval") is not None and csr.has_status
    assert reg.by_resource("apps", "v1", "daemonsets").subresource("scale") is None


def test_categories_all() -> None:
    in_all = {i.plural for i in _preferred(builtin_registry()) if "all" in i.categories}
    assert in_all == {
        "pods",
        "services",
        "replicationcontrollers",
        "deployments",
        "replicasets",
        "statefulsets",
        "daemonsets",
        "jobs",
        "cronjobs",
        "horizontalpodautoscalers",
    }


def test_group_order_and_preferred_versions() -> None:
    groups = builtin_registry().groups()
    assert [g.name for g in groups] == [
        "",
        "apiregistration.k8s.io",
        "apps",
        "events.k8s.io",
        "authentication.k8s.io",
        "authorization.k8s.io",
        "autoscaling",
        "batch",
        "certificates.k8s.io",
        "networking.k8s.io",
        "policy",
        "rbac.authorization.k8s.io",
        "storage.k8s.io",
        "admissionregistration.k8s.io",
        "apiextensions.k8s.io",
        "scheduling.k8s.io",
        "coordination.k8s.io",
        "node.k8s.io",
        "discovery.k8s.io",
    ]
    autoscaling = next(g for g in groups if g.name == "autoscaling")
    assert autoscaling.versions == ("v2", "v1")
    assert autoscaling.preferred_version == "v2"


def test_shared_storage() -> None:
    reg = builtin_registry()
    core_events = reg.by_resource("", "v1", "events")
    new_events = reg.by_resource("events.k8s.io", "v1", "events")
    assert core_events.storage_resource == new_events.storage_resource
    assert core_events.storage_version == new_events.storage_version == "v1"
    hpa1 = reg.by_resource("autoscaling", "v1", "horizontalpodautoscalers")
    hpa2 = reg.by_resource("autoscaling", "v2", "horizontalpodautoscalers")
    assert hpa1.storage_resource == hpa2.storage_resource
    assert hpa1.storage_version == hpa2.storage_version == "autoscaling/v2"
    assert [i.version for i in reg.by_group_kind("autoscaling", "HorizontalPodAutoscaler")] == [
        "v2",
        "v1",
    ]
    stored = [i for i in reg.all() if i.stored]
    # Only resources meant to share storage share a storage path.
    by_path: dict[str, set[str]] = {}
    for info in stored:
        by_path.setdefault(info.storage_resource, set()).add(info.kind)
    assert all(len(kinds) == 1 for kinds in by_path.values()), by_path


def test_virtual_resources_are_not_stored() -> None:
    reg = builtin_registry()
    review = reg.by_resource("authorization.k8s.io", "v1", "subjectaccessreviews")
    assert not review.stored
    with pytest.raises(ValueError):
        storage_key(review, None, "x")


def test_storage_keys() -> None:
    reg = builtin_registry()
    pods = reg.by_resource("", "v1", "pods")
    assert storage_key(pods, "default", "web") == "/registry/pods/default/web"
    assert storage_key(pods, "default", None) == "/registry/pods/default/"
    assert storage_key(pods, None, None) == "/registry/pods/"
    nodes = reg.by_resource("", "v1", "nodes")
    assert storage_key(nodes, None, "n1") == "/registry/minions/n1"
    assert storage_key(nodes, None, None) == "/registry/minions/"
    deployments = reg.by_resource("apps", "v1", "deployments")
    assert storage_key(deployments, "ns", "d") == "/registry/deployments/ns/d"


def test_lookup_by_kind_and_registry_mutation() -> None:
    reg = builtin_registry()
    assert reg.by_kind("apps/v1", "Deployment").plural == "deployments"
    assert reg.by_kind("v1", "Pod").plural == "pods"
    assert reg.by_kind("v1", "Nope") is None
    crd = ResourceInfo(
        group="example.com",
        version="v1beta1",
        kind="Widget",
        plural="widgets",
        singular="widget",
        namespaced=True,
        verbs=VERBS_ALL,
        storage_resource="example.com/widgets",
    )
    reg.add(crd)
    reg.add(
        ResourceInfo(
            group="example.com",
            version="v1",
            kind="Widget",
            plural="widgets",
            singular="widget",
            namespaced=True,
            verbs=VERBS_ALL,
            storage_resource="example.com/widgets",
        )
    )
    group = reg.groups()[-1]
    assert (group.name, group.versions, group.preferred_version) == (
        "example.com",
        ("v1", "v1beta1"),
        "v1",
    )
    assert reg.by_kind("example.com/v1beta1", "Widget") is crd
    reg.remove("example.com", "v1beta1", "widgets")
    reg.remove("example.com", "v1", "widgets")
    assert all(g.name != "example.com" for g in reg.groups())


def test_version_sort_key() -> None:
    versions = ["v1alpha1", "v1", "foo", "v2beta1", "v1beta2", "v2", "v10", "v1beta1"]
    assert sorted(versions, key=version_sort_key) == [
        "v10",
        "v2",
        "v1",
        "v2beta1",
        "v1beta2",
        "v1beta1",
        "v1alpha1",
        "foo",
    ]


def test_storage_version_hashes_match_discovery() -> None:
    # Values kube-apiserver publishes (unchanged for years for these storage versions).
    reg = builtin_registry()
    expected = {
        ("", "pods"): "xPOwRZ+Yhw8=",
        ("", "configmaps"): "qFsyl6wFWjQ=",
        ("", "events"): "r2yiGXH7wu8=",
        ("events.k8s.io", "events"): "r2yiGXH7wu8=",
        ("apps", "deployments"): "8aSe+NMegvE=",
        ("", "services"): "0/CO1lhkEBI=",
    }
    for (group, plural), value in expected.items():
        assert reg.by_resource(group, "v1", plural).storage_version_hash == value
    assert reg.by_resource("", "v1", "bindings").storage_version_hash == ""
