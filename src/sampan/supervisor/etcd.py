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
  ``initial-*`` flags then), so a restart keeps the data;
* joining (``sampan server --server https://first:6443 --token T`` with no member yet): the
  server pins the first server's CA with the token's hash (``GET /cacerts``, as an agent
  does), then ``POST /v1-sampan/etcd-member`` with the server token. The first server adds
  it as a *learner* (``add_member``) and answers with the initial cluster and certificates
  it issued for it from its etcd CAs; the new member starts with
  ``initial-cluster-state=existing`` and, once it answers, is promoted to a voting member
  through the cluster's client URLs (retried while etcd says it is not in sync yet), as K3s
  does. If anything fails before the promotion, the learner is removed again and the local
  member data deleted: nothing is left half-joined. ``--cluster-reset`` (``force_new_cluster``)
  restarts this member once with ``--force-new-cluster``; ``etcd_snapshot_backend`` is its
  ``SnapshotBackend`` (``sampan.datastore.etcd_snapshot``). Not done yet: the CA keys are not
  shared (a joined server cannot issue etcd certificates itself). A deleted server Node
  removes its member through ``sampan.supervisor.etcd_members``.

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

from sampan import children
from sampan.config import Config, ConfigError
from sampan.supervisor.agent import node_name

__all__ = [
    "ETCD_DB_SUBDIR",
    "READY_TIMEOUT_S",
    "EmbeddedEtcd",
    "etcd_args",
    "etcd_snapshot_backend",
    "force_new_cluster",
    "uses_embedded_etcd",
]

log = logging.getLogger("sampan.supervisor.etcd")

ETCD_BIN = "etcd"
ETCD_DB_SUBDIR = Path("server") / "db" / "etcd"
READY_TIMEOUT_S = 60.0
PROMOTE_TIMEOUT_S = 120.0
PROMOTE_RETRY_S = 1.0
UNHEALTHY_RETRY_S = 20.0
"""How long a member add waits out etcd's ``unhealthy cluster`` (under the joiner's
``JOIN_TIMEOUT_S``)."""
JOIN_TIMEOUT_S = 30.0
ETCD_MEMBER_PATH = "/v1-sampan/etcd-member"
_MEMBER_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-.")
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
    """``--cluster-init``; ``--server`` (joining another server's etcd cluster); or a data
    dir whose server ran embedded etcd before (as K3s, a restart keeps using it)."""
    if config.datastore_endpoint:
        return False
    return config.cluster_init or bool(config.server) or (etcd_dir(config) / "member").is_dir()


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


def _member_name(path: Path, node: str) -> str:
    """The member name chosen at the first start (kept: etcd knows its members by name):
    ``<node name>-<8 hex>``, as K3s names them, so ``etcdctl member list`` says which node
    each member is."""
    name_file = path / "name"
    with contextlib.suppress(OSError):
        name = name_file.read_text().strip()
        if name:
            return name
    name = f"{node}-{secrets.token_hex(4)}"
    tmp = name_file.with_name("name.tmp")
    tmp.write_text(name + "\n")
    os.replace(tmp, name_file)
    return name


def _url(scheme: str, host: str, port: int) -> str:
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def etcd_args(
    config: Config,
    *,
    name: str,
    node_ip: str,
    pki: Any,
    data_dir: Path,
    initial_cluster: str = "",
) -> list[str]:
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
        "initial-cluster": initial_cluster or f"{name}={_url('https', advertise, peer_port)}",
        "initial-cluster-state": "existing" if initial_cluster else "new",
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
        self._tls: Any = None
        self.restarts = 0
        self._node_ip = ""
        self._names: list[str] = []
        self._member_lock = asyncio.Lock()

    @property
    def endpoint(self) -> str:
        """The loopback client URL the datastore driver uses."""
        return _url("https", "127.0.0.1", self._config.etcd_client_port)

    @property
    def data_dir(self) -> Path:
        """etcd's data dir (``member/`` and the ``name`` file)."""
        return self._dir

    @property
    def tls(self) -> Any:
        assert self._tls is not None, "start() first"
        return self._tls

    @property
    def peer_url(self) -> str:
        return _url("https", self._node_ip, self._config.etcd_peer_port)

    def _joining(self) -> bool:
        return bool(self._config.server) and not (self._dir / "member").is_dir()

    def _prepare_names(self) -> None:
        from sampan.supervisor.agent import default_node_ips

        config = self._config
        node_ips = tuple(config.node_ip) or default_node_ips()
        self._node_ip = config.advertise_address or node_ips[0]
        self._names = list(dict.fromkeys([self._node_ip, *node_ips, socket.gethostname()]))
        self._dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._dir.chmod(0o700)
        self._log_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)

    def _prepare(self, joined: dict[str, Any] | None = None) -> None:
        from sampan.datastore.etcd import EtcdTLS
        from sampan.pki.etcd import ensure_etcd_pki, write_joined_pki

        self._prepare_names()
        tls_dir = self._config.data_dir / "server" / "tls"
        if joined is not None:
            write_joined_pki(tls_dir, joined["files"])
        self.pki = ensure_etcd_pki(tls_dir, self._names)
        self._tls = EtcdTLS(
            cafile=self.pki.server_ca, certfile=self.pki.client_cert, keyfile=self.pki.client_key
        )
        self._tls.credentials()  # read the files now, in this thread
        self._args = etcd_args(
            self._config,
            name=_member_name(self._dir, node_name(self._config)),
            node_ip=self._node_ip,
            pki=self.pki,
            data_dir=self._dir,
            initial_cluster=joined["initialCluster"] if joined is not None else "",
        )

    async def start(self, ctx: Any) -> None:
        self._stopping = False
        if self._joining():
            await self._join_cluster()
        else:
            await asyncio.to_thread(self._prepare)
            await self._spawn_and_wait_ready()
        self._watcher = asyncio.create_task(self._watch(), name="etcd-watcher")
        self._watcher.add_done_callback(_log_task_failure)

    # --- joining another server's cluster ---------------------------------------------------

    async def _join_cluster(self) -> None:
        from sampan.datastore.etcd import EtcdMembers
        from sampan.datastore.types import StoreError

        await asyncio.to_thread(self._prepare_names)
        name = await asyncio.to_thread(_member_name, self._dir, node_name(self._config))
        answer = await self._request_membership(name)
        member_id = int(answer["memberID"])
        client_urls = [u for u in answer.get("clientURLs", []) if isinstance(u, str)]
        try:
            await asyncio.to_thread(self._prepare, answer)
            self._proc = await self._spawn()
            await self._wait_started(self._proc, member_id)
            await self._promote(self._proc, member_id, client_urls)
            await self._wait_ready(self._proc)
        except BaseException as exc:
            log.error(
                "joining the etcd cluster failed (%s); removing the learner",
                str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
            )
            if self._proc is not None:
                await self._terminate(self._proc)
                self._proc = None
            if self._tls is None:
                log.error("cannot remove learner %x: no etcd client certificate", member_id)
            for url in client_urls if self._tls is not None else []:
                try:
                    async with EtcdMembers(url, self._tls) as members:
                        await members.remove(member_id)
                    break
                except (StoreError, OSError) as err:
                    log.warning("could not remove learner %x via %s: %s", member_id, url, err)
            await asyncio.to_thread(shutil.rmtree, self._dir / "member", True)
            raise
        log.info("joined the etcd cluster as member %s (%x)", name, member_id)

    async def _request_membership(self, name: str) -> dict[str, Any]:
        """Pin the first server's CA with the token's hash, then ask it to add this member."""
        import base64
        import hashlib
        import json
        import ssl

        import aiohttp

        from sampan.supervisor.token import TokenError, parse_token

        server = self._config.server.rstrip("/")
        if not self._config.token:
            raise ConfigError("joining a server (--server) needs its --token")
        try:
            token = parse_token(self._config.token.reveal())
        except TokenError as exc:
            raise ConfigError(f"--token: {exc}") from None
        if token.ca_hash is None:
            raise ConfigError("joining a server needs its full K10 token (with the CA hash)")
        pinning = ssl.create_default_context()
        pinning.check_hostname = False
        pinning.verify_mode = ssl.CERT_NONE
        timeout = aiohttp.ClientTimeout(total=JOIN_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.get(server + "/cacerts", ssl=pinning) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"{server}: GET /cacerts answered {resp.status}")
                ca_pem = await resp.read()
            if hashlib.sha256(ca_pem).hexdigest() != token.ca_hash:
                raise RuntimeError(f"{server}: the server's CA does not match the token's hash")
            verified = ssl.create_default_context(cadata=ca_pem.decode())
            auth = base64.b64encode(f"{token.user}:{token.secret}".encode()).decode()
            body = {"name": name, "peerURL": self.peer_url, "names": self._names}
            async with session.post(
                server + ETCD_MEMBER_PATH,
                json=body,
                headers={"Authorization": f"Basic {auth}"},
                ssl=verified,
            ) as resp:
                payload = await resp.read()
                status = resp.status
        try:
            answer = json.loads(payload)
        except ValueError:
            answer = None
        if status != 200 or not isinstance(answer, dict):
            message = answer.get("message") if isinstance(answer, dict) else None
            if status == 401:
                message = "the server refused the token"
            raise RuntimeError(
                f"{server} refused to add this server to its etcd cluster: "
                f"{message or f'HTTP {status}'}"
            )
        return answer

    async def _wait_started(self, proc: asyncio.subprocess.Process, member_id: int) -> None:
        """Until the new learner answers Status (it serves no linearizable read yet) as the
        member that was added (not another etcd already on the client port)."""
        from sampan.datastore.etcd import EtcdMembers
        from sampan.datastore.types import StoreError

        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if proc.returncode is not None:
                raise RuntimeError(
                    f"etcd exited with code {proc.returncode} while joining; from "
                    f"{self._log_path}:\n{await asyncio.to_thread(self._log_excerpt)}"
                )
            try:
                async with EtcdMembers(self.endpoint, self.tls) as members:
                    answered = await members.status()
                if answered != member_id:
                    raise RuntimeError(
                        f"another etcd member ({answered:x}) answers on {self.endpoint}: "
                        "choose a free --etcd-client-port"
                    )
                return
            except StoreError:
                if time.monotonic() >= deadline:
                    raise RuntimeError(
                        f"the new etcd member did not answer within {READY_TIMEOUT_S:g}s"
                    ) from None
            await asyncio.sleep(READY_POLL_INTERVAL_S)

    async def _promote(
        self, proc: asyncio.subprocess.Process, member_id: int, client_urls: list[str]
    ) -> None:
        """Learner -> voting member, once etcd considers it in sync with the leader."""
        from sampan.datastore.etcd import EtcdMembers
        from sampan.datastore.types import StoreError

        deadline = time.monotonic() + PROMOTE_TIMEOUT_S
        last = ""
        while time.monotonic() < deadline:
            if proc.returncode is not None:
                raise RuntimeError(
                    f"etcd exited with code {proc.returncode} before its promotion; from "
                    f"{self._log_path}:\n{await asyncio.to_thread(self._log_excerpt)}"
                )
            if self._tls is None:
                log.error("cannot remove learner %x: no etcd client certificate", member_id)
            for url in client_urls if self._tls is not None else []:
                try:
                    async with EtcdMembers(url, self._tls) as members:
                        await members.promote(member_id)
                    log.info("etcd member %x promoted from learner to voting member", member_id)
                    return
                except StoreError as exc:
                    last = str(exc)
                    if "not a learner" in last:
                        return
            await asyncio.sleep(PROMOTE_RETRY_S)
        raise RuntimeError(f"the learner was not promoted within {PROMOTE_TIMEOUT_S:g}s: {last}")

    # --- the first server's side of a join -------------------------------------------------

    async def add_member(self, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /v1-sampan/etcd-member`` (the API server checked the server token): add
        the caller as a learner; answer the initial cluster and its certificates."""
        import ipaddress
        import urllib.parse

        from sampan.api.errors import BadRequest, Conflict, ServiceUnavailable
        from sampan.datastore.etcd import EtcdMembers
        from sampan.datastore.types import StoreError
        from sampan.pki.etcd import issue_member_certificates

        name, names = body.get("name"), body.get("names") or []
        peer_url = body.get("peerURL")
        if not isinstance(peer_url, str):
            raise BadRequest("peerURL must be https://<IP>:<port>")
        if not isinstance(name, str) or not 0 < len(name) <= 63 or set(name) - _MEMBER_NAME_CHARS:
            raise BadRequest("name must be 1-63 characters of a-z, 0-9, '-' and '.'")
        try:
            url = urllib.parse.urlsplit(peer_url)
            host = ipaddress.ip_address(url.hostname or "")
            port = url.port
        except ValueError:
            raise BadRequest("peerURL must be https://<IP>:<port>") from None
        if url.scheme != "https" or not port or url.path or host.is_unspecified:
            raise BadRequest("peerURL must be https://<IP>:<port>")
        if not isinstance(names, list) or len(names) > 32:
            raise BadRequest("names must be a list of at most 32 host names or addresses")
        if not all(isinstance(n, str) and 0 < len(n) <= 253 for n in names):
            raise BadRequest("names must be a list of at most 32 host names or addresses")
        if self.pki is None or self.pki.joined:
            raise ServiceUnavailable("this server holds no etcd CA key; join through the first")
        async with self._member_lock:
            files = await asyncio.to_thread(
                issue_member_certificates, self.pki, [str(host), *names]
            )
            try:
                async with EtcdMembers(self.endpoint, self.tls) as members:
                    for member in await members.list():
                        if peer_url in member.peer_urls:
                            if member.name:
                                raise Conflict(
                                    f"peer URL {peer_url} belongs to etcd member {member.name}"
                                )
                            await members.remove(member.id)  # an earlier, unfinished join
                    added, current = await _add_learner(members, peer_url)
            except StoreError as exc:
                raise ServiceUnavailable(f"etcd could not add the member: {exc}") from None
        initial = []
        client_urls = []
        for member in current:
            member_name = name if member.id == added.id else member.name
            if member_name:
                initial += [f"{member_name}={u}" for u in member.peer_urls]
            client_urls += list(member.client_urls)
        log.info("added etcd learner %s (%x) at %s", name, added.id, peer_url)
        return {
            "memberID": str(added.id),
            "initialCluster": ",".join(initial),
            "clientURLs": client_urls,
            "files": files,
        }

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
        await children.keep_running(
            "etcd",
            lambda: self._proc,
            self._spawn_and_wait_ready,
            lambda: self._stopping,
            retry=(RuntimeError, OSError),
            backoff=children.RestartBackoff(
                RESTART_BACKOFF_START_S, RESTART_BACKOFF_MAX_S, STABLE_RUN_S
            ),
            on_restart=self._count_restart,
        )

    def _count_restart(self) -> None:
        self.restarts += 1

    async def _terminate(self, proc: asyncio.subprocess.Process) -> None:
        await children.terminate(proc, STOP_TIMEOUT_S, "etcd")

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


async def _add_learner(members: Any, peer_url: str) -> tuple[Any, list[Any]]:
    """``add_learner``, retried while etcd refuses every membership change as ``unhealthy
    cluster`` (its strict reconfiguration check wants each member connected for a few seconds,
    so a server joining right after another one waits here instead of failing)."""
    from sampan.datastore.types import StoreError

    deadline = time.monotonic() + UNHEALTHY_RETRY_S
    while True:
        try:
            added, current = await members.add_learner(peer_url)
            return added, current
        except StoreError as exc:
            if "unhealthy cluster" not in str(exc) or time.monotonic() >= deadline:
                raise
        await asyncio.sleep(PROMOTE_RETRY_S)


def _member_peer_url(config: Config) -> str:
    from sampan.supervisor.agent import default_node_ips

    node_ip = config.advertise_address or (tuple(config.node_ip) or default_node_ips())[0]
    return _url("https", node_ip, config.etcd_peer_port)


def etcd_snapshot_backend(config: Config) -> Any:
    """The ``SnapshotBackend`` of this server's embedded etcd member (``sampan etcd-snapshot``
    and ``--cluster-reset``): its loopback client URL with the server's etcd client
    certificate, its data dir, member name and peer URL. ``SnapshotError`` when this data
    dir holds no member. Blocking."""
    from sampan.datastore.etcd import EtcdTLS
    from sampan.datastore.etcd_snapshot import EtcdSnapshots
    from sampan.datastore.snapshot import SnapshotError
    from sampan.pki.etcd import ETCD_TLS_SUBDIR, EtcdPKI

    directory = etcd_dir(config)
    name_file = directory / "name"
    try:
        name = name_file.read_text().strip()
    except OSError:
        name = ""
    if not name or not (directory / "member").is_dir():
        raise SnapshotError(f"no embedded etcd member in {directory}: start the server first")
    pki = EtcdPKI(config.data_dir / "server" / "tls" / ETCD_TLS_SUBDIR)
    tls = EtcdTLS(cafile=pki.server_ca, certfile=pki.client_cert, keyfile=pki.client_key)
    return EtcdSnapshots(
        _url("https", "127.0.0.1", config.etcd_client_port),
        tls,
        data_dir=directory,
        member_name=name,
        peer_url=_member_peer_url(config),
    )


async def force_new_cluster(config: Config) -> str:
    """``--cluster-reset`` without a snapshot (as K3s): start this member's etcd once with
    ``--force-new-cluster`` (it forgets every other member and keeps its data), wait until it
    serves a linearizable read, stop it. Returns the line to log; ``RuntimeError``/``OSError``
    when etcd does not come up (its data is left as etcd left it)."""
    from sampan.datastore.etcd import EtcdMembers

    etcd = EmbeddedEtcd(config)
    if not (etcd._dir / "member").is_dir():
        raise RuntimeError(f"no embedded etcd member in {etcd._dir} to reset")
    await asyncio.to_thread(etcd._prepare)
    if any(arg.startswith("--force-new-cluster") for arg in etcd._args):
        etcd._args = [a for a in etcd._args if not a.startswith("--force-new-cluster")]
    etcd._args.append("--force-new-cluster=true")
    await etcd._spawn_and_wait_ready()
    try:
        async with EtcdMembers(etcd.endpoint, etcd.tls) as members:
            count = len(await members.list())
    finally:
        etcd._stopping = True
        if etcd._proc is not None:
            await etcd._terminate(etcd._proc)
    return (
        f"etcd cluster reset: this member is now the only one ({count} member); restart "
        "without --cluster-reset, then wipe and rejoin the other servers"
    )


def _log_task_failure(task: asyncio.Task[None]) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.error("task %s failed: %r", task.get_name(), exc, exc_info=exc)
