"""The manager's end of the tunnels: the agents' connect endpoint, one session per cluster,
and dialing downstream through them.

``TunnelServer`` owns:

* the aiohttp handler for ``GET /v3/connect`` (``CONNECT_PATH``). The agent sends its
  registration token as ``Authorization: Bearer <token>`` and its cluster's name in
  ``X-Sampan-Cluster``; the manager's ``authenticate(token, cluster_name)`` callback (sync or
  async) answers the cluster id, or ``None`` — then the answer is ``401`` with a Kubernetes
  ``Status`` body and nothing is upgraded. The token never appears in a log line;
* the cluster params the agent sends at connect (``X-Sampan-Cluster-Params``: base64 of a
  JSON object of strings — ``address`` of its API server, ``caCert``, its service account's
  ``token``), kept in ``TunnelState.params`` for the proxy and out of every log line and repr;
* the session table: one live session per cluster id. A new connection for a cluster replaces
  (closes) the old one, and the old one's end never marks the cluster disconnected;
* the observable state (``state()``/``states()``, ``TunnelState``): connected or not, since
  when, last heartbeat (the agent's pings, or its pongs to the manager's own pings), open
  streams, why the last session ended; ``on_change(state)`` is called on every connect and
  disconnect (not per heartbeat: read ``last_heartbeat`` when needed). A silent agent is
  detected by the WebSocket heartbeat: the manager pings every ``heartbeat_s`` and closes a
  session whose pong has not come back within half of that;
* dialing: ``dial()`` (asyncio streams, optionally TLS end to end), ``open_stream()`` (a raw
  transport, for byte splicing) and ``connector()`` (an aiohttp connector whose every
  connection is a tunnel stream, so an ordinary ``aiohttp.ClientSession`` — keep-alive,
  streaming bodies, watches, WebSocket upgrades — runs over the tunnel unchanged).

Failures while dialing are ``NotConnected`` (no session), ``DialError``/``DialTimeout`` (the
agent refused or could not connect) and, later, ``StreamReset`` (the stream or the whole
tunnel broke); see ``errors``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import inspect
import json
import logging
import ssl as ssl_module
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.client_proto import ResponseHandler

from sampan.api.errors import BadRequest, InternalError, StatusError, Unauthorized
from sampan.manager.tunnel import frames
from sampan.manager.tunnel.errors import NotConnected, TunnelConnectError, TunnelError
from sampan.manager.tunnel.session import (
    DEFAULT_DIAL_TIMEOUT_S,
    Session,
    Stream,
    open_connection,
    start_tls,
)
from sampan.tasks import log_task_end

__all__ = [
    "AGENT_VERSION_HEADER",
    "CLUSTER_HEADER",
    "CLUSTER_PARAMS_HEADER",
    "CONNECT_PATH",
    "Authenticator",
    "TunnelConnector",
    "TunnelServer",
    "TunnelState",
]

log = logging.getLogger("sampan.manager.tunnel")

CONNECT_PATH = "/v3/connect"
CLUSTER_HEADER = "X-Sampan-Cluster"
AGENT_VERSION_HEADER = "X-Sampan-Agent-Version"
CLUSTER_PARAMS_HEADER = "X-Sampan-Cluster-Params"
DEFAULT_HEARTBEAT_S = 10.0
CLOSE_HANDSHAKE_TIMEOUT_S = 2.0

Authenticator = Callable[[str, str], "Awaitable[str | None] | str | None"]


@dataclass(frozen=True)
class TunnelState:
    """What the manager can read about one cluster's tunnel (a snapshot)."""

    cluster_id: str
    cluster_name: str
    connected: bool
    connected_at: dt.datetime | None = None
    disconnected_at: dt.datetime | None = None
    last_heartbeat: dt.datetime | None = None
    remote: str = ""
    agent_version: str = ""
    open_streams: int = 0
    close_reason: str = ""
    # what the agent reported for reaching its API server: address, caCert, token (secret:
    # kept out of repr, never logged)
    params: Mapping[str, str] = field(default_factory=dict, repr=False)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _status_response(error: StatusError) -> web.Response:
    return web.Response(status=error.code, body=error.to_json(), content_type="application/json")


