"""Who is asking: ``UserInfo``, the well-known user and group names, and the seams
(``TokenLookup``, ``TokenAuthenticator``) authentication plugs into.

Invariant: a ``UserInfo`` produced by authentication always carries ``system:authenticated``;
the anonymous user carries ``system:unauthenticated`` and nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = [
    "ANONYMOUS",
    "ANONYMOUS_USER",
    "SERVICE_ACCOUNT_GROUP",
    "SERVICE_ACCOUNT_USER_PREFIX",
    "SYSTEM_AUTHENTICATED",
    "SYSTEM_MASTERS",
    "SYSTEM_UNAUTHENTICATED",
    "AuthenticationError",
    "TokenAuthenticator",
    "TokenLookup",
    "UserInfo",
    "parse_service_account_username",
    "service_account_groups",
    "service_account_username",
    "with_authenticated_group",
]

SYSTEM_AUTHENTICATED = "system:authenticated"
SYSTEM_UNAUTHENTICATED = "system:unauthenticated"
SYSTEM_MASTERS = "system:masters"
ANONYMOUS_USER = "system:anonymous"
SERVICE_ACCOUNT_USER_PREFIX = "system:serviceaccount:"
SERVICE_ACCOUNT_GROUP = "system:serviceaccounts"


class AuthenticationError(Exception):
    """Credentials were presented and are not valid. The message is for logs and audit;
    clients only ever see ``401 Unauthorized``."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class UserInfo:
    """An authenticated (or anonymous) identity, as ``user.Info`` in Kubernetes."""

    name: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=dict, hash=False)

    def to_dict(self) -> dict[str, Any]:
        """The ``authentication.k8s.io/v1`` UserInfo JSON (SelfSubjectReview, TokenReview);
        empty fields are left out as the Go structs' omitempty does."""
        out: dict[str, Any] = {"username": self.name}
        if self.uid:
            out["uid"] = self.uid
        if self.groups:
            out["groups"] = list(self.groups)
        if self.extra:
            out["extra"] = {key: list(values) for key, values in self.extra.items()}
        return out


ANONYMOUS = UserInfo(name=ANONYMOUS_USER, groups=(SYSTEM_UNAUTHENTICATED,))


def with_authenticated_group(user: UserInfo) -> UserInfo:
    """``user`` with ``system:authenticated`` appended (once)."""
    if SYSTEM_AUTHENTICATED in user.groups:
        return user
    return UserInfo(
        name=user.name, uid=user.uid, groups=(*user.groups, SYSTEM_AUTHENTICATED), extra=user.extra
    )


def service_account_username(namespace: str, name: str) -> str:
    return f"{SERVICE_ACCOUNT_USER_PREFIX}{namespace}:{name}"


def parse_service_account_username(username: str) -> tuple[str, str] | None:
    """(namespace, name) if ``username`` is a service account's user name, else None."""
    if not username.startswith(SERVICE_ACCOUNT_USER_PREFIX):
        return None
    namespace, sep, name = username[len(SERVICE_ACCOUNT_USER_PREFIX) :].partition(":")
    if not sep or not namespace or not name or ":" in name:
        return None
    return namespace, name


def service_account_groups(namespace: str) -> tuple[str, ...]:
    return (SERVICE_ACCOUNT_GROUP, f"{SERVICE_ACCOUNT_GROUP}:{namespace}")


class TokenLookup(Protocol):
    """What authentication needs from the API server: the current object, or None if absent.

    ``resource`` is a core-group plural (``serviceaccounts``, ``pods``, ``secrets``,
    ``nodes``); ``namespace`` is ``""`` for cluster-scoped kinds.
    """

    async def get_object(self, resource: str, namespace: str, name: str) -> dict | None: ...


class TokenAuthenticator(Protocol):
    """One kind of bearer token (service-account JWTs; bootstrap tokens later).

    Return None when the token is not of this kind, so the next authenticator may try it;
    raise ``AuthenticationError`` when it is of this kind and not valid.
    """

    async def authenticate_token(self, token: str) -> UserInfo | None: ...
