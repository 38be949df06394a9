"""The Node authorizer: what a kubelet (``system:node:<name>`` in ``system:nodes``) may do,
with kube-apiserver 1.32's semantics (``--authorization-mode=Node,RBAC``,
AuthorizeNodeWithSelectors on, as it is by default in 1.32).

Owns ``node_identity`` (upstream's default node identifier), ``NodeGraph`` (which objects each
node may reach) and ``NodeAuthorizer``.

* Secrets, ConfigMaps (get/list/watch of one named object), PersistentVolumeClaims,
  PersistentVolumes, ResourceClaims, VolumeAttachments (get) and ``serviceaccounts/token``
  (create) are allowed only for objects the graph relates to the node:
  node <- pod <- {secret, configmap, serviceaccount, pvc, resourceclaim};
  pvc <- pv <- secret; node <- volumeattachment. A pod counts once it has ``spec.nodeName``
  (until it is deleted); a mirror pod (``kubernetes.io/config.mirror``) relates to its node
  only, never to other objects.
* Pods: get of a related pod; list/watch only with ``spec.nodeName=<node>`` (or of one related
  pod); create/delete, ``status`` update/patch and ``eviction`` create are allowed here and
  narrowed by NodeRestriction admission (``admission/noderestriction.py``).
* Nodes: get/list/watch of its own Node only (by name, or ``metadata.name=`` field selector);
  create/update/patch and ``status`` update/patch are allowed here and narrowed by
  NodeRestriction.
* Leases: get/create/update/patch/delete in ``kube-node-lease``, of its own name (create is
  checked by admission); CSINodes likewise (any namespace: cluster-scoped).
* Everything else is checked against the static node rules (``bootstrap.node_rules()``, the
  rules of the ``system:node`` ClusterRole). What this authorizer does not allow falls through
  to RBAC (``NO_OPINION``); the Node authorizer never denies outright.

The graph follows the API server's own watch caches synchronously: every check first applies
the cache changes since the last check (``ResourceStore.cached_changes``), so a decision sees
at least every write acknowledged before the request arrived. Invariant: ``authorize`` does
no I/O and never awaits.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from sampan.api.podrefs import dicts_of, dig, pod_configmap_names, pod_secret_names, str_of
from sampan.apiserver.auth.rbac import Attributes, Decision, RBACAuthorizer, StaticRBACSource
from sampan.apiserver.auth.user import UserInfo

__all__ = [
    "NODES_GROUP",
    "NODE_USER_PREFIX",
    "NodeAuthorizer",
    "NodeGraph",
    "node_identity",
]

NODE_USER_PREFIX = "system:node:"
NODES_GROUP = "system:nodes"
NODE_LEASE_NAMESPACE = "kube-node-lease"
MIRROR_POD_ANNOTATION = "kubernetes.io/config.mirror"

# Vertex kinds of the graph (upstream's vertex type names, used in nothing user-visible).
SECRET = "secret"
CONFIGMAP = "configmap"
SERVICE_ACCOUNT = "serviceaccount"
PVC = "pvc"
RESOURCE_CLAIM = "resourceclaim"

_Ref = tuple[str, str, str]  # (kind, namespace, name)


def node_identity(user: UserInfo) -> tuple[str, bool]:
    """(node name, is a node): a node is a user named ``system:node:<name>`` in the group
    ``system:nodes``; the name may be empty (an unidentifiable node)."""
    if not user.name.startswith(NODE_USER_PREFIX) or NODES_GROUP not in user.groups:
        return "", False
    return user.name[len(NODE_USER_PREFIX) :], True


# --- what a pod refers to ------------------------------------------------------------------


def _pod_claim_names(pod: Mapping[str, Any]) -> set[str]:
    spec = pod.get("spec") or {}
    meta = pod.get("metadata") or {}
    names: set[str] = set()
    for volume in dicts_of(spec.get("volumes")):
        claim = str_of(dig(volume, "persistentVolumeClaim", "claimName"))
        if claim:
            names.add(claim)
        elif isinstance(volume.get("ephemeral"), dict):
            names.add(f"{str_of(meta.get('name'))}-{str_of(volume.get('name'))}")
    return names


def _pod_resource_claims(pod: Mapping[str, Any]) -> set[str]:
    spec = pod.get("spec") or {}
    generated = {
        str_of(status.get("name")): str_of(status.get("resourceClaimName"))
        for status in dicts_of(dig(pod, "status", "resourceClaimStatuses"))
    }
    names: set[str] = set()
    for claim in dicts_of(spec.get("resourceClaims")):
        name = str_of(claim.get("resourceClaimName"))
        if not name and claim.get("resourceClaimTemplateName"):
            name = generated.get(str_of(claim.get("name")), "")
        if name:
            names.add(name)
    return names


def _pod_refs(namespace: str, pod: Mapping[str, Any]) -> frozenset[_Ref]:
    annotations = dig(pod, "metadata", "annotations") or {}
    if isinstance(annotations, dict) and MIRROR_POD_ANNOTATION in annotations:
        return frozenset()  # defence in depth: a node-made pod grants nothing
    refs: set[_Ref] = set()
    account = str_of(dig(pod, "spec", "serviceAccountName"))
    if account:
        refs.add((SERVICE_ACCOUNT, namespace, account))
    refs.update((SECRET, namespace, name) for name in pod_secret_names(pod))
    refs.update((CONFIGMAP, namespace, name) for name in pod_configmap_names(pod))
    refs.update((PVC, namespace, name) for name in _pod_claim_names(pod))
    refs.update((RESOURCE_CLAIM, namespace, name) for name in _pod_resource_claims(pod))
    return frozenset(refs)


_PV_SECRET_REF_SOURCES = ("cephfs", "cinder", "flexVolume", "rbd", "scaleIO", "storageos")
_PV_CSI_SECRET_REFS = (
    "controllerPublishSecretRef",
    "nodeStageSecretRef",
    "nodePublishSecretRef",
    "controllerExpandSecretRef",
    "nodeExpandSecretRef",
)


def _pv_secrets(pv: Mapping[str, Any], claim_namespace: str) -> frozenset[tuple[str, str]]:
    """(namespace, name) of the Secrets a PersistentVolume refers to (VisitPVSecretNames);
    a reference without a namespace means the claim's."""
    spec = pv.get("spec") or {}
    out: set[tuple[str, str]] = set()

    def add(namespace: Any, name: Any) -> None:
        if str_of(name):
            out.add((str_of(namespace) or claim_namespace, str_of(name)))

    azure = spec.get("azureFile")
    if isinstance(azure, dict):
        add(azure.get("secretNamespace"), azure.get("secretName"))
    for source in _PV_SECRET_REF_SOURCES:
        ref = dig(spec, source, "secretRef")
        if isinstance(ref, dict):
            add(ref.get("namespace"), ref.get("name"))
    iscsi = spec.get("iscsi")
    if isinstance(iscsi, dict) and isinstance(iscsi.get("secretRef"), dict):
        add(iscsi["secretRef"].get("namespace"), iscsi["secretRef"].get("name"))
    csi = spec.get("csi")
    if isinstance(csi, dict):
        for key in _PV_CSI_SECRET_REFS:
            ref = csi.get(key)
            if isinstance(ref, dict):
                add(ref.get("namespace"), ref.get("name"))
    return frozenset(out)


