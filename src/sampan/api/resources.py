"""The registry of kinds: which resources the API serves, and how discovery describes them.

This module owns the data behind ``/api``, ``/apis`` and ``kubectl api-resources``: for every
served (group, version, plural) a frozen ``ResourceInfo`` with its kind, scope, verbs, short
names, categories and subresources as kube-apiserver v1.32 reports them, plus the facts the
generic store needs (datastore path segment, the apiVersion objects are stored as, whether
``metadata.generation`` is tracked and whether there is a status subresource).

Invariants:

* ``(group, version, plural)`` and ``(apiVersion, kind)`` are unique within a registry.
* Resources that share storage (core/v1 and events.k8s.io/v1 events; autoscaling v1 and v2
  horizontalpodautoscalers) share ``storage_resource`` and ``storage_version``; a resource with
  an empty ``storage_resource`` is virtual (reviews, bindings, componentstatuses) and is never
  written to the datastore.
* Groups are listed in kube-aggregator's order (group priority high to low, then name); versions
  inside a group by version priority, so the first version is the preferred one. Groups added
  later (custom resources) sort after the built-in ones, and their versions in Kubernetes version
  order (v2 > v1 > v1beta2 > v1beta1 > v1alpha1 > anything else, alphabetically).

The registry is mutated only by ``add``/``remove`` (custom resource definitions); both replace
whole index dicts, so a reader on the event loop never sees a half-updated registry.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = [
    "CATEGORY_ALL",
    "CATEGORY_API_EXTENSIONS",
    "NAME_RULES",
    "REGISTRY_PREFIX",
    "VERBS_ALL",
    "VERBS_CREATE",
    "GroupInfo",
    "ResourceInfo",
    "ResourceRegistry",
    "SubresourceInfo",
    "builtin_api_priority",
    "builtin_group_priority",
    "builtin_registry",
    "builtin_resources",
    "storage_key",
    "version_sort_key",
]

REGISTRY_PREFIX = "/registry/"

VERBS_ALL = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
VERBS_NO_DELETECOLLECTION = ("create", "delete", "get", "list", "patch", "update", "watch")
VERBS_CREATE = ("create",)
VERBS_READ = ("get", "list")
VERBS_STATUS = ("get", "patch", "update")
VERBS_PROXY = ("create", "delete", "get", "patch", "update")
VERBS_STREAM = ("create", "get")

CATEGORY_ALL = "all"
CATEGORY_API_EXTENSIONS = "api-extensions"

NAME_RULES = ("dns1123-subdomain", "dns1123-label", "dns1035-label", "path-segment")

# Group priority of groups no built-in table knows (kube-aggregator gives CRD groups 1000).
DEFAULT_GROUP_PRIORITY = 1000


@dataclass(frozen=True, slots=True)
class SubresourceInfo:
    """One subresource, e.g. ``pods/status``. ``group``/``version`` are set only when the
    subresource's kind lives elsewhere (``deployments/scale`` is ``autoscaling/v1`` Scale)."""

    name: str
    kind: str
    verbs: tuple[str, ...]
    group: str = ""
    version: str = ""


