"""The agent's containerd: its configuration file and the supervised child process.

``ContainerdConfig`` says where everything lives (all under ``<data-dir>/agent/``) and
``render_config`` turns it into containerd's version-2 TOML. ``Containerd`` runs
``containerd --config <file>`` as a child, waits until CRI answers ``Version`` on its socket,
and restarts it with backoff if it dies; ``on_restart`` (given at construction) runs after
each successful restart, so an owner can redo what a dead containerd may have lost (an image
import in flight).

Invariants:

* this containerd never shares anything with a system containerd: own root, state, socket,
  runc root, opt dir, CNI conf dir, and ``stream_server_port = "0"`` (a free port);
* settings measured necessary on this kind of machine (root without CAP_SYS_RESOURCE, cgroup
  v1, no systemd) are always rendered: ``restrict_oom_score_adj = true``, cgroupfs
  (``SystemdCgroup = false``), ``netns_mounts_under_state_dir = true``;
* containerd runs in its own session (so its own process group): Ctrl-C on sampan's terminal
  does not reach it, only ``stop()`` does;
* ``stop()`` stops containerd only; container shims are separate processes and keep running,
  as with K3s, so restarting the agent does not restart pods;
* the child is spawned and waited for with asyncio's subprocess support; file writes and the
  overlay probe (which mounts) run in a thread, never on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import dataclasses
import json
import logging
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sampan import children
from sampan.kubelet.registries import Registries, auth_toml, write_hosts_dir
from sampan.kubelet.runtime import cri

__all__ = [
    "CONTAINERD_PACKAGES",
    "DEFAULT_CNI_BIN_DIR",
    "DEFAULT_SANDBOX_IMAGE",
    "READY_TIMEOUT_S",
    "RESTART_BACKOFF_MAX_S",
    "RESTART_BACKOFF_START_S",
    "STOP_TIMEOUT_S",
    "Containerd",
    "ContainerdConfig",
    "ContainerdError",
    "MissingBinariesError",
    "check_binaries",
    "detect_snapshotter",
    "render_config",
]

log = logging.getLogger("sampan.kubelet.runtime.containerd")

DEFAULT_SANDBOX_IMAGE = "sampan.local/pause:3.10"
"""The pause image every sandbox uses; built locally from catatonit, never pulled."""

DEFAULT_CNI_BIN_DIR = Path("/usr/lib/cni")
"""Where Debian's containernetworking-plugins installs the CNI plugins."""

READY_TIMEOUT_S = 30.0
"""How long containerd may take, once spawned, before CRI answers ``Version``."""

READY_POLL_INTERVAL_S = 0.05
STOP_TIMEOUT_S = 10.0
"""After SIGTERM, containerd gets this long to exit before SIGKILL."""

RESTART_BACKOFF_START_S = 1.0
RESTART_BACKOFF_MAX_S = 30.0
STABLE_RUN_S = 60.0
"""A containerd that ran this long before dying restarts with the initial backoff again."""

LOG_SCAN_BYTES = 256 * 1024
LOG_EXCERPT_LINES = 5
LOG_LINE_MAX_CHARS = 500
MAX_UNIX_SOCKET_PATH = 100
"""sun_path holds 108 bytes; containerd also needs room for ``<socket>.ttrpc``."""

CONTAINERD_PACKAGES = ("containerd", "runc", "containernetworking-plugins")
_REQUIRED_BINARIES = ("containerd", "containerd-shim-runc-v2", "runc", "ctr")

# Plugins that need what this machine does not have, or that Sampan does not use.
_DISABLED_PLUGINS = (
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.zfs",
    "io.containerd.tracing.processor.v1.otlp",
    "io.containerd.internal.v1.tracing",
)


class ContainerdError(Exception):
    """containerd could not be configured, started or reached."""


class MissingBinariesError(ContainerdError):
    """A binary containerd needs is not installed."""


