"""``sampan etcd-snapshot`` and ``sampan server --cluster-reset --cluster-reset-restore-path``
as a user runs them: a real server (SQLite), real kubectl, real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.supervisor.test_server_process import free_port, start_server, wait_for_log


def _sampan(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAMPAN_")}
    return subprocess.run(
        [sys.executable, "-m", "sampan.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def _kubectl(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0


def test_save_delete_namespace_restore_brings_it_back(tmp_path: Path) -> None:
    data = tmp_path / "data"
    kubeconfig = tmp_path / "kubeconfig.yaml"
    port = str(free_port())
    common = ("--config", os.devnull, "--data-dir", str(data))
    proc, log_path = start_server(tmp_path, "--disable-agent", "--https-listen-port", port)
    try:
        wait_for_log(proc, log_path, "all components ready")
        out = _kubectl(kubeconfig, "create", "namespace", "keep-me")
        assert out.returncode == 0, out.stderr
        saved = _sampan(
            "etcd-snapshot", "save", *common, "--node-name", "n1", "--kubeconfig", str(kubeconfig)
        )
        assert saved.returncode == 0, saved.stderr
        assert "note:" not in saved.stderr
        snaps = sorted((data / "server" / "db" / "snapshots").iterdir())
        assert [p.name.rsplit("-", 1)[0] for p in snaps] == ["on-demand-n1"]
        snapshot = snaps[0]
        assert snapshot.stat().st_mode & 0o777 == 0o600
        listed = _sampan("etcd-snapshot", "ls", *common)
        assert snapshot.name in listed.stdout
        # The record is an object every client can read.
        out = _kubectl(
            kubeconfig,
            "-n",
            "kube-system",
            "get",
            "configmap",
            "sampan-etcd-snapshots",
            "-o",
            "json",
        )
        assert out.returncode == 0, out.stderr
        record = json.loads(json.loads(out.stdout)["data"][snapshot.name])
        assert record["nodeName"] == "n1" and record["location"] == snapshot.as_uri()

        out = _kubectl(kubeconfig, "delete", "namespace", "keep-me", "--wait=true", "--timeout=90s")
        assert out.returncode == 0, out.stderr
        assert _kubectl(kubeconfig, "get", "namespace", "keep-me").returncode != 0
        _stop(proc)

        # A truncated file or a file that is not a snapshot: one line, nothing changed.
        db = data / "server" / "db" / "state.db"
        before = db.read_bytes()
        truncated = tmp_path / "truncated"
        truncated.write_bytes(snapshot.read_bytes()[:4096])
        for bad in (truncated, log_path):
            out = _sampan(
                "server",
                *common,
                "--cluster-reset",
                f"--cluster-reset-restore-path={bad}",
            )
            assert out.returncode == 1
            errors = [line for line in out.stderr.splitlines() if "cluster reset failed" in line]
            assert len(errors) == 1, out.stderr
            assert "Traceback" not in out.stderr
            assert db.read_bytes() == before

        out = _sampan(
            "server", *common, "--cluster-reset", f"--cluster-reset-restore-path={snapshot}"
        )
        assert out.returncode == 0, out.stderr
        assert "restart without --cluster-reset" in out.stderr

        proc, log_path = start_server(tmp_path, "--disable-agent", "--https-listen-port", port)
        wait_for_log(proc, log_path, "all components ready")
        out = _kubectl(kubeconfig, "get", "namespace", "keep-me", "-o", "jsonpath={.status.phase}")
        assert out.returncode == 0, out.stderr
        assert out.stdout == "Active"
        # The restored datastore keeps working: writes land after every earlier revision.
        out = _kubectl(kubeconfig, "create", "namespace", "after-restore")
        assert out.returncode == 0, out.stderr
        _stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
