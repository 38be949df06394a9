"""The embedded etcd of ``sampan server --cluster-init``: a supervised ``etcd`` child process.

As RKE2 runs etcd, the server runs Debian's ``etcd`` (3.4) as a child, before the datastore
driver connects to it:

* data in ``<data-dir>/server/db/etcd`` (0700); its member name (``<hostname>-<8 hex>``,
  chosen once) in ``<data-dir>/server/db/etcd/name``; its log in
  ``<data-dir>/server/logs/etcd.log``;
* client port (``--etcd-client-port``, 2379) and peer port (``--etcd-peer-port``, 2380) on
  loopback and the node IP, both TLS with client certificates required, from the etcd CAs
  (``sampan.pki.etcd``); metrics (plain HTTP) on the peer port + 1 on loopback, and on the node
  IP too with ``--etcd-expose-metrics``;
* ``--etcd-arg key=value`` overrides any flag Sampan sets (as K3s's ``--etcd-arg``);
* a data dir that already holds a member restarts that member (etcd ignores the
  ``initial-*`` flags then), so a restart keeps the data.

Invariants: ``start()`` returns only once etcd answers a linearizable read over TLS on the
loopback client URL; etcd runs in its own session (Ctrl-C on sampan's terminal does not reach
it; ``stop()`` stops it after the datastore driver has closed) and with a parent-death signal,
so a killed sampan never leaves it running; if it dies, it is restarted with backoff (the
driver's calls fail with StoreUnavailableError meanwhile, and its watches resume).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import os
import secrets
import shutil
import signal
import socket
import time
from pathlib import Path
from typing import Any

from sampan.config import Config, ConfigError

__all__ = [
    "ETCD_DB_SUBDIR",
    "READY_TIMEOUT_S",
    "EmbeddedEtcd",
    "etcd_args",
    "uses_embedded_etcd",
]

log = logging.getLogger("sampan.supervisor.etcd")

ETCD_BIN = "etcd"
ETCD_DB_SUBDIR = Path("server") / "db" / "etcd"
READY_TIMEOUT_S = 60.0
READY_POLL_INTERVAL_S = 0.2
STOP_TIMEOUT_S = 10.0
RESTART_BACKOFF_START_S = 1.0
RESTART_BACKOFF_MAX_S = 30.0
STABLE_RUN_S = 60.0
MAX_REQUEST_BYTES = 1536 * 1024 + 64 * 1024
"""The datastore's value limit (1.5 MiB) plus room for the key and the request framing."""

QUOTA_BACKEND_BYTES = 2 * 1024**3
"""K3s's default backend quota (2 GiB)."""

HEARTBEAT_INTERVAL_MS = 500
ELECTION_TIMEOUT_MS = 5000
"""K3s's raft timings (tolerant of slow disks and loaded machines)."""

# TLS 1.2 suites etcd may use (TLS 1.3 is always allowed): ECDHE with AES-GCM or ChaCha20
# only, as every other Sampan listener.
CIPHER_SUITES = (
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305",
)
LOG_EXCERPT_LINES = 8
_PR_SET_PDEATHSIG = 1


def etcd_dir(config: Config) -> Path:
    return config.data_dir / ETCD_DB_SUBDIR


def uses_embedded_etcd(config: Config) -> bool:
    """``--cluster-init``, or a data dir whose server ran embedded etcd before (as K3s, a
    restart without the flag keeps using it)."""
    if config.datastore_endpoint:
        return False
    return config.cluster_init or (etcd_dir(config) / "member").is_dir()


def check_cluster_init(config: Config) -> None:
    """Refuse to start an empty etcd beside an existing SQLite datastore (one line)."""
    from sampan.datastore import DEFAULT_DB_RELATIVE_PATH

    sqlite = config.data_dir / DEFAULT_DB_RELATIVE_PATH
    if (
        uses_embedded_etcd(config)
        and sqlite.exists()
        and not (etcd_dir(config) / "member").is_dir()
    ):
        raise ConfigError(
            f"cluster-init: {sqlite} holds this server's SQLite datastore; an embedded etcd "
            "would start empty beside it (no migration): use a new --data-dir"
        )