@dataclass(frozen=True, kw_only=True)
class ContainerdConfig:
    """Where this agent's containerd keeps everything, and the few choices it makes."""

    data_dir: Path
    sandbox_image: str = DEFAULT_SANDBOX_IMAGE
    cni_bin_dir: Path = DEFAULT_CNI_BIN_DIR
    snapshotter: str = "overlayfs"
    log_level: str = "info"
    registries: Registries = dataclasses.field(default_factory=Registries)

    def __post_init__(self) -> None:
        # containerd wants absolute paths everywhere; a relative --data-dir is the user's cwd.
        object.__setattr__(self, "data_dir", Path(self.data_dir).absolute())

    @property
    def agent_dir(self) -> Path:
        return self.data_dir / "agent"

    @property
    def config_path(self) -> Path:
        return self.agent_dir / "etc" / "containerd" / "config.toml"

    @property
    def hosts_dir(self) -> Path:
        """containerd's registry ``config_path``: ``<host>/hosts.toml`` from registries.yaml."""
        return self.config_path.parent / "certs.d"

    @property
    def root_dir(self) -> Path:
        return self.agent_dir / "containerd"

    @property
    def state_dir(self) -> Path:
        return self.agent_dir / "run" / "containerd"

    @property
    def socket_path(self) -> Path:
        return self.state_dir / "containerd.sock"

    @property
    def runc_root(self) -> Path:
        return self.agent_dir / "run" / "runc"

    @property
    def opt_dir(self) -> Path:
        return self.root_dir / "opt"

    @property
    def cni_conf_dir(self) -> Path:
        return self.agent_dir / "etc" / "cni" / "net.d"

    @property
    def log_path(self) -> Path:
        return self.root_dir / "containerd.log"

    @property
    def images_dir(self) -> Path:
        """Image archives dropped here are imported (K3s airgap behaviour)."""
        return self.agent_dir / "images"

    @property
    def pid_path(self) -> Path:
        """The running containerd's pid, so a restarted agent can find one it left behind."""
        return self.state_dir / "sampan-containerd.pid"

    @property
    def endpoint(self) -> str:
        return f"unix://{self.socket_path}"


def _toml_str(value: str | Path) -> str:
    # A JSON string of printable text is a valid TOML basic string.
    return json.dumps(str(value))


def render_config(cfg: ContainerdConfig) -> str:
    """containerd's config.toml (version 2) for ``cfg``; pure, no I/O."""
    cri_plugin = '[plugins."io.containerd.grpc.v1.cri"]'
    runc = '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]'
    disabled = ", ".join(_toml_str(p) for p in _DISABLED_PLUGINS)
    lines = [
        "# Written by sampan at every agent start; edits are overwritten.",
        "version = 2",
        f"root = {_toml_str(cfg.root_dir)}",
        f"state = {_toml_str(cfg.state_dir)}",
        f"disabled_plugins = [{disabled}]",
        "",
        "[grpc]",
        f"  address = {_toml_str(cfg.socket_path)}",
        "",
        "[debug]",
        f"  level = {_toml_str(cfg.log_level)}",
        "",
        '[plugins."io.containerd.internal.v1.opt"]',
        f"  path = {_toml_str(cfg.opt_dir)}",
        "",
        cri_plugin,
        f"  sandbox_image = {_toml_str(cfg.sandbox_image)}",
        '  stream_server_address = "127.0.0.1"',
        '  stream_server_port = "0"',
        "  enable_selinux = false",
        "  enable_unprivileged_ports = true",
        "  enable_unprivileged_icmp = true",
        "  restrict_oom_score_adj = true",
        "  netns_mounts_under_state_dir = true",
        "",
        cri_plugin[:-1] + ".containerd]",
        f"  snapshotter = {_toml_str(cfg.snapshotter)}",
        '  default_runtime_name = "runc"',
        "",
        runc,
        '  runtime_type = "io.containerd.runc.v2"',
        "",
        runc[:-1] + ".options]",
        "  SystemdCgroup = false",
        f"  Root = {_toml_str(cfg.runc_root)}",
        "",
        cri_plugin[:-1] + ".cni]",
        f"  bin_dir = {_toml_str(cfg.cni_bin_dir)}",
        f"  conf_dir = {_toml_str(cfg.cni_conf_dir)}",
        "",
        cri_plugin[:-1] + ".registry]",
        f"  config_path = {_toml_str(cfg.hosts_dir)}",
        "",
        *auth_toml(cfg.registries),
    ]
    return "\n".join(lines)


def check_binaries() -> None:
    """Raise ``MissingBinariesError`` (one clear line) if a needed binary is not installed."""
    missing = [name for name in _REQUIRED_BINARIES if shutil.which(name) is None]
    if missing:
        raise MissingBinariesError(
            f"missing {', '.join(missing)}: install the Debian packages "
            f"{', '.join(CONTAINERD_PACKAGES)} (apt-get install {' '.join(CONTAINERD_PACKAGES)})"
        )


