"""``sampan killall`` and ``sampan uninstall``: leave the machine as if Sampan never ran pods.

``killall`` (K3s's ``k3s-killall.sh``), for one data dir:

1. stops the ``sampan server``/``sampan agent`` processes that use this data dir (SIGTERM,
   then SIGKILL);
2. stops this data dir's ingress nginx (SIGTERM to its master); kills its containerd, its
   shims (found by their ``-address`` argument) and every process left in the pod cgroups
   (``/kubepods`` in each hierarchy);
3. unmounts everything under ``<data-dir>/agent`` (volumes, rootfs, netns files), deepest
   first, and removes the pod cgroups;
4. deletes the network devices Sampan made (``cni0``, ``sampan-dns``; ``sampan.1`` and the
   routes the network component added go through its own ``remove_dataplane``), this data
   dir's network policy chains and ipsets (``sampan.netpol.cleanup``), and the iptables chains
   (``KUBE-*``, ``CNI-*``, ``SAMPAN-*``) with one ``iptables-restore`` per table.

Only this cluster's things go: with ``--cluster-name NAME`` (``sampan.config.HostNames``) the
devices are ``cni-NAME``, ``sampan-NAME`` and ``sdns-NAME``, the chains ``KNAME-*`` and
``SAMPAN-NAME-*``, the cgroups ``/kubepods-NAME`` and the routes those into its cluster CIDR;
``CNI-*`` chains are then left alone (portmap's ``CNI-HOSTPORT-*`` chains are shared by every
CNI user on the host). An unnamed cluster's killall never matches a named one's chains,
devices or cgroups either (``KUBE-`` is not ``KNAME-``, and ``SAMPAN-`` followed by a
lower-case letter is a named cluster's); it still flushes every route with Sampan's route
protocol, which a named cluster's network component puts back at its next resync.

``uninstall --yes`` runs ``killall`` and then removes the data dir and ``/etc/sampan`` (not
``/etc/sampan`` for a named cluster: that belongs to the unnamed one).

Each step is best effort: what fails is reported in one line and the others still run.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

from sampan.config import HostNames
from sampan.network import remove_dataplane

__all__ = ["killall", "uninstall"]

log = logging.getLogger("sampan.killall")

CGROUP_ROOT = HostNames().cgroup_root
NETWORK_CHAIN_PREFIX = HostNames().network_chain_prefix
UNNAMED_CHAIN_PREFIXES = ("CNI-",)
"""Shared with every CNI user on the host: removed only for an unnamed cluster (K3s's way)."""
TERM_WAIT_S = 10.0
_MNT_DETACH = 2


def _processes() -> Iterable[tuple[int, list[str]]]:
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        yield int(entry.name), [a.decode(errors="replace") for a in argv if a]


def _uses_data_dir(argv: list[str], data_dir: Path, default: bool) -> bool:
    for i, arg in enumerate(argv):
        if arg in ("--data-dir", "-d") and i + 1 < len(argv):
            return Path(argv[i + 1]).resolve() == data_dir
        if arg.startswith("--data-dir="):
            return Path(arg.split("=", 1)[1]).resolve() == data_dir
    return default


def _sampan_processes(data_dir: Path, default: bool) -> list[int]:
    pids = []
    for pid, argv in _processes():
        joined = " ".join(argv[:4])
        is_sampan = "sampan" in joined and any(a in ("server", "agent") for a in argv[:4])
        if is_sampan and _uses_data_dir(argv, data_dir, default):
            pids.append(pid)
    return pids


def _kill(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _wait_gone(pids: list[int], timeout_s: float) -> list[int]:
    deadline = time.monotonic() + timeout_s
    alive = pids
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [p for p in alive if Path(f"/proc/{p}").exists() and not _zombie(p)]
    return alive


def _zombie(pid: int) -> bool:
    try:
        return " Z " in Path(f"/proc/{pid}/stat").read_text().split(")", 1)[1][:4]
    except (OSError, IndexError):
        return True


def _with_arg(value: str) -> list[int]:
    return [pid for pid, argv in _processes() if value in argv]


def _nginx_masters(conf: Path) -> list[int]:
    """The ingress controller's nginx masters for this data dir (nginx rewrites its command
    line into one string: ``nginx: master process nginx -c <conf> ...``). A worker the master
    has just forked still shows the master's command line for a moment; a match whose parent
    also matches is such a worker, not a master."""
    wanted = f" -c {conf} "
    found = [pid for pid, argv in _processes() if wanted in " ".join(argv) + " "]
    return [pid for pid in found if _parent(pid) not in found]


def _parent(pid: int) -> int | None:
    """The parent pid from ``/proc/<pid>/stat`` (after the command name, which may hold
    spaces and parentheses: the state, then the parent); None once the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def _cgroup_pids(root: str) -> list[int]:
    pids: set[int] = set()
    for hierarchy in _hierarchies():
        top = hierarchy / root.lstrip("/")
        if top.is_dir():
            for procs in top.rglob("cgroup.procs"):
                with contextlib.suppress(OSError, ValueError):
                    pids.update(int(p) for p in procs.read_text().split())
    return sorted(pids)


def _hierarchies() -> list[Path]:
    base = Path("/sys/fs/cgroup")
    if (base / "cgroup.controllers").exists():  # cgroup v2: one unified hierarchy
        return [base]
    return [p for p in base.iterdir() if p.is_dir() and not p.is_symlink()]


def _remove_cgroups(root: str) -> int:
    removed = 0
    for hierarchy in _hierarchies():
        top = hierarchy / root.lstrip("/")
        if not top.is_dir():
            continue
        for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda w: len(w[0]), reverse=True):
            with contextlib.suppress(OSError):
                os.rmdir(dirpath)
                removed += 1
    return removed


def _unmount_under(root: Path) -> int:
    prefix = str(root) + "/"
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point.startswith(prefix):
            points.append(point)
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    done = 0
    for point in sorted(set(points), key=len, reverse=True):
        if libc.umount2(point.encode(), _MNT_DETACH) == 0:
            done += 1
        else:
            log.warning("umount %s: %s", point, os.strerror(ctypes.get_errno()))
    return done


def _devices(names: HostNames) -> tuple[str, ...]:
    """The devices deleted here; the VXLAN device goes with the overlay (``_remove_overlay``)."""
    return (names.bridge, names.dns_interface)


def _delete_devices(devices: Iterable[str]) -> list[str]:
    gone = []
    for device in devices:
        if Path(f"/sys/class/net/{device}").exists():
            result = subprocess.run(
                ["ip", "link", "delete", device], capture_output=True, text=True, check=False
            )
            if result.returncode == 0:
                gone.append(device)
            else:
                log.warning("ip link delete %s: %s", device, result.stderr.strip())
    return gone


def _remove_overlay(names: HostNames, cluster_cidr: str | None) -> int:
    """The network component's own clean-up: its VXLAN device and the routes it marked (a named
    cluster's only those into ``cluster_cidr``); how many things went."""
    within = cluster_cidr if names.cluster_name else None
    try:
        return remove_dataplane(names.vxlan_device, within)
    except Exception as exc:
        log.warning("removing %s and its routes: %s", names.vxlan_device, exc)
        return 0


_CHAIN_DECL = re.compile(r"^:(\S+) ")


class _Ours:
    """Which chains belong to one cluster (see the module docstring): a named cluster's carry
    its prefixes; an unnamed cluster's are ``KUBE-*``, ``CNI-*`` and ``SAMPAN-*`` except
    ``SAMPAN-<name>-*`` (cluster names are lower-case, Sampan's own chain words upper-case)."""

    def __init__(self, names: HostNames) -> None:
        self.named = bool(names.cluster_name)
        self.prefixes: tuple[str, ...] = (names.proxy_chain_prefix, names.network_chain_prefix)
        if not self.named:
            self.prefixes += UNNAMED_CHAIN_PREFIXES

    def __call__(self, chain: str) -> bool:
        if not chain.startswith(self.prefixes):
            return False
        if self.named or not chain.startswith(NETWORK_CHAIN_PREFIX):
            return True
        return not chain[len(NETWORK_CHAIN_PREFIX) :][:1].islower()


def filter_iptables_save(text: str, names: HostNames | None = None) -> tuple[str, int]:
    """Drop this cluster's chains and every rule that is in or jumps to one of them; returns
    the new ``iptables-save`` text and how many chains were removed."""
    _ours = _Ours(names or HostNames())
    out: list[str] = []
    removed = 0
    for line in text.splitlines():
        decl = _CHAIN_DECL.match(line)
        if decl and _ours(decl.group(1)):
            removed += 1
            continue
        if line.startswith("-A "):
            words = line.split()
            if _ours(words[1]) or any(
                words[i - 1] in ("-j", "-g", "--jump", "--goto") and _ours(w)
                for i, w in enumerate(words)
                if i > 0
            ):
                continue
        out.append(line)
    return "\n".join(out) + "\n", removed


def _flush_iptables(names: HostNames) -> int:
    if shutil.which("iptables-save") is None:
        return 0
    removed = 0
    for table in ("nat", "filter", "mangle"):
        saved = subprocess.run(
            ["iptables-save", "-t", table], capture_output=True, text=True, check=False
        )
        if saved.returncode != 0 or not saved.stdout.strip():
            continue
        text, count = filter_iptables_save(saved.stdout, names)
        if count == 0:
            continue
        restored = subprocess.run(
            ["iptables-restore"], input=text, capture_output=True, text=True, check=False
        )
        if restored.returncode != 0:
            log.warning("iptables-restore (%s): %s", table, restored.stderr.strip()[:200])
        else:
            removed += count
    return removed


def _remove_network_policy(data_dir: Path) -> int:
    from sampan.netpol import NetworkPolicyError, cleanup, names_for_data_dir

    try:
        return cleanup(names_for_data_dir(data_dir))
    except NetworkPolicyError as exc:
        log.warning("network policy cleanup: %s", exc)
        return 0


def killall(
    data_dir: Path,
    *,
    default_data_dir: bool,
    cgroup_root: str = CGROUP_ROOT,
    names: HostNames | None = None,
    cluster_cidr: str | None = None,
) -> int:
    """Stop Sampan and everything it started for ``data_dir``; returns an exit code.
    ``names``: the cluster's host names (default: an unnamed cluster's); ``cluster_cidr``
    limits the routes flushed for a named cluster."""
    names = names or HostNames()
    data_dir = data_dir.resolve()
    agent = data_dir / "agent"
    sampan = _sampan_processes(data_dir, default_data_dir)
    if sampan:
        log.info("stopping sampan processes %s", sampan)
        _kill(sampan, signal.SIGTERM)
        _kill(_wait_gone(sampan, TERM_WAIT_S), signal.SIGKILL)
    nginx = _nginx_masters(agent / "ingress" / "nginx.conf")
    if nginx:  # SIGTERM: the master stops its workers (they hold the ingress ports) first
        log.info("stopping the ingress nginx %s", nginx)
        _kill(nginx, signal.SIGTERM)
        _kill(_wait_gone(nginx, TERM_WAIT_S), signal.SIGKILL)
    config = agent / "etc" / "containerd" / "config.toml"
    containerd = _with_arg(str(config))
    socket_path = agent / "run" / "containerd" / "containerd.sock"
    shims = _with_arg(str(socket_path))
    workloads = _cgroup_pids(cgroup_root)
    victims = containerd + shims + workloads
    if victims:
        log.info(
            "killing containerd %s, %d shims and %d pod processes",
            containerd,
            len(shims),
            len(workloads),
        )
        _kill(victims, signal.SIGKILL)
        _wait_gone(victims, TERM_WAIT_S)
    mounts = _unmount_under(agent) if agent.exists() else 0
    cgroups = _remove_cgroups(cgroup_root)
    devices = _delete_devices(_devices(names))
    overlay = _remove_overlay(names, cluster_cidr)
    policy = _remove_network_policy(data_dir)
    chains = _flush_iptables(names)
    log.info(
        "killall: %d mounts unmounted, %d cgroups removed, devices removed %s, "
        "%d overlay devices and routes removed, "
        "%d iptables chains removed, %d network policy chains and sets removed",
        mounts,
        cgroups,
        devices or "none",
        overlay,
        chains,
        policy,
    )
    return 0


def uninstall(
    data_dir: Path,
    *,
    default_data_dir: bool,
    etc_dir: Path | None,
    cgroup_root: str = CGROUP_ROOT,
    names: HostNames | None = None,
    cluster_cidr: str | None = None,
) -> int:
    killall(
        data_dir,
        default_data_dir=default_data_dir,
        cgroup_root=cgroup_root,
        names=names,
        cluster_cidr=cluster_cidr,
    )
    for path in (data_dir, etc_dir):
        if path is not None and path.exists():
            shutil.rmtree(path, ignore_errors=True)
            log.info("removed %s", path)
    return 0
