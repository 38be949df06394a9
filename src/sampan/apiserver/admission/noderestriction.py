"""NodeRestriction admission: a kubelet may write only what belongs to its own node
(kube-apiserver 1.32's plugin, for the users the Node authorizer identifies as nodes).

For a user ``system:node:<name>`` in ``system:nodes`` (other users pass untouched):

* pods: create only mirror pods (``kubernetes.io/config.mirror``) bound to itself, with one
  controller owner reference to its own Node (uid checked, no ``blockOwnerDeletion``), and no
  service account, Secret, ConfigMap, ClusterTrustBundle or PVC reference; delete only pods
  bound to itself; ``status`` updates only of pods bound to itself, without changing labels or
  resource claim statuses; ``eviction`` only of pods bound to itself;
* nodes (and ``nodes/status``): only its own Node; on create no ``spec.configSource`` and no
  label outside what kubelets may set; on update no new ``configSource``, no change of taints,
  no change of labels outside that set. Kubelets may set ``kubernetes.io/hostname``,
  ``kubernetes.io/os|arch``, the topology/zone/region and instance-type labels and anything
  under ``[*.]kubelet.kubernetes.io/`` or ``[*.]node.kubernetes.io/``; never other
  ``kubernetes.io`` / ``k8s.io`` labels (``node-role.kubernetes.io/...``) nor
  ``[*.]node-restriction.kubernetes.io/``;
* persistentvolumeclaims: only ``status`` updates that change nothing but
  ``status.capacity``, ``status.conditions`` and the allocated resources (statuses);
* serviceaccounts/token: only tokens bound (``boundObjectRef``, with uid) to a pod bound to
  itself;
* leases: only in ``kube-node-lease`` and named after itself; CSINodes: only its own.

Every refusal is a 403 worded as upstream's ``admission.NewForbidden``
(``pods "x" is forbidden: node "n" can only create mirror pods ...``); a pod or Node that
must exist and does not is a 404. The plugin runs in the mutating phase (upstream implements
``Admit``) right after ServiceAccount, and never changes the object.
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from sampan.api.errors import Forbidden, NotFound, qualified_resource
from sampan.api.podrefs import pod_configmap_names, pod_secret_names
from sampan.apiserver.admission.chain import AdmissionAttributes
from sampan.apiserver.auth.node import MIRROR_POD_ANNOTATION, NODE_LEASE_NAMESPACE, node_identity

__all__ = ["KUBELET_LABELS", "NodeRestriction", "forbidden_node_labels", "is_kubelet_label"]

Getter = Callable[[str, str, str, str], Awaitable[dict[str, Any] | None]]

KUBELET_LABELS = frozenset(
    {
        "kubernetes.io/hostname",
        "topology.kubernetes.io/zone",
        "topology.kubernetes.io/region",
        "failure-domain.beta.kubernetes.io/zone",
        "failure-domain.beta.kubernetes.io/region",
        "beta.kubernetes.io/instance-type",
        "node.kubernetes.io/instance-type",
        "kubernetes.io/os",
        "kubernetes.io/arch",
        "beta.kubernetes.io/os",
        "beta.kubernetes.io/arch",
    }
)
"""Label keys kubelets may set on their own Node (besides the namespaces below)."""
KUBELET_LABEL_NAMESPACES = ("kubelet.kubernetes.io", "node.kubernetes.io")
NODE_RESTRICTION_LABEL_NAMESPACE = "node-restriction.kubernetes.io"


def _label_namespace(key: str) -> str:
    prefix, sep, _name = key.partition("/")
    return prefix if sep else ""


def _in_namespace(namespace: str, domain: str) -> bool:
    return namespace == domain or namespace.endswith("." + domain)


def is_kubelet_label(key: str) -> bool:
    """May a kubelet set this label on its own Node?"""
    if key in KUBELET_LABELS:
        return True
    namespace = _label_namespace(key)
    return any(_in_namespace(namespace, allowed) for allowed in KUBELET_LABEL_NAMESPACES)


def forbidden_node_labels(keys: Iterable[str]) -> list[str]:
    """The label keys (sorted) a kubelet may not add, change or remove on its own Node."""
    out = []
    for key in set(keys):
        namespace = _label_namespace(key)
        kubernetes = _in_namespace(namespace, "kubernetes.io") or _in_namespace(namespace, "k8s.io")
        if _in_namespace(namespace, NODE_RESTRICTION_LABEL_NAMESPACE) or (
            kubernetes and not is_kubelet_label(key)
        ):
            out.append(key)
    return sorted(out)


def _modified_labels(new: Mapping[str, Any], old: Mapping[str, Any]) -> set[str]:
    return {k for k in set(new) | set(old) if new.get(k) != old.get(k) or (k in new) != (k in old)}


def _meta(obj: Mapping[str, Any] | None) -> dict[str, Any]:
    meta = (obj or {}).get("metadata")
    return meta if isinstance(meta, dict) else {}


def _spec(obj: Mapping[str, Any] | None) -> dict[str, Any]:
    spec = (obj or {}).get("spec")
    return spec if isinstance(spec, dict) else {}


class NodeRestriction:
    """The admission plugin (module docstring). ``get(group, plural, namespace, name)`` reads
    current objects (pods, nodes); None when missing."""

    name = "NodeRestriction"
    mutating = True

    def __init__(self, get: Getter) -> None:
        self._get = get

    async def admit(self, attrs: AdmissionAttributes) -> None:
        if attrs.operation not in ("CREATE", "UPDATE", "DELETE"):
            return
        if attrs.user is None:
            return
        node, is_node = node_identity(attrs.user)
        if not is_node:
            return
        if not node:
            raise self._forbidden(attrs, f'could not determine node from user "{attrs.user.name}"')
        key = (attrs.group, attrs.resource)
        if key == ("", "pods"):
            if attrs.subresource == "":
                await self._pod(node, attrs)
            elif attrs.subresource == "status":
                self._pod_status(node, attrs)
            elif attrs.subresource == "eviction":
                await self._pod_eviction(node, attrs)
            else:
                raise self._forbidden(
                    attrs,
                    f'unexpected pod subresource "{attrs.subresource}", '
                    "only 'status' and 'eviction' are allowed",
                )
        elif key == ("", "nodes"):
            self._node(node, attrs)
        elif key == ("", "persistentvolumeclaims"):
            if attrs.subresource != "status":
                raise self._forbidden(attrs, "may only update PVC status")
            self._pvc_status(node, attrs)
        elif key == ("", "serviceaccounts"):
            await self._service_account(node, attrs)
        elif key == ("coordination.k8s.io", "leases"):
            self._lease(node, attrs)
        elif key == ("storage.k8s.io", "csinodes"):
            self._csinode(node, attrs)

    # -- errors --

    @staticmethod
    def _forbidden(attrs: AdmissionAttributes, reason: str) -> Forbidden:
        """``admission.NewForbidden``: the request's name, else the object's name or
        generateName, else ``Unknown``."""
        name = attrs.name
        if not name:
            meta = _meta(attrs.obj)
            name = meta.get("name") or meta.get("generateName") or "Unknown"
        resource = qualified_resource(attrs.resource, attrs.group)
        return Forbidden(
            f'{resource} "{name}" is forbidden: {reason}',
            name=name,
            group=attrs.group,
            kind=attrs.resource,
        )

    async def _existing(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        obj = await self._get("", plural, namespace, name)
        if obj is None:
            raise NotFound.for_object(plural, "", name)
        return obj

    # -- pods --

    async def _pod(self, node: str, attrs: AdmissionAttributes) -> None:
        if attrs.operation == "CREATE":
            await self._pod_create(node, attrs)
        elif attrs.operation == "DELETE":
            pod = await self._existing("pods", attrs.namespace, attrs.name)
            if _spec(pod).get("nodeName") != node:
                raise self._forbidden(
                    attrs, f'node "{node}" can only delete pods with spec.nodeName set to itself'
                )
        else:
            raise self._forbidden(
                attrs,
                f'unexpected operation "{attrs.operation}", '
                f'node "{node}" can only create and delete mirror pods',
            )

    async def _pod_create(self, node: str, attrs: AdmissionAttributes) -> None:
        pod = attrs.obj or {}
        meta = _meta(pod)
        spec = _spec(pod)
        annotations = meta.get("annotations") or {}
        if not isinstance(annotations, dict) or MIRROR_POD_ANNOTATION not in annotations:
            raise self._forbidden(
                attrs,
                f'pod does not have "{MIRROR_POD_ANNOTATION}" annotation, '
                f'node "{node}" can only create mirror pods',
            )
        if spec.get("nodeName") != node:
            raise self._forbidden(
                attrs, f'node "{node}" can only create pods with spec.nodeName set to itself'
            )
        owners = meta.get("ownerReferences") or []
        if not isinstance(owners, list):
            owners = []
        if len(owners) > 1:
            raise self._forbidden(
                attrs,
                f'node "{node}" can only create pods with a single owner reference set to itself',
            )
        if not owners:
            raise self._forbidden(
                attrs, f'node "{node}" can only create pods with an owner reference set to itself'
            )
        owner = owners[0] if isinstance(owners[0], dict) else {}
        if (
            owner.get("apiVersion") != "v1"
            or owner.get("kind") != "Node"
            or owner.get("name") != node
        ):
            raise self._forbidden(
                attrs, f'node "{node}" can only create pods with an owner reference set to itself'
            )
        if owner.get("controller") is not True:
            raise self._forbidden(
                attrs,
                f'node "{node}" can only create pods with a controller owner reference set to '
                "itself",
            )
        if owner.get("blockOwnerDeletion") is True:
            raise self._forbidden(
                attrs, f'node "{node}" must not set blockOwnerDeletion on an owner reference'
            )
        node_obj = await self._existing("nodes", "", node)
        node_uid = _meta(node_obj).get("uid", "")
        if owner.get("uid", "") != node_uid:
            raise self._forbidden(
                attrs, f"node {node} UID mismatch: expected {owner.get('uid', '')} got {node_uid}"
            )
        if spec.get("serviceAccountName"):
            raise self._forbidden(
                attrs, f'node "{node}" can not create pods that reference a service account'
            )
        if pod_secret_names(pod):
            raise self._forbidden(
                attrs, f'node "{node}" can not create pods that reference secrets'
            )
        if pod_configmap_names(pod):
            raise self._forbidden(
                attrs, f'node "{node}" can not create pods that reference configmaps'
            )
        volumes = [v for v in spec.get("volumes") or [] if isinstance(v, dict)]
        for volume in volumes:
            projected = volume.get("projected") or {}
            for source in projected.get("sources") or [] if isinstance(projected, dict) else []:
                if isinstance(source, dict) and source.get("clusterTrustBundle") is not None:
                    raise self._forbidden(
                        attrs,
                        f'node "{node}" can not create pods that reference clustertrustbundles',
                    )
        for volume in volumes:
            if volume.get("persistentVolumeClaim") is not None:
                raise self._forbidden(
                    attrs,
                    f'node "{node}" can not create pods that reference persistentvolumeclaims',
                )

    def _pod_status(self, node: str, attrs: AdmissionAttributes) -> None:
        if attrs.operation != "UPDATE":
            raise self._forbidden(attrs, f'unexpected operation "{attrs.operation}"')
        old, new = attrs.old_obj or {}, attrs.obj or {}
        if _spec(old).get("nodeName") != node:
            raise self._forbidden(
                attrs,
                f'node "{node}" can only update pod status for pods with spec.nodeName set to '
                "itself",
            )
        if (_meta(old).get("labels") or {}) != (_meta(new).get("labels") or {}):
            raise self._forbidden(attrs, f'node "{node}" cannot update labels through pod status')

        def claims(pod: Mapping[str, Any]) -> list[tuple[Any, Any]]:
            statuses = (pod.get("status") or {}).get("resourceClaimStatuses") or []
            return [
                (s.get("name"), s.get("resourceClaimName")) for s in statuses if isinstance(s, dict)
            ]

        if claims(old) != claims(new):
            raise self._forbidden(attrs, f'node "{node}" cannot update resource claim statues')

    async def _pod_eviction(self, node: str, attrs: AdmissionAttributes) -> None:
        if attrs.operation != "CREATE":
            raise self._forbidden(attrs, f"unexpected operation {attrs.operation}")
        name = attrs.name or _meta(attrs.obj).get("name") or ""
        if not name:
            raise self._forbidden(attrs, "could not determine pod from request data")
        pod = await self._existing("pods", attrs.namespace, name)
        if _spec(pod).get("nodeName") != node:
            raise self._forbidden(
                attrs, f"node {node} can only evict pods with spec.nodeName set to itself"
            )

    # -- nodes --

    def _node(self, node: str, attrs: AdmissionAttributes) -> None:
        if attrs.name != node:
            raise self._forbidden(
                attrs, f'node "{node}" is not allowed to modify node "{attrs.name}"'
            )
        new = attrs.obj or {}
        if attrs.operation == "CREATE":
            if _spec(new).get("configSource") is not None:
                raise self._forbidden(
                    attrs,
                    f'node "{node}" is not allowed to create pods with a non-nil configSource',
                )
            forbidden = forbidden_node_labels(set(_meta(new).get("labels") or {}))
            if forbidden:
                raise self._forbidden(
                    attrs,
                    f'node "{node}" is not allowed to set the following labels: '
                    + ", ".join(forbidden),
                )
        elif attrs.operation == "UPDATE":
            old = attrs.old_obj or {}
            source = _spec(new).get("configSource")
            if source is not None and source != _spec(old).get("configSource"):
                raise self._forbidden(
                    attrs,
                    f'node "{node}" is not allowed to update configSource to a new non-nil '
                    "configSource",
                )
            if (_spec(new).get("taints") or []) != (_spec(old).get("taints") or []):
                raise self._forbidden(attrs, f'node "{node}" is not allowed to modify taints')
            modified = _modified_labels(
                _meta(new).get("labels") or {}, _meta(old).get("labels") or {}
            )
            forbidden = forbidden_node_labels(modified)
            if forbidden:
                raise self._forbidden(
                    attrs, "is not allowed to modify labels: " + ", ".join(forbidden)
                )

    # -- the rest --

    def _pvc_status(self, node: str, attrs: AdmissionAttributes) -> None:
        if attrs.operation != "UPDATE":
            raise self._forbidden(attrs, f'unexpected operation "{attrs.operation}"')

        def comparable(pvc: Mapping[str, Any] | None) -> dict[str, Any]:
            out = copy.deepcopy(dict(pvc or {}))
            meta = out.get("metadata")
            if isinstance(meta, dict):
                meta.pop("resourceVersion", None)
                meta.pop("managedFields", None)
            status = out.get("status")
            if isinstance(status, dict):
                for key in (
                    "capacity",
                    "conditions",
                    "allocatedResourceStatuses",
                    "allocatedResources",
                ):
                    status.pop(key, None)
            return out

        old, new = comparable(attrs.old_obj), comparable(attrs.obj)
        if old != new:
            changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            raise self._forbidden(
                attrs,
                f'node "{node}" is not allowed to update fields other than status.capacity '
                f"and status.conditions: {', '.join(changed)}",
            )

    async def _service_account(self, node: str, attrs: AdmissionAttributes) -> None:
        if attrs.operation != "CREATE" or attrs.subresource != "token":
            return
        ref = _spec(attrs.obj).get("boundObjectRef")
        if (
            not isinstance(ref, dict)
            or ref.get("apiVersion") != "v1"
            or ref.get("kind") != "Pod"
            or not ref.get("name")
        ):
            raise self._forbidden(attrs, "node requested token not bound to a pod")
        if not ref.get("uid"):
            raise self._forbidden(attrs, "node requested token with a pod binding without a uid")
        pod = await self._existing("pods", attrs.namespace, str(ref["name"]))
        if ref["uid"] != _meta(pod).get("uid"):
            raise self._forbidden(
                attrs,
                f"the UID in the bound object reference ({ref['uid']}) does not match the UID "
                "in record. The object might have been deleted and then recreated",
            )
        if _spec(pod).get("nodeName") != node:
            raise self._forbidden(
                attrs, "node requested token bound to a pod scheduled on a different node"
            )

    def _lease(self, node: str, attrs: AdmissionAttributes) -> None:
        if attrs.namespace != NODE_LEASE_NAMESPACE:
            raise self._forbidden(
                attrs, f'can only access leases in the "{NODE_LEASE_NAMESPACE}" system namespace'
            )
        name = _meta(attrs.obj).get("name") if attrs.operation == "CREATE" else attrs.name
        if name != node:
            raise self._forbidden(
                attrs, "can only access node lease with the same name as the requesting node"
            )

    def _csinode(self, node: str, attrs: AdmissionAttributes) -> None:
        name = _meta(attrs.obj).get("name") if attrs.operation == "CREATE" else attrs.name
        if name != node:
            raise self._forbidden(
                attrs, "can only access CSINode with the same name as the requesting node"
            )
