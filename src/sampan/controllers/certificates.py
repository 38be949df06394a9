"""The certificates controllers of kube-controller-manager: csrsigning and csrapproving.

This module owns two rules about CertificateSigningRequests (``certificates.k8s.io/v1``):

* **csrsigning** (``CSRSigningController``) signs an *approved*, not *failed* CSR that has no
  ``status.certificate`` yet, when its ``spec.signerName`` is one of the configured signers
  (``ControllerManagerOptions.signer_files()``; ``sampan server`` points them at its CAs):

  - ``kubernetes.io/kube-apiserver-client`` -> the client CA (what the API server trusts
    for client certificates): usages may be only ``client auth`` (required), ``digital
    signature`` and ``key encipherment``;
  - ``kubernetes.io/kube-apiserver-client-kubelet`` -> the client CA: subject
    ``O=system:nodes``, ``CN=system:node:<name>``, no SANs, usages exactly {digital signature,
    (key encipherment,) client auth};
  - ``kubernetes.io/kubelet-serving`` -> the kubelet serving CA (never the server CA): the
    same subject, at least one DNS or IP SAN, no e-mail or URI SAN, usages exactly {digital
    signature, (key encipherment,) server auth};
  - ``kubernetes.io/legacy-unknown`` and any other signer: never signed here.

  A request that breaks its signer's rules gets a ``Failed`` condition (reason
  ``SignerValidationFailure``, the message names the rule, e.g. ``invalid usage for client
  certificate: server auth``) and is never signed, as upstream. The validity is
  ``spec.expirationSeconds`` when it asks less than ``cluster_signing_duration_s`` (at least
  10 minutes), else that duration; never past the CA's own expiry.

* **csrapproving** (``CSRApprovingController``) auto-approves node client certificate
  requests as upstream's SubjectAccessReview approver: a ``kube-apiserver-client-kubelet``
  CSR that passes the kubelet client rules above is approved (reason ``AutoApproved``) when
  its requester may ``create certificatesigningrequests/selfnodeclient`` (the CSR's CN is the
  requester's own user name) or ``.../nodeclient`` (any node). A SubjectAccessReview decides,
  for the requester recorded in ``spec.username``/``groups``/``extra``. Nothing else is ever
  approved or denied here: kubelet serving CSRs wait for a human, as upstream (a Sampan
  kubelet gets its serving certificate from the server when it joins, as K3s's do).

Both skip a CSR that already holds a certificate. The CA files are read at each signing (a
CA rotated on disk is used at once); the first certificate of a bundle is the signer.
Blocking work (CA reads, signing) runs in a thread.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cryptography import x509

from sampan.client.api import CSRS, NotFoundError
from sampan.client.informer import object_key
from sampan.controllers.base import ControllerContext, QueueController
from sampan.controllers.podcontrol import format_time, wall_now
from sampan.pki.certs import cert_to_pem, load_cert, load_csr, load_private_key, sign_request

__all__ = [
    "KUBELET_SERVING_SIGNER",
    "KUBE_APISERVER_CLIENT_KUBELET_SIGNER",
    "KUBE_APISERVER_CLIENT_SIGNER",
    "LEGACY_UNKNOWN_SIGNER",
    "MIN_SIGNING_DURATION_S",
    "CSRApprovingController",
    "CSRSigningController",
    "SignerRuleError",
    "check_signer_rules",
]

log = logging.getLogger(__name__)

KUBE_APISERVER_CLIENT_SIGNER = "kubernetes.io/kube-apiserver-client"
KUBE_APISERVER_CLIENT_KUBELET_SIGNER = "kubernetes.io/kube-apiserver-client-kubelet"
KUBELET_SERVING_SIGNER = "kubernetes.io/kubelet-serving"
LEGACY_UNKNOWN_SIGNER = "kubernetes.io/legacy-unknown"
MIN_SIGNING_DURATION_S = 600.0
"""The shortest validity given, whatever ``spec.expirationSeconds`` asks (2x the backdate)."""
APPROVAL_RETRY_S = 30.0
"""When a recognised node CSR's requester was not allowed, look again after this long (the
RBAC binding may appear later)."""

_NODE_GROUP = "system:nodes"
_NODE_PREFIX = "system:node:"
_KUBELET_CLIENT_USAGES = (
    frozenset({"digital signature", "key encipherment", "client auth"}),
    frozenset({"digital signature", "client auth"}),
)
_KUBELET_SERVING_USAGES = (
    frozenset({"digital signature", "key encipherment", "server auth"}),
    frozenset({"digital signature", "server auth"}),
)


class SignerRuleError(ValueError):
    """The request breaks its signer's rules; the message is the Failed condition's."""


def _organizations(csr: x509.CertificateSigningRequest) -> list[str]:
    return [
        str(a.value) for a in csr.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATION_NAME)
    ]


def _common_name(csr: x509.CertificateSigningRequest) -> str:
    names = csr.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


def _sans(csr: x509.CertificateSigningRequest) -> x509.SubjectAlternativeName | None:
    try:
        return csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None


def _san_values(csr: x509.CertificateSigningRequest, kind: type) -> list[Any]:
    san = _sans(csr)
    return [] if san is None else list(san.get_values_for_type(kind))


def _usage_list(usages: frozenset[str]) -> str:
    """Go's ``%v`` of a sorted string list: ``[client auth digital signature ...]``."""
    return "[" + " ".join(sorted(usages)) + "]"