# --- the graph ------------------------------------------------------------------------------


class ChangeSource(Protocol):
    """One watch cache to follow (``ResourceStore.cached_changes``)."""

    def cached_changes(self, cursor: Any) -> Any: ...


@dataclass(frozen=True, slots=True)
class _PodEntry:
    node: str
    refs: frozenset[_Ref]


@dataclass(frozen=True, slots=True)
class _PVEntry:
    claim: tuple[str, str] | None  # (namespace, name) of claimRef
    secrets: frozenset[tuple[str, str]]


class _Follower:
    """Applies one cache's changes to the graph through ``put`` / ``drop`` / ``reset``."""

    def __init__(
        self,
        source: ChangeSource,
        put: Callable[[str, str, dict[str, Any]], None],
        drop: Callable[[str, str], None],
        reset: Callable[[], None],
    ) -> None:
        self._source = source
        self._put = put
        self._drop = drop
        self._reset = reset
        self._cursor: Any = None

    def sync(self) -> None:
        delta = self._source.cached_changes(self._cursor)
        if delta is None:
            return
        if delta.full:
            self._reset()
        for namespace, name, obj in delta.changes:
            if obj is None:
                self._drop(namespace, name)
            else:
                self._put(namespace, name, obj)
        self._cursor = delta.cursor


