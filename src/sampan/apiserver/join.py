"""Joining nodes: the two endpoints a new agent uses before it has any credentials.

K3s's agent join, on the API server's port:

* ``GET /cacerts`` (public): the cluster CA. The agent hashes it and compares the hash with the
  one in its ``K10<sha256>::<user>:<secret>`` token before it sends the secret anywhere;
* ``POST /v1-sampan/node`` with HTTP basic auth ``node:<secret>`` (or ``server:<secret>``) and a
  JSON body ``{"nodeName", "nodePassword", "nodeIPs"}``: the node's credentials — a kubelet
  client certificate (``system:node:<name>`` in ``system:nodes``), a kubelet serving
  certificate for the node's name and addresses, and certificates for the agent's network
  (``system:sampan-agent``) and proxy (``system:kube-proxy``) identities.

The node password (a random secret each agent keeps on its disk) is remembered as a salted
hash in the Secret ``kube-system/<node>.node-password.sampan``: a second machine that asks for
an existing node's name with another password is refused (403), as K3s refuses it. Secrets are
compared in constant time and never logged.

A Kubernetes bootstrap token ``<id>.<secret>`` (``sampan token create``: the Secret
``kube-system/bootstrap-token-<id>`` of type ``bootstrap.kubernetes.io/token``) is accepted as a
join secret too while it is unexpired and has ``usage-bootstrap-authentication: true``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import ipaddress
import json
import logging
import re
import secrets
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from sampan.api.names import validate_name
from sampan.apiserver.errors import (
    AlreadyExists,
    BadRequest,
    Forbidden,
    NotFound,
    StatusError,
    Unauthorized,
)
from sampan.apiserver.responses import error_response
from sampan.pki import issue_client_certificate, issue_serving_certificate

__all__ = [
    "CACERTS_PATH",
    "JOIN_PATH",
    "NODE_PASSWORD_REJECTED",
    "JoinService",
    "is_join_path",
]

log = logging.getLogger(__name__)

CACERTS_PATH = "/cacerts"
JOIN_PATH = "/v1-sampan/node"
NODE_PASSWORD_SECRET_SUFFIX = ".node-password.sampan"
NODE_PASSWORD_SECRET_TYPE = "sampan.io/node-password"
NODE_PASSWORD_REJECTED = (
    "node password rejected: duplicate hostname or contents of /etc/sampan/node changed"
)
MAX_JOIN_BODY_BYTES = 64 * 1024
ALLOWED_USERS = ("node", "server")
BOOTSTRAP_TOKEN_TYPE = "bootstrap.kubernetes.io/token"
_BOOTSTRAP_TOKEN = re.compile(r"^(?P<id>[a-z0-9]{6})\.(?P<secret>[a-z0-9]{16})$")


def is_join_path(path: str) -> bool:
    return path == CACERTS_PATH or path == JOIN_PATH


def _hash_password(password: str, salt: str) -> str:
    return hashlib.sha256(f"{salt}:{password}".encode()).hexdigest()


class JoinService:
    """Serves ``/cacerts`` and ``/v1-sampan/node``.

    ``secrets`` returns the accepted secrets by user (``{"server": ..., "node": ...}``); it is
    called per request so a rotated token takes effect at once. ``store_for`` gives the storage
    of a resource by plural (``secrets``, ``nodes``)."""

    def __init__(
        self,
        pki: Any,
        store_for: Callable[[str], Any],
        secrets_by_user: Callable[[], Mapping[str, str]],
    ) -> None:
        self._pki = pki
        self._store_for = store_for
        self._secrets = secrets_by_user

    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            if request.path == CACERTS_PATH:
                if request.method != "GET":
                    raise BadRequest("only GET is supported here")
                return web.Response(body=self._pki.ca_pem, content_type="application/x-pem-file")
            if request.method != "POST":
                raise BadRequest("only POST is supported here")
            user = await self._check_token(request.headers.get("Authorization", ""))
            body = await self._read_body(request)
            return await self._join(user, body)
        except StatusError as exc:
            return error_response(exc)

    async def _check_token(self, header: str) -> str:
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic" or not encoded:
            raise Unauthorized("a join token is required (basic auth node:<token secret>)")
        try:
            user, _, secret = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise Unauthorized("malformed basic auth header") from None
        accepted = self._secrets()
        for name in ALLOWED_USERS:
            want = accepted.get(name)
            if want and hmac.compare_digest(secret.encode(), want.encode()):
                return user or name
        if await self._bootstrap_token_valid(secret):
            return user or "node"
        log.info("join refused: wrong token (user %r)", user)
        raise Unauthorized("the join token was not accepted")

    async def _bootstrap_token_valid(self, token: str) -> bool:
        """``<id>.<secret>``: a Kubernetes bootstrap token (``sampan token create``), valid
        while its Secret ``kube-system/bootstrap-token-<id>`` allows authentication and has not
        expired."""
        match = _BOOTSTRAP_TOKEN.match(token)
        if match is None:
            return False
        try:
            secret = await self._store_for("secrets").get(
                "kube-system", f"bootstrap-token-{match['id']}"
            )
        except NotFound:
            return False
        if secret.get("type") != BOOTSTRAP_TOKEN_TYPE:
            return False
        try:
            data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
        except (binascii.Error, UnicodeDecodeError, TypeError):
            return False
        if data.get("usage-bootstrap-authentication") != "true":
            return False
        if not hmac.compare_digest(data.get("token-secret", "").encode(), match["secret"].encode()):
            return False
        expiration = data.get("expiration")
        if expiration:
            try:
                expires = datetime.fromisoformat(expiration.replace("Z", "+00:00"))
            except ValueError:
                return False
            if expires.tzinfo is None or expires <= datetime.now(UTC):
                log.info("join refused: bootstrap token %s has expired", match["id"])
                return False
        return True

    async def _read_body(self, request: web.Request) -> dict[str, Any]:
        raw = await request.content.read(MAX_JOIN_BODY_BYTES + 1)
        if len(raw) > MAX_JOIN_BODY_BYTES:
            raise BadRequest("join request too large")
        try:
            body = json.loads(raw or b"{}")
        except ValueError as exc:
            raise BadRequest(f"join request is not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise BadRequest("join request must be a JSON object")
        return body

    async def _join(self, user: str, body: dict[str, Any]) -> web.Response:
        name = body.get("nodeName")
        password = body.get("nodePassword")
        ips = body.get("nodeIPs") or []
        if not isinstance(name, str) or not name:
            raise BadRequest("nodeName is required")
        problems = validate_name(self._node_info(), name)
        if problems:
            raise BadRequest(f'invalid node name "{name}": {problems[0]}')
        if not isinstance(password, str) or len(password) < 16:
            raise BadRequest("nodePassword is required (at least 16 characters)")
        if not isinstance(ips, list) or not all(isinstance(ip, str) for ip in ips):
            raise BadRequest("nodeIPs must be a list of addresses")
        for ip in ips:
            try:
                ipaddress.ip_address(ip)
            except ValueError:
                raise BadRequest(f"nodeIPs: {ip!r} is not an IP address") from None
        await self._check_node_password(name, password)
        creds = await asyncio.to_thread(self._issue, name, ips)
        log.info("node %s joined (credentials issued)", name)
        return web.json_response(creds)

    def _node_info(self) -> Any:
        return self._store_for("nodes").info

    async def _check_node_password(self, node: str, password: str) -> None:
        store = self._store_for("secrets")
        name = f"{node}{NODE_PASSWORD_SECRET_SUFFIX}"
        try:
            secret = await store.get("kube-system", name)
        except NotFound:
            salt = secrets.token_hex(8)
            obj = {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": name, "namespace": "kube-system"},
                "type": NODE_PASSWORD_SECRET_TYPE,
                "data": {
                    "salt": base64.b64encode(salt.encode()).decode(),
                    "hash": base64.b64encode(_hash_password(password, salt).encode()).decode(),
                },
            }
            try:
                await store.create(obj)
                return
            except AlreadyExists:  # a racing join of the same name: compare with the winner
                secret = await store.get("kube-system", name)
        data = secret.get("data") or {}
        try:
            salt = base64.b64decode(data.get("salt", "")).decode()
            want = base64.b64decode(data.get("hash", "")).decode()
        except (binascii.Error, UnicodeDecodeError):
            want, salt = "", ""
        if not want or not hmac.compare_digest(_hash_password(password, salt), want):
            log.warning("node %s: join refused: node password does not match", node)
            raise Forbidden(NODE_PASSWORD_REJECTED)

    def _issue(self, node: str, ips: list[str]) -> dict[str, str]:
        pki = self._pki
        kubelet_cert, kubelet_key = issue_client_certificate(
            pki, f"system:node:{node}", ("system:nodes",)
        )
        serving_cert, serving_key = issue_serving_certificate(pki, [node], ips)
        agent_cert, agent_key = issue_client_certificate(pki, "system:sampan-agent")
        proxy_cert, proxy_key = issue_client_certificate(pki, "system:kube-proxy")
        return {
            "ca": pki.ca_pem.decode(),
            "clientCA": pki.client_ca_pem.decode(),
            "kubeletClientCert": kubelet_cert.decode(),
            "kubeletClientKey": kubelet_key.decode(),
            "kubeletServingCert": serving_cert.decode(),
            "kubeletServingKey": serving_key.decode(),
            "agentCert": agent_cert.decode(),
            "agentKey": agent_key.decode(),
            "proxyCert": proxy_cert.decode(),
            "proxyKey": proxy_key.decode(),
        }