def _member_name(path: Path) -> str:
    """The member name chosen at the first start (kept: etcd knows its members by name)."""
    name_file = path / "name"
    with contextlib.suppress(OSError):
        name = name_file.read_text().strip()
        if name:
            return name
    name = f"{socket.gethostname().split('.')[0] or 'sampan'}-{secrets.token_hex(4)}"
    tmp = name_file.with_name("name.tmp")
    tmp.write_text(name + "\n")
    os.replace(tmp, name_file)
    return name


def _url(scheme: str, host: str, port: int) -> str:
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def etcd_args(config: Config, *, name: str, node_ip: str, pki: Any, data_dir: Path) -> list[str]:
    """etcd's command line: Sampan's flags, then ``--etcd-arg`` overriding any of them."""
    client_port, peer_port = config.etcd_client_port, config.etcd_peer_port
    metrics_port = peer_port + 1
    hosts = ["127.0.0.1"] if node_ip in ("127.0.0.1", "") else ["127.0.0.1", node_ip]
    advertise = hosts[-1]
    metrics_hosts = hosts if config.etcd_expose_metrics else ["127.0.0.1"]
    flags: dict[str, str] = {
        "name": name,
        "data-dir": str(data_dir),
        "listen-client-urls": ",".join(_url("https", h, client_port) for h in hosts),
        "advertise-client-urls": _url("https", advertise, client_port),
        "listen-peer-urls": ",".join(_url("https", h, peer_port) for h in hosts),
        "initial-advertise-peer-urls": _url("https", advertise, peer_port),
        "initial-cluster": f"{name}={_url('https', advertise, peer_port)}",
        "initial-cluster-state": "new",
        "listen-metrics-urls": ",".join(_url("http", h, metrics_port) for h in metrics_hosts),
        "client-cert-auth": "true",
        "trusted-ca-file": str(pki.server_ca),
        "cert-file": str(pki.server_cert),
        "key-file": str(pki.server_key),
        "peer-client-cert-auth": "true",
        "peer-trusted-ca-file": str(pki.peer_ca),
        "peer-cert-file": str(pki.peer_cert),
        "peer-key-file": str(pki.peer_key),
        "cipher-suites": ",".join(CIPHER_SUITES),
        "heartbeat-interval": str(HEARTBEAT_INTERVAL_MS),
        "election-timeout": str(ELECTION_TIMEOUT_MS),
        "snapshot-count": "10000",
        "max-request-bytes": str(MAX_REQUEST_BYTES),
        "quota-backend-bytes": str(QUOTA_BACKEND_BYTES),
        "logger": "zap",
        "log-outputs": "stderr",
    }
    flags.update(config.component_args("etcd-arg"))
    return [ETCD_BIN, *(f"--{key}={value}" for key, value in flags.items())]


