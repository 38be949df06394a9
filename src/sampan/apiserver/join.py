"""Joining nodes: the two endpoints a new agent uses before it has any credentials.

K3s's agent join, on the API server's port:

* ``GET /cacerts`` (public): the cluster CA. The agent hashes it and compares the hash with the
  one in its ``K10<sha256>::<user>:<secret>`` token before it sends the secret anywhere;
* ``POST /v1-sampan/node`` with HTTP basic auth ``node:<secret>`` (or ``server:<secret>``) and a
  JSON body ``{"nodeName", "nodePassword", "nodeIPs"}``: the node's credentials — a kubelet
  client certificate (``system:node:<name>`` in ``system:nodes``), a kubelet serving
  certificate for the node's name and addresses (signed by the kubelet serving CA, which API
  clients do not trust), and certificates for the agent's network (``system:sampan-agent``),
  proxy (``system:kube-proxy``) and ingress controller (``system:sampan-ingress``) identities.

A node gets certificates only for its own name and addresses. Refused, with a ``Status``
naming the problem: a name that is not a DNS-1123 subdomain; the API server's names —
``localhost``, ``kubernetes``, ``kubernetes.default``, ``kubernetes.default.svc[.<domain>]``
and every DNS name of its serving certificate (``--tls-san`` included); loopback and
unspecified addresses and every IP of the serving certificate (the ``kubernetes`` Service IP
included); a name or address of another node (its Node's ``status.addresses``, or claimed by
a join in the last ``PENDING_CLAIM_TTL_S`` whose Node does not exist yet). The one exception
is the server's own node (``local_node``, joining with the server token): it may claim the
host's name and addresses, which the serving certificate carries because the API server
runs there.

The node password (a random secret each agent keeps on its disk) is remembered as a salted
hash in the Secret ``kube-system/<node>.node-password.sampan``: a second machine that asks for
an existing node's name with another password is refused (403), as K3s refuses it. Secrets are
compared in constant time and never logged.

* ``POST /v1-sampan/etcd-member`` with the *server* token only (an agent token or bootstrap
  token is refused): a server joining this server's embedded etcd cluster. The body and the
  answer belong to the supervisor's embedded etcd (``set_etcd_member_handler``); a server
  without an embedded etcd answers 404.

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
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from sampan.api.errors import (
    AlreadyExists,
    BadRequest,
    Forbidden,
    NotFound,
    StatusError,
    Unauthorized,
)
from sampan.api.names import validate_name
from sampan.apiserver.responses import error_response
from sampan.pki import issue_client_certificate, issue_kubelet_serving_certificate

__all__ = [
    "CACERTS_PATH",
    "ETCD_MEMBER_PATH",
    "JOIN_PATH",
    "NODE_PASSWORD_REJECTED",
    "JoinService",
    "is_join_path",
]

log = logging.getLogger(__name__)

CACERTS_PATH = "/cacerts"
JOIN_PATH = "/v1-sampan/node"
ETCD_MEMBER_PATH = "/v1-sampan/etcd-member"
NODE_PASSWORD_SECRET_SUFFIX = ".node-password.sampan"
NODE_PASSWORD_SECRET_TYPE = "sampan.io/node-password"
NODE_PASSWORD_REJECTED = (
    "node password rejected: duplicate hostname or contents of /etc/sampan/node changed"
)
MAX_JOIN_BODY_BYTES = 64 * 1024
JOIN_ROLES = ("server", "node")
"""What a join secret can grant, checked in this order (the two secrets may be equal)."""
BOOTSTRAP_TOKEN_TYPE = "bootstrap.kubernetes.io/token"
_BOOTSTRAP_TOKEN = re.compile(r"^(?P<id>[a-z0-9]{6})\.(?P<secret>[a-z0-9]{16})$")
# Names of the API server no node may take, whatever its certificate carries; any
# ``kubernetes.default.svc.<cluster domain>`` too (the server does not know the domain).
RESERVED_NAMES = frozenset(
    ("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc")
)
RESERVED_NAME_PREFIX = "kubernetes.default.svc."
PENDING_CLAIM_TTL_S = 600.0
"""How long a join's claim on its addresses holds before its Node exists (then the Node's
``status.addresses`` hold them)."""
NODE_ADDRESS_TYPES = ("InternalIP", "ExternalIP", "Hostname", "InternalDNS", "ExternalDNS")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def is_join_path(path: str) -> bool:
    return path in (CACERTS_PATH, JOIN_PATH, ETCD_MEMBER_PATH)


def _hash_password(password: str, salt: str) -> str:
    return hashlib.sha256(f"{salt}:{password}".encode()).hexdigest()


class JoinService:
    """Serves ``/cacerts`` and ``/v1-sampan/node``.

    ``secrets`` returns the accepted secrets by user (``{"server": ..., "node": ...}``); it is
    called per request so a rotated token takes effect at once. ``store_for`` gives the storage
    of a resource by plural (``secrets``, ``nodes``). ``host_addresses`` are the API server
    host's own name and IPs; ``local_node`` returns the name of the node that runs on that
    host (the server's embedded agent), or None when there is none."""

    def __init__(
        self,
        pki: Any,
        store_for: Callable[[str], Any],
        secrets_by_user: Callable[[], Mapping[str, str]],
        *,
        host_addresses: Iterable[str] = (),
        local_node: Callable[[], str | None] = lambda: None,
        etcd_member: Callable[[], Any] = lambda: None,
    ) -> None:
        self._pki = pki
        self._etcd_member = etcd_member
        self._store_for = store_for
        self._secrets = secrets_by_user
        host_names, host_ips = _split_addresses(host_addresses)
        self._host_names = frozenset(host_names)
        self._host_ips = frozenset(host_ips)
        self._local_node = local_node
        # Claims of joins whose Node may not exist yet: address -> (node, monotonic expiry).
        # Bounded by the number of distinct addresses joined within PENDING_CLAIM_TTL_S.
        self._pending: dict[str | IPAddress, tuple[str, float]] = {}
        self._claim_lock = asyncio.Lock()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            if request.path == CACERTS_PATH:
                if request.method != "GET":
                    raise BadRequest("only GET is supported here")
                return web.Response(body=self._pki.ca_pem, content_type="application/x-pem-file")
            if request.method != "POST":
                raise BadRequest("only POST is supported here")
            role = await self._check_token(request.headers.get("Authorization", ""))
            body = await self._read_body(request)
            if request.path == ETCD_MEMBER_PATH:
                return await self._add_etcd_member(role, body)
            return await self._join(role, body)
        except StatusError as exc:
            return error_response(exc)

    async def _check_token(self, header: str) -> str:
        """The role the secret grants: ``server`` (the server token), ``node`` (the agent token
        or a bootstrap token). The user name in the header does not choose the role."""
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic" or not encoded:
            raise Unauthorized("a join token is required (basic auth node:<token secret>)")
        try:
            user, _, secret = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise Unauthorized("malformed basic auth header") from None
        accepted = self._secrets()
        for role in JOIN_ROLES:
            want = accepted.get(role)
            if want and hmac.compare_digest(secret.encode(), want.encode()):
                return role
        if await self._bootstrap_token_valid(secret):
            return "node"
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

    async def _add_etcd_member(self, role: str, body: dict[str, Any]) -> web.Response:
        if role != "server":
            raise Forbidden("only the server token may join a server to the etcd cluster")
        handler = self._etcd_member()
        if handler is None:
            raise NotFound("this server runs no embedded etcd (start it with --cluster-init)")
        answer = await handler(body)
        return web.json_response(answer)

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

    async def _join(self, role: str, body: dict[str, Any]) -> web.Response:
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
        addresses: list[IPAddress] = []
        for ip in ips:
            try:
                address = ipaddress.ip_address(ip)
            except ValueError:
                raise BadRequest(f"nodeIPs: {ip!r} is not an IP address") from None
            if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
                raise BadRequest(
                    f"nodeIPs: {ip} is an IPv4-mapped address; give the IPv4 address "
                    f"{address.ipv4_mapped} instead"
                )
            addresses.append(address)
        local = role == "server" and name == self._local_node()
        self._check_reserved(name, addresses, local=local)
        async with self._claim_lock:  # two joins claiming one address: the second is refused
            await self._check_other_nodes(name, addresses)
            await self._check_node_password(name, password)
            expires = time.monotonic() + PENDING_CLAIM_TTL_S
            for claim, (owner, _) in list(self._pending.items()):
                if owner == name:  # a node joining again with other addresses frees its old ones
                    del self._pending[claim]
            for claim in (name, *addresses):
                self._pending[claim] = (name, expires)
        creds = await asyncio.to_thread(self._issue, name, [str(a) for a in addresses])
        log.info("node %s joined (credentials issued)", name)
        return web.json_response(creds)

    def _check_reserved(self, name: str, ips: list[IPAddress], *, local: bool) -> None:
        """Refuse the API server's names and addresses (see the module docstring). ``local``:
        the server's own node, which may claim the host's name and IPs."""
        if name in RESERVED_NAMES or name.startswith(RESERVED_NAME_PREFIX):
            raise Forbidden(
                f'node name "{name}" is reserved: it is a name of the API server '
                "(a node may only have its own name)"
            )
        serving = self._pki.serving_names
        if name in serving.dns and not (local and name in self._host_names):
            raise Forbidden(
                f'node name "{name}" is reserved: it is a name in the API server\'s serving '
                "certificate (a node may only have its own name)"
            )
        name_ip = _as_ip(name)
        for ip, field_name in [*((ip, "nodeIPs") for ip in ips), (name_ip, "nodeName")]:
            if ip is None or (local and ip in self._host_ips):
                continue
            if ip.is_loopback or ip.is_unspecified:
                kind = "a loopback" if ip.is_loopback else "an unspecified"
                raise BadRequest(
                    f"{field_name}: {ip} is {kind} address; a node must be reached at its own "
                    "address"
                )
            if ip in serving.ips:
                raise Forbidden(
                    f"{field_name}: {ip} is reserved: it is an address of the API server "
                    "(in its serving certificate)"
                )

    async def _check_other_nodes(self, name: str, ips: list[IPAddress]) -> None:
        """Refuse names and addresses another node holds: its Node's ``status.addresses``, or
        a recent join's claim while that node has no Node yet."""
        page = await self._store_for("nodes").list(None)
        nodes = dict(_node_claims(json.loads(raw)) for raw in page.items)
        now = time.monotonic()
        for claim, (owner, expires) in list(self._pending.items()):
            if expires <= now or owner in nodes:  # the Node's addresses are authoritative
                del self._pending[claim]
        held = {claim: owner for claim, (owner, _) in self._pending.items()}
        for owner, claims in nodes.items():
            held.update(dict.fromkeys(claims, owner))
        name_ip = _as_ip(name)
        for claim, field_name in [(name_ip or name, "nodeName"), *((ip, "nodeIPs") for ip in ips)]:
            owner = held.get(claim)
            if owner is not None and owner != name:
                raise Forbidden(f'{field_name}: {claim} is already an address of node "{owner}"')

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
        serving_cert, serving_key = issue_kubelet_serving_certificate(pki, [node], ips)
        agent_cert, agent_key = issue_client_certificate(pki, "system:sampan-agent")
        proxy_cert, proxy_key = issue_client_certificate(pki, "system:kube-proxy")
        ingress_cert, ingress_key = issue_client_certificate(pki, "system:sampan-ingress")
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
            "ingressCert": ingress_cert.decode(),
            "ingressKey": ingress_key.decode(),
        }


def _as_ip(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _split_addresses(values: Iterable[str]) -> tuple[set[str], set[IPAddress]]:
    names: set[str] = set()
    ips: set[IPAddress] = set()
    for value in values:
        ip = _as_ip(value)
        if ip is not None:
            ips.add(ip)
        elif value:
            names.add(value.lower())
    return names, ips


def _node_claims(node: dict[str, Any]) -> tuple[str, set[str | IPAddress]]:
    """A Node's name and everything it holds: its name and its ``status.addresses``."""
    owner = str((node.get("metadata") or {}).get("name", ""))
    claims: set[str | IPAddress] = {owner}
    for entry in (node.get("status") or {}).get("addresses") or []:
        if isinstance(entry, dict) and entry.get("type") in NODE_ADDRESS_TYPES:
            value = str(entry.get("address", "")).lower()
            claims.add(_as_ip(value) or value)
    return owner, claims