def _check_kubelet_client(csr: x509.CertificateSigningRequest, usages: frozenset[str]) -> None:
    if _organizations(csr) != [_NODE_GROUP]:
        raise SignerRuleError("subject organization is not system:nodes")
    if _san_values(csr, x509.DNSName):
        raise SignerRuleError("DNS subjectAltNames are not allowed")
    if _san_values(csr, x509.RFC822Name):
        raise SignerRuleError("Email subjectAltNames are not allowed")
    if _san_values(csr, x509.IPAddress):
        raise SignerRuleError("IP subjectAltNames are not allowed")
    if _san_values(csr, x509.UniformResourceIdentifier):
        raise SignerRuleError("URI subjectAltNames are not allowed")
    if not _common_name(csr).startswith(_NODE_PREFIX):
        raise SignerRuleError("subject common name does not begin with system:node:")
    if usages not in _KUBELET_CLIENT_USAGES:
        raise SignerRuleError(f"usages did not match {_usage_list(_KUBELET_CLIENT_USAGES[0])}")


def _check_kubelet_serving(csr: x509.CertificateSigningRequest, usages: frozenset[str]) -> None:
    if _organizations(csr) != [_NODE_GROUP]:
        raise SignerRuleError("subject organization is not system:nodes")
    if not _san_values(csr, x509.DNSName) and not _san_values(csr, x509.IPAddress):
        raise SignerRuleError("DNS or IP subjectAltName is required")
    if _san_values(csr, x509.RFC822Name):
        raise SignerRuleError("Email subjectAltNames are not allowed")
    if _san_values(csr, x509.UniformResourceIdentifier):
        raise SignerRuleError("URI subjectAltNames are not allowed")
    if usages not in _KUBELET_SERVING_USAGES:
        raise SignerRuleError(f"usages did not match {_usage_list(_KUBELET_SERVING_USAGES[0])}")
    if not _common_name(csr).startswith(_NODE_PREFIX):
        raise SignerRuleError("subject common name does not begin with system:node:")


def _check_apiserver_client(usages: Sequence[str]) -> None:
    client_auth = False
    for usage in usages:
        if usage == "client auth":
            client_auth = True
        elif usage not in ("digital signature", "key encipherment"):
            raise SignerRuleError(f"invalid usage for client certificate: {usage}")
    if not client_auth:
        raise SignerRuleError("missing required usage for client certificate: client auth")


def check_signer_rules(
    signer: str, csr: x509.CertificateSigningRequest, usages: Sequence[str]
) -> None:
    """Raise ``SignerRuleError`` if ``signer`` must not sign this request with ``usages``."""
    if signer == KUBE_APISERVER_CLIENT_SIGNER:
        _check_apiserver_client(usages)
    elif signer == KUBE_APISERVER_CLIENT_KUBELET_SIGNER:
        _check_kubelet_client(csr, frozenset(usages))
    elif signer == KUBELET_SERVING_SIGNER:
        _check_kubelet_serving(csr, frozenset(usages))
    else:
        raise SignerRuleError(f"signer {signer} is not handled by this controller")


def _parse_request(obj: Mapping[str, Any]) -> x509.CertificateSigningRequest:
    raw = (obj.get("spec") or {}).get("request") or ""
    return load_csr(base64.b64decode(raw))