_MNT_DETACH = 2


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def detect_snapshotter(root_dir: Path) -> str:
    """``overlayfs`` if an overlay mount works on ``root_dir``'s filesystem, else ``native``.

    Blocking (mkdir, mount, umount): run it in a thread. Overlay fails for instance on a root
    that is itself on overlayfs without the needed kernel support, or without CAP_SYS_ADMIN.
    """
    root_dir.mkdir(parents=True, exist_ok=True)
    libc = _libc()
    with tempfile.TemporaryDirectory(prefix="overlay-probe-", dir=root_dir) as probe:
        base = Path(probe)
        for name in ("lower", "upper", "work", "merged"):
            (base / name).mkdir()
        options = f"lowerdir={base / 'lower'},upperdir={base / 'upper'},workdir={base / 'work'}"
        rc = libc.mount(b"overlay", str(base / "merged").encode(), b"overlay", 0, options.encode())
        if rc != 0:
            err = ctypes.get_errno()
            log.warning(
                "overlay mount on %s failed (%s): using the native snapshotter",
                root_dir,
                os.strerror(err),
            )
            return "native"
        if libc.umount2(str(base / "merged").encode(), _MNT_DETACH) != 0:
            log.warning("could not unmount overlay probe: %s", os.strerror(ctypes.get_errno()))
        return "overlayfs"


