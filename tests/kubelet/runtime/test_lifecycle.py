"""Starting and stopping containerd itself: failures, and one left behind by a killed agent.

Each test runs its own short-lived containerd on its own temporary data dir (no pods), so it
does not disturb the session instance the other modules share.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from sampan.kubelet.runtime import cri
from sampan.kubelet.runtime.containerd import (
    Containerd,
    ContainerdConfig,
    ContainerdError,
    render_config,
)
from tests.kubelet.runtime.conftest import HostNames, cleanup_host


@pytest.fixture
def data_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="sampan-lc-"))
    yield path
    cfg = ContainerdConfig(data_dir=path)
    cleanup_host(path, cfg.socket_path, HostNames.new())


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def test_containerd_without_cri_fails_fast_with_the_reason(data_dir: Path) -> None:
    cfg = ContainerdConfig(data_dir=data_dir, snapshotter="no-such-snapshotter")
    containerd = Containerd(cfg, detect_overlay=False)
    with pytest.raises(ContainerdError) as info:
        await containerd.start()
    message = str(info.value)
    assert "CRI plugin" in message
    assert "no-such-snapshotter" in message  # the log line that says why
    assert containerd.pid is not None and not _alive(containerd.pid)
    await containerd.stop()


async def test_containerd_left_by_a_killed_agent_is_replaced(data_dir: Path) -> None:
    cfg = ContainerdConfig(data_dir=data_dir)
    for directory in (cfg.config_path.parent, cfg.state_dir, cfg.root_dir):
        directory.mkdir(parents=True, exist_ok=True)
    cfg.config_path.write_text(render_config(cfg))
    # What a previous agent that was SIGKILLed leaves: containerd in its own session, and
    # the pid file naming it.
    orphan = subprocess.Popen(
        ["containerd", "--config", str(cfg.config_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        cfg.pid_path.write_text(f"{orphan.pid}\n")
        async with cri.connect(cfg.endpoint, timeout_s=5.0) as conn:
            for _ in range(100):
                try:
                    await conn.runtime.version(timeout_s=1.0)
                    break
                except cri.UnavailableError:
                    await asyncio.sleep(0.05)

        containerd = Containerd(cfg, ready_timeout_s=20.0)
        await containerd.start()
        try:
            assert await asyncio.to_thread(orphan.wait, 10) is not None
            assert containerd.pid != orphan.pid
            assert int(cfg.pid_path.read_text()) == containerd.pid
            async with cri.connect(containerd.endpoint) as conn:
                assert (await conn.runtime.version()).runtime_name == "containerd"
        finally:
            await containerd.stop()
        assert not cfg.pid_path.exists()
    finally:
        if orphan.poll() is None:
            orphan.kill()
            orphan.wait()


def test_socket_path_too_long_is_refused() -> None:
    cfg = ContainerdConfig(data_dir=Path("/tmp") / ("x" * 100))

    async def start() -> None:
        await Containerd(cfg).start()

    with pytest.raises(ContainerdError, match="too long"):
        asyncio.run(start())
    assert not os.path.exists(cfg.data_dir)
    shutil.rmtree(cfg.data_dir, ignore_errors=True)
