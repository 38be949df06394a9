"""Pod-level cgroups: ``<cgroup-root>/[burstable|besteffort/]pod<uid>`` with the pod's limits.

The kubelet owns these directories (containerd only creates the containers' cgroups below
them, as the sandbox's and containers' ``cgroup_parent``). Layout as upstream with the cgroupfs
driver: Guaranteed pods directly under the root, Burstable and BestEffort under their tier.

Works on cgroup v1 (one hierarchy per controller under /sys/fs/cgroup, possibly with a
``unified`` v2 mount beside them) and on pure cgroup v2. Every function here is blocking
file-system work: call it from a thread.

Invariants: ``ensure`` is idempotent and only writes limits that differ; ``remove`` deletes
the pod's directory tree bottom-up in every hierarchy and leaves tier directories alone.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CGROUP_FS", "CgroupManager", "PodCgroupLimits", "pod_cgroup_parent"]

log = logging.getLogger("sampan.kubelet.cgroups")

CGROUP_FS = Path("/sys/fs/cgroup")
_V1_LIMIT_CONTROLLERS = ("cpu", "memory", "pids")
_TIERS = {"Guaranteed": "", "Burstable": "burstable", "BestEffort": "besteffort"}


@dataclass(frozen=True)
class PodCgroupLimits:
    cpu_shares: int
    cpu_quota_us: int  # 0: none
    cpu_period_us: int
    memory_limit_bytes: int | None
    pids_limit: int | None


def pod_cgroup_parent(root: str, qos: str, uid: str) -> str:
    tier = _TIERS.get(qos, "burstable")
    parts = [root.rstrip("/")]
    if tier:
        parts.append(tier)
    parts.append(f"pod{uid}")
    return "/".join(parts)


class CgroupManager:
    """Creates, limits, lists and removes pod cgroups below ``root`` (e.g. ``/kubepods``)."""

    def __init__(self, root: str, *, fs: Path = CGROUP_FS) -> None:
        self.root = root.rstrip("/")
        self.fs = fs
        self.v2 = (fs / "cgroup.controllers").exists()

    def _hierarchies(self) -> list[Path]:
        if self.v2:
            return [self.fs]
        result = []
        with contextlib.suppress(OSError):
            for entry in sorted(self.fs.iterdir()):
                if entry.is_dir() and not entry.is_symlink():
                    result.append(entry)
        return result

    def _dir(self, hierarchy: Path, cgroup: str) -> Path:
        return hierarchy / cgroup.lstrip("/")

    def ensure(self, cgroup: str, limits: PodCgroupLimits) -> None:
        if self.v2:
            self._ensure_v2(cgroup, limits)
            return
        for controller in _V1_LIMIT_CONTROLLERS:
            directory = self._dir(self.fs / controller, cgroup)
            directory.mkdir(parents=True, exist_ok=True)
        cpu = self._dir(self.fs / "cpu", cgroup)
        _write(cpu / "cpu.shares", str(limits.cpu_shares))
        _write(cpu / "cpu.cfs_period_us", str(limits.cpu_period_us))
        _write(cpu / "cpu.cfs_quota_us", str(limits.cpu_quota_us or -1))
        memory = self._dir(self.fs / "memory", cgroup)
        _write(
            memory / "memory.limit_in_bytes",
            str(limits.memory_limit_bytes) if limits.memory_limit_bytes else "-1",
        )
        pids = self._dir(self.fs / "pids", cgroup)
        _write(pids / "pids.max", str(limits.pids_limit) if limits.pids_limit else "max")

    def _ensure_v2(self, cgroup: str, limits: PodCgroupLimits) -> None:
        directory = self._dir(self.fs, cgroup)
        directory.mkdir(parents=True, exist_ok=True)
        # Enable the controllers on every ancestor so the pod's limits files exist.
        current = self.fs
        for part in Path(cgroup.lstrip("/")).parts:
            with contextlib.suppress(OSError):
                _write(current / "cgroup.subtree_control", "+cpu +memory +pids")
            current = current / part
        weight = 1 + ((limits.cpu_shares - 2) * 9999) // 262142
        _write(directory / "cpu.weight", str(weight))
        quota = str(limits.cpu_quota_us) if limits.cpu_quota_us else "max"
        _write(directory / "cpu.max", f"{quota} {limits.cpu_period_us}")
        _write(
            directory / "memory.max",
            str(limits.memory_limit_bytes) if limits.memory_limit_bytes else "max",
        )
        _write(directory / "pids.max", str(limits.pids_limit) if limits.pids_limit else "max")

    def remove(self, cgroup: str) -> bool:
        """Remove the pod's cgroup everywhere; True if nothing is left."""
        clean = True
        for hierarchy in self._hierarchies():
            top = self._dir(hierarchy, cgroup)
            if not top.is_dir():
                continue
            walk = sorted(os.walk(top), key=lambda w: len(w[0]), reverse=True)
            for dirpath, _dirs, _files in walk:
                try:
                    os.rmdir(dirpath)
                except OSError as exc:
                    clean = False
                    log.debug("cgroup %s: %s", dirpath, exc)
        return clean

    def pod_uids(self) -> dict[str, str]:
        """Pod cgroups that exist now: uid -> cgroup path."""
        found: dict[str, str] = {}
        hierarchy = self.fs if self.v2 else self.fs / "memory"
        for tier in ("", "burstable", "besteffort"):
            cgroup = f"{self.root}/{tier}".rstrip("/")
            directory = self._dir(hierarchy, cgroup)
            with contextlib.suppress(OSError):
                for entry in directory.iterdir():
                    if entry.name.startswith("pod") and entry.is_dir():
                        found[entry.name[3:]] = f"{cgroup}/{entry.name}"
        return found


def _write(path: Path, value: str) -> None:
    try:
        if path.read_text().strip() == value:
            return
    except OSError:
        pass
    try:
        path.write_text(value)
    except OSError as exc:
        log.warning("cgroup: cannot write %s=%s: %s", path, value, exc)
