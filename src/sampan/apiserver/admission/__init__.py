"""Admission: the ordered chain of plugins every write passes after authorization and before
storage, and the admission-side subresources.

Layout:

* ``chain``        ``AdmissionAttributes``, the plugin protocol, ``AdmissionChain`` (mutating
                   then validating; success/failure hooks; warnings) and ``admitted_update``
* ``namespace``    NamespaceLifecycle
* ``pods``         ServiceAccount, DefaultTolerationSeconds, Priority
* ``noderestriction`` NodeRestriction (kubelets write only their own node's objects)
* ``storage``      DefaultStorageClass, StorageObjectInUseProtection
* ``network``      DefaultIngressClass
* ``allocator``    ClusterIP / NodePort claims in the datastore, with repair
* ``services``     Service allocation on create/update/delete and the repair loop
* ``subresources`` serviceaccounts/token (TokenRequest) and pods/eviction
* ``webhooks``     MutatingAdmissionWebhook and ValidatingAdmissionWebhook: the webhook
                   configurations from the watch cache, matching, AdmissionReview calls
* ``runtime``      ``Admission``: builds all of it for the API server, including
                   ``sampan.apiserver.auth.escalation.RBACEscalation`` (RBAC writes must not
                   grant more than the writer holds)
"""

from __future__ import annotations

from sampan.apiserver.admission.chain import (
    AdmissionAttributes,
    AdmissionChain,
    AdmissionPlugin,
    admitted_update,
    forbidden,
    warning_header,
    warning_text_ok,
)
from sampan.apiserver.admission.namespace import (
    IMMORTAL_NAMESPACES,
    NamespaceGetter,
    NamespaceLifecycle,
)
from sampan.apiserver.admission.runtime import Admission

__all__ = [
    "IMMORTAL_NAMESPACES",
    "Admission",
    "AdmissionAttributes",
    "AdmissionChain",
    "AdmissionPlugin",
    "NamespaceGetter",
    "NamespaceLifecycle",
    "admitted_update",
    "default_chain",
    "forbidden",
    "warning_header",
    "warning_text_ok",
]


def default_chain(get_namespace: NamespaceGetter) -> AdmissionChain:
    """NamespaceLifecycle alone (unit tests); the API server builds ``Admission``."""
    return AdmissionChain([NamespaceLifecycle(get_namespace)])
