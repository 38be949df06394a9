"""The manager's HTTPS API: Rancher's ``/v3`` paths, authenticated by manager tokens.

Unauthenticated:

* ``GET /ping`` -> ``pong``; ``GET /cacerts`` -> the CA PEM (agents compare its SHA-256 with
  ``SAMPAN_CA_CHECKSUM``);
* ``POST /v3-public/localProviders/local?action=login`` ``{username, password, ttl,
  description}`` -> 201 with ``token: "token-xxxxx:<secret>"`` (``ttl`` in milliseconds; 0 or
  absent: ``DEFAULT_TOKEN_TTL_MS``);
* ``GET /v3/import/<token>_<cluster>.yaml``: the import manifest; the registration token in
  the path is the credential (unknown token or cluster: 404; expired: 401);
* ``GET /v3/connect``: the cluster agents' tunnel (``sampan.manager.clusters``; the
  registration token is the credential, a wrong or expired one is 401).

Everything else under ``/v3`` needs ``Authorization: Bearer token-xxxxx:<secret>`` (or Basic
with the two halves as user and password, as Rancher's API keys): 401 without or with a bad,
expired or revoked token. While the user must change their password, only
``POST /v3/users?action=changepassword``, ``POST /v3/tokens?action=logout`` and
``GET /v3/users?me=true`` answer; everything else is 403.

RBAC: a user with the global role ``admin`` manages clusters, users, tokens and bindings. Any
other user sees the clusters they hold a ClusterRoleTemplateBinding on (``GET /v3/clusters``
lists only those; any other cluster id is 403), their own user, tokens and bindings; a
``cluster-owner`` on a cluster also sees its registration commands.

Cluster access (``sampan.manager.proxy``):

* ``POST /v3/clusters/<id>?action=generateKubeconfig`` (Rancher's action; ``GET`` also
  answers) (anyone who sees the cluster) -> 200
  ``{"type": "generateKubeConfigOutput", "config": "<kubeconfig YAML>"}``: server
  ``https://<manager>/k8s/clusters/<id>``, the manager's CA, and a new Token of the caller
  (``KUBECONFIG_TOKEN_TTL_MS``);
* ``/k8s/clusters/<id>/<path>`` (any method, upgrades included): the same token
  authentication, then the manager's RBAC (an admin reaches every cluster, another user only
  the clusters they are bound to: 403, never forwarded; an admin naming an unknown cluster:
  404), then forwarded to the downstream API server as ``Impersonate-User: <user id>``.
  Errors here are Kubernetes ``Status`` bodies, which kubectl shows.

Tokens, Users, the admin role, cluster bindings and Clusters are read from the manager's
watch-backed caches (``sampan.manager.cache``) when it gives them (a proxied request then reads
none of them from the API); what the manager writes or deletes itself is seen at once.

Every other error is Rancher's API error body ``{"type": "error", "baseType": "error", "status",
"code", "message"}`` with the HTTP status it names.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from sampan.api.errors import Forbidden, NotFound, StatusError, Unauthorized
from sampan.api.names import is_dns1123_subdomain
from sampan.client import AlreadyExistsError, ApiError, Client, NotFoundError, Resource
from sampan.manager import credentials, store
from sampan.manager.cache import ManagerObjects
from sampan.manager.clusters import ImportedClusters
from sampan.manager.crds import (
    ADMIN_ROLE,
    CLUSTER_ROLE_TEMPLATE_BINDINGS,
    CLUSTERS,
    GLOBAL_ROLE_BINDINGS,
    GROUP,
    LABEL_CLUSTER,
    LABEL_USER_ID,
    LOCAL_CLUSTER,
    REGISTRATION_TOKENS,
    ROLE_TEMPLATES,
    TOKENS,
    USER_ROLE,
    USERS,
    VERSION,
)
from sampan.manager.manifest import import_manifest, kubeconfig, registration_commands
from sampan.manager.proxy import ClusterProxy, status_response
from sampan.manager.store import ManagerError, Principal
from sampan.manager.tunnel.ca import CACERTS_PATH, cacerts_handler

__all__ = ["ManagerAPI", "error_response"]

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1 << 20
KUBECONFIG_TOKEN_TTL_MS = 30 * 24 * 3600 * 1000
"""Tokens of generated kubeconfigs last 30 days (Rancher's kubeconfig-default-token-ttl)."""
IMPERSONATED_GROUPS = ("system:authenticated",)
"""The groups a manager user has downstream (its id is the user name)."""
PROXY_PREFIX = "/k8s/clusters/"
NAME_MAX_CHARS = 253


def error_response(status: int, code: str, message: str, **headers: str) -> web.Response:
    body = {
        "type": "error",
        "baseType": "error",
        "status": status,
        "code": code,
        "message": message,
    }
    return web.json_response(body, status=status, headers=headers or None)


@dataclass(frozen=True)
class _Route:
    method: str
    path: str
    handler: Callable[..., Awaitable[web.StreamResponse]]


def _api_version() -> str:
    return f"{GROUP}/{VERSION}"


def _collection(resource_type: str, data: list[dict[str, Any]]) -> web.Response:
    return web.json_response({"type": "collection", "resourceType": resource_type, "data": data})


def _condition(cluster: dict[str, Any], kind: str) -> bool:
    for condition in (cluster.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind:
            return bool(condition.get("status") == "True")
    return False


class ManagerAPI:
    """The aiohttp application; ``client`` talks to the local cluster as the manager."""

    def __init__(
        self,
        client: Client,
        *,
        ca_pem: bytes,
        agent_version: str,
        manager_url: str = "",
        clusters: ImportedClusters | None = None,
        proxy: ClusterProxy | None = None,
        bindings_changed: Callable[[], None] | None = None,
        objects: ManagerObjects | None = None,
    ) -> None:
        self._client = client
        self._objects = objects
        """Watch-backed caches: authentication and RBAC of a request read memory."""
        self._clusters = clusters
        self._proxy = proxy
        self._bindings_changed = bindings_changed or (lambda: None)
        self._ca_pem = ca_pem
        self._agent_version = agent_version
        self._manager_url = manager_url.rstrip("/")
        self._unknown_users = store.UnknownUserLockout()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[self._errors])
        app.router.add_get("/ping", self._ping)
        app.router.add_get(CACERTS_PATH, cacerts_handler(self._ca_pem))
        app.router.add_post("/v3-public/localProviders/local", self._login)
        app.router.add_get("/v3/import/{file}", self._import)
        if self._clusters is not None:
            self._clusters.tunnels.add_routes(app)
        if self._proxy is not None:
            app.router.add_route("*", PROXY_PREFIX + "{cluster}", self._cluster_proxy)
            app.router.add_route("*", PROXY_PREFIX + "{cluster}/{path:.*}", self._cluster_proxy)
        private = [
            _Route("POST", "/v3/tokens", self._tokens_action),
            _Route("GET", "/v3/tokens", self._list_tokens),
            _Route("GET", "/v3/tokens/{id}", self._get_token),
            _Route("DELETE", "/v3/tokens/{id}", self._delete_token),
            _Route("GET", "/v3/users", self._list_users),
            _Route("POST", "/v3/users", self._users_post),
            _Route("GET", "/v3/users/{id}", self._get_user),
            _Route("POST", "/v3/users/{id}", self._user_action),
            _Route("DELETE", "/v3/users/{id}", self._delete_user),
            _Route("GET", "/v3/clusters", self._list_clusters),
            _Route("POST", "/v3/clusters", self._create_cluster),
            _Route("GET", "/v3/clusters/{id}", self._get_cluster),
            _Route("PUT", "/v3/clusters/{id}", self._update_cluster),
            _Route("POST", "/v3/clusters/{id}", self._cluster_action),
            _Route("DELETE", "/v3/clusters/{id}", self._delete_cluster),
            _Route("GET", "/v3/globalrolebindings", self._list_grbs),
            _Route("POST", "/v3/globalrolebindings", self._create_grb),
            _Route("DELETE", "/v3/globalrolebindings/{id}", self._delete_grb),
            _Route("GET", "/v3/clusterroletemplatebindings", self._list_crtbs),
            _Route("POST", "/v3/clusterroletemplatebindings", self._create_crtb),
            _Route("DELETE", "/v3/clusterroletemplatebindings/{id}", self._delete_crtb),
            _Route("GET", "/v3/roletemplates", self._list_role_templates),
        ]
        for route in private:
            app.router.add_route(route.method, route.path, self._authenticated(route.handler))
        return app

    # -- plumbing ----------------------------------------------------------------------

    @web.middleware
    async def _errors(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            response: web.StreamResponse = await handler(request)
            return response
        except ManagerError as exc:
            headers = {}
            if exc.retry_after_s is not None:
                headers["Retry-After"] = str(exc.retry_after_s)
            return error_response(exc.status, exc.code, exc.message, **headers)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            code = {404: "NotFound", 405: "MethodNotAllowed", 413: "RequestEntityTooLarge"}.get(
                exc.status, "InvalidAction"
            )
            return error_response(exc.status, code, exc.reason)
        except ApiError as exc:
            log.warning("manager: %s %s: local API answered %s", request.method, request.path, exc)
            return error_response(502, "ServerError", f"local cluster API: {exc.message}")

    def _authenticated(
        self, handler: Callable[[web.Request, Principal], Awaitable[web.StreamResponse]]
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def run(request: web.Request) -> web.StreamResponse:
            principal = await store.authenticate(
                self._client, _presented_token(request), self._objects
            )
            if principal.must_change_password and not _allowed_before_change(request):
                raise ManagerError(
                    403,
                    "PermissionDenied",
                    "password change required: POST /v3/users?action=changepassword",
                )
            return await handler(request, principal)

        return run

    def _url(self, request: web.Request) -> str:
        return self._manager_url or f"https://{request.host}"

    # -- public ------------------------------------------------------------------------

    async def _ping(self, request: web.Request) -> web.Response:
        return web.Response(text="pong")

    async def _login(self, request: web.Request) -> web.Response:
        if request.query.get("action") != "login":
            raise ManagerError(404, "NotFound", "unknown action")
        body = await _json_body(request)
        username = _string(body, "username", required=True)
        password = _string(body, "password", required=True)
        ttl_ms = body.get("ttl", 0)
        if isinstance(ttl_ms, bool) or not isinstance(ttl_ms, int) or ttl_ms < 0:
            raise ManagerError(422, "InvalidFormat", "ttl must be a non-negative integer (ms)")
        ttl_ms = min(ttl_ms or store.DEFAULT_TOKEN_TTL_MS, store.MAX_TOKEN_TTL_MS)
        description = _string(body, "description")
        token, presented, user = await store.login(
            self._client, username, password, ttl_ms, description, unknown=self._unknown_users
        )
        answer = {
            **self._token_view(token),
            "token": presented,
            "mustChangePassword": bool(user["spec"].get("mustChangePassword")),
        }
        return web.json_response(answer, status=201)

    async def _import(self, request: web.Request) -> web.Response:
        file = request.match_info["file"]
        if not file.endswith(".yaml") or "_" not in file:
            raise ManagerError(404, "NotFound", "not found")
        token, _, cluster = file.removesuffix(".yaml").rpartition("_")
        registration = await self._registration(cluster)
        spec = (registration or {}).get("spec", {})
        if registration is None or not credentials.token_secret_matches(
            credentials.hash_token_secret(str(spec.get("token", ""))), token
        ):
            raise ManagerError(404, "NotFound", "not found")
        if store.token_expired(registration):
            raise ManagerError(401, "Unauthorized", "registration token expired")
        manifest = import_manifest(
            manager_url=self._url(request),
            token=token,
            cluster=cluster,
            ca_pem=self._ca_pem,
            agent_version=self._agent_version,
        )
        return web.Response(text=manifest, content_type="application/yaml")

    # -- tokens ------------------------------------------------------------------------

    def _token_view(self, token: dict[str, Any]) -> dict[str, Any]:
        spec = token.get("spec", {})
        return {
            "type": "token",
            "id": token["metadata"]["name"],
            "name": token["metadata"]["name"],
            "userId": spec.get("userId"),
            "authProvider": spec.get("authProvider"),
            "description": spec.get("description", ""),
            "ttl": spec.get("ttlMillis"),
            "expiresAt": spec.get("expiresAt"),
            "expired": store.token_expired(token),
            "created": token["metadata"].get("creationTimestamp"),
        }

    async def _tokens_action(self, request: web.Request, who: Principal) -> web.Response:
        if request.query.get("action") != "logout":
            raise ManagerError(405, "MethodNotAllowed", "POST /v3/tokens takes ?action=logout")
        await self._delete_quietly(TOKENS, who.token["metadata"]["name"])
        return web.json_response({})

    async def _list_tokens(self, request: web.Request, who: Principal) -> web.Response:
        selector = None if who.admin else f"{LABEL_USER_ID}={who.user_id}"
        tokens = (await self._client.list_all(TOKENS, label_selector=selector)).get("items", [])
        if not who.admin:
            tokens = [t for t in tokens if t["spec"].get("userId") == who.user_id]
        return _collection("token", [self._token_view(t) for t in tokens])

    async def _get_or_404(self, resource: Resource, name: str, what: str) -> dict[str, Any]:
        """The object, or the manager's 404 naming it as ``what`` (its API type)."""
        try:
            return await self._client.get(resource, name)
        except NotFoundError:
            raise ManagerError(404, "NotFound", f"{what} {name} not found") from None

    async def _own_token(self, request: web.Request, who: Principal) -> dict[str, Any]:
        name = request.match_info["id"]
        token = await self._get_or_404(TOKENS, name, "token")
        if not who.admin and token["spec"].get("userId") != who.user_id:
            raise ManagerError(403, "PermissionDenied", f"token {name}: not yours")
        return token

    async def _get_token(self, request: web.Request, who: Principal) -> web.Response:
        return web.json_response(self._token_view(await self._own_token(request, who)))

    async def _delete_token(self, request: web.Request, who: Principal) -> web.Response:
        token = await self._own_token(request, who)
        await self._delete_quietly(TOKENS, token["metadata"]["name"])
        return web.json_response(self._token_view(token))

    # -- users -------------------------------------------------------------------------

    async def _user_view(self, user: dict[str, Any]) -> dict[str, Any]:
        spec, status = user.get("spec", {}), user.get("status") or {}
        return {
            "type": "user",
            "id": user["metadata"]["name"],
            "username": spec.get("username"),
            "name": spec.get("displayName", ""),
            "description": spec.get("description", ""),
            "enabled": spec.get("enabled", True),
            "mustChangePassword": bool(spec.get("mustChangePassword")),
            "admin": await store.is_admin(self._client, user["metadata"]["name"]),
            "lockedUntil": status.get("lockedUntil"),
            "lastLogin": status.get("lastLogin"),
            "created": user["metadata"].get("creationTimestamp"),
        }

    async def _list_users(self, request: web.Request, who: Principal) -> web.Response:
        if request.query.get("me") == "true" or not who.admin:
            return _collection("user", [await self._user_view(who.user)])
        users = (await self._client.list_all(USERS)).get("items", [])
        return _collection("user", [await self._user_view(u) for u in users])

    async def _users_post(self, request: web.Request, who: Principal) -> web.Response:
        action = request.query.get("action")
        body = await _json_body(request)
        if action == "changepassword":
            current = _string(body, "currentPassword", required=True)
            new = _string(body, "newPassword", required=True)
            if not await credentials.check_password(who.user["spec"].get("passwordHash"), current):
                raise ManagerError(403, "PermissionDenied", "current password is not correct")
            if new == current:
                raise ManagerError(
                    422, "InvalidBodyContent", "new password must differ from the current one"
                )
            store.check_password_policy(new, who.user["spec"]["username"])
            user = await store.set_password(self._client, who.user_id, new, must_change=False)
            if self._objects is not None:
                self._objects.wrote(USERS, user)
            return web.json_response(await self._user_view(user))
        if action is not None:
            raise ManagerError(404, "NotFound", f"unknown action {action!r}")
        _need_admin(who)
        user = await store.create_user(
            self._client,
            _string(body, "username", required=True),
            _string(body, "password", required=True),
            must_change=bool(body.get("mustChangePassword", False)),
            display=_string(body, "name"),
        )
        return web.json_response(await self._user_view(user), status=201)

    async def _find_user(self, request: web.Request, who: Principal) -> dict[str, Any]:
        name = request.match_info["id"]
        if not who.admin and name != who.user_id:
            raise ManagerError(403, "PermissionDenied", f"user {name}: not allowed")
        return await self._get_or_404(USERS, name, "user")

    async def _get_user(self, request: web.Request, who: Principal) -> web.Response:
        return web.json_response(await self._user_view(await self._find_user(request, who)))

    async def _user_action(self, request: web.Request, who: Principal) -> web.Response:
        action = request.query.get("action")
        if action != "setpassword":
            raise ManagerError(404, "NotFound", f"unknown action {action!r}")
        _need_admin(who)
        user = await self._find_user(request, who)
        body = await _json_body(request)
        new = _string(body, "newPassword", required=True)
        store.check_password_policy(new, user["spec"]["username"])
        must_change = bool(body.get("mustChangePassword", False))
        user = await store.set_password(
            self._client, user["metadata"]["name"], new, must_change=must_change
        )
        if self._objects is not None:
            self._objects.wrote(USERS, user)
        return web.json_response(await self._user_view(user))

    async def _delete_user(self, request: web.Request, who: Principal) -> web.Response:
        _need_admin(who)
        user = await self._find_user(request, who)
        name = user["metadata"]["name"]
        if name == who.user_id:
            raise ManagerError(422, "InvalidAction", "you cannot delete yourself")
        view = await self._user_view(user)
        await store.delete_user_tokens(self._client, name)
        for resource in (GLOBAL_ROLE_BINDINGS, CLUSTER_ROLE_TEMPLATE_BINDINGS):
            for binding in (await self._client.list_all(resource)).get("items", []):
                if binding["spec"].get("userId") == name:
                    await self._delete_quietly(resource, binding["metadata"]["name"])
        await self._delete_quietly(USERS, name)
        self._bindings_changed()
        return web.json_response(view)

    # -- clusters ----------------------------------------------------------------------

    async def _registration(self, cluster: str) -> dict[str, Any] | None:
        if not cluster or len(cluster) > NAME_MAX_CHARS:
            return None
        try:
            return await self._client.get(REGISTRATION_TOKENS, f"crt-{cluster}")
        except NotFoundError:
            return None

    async def _cluster_view(
        self, request: web.Request, cluster: dict[str, Any], *, registration: bool
    ) -> dict[str, Any]:
        spec, status = cluster.get("spec", {}), cluster.get("status") or {}
        name = cluster["metadata"]["name"]
        ready = _condition(cluster, "Ready")
        view: dict[str, Any] = {
            "type": "cluster",
            "id": name,
            "name": spec.get("displayName", name),
            "description": spec.get("description", ""),
            "internal": bool(spec.get("internal")),
            "state": "active" if ready else "pending",
            "conditions": status.get("conditions", []),
            "version": status.get("version", ""),
            "nodeCount": status.get("nodeCount", 0),
            "capacity": status.get("capacity", {}),
            "allocatable": status.get("allocatable", {}),
            "agentVersion": status.get("agentVersion", ""),
            "lastHeartbeat": status.get("lastHeartbeat"),
            "created": cluster["metadata"].get("creationTimestamp"),
        }
        if registration and not spec.get("internal"):
            token = await self._registration(name)
            if token is not None:
                view["registration"] = {
                    **registration_commands(
                        self._url(request), token["spec"]["token"], name, self._ca_pem
                    ),
                    "token": token["spec"]["token"],
                    "expiresAt": token["spec"].get("expiresAt"),
                }
        return view

    async def _visible(
        self, who: Principal, wanted: str | None = None
    ) -> dict[str, set[str]] | None:
        """None: every cluster (admin); else cluster -> role templates held there. From the
        cache when it grants the cluster ``wanted``, else read (a binding made a moment ago
        may not be cached yet)."""
        if who.admin:
            return None
        if wanted is not None and self._objects is not None:
            cached = self._objects.bound_clusters(who.user_id)
            if cached is not None and wanted in cached:
                return cached
        return await store.bound_cluster_names(self._client, who.user_id)

    async def _list_clusters(self, request: web.Request, who: Principal) -> web.Response:
        visible = await self._visible(who)
        clusters = (await self._client.list_all(CLUSTERS)).get("items", [])
        data = []
        for cluster in clusters:
            name = cluster["metadata"]["name"]
            if visible is None or name in visible:
                owner = visible is None or "cluster-owner" in visible[name]
                data.append(await self._cluster_view(request, cluster, registration=owner))
        return _collection("cluster", data)

    async def _find_cluster(
        self, request: web.Request, who: Principal
    ) -> tuple[dict[str, Any], bool]:
        """The cluster of the path and whether the caller owns it (admin or cluster-owner);
        403 for a cluster the caller is not bound to, whether it exists or not."""
        name = request.match_info["id"]
        visible = await self._visible(who, name)
        if visible is not None and name not in visible:
            raise ManagerError(403, "PermissionDenied", f"cluster {name}: not allowed")
        cluster = await self._get_or_404(CLUSTERS, name, "cluster")
        return cluster, visible is None or "cluster-owner" in visible[name]

    async def _get_cluster(self, request: web.Request, who: Principal) -> web.Response:
        if request.query.get("action") == "generateKubeconfig":
            return await self._cluster_action(request, who)
        cluster, owner = await self._find_cluster(request, who)
        return web.json_response(await self._cluster_view(request, cluster, registration=owner))

    async def _create_cluster(self, request: web.Request, who: Principal) -> web.Response:
        _need_admin(who)
        body = await _json_body(request)
        display = _string(body, "name", required=True)
        if len(display) > NAME_MAX_CHARS:
            raise ManagerError(422, "MaxLengthExceeded", f"name: at most {NAME_MAX_CHARS} chars")
        clusters = (await self._client.list_all(CLUSTERS)).get("items", [])
        if any(c.get("spec", {}).get("displayName") == display for c in clusters):
            raise ManagerError(409, "NotUnique", f"cluster name {display!r} is already in use")
        for _ in range(store.STATUS_RETRIES):
            name = f"c-{credentials.random_suffix(5)}"
            try:
                cluster = await self._client.create(
                    CLUSTERS,
                    {
                        "apiVersion": _api_version(),
                        "kind": "Cluster",
                        "metadata": {"name": name},
                        "spec": {
                            "displayName": display,
                            "description": _string(body, "description"),
                            "internal": False,
                        },
                    },
                )
                break
            except AlreadyExistsError:
                continue
        else:
            raise ManagerError(500, "ServerError", "could not choose a free cluster id")
        owner_ref = {
            "apiVersion": _api_version(),
            "kind": "Cluster",
            "name": name,
            "uid": cluster["metadata"]["uid"],
        }
        await self._client.create(
            REGISTRATION_TOKENS,
            {
                "apiVersion": _api_version(),
                "kind": "ClusterRegistrationToken",
                "metadata": {
                    "name": f"crt-{name}",
                    "labels": {LABEL_CLUSTER: name},
                    "ownerReferences": [owner_ref],
                },
                "spec": {"clusterName": name, "token": credentials.new_token_secret()},
            },
        )
        view = await self._cluster_view(request, cluster, registration=True)
        return web.json_response(view, status=201)

    async def _update_cluster(self, request: web.Request, who: Principal) -> web.Response:
        cluster, owner = await self._find_cluster(request, who)
        if not (who.admin or owner):
            raise ManagerError(403, "PermissionDenied", "only a cluster owner may edit it")
        body = await _json_body(request)
        spec: dict[str, Any] = {}
        if "name" in body:
            spec["displayName"] = _string(body, "name", required=True)
        if "description" in body:
            spec["description"] = _string(body, "description")
        if spec:
            cluster = await self._client.patch(
                CLUSTERS, cluster["metadata"]["name"], {"spec": spec}
            )
        return web.json_response(await self._cluster_view(request, cluster, registration=owner))

    async def _cluster_action(self, request: web.Request, who: Principal) -> web.Response:
        action = request.query.get("action")
        if action != "generateKubeconfig":
            raise ManagerError(404, "NotFound", f"unknown action {action!r}")
        cluster, _ = await self._find_cluster(request, who)
        name = cluster["metadata"]["name"]
        _, presented = await store.create_token(
            self._client, who.user_id, KUBECONFIG_TOKEN_TTL_MS, f"kubeconfig for cluster {name}"
        )
        config = kubeconfig(
            server=f"{self._url(request)}{PROXY_PREFIX}{name}",
            cluster=name,
            user=who.user["spec"].get("username", who.user_id),
            token=presented,
            ca_pem=self._ca_pem,
        )
        return web.json_response(
            {
                "type": "generateKubeConfigOutput",
                "baseType": "generateKubeConfigOutput",
                "config": config,
            }
        )

    async def _cluster_proxy(self, request: web.Request) -> web.StreamResponse:
        """``/k8s/clusters/<id>/...``: see the module docstring."""
        assert self._proxy is not None
        name = request.match_info["cluster"]
        prefix = f"{PROXY_PREFIX}{name}"
        raw = request.raw_path
        rest = raw[len(prefix) :] if raw.startswith(prefix) else None
        if rest is None or is_dns1123_subdomain(name) or rest[:1] not in ("", "/", "?"):
            # An id that is no object name (or was spelled with escapes) names no cluster.
            return status_response(NotFound(f'clusters.{GROUP} "{name}" not found', name=name))
        target = rest if rest.startswith("/") else "/" + rest
        try:
            try:
                who = await store.authenticate(
                    self._client, _presented_token(request), self._objects
                )
            except ManagerError:
                raise Unauthorized("Unauthorized") from None
            if who.must_change_password:
                raise Forbidden(f"user {who.user_id} must change their password first")
            visible = await self._visible(who, name)
            if visible is not None and name not in visible:
                raise Forbidden(f'user "{who.user_id}" may not access cluster "{name}"')
            if self._objects is None or self._objects.cluster(name) is None:
                try:
                    await self._client.get(CLUSTERS, name)
                except NotFoundError:
                    raise NotFound(f'clusters.{GROUP} "{name}" not found', name=name) from None
        except StatusError as exc:
            return status_response(exc)
        return await self._proxy.forward(request, name, target, who.user_id, IMPERSONATED_GROUPS)

    async def _delete_cluster(self, request: web.Request, who: Principal) -> web.Response:
        _need_admin(who)
        cluster, _ = await self._find_cluster(request, who)
        name = cluster["metadata"]["name"]
        if cluster["spec"].get("internal") or name == LOCAL_CLUSTER:
            raise ManagerError(422, "InvalidAction", "the local cluster cannot be deleted")
        view = await self._cluster_view(request, cluster, registration=False)
        await self._delete_quietly(REGISTRATION_TOKENS, f"crt-{name}")
        if self._clusters is not None:  # after the token: the agent cannot reconnect
            view["agentRemoved"] = await self._clusters.remove_agent(name)
        for binding in (await self._client.list_all(CLUSTER_ROLE_TEMPLATE_BINDINGS))["items"]:
            if binding["spec"].get("clusterName") == name:
                await self._delete_quietly(
                    CLUSTER_ROLE_TEMPLATE_BINDINGS, binding["metadata"]["name"]
                )
        await self._delete_quietly(CLUSTERS, name)
        self._bindings_changed()
        return web.json_response(view)

    # -- bindings ----------------------------------------------------------------------

    @staticmethod
    def _binding_view(binding: dict[str, Any], kind: str) -> dict[str, Any]:
        return {
            "type": kind,
            "id": binding["metadata"]["name"],
            **binding.get("spec", {}),
            "created": binding["metadata"].get("creationTimestamp"),
        }

    async def _list_grbs(self, request: web.Request, who: Principal) -> web.Response:
        items = (await self._client.list_all(GLOBAL_ROLE_BINDINGS)).get("items", [])
        if not who.admin:
            items = [b for b in items if b["spec"].get("userId") == who.user_id]
        return _collection(
            "globalRoleBinding", [self._binding_view(b, "globalRoleBinding") for b in items]
        )

    async def _user_exists(self, user_id: str) -> None:
        try:
            await self._client.get(USERS, user_id)
        except NotFoundError:
            raise ManagerError(
                422, "InvalidReference", f"userId: user {user_id} not found"
            ) from None

    async def _create_grb(self, request: web.Request, who: Principal) -> web.Response:
        _need_admin(who)
        body = await _json_body(request)
        user_id = _string(body, "userId", required=True)
        role = _string(body, "globalRoleName", required=True)
        if role not in (ADMIN_ROLE, USER_ROLE):
            raise ManagerError(
                422, "InvalidOption", f"globalRoleName must be {ADMIN_ROLE} or {USER_ROLE}"
            )
        await self._user_exists(user_id)
        binding = await self._create_named(
            GLOBAL_ROLE_BINDINGS,
            "grb-",
            "GlobalRoleBinding",
            {LABEL_USER_ID: user_id},
            {"userId": user_id, "globalRoleName": role},
        )
        self._bindings_changed()
        return web.json_response(self._binding_view(binding, "globalRoleBinding"), status=201)

    async def _delete_grb(self, request: web.Request, who: Principal) -> web.Response:
        _need_admin(who)
        name = request.match_info["id"]
        binding = await self._get_or_404(GLOBAL_ROLE_BINDINGS, name, "globalRoleBinding")
        if (
            binding["spec"].get("userId") == who.user_id
            and binding["spec"].get("globalRoleName") == ADMIN_ROLE
        ):
            raise ManagerError(422, "InvalidAction", "you cannot remove your own admin role")
        await self._delete_quietly(GLOBAL_ROLE_BINDINGS, name)
        self._bindings_changed()
        return web.json_response(self._binding_view(binding, "globalRoleBinding"))

    async def _list_crtbs(self, request: web.Request, who: Principal) -> web.Response:
        items = (await self._client.list_all(CLUSTER_ROLE_TEMPLATE_BINDINGS)).get("items", [])
        if not who.admin:
            items = [b for b in items if b["spec"].get("userId") == who.user_id]
        cluster = request.query.get("clusterId")
        if cluster:
            items = [b for b in items if b["spec"].get("clusterName") == cluster]
        kind = "clusterRoleTemplateBinding"
        return _collection(kind, [self._binding_view(b, kind) for b in items])

    async def _create_crtb(self, request: web.Request, who: Principal) -> web.Response:
        _need_admin(who)
        body = await _json_body(request)
        user_id = _string(body, "userId", required=True)
        cluster = _string(body, "clusterId", required=True)
        template = _string(body, "roleTemplateId", required=True)
        await self._user_exists(user_id)
        for resource, name, what in (
            (CLUSTERS, cluster, "clusterId: cluster"),
            (ROLE_TEMPLATES, template, "roleTemplateId: role template"),
        ):
            try:
                await self._client.get(resource, name)
            except NotFoundError:
                raise ManagerError(422, "InvalidReference", f"{what} {name} not found") from None
        binding = await self._create_named(
            CLUSTER_ROLE_TEMPLATE_BINDINGS,
            "crtb-",
            "ClusterRoleTemplateBinding",
            {LABEL_USER_ID: user_id, LABEL_CLUSTER: cluster},
            {"userId": user_id, "clusterName": cluster, "roleTemplateName": template},
        )
        kind = "clusterRoleTemplateBinding"
        self._bindings_changed()
        return web.json_response(self._binding_view(binding, kind), status=201)

    async def _delete_crtb(self, request: web.Request, who: Principal) -> web.Response:
        _need_admin(who)
        name = request.match_info["id"]
        binding = await self._get_or_404(
            CLUSTER_ROLE_TEMPLATE_BINDINGS, name, "clusterRoleTemplateBinding"
        )
        await self._delete_quietly(CLUSTER_ROLE_TEMPLATE_BINDINGS, name)
        self._bindings_changed()
        return web.json_response(self._binding_view(binding, "clusterRoleTemplateBinding"))

    async def _list_role_templates(self, request: web.Request, who: Principal) -> web.Response:
        items = (await self._client.list_all(ROLE_TEMPLATES)).get("items", [])
        return _collection(
            "roleTemplate",
            [
                {"type": "roleTemplate", "id": t["metadata"]["name"], **t.get("spec", {})}
                for t in items
            ],
        )

    # -- helpers -----------------------------------------------------------------------

    async def _create_named(
        self, resource: Any, prefix: str, kind: str, labels: dict[str, str], spec: dict[str, Any]
    ) -> dict[str, Any]:
        for _ in range(store.STATUS_RETRIES):
            try:
                return await self._client.create(
                    resource,
                    {
                        "apiVersion": _api_version(),
                        "kind": kind,
                        "metadata": {
                            "name": f"{prefix}{credentials.random_suffix(5)}",
                            "labels": labels,
                        },
                        "spec": spec,
                    },
                )
            except AlreadyExistsError:
                continue
        raise ManagerError(500, "ServerError", "could not choose a free name")

    async def _delete_quietly(self, resource: Any, name: str) -> None:
        try:
            await self._client.delete(resource, name)
        except NotFoundError:
            pass
        if self._objects is not None:
            self._objects.deleted(resource, name)


def _need_admin(who: Principal) -> None:
    if not who.admin:
        raise ManagerError(403, "PermissionDenied", "only an admin may do this")


def _allowed_before_change(request: web.Request) -> bool:
    """What a user who must change their password may still do."""
    action = request.query.get("action")
    if request.method == "POST" and request.path == "/v3/users" and action == "changepassword":
        return True
    if request.method == "POST" and request.path == "/v3/tokens" and action == "logout":
        return True
    return (
        request.method == "GET"
        and request.path == "/v3/users"
        and request.query.get("me") == "true"
    )


def _presented_token(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return ""
    return ""


async def _json_body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw:
        return {}
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ManagerError(422, "InvalidBodyContent", "body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ManagerError(422, "InvalidBodyContent", "body must be a JSON object")
    return body


def _string(body: dict[str, Any], field: str, *, required: bool = False) -> str:
    value = body.get(field)
    if value is None or value == "":
        if required:
            raise ManagerError(422, "MissingRequired", f"{field}: required")
        return ""
    if not isinstance(value, str):
        raise ManagerError(422, "InvalidFormat", f"{field}: must be a string")
    return value
