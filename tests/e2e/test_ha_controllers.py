"""Two ``sampan server`` processes on one PostgreSQL datastore: only one runs the controllers
(and the scheduler); kill it and the other takes over (issue 5's acceptance: within 20 s).

The 20 s bound comes from the Lease: 15 s duration, renewed every 2 s by the leader and retried
every 2 s by the follower. The test checks those parameters on the Lease itself rather than
timing the takeover on a loaded machine (no timed assertions); it prints the time it saw."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.postgres import PostgresServer, start_postgres

pytestmark = pytest.mark.slow

TAKEOVER_LIMIT_S = 20.0
LEASE_DURATION_S = 15
TAKEOVER_WAIT_S = 90.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    with start_postgres() as server:
        yield server


def start(tmp: Path, name: str, dsn: str) -> tuple[subprocess.Popen[bytes], Path, Path]:
    log = tmp / f"{name}.log"
    kubeconfig = tmp / f"{name}.kubeconfig"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAMPAN_")}
    env["SAMPAN_DATASTORE_ENDPOINT"] = dsn
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sampan.cli.main",
            "server",
            "--config",
            os.devnull,
            "--data-dir",
            str(tmp / name),
            "--https-listen-port",
            str(free_port()),
            "--write-kubeconfig",
            str(kubeconfig),
            "--disable-agent",
            "--token",
            "shared-secret",
        ],
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
        env=env,
    )
    return proc, log, kubeconfig


def wait_log(proc: subprocess.Popen[bytes], log: Path, needle: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if needle in log.read_text():
            return
        assert proc.poll() is None, log.read_text()
        time.sleep(0.2)
    raise AssertionError(f"no {needle!r} within {timeout_s}s:\n{log.read_text()}")


def lease(kubeconfig: Path) -> dict:
    out = subprocess.run(
        [
            "kubectl",
            "--kubeconfig",
            str(kubeconfig),
            "-n",
            "kube-system",
            "get",
            "lease",
            "kube-controller-manager",
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if out.returncode != 0:
        return {}
    return json.loads(out.stdout)["spec"]


def lease_holder(kubeconfig: Path) -> str:
    return lease(kubeconfig).get("holderIdentity") or ""


def test_one_leader_and_takeover(tmp_path: Path, postgres: PostgresServer) -> None:
    dsn = postgres.create_database()
    a, a_log, _ = start(tmp_path, "a", dsn)
    procs = [a]
    try:
        wait_log(a, a_log, "all components ready", 60)
        wait_log(a, a_log, "became the leader", 30)
        b, b_log, b_kc = start(tmp_path, "b", dsn)
        procs.append(b)
        wait_log(b, b_log, "all components ready", 60)
        time.sleep(3)  # b keeps trying: it must stay a follower while a renews
        assert "term 1 started" in a_log.read_text()
        assert "term 1 started" not in b_log.read_text()
        spec = lease(b_kc)
        holder_a = spec.get("holderIdentity") or ""
        assert holder_a and holder_a in a_log.read_text()
        assert spec["leaseDurationSeconds"] == LEASE_DURATION_S

        a.send_signal(signal.SIGKILL)  # no release: b must wait for the lease to expire
        a.wait(timeout=10)
        killed_at = time.monotonic()
        # The helm controller elects its own leader under another Lease: wait for this one.
        wait_log(b, b_log, "controllers (kube-controller-manager): term 1 started", TAKEOVER_WAIT_S)
        print(f"takeover after {time.monotonic() - killed_at:.1f}s (goal < {TAKEOVER_LIMIT_S}s)")
        holder_b = lease_holder(b_kc)
        assert holder_b and holder_b != holder_a
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
