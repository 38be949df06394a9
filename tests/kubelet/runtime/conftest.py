"""A private containerd for the runtime tests, and everything needed to leave no trace.

The session fixture ``runtime_env`` starts ``ContainerRuntime`` on a temporary data dir (own
socket, root, state — never a system containerd) with the busybox test image dropped into its
images dir beforehand, so the start-time import is exercised. Teardown always runs, whatever
the tests did: remove every sandbox through CRI, stop containerd, kill shims of this instance
still alive (found by their ``-address`` argument), unmount everything under the data dir,
remove the pod cgroups and the test bridge, delete the data dir.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from sampan.kubelet.runtime import ContainerdConfig, ContainerRuntime, pb
from tests.support.images import BUSYBOX_IMAGE, busybox_archive

log = logging.getLogger("tests.kubelet.runtime")

CLEANUP_TIMEOUT_S = 60.0
_MNT_DETACH = 2


@dataclass(frozen=True)
class HostNames:
    """Host-wide names a test session creates, unique per session so that two sessions (two
    helpers, or CI beside a developer) never share or delete each other's."""

    cgroup_root: str  # e.g. "/sampan-test-1a2b3c4d": every test pod's cgroup parent is below
    bridge: str  # at most 15 characters (IFNAMSIZ)
    pod_subnet: str

    @classmethod
    def new(cls) -> HostNames:
        token = secrets.token_hex(4)
        third_octet = secrets.randbelow(250) + 1
        return cls(
            cgroup_root=f"/sampan-test-{token}",
            bridge=f"sprt{token}",
            pod_subnet=f"10.199.{third_octet}.0/24",
        )


@dataclass
class RuntimeEnv:
    """What the tests get: the started runtime, its config, and per-session names."""

    runtime: ContainerRuntime
    cfg: ContainerdConfig
    data_dir: Path
    image_cache_dir: Path
    names: HostNames

    def pod_dir(self, name: str, uid: str) -> Path:
        return self.data_dir / "pods" / f"default_{name}_{uid}"

    def sandbox_config(self, name: str, *, host_network: bool) -> pb.PodSandboxConfig:
        uid = secrets.token_hex(8)
        log_dir = self.pod_dir(name, uid)
        log_dir.mkdir(parents=True, exist_ok=True)
        network = pb.NamespaceMode.NODE if host_network else pb.NamespaceMode.POD
        return pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=name, uid=uid, namespace="default", attempt=0),
            # As the kubelet: a host-network pod shares the host's UTS namespace, and runc
            # refuses to set a hostname there.
            hostname="" if host_network else name,
            log_directory=str(log_dir),
            labels={"io.kubernetes.pod.name": name, "sampan.test": "runtime"},
            linux=pb.LinuxPodSandboxConfig(
                cgroup_parent=f"{self.names.cgroup_root}/pod{uid}",
                security_context=pb.LinuxSandboxSecurityContext(
                    # As the kubelet without shareProcessNamespace: each container gets its
                    # own pid namespace (CRI's default, POD, would share the sandbox's).
                    namespace_options=pb.NamespaceOption(
                        network=network, pid=pb.NamespaceMode.CONTAINER
                    ),
                ),
            ),
        )


def container_config(
    name: str, command: list[str], *, host_network: bool = False
) -> pb.ContainerConfig:
    network = pb.NamespaceMode.NODE if host_network else pb.NamespaceMode.POD
    return pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name=name, attempt=0),
        image=pb.ImageSpec(image=BUSYBOX_IMAGE),
        command=command,
        log_path=f"{name}/0.log",
        labels={"io.kubernetes.container.name": name},
        linux=pb.LinuxContainerConfig(
            security_context=pb.LinuxContainerSecurityContext(
                namespace_options=pb.NamespaceOption(
                    network=network, pid=pb.NamespaceMode.CONTAINER
                )
            )
        ),
    )


def write_test_cni_conflist(conf_dir: Path, names: HostNames) -> None:
    """bridge + host-local + loopback, no masquerade (so no iptables rule to clean up)."""
    conf_dir.mkdir(parents=True, exist_ok=True)
    conflist = {
        "cniVersion": "1.0.0",
        "name": "sampan-runtime-test",
        "plugins": [
            {
                "type": "bridge",
                "bridge": names.bridge,
                "isGateway": True,
                "ipMasq": False,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": names.pod_subnet}]],
                    "dataDir": str(conf_dir.parent / "ipam"),
                },
            },
            {"type": "loopback"},
        ],
    }
    tmp = conf_dir / "10-sampan-test.conflist.tmp"
    tmp.write_text(json.dumps(conflist))
    os.replace(tmp, conf_dir / "10-sampan-test.conflist")


async def remove_all_sandboxes(runtime: ContainerRuntime) -> None:
    for sandbox in await runtime.runtime.list_pod_sandbox():
        await runtime.runtime.stop_pod_sandbox(sandbox.id)
        await runtime.runtime.remove_pod_sandbox(sandbox.id)


def _pids_with_arg(value: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if value.encode() in argv:
            pids.append(int(entry.name))
    return pids


def _mounts_under(root: Path) -> list[str]:
    prefix = str(root) + "/"
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mount_point = line.split()[4].replace("\\040", " ")
        if mount_point.startswith(prefix):
            mounts.append(mount_point)
    return mounts


def cleanup_host(data_dir: Path, socket_path: Path, names: HostNames) -> None:
    """Best-effort removal of everything this session left on the host (blocking)."""
    # Shims of this containerd (found by their -address argument), then whatever is still in
    # this session's pod cgroups: only processes this test instance started.
    for pid in _pids_with_arg(str(socket_path)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    pids_top = Path("/sys/fs/cgroup/pids") / names.cgroup_root.lstrip("/")
    if pids_top.is_dir():
        for procs in pids_top.rglob("cgroup.procs"):
            for pid in procs.read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    for mount_point in sorted(_mounts_under(data_dir), key=len, reverse=True):
        if libc.umount2(mount_point.encode(), _MNT_DETACH) != 0:
            log.warning("umount %s: %s", mount_point, os.strerror(ctypes.get_errno()))
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        top = hierarchy / names.cgroup_root.lstrip("/")
        if not top.is_dir():
            continue
        for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda w: len(w[0]), reverse=True):
            with contextlib.suppress(OSError):
                os.rmdir(dirpath)
    if Path(f"/sys/class/net/{names.bridge}").exists():
        subprocess.run(["ip", "link", "del", names.bridge], check=False)
    shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def image_cache_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="sampan-images-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def runtime_env(image_cache_dir: Path) -> AsyncIterator[RuntimeEnv]:
    data_dir = Path(tempfile.mkdtemp(prefix="sampan-rt-"))
    cfg = ContainerdConfig(data_dir=data_dir)
    names = HostNames.new()
    archive = await asyncio.to_thread(busybox_archive, image_cache_dir)
    cfg.images_dir.mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread(shutil.copy, archive, cfg.images_dir / archive.name)
    runtime = ContainerRuntime(cfg, image_poll_interval_s=0.2)
    try:
        await runtime.start()
        yield RuntimeEnv(runtime, cfg, data_dir, image_cache_dir, names)
    finally:
        started = time.monotonic()
        if runtime.connection is not None:
            try:
                await asyncio.wait_for(remove_all_sandboxes(runtime), CLEANUP_TIMEOUT_S)
            except Exception:
                log.exception("could not remove the test sandboxes through CRI")
        await runtime.stop()
        await asyncio.to_thread(cleanup_host, data_dir, cfg.socket_path, names)
        log.info("runtime test cleanup took %.1fs", time.monotonic() - started)
