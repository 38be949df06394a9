"""The certificate admission plugins of kube-apiserver 1.32: who may approve, who may sign, and
which subjects the API server's own client signer refuses.

Without them, whoever may update ``certificatesigningrequests/approval`` could approve a
request for any signer, and a request for ``O=system:masters`` from the
``kubernetes.io/kube-apiserver-client`` signer would make its holder cluster-admin.

* **CertificateApproval**: an update of ``certificatesigningrequests/approval`` needs the
  ``approve`` verb on the synthetic resource ``signers`` (group ``certificates.k8s.io``) named
  by the request's signer (as stored: the old object), or by ``<domain>/*``; else 403
  ``user not permitted to approve requests with signerName "<signer>"``.
* **CertificateSigning**: an update of ``certificatesigningrequests/status`` that changes
  ``status.certificate`` or ``status.conditions`` needs ``sign`` on that signer the same way;
  else 403 ``user not permitted to sign requests with signerName "<signer>"``.
* **CertificateSubjectRestriction**: creating a request for
  ``kubernetes.io/kube-apiserver-client`` whose subject has the organization
  ``system:masters`` is refused with 403 ``use of kubernetes.io/kube-apiserver-client signer
  with system:masters group is not allowed``; a request that does not parse is refused with
  ``failed to parse CSR: ...``.

All three validate (they never change the object) and run after validation, in upstream's
order after StorageObjectInUseProtection. ``system:masters`` passes the first two through the
authorizer, as upstream; the third applies to everyone.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID

from sampan.apiserver.admission.chain import AdmissionAttributes, forbidden
from sampan.apiserver.auth.rbac import Attributes, Decision

__all__ = [
    "CertificateApproval",
    "CertificateSigning",
    "CertificateSubjectRestriction",
    "authorized_for_signer",
]

CERTIFICATES_GROUP = "certificates.k8s.io"
CSRS = "certificatesigningrequests"
KUBE_APISERVER_CLIENT_SIGNER = "kubernetes.io/kube-apiserver-client"
SYSTEM_MASTERS = "system:masters"

Authorize = Callable[[Attributes], Decision]


def authorized_for_signer(authorize: Authorize, user: Any, verb: str, signer: str) -> bool:
    """May ``user`` ``verb`` (approve, sign) requests of ``signer``: allowed on ``signers``
    named ``signer``, or named ``<domain>/*`` for the signer's domain."""
    names = [signer]
    domain, sep, _rest = signer.partition("/")
    if sep:
        names.append(f"{domain}/*")
    return any(
        authorize(
            Attributes(
                user=user, verb=verb, api_group=CERTIFICATES_GROUP, resource="signers", name=name
            )
        ).allowed
        for name in names
    )


def _signer(obj: dict[str, Any] | None) -> str:
    spec = (obj or {}).get("spec")
    signer = spec.get("signerName") if isinstance(spec, dict) else None
    return signer if isinstance(signer, str) else ""


class CertificateApproval:
    name = "CertificateApproval"
    mutating = False

    def __init__(self, authorize: Authorize) -> None:
        self._authorize = authorize

    async def admit(self, attrs: AdmissionAttributes) -> None:
        if attrs.operation != "UPDATE" or not attrs.is_resource(
            CERTIFICATES_GROUP, CSRS, "approval"
        ):
            return
        signer = _signer(attrs.old_obj if attrs.old_obj is not None else attrs.obj)
        if not authorized_for_signer(self._authorize, attrs.user, "approve", signer):
            raise forbidden(
                attrs, f'user not permitted to approve requests with signerName "{signer}"'
            )


class CertificateSigning:
    name = "CertificateSigning"
    mutating = False

    def __init__(self, authorize: Authorize) -> None:
        self._authorize = authorize

    async def admit(self, attrs: AdmissionAttributes) -> None:
        if attrs.operation != "UPDATE" or not attrs.is_resource(CERTIFICATES_GROUP, CSRS, "status"):
            return
        old = (attrs.old_obj or {}).get("status") or {}
        new = (attrs.obj or {}).get("status") or {}
        if old.get("certificate") == new.get("certificate") and (old.get("conditions") or []) == (
            new.get("conditions") or []
        ):
            return
        signer = _signer(attrs.old_obj if attrs.old_obj is not None else attrs.obj)
        if not authorized_for_signer(self._authorize, attrs.user, "sign", signer):
            raise forbidden(
                attrs, f'user not permitted to sign requests with signerName "{signer}"'
            )


class CertificateSubjectRestriction:
    name = "CertificateSubjectRestriction"
    mutating = False

    async def admit(self, attrs: AdmissionAttributes) -> None:
        if attrs.operation != "CREATE" or not attrs.is_resource(CERTIFICATES_GROUP, CSRS):
            return
        if _signer(attrs.obj) != KUBE_APISERVER_CLIENT_SIGNER:
            return
        request = ((attrs.obj or {}).get("spec") or {}).get("request")
        try:
            pem = base64.b64decode(str(request), validate=True)
            csr = x509.load_pem_x509_csr(pem)
            organizations = [
                str(a.value) for a in csr.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
            ]
        except (binascii.Error, ValueError) as exc:
            raise forbidden(attrs, f"failed to parse CSR: {exc}") from None
        if SYSTEM_MASTERS in organizations:
            raise forbidden(
                attrs,
                f"use of {KUBE_APISERVER_CLIENT_SIGNER} signer with {SYSTEM_MASTERS} group "
                "is not allowed",
            )
