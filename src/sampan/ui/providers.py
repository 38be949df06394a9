"""Where the UI's users log in and which clusters they see: the two ways it is served.

``ManagerProvider`` (served by the manager, ``--manager``): login posts the user's name and
password to the manager's ``/v3-public/localProviders/local?action=login`` and keeps the
manager token it answers (with the token's TTL); clusters are the manager's ``/v3/clusters``
as that user sees them; cluster ``<id>`` is reached at ``<manager>/k8s/clusters/<id>`` with
the user's own token, so the manager's RBAC and then the downstream's decide; logout revokes
the token (``/v3/tokens?action=logout``).

``TokenProvider`` (the single-cluster dashboard, ``--dashboard``): login takes a bearer token
(a service account token, as the Kubernetes Dashboard does), checks it with a
``SelfSubjectReview`` on the local API server (the answer's user name is the session's name;
an invalid token is the API server's 401); there is one cluster, ``local``, reached at the API
server's URL with that token.

Both give the app the same thing per cluster: a ``Target`` (base URL + bearer token).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from sampan.ui.kube import Kube, KubeError, Target

__all__ = [
    "ClusterRow",
    "LoginFailed",
    "LoginResult",
    "ManagerProvider",
    "Provider",
    "TokenProvider",
]

LOGIN_TTL_MS = 12 * 3600 * 1000
LOCAL = "local"


class LoginFailed(Exception):
    """Wrong credentials (or the login backend refused): its message is shown on the form."""


@dataclass(frozen=True)
class LoginResult:
    user: str
    token: str = field(repr=False)
    ttl_s: float | None = None


@dataclass
class ClusterRow:
    id: str
    name: str
    connected: bool
    ready: bool
    version: str = ""
    nodes: int = 0
    cpu: str = ""
    memory: str = ""
    registration: dict[str, str] = field(default_factory=dict)


class Provider(Protocol):
    multi_cluster: bool
    login_kind: str
    """``password`` (user name + password) or ``token`` (bearer token)."""

    async def login(self, kube: Kube, username: str, secret: str) -> LoginResult: ...

    async def logout(self, kube: Kube, token: str) -> None: ...

    async def must_change_password(self, kube: Kube, token: str) -> bool: ...

    async def change_password(self, kube: Kube, token: str, current: str, new: str) -> None:
        """Raises ``LoginFailed`` with the backend's reason when refused."""

    async def clusters(self, kube: Kube, token: str, host: str = "") -> list[ClusterRow]:
        """``host``: the ``Host`` the browser used (the manager names it in import commands)."""

    async def create_cluster(self, kube: Kube, token: str, name: str, host: str = "") -> None:
        """Raises ``KubeError`` with the backend's reason when refused."""

    def target(self, cluster: str, token: str) -> Target: ...


def _condition(view: dict[str, Any], kind: str) -> bool:
    return any(
        c.get("type") == kind and c.get("status") == "True" for c in view.get("conditions") or []
    )


