"""The manager's reads and writes of its own objects, through the local cluster's API.

Owns the rules that outlive one HTTP request:

* CRDs installed (created or updated) and served before anything else; built-in
  RoleTemplates written at every start; the ``local`` Cluster created once and its status
  refreshed from the local API (node count, version, capacity/allocatable, ``/readyz``).
* The bootstrap admin is the User ``u-admin`` (fixed name: when several servers start at
  once, exactly one creates it, and only that one prints the password), bound to the global
  role ``admin`` by the GlobalRoleBinding ``grb-u-admin``. Its password is random, shown once,
  stored only as an argon2id hash; ``mustChangePassword`` is set, as Rancher does.
* Logins: ``LOCKOUT_FAILURES`` failed passwords in a row lock a user for ``LOCKOUT_S``
  (counted in the User's status, so every server and a restart see them); a locked user is
  refused without the password being checked; a good password resets the count.
* Tokens: ``token-<5 chars>``; the client gets ``<name>:<secret>`` once; the object keeps the
  secret's SHA-256, the user id (also as the label ``LABEL_USER_ID``) and ``expiresAt``. An
  expired token is deleted when presented and by ``delete_expired_tokens``.

Errors: ``ManagerError`` (and subclasses) carry an HTTP status and a Rancher API error code;
the HTTP layer turns them into ``{"type": "error", "status", "code", "message"}``.
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sampan.api import times
from sampan.api.quantity import format_quantity, parse_quantity
from sampan.client import (
    AlreadyExistsError,
    Client,
    ClientError,
    ConflictError,
    NotFoundError,
    Resource,
)
from sampan.client.crds import ensure_crds as install_crds
from sampan.manager import credentials
from sampan.manager.crds import (
    ADMIN_ROLE,
    ALL,
    CLUSTER_ROLE_TEMPLATE_BINDINGS,
    CLUSTERS,
    GLOBAL_ROLE_BINDINGS,
    GROUP,
    LABEL_USER_ID,
    LABEL_USERNAME,
    LOCAL_CLUSTER,
    ROLE_TEMPLATES,
    TOKENS,
    USERS,
    VERSION,
    builtin_role_templates,
    manager_crds,
)

__all__ = [
    "BOOTSTRAP_ADMIN",
    "DEFAULT_TOKEN_TTL_MS",
    "LOCKOUT_FAILURES",
    "LOCKOUT_S",
    "MAX_TOKEN_TTL_MS",
    "CachedObjects",
    "ManagerError",
    "Principal",
    "UnknownUserLockout",
    "authenticate",
    "bound_cluster_names",
    "create_token",
    "delete_expired_tokens",
    "delete_user_tokens",
    "ensure_bootstrap_admin",
    "ensure_builtins",
    "ensure_crds",
    "is_admin",
    "login",
    "parse_time",
    "refresh_local_cluster",
    "reset_admin",
    "set_password",
]

log = logging.getLogger(__name__)

BOOTSTRAP_ADMIN = "u-admin"
BOOTSTRAP_USERNAME = "admin"
LOCKOUT_FAILURES = 5
"""Failed logins in a row that lock a user."""
LOCKOUT_S = 600.0
"""How long a lockout lasts (10 minutes)."""
DEFAULT_TOKEN_TTL_MS = 16 * 3600 * 1000
"""Rancher's ``auth-user-session-ttl-minutes`` default: 960 minutes."""
MAX_TOKEN_TTL_MS = 90 * 24 * 3600 * 1000
STATUS_RETRIES = 5
CORE_NODES = Resource("", "v1", "nodes", "Node", False)
USERNAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$")