class NodeGraph:
    """Which objects each node may reach, kept from the pods, persistentvolumes and
    volumeattachments watch caches (module docstring). Not thread-safe: event loop only."""

    def __init__(
        self,
        pods: ChangeSource,
        persistent_volumes: ChangeSource | None = None,
        volume_attachments: ChangeSource | None = None,
    ) -> None:
        self._pods: dict[tuple[str, str], _PodEntry] = {}
        self._ref_nodes: dict[_Ref, Counter[str]] = {}
        self._pvs: dict[str, _PVEntry] = {}
        self._secret_pvs: dict[tuple[str, str], set[str]] = {}
        self._attachments: dict[str, str] = {}
        self._followers = [_Follower(pods, self._put_pod, self._drop_pod, self._reset_pods)]
        if persistent_volumes is not None:
            self._followers.append(
                _Follower(persistent_volumes, self._put_pv, self._drop_pv, self._reset_pvs)
            )
        if volume_attachments is not None:
            self._followers.append(
                _Follower(
                    volume_attachments,
                    self._put_attachment,
                    lambda _ns, name: self._attachments.pop(name, None),
                    self._attachments.clear,
                )
            )

    def sync(self) -> None:
        """Catch up with the caches (cheap when nothing changed)."""
        for follower in self._followers:
            follower.sync()

    # -- pods --

    def _put_pod(self, namespace: str, name: str, pod: dict[str, Any]) -> None:
        node = str_of(dig(pod, "spec", "nodeName"))
        key = (namespace, name)
        if not node:
            self._drop_pod(namespace, name)
            return
        entry = _PodEntry(node, _pod_refs(namespace, pod))
        if self._pods.get(key) == entry:
            return
        self._drop_pod(namespace, name)
        self._pods[key] = entry
        for ref in entry.refs:
            self._ref_nodes.setdefault(ref, Counter())[node] += 1

    def _drop_pod(self, namespace: str, name: str) -> None:
        entry = self._pods.pop((namespace, name), None)
        if entry is None:
            return
        for ref in entry.refs:
            nodes = self._ref_nodes.get(ref)
            if nodes is None:
                continue
            nodes[entry.node] -= 1
            if nodes[entry.node] <= 0:
                del nodes[entry.node]
            if not nodes:
                del self._ref_nodes[ref]

    def _reset_pods(self) -> None:
        self._pods.clear()
        self._ref_nodes.clear()

    # -- persistent volumes --

    def _put_pv(self, _namespace: str, name: str, pv: dict[str, Any]) -> None:
        self._drop_pv("", name)
        claim_ref = dig(pv, "spec", "claimRef")
        claim: tuple[str, str] | None = None
        if isinstance(claim_ref, dict) and str_of(claim_ref.get("name")):
            claim = (str_of(claim_ref.get("namespace")), str_of(claim_ref.get("name")))
        secrets = _pv_secrets(pv, claim[0] if claim else "")
        self._pvs[name] = _PVEntry(claim, secrets)
        for secret in secrets:
            self._secret_pvs.setdefault(secret, set()).add(name)

    def _drop_pv(self, _namespace: str, name: str) -> None:
        entry = self._pvs.pop(name, None)
        if entry is None:
            return
        for secret in entry.secrets:
            pvs = self._secret_pvs.get(secret)
            if pvs is not None:
                pvs.discard(name)
                if not pvs:
                    del self._secret_pvs[secret]

    def _reset_pvs(self) -> None:
        self._pvs.clear()
        self._secret_pvs.clear()

    def _put_attachment(self, _namespace: str, name: str, va: dict[str, Any]) -> None:
        node = str_of(dig(va, "spec", "nodeName"))
        if node:
            self._attachments[name] = node
        else:
            self._attachments.pop(name, None)

    # -- queries --

    def _ref_reaches(self, ref: _Ref, node: str) -> bool:
        nodes = self._ref_nodes.get(ref)
        return bool(nodes) and nodes.get(node, 0) > 0  # type: ignore[union-attr]

    def _pv_reaches(self, pv_name: str, node: str) -> bool:
        entry = self._pvs.get(pv_name)
        if entry is None or entry.claim is None:
            return False
        return self._ref_reaches((PVC, *entry.claim), node)

    def reaches(self, node: str, kind: str, namespace: str, name: str) -> bool:
        """Is there a path from the object to ``node``? ``kind`` is one of ``pod``,
        ``secret``, ``configmap``, ``serviceaccount``, ``pvc``, ``pv``, ``resourceclaim``,
        ``volumeattachment``."""
        self.sync()
        if kind == "pod":
            entry = self._pods.get((namespace, name))
            return entry is not None and entry.node == node
        if kind == "pv":
            return self._pv_reaches(name, node)
        if kind == "volumeattachment":
            return self._attachments.get(name) == node
        if self._ref_reaches((kind, namespace, name), node):
            return True
        if kind == SECRET:
            pvs = self._secret_pvs.get((namespace, name), ())
            return any(self._pv_reaches(pv, node) for pv in pvs)
        return False


