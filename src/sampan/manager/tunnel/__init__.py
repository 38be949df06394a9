"""The tunnel between the manager and its cluster agents (issue 24, items 2 and 3).

A cluster agent dials *out* to the manager and keeps one WebSocket open; the manager opens
TCP connections inside the cluster (to its API server) through it. Modules:

* ``frames``  — the wire format (the protocol's specification is its docstring);
* ``session`` — the multiplexer on one WebSocket: streams as ``asyncio.Transport``\\ s,
  per-stream credit flow control, splicing;
* ``server``  — the manager's end: the ``/v3/connect`` handler, sessions by cluster id and
  their state, ``dial``/``connector`` for the proxy;
* ``agent``   — the agent's end: CA check, connect, heartbeats, back-off, allowed targets;
* ``ca``      — the CA checksum both ends agree on, and the ``/cacerts`` handler;
* ``errors``  — the exception tree.

The manager calls: ``TunnelServer(authenticate, on_change=...)``, ``add_routes(app)`` (and
``app.router.add_get(CACERTS_PATH, cacerts_handler(ca_pem))``), then ``state(cluster_id)``,
``dial(...)``, ``open_stream(...)``, ``connector(cluster_id, ssl=...)``, ``disconnect(...)``.
The agent's container runs ``python -m sampan.manager.tunnel`` (``AgentConfig.from_env`` +
``run_agent``).

For the proxy: ``state(cluster_id).params`` holds what the agent reported — ``address`` of
the downstream API server, its ``caCert`` (verify TLS with it) and the agent's ``token``
(send it with ``Impersonate-*``). Ordinary requests (watches and ``logs -f`` included) go through an
``aiohttp.ClientSession(connector=tunnels.connector(cluster_id, ssl=downstream_ca))``; a
failed dial raises ``TunnelConnectError`` whose ``error`` is ``NotConnected`` (answer 503) or
``DialError`` (502), and a tunnel lost mid-response surfaces as aiohttp's
``ClientPayloadError``/``ServerDisconnectedError`` (502). Upgrades (exec, attach,
port-forward) take ``tunnels.dial(cluster_id, host, port, ssl=...)``, write the request head,
read the 101 and splice the client's hijacked connection with the returned streams.
"""

from sampan.manager.tunnel.agent import AgentConfig, fetch_ca, run_agent
from sampan.manager.tunnel.ca import CACERTS_PATH, ca_checksum, cacerts_handler
from sampan.manager.tunnel.errors import (
    AgentError,
    CAChecksumMismatch,
    DialError,
    DialTimeout,
    NotConnected,
    ProtocolError,
    StreamReset,
    TunnelConnectError,
    TunnelError,
)
from sampan.manager.tunnel.server import CONNECT_PATH, TunnelConnector, TunnelServer, TunnelState
from sampan.manager.tunnel.session import Session, Stream, splice

__all__ = [
    "CACERTS_PATH",
    "CONNECT_PATH",
    "AgentConfig",
    "AgentError",
    "CAChecksumMismatch",
    "DialError",
    "DialTimeout",
    "NotConnected",
    "ProtocolError",
    "Session",
    "Stream",
    "StreamReset",
    "TunnelConnectError",
    "TunnelConnector",
    "TunnelError",
    "TunnelServer",
    "TunnelState",
    "ca_checksum",
    "cacerts_handler",
    "fetch_ca",
    "run_agent",
    "splice",
]