def _decode_params(text: str) -> dict[str, str]:
    if not text:
        return {}
    try:
        value = json.loads(base64.b64decode(text, validate=True))
    except (binascii.Error, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError("malformed") from exc
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ValueError("not an object of strings")
    return value


class TunnelServer:
    """Sessions by cluster id, and the connect endpoint that creates them."""

    def __init__(
        self,
        authenticate: Authenticator,
        *,
        on_change: Callable[[TunnelState], None] | None = None,
        heartbeat_s: float = DEFAULT_HEARTBEAT_S,
        window_bytes: int = frames.DEFAULT_WINDOW_BYTES,
    ) -> None:
        self._authenticate = authenticate
        self._on_change = on_change
        self._heartbeat_s = heartbeat_s
        self._window = window_bytes
        self._sessions: dict[str, Session] = {}
        self._states: dict[str, TunnelState] = {}
        self._handlers: set[asyncio.Task[Any]] = set()

    # -- wiring
    def add_routes(self, app: web.Application, *, path: str = CONNECT_PATH) -> None:
        """Register the connect endpoint (``GET``) and close every session on app cleanup."""
        app.router.add_get(path, self.handle_connect)

        async def _close_ctx(_app: web.Application) -> Any:
            yield
            await self.close()

        app.cleanup_ctx.append(_close_ctx)

    # -- observable state
    def state(self, cluster_id: str) -> TunnelState | None:
        state = self._states.get(cluster_id)
        session = self._sessions.get(cluster_id)
        if state is None or session is None:
            return state
        loop = asyncio.get_running_loop()
        heartbeat = _now() - dt.timedelta(seconds=loop.time() - session.last_heartbeat)
        return replace(state, last_heartbeat=heartbeat, open_streams=session.open_streams)

    def states(self) -> list[TunnelState]:
        return [s for cid in sorted(self._states) if (s := self.state(cid)) is not None]

    def is_connected(self, cluster_id: str) -> bool:
        session = self._sessions.get(cluster_id)
        return session is not None and session.alive

    def _set_state(self, state: TunnelState) -> None:
        self._states[state.cluster_id] = state
        if self._on_change is not None:
            try:
                self._on_change(state)
            except Exception:
                log.exception("tunnel on_change callback failed for cluster %s", state.cluster_id)

    # -- dialing
    def _session(self, cluster_id: str) -> Session:
        session = self._sessions.get(cluster_id)
        if session is None or not session.alive:
            raise NotConnected(f"cluster {cluster_id} has no connected agent")
        return session

    async def open_stream(
        self, cluster_id: str, host: str, port: int, *, timeout_s: float = DEFAULT_DIAL_TIMEOUT_S
    ) -> Stream:
        """A raw tunnel stream to host:port as seen from the cluster's agent (an
        ``asyncio.Transport`` with reading paused and no protocol yet)."""
        return await self._session(cluster_id).open_stream(host, port, timeout_s)

    async def dial(
        self,
        cluster_id: str,
        host: str,
        port: int,
        *,
        timeout_s: float = DEFAULT_DIAL_TIMEOUT_S,
        ssl: ssl_module.SSLContext | None = None,
        server_hostname: str | None = None,
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """asyncio streams to host:port through the cluster's agent; TLS end to end if ``ssl``."""
        return await open_connection(
            self._session(cluster_id),
            host,
            port,
            timeout_s=timeout_s,
            ssl=ssl,
            server_hostname=server_hostname,
        )

    def connector(
        self, cluster_id: str, *, ssl: ssl_module.SSLContext | None = None, **kwargs: Any
    ) -> TunnelConnector:
        """An aiohttp connector that dials through this cluster's tunnel (whichever session is
        live at each new connection). ``ssl`` verifies ``https`` targets (default: the system
        trust store); other keywords go to ``aiohttp.BaseConnector``."""

        async def _open(host: str, port: int, timeout_s: float) -> Stream:
            return await self.open_stream(cluster_id, host, port, timeout_s=timeout_s)

        return TunnelConnector(_open, ssl=ssl, **kwargs)

    # -- the endpoint
    async def handle_connect(self, request: web.Request) -> web.StreamResponse:
        remote = request.remote or "unknown"
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        cluster_name = request.headers.get(CLUSTER_HEADER, "")
        if scheme.lower() != "bearer" or not token.strip() or not cluster_name:
            log.warning(
                "tunnel: connection from %s without a bearer token and %s header; rejected",
                remote,
                CLUSTER_HEADER,
            )
            return _status_response(Unauthorized())
        try:
            result = self._authenticate(token.strip(), cluster_name)
            cluster_id = await result if inspect.isawaitable(result) else result
        except Exception:
            log.exception("tunnel: authenticating the agent for cluster %r failed", cluster_name)
            return _status_response(InternalError("the agent could not be authenticated"))
        if not cluster_id:
            log.warning(
                "tunnel: agent at %s for cluster %r presented an invalid token; rejected",
                remote,
                cluster_name,
            )
            return _status_response(Unauthorized())
        try:
            params = _decode_params(request.headers.get(CLUSTER_PARAMS_HEADER, ""))
        except ValueError:
            log.warning("tunnel: agent for cluster %s sent malformed cluster params", cluster_id)
            return _status_response(
                BadRequest(f"{CLUSTER_PARAMS_HEADER} is not base64 of a JSON object of strings")
            )
        ws = web.WebSocketResponse(
            protocols=(frames.SUBPROTOCOL,),
            autoping=False,
            heartbeat=self._heartbeat_s,
            max_msg_size=frames.MAX_FRAME_BYTES,
            compress=False,
            timeout=CLOSE_HANDSHAKE_TIMEOUT_S,
        )
        ready = ws.can_prepare(request)
        if not ready.ok or ready.protocol != frames.SUBPROTOCOL:
            return _status_response(
                BadRequest(
                    "the tunnel endpoint expects a WebSocket upgrade with subprotocol "
                    + frames.SUBPROTOCOL
                )
            )
        await ws.prepare(request)
        session = Session(
            ws, name=f"cluster {cluster_id}", server_side=True, window_bytes=self._window
        )
        old = self._sessions.get(cluster_id)
        self._sessions[cluster_id] = session
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        if old is not None:
            log.info(
                "tunnel: cluster %s reconnected from %s; closing its previous session",
                cluster_id,
                remote,
            )
            closing = asyncio.ensure_future(old.close("replaced by a new connection"))
            closing.set_name(f"tunnel-replace {cluster_id}")
            closing.add_done_callback(log_task_end)
        else:
            log.info("tunnel: cluster %s (%s) connected from %s", cluster_id, cluster_name, remote)
        self._set_state(
            TunnelState(
                cluster_id=cluster_id,
                cluster_name=cluster_name,
                connected=True,
                connected_at=_now(),
                last_heartbeat=_now(),
                remote=remote,
                agent_version=request.headers.get(AGENT_VERSION_HEADER, ""),
                params=params,
            )
        )
        try:
            await session.run()
        finally:
            if task is not None:
                self._handlers.discard(task)
            if self._sessions.get(cluster_id) is session:
                del self._sessions[cluster_id]
                log.info("tunnel: cluster %s disconnected (%s)", cluster_id, session.close_reason)
                previous = self._states.get(cluster_id)
                if previous is not None:
                    self._set_state(
                        replace(
                            previous,
                            connected=False,
                            disconnected_at=_now(),
                            open_streams=0,
                            close_reason=session.close_reason,
                        )
                    )
        return ws

    async def disconnect(
        self, cluster_id: str, reason: str = "disconnected by the manager"
    ) -> None:
        """Close the cluster's session (e.g. the Cluster was deleted); its agent reconnects
        unless its token is no longer accepted."""
        session = self._sessions.get(cluster_id)
        if session is not None:
            await session.close(reason)

    async def close(self) -> None:
        """Close every session and wait for their handlers to finish."""
        sessions = list(self._sessions.values())
        await asyncio.gather(
            *(s.close("manager shutting down", 1001) for s in sessions), return_exceptions=True
        )
        handlers = [t for t in self._handlers if t is not asyncio.current_task()]
        if handlers:
            await asyncio.wait(handlers, timeout=5)


class TunnelConnector(aiohttp.BaseConnector):
    """An aiohttp connector whose connections are tunnel streams (TLS on top for https).

    Pooling, keep-alive and limits are aiohttp's. A failed dial raises ``TunnelConnectError``
    (its ``error``: ``NotConnected``, ``DialError``...); a connection whose stream or tunnel
    broke later is seen by aiohttp as a lost connection (``ServerDisconnectedError`` or
    ``ClientPayloadError``, caused by ``StreamReset``)."""

    def __init__(
        self,
        open_stream: Callable[[str, int, float], Awaitable[Stream]],
        *,
        ssl: ssl_module.SSLContext | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._open_stream = open_stream
        self._ssl = ssl

    async def _create_connection(
        self,
        req: Any,
        traces: Any,
        timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109 (aiohttp's signature)
    ) -> ResponseHandler:
        timeout_s = (
            timeout.sock_connect or timeout.connect or timeout.total or DEFAULT_DIAL_TIMEOUT_S
        )
        port = req.port or (443 if req.is_ssl() else 80)
        try:
            stream = await self._open_stream(req.host, port, timeout_s)
        except TunnelError as exc:
            raise TunnelConnectError(exc) from exc
        protocol = self._factory()
        if not req.is_ssl():
            stream.set_protocol(protocol)
            protocol.connection_made(stream)
            stream.resume_reading()
            return protocol
        context = self._ssl or ssl_module.create_default_context()
        await start_tls(stream, protocol, context, req.server_hostname or req.host, timeout_s)
        return protocol
