"""Network admission: DefaultIngressClass (mutating).

A new Ingress (CREATE of ``networking.k8s.io`` ``ingresses``, not a subresource) that has no
``spec.ingressClassName`` and no legacy ``kubernetes.io/ingress.class`` annotation gets the
default IngressClass: the one annotated ``ingressclass.kubernetes.io/is-default-class:
"true"``; with several, the newest (then the first by name), as upstream. No default class:
the Ingress is left as it is. ``ingressClassName: ""`` is set, so it is left alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sampan.apiserver.admission.chain import AdmissionAttributes
from sampan.apiserver.admission.storage import newest_default

__all__ = ["DEFAULT_INGRESS_CLASS_ANNOTATION", "DefaultIngressClass", "default_ingress_class"]

DEFAULT_INGRESS_CLASS_ANNOTATION = "ingressclass.kubernetes.io/is-default-class"
LEGACY_CLASS_ANNOTATION = "kubernetes.io/ingress.class"

ClassLister = Callable[[], list[dict[str, Any]]]


def default_ingress_class(classes: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The default IngressClass among ``classes``."""
    return newest_default(classes, (DEFAULT_INGRESS_CLASS_ANNOTATION,))


class DefaultIngressClass:
    """Fills the default IngressClass into new Ingresses that name none."""

    name = "DefaultIngressClass"
    mutating = True

    def __init__(self, list_classes: ClassLister) -> None:
        self._list_classes = list_classes

    async def admit(self, attrs: AdmissionAttributes) -> None:
        if attrs.operation != "CREATE" or not attrs.is_resource("networking.k8s.io", "ingresses"):
            return
        obj = attrs.obj
        if obj is None:
            return
        spec = obj.setdefault("spec", {})
        if spec.get("ingressClassName") is not None:
            return
        if LEGACY_CLASS_ANNOTATION in ((obj.get("metadata") or {}).get("annotations") or {}):
            return
        klass = default_ingress_class(self._list_classes())
        if klass is not None:
            spec["ingressClassName"] = (klass.get("metadata") or {}).get("name")
