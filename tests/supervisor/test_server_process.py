"""``sampan server`` as a user runs it: a real process, real signals, its own data dir."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

READY_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen[str], Path]:
    log_path = tmp_path / "server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAMPAN_")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sampan.cli.main",
            "server",
            "--config",
            os.devnull,
            "--data-dir",
            str(tmp_path / "data"),
            "--https-listen-port",
            str(free_port()),
            "--bind-address",
            "127.0.0.1",
            "--write-kubeconfig",
            str(tmp_path / "kubeconfig.yaml"),
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=log_path.open("w"),
        text=True,
        env=env,
    )
    return proc, log_path


def wait_for_log(proc: subprocess.Popen[str], log_path: Path, needle: str) -> str:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        text = log_path.read_text()
        if needle in text:
            return text
        if proc.poll() is not None:
            pytest.fail(f"sampan server exited {proc.returncode}:\n{text}")
        time.sleep(0.1)
    proc.kill()
    pytest.fail(f"no {needle!r} in the log:\n{log_path.read_text()}")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_server_starts_datastore_and_api_then_stops_cleanly(tmp_path: Path, sig) -> None:
    # The control plane only: the whole node (agent, containerd) has its own e2e tests.
    proc, log_path = start_server(tmp_path, "--disable-agent")
    try:
        text = wait_for_log(proc, log_path, "all components ready")
        db = tmp_path / "data" / "server" / "db" / "state.db"
        assert f"datastore ready: sqlite {db}" in text
        assert "API server ready at https://" in text
        kubeconfig = tmp_path / "kubeconfig.yaml"
        assert kubeconfig.exists()
        assert kubeconfig.stat().st_mode & 0o777 == 0o600
        token = tmp_path / "data" / "server" / "token"
        assert token.read_text().startswith("K10")
        assert token.stat().st_mode & 0o777 == 0o600
        assert token.read_text().split(":")[-1].strip() not in text  # never logged
        proc.send_signal(sig)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log_path.read_text()
    assert f"received {sig.name}" in text
    assert text.index("scheduler: stopped") < text.index("controllers: stopped")
    assert text.index("controllers: stopped") < text.index("apiserver: stopped")
    assert text.index("apiserver: stopped") < text.index("datastore: stopped")
    assert "Traceback" not in text


def test_dsn_password_never_logged(tmp_path: Path) -> None:
    """An unreachable PostgreSQL endpoint fails the start with a clear line, no password."""
    port = free_port()  # nothing listens there
    proc, log_path = start_server(
        tmp_path, "--datastore-endpoint", f"postgres://sampan:hunter2@127.0.0.1:{port}/db"
    )
    try:
        assert proc.wait(timeout=60) == 1
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log_path.read_text()
    assert "hunter2" not in text
    assert "datastore failed to start" in text