class ManagerProvider:
    multi_cluster = True
    login_kind = "password"

    def __init__(self, base: Callable[[], str]) -> None:
        """``base()``: the manager's own HTTPS URL as this process reaches it (loopback)."""
        self._base = base

    async def login(self, kube: Kube, username: str, secret: str) -> LoginResult:
        body = json.dumps(
            {
                "username": username,
                "password": secret,
                "ttl": LOGIN_TTL_MS,
                "description": "sampan web UI",
            }
        ).encode()
        try:
            answer = await kube.request(
                Target(self._base(), ""),
                "POST",
                "/v3-public/localProviders/local",
                query={"action": "login"},
                body=body,
            )
        except KubeError as exc:
            if exc.status in (400, 401, 403, 422, 429):
                raise LoginFailed(exc.message) from None
            raise
        token = str(answer.get("token") or "")
        if not token:
            raise LoginFailed("the manager answered no token")
        ttl_ms = answer.get("ttl") or LOGIN_TTL_MS
        return LoginResult(user=username, token=token, ttl_s=float(ttl_ms) / 1000)

    async def logout(self, kube: Kube, token: str) -> None:
        await kube.request(
            Target(self._base(), token), "POST", "/v3/tokens", query={"action": "logout"}
        )

    async def must_change_password(self, kube: Kube, token: str) -> bool:
        answer = await kube.get(Target(self._base(), token), "/v3/users", me="true")
        return any(u.get("mustChangePassword") for u in answer.get("data") or [])

    async def change_password(self, kube: Kube, token: str, current: str, new: str) -> None:
        body = json.dumps({"currentPassword": current, "newPassword": new}).encode()
        try:
            await kube.request(
                Target(self._base(), token),
                "POST",
                "/v3/users",
                query={"action": "changepassword"},
                body=body,
            )
        except KubeError as exc:
            if 400 <= exc.status < 500:
                raise LoginFailed(exc.message) from None
            raise

    async def create_cluster(self, kube: Kube, token: str, name: str, host: str = "") -> None:
        await kube.request(
            Target(self._base(), token),
            "POST",
            "/v3/clusters",
            body=json.dumps({"type": "cluster", "name": name}).encode(),
            host=host or None,
        )

    async def clusters(self, kube: Kube, token: str, host: str = "") -> list[ClusterRow]:
        answer = await kube.request(
            Target(self._base(), token), "GET", "/v3/clusters", host=host or None
        )
        rows = []
        for view in answer.get("data") or []:
            registration = view.get("registration") or {}
            rows.append(
                ClusterRow(
                    id=str(view.get("id")),
                    name=str(view.get("name") or view.get("id")),
                    connected=_condition(view, "Connected"),
                    ready=_condition(view, "Ready"),
                    version=str(view.get("version") or ""),
                    nodes=int(view.get("nodeCount") or 0),
                    registration={
                        k: str(v)
                        for k, v in registration.items()
                        if k.lower().endswith("command") and isinstance(v, str)
                    },
                )
            )
        return rows

    def target(self, cluster: str, token: str) -> Target:
        return Target(f"{self._base()}/k8s/clusters/{cluster}", token)


class TokenProvider:
    multi_cluster = False
    login_kind = "token"

    def __init__(self, api_url: str) -> None:
        self._api_url = api_url

    async def login(self, kube: Kube, username: str, secret: str) -> LoginResult:
        del username
        token = secret.strip()
        if not token or any(c.isspace() for c in token):
            raise LoginFailed("enter a bearer token (a service account token)")
        review = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
        try:
            answer = await kube.request(
                Target(self._api_url, token),
                "POST",
                "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                body=json.dumps(review).encode(),
            )
        except KubeError as exc:
            if exc.status in (401, 403):
                raise LoginFailed(f"the API server refused this token: {exc.message}") from None
            raise
        user = ((answer.get("status") or {}).get("userInfo") or {}).get("username") or "?"
        return LoginResult(user=str(user), token=token)

    async def logout(self, kube: Kube, token: str) -> None:
        del kube, token

    async def must_change_password(self, kube: Kube, token: str) -> bool:
        del kube, token
        return False

    async def change_password(self, kube: Kube, token: str, current: str, new: str) -> None:
        del kube, token, current, new
        raise LoginFailed("a service account token has no password")

    async def create_cluster(self, kube: Kube, token: str, name: str, host: str = "") -> None:
        del kube, token, name, host
        raise KubeError(404, "the single-cluster dashboard imports no clusters", "NotFound")

    async def clusters(self, kube: Kube, token: str, host: str = "") -> list[ClusterRow]:
        del host
        target = self.target(LOCAL, token)
        row = ClusterRow(id=LOCAL, name=LOCAL, connected=True, ready=False)
        try:
            version = await kube.get(target, "/version")
            row.version = str(version.get("gitVersion") or "")
            row.ready = True
        except KubeError:
            row.connected = False
        return [row]

    def target(self, cluster: str, token: str) -> Target:
        del cluster
        return Target(self._api_url, token)