def _set_parent_death_signal() -> None:
    """In the child before exec: SIGTERM it when the sampan that spawned it dies."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class EmbeddedEtcd:
    """The ``etcd`` component: start (once ready), supervise, stop."""

    name = "etcd"

    def __init__(self, config: Config) -> None:
        if shutil.which(ETCD_BIN) is None:
            raise ConfigError(
                "cluster-init: etcd is not installed (apt-get install etcd-server etcd-client)"
            )
        check_cluster_init(config)
        self._config = config
        self._dir = etcd_dir(config)
        self._log_path = config.data_dir / "server" / "logs" / "etcd.log"
        self._proc: asyncio.subprocess.Process | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._stopping = False
        self._args: list[str] = []
        self._log_offset = 0
        self.pki: Any = None
        self.restarts = 0

    @property
    def endpoint(self) -> str:
        """The loopback client URL the datastore driver uses."""
        return _url("https", "127.0.0.1", self._config.etcd_client_port)

    @property
    def tls(self) -> Any:
        from sampan.datastore.etcd import EtcdTLS

        assert self.pki is not None, "start() first"
        return EtcdTLS(
            cafile=self.pki.server_ca, certfile=self.pki.client_cert, keyfile=self.pki.client_key
        )

    def _prepare(self) -> None:
        from sampan.pki.etcd import ensure_etcd_pki
        from sampan.supervisor.agent import default_node_ips

        config = self._config
        node_ips = tuple(config.node_ip) or default_node_ips()
        node_ip = config.advertise_address or node_ips[0]
        names = [node_ip, *node_ips, socket.gethostname()]
        self.pki = ensure_etcd_pki(config.data_dir / "server" / "tls", names)
        self._dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._dir.chmod(0o700)
        self._log_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        name = _member_name(self._dir)
        self._args = etcd_args(config, name=name, node_ip=node_ip, pki=self.pki, data_dir=self._dir)

    async def start(self, ctx: Any) -> None:
        await asyncio.to_thread(self._prepare)
        self._stopping = False
        await self._spawn_and_wait_ready()
        self._watcher = asyncio.create_task(self._watch(), name="etcd-watcher")
        self._watcher.add_done_callback(_log_task_failure)

    async def _spawn(self) -> asyncio.subprocess.Process:
        def open_log() -> int:
            fd = os.open(self._log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            self._log_offset = os.fstat(fd).st_size
            return fd

        log_fd = await asyncio.to_thread(open_log)
        try:
            proc = await asyncio.create_subprocess_exec(
                *self._args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_fd,
                stderr=log_fd,
                start_new_session=True,
                preexec_fn=_set_parent_death_signal,
            )
        finally:
            os.close(log_fd)
        log.info(
            "started etcd (pid %d): client port %d, peer port %d, data %s, log %s",
            proc.pid,
            self._config.etcd_client_port,
            self._config.etcd_peer_port,
            self._dir,
            self._log_path,
        )
        return proc

    async def _spawn_and_wait_ready(self) -> None:
        self._proc = await self._spawn()
        try:
            await self._wait_ready(self._proc)
        except BaseException:
            await self._terminate(self._proc)
            raise

    async def _wait_ready(self, proc: asyncio.subprocess.Process) -> None:
        from sampan.datastore.etcd import probe_etcd
        from sampan.datastore.types import StoreError

        deadline = time.monotonic() + READY_TIMEOUT_S
        last_error = ""
        while True:
            if proc.returncode is not None:
                raise RuntimeError(
                    f"etcd exited with code {proc.returncode} while starting; from "
                    f"{self._log_path}:\n{await asyncio.to_thread(self._log_excerpt)}"
                )
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"etcd did not answer on {self.endpoint} within {READY_TIMEOUT_S:g}s "
                    f"({last_error}); from {self._log_path}:\n"
                    f"{await asyncio.to_thread(self._log_excerpt)}"
                )
            try:
                await probe_etcd(self.endpoint, self.tls)
                return
            except StoreError as exc:
                last_error = str(exc)
            await asyncio.sleep(READY_POLL_INTERVAL_S)

    def _log_excerpt(self) -> str:
        try:
            with self._log_path.open("rb") as f:
                f.seek(self._log_offset)
                lines = f.read().decode(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        telling = [ln for ln in lines if '"level":"error"' in ln or '"level":"fatal"' in ln]
        return "\n".join((telling or lines)[-LOG_EXCERPT_LINES:])

    async def _watch(self) -> None:
        backoff_s = RESTART_BACKOFF_START_S
        while True:
            proc = self._proc
            assert proc is not None
            started = time.monotonic()
            returncode = await proc.wait()
            if self._stopping:
                return
            if time.monotonic() - started >= STABLE_RUN_S:
                backoff_s = RESTART_BACKOFF_START_S
            log.warning(
                "etcd (pid %d) exited with code %d; restarting in %gs",
                proc.pid,
                returncode,
                backoff_s,
            )
            await asyncio.sleep(backoff_s)
            backoff_s = min(backoff_s * 2, RESTART_BACKOFF_MAX_S)
            if self._stopping:
                return
            try:
                await self._spawn_and_wait_ready()
            except (RuntimeError, OSError) as exc:
                log.error("etcd restart failed: %s", exc)
                continue
            self.restarts += 1
            log.info("etcd restarted (pid %d)", self._proc.pid)

    async def _terminate(self, proc: asyncio.subprocess.Process) -> None:
        if proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            log.warning("etcd (pid %d) did not exit after SIGTERM; killing it", proc.pid)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

    async def stop(self) -> None:
        self._stopping = True
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.wait([self._watcher])
            self._watcher = None
        if self._proc is not None:
            await self._terminate(self._proc)
            self._proc = None
            log.info("etcd stopped")


def _log_task_failure(task: asyncio.Task[None]) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.error("task %s failed: %r", task.get_name(), exc, exc_info=exc)
