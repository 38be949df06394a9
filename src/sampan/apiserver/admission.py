"""Admission: the ordered chain of plugins every write passes after authorization and before
storage.

Owns the ``AdmissionPlugin`` protocol, the ``Attributes`` a plugin sees, and the plugins of
part 1: NamespaceLifecycle. Later plugins (ClusterIP allocation, ServiceAccount, PodSecurity,
LimitRanger, ResourceQuota...) are appended to ``default_chain``; the chain runs mutating
plugins first, then validating ones, in list order, exactly like kube-apiserver.

Invariants: a plugin either returns (possibly having mutated ``attrs.obj`` in place, for
mutating plugins only) or raises a StatusError; a rejected request writes nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sampan.apiserver.errors import Forbidden, NotFound, qualified_resource

__all__ = [
    "IMMORTAL_NAMESPACES",
    "AdmissionAttributes",
    "AdmissionChain",
    "AdmissionPlugin",
    "NamespaceGetter",
    "NamespaceLifecycle",
    "forbidden",
]

IMMORTAL_NAMESPACES = frozenset({"default", "kube-system", "kube-public", "kube-node-lease"})
"""Namespaces that exist from the start and can never be deleted."""

# Kinds that are evaluated rather than stored: never blocked by namespace lifecycle.
_REVIEW_RESOURCES = frozenset(
    {
        ("authorization.k8s.io", "localsubjectaccessreviews"),
        ("authorization.k8s.io", "subjectaccessreviews"),
        ("authorization.k8s.io", "selfsubjectaccessreviews"),
        ("authorization.k8s.io", "selfsubjectrulesreviews"),
        ("authentication.k8s.io", "tokenreviews"),
        ("authentication.k8s.io", "selfsubjectreviews"),
    }
)


@dataclass(slots=True)
class AdmissionAttributes:
    operation: str  # CREATE | UPDATE | DELETE | CONNECT
    group: str
    version: str
    resource: str
    subresource: str
    namespace: str
    name: str
    namespaced: bool
    obj: dict[str, Any] | None = None
    old_obj: dict[str, Any] | None = None
    dry_run: bool = False
    user: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


class AdmissionPlugin(Protocol):
    name: str
    mutating: bool

    async def admit(self, attrs: AdmissionAttributes) -> None: ...


def forbidden(attrs: AdmissionAttributes, reason: str) -> Forbidden:
    """kube-apiserver's admission Forbidden wording: ``<resource> "<name>" is forbidden: ...``."""
    resource = qualified_resource(attrs.resource, attrs.group)
    if attrs.name:
        message = f'{resource} "{attrs.name}" is forbidden: {reason}'
    else:
        message = f"{resource} is forbidden: {reason}"
    return Forbidden(message, name=attrs.name, group=attrs.group, kind=attrs.resource)


NamespaceGetter = Callable[[str], Awaitable[dict[str, Any] | None]]


class NamespaceLifecycle:
    """No new content in a namespace that does not exist or is terminating; the immortal
    namespaces cannot be deleted."""

    name = "NamespaceLifecycle"
    mutating = False

    def __init__(self, get_namespace: NamespaceGetter) -> None:
        self._get_namespace = get_namespace

    async def admit(self, attrs: AdmissionAttributes) -> None:
        if attrs.group == "" and attrs.resource == "namespaces":
            if (
                attrs.operation == "DELETE"
                and not attrs.subresource
                and attrs.name in IMMORTAL_NAMESPACES
            ):
                raise forbidden(attrs, "this namespace may not be deleted")
            return
        if attrs.operation != "CREATE" or not attrs.namespaced or not attrs.namespace:
            return
        if (attrs.group, attrs.resource) in _REVIEW_RESOURCES:
            return
        namespace = await self._get_namespace(attrs.namespace)
        if namespace is None:
            raise NotFound.for_object("namespaces", "", attrs.namespace)
        phase = (namespace.get("status") or {}).get("phase")
        if phase == "Terminating" or (namespace.get("metadata") or {}).get("deletionTimestamp"):
            raise forbidden(
                attrs,
                f"unable to create new content in namespace {attrs.namespace} "
                "because it is being terminated",
            )


class AdmissionChain:
    """Runs mutating plugins, then validating plugins, in order."""

    def __init__(self, plugins: Sequence[AdmissionPlugin]) -> None:
        self.plugins = list(plugins)

    async def admit(self, attrs: AdmissionAttributes) -> None:
        for plugin in self.plugins:
            if plugin.mutating:
                await plugin.admit(attrs)
        for plugin in self.plugins:
            if not plugin.mutating:
                await plugin.admit(attrs)


def default_chain(get_namespace: NamespaceGetter) -> AdmissionChain:
    """The plugins Sampan enables, in kube-apiserver's order."""
    return AdmissionChain([NamespaceLifecycle(get_namespace)])
