"""The ingress controller component: nginx as a supervised child, configured from Ingresses.

``IngressController`` watches Ingresses, IngressClasses, Services, EndpointSlices, TLS Secrets
(``type=kubernetes.io/tls`` only) and Nodes; renders ``nginx.conf`` (``sampan.ingress.render``)
and keeps one nginx master process serving it on the node's HTTP/HTTPS ports.

Why a supervised child process and not a pod (ingress-nginx's way): Sampan has no registry to
pull an nginx image from and builds no images; Debian's ``nginx`` binary is on the host like
``containerd`` is, so the agent runs it the same way (its own process group, restarted with
backoff when it dies, stopped with the agent). It listens on the node's ports directly, so no
LoadBalancer Service or ServiceLB is needed to reach it.

Sampan's nginx never touches the Debian package's files: it runs with
``-c <data-dir>/agent/ingress/nginx.conf -p <data-dir>/agent/ingress/ -e .../logs/error.log``
and its pid file, logs, temp directories and certificates all live under
``<data-dir>/agent/ingress/`` (a system nginx service, if any, is left alone — it must then
not hold the same ports). The master runs as root (ports 80/443, certificates read at load);
its workers run as nginx's default unprivileged user (``nobody``), which cannot enter the
0700 data dir — they never need to: request and response buffering are off, so no temp file
is written (large uploads were checked to pass).

Invariants:

* the IngressClasses are the API's: an Ingress is ours when its class is an IngressClass whose
  ``spec.controller`` is ``CONTROLLER_NAME`` (``sampan-nginx``, created by the server's
  packaged ``ingress`` manifest), or when it names no class and one of those classes is marked
  default; others' Ingresses are ignored (never written to);
* a sync renders the whole configuration; identical text -> nothing is written and nginx is
  not reloaded; otherwise certificates are written (0600, content-addressed names, so a file a
  running nginx uses is never overwritten), the text goes to ``nginx.conf.candidate`` and
  ``nginx -t`` checks it; only a configuration nginx accepts replaces ``nginx.conf`` and is
  loaded with SIGHUP (nginx's graceful reload: old workers finish their connections). A
  rejected configuration is never loaded: when nginx's error names a line, the Ingress that
  produced it gets a Warning event ``InvalidConfiguration`` and is held back (its last accepted
  version keeps serving, or nothing if it never had one) until its resourceVersion changes,
  and the rest is rendered and tested again, so one broken Ingress never blocks the others;
  when the error names no Ingress, the previous configuration keeps serving, every Ingress
  changed since it gets the event, and the same text is not tested again;
* problems with one Ingress (missing Service or Secret, ignored annotations, path conflicts)
  are Warning events on it, sent once per distinct message, never a failed sync;
* status: every node's controller writes the same ``status.loadBalancer.ingress`` (the
  InternalIPs of all nodes, sorted, as ServiceLB does), so controllers never fight and the
  list is right whichever node a client reaches;
* every blocking step (rendering, file writes, ``nginx -t``, signals to a pid from a file) runs
  in a worker thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import os
import re
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sampan.client import Client, ClientConfig, PatchType, SharedInformerFactory
from sampan.client.api import (
    ENDPOINTSLICES,
    INGRESSCLASSES,
    INGRESSES,
    NODES,
    SECRETS,
    SERVICES,
)
from sampan.client.events import TYPE_WARNING, EventRecorder
from sampan.client.syncloop import SyncLoop
from sampan.ingress.render import (
    DEFAULT_CLASS_ANNOTATION,
    Rendered,
    RenderOptions,
    ingress_key,
    render,
)
from sampan.tasks import cancel_and_wait

__all__ = ["CLASS_NAME", "CONTROLLER_NAME", "IngressController", "IngressError", "IngressOptions"]

log = logging.getLogger(__name__)

CONTROLLER_NAME = "sampan.io/ingress-nginx"
CLASS_NAME = "sampan-nginx"
MIN_SYNC_INTERVAL_S = 0.3
SYNC_ERROR_PAUSE_S = 1.0  # nginx or the API failing: do not spin
RESYNC_INTERVAL_S = 60.0
NGINX_TEST_TIMEOUT_S = 60.0
RESTART_BACKOFF_START_S = 1.0
RESTART_BACKOFF_MAX_S = 30.0
STABLE_RUN_S = 10.0
STOP_TIMEOUT_S = 10.0
MAX_HOLD_BACKS = 8
"""Rejected Ingresses held back in one sync before giving up (keeping the previous config)."""
_ERROR_LINE = re.compile(r":(\d+)\s*$")
_TEMP_DIRS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


class IngressError(Exception):
    pass


@dataclass(frozen=True)
class IngressOptions:
    node_name: str
    directory: Path
    """``<data-dir>/agent/ingress``: everything nginx reads or writes."""
    node_ips: tuple[str, ...] = ()
    http_port: int = 80
    https_port: int = 443
    nginx: str = "nginx"


def _default_certificate(path: Path) -> None:
    """A self-signed certificate for hosts without TLS (ingress-nginx's "fake certificate")."""
    if path.exists():
        return
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, "Sampan Ingress Default Certificate")]
    )
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("ingress.local")]), False)
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_private(path, pem)


