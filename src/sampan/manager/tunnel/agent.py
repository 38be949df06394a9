"""The cluster agent's network side: keep one tunnel to the manager open, forever.

``run_agent`` (or ``AgentConfig.from_env`` + ``run_agent(**config)`` in the agent's
container) loops:

1. fetch the manager's CA from ``<manager>/cacerts`` without TLS verification and compare its
   SHA-256 with ``ca_checksum`` (see ``ca``). On a mismatch it logs one line and raises
   ``CAChecksumMismatch`` — before the token has been sent anywhere; the agent process should
   exit non-zero (a Deployment then restarts it with Kubernetes' own back-off). An empty
   checksum means the manager's certificate is publicly trusted: the system store is used;
2. open the WebSocket to ``<manager>/v3/connect`` (subprotocol ``sampan-tunnel.v1``) with TLS
   verified against that CA only, sending ``Authorization: Bearer <token>``,
   ``X-Sampan-Cluster``, ``X-Sampan-Agent-Version`` and ``X-Sampan-Cluster-Params`` (what the
   manager needs to talk to the downstream API server through the tunnel: its ``address``,
   its CA ``caCert`` and the agent's service-account ``token``; read again at every connect,
   so a rotated token is picked up);
3. serve the session: ping every ``heartbeat_s`` (a manager that stops answering is
   dropped after half that much more), and answer the manager's ``dial`` frames by opening a
   TCP connection — only to ``allowed_targets`` (``host:port`` strings, normally just the
   downstream API server); any other target answers ``dial-error`` and is logged;
4. when the session ends (manager restart, network loss, 401), wait with exponential back-off
   and full jitter (``backoff_initial_s`` doubling up to ``backoff_max_s``; reset once a
   session has lived ``BACKOFF_RESET_AFTER_S``) and start again at 1.

Only ``https`` manager URLs are accepted. The token is never logged.
``python -m sampan.manager.tunnel`` (``main``) is the agent container's entry point (configuration
from the environment, exit status 1 on ``AgentError``, 0 on SIGTERM/SIGINT, which close the
tunnel at once).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import random
import signal
import ssl
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

import aiohttp

from sampan.manager.tunnel import frames
from sampan.manager.tunnel.ca import CACERTS_PATH
from sampan.manager.tunnel.ca import ca_checksum as checksum_of
from sampan.manager.tunnel.errors import AgentError, CAChecksumMismatch, DialError
from sampan.manager.tunnel.server import (
    AGENT_VERSION_HEADER,
    CLUSTER_HEADER,
    CLUSTER_PARAMS_HEADER,
    CONNECT_PATH,
)
from sampan.manager.tunnel.session import Session
from sampan.version import __version__ as VERSION

__all__ = [
    "BACKOFF_RESET_AFTER_S",
    "DEFAULT_BACKOFF_INITIAL_S",
    "DEFAULT_BACKOFF_MAX_S",
    "DEFAULT_HEARTBEAT_S",
    "AgentConfig",
    "fetch_ca",
    "run_agent",
]

log = logging.getLogger("sampan.manager.agent")

DEFAULT_BACKOFF_INITIAL_S = 1.0
DEFAULT_BACKOFF_MAX_S = 30.0
BACKOFF_RESET_AFTER_S = 30.0
DEFAULT_HEARTBEAT_S = 10.0
CA_FETCH_TIMEOUT_S = 15.0
MAX_CA_BYTES = 256 * 1024
SERVICEACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


@dataclass(frozen=True)
class AgentConfig:
    """The agent's settings; ``from_env`` reads the Deployment's environment."""

    manager_url: str
    ca_checksum: str
    token: str = field(repr=False)
    cluster_name: str
    allowed_targets: tuple[str, ...]
    serviceaccount_dir: Path = SERVICEACCOUNT_DIR

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> AgentConfig:
        """``SAMPAN_MANAGER_URL``, ``SAMPAN_CA_CHECKSUM``, ``SAMPAN_TOKEN``,
        ``SAMPAN_CLUSTER_NAME``; ``SAMPAN_ALLOWED_TARGETS`` (comma-separated ``host:port``)
        defaults to the in-cluster API server, ``KUBERNETES_SERVICE_HOST:PORT``;
        ``SAMPAN_SERVICEACCOUNT_DIR`` (default: the pod's mounted service account) holds the
        ``token`` and ``ca.crt`` sent to the manager as cluster params."""
        missing = [
            k
            for k in ("SAMPAN_MANAGER_URL", "SAMPAN_TOKEN", "SAMPAN_CLUSTER_NAME")
            if not env.get(k)
        ]
        if missing:
            raise AgentError(f"missing environment: {', '.join(missing)}")
        targets = [t.strip() for t in env.get("SAMPAN_ALLOWED_TARGETS", "").split(",") if t.strip()]
        if not targets and env.get("KUBERNETES_SERVICE_HOST"):
            host = env["KUBERNETES_SERVICE_HOST"]
            host = f"[{host}]" if ":" in host else host
            targets = [f"{host}:{env.get('KUBERNETES_SERVICE_PORT', '443')}"]
        if not targets:
            raise AgentError("no allowed targets: set SAMPAN_ALLOWED_TARGETS or run in a cluster")
        return cls(
            manager_url=env["SAMPAN_MANAGER_URL"],
            ca_checksum=env.get("SAMPAN_CA_CHECKSUM", ""),
            token=env["SAMPAN_TOKEN"],
            cluster_name=env["SAMPAN_CLUSTER_NAME"],
            allowed_targets=tuple(targets),
            serviceaccount_dir=Path(env.get("SAMPAN_SERVICEACCOUNT_DIR") or SERVICEACCOUNT_DIR),
        )

    def cluster_params(self) -> dict[str, str]:
        """The downstream API server's address (the first allowed target), and the CA and
        token files of the service account when present (read now: tokens rotate)."""
        params = {"address": self.allowed_targets[0]}
        for key, name in (("caCert", "ca.crt"), ("token", "token")):
            with contextlib.suppress(OSError):
                params[key] = (self.serviceaccount_dir / name).read_text().strip()
        return params

    def as_kwargs(self) -> dict[str, Any]:
        """``run_agent``'s arguments."""
        return {
            "manager_url": self.manager_url,
            "ca_checksum": self.ca_checksum,
            "token": self.token,
            "cluster_name": self.cluster_name,
            "allowed_targets": self.allowed_targets,
            "cluster_params": self.cluster_params,
        }


def _target(text: str) -> tuple[str, int]:
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit():
        raise AgentError(f"allowed target {text!r} is not host:port")
    return host.strip("[]").lower(), int(port)


async def fetch_ca(
    http: aiohttp.ClientSession, manager_url: str, expected_checksum: str
) -> ssl.SSLContext:
    """The TLS context trusting exactly the manager's CA, after checking its checksum."""
    url = manager_url.rstrip("/") + CACERTS_PATH
    timeout = aiohttp.ClientTimeout(total=CA_FETCH_TIMEOUT_S)
    async with http.get(url, ssl=False, timeout=timeout) as response:
        if response.status != 200:
            raise aiohttp.ClientResponseError(
                response.request_info,
                (),
                status=response.status,
                message=f"GET {CACERTS_PATH} answered {response.status}",
            )
        pem = await response.content.read(MAX_CA_BYTES + 1)
    actual = checksum_of(pem)
    if actual != expected_checksum.strip().lower():
        raise CAChecksumMismatch(
            f"CA checksum mismatch: {url} serves a CA with sha256 {actual}, "
            f"expected {expected_checksum}; refusing to connect (check SAMPAN_CA_CHECKSUM)"
        )
    try:
        return ssl.create_default_context(cadata=pem.decode("ascii", errors="replace"))
    except (ssl.SSLError, ValueError) as exc:
        raise CAChecksumMismatch(
            f"the CA at {url} matches its checksum but is not a PEM certificate: {exc}"
        ) from exc


async def run_agent(
    manager_url: str,
    ca_checksum: str,
    token: str,
    cluster_name: str,
    allowed_targets: Iterable[str],
    *,
    heartbeat_s: float = DEFAULT_HEARTBEAT_S,
    backoff_initial_s: float = DEFAULT_BACKOFF_INITIAL_S,
    backoff_max_s: float = DEFAULT_BACKOFF_MAX_S,
    window_bytes: int = frames.DEFAULT_WINDOW_BYTES,
    cluster_params: Callable[[], Mapping[str, str]] | None = None,
) -> NoReturn:
    """Keep the tunnel to the manager up until cancelled; ``CAChecksumMismatch`` (logged once)
    and ``AgentError`` (bad configuration) are the only ways it returns."""
    if urlsplit(manager_url).scheme != "https":
        raise AgentError(f"manager URL {manager_url!r} must be https")
    allowed = frozenset(_target(t) for t in allowed_targets)
    manager = urlsplit(manager_url).netloc

    async def accept(
        host: str, port: int, timeout_s: float
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if (host.lower(), port) not in allowed:
            log.warning("refused the manager's dial to %s:%d: not an allowed target", host, port)
            raise DialError(f"{host}:{port} is not an allowed target of the cluster agent")
        return await asyncio.open_connection(host, port)

    loop = asyncio.get_running_loop()
    attempt = 0
    while True:
        started = loop.time()
        try:
            params = dict(cluster_params()) if cluster_params is not None else {}
            await _connect_once(
                manager_url,
                ca_checksum,
                token,
                cluster_name,
                params,
                accept,
                heartbeat_s,
                window_bytes,
            )
        except CAChecksumMismatch as exc:
            log.error("%s", exc)
            raise
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status == 401:
                log.error(
                    "manager %s rejected the agent's token for cluster %s (401)",
                    manager,
                    cluster_name,
                )
            else:
                log.warning(
                    "manager %s refused the tunnel: %s %s", manager, exc.status, exc.message
                )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.warning("cannot reach manager %s: %s", manager, exc or type(exc).__name__)
        if loop.time() - started >= BACKOFF_RESET_AFTER_S:
            attempt = 0
        ceiling = min(backoff_max_s, backoff_initial_s * 2**attempt)
        delay = random.uniform(ceiling / 2, ceiling)
        attempt = min(attempt + 1, 32)
        log.info("reconnecting to manager %s in %.1fs", manager, delay)
        await asyncio.sleep(delay)


async def _connect_once(
    manager_url: str,
    expected_checksum: str,
    token: str,
    cluster_name: str,
    params: Mapping[str, str],
    accept: Any,
    heartbeat_s: float,
    window_bytes: int,
) -> None:
    manager = urlsplit(manager_url).netloc
    async with aiohttp.ClientSession() as http:
        context = (
            await fetch_ca(http, manager_url, expected_checksum)
            if expected_checksum
            else ssl.create_default_context()
        )
        headers = {
            "Authorization": f"Bearer {token}",
            CLUSTER_HEADER: cluster_name,
            AGENT_VERSION_HEADER: VERSION,
        }
        if params:
            headers[CLUSTER_PARAMS_HEADER] = base64.b64encode(
                json.dumps(dict(params), separators=(",", ":")).encode()
            ).decode()
        async with http.ws_connect(
            manager_url.rstrip("/") + CONNECT_PATH,
            headers=headers,
            protocols=(frames.SUBPROTOCOL,),
            ssl=context,
            heartbeat=heartbeat_s,
            max_msg_size=frames.MAX_FRAME_BYTES,
            compress=0,
            timeout=aiohttp.ClientWSTimeout(ws_close=5.0),
        ) as ws:
            if ws.protocol != frames.SUBPROTOCOL:
                raise aiohttp.ClientError(
                    f"manager did not accept subprotocol {frames.SUBPROTOCOL}"
                )
            log.info("tunnel to manager %s open for cluster %s", manager, cluster_name)
            session = Session(
                ws,
                name=f"manager {manager}",
                server_side=False,
                acceptor=accept,
                window_bytes=window_bytes,
            )
            await session.run()
            log.info("tunnel to manager %s closed (%s)", manager, session.close_reason)


async def _run_until_terminated(config: AgentConfig) -> None:
    """``run_agent`` until SIGTERM or SIGINT, which close the tunnel at once (so the manager
    sees the agent go when its pod is deleted). The agent is PID 1 of its container, where a
    signal without a handler is ignored: without this, SIGTERM would do nothing and the pod
    would linger until its grace period ends in SIGKILL."""
    task = asyncio.ensure_future(run_agent(**config.as_kwargs()))
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, task.cancel)
    try:
        await task
    except asyncio.CancelledError:
        log.info("terminated: tunnel to the manager closed")


def main() -> int:
    """Run the agent from the environment until killed; 1 on a configuration/CA error."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        config = AgentConfig.from_env()
        asyncio.run(_run_until_terminated(config))
    except CAChecksumMismatch:
        return 1  # run_agent logged it
    except AgentError as exc:
        log.error("%s", exc)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0
