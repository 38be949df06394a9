"""The aggregator's transport: how a request reaches an extension API server.

``BackendTransport`` owns one aiohttp session (connection pooling, no total timeout so watches
can last, a connect timeout so a dead backend answers 503 promptly, no decompression so bytes
pass through as sent) and the TLS contexts towards backends, one per (caBundle,
insecureSkipTLSVerify): the backend's serving certificate must chain to ``spec.caBundle``
(or the system roots when there is none) and name ``<service>.<namespace>.svc``, unless
``insecureSkipTLSVerify``; every context presents the front-proxy client certificate
(``system:auth-proxy``, signed by the request-header CA).

``forward`` relays one request: the caller's headers minus hop-by-hop ones, credentials
(``Authorization``), impersonation and any ``X-Remote-*`` the caller sent, plus the
authenticated user as ``X-Remote-User`` / ``X-Remote-Group`` (one per group) /
``X-Remote-Extra-<key>`` (key percent-escaped), and the caller's address appended to
``X-Forwarded-For``. The body streams both ways chunk by chunk,
so a watch's events reach the caller as the backend writes them. Connection upgrades are
sent on raw and spliced after ``101`` (``sampan.httpstream``).

Invariants: the caller's own identity headers never reach a backend; nothing is buffered
beyond one chunk; a backend that cannot be reached is a 503 ``ServiceUnavailable`` Status, one
that does not start answering within ``RESPONSE_HEAD_TIMEOUT_S`` a 504 ``Timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import urllib.parse
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
from aiohttp import web

from sampan import httpstream
from sampan.api.errors import ServiceUnavailable, Timeout
from sampan.apiserver.aggregator.resolve import Backend
from sampan.apiserver.auth.authn import (
    REQUEST_HEADER_EXTRA_PREFIX,
    REQUEST_HEADER_GROUP,
    REQUEST_HEADER_USER,
)

__all__ = ["CONNECT_TIMEOUT_S", "BackendTransport", "identity_headers"]

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5.0
"""How long a dial to a backend may take before the request is answered 503."""
BODY_CHUNK_BYTES = 64 * 1024
RESPONSE_HEAD_TIMEOUT_S = 60.0
"""How long a backend may take to start answering (kube-apiserver's default request timeout);
a watch answers its head at once, so this never cuts a stream short."""

_HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        "Connection",
        "Keep-Alive",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "Proxy-Connection",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
        "Host",
        "Content-Length",
    )
)
_DROPPED_PREFIXES = ("impersonate-", "x-remote-")


def identity_headers(user: Any) -> list[tuple[str, str]]:
    """The front-proxy headers naming ``user`` (a UserInfo)."""
    headers = [(REQUEST_HEADER_USER, user.name)]
    headers.extend((REQUEST_HEADER_GROUP, group) for group in user.groups)
    for key, values in (user.extra or {}).items():
        escaped = urllib.parse.quote(key, safe="")
        headers.extend((REQUEST_HEADER_EXTRA_PREFIX + escaped, value) for value in values)
    return headers


def _forwarded_request_headers(request: web.Request) -> list[tuple[str, str]]:
    kept: list[tuple[str, str]] = []
    forwarded_for: list[str] = []
    for key, value in request.headers.items():
        lower = key.lower()
        if lower in _HOP_BY_HOP or lower == "authorization":
            continue
        if lower.startswith(_DROPPED_PREFIXES):
            continue
        if lower == "x-forwarded-for":
            forwarded_for.append(value)
            continue
        kept.append((key, value))
    if request.remote:
        forwarded_for.append(request.remote)
    if forwarded_for:
        kept.append(("X-Forwarded-For", ", ".join(forwarded_for)))
    return kept


def _unreachable(exc: BaseException) -> ServiceUnavailable:
    return ServiceUnavailable(f"error trying to reach service: {exc}")


class BackendTransport:
    """See the module docstring. ``close`` when the server stops."""

    def __init__(self, client_cert_path: str, client_key_path: str) -> None:
        self._cert = client_cert_path
        self._key = client_key_path
        self._contexts: dict[tuple[str, bool], ssl.SSLContext] = {}
        self._session: aiohttp.ClientSession | None = None

    def _session_or_new(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_S),
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def ssl_context(self, ca_bundle_pem: str, insecure: bool) -> ssl.SSLContext:
        key = (ca_bundle_pem, insecure)
        context = self._contexts.get(key)
        if context is None:
            context = await asyncio.to_thread(self._build_context, ca_bundle_pem, insecure)
            if len(self._contexts) > 64:  # bundles rotate; keep the table small
                self._contexts.clear()
            self._contexts[key] = context
        return context

    def _build_context(self, ca_bundle_pem: str, insecure: bool) -> ssl.SSLContext:
        if insecure:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        elif ca_bundle_pem:
            context = ssl.create_default_context(cadata=ca_bundle_pem)
        else:
            context = ssl.create_default_context()
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self._cert, self._key)
        return context

    async def get(
        self,
        backend: Backend,
        path: str,
        context: ssl.SSLContext,
        headers: list[tuple[str, str]],
        timeout_s: float,
    ) -> tuple[int, bytes]:
        """A bounded GET (availability and discovery checks). Raises aiohttp/OS errors."""
        session = self._session_or_new()
        async with (
            asyncio.timeout(timeout_s),
            session.get(
                backend.base_url + path,
                ssl=context,
                server_hostname=backend.server_name,
                headers=[*headers, ("Accept", "application/json")],
            ) as response,
        ):
            return response.status, await response.read()

    async def forward(
        self,
        request: web.Request,
        backend: Backend,
        context: ssl.SSLContext,
        user: Any,
        *,
        on_unreachable: Callable[[], None] = lambda: None,
    ) -> web.StreamResponse:
        target = request.rel_url.raw_path_qs
        headers = _forwarded_request_headers(request) + identity_headers(user)
        if httpstream.is_upgrade_request(request):
            return await self._upgrade(request, backend, context, target, headers, on_unreachable)
        session = self._session_or_new()
        body: Any = _body(request) if request.can_read_body else None
        response: web.StreamResponse | None = None
        deadline = asyncio.timeout(RESPONSE_HEAD_TIMEOUT_S)
        try:
            async with deadline:
                upstream = await session.request(
                    request.method,
                    backend.base_url + target,
                    ssl=context,
                    server_hostname=backend.server_name,
                    headers=headers,
                    data=body,
                    allow_redirects=False,
                )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            if deadline.expired():
                raise Timeout(
                    "Timeout: request did not complete within requested timeout - "
                    "context deadline exceeded"
                ) from exc
            if isinstance(exc, (aiohttp.ClientConnectorError, aiohttp.ServerTimeoutError)):
                on_unreachable()  # dial failed: have availability checked again now
            raise _unreachable(exc) from exc
        try:
            async with upstream:
                response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
                for key, value in upstream.headers.items():
                    if key.lower() not in _HOP_BY_HOP:
                        response.headers.add(key, value)
                if upstream.headers.get("Content-Length") is not None:
                    response.content_length = int(upstream.headers["Content-Length"])
                await response.prepare(request)
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            if response is None:
                raise _unreachable(exc) from exc
            log.debug("stream from %s ended: %s", backend.base_url, exc)
            return response
        with contextlib.suppress(ConnectionError):
            await response.write_eof()
        return response

    async def _upgrade(
        self,
        request: web.Request,
        backend: Backend,
        context: ssl.SSLContext,
        target: str,
        headers: list[tuple[str, str]],
        on_unreachable: Callable[[], None],
    ) -> web.StreamResponse:
        headers = [
            ("Connection", "Upgrade"),
            ("Upgrade", request.headers.get("Upgrade", "")),
            *headers,
        ]
        try:
            upstream = await httpstream.open_upgrade(
                host=backend.host,
                port=backend.port,
                method=request.method,
                target=target,
                headers=headers,
                ssl_context=context,
                server_hostname=backend.server_name,
                timeout_s=CONNECT_TIMEOUT_S,
            )
        except httpstream.UpstreamError as exc:
            on_unreachable()
            raise _unreachable(exc) from exc
        if upstream.status != 101:
            body = await upstream.read_body()
            response = web.Response(status=upstream.status, body=body)
            response.headers["Content-Type"] = upstream.header("Content-Type") or "text/plain"
            return response
        try:
            client_reader, client_writer, done = await httpstream.hijack(request)
        except BaseException:
            await httpstream.close_writer(upstream.writer)
            raise
        client_writer.write(upstream.head)
        await httpstream.splice((client_reader, client_writer), (upstream.reader, upstream.writer))
        return done


async def _body(request: web.Request) -> AsyncIterator[bytes]:
    while True:
        chunk = await request.content.read(BODY_CHUNK_BYTES)
        if not chunk:
            return
        yield chunk