@dataclass(frozen=True, slots=True)
class ResourceInfo:
    group: str
    version: str
    kind: str
    plural: str
    singular: str
    namespaced: bool
    verbs: tuple[str, ...]
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: tuple[SubresourceInfo, ...] = ()
    name_rule: str = "dns1123-subdomain"
    tracks_generation: bool = False
    has_status: bool = False
    # Datastore path segment ("" = virtual, never stored); defaults to the plural.
    storage_resource: str = field(default="__plural__")
    # apiVersion objects are stored as; defaults to this resource's own apiVersion.
    storage_version: str = ""

    def __post_init__(self) -> None:
        if self.storage_resource == "__plural__":
            object.__setattr__(self, "storage_resource", self.plural)
        if not self.storage_version:
            object.__setattr__(self, "storage_version", self.api_version)
        if self.name_rule not in NAME_RULES:
            raise ValueError(f"unknown name rule {self.name_rule!r} for {self.plural}")

    @property
    def api_version(self) -> str:
        """``v1`` for the core group, ``apps/v1`` otherwise."""
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_version(self) -> str:
        return self.api_version

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def stored(self) -> bool:
        """False for virtual resources (reviews, bindings, componentstatuses)."""
        return bool(self.storage_resource)

    @property
    def storage_version_hash(self) -> str:
        """Discovery's ``storageVersionHash``: changes exactly when the stored form changes
        (base64 of the first 8 bytes of sha256 over ``<group>/<version>/<kind>`` of the storage
        version, the core group written as empty); empty for virtual resources."""
        if not self.stored:
            return ""
        group, _, version = self.storage_version.rpartition("/")
        digest = hashlib.sha256(f"{group}/{version}/{self.kind}".encode()).digest()
        return base64.b64encode(digest[:8]).decode()

    @property
    def group_resource(self) -> str:
        """``deployments.apps`` / ``pods``, as kube-apiserver names a resource in messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def subresource(self, name: str) -> SubresourceInfo | None:
        for sub in self.subresources:
            if sub.name == name:
                return sub
        return None


@dataclass(frozen=True, slots=True)
class GroupInfo:
    name: str
    versions: tuple[str, ...]
    preferred_version: str


# --- version ordering ----------------------------------------------------------------------

_KUBE_VERSION = re.compile(r"^v([1-9][0-9]*)(?:(alpha|beta)([1-9][0-9]*))?$")
_STABILITY_RANK = {None: 3, "beta": 2, "alpha": 1}


def version_sort_key(version: str) -> tuple[int, int, int, str]:
    """Sort key putting versions in Kubernetes priority order (first = preferred):
    GA before beta before alpha, higher numbers first, non-Kubernetes names last by name."""
    m = _KUBE_VERSION.match(version)
    if m is None:
        return (0, 0, 0, version)
    major, stability, minor = int(m.group(1)), m.group(2), int(m.group(3) or 0)
    return (-_STABILITY_RANK[stability], -major, -minor, "")


# kube-aggregator's priorities for the built-in groups: (group priority, version priority).
_BUILTIN_PRIORITIES: dict[tuple[str, str], tuple[int, int]] = {
    ("", "v1"): (18000, 1),
    ("apiregistration.k8s.io", "v1"): (17800, 15),
    ("apps", "v1"): (17800, 15),
    ("events.k8s.io", "v1"): (17750, 15),
    ("authentication.k8s.io", "v1"): (17700, 15),
    ("authorization.k8s.io", "v1"): (17600, 15),
    ("autoscaling", "v2"): (17500, 30),
    ("autoscaling", "v1"): (17500, 15),
    ("batch", "v1"): (17400, 15),
    ("certificates.k8s.io", "v1"): (17300, 15),
    ("networking.k8s.io", "v1"): (17200, 15),
    ("policy", "v1"): (17100, 15),
    ("rbac.authorization.k8s.io", "v1"): (17000, 15),
    ("storage.k8s.io", "v1"): (16800, 15),
    ("admissionregistration.k8s.io", "v1"): (16700, 15),
    ("apiextensions.k8s.io", "v1"): (16700, 15),
    ("scheduling.k8s.io", "v1"): (16600, 15),
    ("coordination.k8s.io", "v1"): (16500, 15),
    ("node.k8s.io", "v1"): (16300, 15),
    ("discovery.k8s.io", "v1"): (16200, 15),
}


def builtin_api_priority(group: str, version: str) -> tuple[int, int] | None:
    """(groupPriorityMinimum, versionPriority) of a built-in group-version's APIService, as
    kube-aggregator lists them; None for anything else."""
    return _BUILTIN_PRIORITIES.get((group, version))


def builtin_group_priority(group: str) -> int:
    """The priority discovery orders ``group`` by when no APIService says otherwise."""
    return _group_priority(group)


def _group_priority(group: str) -> int:
    best = DEFAULT_GROUP_PRIORITY
    for (g, _v), (gp, _vp) in _BUILTIN_PRIORITIES.items():
        if g == group:
            best = max(best, gp)
    return best


def _version_order_key(group: str, version: str) -> tuple[int, tuple[int, int, int, str]]:
    prio = _BUILTIN_PRIORITIES.get((group, version))
    return (-(prio[1] if prio else 0), version_sort_key(version))


# --- the registry --------------------------------------------------------------------------


class ResourceRegistry:
    """Lookup tables over a set of ``ResourceInfo``. Reads are plain dict lookups; ``add`` and
    ``remove`` rebuild the indexes and swap them in at once."""

    def __init__(self, resources: Iterable[ResourceInfo]) -> None:
        self._resources: dict[tuple[str, str, str], ResourceInfo] = {}
        for info in resources:
            key = (info.group, info.version, info.plural)
            if key in self._resources:
                raise ValueError(f"duplicate resource {info.group_resource} {info.version}")
            self._resources[key] = info
        self._reindex()

    def _reindex(self) -> None:
        by_kind: dict[tuple[str, str], ResourceInfo] = {}
        by_group_kind: dict[tuple[str, str], list[ResourceInfo]] = {}
        by_gv: dict[tuple[str, str], list[ResourceInfo]] = {}
        for info in self._resources.values():
            kind_key = (info.api_version, info.kind)
            # A kind served by several resources (none among built-ins) resolves to the first.
            by_kind.setdefault(kind_key, info)
            by_group_kind.setdefault((info.group, info.kind), []).append(info)
            by_gv.setdefault((info.group, info.version), []).append(info)
        for infos in by_group_kind.values():
            infos.sort(key=lambda i: _version_order_key(i.group, i.version))
        for infos in by_gv.values():
            infos.sort(key=lambda i: i.plural)
        versions: dict[str, set[str]] = {}
        for group, version in by_gv:
            versions.setdefault(group, set()).add(version)
        groups = []
        for group, vs in versions.items():
            ordered = tuple(sorted(vs, key=functools.partial(_version_order_key, group)))
            groups.append(GroupInfo(name=group, versions=ordered, preferred_version=ordered[0]))
        # kube-aggregator: group priority high to low, then by name.
        groups.sort(key=lambda g: (-_group_priority(g.name), g.name))
        self._by_kind = by_kind
        self._by_group_kind = by_group_kind
        self._by_gv = by_gv
        self._groups = groups

    def by_resource(self, group: str, version: str, plural: str) -> ResourceInfo | None:
        return self._resources.get((group, version, plural))

    def by_kind(self, api_version: str, kind: str) -> ResourceInfo | None:
        return self._by_kind.get((api_version, kind))

    def by_group_kind(self, group: str, kind: str) -> list[ResourceInfo]:
        """Every served version of a kind, preferred version first."""
        return list(self._by_group_kind.get((group, kind), ()))

    def groups(self) -> list[GroupInfo]:
        """Every group (core ``""`` first), in the order ``/apis`` lists them."""
        return list(self._groups)

    def resources_for(self, group: str, version: str) -> list[ResourceInfo]:
        return list(self._by_gv.get((group, version), ()))

    def all(self) -> list[ResourceInfo]:
        return list(self._resources.values())

    def add(self, info: ResourceInfo) -> None:
        """Add or replace one resource (a custom resource version)."""
        resources = dict(self._resources)
        resources[(info.group, info.version, info.plural)] = info
        self._resources = resources
        self._reindex()

    def remove(self, group: str, version: str, plural: str) -> None:
        if (group, version, plural) not in self._resources:
            return
        resources = dict(self._resources)
        del resources[(group, version, plural)]
        self._resources = resources
        self._reindex()


def storage_key(info: ResourceInfo, namespace: str | None, name: str | None) -> str:
    """The datastore key of one object, or a prefix (ending in ``/``) when name is None.

    ``/registry/pods/default/web``, ``/registry/pods/default/``, ``/registry/pods/``;
    cluster-scoped: ``/registry/minions/node1``, ``/registry/minions/``.
    """
    if not info.stored:
        raise ValueError(f"{info.group_resource} is not stored")
    base = f"{REGISTRY_PREFIX}{info.storage_resource}/"
    if info.namespaced and namespace:
        base = f"{base}{namespace}/"
    if name is None:
        return base
    return f"{base}{name}"


# --- the built-in resources ----------------------------------------------------------------


def _sub(name: str, kind: str, verbs: tuple[str, ...], gv: str = "") -> SubresourceInfo:
    group, _, version = gv.rpartition("/") if gv else ("", "", "")
    return SubresourceInfo(name=name, kind=kind, verbs=verbs, group=group, version=version)


def _status(kind: str) -> SubresourceInfo:
    return _sub("status", kind, VERBS_STATUS)


_SCALE = _sub("scale", "Scale", VERBS_STATUS, "autoscaling/v1")


def _res(
    gv: str,
    kind: str,
    plural: str,
    *,
    namespaced: bool,
    verbs: tuple[str, ...] = VERBS_ALL,
    short: tuple[str, ...] = (),
    cats: tuple[str, ...] = (),
    subs: tuple[SubresourceInfo, ...] = (),
    name_rule: str = "dns1123-subdomain",
    generation: bool = False,
    storage: str | None = None,
    storage_version: str = "",
) -> ResourceInfo:
    group, _, version = gv.rpartition("/")
    return ResourceInfo(
        group=group,
        version=version,
        kind=kind,
        plural=plural,
        singular=kind.lower(),
        namespaced=namespaced,
        verbs=verbs,
        short_names=short,
        categories=cats,
        subresources=subs,
        name_rule=name_rule,
        tracks_generation=generation,
        has_status=any(s.name == "status" for s in subs),
        storage_resource=plural if storage is None else storage,
        storage_version=storage_version,
    )


def builtin_resources() -> list[ResourceInfo]:
    """Every built-in resource, as kube-apiserver v1.32 serves them by default."""
    ns, cl = True, False
    all_ = (CATEGORY_ALL,)
    ext = (CATEGORY_API_EXTENSIONS,)
    return [
        # core/v1
        _res("v1", "Binding", "bindings", namespaced=ns, verbs=VERBS_CREATE, storage=""),
        _res(
            "v1",
            "ComponentStatus",
            "componentstatuses",
            namespaced=cl,
            verbs=VERBS_READ,
            short=("cs",),
            storage="",
        ),
        _res("v1", "ConfigMap", "configmaps", namespaced=ns, short=("cm",)),
        _res(
            "v1",
            "Endpoints",
            "endpoints",
            namespaced=ns,
            short=("ep",),
            storage="services/endpoints",
        ),
        _res("v1", "Event", "events", namespaced=ns, short=("ev",)),
        _res("v1", "LimitRange", "limitranges", namespaced=ns, short=("limits",)),
        _res(
            "v1",
            "Namespace",
            "namespaces",
            namespaced=cl,
            verbs=VERBS_NO_DELETECOLLECTION,
            short=("ns",),
            subs=(_sub("finalize", "Namespace", ("update",)), _status("Namespace")),
            name_rule="dns1123-label",
        ),
        _res(
            "v1",
            "Node",
            "nodes",
            namespaced=cl,
            short=("no",),
            subs=(_sub("proxy", "NodeProxyOptions", VERBS_PROXY), _status("Node")),
            storage="minions",
        ),
        _res(
            "v1",
            "PersistentVolumeClaim",
            "persistentvolumeclaims",
            namespaced=ns,
            short=("pvc",),
            subs=(_status("PersistentVolumeClaim"),),
        ),
        _res(
            "v1",
            "PersistentVolume",
            "persistentvolumes",
            namespaced=cl,
            short=("pv",),
            subs=(_status("PersistentVolume"),),
        ),
        _res(
            "v1",
            "Pod",
            "pods",
            namespaced=ns,
            short=("po",),
            cats=all_,
            subs=(
                _sub("attach", "PodAttachOptions", VERBS_STREAM),
                _sub("binding", "Binding", VERBS_CREATE),
                _sub("ephemeralcontainers", "Pod", VERBS_STATUS),
                _sub("eviction", "Eviction", VERBS_CREATE, "policy/v1"),
                _sub("exec", "PodExecOptions", VERBS_STREAM),
                _sub("log", "Pod", ("get",)),
                _sub("portforward", "PodPortForwardOptions", VERBS_STREAM),
                _sub("proxy", "PodProxyOptions", VERBS_PROXY),
                _status("Pod"),
            ),
        ),
        _res("v1", "PodTemplate", "podtemplates", namespaced=ns),
        _res(
            "v1",
            "ReplicationController",
            "replicationcontrollers",
            namespaced=ns,
            short=("rc",),
            cats=all_,
            subs=(_SCALE, _status("ReplicationController")),
            generation=True,
            storage="controllers",
        ),
        _res(
            "v1",
            "ResourceQuota",
            "resourcequotas",
            namespaced=ns,
            short=("quota",),
            subs=(_status("ResourceQuota"),),
        ),
        _res("v1", "Secret", "secrets", namespaced=ns),
        _res(
            "v1",
            "ServiceAccount",
            "serviceaccounts",
            namespaced=ns,
            short=("sa",),
            subs=(_sub("token", "TokenRequest", VERBS_CREATE, "authentication.k8s.io/v1"),),
        ),
        _res(
            "v1",
            "Service",
            "services",
            namespaced=ns,
            short=("svc",),
            cats=all_,
            subs=(_sub("proxy", "ServiceProxyOptions", VERBS_PROXY), _status("Service")),
            name_rule="dns1035-label",
            storage="services/specs",
        ),
        # admissionregistration.k8s.io/v1
        _res(
            "admissionregistration.k8s.io/v1",
            "MutatingWebhookConfiguration",
            "mutatingwebhookconfigurations",
            namespaced=cl,
            cats=ext,
            generation=True,
        ),
        _res(
            "admissionregistration.k8s.io/v1",
            "ValidatingAdmissionPolicy",
            "validatingadmissionpolicies",
            namespaced=cl,
            cats=ext,
            subs=(_status("ValidatingAdmissionPolicy"),),
            generation=True,
        ),
        _res(
            "admissionregistration.k8s.io/v1",
            "ValidatingAdmissionPolicyBinding",
            "validatingadmissionpolicybindings",
            namespaced=cl,
            cats=ext,
            generation=True,
        ),
        _res(
            "admissionregistration.k8s.io/v1",
            "ValidatingWebhookConfiguration",
            "validatingwebhookconfigurations",
            namespaced=cl,
            cats=ext,
            generation=True,
        ),
        # apiextensions.k8s.io/v1
        _res(
            "apiextensions.k8s.io/v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
            namespaced=cl,
            short=("crd", "crds"),
            cats=ext,
            subs=(_status("CustomResourceDefinition"),),
            generation=True,
            storage="apiextensions.k8s.io/customresourcedefinitions",
        ),
        # apiregistration.k8s.io/v1
        _res(
            "apiregistration.k8s.io/v1",
            "APIService",
            "apiservices",
            namespaced=cl,
            cats=ext,
            subs=(_status("APIService"),),
            name_rule="path-segment",  # "v1." names the core group's APIService
            storage="apiregistration.k8s.io/apiservices",
        ),
        # apps/v1
        _res("apps/v1", "ControllerRevision", "controllerrevisions", namespaced=ns),
        _res(
            "apps/v1",
            "DaemonSet",
            "daemonsets",
            namespaced=ns,
            short=("ds",),
            cats=all_,
            subs=(_status("DaemonSet"),),
            generation=True,
        ),
        _res(
            "apps/v1",
            "Deployment",
            "deployments",
            namespaced=ns,
            short=("deploy",),
            cats=all_,
            subs=(_SCALE, _status("Deployment")),
            generation=True,
        ),
        _res(
            "apps/v1",
            "ReplicaSet",
            "replicasets",
            namespaced=ns,
            short=("rs",),
            cats=all_,
            subs=(_SCALE, _status("ReplicaSet")),
            generation=True,
        ),
        _res(
            "apps/v1",
            "StatefulSet",
            "statefulsets",
            namespaced=ns,
            short=("sts",),
            cats=all_,
            subs=(_SCALE, _status("StatefulSet")),
            generation=True,
        ),
        # authentication.k8s.io/v1
        _res(
            "authentication.k8s.io/v1",
            "SelfSubjectReview",
            "selfsubjectreviews",
            namespaced=cl,
            verbs=VERBS_CREATE,
            storage="",
        ),
        _res(
            "authentication.k8s.io/v1",
            "TokenReview",
            "tokenreviews",
            namespaced=cl,
            verbs=VERBS_CREATE,
            storage="",
        ),
        # authorization.k8s.io/v1
        _res(
            "authorization.k8s.io/v1",
            "LocalSubjectAccessReview",
            "localsubjectaccessreviews",
            namespaced=ns,
            verbs=VERBS_CREATE,
            storage="",
        ),
        _res(
            "authorization.k8s.io/v1",
            "SelfSubjectAccessReview",
            "selfsubjectaccessreviews",
            namespaced=cl,
            verbs=VERBS_CREATE,
            storage="",
        ),
        _res(
            "authorization.k8s.io/v1",
            "SelfSubjectRulesReview",
            "selfsubjectrulesreviews",
            namespaced=cl,
            verbs=VERBS_CREATE,
            storage="",
        ),
        _res(
            "authorization.k8s.io/v1",
            "SubjectAccessReview",
            "subjectaccessreviews",
            namespaced=cl,
            verbs=VERBS_CREATE,
            storage="",
        ),
        # autoscaling v2 (preferred, stored) and v1
        _res(
            "autoscaling/v2",
            "HorizontalPodAutoscaler",
            "horizontalpodautoscalers",
            namespaced=ns,
            short=("hpa",),
            cats=all_,
            subs=(_status("HorizontalPodAutoscaler"),),
            generation=True,
        ),
        _res(
            "autoscaling/v1",
            "HorizontalPodAutoscaler",
            "horizontalpodautoscalers",
            namespaced=ns,
            short=("hpa",),
            cats=all_,
            subs=(_status("HorizontalPodAutoscaler"),),
            generation=True,
            storage_version="autoscaling/v2",
        ),
        # batch/v1
        _res(
            "batch/v1",
            "CronJob",
            "cronjobs",
            namespaced=ns,
            short=("cj",),
            cats=all_,
            subs=(_status("CronJob"),),
            generation=True,
        ),
        _res(
            "batch/v1",
            "Job",
            "jobs",
            namespaced=ns,
            cats=all_,
            subs=(_status("Job"),),
            generation=True,
        ),
        # certificates.k8s.io/v1
        _res(
            "certificates.k8s.io/v1",
            "CertificateSigningRequest",
            "certificatesigningrequests",
            namespaced=cl,
            short=("csr",),
            subs=(
                _sub("approval", "CertificateSigningRequest", VERBS_STATUS),
                _status("CertificateSigningRequest"),
            ),
            name_rule="path-segment",
        ),
        # coordination.k8s.io/v1
        _res("coordination.k8s.io/v1", "Lease", "leases", namespaced=ns),
        # discovery.k8s.io/v1
        _res(
            "discovery.k8s.io/v1",
            "EndpointSlice",
            "endpointslices",
            namespaced=ns,
            generation=True,
        ),
        # events.k8s.io/v1 (shares storage with core/v1 events)
        _res(
            "events.k8s.io/v1",
            "Event",
            "events",
            namespaced=ns,
            short=("ev",),
            storage_version="v1",
        ),
        # networking.k8s.io/v1
        _res(
            "networking.k8s.io/v1",
            "IngressClass",
            "ingressclasses",
            namespaced=cl,
            generation=True,
        ),
        _res(
            "networking.k8s.io/v1",
            "Ingress",
            "ingresses",
            namespaced=ns,
            short=("ing",),
            subs=(_status("Ingress"),),
            generation=True,
            storage="ingress",
        ),
        _res(
            "networking.k8s.io/v1",
            "NetworkPolicy",
            "networkpolicies",
            namespaced=ns,
            short=("netpol",),
            generation=True,
        ),
        # node.k8s.io/v1
        _res("node.k8s.io/v1", "RuntimeClass", "runtimeclasses", namespaced=cl),
        # policy/v1
        _res(
            "policy/v1",
            "PodDisruptionBudget",
            "poddisruptionbudgets",
            namespaced=ns,
            short=("pdb",),
            subs=(_status("PodDisruptionBudget"),),
            generation=True,
        ),
        # rbac.authorization.k8s.io/v1
        _res(
            "rbac.authorization.k8s.io/v1",
            "ClusterRoleBinding",
            "clusterrolebindings",
            namespaced=cl,
            name_rule="path-segment",
        ),
        _res(
            "rbac.authorization.k8s.io/v1",
            "ClusterRole",
            "clusterroles",
            namespaced=cl,
            name_rule="path-segment",
        ),
        _res(
            "rbac.authorization.k8s.io/v1",
            "RoleBinding",
            "rolebindings",
            namespaced=ns,
            name_rule="path-segment",
        ),
        _res(
            "rbac.authorization.k8s.io/v1",
            "Role",
            "roles",
            namespaced=ns,
            name_rule="path-segment",
        ),
        # scheduling.k8s.io/v1
        _res(
            "scheduling.k8s.io/v1",
            "PriorityClass",
            "priorityclasses",
            namespaced=cl,
            short=("pc",),
        ),
        # storage.k8s.io/v1
        _res("storage.k8s.io/v1", "CSIDriver", "csidrivers", namespaced=cl),
        _res("storage.k8s.io/v1", "CSINode", "csinodes", namespaced=cl),
        _res(
            "storage.k8s.io/v1",
            "CSIStorageCapacity",
            "csistoragecapacities",
            namespaced=ns,
        ),
        _res(
            "storage.k8s.io/v1",
            "StorageClass",
            "storageclasses",
            namespaced=cl,
            short=("sc",),
        ),
        _res(
            "storage.k8s.io/v1",
            "VolumeAttachment",
            "volumeattachments",
            namespaced=cl,
            subs=(_status("VolumeAttachment"),),
        ),
    ]


def builtin_registry() -> ResourceRegistry:
    """A fresh registry of the built-in resources (callers may add custom resources to it)."""
    return ResourceRegistry(builtin_resources())
