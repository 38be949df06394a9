"""Service-account tokens: issuing bound JWTs and authenticating both token generations.

Two kinds of token, told apart by their issuer claim:

* **bound** tokens (TokenRequest, projected pod volumes): ``iss`` is the cluster issuer,
  ``aud``/``exp``/``iat``/``nbf``/``jti``/``sub`` are set, and the private claim
  ``kubernetes.io`` names the namespace, the service account (name, uid) and optionally the
  object the token is bound to (a pod, a secret or a node; a pod-bound token may also name
  the node the pod runs on);
* **legacy** tokens stored in ``kubernetes.io/service-account-token`` Secrets: ``iss`` is
  ``kubernetes/serviceaccount``, no expiry or audience; flat ``kubernetes.io/serviceaccount/*``
  claims.

A token is accepted only if its signature verifies with one of the service-account public
keys, its times and audience are right, and — through ``TokenLookup`` — the service account
(and the bound pod/secret/node, or for legacy tokens the secret holding it) still exists with
the uid the token names. Time comes from an injectable clock so tests need not sleep.

Signing (key loading, ``kid``, algorithm, the legacy claims) lives in ``sampan.pki.satokens``,
shared with the ``serviceaccount-token`` controller that fills legacy token Secrets.
"""

from __future__ import annotations

import base64
import datetime as dt
import hmac
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from sampan.apiserver.auth.user import (
    SYSTEM_AUTHENTICATED,
    AuthenticationError,
    TokenLookup,
    UserInfo,
    service_account_groups,
    service_account_username,
)
from sampan.pki.certs import load_pem_private_key
from sampan.pki.satokens import (
    LEGACY_CLAIM_NAMESPACE,
    LEGACY_CLAIM_SA_NAME,
    LEGACY_CLAIM_SA_UID,
    LEGACY_CLAIM_SECRET_NAME,
    LEGACY_ISSUER,
    PublicKey,
    ServiceAccountSigner,
    key_id,
    signing_algorithm,
)

__all__ = [
    "DEFAULT_API_AUDIENCES",
    "DEFAULT_ISSUER",
    "DEFAULT_TOKEN_EXPIRATION_S",
    "LEGACY_ISSUER",
    "LEGACY_TOKEN_INVALID_LABEL",
    "TOKEN_LEEWAY_S",
    "ServiceAccountTokenAuthenticator",
    "TokenIssuer",
    "key_id",
    "load_public_key",
]

DEFAULT_ISSUER = "https://kubernetes.default.svc.cluster.local"
DEFAULT_API_AUDIENCES = ("https://kubernetes.default.svc.cluster.local", "sampan")
DEFAULT_TOKEN_EXPIRATION_S = 3600
TOKEN_LEEWAY_S = 60
# A bound object marked for deletion longer ago than this no longer vouches for its tokens.
DELETED_OBJECT_GRACE_S = 60
LEGACY_TOKEN_INVALID_LABEL = "kubernetes.io/legacy-token-invalid-since"

EXTRA_POD_NAME = "authentication.kubernetes.io/pod-name"
EXTRA_POD_UID = "authentication.kubernetes.io/pod-uid"
EXTRA_NODE_NAME = "authentication.kubernetes.io/node-name"
EXTRA_NODE_UID = "authentication.kubernetes.io/node-uid"
EXTRA_CREDENTIAL_ID = "authentication.kubernetes.io/credential-id"

_PRIVATE_CLAIM = "kubernetes.io"

# The kinds a token can be bound to, and the resource TokenLookup knows them by.
_BINDABLE = {"Pod": "pods", "Secret": "secrets", "Node": "nodes"}

Clock = Callable[[], float]


