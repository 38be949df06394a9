"""``sampan server`` as a user runs it: a real process, real signals, its own data dir."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

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


def _kubectl(kubeconfig: Path, *args: str, stdin: str | None = None) -> tuple[int, str]:
    done = subprocess.run(
        ["kubectl", f"--kubeconfig={kubeconfig}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode, done.stdout + done.stderr


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
def test_server_fills_a_long_lived_service_account_token(tmp_path: Path) -> None:
    """The server hands its service-account key to ``serviceaccount-token``: a token Secret a
    user applies gets a token that authenticates as the ServiceAccount."""
    proc, log_path = start_server(tmp_path, "--disable-agent")
    try:
        wait_for_log(proc, log_path, "all components ready")
        admin = tmp_path / "kubeconfig.yaml"
        code, out = _kubectl(admin, "create", "serviceaccount", "robot")
        assert code == 0, out
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/service-account-token",
            "metadata": {
                "name": "robot-token",
                "annotations": {"kubernetes.io/service-account.name": "robot"},
            },
        }
        code, out = _kubectl(admin, "apply", "-f", "-", stdin=json.dumps(secret))
        assert code == 0, out
        deadline = time.monotonic() + READY_TIMEOUT_S
        encoded = ""
        while not encoded and time.monotonic() < deadline:
            code, encoded = _kubectl(
                admin, "get", "secret", "robot-token", "-o", "jsonpath={.data.token}"
            )
            assert code == 0, encoded
            time.sleep(0.2)
        assert encoded, "the token Secret was never filled"
        token = base64.b64decode(encoded).decode()
        # Only the token: the server and its CA from the admin kubeconfig, no certificate.
        cluster = yaml.safe_load(admin.read_text())["clusters"][0]["cluster"]
        ca_file = tmp_path / "ca.crt"
        ca_file.write_bytes(base64.b64decode(cluster["certificate-authority-data"]))
        code, out = _kubectl(
            Path(os.devnull),
            f"--server={cluster['server']}",
            f"--certificate-authority={ca_file}",
            f"--token={token}",
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        )
        assert code == 0, out
        assert out == "system:serviceaccount:default:robot"
        assert token not in log_path.read_text()  # never logged
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        finally:
            if proc.poll() is None:
                proc.kill()