# --- the authorizer -------------------------------------------------------------------------

NO_OPINION = Decision(False, "")
ALLOW = Decision(True, "")


def _no_opinion(reason: str) -> Decision:
    return Decision(False, reason)


def _selects(field_selector: str, field: str, value: str) -> bool:
    """Does the field selector require ``field == value`` (``=`` or ``==``)?"""
    for term in field_selector.split(","):
        if "!=" in term:
            continue
        key, op, wanted = term.partition("==") if "==" in term else term.partition("=")
        if op and key.strip() == field and wanted.strip() == value:
            return True
    return False


class NodeAuthorizer:
    """``authorize(attrs) -> Decision`` for nodes (module docstring); other users get
    ``NO_OPINION``. ``node_rules`` are the static rules of ``system:node``."""

    def __init__(self, graph: NodeGraph, node_rules: Iterable[Mapping[str, Any]]) -> None:
        self.graph = graph
        role = {"metadata": {"name": "system:node"}, "rules": [dict(r) for r in node_rules]}
        binding = {
            "metadata": {"name": "system:node"},
            "roleRef": {"kind": "ClusterRole", "name": "system:node"},
            "subjects": [{"kind": "Group", "name": NODES_GROUP}],
        }
        # An RBAC evaluator over the static rules alone (its per-user rule cache included).
        self._static = RBACAuthorizer(StaticRBACSource([role], [binding]))

    def authorize(self, attrs: Attributes) -> Decision:
        node, is_node = node_identity(attrs.user)
        if not is_node:
            return NO_OPINION
        if not node:
            return _no_opinion(f'unknown node for user "{attrs.user.name}"')
        if attrs.resource_request:
            handler = _HANDLERS.get((attrs.api_group, attrs.resource))
            if handler is not None:
                return handler(self, node, attrs)
        if self._static.authorize(attrs).allowed:
            return ALLOW
        return NO_OPINION

    # -- per resource --

    def _related(self, node: str, kind: str, attrs: Attributes) -> Decision:
        if not attrs.name:
            return _no_opinion("No Object name found")
        if self.graph.reaches(node, kind, attrs.namespace, attrs.name):
            return ALLOW
        return _no_opinion(f"no relationship found between node '{node}' and this object")

    def _read_namespaced(self, node: str, kind: str, attrs: Attributes) -> Decision:
        if attrs.verb not in ("get", "list", "watch"):
            return _no_opinion("can only read resources of this type")
        if attrs.subresource:
            return _no_opinion("cannot read subresource")
        if not attrs.namespace:
            return _no_opinion("can only read namespaced object of this type")
        return self._related(node, kind, attrs)

    def _get(self, node: str, kind: str, attrs: Attributes) -> Decision:
        if attrs.verb != "get":
            return _no_opinion("can only get individual resources of this type")
        if attrs.subresource:
            return _no_opinion("cannot get subresource")
        return self._related(node, kind, attrs)

    def _secrets(self, node: str, attrs: Attributes) -> Decision:
        return self._read_namespaced(node, SECRET, attrs)

    def _configmaps(self, node: str, attrs: Attributes) -> Decision:
        return self._read_namespaced(node, CONFIGMAP, attrs)

    def _pvcs(self, node: str, attrs: Attributes) -> Decision:
        if attrs.subresource == "status":
            if attrs.verb not in ("update", "patch"):
                return _no_opinion("can only get/update/patch this type")
            return self._related(node, PVC, attrs)
        return self._get(node, PVC, attrs)

    def _pvs(self, node: str, attrs: Attributes) -> Decision:
        return self._get(node, "pv", attrs)

    def _resource_claims(self, node: str, attrs: Attributes) -> Decision:
        return self._get(node, RESOURCE_CLAIM, attrs)

    def _volume_attachments(self, node: str, attrs: Attributes) -> Decision:
        return self._get(node, "volumeattachment", attrs)

    def _service_accounts(self, node: str, attrs: Attributes) -> Decision:
        if attrs.verb != "create" or not attrs.name:
            return _no_opinion("can only create tokens for individual service accounts")
        if attrs.subresource != "token":
            return _no_opinion("can only create token subresource of serviceaccount")
        return self._related(node, SERVICE_ACCOUNT, attrs)

    def _leases(self, node: str, attrs: Attributes) -> Decision:
        if attrs.verb not in ("get", "create", "update", "patch", "delete"):
            return _no_opinion("can only get, create, update, patch, or delete a node lease")
        if attrs.namespace != NODE_LEASE_NAMESPACE:
            return _no_opinion(
                f'can only access leases in the "{NODE_LEASE_NAMESPACE}" system namespace'
            )
        if attrs.verb != "create" and attrs.name != node:
            return _no_opinion(
                "can only access node lease with the same name as the requesting node"
            )
        return ALLOW

    def _csinodes(self, node: str, attrs: Attributes) -> Decision:
        if attrs.verb not in ("get", "create", "update", "patch", "delete"):
            return _no_opinion("can only get, create, update, patch, or delete a CSINode")
        if attrs.subresource:
            return _no_opinion("cannot authorize CSINode subresources")
        if attrs.verb != "create" and attrs.name != node:
            return _no_opinion("can only access CSINode with the same name as the requesting node")
        return ALLOW

    def _nodes(self, node: str, attrs: Attributes) -> Decision:
        if not attrs.subresource:
            if attrs.verb in ("create", "update", "patch"):
                return ALLOW  # NodeRestriction: only its own Node
            if attrs.verb in ("get", "list", "watch"):
                if attrs.name == node:
                    return ALLOW
                if not attrs.name:
                    return _no_opinion(
                        f"node '{node}' cannot read all nodes, only its own Node object"
                    )
                return _no_opinion(
                    f"node '{node}' cannot read '{attrs.name}', only its own Node object"
                )
        elif attrs.subresource == "status" and attrs.verb in ("update", "patch"):
            return ALLOW  # NodeRestriction: only its own Node's status
        return NO_OPINION

    def _pods(self, node: str, attrs: Attributes) -> Decision:
        if not attrs.subresource:
            if attrs.verb == "get":
                return self._get(node, "pod", attrs)
            if attrs.verb in ("list", "watch"):
                if _selects(attrs.field_selector, "spec.nodeName", node):
                    return ALLOW
                if attrs.name:
                    return self._related(node, "pod", attrs)
                return _no_opinion("can only list/watch pods with spec.nodeName field selector")
            if attrs.verb in ("create", "delete"):
                return ALLOW  # NodeRestriction: mirror pods / pods bound to this node
        elif attrs.subresource == "status" and attrs.verb in ("update", "patch"):
            return ALLOW  # NodeRestriction: pods bound to this node
        elif attrs.subresource == "eviction" and attrs.verb == "create":
            return ALLOW  # NodeRestriction: pods bound to this node
        return NO_OPINION


_HANDLERS: dict[tuple[str, str], Callable[[NodeAuthorizer, str, Attributes], Decision]] = {
    ("", "secrets"): NodeAuthorizer._secrets,
    ("", "configmaps"): NodeAuthorizer._configmaps,
    ("", "persistentvolumeclaims"): NodeAuthorizer._pvcs,
    ("", "persistentvolumes"): NodeAuthorizer._pvs,
    ("resource.k8s.io", "resourceclaims"): NodeAuthorizer._resource_claims,
    ("storage.k8s.io", "volumeattachments"): NodeAuthorizer._volume_attachments,
    ("", "serviceaccounts"): NodeAuthorizer._service_accounts,
    ("coordination.k8s.io", "leases"): NodeAuthorizer._leases,
    ("storage.k8s.io", "csinodes"): NodeAuthorizer._csinodes,
    ("", "nodes"): NodeAuthorizer._nodes,
    ("", "pods"): NodeAuthorizer._pods,
}
