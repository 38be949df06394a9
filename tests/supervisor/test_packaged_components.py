"""Packaged components and systemd readiness in a real ``sampan server`` process (control
plane only: ``--disable-agent``, no containerd, so no node lock is needed).

* the server writes the packaged manifests with its values and ``kubectl get addons`` lists
  them; restarted with ``--disable=local-storage`` it deletes that component's objects, file
  and AddOn (K3s's behaviour) and leaves the others;
* with ``NOTIFY_SOCKET`` set (a unix datagram socket of the test, as systemd gives a
  ``Type=notify`` service) it sends ``READY=1`` once every component is ready and
  ``STOPPING=1`` on SIGTERM.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.supervisor.test_server_process import free_port

pytestmark = pytest.mark.slow

READY_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0
KUBECTL = shutil.which("kubectl")


class Server:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.kubeconfig = root / "kubeconfig.yaml"
        self.port = free_port()
        self.proc: subprocess.Popen[str] | None = None
        self.log = root / "server.log"

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("SAMPAN_") and k != "NOTIFY_SOCKET"
        }
        env["KUBECONFIG"] = str(self.kubeconfig)
        env.update(extra)
        return env

    def start(self, *extra: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sampan.cli.main",
                "server",
                "--config",
                os.devnull,
                "--data-dir",
                str(self.data),
                "--https-listen-port",
                str(self.port),
                "--bind-address",
                "127.0.0.1",
                "--write-kubeconfig",
                str(self.kubeconfig),
                "--disable-agent",
                *extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("a"),
            text=True,
            env=env or self.env(),
        )

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"the server did not stop\n{self.tail()}") from None

    def tail(self) -> str:
        return "\n".join(self.log.read_text().splitlines()[-40:])

    def kubectl(self, *args: str) -> subprocess.CompletedProcess[str]:
        assert KUBECTL is not None
        return subprocess.run(
            [KUBECTL, *args], capture_output=True, text=True, timeout=60, env=self.env()
        )

    def wait(self, what: str, check) -> object:
        deadline = time.monotonic() + READY_TIMEOUT_S
        last = None
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, self.tail()
            last = check()
            if last:
                return last
            time.sleep(0.3)
        raise AssertionError(f"timed out waiting for {what} (last: {last!r})\n{self.tail()}")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    if KUBECTL is None:
        pytest.fail("kubectl is not installed")
    s = Server(tmp_path)
    try:
        yield s
    finally:
        if s.proc is not None and s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait()


def test_disable_removes_a_packaged_component(server: Server) -> None:
    server.start()
    manifests = server.data / "server" / "manifests"

    def addons() -> str:
        out = server.kubectl("get", "addons", "-n", "kube-system")
        names = [line.split()[0] for line in out.stdout.splitlines()[1:]]
        return out.stdout if {"coredns", "ingress", "local-storage"} <= set(names) else ""

    listing = str(server.wait("the packaged AddOns", addons))
    assert listing.splitlines()[0].split() == ["NAME", "SOURCE", "CHECKSUM"]
    assert f"{manifests}/local-storage.yaml" in listing
    coredns = (manifests / "coredns.yaml").read_text()
    assert "clusterIP: 10.43.0.10" in coredns and "%{" not in coredns
    server.wait(
        "the kube-dns Service",
        lambda: server.kubectl("get", "service", "kube-dns", "-n", "kube-system").returncode == 0,
    )
    server.wait(
        "the local-path StorageClass",
        lambda: server.kubectl("get", "storageclass", "local-path").returncode == 0,
    )
    assert server.stop() == 0

    server.start("--disable=local-storage")
    server.wait(
        "local-path to be deleted",
        lambda: "NotFound" in server.kubectl("get", "storageclass", "local-path").stderr,
    )
    server.wait(
        "the local-storage AddOn to be deleted",
        lambda: (
            "NotFound"
            in server.kubectl("get", "addon", "local-storage", "-n", "kube-system").stderr
        ),
    )
    assert not (manifests / "local-storage.yaml").exists()
    # The other packaged components stay.
    assert server.kubectl("get", "ingressclass", "sampan-nginx").returncode == 0
    assert server.kubectl("get", "addon", "ingress", "-n", "kube-system").returncode == 0
    assert server.stop() == 0


def test_sd_notify_ready_and_stopping(server: Server, tmp_path: Path) -> None:
    address = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        sock.settimeout(READY_TIMEOUT_S)
        server.start(env=server.env(NOTIFY_SOCKET=address))
        message = sock.recv(4096).decode()
        assert message.splitlines()[0] == "READY=1", message
        assert "all components ready" in server.log.read_text()
        # The server answers by then.
        assert server.kubectl("get", "namespaces").returncode == 0
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        message = sock.recv(4096).decode()
        assert message.splitlines()[0] == "STOPPING=1", message
        assert server.proc.wait(timeout=STOP_TIMEOUT_S) == 0