class ManagerError(Exception):
    """An answer the manager's API gives with ``status`` and Rancher's ``code``."""

    def __init__(
        self, status: int, code: str, message: str, *, retry_after_s: int | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s
        """Sent as ``Retry-After`` (a 429 of the lockout)."""


def now() -> datetime:
    return datetime.now(UTC)


format_time = times.rfc3339
parse_time = times.parse


def _api_version() -> str:
    return f"{GROUP}/{VERSION}"


# -- installation -------------------------------------------------------------------------


async def ensure_crds(client: Client) -> None:
    """Create or update the CRDs, then wait until every kind is served."""
    await install_crds(client, manager_crds(), ALL)


async def _create_or_update_spec(client: Client, resource: Any, body: dict[str, Any]) -> None:
    try:
        await client.create(resource, body)
    except AlreadyExistsError:
        current = await client.get(resource, body["metadata"]["name"])
        if current.get("spec") != body["spec"]:
            await client.patch(resource, body["metadata"]["name"], {"spec": body["spec"]})


async def ensure_builtins(client: Client) -> None:
    """The built-in RoleTemplates (rewritten if edited) and the ``local`` Cluster."""
    for template in builtin_role_templates():
        await _create_or_update_spec(client, ROLE_TEMPLATES, template)
    try:
        await client.create(
            CLUSTERS,
            {
                "apiVersion": _api_version(),
                "kind": "Cluster",
                "metadata": {"name": LOCAL_CLUSTER},
                "spec": {
                    "displayName": LOCAL_CLUSTER,
                    "description": "The cluster the manager runs in",
                    "internal": True,
                },
            },
        )
    except AlreadyExistsError:
        pass


def _condition(kind: str, ok: bool, reason: str, message: str = "") -> dict[str, Any]:
    return {
        "type": kind,
        "status": "True" if ok else "False",
        "reason": reason,
        "message": message,
        "lastUpdateTime": format_time(now()),
    }


def merge_conditions(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep ``lastTransitionTime`` unless the status changed."""
    previous = {c.get("type"): c for c in old}
    merged = []
    for condition in new:
        before = previous.get(condition["type"])
        if before is not None and before.get("status") == condition["status"]:
            stamp = before.get("lastTransitionTime") or condition["lastUpdateTime"]
        else:
            stamp = condition["lastUpdateTime"]
        merged.append({**condition, "lastTransitionTime": stamp})
    return merged


def _sum_quantities(nodes: list[dict[str, Any]], field: str) -> dict[str, str]:
    """Add the nodes' ``cpu``, ``memory`` and ``pods`` (as Kubernetes quantities)."""
    totals: dict[str, Any] = {}
    for node in nodes:
        for key, value in (node.get("status", {}).get(field) or {}).items():
            if key not in ("cpu", "memory", "pods"):
                continue
            try:
                totals[key] = totals.get(key, 0) + parse_quantity(value)
            except (ValueError, TypeError):
                continue
    return {key: format_quantity(total) for key, total in totals.items()}


async def refresh_local_cluster(client: Client) -> None:
    """The ``local`` Cluster's status from the local API: it is always Connected (no
    tunnel); Ready follows ``/readyz``; node count, version and resources from the Nodes."""
    try:
        await client.request_text("/readyz")
        ready, reason = True, "ReadyzOK"
    except (ClientError, OSError, ValueError) as exc:  # any failure means not ready
        ready, reason = False, f"ReadyzFailed: {type(exc).__name__}"
    version = await client.request("GET", "/version")
    nodes = (await client.list_all(CORE_NODES)).get("items", [])
    current = await client.get(CLUSTERS, LOCAL_CLUSTER)
    status = current.get("status") or {}
    conditions = merge_conditions(
        status.get("conditions") or [],
        [_condition("Connected", True, "Local"), _condition("Ready", ready, reason)],
    )
    await client.patch(
        CLUSTERS,
        LOCAL_CLUSTER,
        {
            "status": {
                "conditions": conditions,
                "version": (version or {}).get("gitVersion", ""),
                "nodeCount": len(nodes),
                "capacity": _sum_quantities(nodes, "capacity"),
                "allocatable": _sum_quantities(nodes, "allocatable"),
                "agentVersion": "",
                "lastHeartbeat": format_time(now()),
            }
        },
        subresource="status",
    )


# -- users -------------------------------------------------------------------------------


def _user_body(
    name: str, username: str, password_hash: str, *, must_change: bool, display: str = ""
) -> dict[str, Any]:
    return {
        "apiVersion": _api_version(),
        "kind": "User",
        "metadata": {"name": name, "labels": {LABEL_USERNAME: username}},
        "spec": {
            "username": username,
            "displayName": display or username,
            "passwordHash": password_hash,
            "mustChangePassword": must_change,
            "enabled": True,
        },
    }


def _global_binding(user_id: str, role: str) -> dict[str, Any]:
    return {
        "apiVersion": _api_version(),
        "kind": "GlobalRoleBinding",
        "metadata": {"name": f"grb-{user_id}", "labels": {LABEL_USER_ID: user_id}},
        "spec": {"userId": user_id, "globalRoleName": role},
    }


async def ensure_bootstrap_admin(client: Client) -> str | None:
    """Create the admin user if it does not exist; return its new password (else None)."""
    try:
        await client.get(USERS, BOOTSTRAP_ADMIN)
        exists = True
    except NotFoundError:
        exists = False
    if exists:
        await _ensure(client, GLOBAL_ROLE_BINDINGS, _global_binding(BOOTSTRAP_ADMIN, ADMIN_ROLE))
        return None
    password = credentials.new_password()
    body = _user_body(
        BOOTSTRAP_ADMIN,
        BOOTSTRAP_USERNAME,
        await credentials.hash_password(password),
        must_change=True,
        display="Default Admin",
    )
    try:
        await client.create(USERS, body)
    except AlreadyExistsError:
        password = ""
    await _ensure(client, GLOBAL_ROLE_BINDINGS, _global_binding(BOOTSTRAP_ADMIN, ADMIN_ROLE))
    return password or None


async def _ensure(client: Client, resource: Resource, body: dict[str, Any]) -> None:
    try:
        await client.create(resource, body)
    except AlreadyExistsError:
        pass


async def create_user(
    client: Client, username: str, password: str, *, must_change: bool, display: str = ""
) -> dict[str, Any]:
    """A new local user (global role ``user``); 409 if the username is taken."""
    if not USERNAME_RE.match(username):
        raise ManagerError(
            422,
            "InvalidFormat",
            "username must be 1-63 letters, digits, '.', '_' or '-', "
            "starting and ending with a letter or digit",
        )
    check_password_policy(password, username)
    taken = await client.list(USERS, label_selector=f"{LABEL_USERNAME}={username}")
    if taken.get("items"):
        raise ManagerError(409, "NotUnique", f"username {username!r} is already in use")
    password_hash = await credentials.hash_password(password)
    for _ in range(STATUS_RETRIES):
        name = f"u-{credentials.random_suffix(10)}"
        try:
            user = await client.create(
                USERS,
                _user_body(name, username, password_hash, must_change=must_change, display=display),
            )
        except AlreadyExistsError:
            continue
        await client.create(GLOBAL_ROLE_BINDINGS, _global_binding(name, "user"))
        return user
    raise ManagerError(500, "ServerError", "could not choose a free user id")


def check_password_policy(password: str, username: str) -> None:
    if len(password) < credentials.MIN_PASSWORD_LENGTH:
        raise ManagerError(
            422,
            "InvalidBodyContent",
            f"password must be at least {credentials.MIN_PASSWORD_LENGTH} characters",
        )
    if password == username:
        raise ManagerError(422, "InvalidBodyContent", "password cannot be the same as username")


async def set_password(
    client: Client, user_id: str, password: str, *, must_change: bool
) -> dict[str, Any]:
    """A new password hash; the lockout is cleared."""
    password_hash = await credentials.hash_password(password)
    user = await client.patch(
        USERS,
        user_id,
        {"spec": {"passwordHash": password_hash, "mustChangePassword": must_change}},
    )
    await client.patch(
        USERS, user_id, {"status": {"failedLogins": 0, "lockedUntil": None}}, subresource="status"
    )
    return user


async def reset_admin(client: Client) -> str:
    """RancherD's ``reset-admin``: a new random password for the bootstrap admin (created if
    missing, bound to ``admin`` again if unbound), lockout cleared, its tokens revoked, and a
    password change required at the next login. Returns the password."""
    password = await ensure_bootstrap_admin(client)
    if password is not None:
        return password
    password = credentials.new_password()
    await set_password(client, BOOTSTRAP_ADMIN, password, must_change=True)
    await client.patch(USERS, BOOTSTRAP_ADMIN, {"spec": {"enabled": True}})
    await delete_user_tokens(client, BOOTSTRAP_ADMIN)
    return password


# -- tokens and logins -------------------------------------------------------------------


@dataclass(frozen=True)
class Principal:
    """Who is calling: the User object, the Token it presented, and its global role."""

    user: dict[str, Any]
    token: dict[str, Any]
    admin: bool

    @property
    def user_id(self) -> str:
        return str(self.user["metadata"]["name"])

    @property
    def must_change_password(self) -> bool:
        return bool(self.user.get("spec", {}).get("mustChangePassword"))


async def create_token(
    client: Client, user_id: str, ttl_ms: int, description: str = ""
) -> tuple[dict[str, Any], str]:
    """A new Token for ``user_id``; returns it and ``<name>:<secret>`` (shown once)."""
    secret = credentials.new_token_secret()
    expires = now() + timedelta(milliseconds=ttl_ms)
    for _ in range(STATUS_RETRIES):
        name = f"token-{credentials.random_suffix(5)}"
        body = {
            "apiVersion": _api_version(),
            "kind": "Token",
            "metadata": {"name": name, "labels": {LABEL_USER_ID: user_id}},
            "spec": {
                "userId": user_id,
                "hash": credentials.hash_token_secret(secret),
                "authProvider": "local",
                "description": description,
                "ttlMillis": ttl_ms,
                "expiresAt": format_time(expires),
            },
        }
        try:
            token = await client.create(TOKENS, body)
        except AlreadyExistsError:
            continue
        return token, f"{name}:{secret}"
    raise ManagerError(500, "ServerError", "could not choose a free token name")


def token_expired(token: dict[str, Any]) -> bool:
    expires = parse_time(token.get("spec", {}).get("expiresAt"))
    return expires is not None and expires <= now()


async def _delete_quietly(client: Client, resource: Any, name: str) -> None:
    try:
        await client.delete(resource, name)
    except NotFoundError:
        pass


async def delete_user_tokens(client: Client, user_id: str) -> None:
    await client.delete_collection(TOKENS, label_selector=f"{LABEL_USER_ID}={user_id}")


async def delete_expired_tokens(client: Client) -> int:
    tokens = (await client.list_all(TOKENS)).get("items", [])
    expired = [t["metadata"]["name"] for t in tokens if token_expired(t)]
    for name in expired:
        await _delete_quietly(client, TOKENS, name)
    return len(expired)


async def is_admin(client: Client, user_id: str) -> bool:
    bindings = (await client.list_all(GLOBAL_ROLE_BINDINGS)).get("items", [])
    return any(
        b.get("spec", {}).get("userId") == user_id
        and b.get("spec", {}).get("globalRoleName") == ADMIN_ROLE
        for b in bindings
    )


async def bound_cluster_names(client: Client, user_id: str) -> dict[str, set[str]]:
    """Cluster name -> the role templates ``user_id`` holds there."""
    bindings = (await client.list_all(CLUSTER_ROLE_TEMPLATE_BINDINGS)).get("items", [])
    bound: dict[str, set[str]] = {}
    for binding in bindings:
        spec = binding.get("spec", {})
        if spec.get("userId") == user_id:
            bound.setdefault(spec.get("clusterName", ""), set()).add(
                spec.get("roleTemplateName", "")
            )
    return bound


_UNAUTHORIZED = ManagerError(401, "Unauthorized", "must authenticate")


class CachedObjects(Protocol):
    """What ``authenticate`` reads from memory when it can (``sampan.manager.cache``); each
    lookup answers ``None`` when it does not know, and then the API is read."""

    def token(self, name: str) -> dict[str, Any] | None: ...

    def user(self, name: str) -> dict[str, Any] | None: ...

    def is_admin(self, user_id: str) -> bool | None: ...


async def authenticate(
    client: Client, presented: str, objects: CachedObjects | None = None
) -> Principal:
    """The Principal behind ``token-xxxxx:secret``; 401 for anything else. With ``objects``,
    the Token, User and admin role come from its caches when they know them."""
    name, sep, secret = presented.partition(":")
    if not sep or not name.startswith("token-") or not secret:
        raise _UNAUTHORIZED
    token = objects.token(name) if objects is not None else None
    if token is None:
        try:
            token = await client.get(TOKENS, name)
        except NotFoundError:
            raise _UNAUTHORIZED from None
    spec = token.get("spec", {})
    if not credentials.token_secret_matches(str(spec.get("hash", "")), secret):
        raise _UNAUTHORIZED
    if token_expired(token):
        await _delete_quietly(client, TOKENS, name)
        raise _UNAUTHORIZED
    user_id = str(spec.get("userId", ""))
    user = objects.user(user_id) if objects is not None else None
    if user is None:
        try:
            user = await client.get(USERS, user_id)
        except NotFoundError:
            raise _UNAUTHORIZED from None
    if user.get("spec", {}).get("enabled") is False:
        raise _UNAUTHORIZED
    admin = objects.is_admin(user_id) if objects is not None else None
    if admin is None:
        admin = await is_admin(client, user_id)
    return Principal(user=user, token=token, admin=admin)


async def _find_user(client: Client, username: str) -> dict[str, Any] | None:
    if not USERNAME_RE.match(username):
        return None
    found = await client.list(USERS, label_selector=f"{LABEL_USERNAME}={username}")
    items = [u for u in found.get("items", []) if u.get("spec", {}).get("username") == username]
    return items[0] if items else None


def _locked_for_s(user: dict[str, Any]) -> float:
    until = parse_time((user.get("status") or {}).get("lockedUntil"))
    return max(0.0, (until - now()).total_seconds()) if until else 0.0


async def _record_failure(client: Client, user: dict[str, Any]) -> None:
    """Count one failed login; the ``LOCKOUT_FAILURES``-th locks the user. The write carries
    the resourceVersion read, so concurrent failures cannot both count as one."""
    for _ in range(STATUS_RETRIES):
        failures = int((user.get("status") or {}).get("failedLogins") or 0) + 1
        status: dict[str, Any] = {"failedLogins": failures}
        if failures >= LOCKOUT_FAILURES:
            status = {
                "failedLogins": 0,
                "lockedUntil": format_time(now() + timedelta(seconds=LOCKOUT_S)),
            }
            log.warning(
                "manager: user %s locked for %ds after %d failed logins",
                user["metadata"]["name"],
                LOCKOUT_S,
                LOCKOUT_FAILURES,
            )
        patch = {
            "metadata": {"resourceVersion": user["metadata"]["resourceVersion"]},
            "status": status,
        }
        try:
            await client.patch(USERS, user["metadata"]["name"], patch, subresource="status")
            return
        except ConflictError:
            user = await client.get(USERS, user["metadata"]["name"])


class UnknownUserLockout:
    """Failed logins for usernames that do not exist, counted in memory with the same limits,
    so that a 429 does not tell a guesser that a name exists. Bounded to
    ``MAX_UNKNOWN_NAMES`` names (the least recently failed are forgotten first); per process
    (a restart forgets them, which reveals nothing)."""

    MAX_UNKNOWN_NAMES = 10_000

    def __init__(self) -> None:
        self._names: OrderedDict[str, tuple[int, datetime | None]] = OrderedDict()

    def locked_for_s(self, username: str) -> float:
        _, until = self._names.get(username, (0, None))
        return max(0.0, (until - now()).total_seconds()) if until else 0.0

    def failed(self, username: str) -> None:
        failures, _ = self._names.pop(username, (0, None))
        failures += 1
        if failures >= LOCKOUT_FAILURES:
            self._names[username] = (0, now() + timedelta(seconds=LOCKOUT_S))
        else:
            self._names[username] = (failures, None)
        while len(self._names) > self.MAX_UNKNOWN_NAMES:
            self._names.popitem(last=False)


def _locked(locked_s: float) -> ManagerError:
    retry_s = int(locked_s) + 1
    return ManagerError(
        429,
        "TooManyRequests",
        f"too many failed logins: user locked for {retry_s} more seconds",
        retry_after_s=retry_s,
    )


async def login(
    client: Client,
    username: str,
    password: str,
    ttl_ms: int,
    description: str = "",
    *,
    unknown: UnknownUserLockout | None = None,
) -> tuple[dict[str, Any], str, dict[str, Any]]:
    """Check a password; return (Token, ``<name>:<secret>``, User). 401 for a wrong username
    or password (one message for both), 429 while the user (or, with ``unknown``, a name
    that does not exist) is locked out."""
    user = await _find_user(client, username)
    locked_s = _locked_for_s(user) if user is not None else 0.0
    if user is None and unknown is not None:
        locked_s = unknown.locked_for_s(username)
    if locked_s > 0:
        raise _locked(locked_s)
    spec = (user or {}).get("spec", {})
    ok = await credentials.check_password(spec.get("passwordHash") if user else None, password)
    if user is None or not ok or spec.get("enabled") is False:
        if user is not None and not ok:
            await _record_failure(client, user)
        elif user is None and unknown is not None:
            unknown.failed(username)
        raise ManagerError(401, "Unauthorized", "authentication failed")
    name = user["metadata"]["name"]
    token, presented = await create_token(client, name, ttl_ms, description)
    await client.patch(
        USERS,
        name,
        {"status": {"failedLogins": 0, "lockedUntil": None, "lastLogin": format_time(now())}},
        subresource="status",
    )
    return token, presented, user
