"""The UI's aiohttp application (mounted at ``PREFIX`` by the manager or the dashboard).

Pages are rendered on the server from Jinja2 templates with autoescaping on (every name,
label, message and log line reaches the browser as text); htmx posts forms and swaps the
fragments answered; lists update live from a watch relayed as server-sent events
(``.../watch``: one upstream watch per open list, started from the list's resourceVersion, no
polling); logs stream as server-sent events; the exec shell is a WebSocket bridged here to the
API server's exec WebSocket (``v5.channel.k8s.io``, else ``v4``).

Security invariants:

* every page but the login page and static files needs a live session (else: a redirect to
  the login page; htmx requests get ``HX-Redirect``; streams get an ``expired`` event);
* every state-changing request (POST) carries the session's CSRF token (``X-CSRF-Token``
  header, which htmx sends from ``hx-headers``, or the ``csrf_token`` form field) and, when
  the browser sends an ``Origin``, our own origin; a login POST needs the login form's token
  (kept in a short-lived pre-session cookie); the exec WebSocket checks the ``Origin`` and
  takes the CSRF token as its first message;
* the session's credential never leaves the server: not in a page, a URL or a log line;
* ``LOGIN_FAILURES`` failed logins from one address within ``LOGIN_WINDOW_S`` refuse its
  next attempts (429) until the window passes (the manager also locks a user out itself);
* the API server's answer to a refused request (RBAC, validation, server-side apply conflict)
  is shown as it wrote it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import jinja2
import yaml
from aiohttp import web

from sampan.tasks import cancel_and_wait
from sampan.ui import resources as kinds
from sampan.ui.kube import Kube, KubeError, Target
from sampan.ui.providers import LoginFailed, Provider
from sampan.ui.sessions import COOKIE, Session, Sessions

__all__ = ["PREFIX", "UIApp"]

log = logging.getLogger(__name__)

PREFIX = "/dashboard"
FIELD_MANAGER = "sampan-ui"
PRE_COOKIE = "sampan_ui_login"
KEEPALIVE_S = 60.0
CALLER_CHECK_S = 5.0
WATCH_RETRY_S = 5.0
LOGIN_FAILURES = 10
LOGIN_WINDOW_S = 300.0
MAX_TRACKED_CLIENTS = 10_000
LOG_TAIL_LINES = 500
MAX_YAML_BYTES = 1 << 20
EXEC_PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
STATE_CHANGING = ("POST", "PUT", "PATCH", "DELETE")
_SESSION = web.RequestKey("sampan_ui_session", Session)


def _static_dir() -> Path:
    return Path(str(resources.files("sampan.ui") / "static"))


def _yaml_dump(obj: Any) -> str:
    text: str = yaml.safe_dump(
        obj, sort_keys=False, default_flow_style=False, allow_unicode=True, width=1 << 16
    )
    return text


def _clean(obj: dict[str, Any]) -> dict[str, Any]:
    """The object as an editor shows it: no managedFields (server-side apply keeps them)."""
    out = dict(obj)
    meta = dict(out.get("metadata") or {})
    meta.pop("managedFields", None)
    out["metadata"] = meta
    return out


def _mask_secret(obj: dict[str, Any]) -> dict[str, Any]:
    out = dict(obj)
    for key in ("data", "stringData"):
        if isinstance(out.get(key), dict):
            out[key] = {k: "••••••" for k in out[key]}
    return out


class UIApp:
    """See the module docstring. ``kube_ca`` verifies the API server or manager the UI calls."""

    def __init__(self, provider: Provider, kube_ca: bytes | None, *, title: str = "Sampan"):
        self.provider = provider
        self.kube = Kube(kube_ca)
        self.sessions = Sessions()
        self.title = title
        self.env = jinja2.Environment(
            loader=jinja2.PackageLoader("sampan.ui", "templates"),
            autoescape=True,
            undefined=jinja2.ChainableUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.globals.update(prefix=PREFIX, title=title, nav=kinds.NAV, kinds=kinds.BUILTIN)
        self._failures: dict[str, list[float]] = {}
        """Failed login times per client address (``_throttled``)."""

    # -- app ------------------------------------------------------------------------------

    def app(self) -> web.Application:
        """The application to mount at ``PREFIX`` (``add_subapp``)."""
        app = web.Application(middlewares=[self._guard], client_max_size=MAX_YAML_BYTES * 2)
        r = app.router
        r.add_get("/", self._home)
        r.add_get("/login", self._login_page)
        r.add_post("/login", self._login)
        r.add_post("/logout", self._logout)
        r.add_post("/clusters", self._create_cluster)
        r.add_get("/password", self._password_page)
        r.add_post("/password", self._password)
        r.add_static("/static", _static_dir(), append_version=False)
        c = "/c/{cluster}"
        r.add_get(c + "/", self._cluster_home)
        r.add_get(c + "/k/{kind}", self._list)
        r.add_get(c + "/k/{kind}/watch", self._watch)
        r.add_get(c + "/k/{kind}/{ns}/{name}", self._object)
        r.add_post(c + "/k/{kind}/{ns}/{name}/apply", self._apply)
        r.add_post(c + "/k/{kind}/{ns}/{name}/scale", self._scale)
        r.add_post(c + "/k/{kind}/{ns}/{name}/restart", self._restart)
        r.add_post(c + "/k/{kind}/{ns}/{name}/delete", self._delete)
        r.add_get(c + "/k/{kind}/{ns}/{name}/reveal", self._reveal)
        r.add_get(c + "/logs/{ns}/{name}", self._logs_page)
        r.add_get(c + "/logs/{ns}/{name}/stream", self._logs_stream)
        r.add_get(c + "/shell/{ns}/{name}", self._shell_page)
        r.add_get(c + "/shell/{ns}/{name}/ws", self._shell_ws)
        app.on_cleanup.append(self._cleanup)
        return app

    async def _cleanup(self, app: web.Application) -> None:
        del app
        await self.kube.close()

    def root_app(self) -> web.Application:
        """A whole server's app: the UI at ``PREFIX``, ``/`` redirecting to it."""
        root = web.Application()

        async def to_ui(request: web.Request) -> web.Response:
            del request
            raise web.HTTPFound(PREFIX + "/")

        root.router.add_get("/", to_ui)
        root.add_subapp(PREFIX, self.app())
        return root

    # -- plumbing -------------------------------------------------------------------------

    @web.middleware
    async def _guard(self, request: web.Request, handler: Any) -> web.StreamResponse:
        public = request.match_info.route.resource is not None and (
            request.path in (PREFIX + "/login",) or request.path.startswith(PREFIX + "/static/")
        )
        if request.method in STATE_CHANGING and not self._same_origin(request):
            return self._text(403, "cross-origin request refused")
        if public:
            response: web.StreamResponse = await handler(request)
        else:
            session = self.sessions.get(request.cookies.get(COOKIE))
            if session is None:
                return self._to_login(request)
            if request.method in STATE_CHANGING:
                presented = request.headers.get("X-CSRF-Token")
                if presented is None:
                    form = await request.post()
                    presented = str(form.get("csrf_token") or "")
                if not session.csrf_ok(presented):
                    return self._text(403, "missing or wrong CSRF token: reload the page")
            request[_SESSION] = session
            if session.extra.get("must_change") and request.path not in (
                PREFIX + "/password",
                PREFIX + "/logout",
            ):
                if request.headers.get("HX-Request"):
                    return web.Response(headers={"HX-Redirect": PREFIX + "/password"})
                raise web.HTTPFound(PREFIX + "/password")
            response = await handler(request)
        if not response.prepared:
            static = request.path.startswith(PREFIX + "/static/")
            # Pages hold live data: never cached. Static files: revalidated (a cheap 304).
            response.headers.setdefault("Cache-Control", "no-cache" if static else "no-store")
            response.headers.setdefault("X-Content-Type-Options", "nosniff")
            response.headers.setdefault("X-Frame-Options", "DENY")
            response.headers.setdefault("Referrer-Policy", "same-origin")
            response.headers.setdefault(
                "Content-Security-Policy",
                "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
                "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'",
            )
        return response

    @staticmethod
    def _same_origin(request: web.Request) -> bool:
        origin = request.headers.get("Origin")
        if origin is None:
            return True
        return origin == f"{request.scheme}://{request.host}"

    @staticmethod
    def _text(status: int, text: str) -> web.Response:
        return web.Response(status=status, text=text)

    @staticmethod
    def _to_login(request: web.Request) -> web.StreamResponse:
        target = PREFIX + "/login"
        if request.headers.get("HX-Request"):
            return web.Response(status=200, headers={"HX-Redirect": target})
        if request.headers.get("Accept", "").startswith("text/event-stream"):
            return web.Response(status=401, text="session expired")
        raise web.HTTPFound(target)

    def _render(self, template_name: str, status: int = 200, **context: Any) -> web.Response:
        html = self.env.get_template(template_name).render(**context)
        return web.Response(status=status, text=html, content_type="text/html")

    def _page(
        self, request: web.Request, template_name: str, status: int = 200, **context: Any
    ) -> web.Response:
        session: Session = request[_SESSION]
        return self._render(
            template_name,
            status,
            user=session.user,
            csrf=session.csrf,
            multi_cluster=self.provider.multi_cluster,
            **context,
        )

    def _target(self, request: web.Request) -> Target:
        session: Session = request[_SESSION]
        return self.provider.target(request.match_info["cluster"], session.token)

    def _error_page(self, request: web.Request, exc: KubeError, **context: Any) -> web.Response:
        log.info("ui: %s %s: %s %s", request.method, request.path, exc.status, exc.reason)
        return self._page(
            request,
            "error.html",
            status=exc.status if exc.status >= 400 else 502,
            error=exc,
            cluster=request.match_info.get("cluster", ""),
            **context,
        )

    async def _kind(self, request: web.Request) -> kinds.Kind:
        key = request.match_info["kind"]
        kind = kinds.kind_for(key)
        if kind is not None:
            return kind
        if "." not in key:
            raise KubeError(404, f"unknown resource kind {key!r}", "NotFound")
        crd_kind = kinds.BUILTIN["customresourcedefinitions"]
        crd = await self.kube.get(self._target(request), crd_kind.object_path(None, key))
        return kinds.crd_kind(crd)

    # -- login ----------------------------------------------------------------------------

    async def _login_page(
        self, request: web.Request, error: str = "", status: int = 200
    ) -> web.Response:
        token = secrets.token_urlsafe(24)
        response = self._render(
            "login.html",
            status,
            login_kind=self.provider.login_kind,
            csrf=token,
            error=error,
            user=None,
            multi_cluster=self.provider.multi_cluster,
        )
        response.set_cookie(
            PRE_COOKIE,
            token,
            path=PREFIX + "/login",
            secure=True,
            httponly=True,
            samesite="Strict",
            max_age=3600,
        )
        return response

    async def _login(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        expected = request.cookies.get(PRE_COOKIE, "")
        presented = str(form.get("csrf_token") or "")
        if not expected or not secrets.compare_digest(expected, presented):
            return await self._login_page(request, "The login form expired: try again.", 403)
        client = request.remote or ""
        if self._throttled(client):
            return await self._login_page(
                request, "Too many failed logins from your address: wait a few minutes.", 429
            )
        try:
            result = await self.provider.login(
                self.kube, str(form.get("username") or ""), str(form.get("secret") or "")
            )
        except LoginFailed as exc:
            self._failures.setdefault(client, []).append(time.monotonic())
            log.info("ui: failed login from %s", client)
            return await self._login_page(request, str(exc), 401)
        except KubeError as exc:
            return await self._login_page(request, f"Login is unavailable: {exc.message}", 503)
        try:
            must_change = await self.provider.must_change_password(self.kube, result.token)
        except KubeError as exc:
            return await self._login_page(request, f"Login is unavailable: {exc.message}", 503)
        session = self.sessions.create(
            result.user, result.token, ttl_s=result.ttl_s, must_change=must_change
        )
        log.info("ui: %s logged in", result.user)
        response = web.HTTPFound(PREFIX + ("/password" if must_change else "/"))
        response.set_cookie(
            COOKIE, session.id, path=PREFIX, secure=True, httponly=True, samesite="Strict"
        )
        response.del_cookie(PRE_COOKIE, path=PREFIX + "/login")
        raise response

    def _throttled(self, client: str) -> bool:
        """More than ``LOGIN_FAILURES`` failed logins from ``client`` in ``LOGIN_WINDOW_S``."""
        now = time.monotonic()
        if len(self._failures) > MAX_TRACKED_CLIENTS:
            self._failures.clear()
        recent = [t for t in self._failures.get(client, []) if now - t < LOGIN_WINDOW_S]
        if recent:
            self._failures[client] = recent
        else:
            self._failures.pop(client, None)
        return len(recent) >= LOGIN_FAILURES

    async def _logout(self, request: web.Request) -> web.StreamResponse:
        session: Session = request[_SESSION]
        self.sessions.end(session.id)
        with contextlib.suppress(KubeError):
            await self.provider.logout(self.kube, session.token)
        response: web.HTTPException = web.HTTPFound(PREFIX + "/login")
        if request.headers.get("HX-Request"):
            response = web.HTTPOk(headers={"HX-Redirect": PREFIX + "/login"})
        response.del_cookie(COOKIE, path=PREFIX)
        raise response

    async def _password_page(
        self, request: web.Request, error: str = "", status: int = 200
    ) -> web.Response:
        session: Session = request[_SESSION]
        return self._page(
            request,
            "password.html",
            status,
            error=error,
            must_change=bool(session.extra.get("must_change")),
        )

    async def _password(self, request: web.Request) -> web.StreamResponse:
        session: Session = request[_SESSION]
        form = await request.post()
        current, new = str(form.get("current") or ""), str(form.get("new") or "")
        if new != str(form.get("confirm") or ""):
            return await self._password_page(request, "The new passwords differ.", 422)
        try:
            await self.provider.change_password(self.kube, session.token, current, new)
        except LoginFailed as exc:
            return await self._password_page(request, str(exc), 422)
        except KubeError as exc:
            return await self._password_page(request, exc.message, 503)
        session.extra["must_change"] = False
        log.info("ui: %s changed their password", session.user)
        raise web.HTTPFound(PREFIX + "/")

    # -- pages ----------------------------------------------------------------------------

    async def _home(self, request: web.Request) -> web.StreamResponse:
        if not self.provider.multi_cluster:
            raise web.HTTPFound(f"{PREFIX}/c/local/")
        return await self._clusters_page(request)

    async def _clusters_page(
        self, request: web.Request, error: str = "", status: int = 200
    ) -> web.Response:
        session: Session = request[_SESSION]
        try:
            clusters = await self.provider.clusters(self.kube, session.token, request.host)
        except KubeError as exc:
            return self._error_page(request, exc)
        await asyncio.gather(*(self._usage(session, c) for c in clusters if c.connected))
        return self._page(request, "clusters.html", status, clusters=clusters, error=error)

    async def _create_cluster(self, request: web.Request) -> web.StreamResponse:
        session: Session = request[_SESSION]
        form = await request.post()
        name = str(form.get("name") or "").strip()
        try:
            await self.provider.create_cluster(self.kube, session.token, name, request.host)
        except KubeError as exc:
            return await self._clusters_page(request, exc.message, exc.status)
        raise web.HTTPFound(PREFIX + "/")

    async def _usage(self, session: Session, row: Any) -> None:
        """CPU and memory use from metrics.k8s.io (skipped when absent or slow)."""
        target = self.provider.target(row.id, session.token)
        try:
            async with asyncio.timeout(3):
                metrics = await self.kube.get(target, "/apis/metrics.k8s.io/v1beta1/nodes")
                nodes = await self.kube.get(target, "/api/v1/nodes")
        except (KubeError, TimeoutError):
            return
        used_cpu = sum(_cpu(m.get("usage", {}).get("cpu")) for m in metrics.get("items") or [])
        used_mem = sum(_mem(m.get("usage", {}).get("memory")) for m in metrics.get("items") or [])
        cap_cpu = sum(
            _cpu((n.get("status") or {}).get("allocatable", {}).get("cpu"))
            for n in nodes.get("items") or []
        )
        cap_mem = sum(
            _mem((n.get("status") or {}).get("allocatable", {}).get("memory"))
            for n in nodes.get("items") or []
        )
        row.nodes = row.nodes or len(nodes.get("items") or [])
        if cap_cpu:
            row.cpu = f"{used_cpu:.2f} / {cap_cpu:g} cores ({100 * used_cpu / cap_cpu:.0f}%)"
        if cap_mem:
            row.memory = (
                f"{used_mem / 2**30:.1f} / {cap_mem / 2**30:.1f} GiB "
                f"({100 * used_mem / cap_mem:.0f}%)"
            )

    async def _cluster_home(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(f"{PREFIX}/c/{quote(request.match_info['cluster'])}/k/pods")

    async def _list(self, request: web.Request) -> web.StreamResponse:
        ns = request.query.get("ns") or None
        try:
            kind = await self._kind(request)
            target = self._target(request)
            answer = await self.kube.get(target, kind.collection_path(ns))
            namespaces: list[str] = []
            if kind.namespaced:
                with contextlib.suppress(KubeError):
                    nss = await self.kube.get(target, "/api/v1/namespaces")
                    namespaces = [n["metadata"]["name"] for n in nss.get("items") or []]
        except KubeError as exc:
            # Allowed in some namespaces only: offer to name one.
            ns_form = exc.status == 403 and kind_or_none(request) is not None
            return self._error_page(request, exc, ns_form=ns_form, ns=ns or "")
        items = answer.get("items") or []
        if kind.key == "events":
            items = kinds.sort_events(items)
        else:
            items.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
        rv = (answer.get("metadata") or {}).get("resourceVersion", "")
        query = {"rv": rv, **({"ns": ns} if ns else {})}
        return self._page(
            request,
            "list.html",
            cluster=request.match_info["cluster"],
            kind=kind,
            items=items,
            ns=ns or "",
            namespaces=namespaces,
            watch_url=self._watch_url(request.match_info["cluster"], kind, query),
        )

    @staticmethod
    def _watch_url(cluster: str, kind: kinds.Kind, query: dict[str, str]) -> str:
        return f"{PREFIX}/c/{quote(cluster)}/k/{quote(kind.key)}/watch?{urlencode(query)}"

    async def _object(self, request: web.Request) -> web.StreamResponse:
        ns, name = self._ns(request), request.match_info["name"]
        cluster = request.match_info["cluster"]
        try:
            kind = await self._kind(request)
            target = self._target(request)
            obj = await self.kube.get(target, kind.object_path(ns, name))
            pods: list[dict[str, Any]] = []
            watch_url = ""
            selector = kinds.selector_query(obj) if kind.has_pods else None
            pod_query = {"labelSelector": selector} if selector else {}
            if kind.key == "nodes":
                pod_query = {"fieldSelector": f"spec.nodeName={name}"}
            if pod_query:
                answer = await self.kube.get(
                    target, kinds.BUILTIN["pods"].collection_path(ns), **pod_query
                )
                pods = sorted(answer.get("items") or [], key=lambda p: p["metadata"]["name"])
                rv = (answer.get("metadata") or {}).get("resourceVersion", "")
                watch_url = self._watch_url(
                    cluster,
                    kinds.BUILTIN["pods"],
                    {
                        "rv": rv,
                        "ns": ns or "",
                        "sel": selector or "",
                        "node": name if kind.key == "nodes" else "",
                    },
                )
            jobs: list[dict[str, Any]] = []
            if kind.key == "cronjobs":
                answer = await self.kube.get(target, kinds.BUILTIN["jobs"].collection_path(ns))
                uid = obj["metadata"].get("uid")
                jobs = [
                    j
                    for j in answer.get("items") or []
                    if any(o.get("uid") == uid for o in j["metadata"].get("ownerReferences") or [])
                ]
            events: list[dict[str, Any]] = []
            with contextlib.suppress(KubeError):
                answer = await self.kube.get(
                    target,
                    kinds.BUILTIN["events"].collection_path(ns or "default"),
                    fieldSelector=f"involvedObject.name={name}",
                )
                events = kinds.sort_events(answer.get("items") or [])
        except KubeError as exc:
            return self._error_page(request, exc)
        shown = _clean(obj)
        if kind.key == "secrets":
            shown = _mask_secret(shown)
        return self._page(
            request,
            "object.html",
            cluster=cluster,
            kind=kind,
            obj=obj,
            ns=ns or "-",
            name=name,
            yaml_text=_yaml_dump(shown),
            pods=pods,
            pod_kind=kinds.BUILTIN["pods"],
            watch_url=watch_url,
            jobs=jobs,
            job_kind=kinds.BUILTIN["jobs"],
            events=events,
            editable=kind.key != "secrets",
            containers=[c.get("name") for c in (obj.get("spec") or {}).get("containers") or []],
        )

    @staticmethod
    def _ns(request: web.Request) -> str | None:
        ns = request.match_info["ns"]
        return None if ns == "-" else ns

    # -- actions (htmx posts; fragments answered) -----------------------------------------

    def _result(self, ok: bool, message: str, status: int = 200) -> web.Response:
        return self._render("result.html", status, ok=ok, message=message)

    async def _write(
        self,
        request: web.Request,
        method: str,
        done: Callable[[kinds.Kind], str],
        *,
        subresource: str = "",
        patch: Any = None,
        content_type: str = "application/merge-patch+json",
        query: dict[str, Any] | None = None,
    ) -> web.Response:
        """One write to the object the URL names (``subresource`` appended to its path):
        answers the result fragment, ``done(kind)`` or the API server's refusal as is."""
        ns, name = self._ns(request), request.match_info["name"]
        try:
            kind = await self._kind(request)
            await self.kube.request(
                self._target(request),
                method,
                kind.object_path(ns, name) + subresource,
                query=query,
                body=None if patch is None else json.dumps(patch).encode(),
                content_type=content_type,
            )
        except KubeError as exc:
            return self._result(False, exc.message, exc.status)
        return self._result(True, done(kind))

    async def _apply(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        form = await request.post()
        text = str(form.get("yaml") or "")
        try:
            doc = yaml.safe_load(text)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
            return self._result(False, f"Malformed YAML: {line}{exc.problem or exc}", 422)
        except yaml.YAMLError as exc:
            return self._result(False, f"Malformed YAML: {exc}", 422)
        if not isinstance(doc, dict):
            return self._result(False, "Malformed YAML: the document must be a mapping", 422)
        meta = doc.setdefault("metadata", {}) if isinstance(doc.get("metadata", {}), dict) else {}
        meta.pop("managedFields", None)
        meta.pop("resourceVersion", None)
        return await self._write(
            request,
            "PATCH",
            lambda kind: f"Applied {kind.title.rstrip('s')} {name}.",
            patch=doc,
            content_type="application/apply-patch+yaml",
            query={"fieldManager": FIELD_MANAGER, "force": "true" if form.get("force") else None},
        )

    async def _scale(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        form = await request.post()
        try:
            replicas = int(str(form.get("replicas") or ""))
            if replicas < 0:
                raise ValueError
        except ValueError:
            return self._result(False, "replicas: a whole number, 0 or more", 422)
        return await self._write(
            request,
            "PATCH",
            lambda _kind: f"Scaled {name} to {replicas}.",
            subresource="/scale",
            patch={"spec": {"replicas": replicas}},
        )

    async def _restart(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        patch = {
            "spec": {
                "template": {
                    "metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": now}}
                }
            }
        }
        return await self._write(
            request, "PATCH", lambda _kind: f"Restarted {name} (rollout at {now}).", patch=patch
        )

    async def _delete(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        return await self._write(request, "DELETE", lambda _kind: f"Deleted {name}.")

    async def _reveal(self, request: web.Request) -> web.StreamResponse:
        ns, name = self._ns(request), request.match_info["name"]
        try:
            kind = await self._kind(request)
            if kind.key != "secrets":
                raise KubeError(404, "only Secrets have values to reveal", "NotFound")
            obj = await self.kube.get(self._target(request), kind.object_path(ns, name))
        except KubeError as exc:
            return self._result(False, exc.message, exc.status)
        values = {}
        for key, value in (obj.get("data") or {}).items():
            try:
                values[key] = base64.b64decode(value).decode()
            except (ValueError, UnicodeDecodeError):
                values[key] = f"<{len(base64.b64decode(value, validate=False))} binary bytes>"
        return self._render("secret_values.html", values=values)

    # -- live lists (server-sent events) --------------------------------------------------

    async def _sse(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        await response.write(b": live\n\n")  # the head goes out now: the browser sees "open"
        return response

    @staticmethod
    async def _send(response: web.StreamResponse, event: str, data: Any) -> None:
        payload = json.dumps(data, separators=(",", ":"))
        await response.write(f"event: {event}\ndata: {payload}\n\n".encode())

    async def _events_with_keepalive(
        self, source: AsyncIterator[Any], session: Session, request: web.Request
    ) -> AsyncIterator[Any]:
        """``source``'s items; ``None`` after ``KEEPALIVE_S`` of silence (a keep-alive); ends
        when the session ends or, within ``CALLER_CHECK_S``, when the browser has gone (an
        idle watch is not left open upstream for a tab that was closed)."""
        iterator = source.__aiter__()
        pending: asyncio.Task[Any] | None = None
        quiet_since = time.monotonic()
        try:
            while self.sessions.peek(session.id) is not None:
                if pending is None:
                    pending = asyncio.ensure_future(iterator.__anext__())
                done, _ = await asyncio.wait({pending}, timeout=CALLER_CHECK_S)
                if not done:
                    transport = request.transport
                    if transport is None or transport.is_closing():
                        return
                    if time.monotonic() - quiet_since >= KEEPALIVE_S:
                        quiet_since = time.monotonic()
                        yield None
                    continue
                task, pending = pending, None
                quiet_since = time.monotonic()
                try:
                    yield task.result()
                except StopAsyncIteration:
                    return
        finally:
            if pending is not None:
                pending.cancel()
                with contextlib.suppress(BaseException):
                    await pending
            closer = getattr(iterator, "aclose", None)
            if closer is not None:
                with contextlib.suppress(BaseException):
                    await closer()

    async def _watch(self, request: web.Request) -> web.StreamResponse:
        session: Session = request[_SESSION]
        ns = request.query.get("ns") or None
        selector = request.query.get("sel") or None
        node = request.query.get("node") or None
        rv = request.query.get("rv", "")
        try:
            kind = await self._kind(request)
        except KubeError as exc:
            return self._text(exc.status, exc.message)
        target = self._target(request)
        cluster = request.match_info["cluster"]
        response = await self._sse(request)
        rows = self.env.get_template("rows.html").module
        query = {"labelSelector": selector} if selector else {}
        if node:
            query["fieldSelector"] = f"spec.nodeName={node}"
        try:
            while True:
                try:
                    source = self.kube.watch(target, kind.collection_path(ns), rv, **query)
                    async for event in self._events_with_keepalive(source, session, request):
                        if event is None:
                            await response.write(b": keep-alive\n\n")
                            continue
                        obj = event.get("object") or {}
                        meta = obj.get("metadata") or {}
                        rv = meta.get("resourceVersion") or rv
                        if event["type"] == "BOOKMARK":
                            continue
                        uid = meta.get("uid", "")
                        if event["type"] == "DELETED":
                            await self._send(response, "row", {"op": "delete", "id": uid})
                        else:
                            html = str(rows.row(cluster, kind, obj))  # type: ignore[attr-defined]
                            await self._send(
                                response, "row", {"op": "upsert", "id": uid, "html": html}
                            )
                    if self.sessions.peek(session.id) is None:
                        await self._send(response, "expired", {"to": PREFIX + "/login"})
                        return response
                except KubeError as exc:
                    if exc.status in (401, 403, 404):  # refused: retrying would not help
                        await self._send(
                            response, "failure", {"message": exc.message, "final": True}
                        )
                        return response
                    if exc.status != 410:  # unreachable for now: try again a bit later
                        await self._send(response, "failure", {"message": exc.message})
                        await asyncio.sleep(WATCH_RETRY_S)
                        continue
                    # Expired version: list again and send the whole table.
                    answer = await self.kube.get(target, kind.collection_path(ns), **query)
                    rv = (answer.get("metadata") or {}).get("resourceVersion", "")
                    html = "".join(
                        str(rows.row(cluster, kind, o))  # type: ignore[attr-defined]
                        for o in answer.get("items") or []
                    )
                    await self._send(response, "reset", {"html": html})
        except (ConnectionResetError, asyncio.CancelledError, KubeError):
            pass
        return response

    # -- logs -----------------------------------------------------------------------------

    async def _pod_stream_page(
        self,
        request: web.Request,
        template_name: str,
        *,
        endpoint: str,
        with_init_containers: bool,
        **context: Any,
    ) -> web.StreamResponse:
        """The logs and shell pages of a pod (``<page>.html``, served at ``.../<page>/{ns}/
        {name}``): the containers to choose from (init containers first when
        ``with_init_containers``), the one chosen (query ``container``, else the first main
        container) and ``stream_url``, the page's ``endpoint`` for that container. A pod the
        API refuses answers the error page."""
        ns, name = request.match_info["ns"], request.match_info["name"]
        try:
            pod = await self.kube.get(
                self._target(request), kinds.BUILTIN["pods"].object_path(ns, name)
            )
        except KubeError as exc:
            return self._error_page(request, exc)
        spec = pod.get("spec") or {}
        main = [c["name"] for c in spec.get("containers") or []]
        init = [c["name"] for c in spec.get("initContainers") or []]
        containers = (init if with_init_containers else []) + main
        container = request.query.get("container") or (main[0] if main else "")
        page = template_name.removesuffix(".html")
        stream_url = (
            f"{PREFIX}/c/{quote(request.match_info['cluster'])}/{page}/{quote(ns)}/"
            f"{quote(name)}/{endpoint}?" + urlencode({"container": container})
        )
        return self._page(
            request,
            template_name,
            cluster=request.match_info["cluster"],
            ns=ns,
            name=name,
            containers=containers,
            container=container,
            stream_url=stream_url,
            pod_kind=kinds.BUILTIN["pods"],
            **context,
        )

    async def _logs_page(self, request: web.Request) -> web.StreamResponse:
        return await self._pod_stream_page(
            request, "logs.html", endpoint="stream", with_init_containers=True, tail=LOG_TAIL_LINES
        )

    async def _logs_stream(self, request: web.Request) -> web.StreamResponse:
        session: Session = request[_SESSION]
        ns, name = request.match_info["ns"], request.match_info["name"]
        query = {
            "container": request.query.get("container") or None,
            "follow": "true",
            "tailLines": str(LOG_TAIL_LINES),
        }
        response = await self._sse(request)
        path = kinds.BUILTIN["pods"].object_path(ns, name) + "/log"
        try:
            source = self.kube.stream_lines(self._target(request), path, **query)
            async for line in self._events_with_keepalive(source, session, request):
                if line is None:
                    await response.write(b": keep-alive\n\n")
                    continue
                await self._send(response, "lines", [line])
            await self._send(response, "end", {})
        except KubeError as exc:
            with contextlib.suppress(ConnectionResetError):
                await self._send(response, "failure", {"message": exc.message})
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return response

    # -- exec shell -----------------------------------------------------------------------

    async def _shell_page(self, request: web.Request) -> web.StreamResponse:
        # Only main containers: an init container has ended before the pod runs.
        return await self._pod_stream_page(
            request, "shell.html", endpoint="ws", with_init_containers=False
        )

    async def _shell_ws(self, request: web.Request) -> web.StreamResponse:
        session: Session = request[_SESSION]
        origin = request.headers.get("Origin")
        if origin is not None and origin != f"{request.scheme}://{request.host}":
            return self._text(403, "cross-origin WebSocket refused")
        browser = web.WebSocketResponse(heartbeat=30, max_msg_size=1 << 20)
        await browser.prepare(request)
        try:
            first = await asyncio.wait_for(browser.receive(), timeout=10)
            hello = json.loads(first.data) if first.type == aiohttp.WSMsgType.TEXT else {}
        except (TimeoutError, ValueError):
            hello = {}
        if not session.csrf_ok(str(hello.get("csrf") or "")):
            await browser.close(code=4403, message=b"missing or wrong CSRF token")
            return browser
        ns, name = request.match_info["ns"], request.match_info["name"]
        query = (
            [("container", request.query.get("container", ""))]
            if request.query.get("container")
            else []
        )
        query += [("stdin", "true"), ("stdout", "true"), ("tty", "true")]
        command = ["/bin/sh", "-c", "command -v bash >/dev/null && exec bash || exec sh"]
        query += [("command", c) for c in command]
        cols, rows = int(hello.get("cols") or 80), int(hello.get("rows") or 24)
        try:
            upstream = await self.kube.websocket(
                self._target(request),
                kinds.BUILTIN["pods"].object_path(ns, name) + "/exec",
                query,
                EXEC_PROTOCOLS,
            )
        except KubeError as exc:
            await browser.send_json({"error": exc.message})
            await browser.close()
            return browser
        try:
            await upstream.send_bytes(
                b"\x04" + json.dumps({"Width": cols, "Height": rows}).encode()
            )
            await _splice(browser, upstream)
        finally:
            await upstream.close()
            await browser.close()
        return browser


async def _splice(browser: web.WebSocketResponse, upstream: Any) -> None:
    async def down() -> None:
        async for msg in upstream:
            if msg.type != aiohttp.WSMsgType.BINARY or not msg.data:
                continue
            channel, data = msg.data[0], msg.data[1:]
            if channel in (1, 2):
                await browser.send_bytes(data)
            elif channel == 3:
                status = json.loads(data or b"{}")
                if status.get("status") != "Success":
                    await browser.send_json({"exit": status.get("message", "")})
                else:
                    await browser.send_json({"exit": ""})
                return

    async def up() -> None:
        async for msg in browser:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            try:
                doc = json.loads(msg.data)
            except ValueError:
                continue
            if "i" in doc:
                await upstream.send_bytes(b"\x00" + str(doc["i"]).encode())
            elif "r" in doc:
                cols, rows = doc["r"]
                await upstream.send_bytes(
                    b"\x04" + json.dumps({"Width": int(cols), "Height": int(rows)}).encode()
                )

    tasks = [asyncio.ensure_future(down()), asyncio.ensure_future(up())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        await cancel_and_wait(*tasks)


def kind_or_none(request: web.Request) -> kinds.Kind | None:
    """The built-in namespaced kind of the request's path, if it is one."""
    kind = kinds.kind_for(request.match_info.get("kind", ""))
    return kind if kind is not None and kind.namespaced else None


def _cpu(value: Any) -> float:
    text = str(value or "0")
    scale = {"n": 1e-9, "u": 1e-6, "m": 1e-3}
    if text and text[-1] in scale:
        return float(text[:-1] or 0) * scale[text[-1]]
    try:
        return float(text)
    except ValueError:
        return 0.0


def _mem(value: Any) -> float:
    text = str(value or "0")
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9}
    for suffix, size in units.items():
        if text.endswith(suffix):
            try:
                return float(text[: -len(suffix)]) * size
            except ValueError:
                return 0.0
    try:
        return float(text)
    except ValueError:
        return 0.0