def _write_private(path: Path, content: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, content)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _alive_nginx(pid_path: Path, conf: Path) -> int | None:
    """The pid of an nginx master a previous agent left running with this configuration."""
    try:
        pid = int(pid_path.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except (OSError, ValueError):
        return None
    # nginx rewrites its command line: "nginx: master process nginx -c <conf> ..."
    if cmdline.startswith(b"nginx") and f" -c {conf} ".encode() in cmdline + b" ":
        return pid
    return None


class IngressController(SyncLoop):
    """Component ``ingress``; see the module docstring."""

    name = "ingress"
    log_name = "ingress"

    def __init__(self, client_config: ClientConfig, options: IngressOptions) -> None:
        super().__init__(
            client_config,
            "sampan-ingress",
            resync_s=RESYNC_INTERVAL_S,
            min_interval_s=MIN_SYNC_INTERVAL_S,
            error_pause_s=SYNC_ERROR_PAUSE_S,
        )
        self.options = options
        self._recorder: EventRecorder | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._stopping = False
        self._applied: Rendered | None = None
        self._rejected_text: str | None = None
        self._held: dict[str, str] = {}
        """Ingress key -> resourceVersion nginx rejected (held back until it changes)."""
        self._good: dict[str, Mapping[str, Any]] = {}
        """The Ingress objects of the configuration nginx serves."""
        self._reported: dict[str, tuple[str, ...]] = {}
        self.reload_count = 0
        d = options.directory
        self.conf_path = d / "nginx.conf"
        self.candidate_path = d / "nginx.conf.candidate"
        self.pid_path = d / "nginx.pid"
        self.log_dir = d / "logs"
        self.cert_dir = d / "certs"
        self.default_cert = d / "default-cert.pem"

    # -- lifecycle ---------------------------------------------------------------------------

    async def _prepare(self) -> None:
        self._stopping = False
        await asyncio.to_thread(self._prepare_directory)

    def _add_informers(self, factory: SharedInformerFactory, client: Client) -> None:
        self._recorder = EventRecorder(client, "sampan-ingress", self.options.node_name)
        self._ingresses = factory.informer(INGRESSES)
        self._classes = factory.informer(INGRESSCLASSES)
        self._services = factory.informer(SERVICES)
        self._slices = factory.informer(ENDPOINTSLICES)
        self._secrets = factory.informer(SECRETS, field_selector="type=kubernetes.io/tls")
        self._nodes = factory.informer(NODES)
        for informer in factory.informers:
            self._wake_on_changes(informer)

    def _prepare_directory(self) -> None:
        d = self.options.directory
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(d, 0o700)
        for sub in (self.log_dir, self.cert_dir, d / "tmp"):
            sub.mkdir(mode=0o700, exist_ok=True)
        _default_certificate(self.default_cert)
        pid = _alive_nginx(self.pid_path, self.conf_path)
        if pid is not None:
            log.warning("ingress: stopping nginx (pid %d) left running by a previous agent", pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + STOP_TIMEOUT_S
            while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
                time.sleep(0.05)

    async def stop(self) -> None:
        self._stopping = True
        await super().stop()

    async def _before_stop(self) -> None:
        await cancel_and_wait(self._watcher)
        self._watcher = None
        await self._terminate()

    async def _release(self) -> None:
        if self._recorder is not None:
            await self._recorder.stop()
            self._recorder = None

    # -- nginx process -----------------------------------------------------------------------

    def _argv(self, conf: Path) -> list[str]:
        return [
            self.options.nginx,
            "-c",
            str(conf),
            "-p",
            str(self.options.directory) + "/",
            "-e",
            str(self.log_dir / "error.log"),
        ]

    async def _spawn(self) -> None:
        def open_log() -> int:
            return os.open(
                self.log_dir / "nginx.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600
            )

        fd = await asyncio.to_thread(open_log)
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *self._argv(self.conf_path),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=fd,
                stderr=fd,
                start_new_session=True,
            )
        finally:
            os.close(fd)
        log.info(
            "ingress: started nginx (pid %d) on ports %d/%d",
            self._proc.pid,
            self.options.http_port,
            self.options.https_port,
        )
        if self._watcher is None:
            self._watcher = asyncio.create_task(self._watch(), name="ingress-nginx-watcher")

    async def _watch(self) -> None:
        backoff_s = RESTART_BACKOFF_START_S
        while True:
            proc = self._proc
            assert proc is not None
            started = time.monotonic()
            code = await proc.wait()
            if self._stopping:
                return
            if time.monotonic() - started >= STABLE_RUN_S:
                backoff_s = RESTART_BACKOFF_START_S
            log.warning(
                "ingress: nginx (pid %d) exited with code %d (see %s); restarting in %gs",
                proc.pid,
                code,
                self.log_dir / "error.log",
                backoff_s,
            )
            await asyncio.sleep(backoff_s)
            backoff_s = min(backoff_s * 2, RESTART_BACKOFF_MAX_S)
            try:
                await self._spawn()
            except OSError as exc:
                log.error("ingress: nginx restart failed: %s", exc)

    async def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        log.info("ingress: nginx stopped")

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.returncode is None else None

    # -- syncing -----------------------------------------------------------------------------

    def _render_options(self) -> RenderOptions:
        names: set[str] = set()
        default = False
        for cls in self._classes.cache.list():
            if (cls.get("spec") or {}).get("controller") != CONTROLLER_NAME:
                continue
            names.add(cls["metadata"]["name"])
            annotations = cls["metadata"].get("annotations") or {}
            default = default or annotations.get(DEFAULT_CLASS_ANNOTATION) == "true"
        return RenderOptions(
            data_dir=str(self.options.directory),
            http_port=self.options.http_port,
            https_port=self.options.https_port,
            class_names=frozenset(names),
            default_class=default,
            default_cert=str(self.default_cert),
        )

    async def _sync(self) -> None:
        secrets = {
            (s["metadata"].get("namespace", ""), s["metadata"]["name"]): s
            for s in self._secrets.cache.list()
        }
        current = {ingress_key(i): i for i in self._ingresses.cache.list()}
        # An Ingress nginx rejected stays held back (its last accepted version keeps
        # serving, or nothing) until it changes.
        self._held = {k: v for k, v in self._held.items() if _version(current.get(k, {})) == v}
        options = self._render_options()
        for _ in range(MAX_HOLD_BACKS):
            ingresses = []
            for key, ingress in current.items():
                if key in self._held:
                    good = self._good.get(key)
                    if good is not None:
                        ingresses.append(good)
                else:
                    ingresses.append(ingress)
            rendered = await asyncio.to_thread(
                render,
                ingresses,
                self._services.cache.list(),
                self._slices.cache.list(),
                secrets,
                options,
            )
            if self._applied is not None and rendered.text == self._applied.text:
                break
            if rendered.text == self._rejected_text:
                break
            owner = await self._apply(rendered, current)
            if owner is None:
                break
            self._held[owner] = _version(current[owner])
        self._report_problems(rendered, current)
        await self._update_status(rendered, current)

    async def _apply(self, rendered: Rendered, current: Mapping[str, Any]) -> str | None:
        """Test and load ``rendered``; after a rejection, the Ingress to hold back and retry
        without (None: keep the previous configuration as it is)."""
        error = await asyncio.to_thread(self._write_and_test, rendered)
        if error is not None:
            owner = self._report_rejection(rendered, error, current)
            if owner is None:
                self._rejected_text = rendered.text
                if self._applied is None:
                    raise IngressError(f"nginx rejected the first configuration: {error}")
            return owner
        self._rejected_text = None
        previous, self._applied = self._applied, rendered
        self._good = dict(rendered.ingresses)
        if self._proc is None or self._proc.returncode is not None:
            if self._watcher is None:
                await self._spawn()
        else:
            self._proc.send_signal(signal.SIGHUP)
            self.reload_count += 1
            log.info(
                "ingress: nginx configuration reloaded (%d Ingresses)", len(rendered.ingresses)
            )
        await asyncio.to_thread(self._collect_certs, rendered, previous)
        return None

    def _write_and_test(self, rendered: Rendered) -> str | None:
        """Write certificates and the candidate, run ``nginx -t``; the error, or None after
        the candidate became ``nginx.conf``."""
        for name, content in rendered.files.items():
            path = self.cert_dir / name
            if not path.exists():
                _write_private(path, content)
        _write_private(self.candidate_path, rendered.text.encode())
        result = subprocess.run(
            [*self._argv(self.candidate_path), "-t", "-q"],
            capture_output=True,
            text=True,
            check=False,
            timeout=NGINX_TEST_TIMEOUT_S,
        )
        if result.returncode != 0:
            lines = [ln for ln in (result.stderr or result.stdout).splitlines() if ln.strip()]
            return lines[0] if lines else f"nginx -t exited with code {result.returncode}"
        os.replace(self.candidate_path, self.conf_path)
        return None

    def _collect_certs(self, rendered: Rendered, previous: Rendered | None) -> None:
        """Remove certificate files neither the new nor the previous configuration names
        (old nginx workers may still hold the previous one during a graceful reload)."""
        keep = set(rendered.files) | set(previous.files if previous is not None else ())
        for path in self.cert_dir.iterdir():
            if path.name not in keep:
                with contextlib.suppress(OSError):
                    path.unlink()

    # -- events and status -------------------------------------------------------------------

    def _report_problems(self, rendered: Rendered, current: Mapping[str, Any]) -> None:
        reported = {k: tuple(v) for k, v in rendered.problems.items()}
        assert self._recorder is not None
        for key, problems in reported.items():
            ingress = current.get(key)
            if ingress is None or key in self._held:
                continue
            for problem in problems:
                if problem not in self._reported.get(key, ()):
                    self._recorder.event(ingress, TYPE_WARNING, "InvalidIngress", problem)
        self._reported = reported

    def _report_rejection(
        self, rendered: Rendered, error: str, current: Mapping[str, Any]
    ) -> str | None:
        """Warn about a configuration nginx rejected; the Ingress that produced the failing
        line if the error names one (held back by the caller), else None."""
        assert self._recorder is not None
        owner = None
        match = _ERROR_LINE.search(error)
        if match and str(self.candidate_path) in error:
            owner = rendered.line_owners.get(int(match.group(1)))
        if owner is not None and owner in current and owner not in self._held:
            owners = {owner}
            outcome = (
                "its previous version keeps serving" if owner in self._good else "it is not served"
            )
        else:
            owner = None
            outcome = "the previous configuration keeps serving"
            before = self._applied.ingresses if self._applied is not None else {}
            owners = {
                key
                for key in rendered.ingresses
                if key in current
                and (key not in before or _version(before[key]) != _version(current[key]))
            }
        log.warning(
            "ingress: nginx rejected the configuration rendered with %s (%s); %s",
            ", ".join(sorted(owners)) or "an unknown change",
            error,
            outcome,
        )
        for key in sorted(owners):
            self._recorder.event(
                current[key],
                TYPE_WARNING,
                "InvalidConfiguration",
                f"nginx rejected the configuration rendered from this Ingress ({error}); {outcome}",
            )
        return owner

    def _node_ips(self) -> list[str]:
        ips: set[str] = set()
        for node in self._nodes.cache.list():
            for address in (node.get("status") or {}).get("addresses") or []:
                ip = address.get("address", "")
                if address.get("type") == "InternalIP" and ":" not in ip:
                    ips.add(ip)
        if not ips:
            ips.update(ip for ip in self.options.node_ips if ":" not in ip)
        return sorted(ips)

    async def _update_status(self, rendered: Rendered, current: Mapping[str, Any]) -> None:
        assert self._client is not None
        wanted = [{"ip": ip} for ip in self._node_ips()]
        for key in sorted(rendered.ingresses):
            ingress = current.get(key)
            if ingress is None:
                continue
            lb = (ingress.get("status") or {}).get("loadBalancer") or {}
            if (lb.get("ingress") or []) == wanted:
                continue
            namespace, _, name = key.partition("/")
            try:
                await self._client.patch(
                    INGRESSES,
                    name,
                    {"status": {"loadBalancer": {"ingress": wanted}}},
                    namespace=namespace,
                    patch_type=PatchType.MERGE,
                    subresource="status",
                )
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("ingress: status of %s", key)


def _version(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")
