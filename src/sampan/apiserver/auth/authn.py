"""Request authentication: client certificates first, then bearer tokens.

``Authenticator.authenticate`` returns None when the request carries no credentials (the
caller then treats it as ``system:anonymous``), a ``UserInfo`` when they are valid, and raises
``AuthenticationError`` when they are not (the caller answers 401).

* x509: the TLS layer already verified the chain against the client CA; the user is the
  subject's CN and the groups its O values. When ``client_ca_pem`` is given the certificate is
  checked again here (issuer signature, validity, clientAuth usage) so a mis-configured TLS
  context cannot turn into an authentication bypass; results are cached per certificate.
* Request-header (front-proxy) authentication, as kube-apiserver's ``--requestheader-*``
  flags: a client certificate signed by the separate request-header CA (``RequestHeaderConfig``)
  whose CN is among the allowed names makes the server trust the ``X-Remote-User``,
  ``X-Remote-Group`` (one header per group) and ``X-Remote-Extra-<key>`` headers. Such a
  certificate never authenticates as its own CN; without a user header it is ignored (the
  bearer token, if any, decides). A certificate from the request-header CA with a CN not
  allowed is a 401.
* Bearer tokens go through a list of ``TokenAuthenticator``s: service-account JWTs first, then
  whatever ``token_authenticators`` adds (bootstrap tokens will plug in there). The first
  that recognises the token decides.
* Every authenticated user gets ``system:authenticated``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sampan.apiserver.auth.serviceaccount import (
    DEFAULT_API_AUDIENCES,
    DEFAULT_ISSUER,
    Clock,
    PublicKey,
    ServiceAccountTokenAuthenticator,
)
from sampan.apiserver.auth.user import (
    AuthenticationError,
    TokenAuthenticator,
    TokenLookup,
    UserInfo,
    with_authenticated_group,
)
from sampan.pki.certs import is_issued_by

__all__ = [
    "REQUEST_HEADER_EXTRA_PREFIX",
    "REQUEST_HEADER_GROUP",
    "REQUEST_HEADER_USER",
    "Authenticator",
    "RequestHeaderConfig",
    "user_from_certificate",
]

REQUEST_HEADER_USER = "X-Remote-User"
REQUEST_HEADER_GROUP = "X-Remote-Group"
REQUEST_HEADER_EXTRA_PREFIX = "X-Remote-Extra-"


@dataclass(frozen=True)
class RequestHeaderConfig:
    """The front-proxy trust: the request-header CA and the CNs it may vouch with (empty =
    any certificate from that CA, as upstream)."""

    ca_pem: bytes = field(repr=False)
    allowed_names: tuple[str, ...] = ()
    username_headers: tuple[str, ...] = (REQUEST_HEADER_USER,)
    group_headers: tuple[str, ...] = (REQUEST_HEADER_GROUP,)
    extra_headers_prefixes: tuple[str, ...] = (REQUEST_HEADER_EXTRA_PREFIX,)


# Verified-certificate cache size; a cluster has few distinct client certificates, and the
# cache is simply cleared when full (a re-verification costs one signature check).
_CERT_CACHE_MAX = 1024


def _subject_from_dict(peer_cert: dict[str, Any]) -> tuple[list[str], list[str]]:
    """CN and O values from ``SSLObject.getpeercert()`` (tuples of RDNs of (key, value))."""
    common_names: list[str] = []
    organizations: list[str] = []
    for rdn in peer_cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                common_names.append(value)
            elif key == "organizationName":
                organizations.append(value)
    return common_names, organizations


def user_from_certificate(peer_cert: dict[str, Any] | bytes | x509.Certificate) -> UserInfo:
    """Map a verified client certificate to a user: CN -> name, each O -> a group."""
    if isinstance(peer_cert, dict):
        common_names, organizations = _subject_from_dict(peer_cert)
    else:
        cert = peer_cert if isinstance(peer_cert, x509.Certificate) else _load_der(peer_cert)
        common_names = [
            str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        ]
        organizations = [
            str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
        ]
    if not common_names or not common_names[0]:
        raise AuthenticationError("client certificate has no common name")
    groups = tuple(dict.fromkeys(o for o in organizations if o))
    return with_authenticated_group(UserInfo(name=common_names[0], groups=groups))


def _load_der(der: bytes) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise AuthenticationError("client certificate cannot be parsed") from exc


def _check_certificate(
    cert: x509.Certificate, client_cas: Sequence[x509.Certificate], now: float
) -> None:
    """``client_cas``: every CA of the bundle (after a CA rotation it holds the new CA and
    the old one, and certificates of both are valid)."""
    if not any(is_issued_by(cert, ca) for ca in client_cas):
        raise AuthenticationError("client certificate is not signed by the client CA")
    moment = dt.datetime.fromtimestamp(now, dt.UTC)
    if not cert.not_valid_before_utc <= moment <= cert.not_valid_after_utc:
        raise AuthenticationError("client certificate has expired or is not yet valid")
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return
    if (
        ExtendedKeyUsageOID.CLIENT_AUTH not in usages
        and ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE not in usages
    ):
        raise AuthenticationError("client certificate is not valid for client authentication")


def _first_header(headers: Mapping[str, str], names: Sequence[str]) -> str:
    for header in names:
        value = headers.get(header, "").strip()
        if value:
            return value
    return ""


class Authenticator:
    """The API server's authentication chain (see module docstring)."""

    def __init__(
        self,
        *,
        sa_public_keys: Iterable[bytes | str | PublicKey],
        issuer: str = DEFAULT_ISSUER,
        api_audiences: Sequence[str] = DEFAULT_API_AUDIENCES,
        lookup: TokenLookup,
        client_ca_pem: bytes | None = None,
        token_authenticators: Sequence[TokenAuthenticator] = (),
        request_header: RequestHeaderConfig | None = None,
        clock: Clock = time.time,
    ) -> None:
        self.service_accounts = ServiceAccountTokenAuthenticator(
            public_keys=sa_public_keys,
            issuer=issuer,
            api_audiences=api_audiences,
            lookup=lookup,
            clock=clock,
        )
        # Extension point: bootstrap tokens (and later others) are appended here.
        self.token_authenticators: list[TokenAuthenticator] = [
            self.service_accounts,
            *token_authenticators,
        ]
        self._client_ca = (
            x509.load_pem_x509_certificates(client_ca_pem) if client_ca_pem is not None else None
        )
        self._clock = clock
        self._cert_cache: dict[bytes, tuple[UserInfo, float]] = {}
        self._front_proxy_cache: dict[bytes, bool] = {}
        """Whether a client certificate (its DER bytes) is signed by the request-header CA:
        a signature check per request otherwise (the CA is fixed for the server's life)."""
        self._request_header = request_header
        self._request_header_ca = (
            x509.load_pem_x509_certificates(request_header.ca_pem)
            if request_header is not None
            else None
        )

    async def authenticate(
        self,
        *,
        peer_cert: dict[str, Any] | bytes | None,
        authorization: str | None,
        headers: Any = None,
    ) -> UserInfo | None:
        """``headers``: the request's headers (a multidict: ``getall``), needed for
        request-header authentication; without them a front-proxy certificate is ignored."""
        if peer_cert and isinstance(peer_cert, bytes) and self._is_front_proxy(peer_cert):
            user = self._authenticate_request_header(peer_cert, headers)
            if user is not None:
                return user
            peer_cert = None  # a front-proxy certificate is no user of its own
        if peer_cert:
            return self._authenticate_certificate(peer_cert)
        if authorization:
            return await self._authenticate_authorization(authorization)
        return None

    def _is_front_proxy(self, der: bytes) -> bool:
        if self._request_header_ca is None:
            return False
        known = self._front_proxy_cache.get(der)
        if known is not None:
            return known
        cert = _load_der(der)
        issued = any(is_issued_by(cert, ca) for ca in self._request_header_ca)
        if len(self._front_proxy_cache) >= _CERT_CACHE_MAX:
            self._front_proxy_cache.clear()
        self._front_proxy_cache[der] = issued
        return issued

    def _authenticate_request_header(self, der: bytes, headers: Any) -> UserInfo | None:
        config, ca = self._request_header, self._request_header_ca
        assert config is not None and ca is not None
        if headers is None:
            return None
        name = _first_header(headers, config.username_headers)
        if not name:
            return None
        cert = _load_der(der)
        _check_certificate(cert, ca, self._clock())
        common_name = next(
            (str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)), ""
        )
        if config.allowed_names and common_name not in config.allowed_names:
            raise AuthenticationError(
                f"request-header client certificate CN {common_name!r} is not allowed"
            )
        groups: list[str] = []
        for header in config.group_headers:
            groups.extend(v for v in headers.getall(header, []) if v)
        extra: dict[str, list[str]] = {}
        for key in headers:
            for prefix in config.extra_headers_prefixes:
                if key.lower().startswith(prefix.lower()) and len(key) > len(prefix):
                    extra_key = urllib.parse.unquote(key[len(prefix) :].lower())
                    extra.setdefault(extra_key, []).extend(headers.getall(key))
                    break
        return with_authenticated_group(
            UserInfo(
                name=name,
                groups=tuple(dict.fromkeys(groups)),
                extra={k: tuple(dict.fromkeys(v)) for k, v in extra.items()},
            )
        )

    def _authenticate_certificate(self, peer_cert: dict[str, Any] | bytes) -> UserInfo:
        client_ca = self._client_ca
        if isinstance(peer_cert, dict) or client_ca is None:
            # A dict only exists when the ssl module verified the chain itself.
            return user_from_certificate(peer_cert)
        digest = hashlib.sha256(peer_cert).digest()
        cached = self._cert_cache.get(digest)
        now = self._clock()
        if cached is not None and now < cached[1]:
            return cached[0]
        cert = _load_der(peer_cert)
        _check_certificate(cert, client_ca, now)
        user = user_from_certificate(cert)
        if len(self._cert_cache) >= _CERT_CACHE_MAX:
            self._cert_cache.clear()
        self._cert_cache[digest] = (user, cert.not_valid_after_utc.timestamp())
        return user

    async def _authenticate_authorization(self, authorization: str) -> UserInfo | None:
        scheme, _, rest = authorization.strip().partition(" ")
        if scheme.lower() != "bearer":
            return None  # other schemes are not ours to judge: anonymous
        token = rest.strip()
        if not token:
            raise AuthenticationError("invalid bearer token")
        errors: list[AuthenticationError] = []
        for authenticator in self.token_authenticators:
            try:
                user = await authenticator.authenticate_token(token)
            except AuthenticationError as exc:
                errors.append(exc)
                continue
            if user is not None:
                return with_authenticated_group(user)
        if errors:
            if len(errors) == 1:
                raise errors[0]
            raise AuthenticationError("; ".join(e.message for e in errors))
        raise AuthenticationError("invalid bearer token")