def load_public_key(key: bytes | str | PublicKey) -> PublicKey:
    """A public key from PEM (public or private key) or a key object."""
    if isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        return key
    data = key.encode("ascii") if isinstance(key, str) else key
    if b"PRIVATE KEY" in data:
        private = load_pem_private_key(data)
        loaded: Any = private.public_key()
    else:
        loaded = serialization.load_pem_public_key(data)
    if not isinstance(loaded, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise ValueError(f"unsupported service-account key type {type(loaded).__name__}")
    return loaded


class TokenIssuer:
    """Signs bound service-account tokens (TokenRequest, pod token volumes) and legacy ones
    (for ``kubernetes.io/service-account-token`` Secrets)."""

    def __init__(
        self,
        private_key_pem: bytes,
        issuer: str = DEFAULT_ISSUER,
        audiences: Sequence[str] = DEFAULT_API_AUDIENCES,
        *,
        clock: Clock = time.time,
    ) -> None:
        self._signer = ServiceAccountSigner(private_key_pem)
        self.issuer = issuer
        self.audiences = tuple(audiences)
        self._clock = clock

    def issue(
        self,
        namespace: str,
        sa_name: str,
        sa_uid: str,
        *,
        expiration_s: int = DEFAULT_TOKEN_EXPIRATION_S,
        audiences: Sequence[str] | None = None,
        bound_object: Mapping[str, str] | None = None,
        node: Mapping[str, str] | None = None,
    ) -> tuple[str, dt.datetime]:
        """A bound token and its expiry (UTC).

        ``bound_object`` is a TokenRequest ``boundObjectRef`` (``kind`` Pod, Secret or Node,
        ``name``, ``uid``); ``node`` (``name``, ``uid``) names the node a bound pod runs on.
        """
        if expiration_s <= 0:
            raise ValueError("expiration_s must be positive")
        now = int(self._clock())
        exp = now + int(expiration_s)
        private: dict[str, Any] = {
            "namespace": namespace,
            "serviceaccount": {"name": sa_name, "uid": sa_uid},
        }
        if bound_object is not None:
            kind = bound_object.get("kind", "")
            if kind not in _BINDABLE:
                raise ValueError(f"cannot bind a token to kind {kind!r}")
            ref = {"name": bound_object["name"], "uid": bound_object.get("uid", "")}
            private[kind.lower()] = ref
        if node is not None:
            if bound_object is not None and bound_object.get("kind") not in ("Pod", "Node"):
                raise ValueError("node info is only for tokens bound to a pod")
            private["node"] = {"name": node["name"], "uid": node.get("uid", "")}
        claims = {
            "aud": list(audiences if audiences is not None else self.audiences),
            "exp": exp,
            "iat": now,
            "iss": self.issuer,
            "jti": str(uuid.uuid4()),
            _PRIVATE_CLAIM: private,
            "nbf": now,
            "sub": service_account_username(namespace, sa_name),
        }
        return self._signer.sign(claims), dt.datetime.fromtimestamp(exp, dt.UTC)


def _str_claim(claims: Mapping[str, Any], key: str) -> str:
    value = claims.get(key)
    if not isinstance(value, str) or not value:
        raise AuthenticationError(f"service account token is missing claim {key!r}")
    return value


def _ref(private: Mapping[str, Any], key: str) -> tuple[str, str] | None:
    value = private.get(key)
    if value is None:
        return None
    if not isinstance(value, Mapping) or not isinstance(value.get("name"), str):
        raise AuthenticationError(f"service account token has a malformed {key!r} claim")
    uid = value.get("uid", "")
    return value["name"], uid if isinstance(uid, str) else ""


def _parse_time(text: str) -> float | None:
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class ServiceAccountTokenAuthenticator:
    """``TokenAuthenticator`` for service-account JWTs (bound and legacy)."""

    def __init__(
        self,
        *,
        public_keys: Iterable[bytes | str | PublicKey],
        issuer: str = DEFAULT_ISSUER,
        api_audiences: Sequence[str] = DEFAULT_API_AUDIENCES,
        lookup: TokenLookup,
        clock: Clock = time.time,
    ) -> None:
        keys = [load_public_key(k) for k in public_keys]
        if not keys:
            raise ValueError("at least one service-account public key is needed")
        self._keys = {key_id(k): k for k in keys}
        self.issuer = issuer
        self.api_audiences = tuple(api_audiences)
        self._lookup = lookup
        self._clock = clock

    def _verify(self, token: str, header: Mapping[str, Any], bound: bool) -> dict[str, Any]:
        kid = header.get("kid")
        known = isinstance(kid, str) and kid in self._keys
        candidates = [self._keys[kid]] if known else list(self._keys.values())
        options = {
            "verify_exp": False,  # times are checked below against the injectable clock
            "verify_nbf": False,
            "verify_iat": False,
            "verify_aud": bound,
            "verify_iss": True,
        }
        last: Exception | None = None
        for key in candidates:
            try:
                return jwt.decode(
                    token,
                    key,
                    algorithms=[signing_algorithm(key)],
                    audience=list(self.api_audiences) if bound else None,
                    issuer=self.issuer if bound else LEGACY_ISSUER,
                    options=options,
                )
            except jwt.InvalidAudienceError as exc:
                raise AuthenticationError(
                    "token audiences are not accepted by this server"
                ) from exc
            except jwt.MissingRequiredClaimError as exc:
                raise AuthenticationError(f"service account token: {exc}") from exc
            except jwt.InvalidTokenError as exc:
                last = exc
        raise AuthenticationError("service account token signature is invalid") from last

    def _check_times(self, claims: Mapping[str, Any]) -> None:
        now = self._clock()
        exp, nbf, iat = claims.get("exp"), claims.get("nbf"), claims.get("iat")
        if not isinstance(exp, int | float):
            raise AuthenticationError("service account token has no expiry")
        if now > exp + TOKEN_LEEWAY_S:
            raise AuthenticationError("service account token has expired")
        for name, value in (("nbf", nbf), ("iat", iat)):
            if value is not None and (
                not isinstance(value, int | float) or now + TOKEN_LEEWAY_S < value
            ):
                raise AuthenticationError(f"service account token is not valid yet ({name})")

    async def _get(self, resource: str, namespace: str, name: str) -> dict | None:
        return await self._lookup.get_object(resource, namespace, name)

    def _deleted_long_ago(self, obj: Mapping[str, Any]) -> bool:
        stamp = obj.get("metadata", {}).get("deletionTimestamp")
        if not stamp:
            return False
        when = _parse_time(stamp)
        return when is None or when < self._clock() - DELETED_OBJECT_GRACE_S

    async def _check_service_account(self, namespace: str, name: str, uid: str) -> None:
        account = await self._get("serviceaccounts", namespace, name)
        if account is None or self._deleted_long_ago(account):
            raise AuthenticationError(f"service account {namespace}/{name} has been deleted")
        actual = account.get("metadata", {}).get("uid", "")
        if actual != uid:
            raise AuthenticationError(
                f"service account UID ({actual}) does not match claim ({uid})"
            )

    async def _check_bound(self, kind: str, namespace: str, ref: tuple[str, str]) -> None:
        name, uid = ref
        scope = "" if kind == "node" else namespace
        obj = await self._get(_BINDABLE[kind.capitalize()], scope, name)
        shown = name if kind == "node" else f"{namespace}/{name}"
        if obj is None:
            raise AuthenticationError(f"{kind} {shown} has been deleted")
        if self._deleted_long_ago(obj):
            raise AuthenticationError(f"{kind} {shown} is deleted and awaiting removal")
        actual = obj.get("metadata", {}).get("uid", "")
        if uid and actual != uid:
            raise AuthenticationError(f"{kind} UID ({actual}) does not match claim ({uid})")

    async def authenticate_token(self, token: str) -> UserInfo | None:
        if token.count(".") != 2:
            return None
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.InvalidTokenError:
            return None  # not a JWT: some other token authenticator's business
        issuer = unverified.get("iss")
        if issuer == self.issuer:
            return await self._authenticate_bound(token, header)
        if issuer == LEGACY_ISSUER:
            return await self._authenticate_legacy(token, header)
        return None  # a JWT from some other issuer (OIDC, ...)

    async def _authenticate_bound(self, token: str, header: Mapping[str, Any]) -> UserInfo:
        claims = self._verify(token, header, bound=True)
        self._check_times(claims)
        private = claims.get(_PRIVATE_CLAIM)
        if not isinstance(private, Mapping):
            raise AuthenticationError("service account token is missing claim 'kubernetes.io'")
        namespace = _str_claim(private, "namespace")
        account = _ref(private, "serviceaccount")
        if account is None or not account[1]:
            raise AuthenticationError("service account token does not name a service account")
        if claims.get("sub") != service_account_username(namespace, account[0]):
            raise AuthenticationError("service account token subject does not match its claims")
        await self._check_service_account(namespace, account[0], account[1])
        extra: dict[str, tuple[str, ...]] = {}
        for kind in ("pod", "secret", "node"):
            ref = _ref(private, kind)
            if ref is None:
                continue
            await self._check_bound(kind, namespace, ref)
            if kind in ("pod", "node"):
                name_key, uid_key = (
                    (EXTRA_POD_NAME, EXTRA_POD_UID)
                    if kind == "pod"
                    else (EXTRA_NODE_NAME, EXTRA_NODE_UID)
                )
                extra[name_key] = (ref[0],)
                if ref[1]:
                    extra[uid_key] = (ref[1],)
        jti = claims.get("jti")
        if isinstance(jti, str) and jti:
            extra[EXTRA_CREDENTIAL_ID] = (f"JTI={jti}",)
        return UserInfo(
            name=service_account_username(namespace, account[0]),
            uid=account[1],
            groups=(*service_account_groups(namespace), SYSTEM_AUTHENTICATED),
            extra=extra,
        )

    async def _authenticate_legacy(self, token: str, header: Mapping[str, Any]) -> UserInfo:
        claims = self._verify(token, header, bound=False)
        namespace = _str_claim(claims, LEGACY_CLAIM_NAMESPACE)
        secret_name = _str_claim(claims, LEGACY_CLAIM_SECRET_NAME)
        sa_name = _str_claim(claims, LEGACY_CLAIM_SA_NAME)
        sa_uid = _str_claim(claims, LEGACY_CLAIM_SA_UID)
        if claims.get("sub") != service_account_username(namespace, sa_name):
            raise AuthenticationError("service account token subject does not match its claims")
        secret = await self._get("secrets", namespace, secret_name)
        if secret is None or secret.get("metadata", {}).get("deletionTimestamp"):
            raise AuthenticationError(f"secret {namespace}/{secret_name} has been deleted")
        stored = secret.get("data", {}).get("token", "")
        try:
            stored_token = base64.b64decode(stored, validate=True)
        except ValueError:
            stored_token = b""
        if not hmac.compare_digest(stored_token, token.encode("ascii")):
            raise AuthenticationError(f"token does not match secret {namespace}/{secret_name}")
        if LEGACY_TOKEN_INVALID_LABEL in secret.get("metadata", {}).get("labels", {}):
            raise AuthenticationError(
                f"the token in secret {namespace}/{secret_name} for service account "
                f"{namespace}/{sa_name} has been marked invalid"
            )
        account = await self._get("serviceaccounts", namespace, sa_name)
        if account is None or account.get("metadata", {}).get("deletionTimestamp"):
            raise AuthenticationError(f"service account {namespace}/{sa_name} has been deleted")
        actual = account.get("metadata", {}).get("uid", "")
        if actual != sa_uid:
            raise AuthenticationError(
                f"service account UID ({actual}) does not match claim ({sa_uid})"
            )
        return UserInfo(
            name=service_account_username(namespace, sa_name),
            uid=sa_uid,
            groups=(*service_account_groups(namespace), SYSTEM_AUTHENTICATED),
        )