def _write_config(cfg: ContainerdConfig) -> None:
    for directory in (
        cfg.config_path.parent,
        cfg.root_dir,
        cfg.state_dir,
        cfg.runc_root,
        cfg.cni_conf_dir,
        cfg.images_dir,
    ):
        directory.mkdir(parents=True, exist_ok=True)
    write_hosts_dir(cfg.registries, cfg.hosts_dir)
    # 0600: registry credentials from registries.yaml are in it.
    tmp = cfg.config_path.with_name(cfg.config_path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(render_config(cfg))
    os.chmod(tmp, 0o600)
    os.replace(tmp, cfg.config_path)


def _argv(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return []


def _alive(pid: int) -> bool:
    """True if ``pid`` runs and is not a zombie (a process we did not spawn is reaped by
    someone else, perhaps never, so "exists in /proc" is not enough)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _left_behind_pid(cfg: ContainerdConfig) -> int | None:
    """The pid of a containerd a previous agent started with this config and did not stop
    (the agent was killed: containerd runs in its own session and outlives it), else None."""
    try:
        pid = int(cfg.pid_path.read_text().strip())
    except (OSError, ValueError):
        return None
    argv = _argv(pid)
    if not argv or os.path.basename(argv[0]) != b"containerd" or not _alive(pid):
        return None
    return pid if str(cfg.config_path).encode() in argv else None


def _write_pid(cfg: ContainerdConfig, pid: int) -> None:
    tmp = cfg.pid_path.with_name(cfg.pid_path.name + ".tmp")
    tmp.write_text(f"{pid}\n")
    os.replace(tmp, cfg.pid_path)


def _log_excerpt(path: Path, offset: int) -> str:
    """The telling lines this run of containerd (its log from ``offset``) wrote: its errors
    and plugin load failures, else its last lines."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(offset, f.tell() - LOG_SCAN_BYTES))
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    telling = [
        line
        for line in lines
        if "level=error" in line or "level=fatal" in line or "failed to load plugin" in line
    ]
    picked = (telling or lines)[-LOG_EXCERPT_LINES:]
    return "\n".join(line[:LOG_LINE_MAX_CHARS] for line in picked) or "(empty log)"


class Containerd:
    """containerd as a supervised child process.

    ``start()`` returns once CRI answers on the socket; from then on a watcher task restarts
    containerd whenever it exits (backoff 1 s doubling to 30 s). ``ready`` is set while CRI
    is known to answer; a restart that fails is logged and retried after the next backoff.
    """

    def __init__(
        self,
        cfg: ContainerdConfig,
        *,
        ready_timeout_s: float = READY_TIMEOUT_S,
        stop_timeout_s: float = STOP_TIMEOUT_S,
        detect_overlay: bool = True,
        on_restart: Callable[[], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self._on_restart = on_restart
        self.ready_timeout_s = ready_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self._detect_overlay = detect_overlay
        self._proc: asyncio.subprocess.Process | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._stopping = False
        self.ready = asyncio.Event()
        self.restarts = 0
        self._log_offset = 0

    @property
    def endpoint(self) -> str:
        return self.cfg.endpoint

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    async def start(self) -> None:
        """Write the config, start containerd, wait until CRI answers, start watching."""
        if self._watcher is not None:
            raise ContainerdError("containerd already started")
        check_binaries()
        if len(str(self.cfg.socket_path)) > MAX_UNIX_SOCKET_PATH:
            raise ContainerdError(
                f"containerd socket path too long for a unix socket: {self.cfg.socket_path}"
            )
        if self._detect_overlay:
            snapshotter = await asyncio.to_thread(detect_snapshotter, self.cfg.root_dir)
            self.cfg = dataclasses.replace(self.cfg, snapshotter=snapshotter)
        await asyncio.to_thread(_write_config, self.cfg)
        await self._stop_left_behind()
        self._stopping = False
        await self._spawn_and_wait_ready()
        self._watcher = asyncio.create_task(self._watch(), name="containerd-watcher")
        self._watcher.add_done_callback(_log_task_failure)

    async def _log_excerpt(self) -> str:
        return await asyncio.to_thread(_log_excerpt, self.cfg.log_path, self._log_offset)

    async def _stop_left_behind(self) -> None:
        """Two containerds on one root would wait on each other's database lock forever:
        stop the one a killed agent left running (found through the pid file, checked to be
        containerd with this config)."""
        pid = await asyncio.to_thread(_left_behind_pid, self.cfg)
        if pid is None:
            return
        log.warning("stopping containerd (pid %d) left running by a previous agent", pid)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            deadline = time.monotonic() + self.stop_timeout_s
            while time.monotonic() < deadline:
                if not await asyncio.to_thread(_alive, pid):
                    return
                await asyncio.sleep(READY_POLL_INTERVAL_S)
        raise ContainerdError(f"containerd (pid {pid}) left by a previous agent did not exit")

    async def _spawn(self) -> asyncio.subprocess.Process:
        def open_log() -> int:
            self.cfg.log_path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.cfg.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
            self._log_offset = os.fstat(fd).st_size
            return fd

        log_fd = await asyncio.to_thread(open_log)
        try:
            proc = await asyncio.create_subprocess_exec(
                "containerd",
                "--config",
                str(self.cfg.config_path),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_fd,
                stderr=log_fd,
                start_new_session=True,
            )
        finally:
            os.close(log_fd)
        log.info("started containerd (pid %d), log %s", proc.pid, self.cfg.log_path)
        await asyncio.to_thread(_write_pid, self.cfg, proc.pid)
        return proc

    async def _spawn_and_wait_ready(self) -> None:
        self._proc = await self._spawn()
        try:
            await self._wait_ready(self._proc)
        except BaseException:
            await self._terminate(self._proc)
            raise
        self.ready.set()

    async def _wait_ready(self, proc: asyncio.subprocess.Process) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        last_error = ""
        async with cri.connect(self.cfg.endpoint) as conn:
            while True:
                if proc.returncode is not None:
                    raise ContainerdError(
                        f"containerd exited with code {proc.returncode} while starting; "
                        f"from {self.cfg.log_path}:\n{await self._log_excerpt()}"
                    )
                remaining_s = deadline - time.monotonic()
                if remaining_s <= 0:
                    raise ContainerdError(
                        f"containerd CRI did not answer on {self.cfg.socket_path} within "
                        f"{self.ready_timeout_s:g}s ({last_error}); from {self.cfg.log_path}:"
                        f"\n{await self._log_excerpt()}"
                    )
                try:
                    await conn.runtime.version(timeout_s=min(1.0, remaining_s))
                except cri.UnimplementedError as exc:
                    # containerd serves its socket only after loading every plugin, so this
                    # means the CRI plugin failed to load: waiting longer will not help.
                    raise ContainerdError(
                        f"containerd started without its CRI plugin ({exc}); from "
                        f"{self.cfg.log_path}:\n{await self._log_excerpt()}"
                    ) from exc
                except cri.CRIError as exc:
                    last_error = str(exc)
                    await asyncio.sleep(READY_POLL_INTERVAL_S)
                    continue
                return

    async def _watch(self) -> None:
        await children.keep_running(
            "containerd",
            lambda: self._proc,
            self._spawn_and_wait_ready,
            lambda: self._stopping,
            retry=(ContainerdError, OSError),
            backoff=children.RestartBackoff(
                RESTART_BACKOFF_START_S, RESTART_BACKOFF_MAX_S, STABLE_RUN_S
            ),
            on_exit=self.ready.clear,
            on_restart=self._count_restart,
        )

    def _count_restart(self) -> None:
        self.restarts += 1
        if self._on_restart is not None:
            self._on_restart()

    async def _terminate(self, proc: asyncio.subprocess.Process) -> None:
        await children.terminate(proc, self.stop_timeout_s, "containerd")

    async def stop(self) -> None:
        """Stop containerd (not the containers: their shims keep running). Idempotent."""
        self._stopping = True
        self.ready.clear()
        if self._watcher is not None:
            self._watcher.cancel()
            # asyncio.wait does not re-raise the watcher's CancelledError, but lets our own
            # cancellation through.
            await asyncio.wait([self._watcher])
            self._watcher = None
        if self._proc is not None:
            await self._terminate(self._proc)
            await asyncio.to_thread(self.cfg.pid_path.unlink, missing_ok=True)
            log.info("containerd stopped")


def _log_task_failure(task: asyncio.Task[None]) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.error("task %s failed: %r", task.get_name(), exc, exc_info=exc)
