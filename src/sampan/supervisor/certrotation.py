"""Kubelet client certificate rotation through a CertificateSigningRequest (the agent side of
upstream's kubelet certificate manager).

The kubelet's client certificate (``<data-dir>/agent/etc/kubelet.kubeconfig``, from the join)
is renewed while the agent runs, before it expires: at a deadline drawn, as upstream, between
70 % and 90 % of its lifetime (a certificate already past its deadline is renewed at once),
the component makes a new ECDSA P-256 key and asks for a certificate with a CSR:

* subject ``CN=system:node:<node>, O=system:nodes``, no SANs, signer
  ``kubernetes.io/kube-apiserver-client-kubelet``, usages ``digital signature`` and
  ``client auth`` — exactly what csrsigning's kubelet client rules accept;
* created with the kubelet's own (still valid) credential, so csrapproving approves it after
  its SubjectAccessReview on ``certificatesigningrequests/selfnodeclient`` (granted to
  ``system:nodes`` by ``sampan:node-autoapprove-certificate-rotation``) and csrsigning signs
  it with the client CA;
* the issued certificate must match the key and the subject. Then the kubeconfig is replaced
  atomically (0600) and every client that runs as the kubelet presents the new pair for new
  connections (``Client.reload_client_certificate``). One log line names the CSR and the new
  expiry. A denied or failed request, or no answer within ``ISSUE_TIMEOUT_S``, is logged and
  retried after ``RETRY_S``; the old certificate keeps working meanwhile.

The private key never leaves the node and is never logged. Time comes from ``time.time``.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import logging
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from sampan.api import times
from sampan.pki.certs import generate_ec_key, key_to_pem, load_cert
from sampan.pki.files import PRIVATE_FILE_MODE, atomic_write

__all__ = [
    "ISSUE_TIMEOUT_S",
    "RETRY_S",
    "KubeletCertificateRotation",
    "rotation_deadline",
]

log = logging.getLogger("sampan.agent")

KUBELET_CLIENT_SIGNER = "kubernetes.io/kube-apiserver-client-kubelet"
KUBELET_CLIENT_USAGES = ("digital signature", "client auth")
DEADLINE_FRACTION = (0.7, 0.9)
ISSUE_TIMEOUT_S = 900.0
POLL_INTERVAL_S = 1.0
RETRY_S = 60.0
MAX_SLEEP_S = 3600.0
"""Sleep at most this long at a time, so a clock change is noticed within the hour."""


def rotation_deadline(cert: x509.Certificate, fraction: float | None = None) -> dt.datetime:
    """When to renew: ``notBefore + lifetime * fraction`` (random in 70-90 % by default)."""
    if fraction is None:
        fraction = random.uniform(*DEADLINE_FRACTION)
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    return cert.not_valid_before_utc + lifetime * fraction


def _read_kubeconfig(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def _current_certificate(path: Path) -> x509.Certificate:
    user = _read_kubeconfig(path)["users"][0]["user"]
    return load_cert(base64.b64decode(user["client-certificate-data"]))


def _request_pem(node: str, key: Any) -> bytes:
    subject = x509.Name(
        [
            x509.NameAttribute(x509.NameOID.ORGANIZATION_NAME, "system:nodes"),
            x509.NameAttribute(x509.NameOID.COMMON_NAME, f"system:node:{node}"),
        ]
    )
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM)


def _write_kubeconfig(path: Path, cert_pem: bytes, key_pem: bytes) -> None:
    """The same kubeconfig with the new pair (atomic, 0600)."""
    doc = _read_kubeconfig(path)
    user = doc["users"][0]["user"]
    user["client-certificate-data"] = base64.b64encode(cert_pem).decode()
    user["client-key-data"] = base64.b64encode(key_pem).decode()
    atomic_write(path, json.dumps(doc, indent=2).encode(), mode=PRIVATE_FILE_MODE)


class RotationFailed(Exception):
    """The CSR was denied, failed, or not issued in time; the message says which."""


class KubeletCertificateRotation:
    """See the module docstring. ``kubeconfig``: the kubelet's kubeconfig (read when the
    component starts); ``clients``: the live clients that authenticate as the kubelet."""

    name = "kubelet-certificate"

    def __init__(
        self,
        kubeconfig: Callable[[], Path],
        node_name: str,
        clients: Callable[[], Sequence[Any]],
    ) -> None:
        self._kubeconfig_of = kubeconfig
        self._node = node_name
        self._clients = clients
        self._task: asyncio.Task[None] | None = None
        self.renewed = asyncio.Event()
        """Set after each successful renewal (tests and readiness)."""

    async def start(self, ctx: Any) -> None:
        path = self._kubeconfig_of()
        self._task = asyncio.get_running_loop().create_task(
            self._run(path), name="kubelet-certificate-rotation"
        )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self, path: Path) -> None:
        while True:
            cert = await asyncio.to_thread(_current_certificate, path)
            deadline = rotation_deadline(cert)
            # A wall-clock deadline, re-read at least hourly: there is no event to wait on.
            while (wait_s := (deadline - dt.datetime.now(dt.UTC)).total_seconds()) > 0:  # noqa: ASYNC110
                await asyncio.sleep(min(wait_s, MAX_SLEEP_S))
            try:
                await self.renew(path)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # logged, retried: the old certificate still works
                log.error(
                    "kubelet client certificate renewal failed: %s; retrying in %.0fs", exc, RETRY_S
                )
                await asyncio.sleep(RETRY_S)

    async def renew(self, path: Path) -> None:
        """One renewal through a CSR (see the module docstring)."""
        from sampan.client.api import CSRS

        clients = list(self._clients())
        if not clients:
            raise RotationFailed("the kubelet's client is not running")
        client = clients[0]
        key = await asyncio.to_thread(generate_ec_key)
        request = await asyncio.to_thread(_request_pem, self._node, key)
        created = await client.create(
            CSRS,
            {
                "apiVersion": "certificates.k8s.io/v1",
                "kind": "CertificateSigningRequest",
                "metadata": {"generateName": "csr-"},
                "spec": {
                    "request": base64.b64encode(request).decode(),
                    "signerName": KUBELET_CLIENT_SIGNER,
                    "usages": list(KUBELET_CLIENT_USAGES),
                },
            },
        )
        name = created["metadata"]["name"]
        cert_pem = await self._wait_issued(client, name)
        cert = load_cert(cert_pem)
        spki = serialization.PublicFormat.SubjectPublicKeyInfo
        der = serialization.Encoding.DER
        if cert.public_key().public_bytes(der, spki) != key.public_key().public_bytes(der, spki):
            raise RotationFailed(f"csr {name}: the issued certificate is not for our key")
        if cert.subject.rfc4514_string() != f"CN=system:node:{self._node},O=system:nodes":
            raise RotationFailed(f"csr {name}: the issued certificate names another subject")
        key_pem = key_to_pem(key)
        await asyncio.to_thread(_write_kubeconfig, path, cert_pem, key_pem)
        for live in clients:
            await live.reload_client_certificate(cert_pem, key_pem)
        log.info(
            "kubelet client certificate renewed through CSR %s (expires %s)",
            name,
            times.rfc3339(cert.not_valid_after_utc),
        )
        self.renewed.set()

    async def _wait_issued(self, client: Any, name: str) -> bytes:
        try:
            return await asyncio.wait_for(self._poll(client, name), ISSUE_TIMEOUT_S)
        except TimeoutError:
            raise RotationFailed(
                f"csr {name} was not issued within {ISSUE_TIMEOUT_S:.0f}s (not approved?)"
            ) from None

    async def _poll(self, client: Any, name: str) -> bytes:
        from sampan.client.api import CSRS

        while True:
            csr = await client.get(CSRS, name)
            status = csr.get("status") or {}
            for condition in status.get("conditions") or []:
                if condition.get("type") in ("Denied", "Failed") and (
                    condition.get("status", "True") == "True"
                ):
                    raise RotationFailed(
                        f"csr {name} {condition['type'].lower()}: "
                        f"{condition.get('message') or condition.get('reason', '')}"
                    )
            if status.get("certificate"):
                return base64.b64decode(status["certificate"])
            await asyncio.sleep(POLL_INTERVAL_S)
