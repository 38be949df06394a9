"""A real TLS admission webhook server for tests and benchmarks.

``make_pki(dir)`` writes a test CA and a serving certificate for 127.0.0.1 and
``hooks.default.svc`` (what a Service named ``hooks`` in ``default`` is verified as).
``WebhookServer`` serves AdmissionReview v1/v1beta1 on a few paths, each a behaviour:

* ``/allow``  allowed
* ``/deny``   refused with ``status.message`` "no thanks" (code left to the API server)
* ``/deny403`` refused with code 403 and reason Forbidden
* ``/mutate`` allowed, with a JSONPatch adding the label ``webhook: seen``
* ``/warn``   allowed, with the warning "careful now"
* ``/slow``   sleeps 3 s, then allows
* ``/gate``   waits until ``gate`` is set, then allows
* ``/baduid`` answers with another uid
* ``/garbage`` answers a body that is not JSON
* ``/chunked`` allows, in a chunked response
* ``/close``  allows, and closes the connection (``Connection: close``)

Every request's ``AdmissionReview`` is kept in ``reviews`` (path, review).
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import ipaddress
import json
import ssl
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["WebhookPKI", "WebhookServer", "make_pki"]

SERVICE_DNS = "hooks.default.svc"


class WebhookPKI:
    def __init__(self, ca_pem: bytes, cert_path: Path, key_path: Path) -> None:
        self.ca_pem = ca_pem
        self.cert_path = cert_path
        self.key_path = key_path

    @property
    def ca_bundle(self) -> str:
        return base64.b64encode(self.ca_pem).decode()


def make_pki(directory: Path, dns_names: tuple[str, ...] = (SERVICE_DNS,)) -> WebhookPKI:
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, f"webhook-test-ca-{x509.random_serial_number()}")]
    )
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    sans.extend(x509.DNSName(name) for name in dns_names)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "webhook")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path = directory / "webhook.crt"
    key_path = directory / "webhook.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return WebhookPKI(ca.public_bytes(serialization.Encoding.PEM), cert_path, key_path)


class WebhookServer:
    def __init__(self, pki: WebhookPKI, port: int = 0) -> None:
        self.pki = pki
        self.reviews: list[tuple[str, dict[str, Any]]] = []
        self.port = port
        self.gate = asyncio.Event()
        self._runner: web.AppRunner | None = None

    def url(self, path: str) -> str:
        return f"https://127.0.0.1:{self.port}{path}"

    def seen(self, path: str) -> list[dict[str, Any]]:
        return [review for p, review in self.reviews if p == path]

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{behaviour}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.pki.cert_path, self.pki.key_path)
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=context)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.Response:
        behaviour = request.match_info["behaviour"]
        review = await request.json()
        self.reviews.append((f"/{behaviour}", review))
        uid = review["request"]["uid"]
        response: dict[str, Any] = {"uid": uid, "allowed": True}
        if behaviour == "deny":
            response = {"uid": uid, "allowed": False, "status": {"message": "no thanks"}}
        elif behaviour == "deny403":
            response = {
                "uid": uid,
                "allowed": False,
                "status": {"code": 403, "reason": "Forbidden", "message": "not you"},
            }
        elif behaviour == "mutate":
            labels = (review["request"].get("object") or {}).get("metadata", {}).get("labels")
            patch = (
                [{"op": "add", "path": "/metadata/labels/webhook", "value": "seen"}]
                if labels
                else [{"op": "add", "path": "/metadata/labels", "value": {"webhook": "seen"}}]
            )
            response["patchType"] = "JSONPatch"
            response["patch"] = base64.b64encode(json.dumps(patch).encode()).decode()
        elif behaviour == "warn":
            response["warnings"] = ["careful now"]
        elif behaviour == "slow":
            await asyncio.sleep(3)
        elif behaviour == "gate":
            await self.gate.wait()
        elif behaviour == "baduid":
            response["uid"] = "not-the-uid"
        elif behaviour == "garbage":
            return web.Response(body=b"garbage", content_type="application/json")
        answer = {
            "apiVersion": review["apiVersion"],
            "kind": "AdmissionReview",
            "response": response,
        }
        if behaviour == "chunked":
            stream = web.StreamResponse(headers={"Content-Type": "application/json"})
            stream.enable_chunked_encoding()
            await stream.prepare(request)
            data = json.dumps(answer).encode()
            for start in range(0, len(data), 7):
                await stream.write(data[start : start + 7])
            await stream.write_eof()
            return stream
        if behaviour == "close":
            return web.json_response(answer, headers={"Connection": "close"})
        return web.json_response(answer)
