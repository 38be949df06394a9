"""NamespaceLifecycle admission: no new content in a namespace that does not exist or is being
terminated, and the immortal system namespaces can never be deleted.

Invariant: review kinds (access reviews, token reviews), which are computed and never stored,
are not blocked by a missing namespace, as upstream exempts them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from sampan.api.errors import NotFound
from sampan.apiserver.admission.chain import AdmissionAttributes, forbidden

__all__ = [
    "IMMORTAL_NAMESPACES",
    "NamespaceGetter",
    "NamespaceLifecycle",
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
