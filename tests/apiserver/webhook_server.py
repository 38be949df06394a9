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
import json
import ssl
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.support.tls import ServingPKI, serving_pki

__all__ = ["WebhookPKI", "WebhookServer", "make_pki"]

SERVICE_DNS = "hooks.default.svc"


WebhookPKI = ServingPKI


def make_pki(directory: Path, dns_names: tuple[str, ...] = (SERVICE_DNS,)) -> WebhookPKI:
    """A new CA and a serving certificate for 127.0.0.1 and ``dns_names``."""
    return serving_pki(directory, ("127.0.0.1", *dns_names), common_name="webhook", stem="webhook")


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
