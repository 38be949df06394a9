"""The UI's only way to a cluster: a ``Target`` (API base URL + bearer token) and ``Kube``.

``Target.base`` is an API server URL, or the manager's proxy URL of one cluster
(``https://<manager>/k8s/clusters/<id>``); ``Target.token`` is the session's credential for it
(a service account token, or the user's manager token). ``Kube`` makes requests on one shared
``aiohttp`` session (one connection pool, the cluster CA as trust) with the target's
``Authorization`` header; it never logs a token and never puts one in a URL.

Errors: any non-2xx answer raises ``KubeError`` carrying the server's HTTP status and its
``Status`` message (what the UI shows: an RBAC denial reads as the API server wrote it);
unreachable servers raise ``KubeError`` with status 503 and the reason.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import aiohttp

__all__ = ["WATCH_TIMEOUT_S", "Kube", "KubeError", "Target"]

REQUEST_TIMEOUT_S = 20.0
WATCH_TIMEOUT_S = 1800
"""Server-side ``timeoutSeconds`` of one watch; the UI restarts it from the last version."""


@dataclass(frozen=True)
class Target:
    base: str
    token: str = field(repr=False)

    def url(self, path: str, query: dict[str, Any] | None = None) -> str:
        url = self.base.rstrip("/") + path
        if query:
            url += "?" + urlencode({k: v for k, v in query.items() if v is not None})
        return url


class KubeError(Exception):
    """A request the server refused (``status``, ``reason``, ``message`` from its Status)."""

    def __init__(self, status: int, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason


def _status_error(status: int, body: bytes) -> KubeError:
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("message"), str):
        return KubeError(status, doc["message"], str(doc.get("reason") or doc.get("code") or ""))
    text = body.decode(errors="replace").strip()[:500]
    return KubeError(status, text or f"HTTP {status}")


class Kube:
    """Requests to any ``Target`` over one pooled HTTPS session trusting ``ca_pem``."""

    def __init__(self, ca_pem: bytes | None) -> None:
        context = ssl.create_default_context()
        if ca_pem:
            context = ssl.create_default_context(cadata=ca_pem.decode())
        self.ssl = context
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                # No pool limit: every open list, log or shell holds one stream for as long
                # as its tab is open; a limit would make the next page wait behind them.
                connector=aiohttp.TCPConnector(ssl=self.ssl, limit=0),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @staticmethod
    def headers(target: Target, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {target.token}", "Accept": "application/json", **extra}

    async def request(
        self,
        target: Target,
        method: str,
        path: str,
        *,
        query: dict[str, Any] | None = None,
        body: bytes | None = None,
        content_type: str = "application/json",
        timeout_s: float = REQUEST_TIMEOUT_S,
        host: str | None = None,
    ) -> dict[str, Any]:
        headers = self.headers(target)
        if host:
            headers["Host"] = host
        if body is not None:
            headers["Content-Type"] = content_type
        try:
            async with asyncio.timeout(timeout_s):
                async with self.session.request(
                    method, target.url(path, query), data=body, headers=headers
                ) as response:
                    data = await response.read()
                    if response.status >= 300:
                        raise _status_error(response.status, data)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise KubeError(503, f"cannot reach the cluster: {exc or type(exc).__name__}") from None
        if not data:
            return {}
        doc = json.loads(data)
        return doc if isinstance(doc, dict) else {}

    async def get(self, target: Target, path: str, **query: Any) -> dict[str, Any]:
        return await self.request(target, "GET", path, query=query or None)

    async def watch(
        self, target: Target, path: str, resource_version: str, **query: Any
    ) -> AsyncIterator[dict[str, Any]]:
        """Watch events (``{"type", "object"}``) from ``resource_version`` until the server
        ends the watch; 410 Gone or another refusal raises ``KubeError``."""
        params = {
            **query,
            "watch": "1",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(WATCH_TIMEOUT_S),
        }
        try:
            async with self.session.get(
                target.url(path, params), headers=self.headers(target)
            ) as response:
                if response.status >= 300:
                    raise _status_error(response.status, await response.read())
                async for line in response.content:
                    if line.strip():
                        event = json.loads(line)
                        if event.get("type") == "ERROR":
                            obj = event.get("object") or {}
                            raise KubeError(int(obj.get("code") or 500), str(obj.get("message")))
                        yield event
        except (aiohttp.ClientError, OSError) as exc:
            raise KubeError(503, f"cannot reach the cluster: {exc}") from None

    async def stream_lines(self, target: Target, path: str, **query: Any) -> AsyncIterator[str]:
        """The lines of a streamed answer (``pods/<name>/log?follow=true``)."""
        try:
            async with self.session.get(
                target.url(path, query), headers=self.headers(target, Accept="*/*")
            ) as response:
                if response.status >= 300:
                    raise _status_error(response.status, await response.read())
                async for line in response.content:
                    yield line.decode(errors="replace").rstrip("\n")
        except (aiohttp.ClientError, OSError) as exc:
            raise KubeError(503, f"cannot reach the cluster: {exc}") from None

    async def websocket(
        self, target: Target, path: str, query: list[tuple[str, str]], protocols: tuple[str, ...]
    ) -> aiohttp.ClientWebSocketResponse:
        url = target.base.rstrip("/") + path + "?" + urlencode(query)
        try:
            return await self.session.ws_connect(
                url,
                protocols=protocols,
                headers={"Authorization": f"Bearer {target.token}"},
                heartbeat=30,
                max_msg_size=0,
            )
        except aiohttp.WSServerHandshakeError as exc:
            raise KubeError(exc.status, exc.message or f"HTTP {exc.status}") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise KubeError(503, f"cannot reach the cluster: {exc}") from None