def _conditions(obj: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [c for c in (obj.get("status") or {}).get("conditions") or [] if isinstance(c, dict)]


def _has_true(obj: Mapping[str, Any], kind: str) -> bool:
    return any(
        c.get("type") == kind and c.get("status", "True") == "True" for c in _conditions(obj)
    )


def _has_certificate(obj: Mapping[str, Any]) -> bool:
    return bool((obj.get("status") or {}).get("certificate"))


def _usages(obj: Mapping[str, Any]) -> list[str]:
    return [str(u) for u in (obj.get("spec") or {}).get("usages") or []]


def _sign_blocking(
    files: tuple[str, str], csr: x509.CertificateSigningRequest, usages: list[str], valid_s: float
) -> bytes:
    cert_file, key_file = files
    ca_cert = load_cert(Path(cert_file).read_bytes())  # the first certificate of a bundle
    ca_key = load_private_key(Path(key_file).read_bytes())
    return cert_to_pem(sign_request(ca_cert, ca_key, csr, usages, valid_s=valid_s))


class _CSRController(QueueController):
    """Both controllers watch every CSR and look at the cached object by name."""

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.csrs = self.watch(ctx.informers.informer(CSRS))
        self.csrs.add_event_handler(
            on_add=self._enqueue, on_update=lambda _old, new: self._enqueue(new)
        )

    def _enqueue(self, obj: Mapping[str, Any]) -> None:
        if not _has_certificate(obj):
            self.queue.add(object_key(obj))

    def _now(self) -> str:
        return format_time(wall_now(self.ctx.clock))


class CSRSigningController(_CSRController):
    """See the module docstring (csrsigning)."""

    name = "csrsigning"

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self._signers = ctx.options.signer_files()

    def _duration_s(self, obj: Mapping[str, Any]) -> float:
        longest = self.ctx.options.cluster_signing_duration_s
        asked = (obj.get("spec") or {}).get("expirationSeconds")
        if not isinstance(asked, int) or isinstance(asked, bool):
            return longest
        return max(MIN_SIGNING_DURATION_S, min(float(asked), longest))

    async def reconcile(self, key: str) -> None:
        cached = self.csrs.cache.get(key)
        if cached is None or _has_certificate(cached):
            return
        if not _has_true(cached, "Approved") or _has_true(cached, "Failed"):
            return
        signer = (cached.get("spec") or {}).get("signerName")
        files = self._signers.get(str(signer))
        if files is None:  # legacy-unknown, another signer, or one not configured
            return
        name = cached["metadata"]["name"]
        try:
            request = _parse_request(cached)
        except ValueError as exc:
            # Upstream retries such a request (it cannot get past API validation).
            raise RuntimeError(f"unable to parse csr {name!r}: {exc}") from None
        csr = copy.deepcopy(dict(cached))
        usages = _usages(cached)
        try:
            check_signer_rules(str(signer), request, usages)
        except SignerRuleError as exc:
            csr.setdefault("status", {}).setdefault("conditions", []).append(
                {
                    "type": "Failed",
                    "status": "True",
                    "reason": "SignerValidationFailure",
                    "message": str(exc),
                    "lastUpdateTime": self._now(),
                }
            )
            await self._update_status(csr)
            log.info("csrsigning: %s failed %s: %s", name, signer, exc)
            return
        pem = await asyncio.to_thread(
            _sign_blocking, files, request, usages, self._duration_s(cached)
        )
        csr.setdefault("status", {})["certificate"] = base64.b64encode(pem).decode("ascii")
        await self._update_status(csr)
        log.info("csrsigning: signed %s for %s (%s)", name, _common_name(request), signer)

    async def _update_status(self, csr: dict[str, Any]) -> None:
        try:
            await self.ctx.client.update_status(CSRS, csr)
        except NotFoundError:
            return


class CSRApprovingController(_CSRController):
    """See the module docstring (csrapproving)."""

    name = "csrapproving"

    async def reconcile(self, key: str) -> None:
        cached = self.csrs.cache.get(key)
        if cached is None or _has_certificate(cached):
            return
        if _has_true(cached, "Approved") or _has_true(cached, "Denied"):
            return
        spec = cached.get("spec") or {}
        if spec.get("signerName") != KUBE_APISERVER_CLIENT_KUBELET_SIGNER:
            return
        name = cached["metadata"]["name"]
        try:
            request = _parse_request(cached)
        except ValueError as exc:
            raise RuntimeError(f"unable to parse csr {name!r}: {exc}") from None
        try:
            _check_kubelet_client(request, frozenset(_usages(cached)))
        except SignerRuleError:
            return  # not a node client certificate request: not ours to approve
        tried = []
        if spec.get("username") == _common_name(request):
            tried.append("selfnodeclient")
            if await self._allowed(spec, "selfnodeclient"):
                await self._approve(
                    cached,
                    "Auto approving self kubelet client certificate after SubjectAccessReview.",
                )
                return
        tried.append("nodeclient")
        if await self._allowed(spec, "nodeclient"):
            await self._approve(
                cached, "Auto approving kubelet client certificate after SubjectAccessReview."
            )
            return
        log.debug(
            "csrapproving: recognized csr %r as %s but subject access review was not approved",
            name,
            tried,
        )
        self.queue.add_after(key, APPROVAL_RETRY_S)

    async def _allowed(self, spec: Mapping[str, Any], subresource: str) -> bool:
        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": spec.get("username", ""),
                "uid": spec.get("uid", ""),
                "groups": list(spec.get("groups") or []),
                "extra": dict(spec.get("extra") or {}),
                "resourceAttributes": {
                    "group": "certificates.k8s.io",
                    "resource": "certificatesigningrequests",
                    "verb": "create",
                    "subresource": subresource,
                },
            },
        }
        answer = await self.ctx.client.request(
            "POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", body=review
        )
        return bool(((answer or {}).get("status") or {}).get("allowed"))

    async def _approve(self, cached: Mapping[str, Any], message: str) -> None:
        csr = copy.deepcopy(dict(cached))
        csr.setdefault("status", {}).setdefault("conditions", []).append(
            {
                "type": "Approved",
                "status": "True",
                "reason": "AutoApproved",
                "message": message,
                "lastUpdateTime": self._now(),
            }
        )
        name = csr["metadata"]["name"]
        try:
            await self.ctx.client.request(
                "PUT", CSRS.path(name=name, subresource="approval"), body=csr
            )
        except NotFoundError:
            return
        log.info("csrapproving: approved %s (%s)", name, message)
