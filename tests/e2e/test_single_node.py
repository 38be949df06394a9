"""The whole single-node cluster as a user runs it: ``sampan server`` (a real process with
containerd as its child), the system kubectl, real pods, then ``sampan killall``."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.images import busybox_archive

pytestmark = pytest.mark.slow

READY_TIMEOUT_S = 90.0
KUBECTL = shutil.which("kubectl")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "d"
        self.config = root / "config.yaml"
        self.kubeconfig = root / "kubeconfig.yaml"
        self.log = root / "server.log"
        self.cgroup_root = f"/sampan-e2e-{os.getpid()}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = free_port()
        self.extra_config = ""
        self.manager_port: int | None = None
        """The manager's HTTPS port, when the configuration serves it."""
        self.prefix: list[str] = []
        """Runs the server, kubectl and sampan commands inside (e.g. ``nsenter --net=...``)."""

    def sampan(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.prefix, sys.executable, "-m", "sampan.cli.main", *args],
            capture_output=True,
            text=True,
            timeout=120,
            env=self.env(),
        )

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SAMPAN_")}
        env["KUBECONFIG"] = str(self.kubeconfig)
        return env

    def start(self) -> None:
        self.config.write_text(
            f"kubelet-arg:\n- cgroup-root={self.cgroup_root}\n"
            f"write-kubeconfig: {self.kubeconfig}\n"
            f"https-listen-port: {self.port}\n" + self.extra_config
        )
        images = self.data / "agent" / "images"
        images.mkdir(parents=True)
        shutil.copy(busybox_archive(self.root / "cache"), images / "busybox.tar")
        self.proc = subprocess.Popen(
            [
                *self.prefix,
                sys.executable,
                "-m",
                "sampan.cli.main",
                "server",
                "--config",
                str(self.config),
                "--data-dir",
                str(self.data),
            ],
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("w"),
            env=self.env(),
        )

    def kubectl(self, *args: str, check: bool = True) -> str:
        out = subprocess.run(
            [*self.prefix, KUBECTL, *args],
            capture_output=True,
            text=True,
            timeout=120,
            env=self.env(),
        )
        if check and out.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: {out.stderr}\n{self.tail()}")
        return out.stdout

    def tail(self) -> str:
        return "\n".join(self.log.read_text().splitlines()[-40:])

    def wait(self, what: str, check, timeout_s: float = READY_TIMEOUT_S):
        deadline = time.monotonic() + timeout_s
        last = None
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, self.tail()
            last = check()
            if last:
                return last
            time.sleep(0.5)
        raise AssertionError(f"timed out waiting for {what} (last: {last!r})\n{self.tail()}")


@pytest.fixture
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """A started single-node ``sampan server`` (its readiness is the test's to wait for),
    stopped and cleaned up after the test (``sampan killall``). Parametrised indirectly with
    ``{"manager": True}``, it also serves the manager on a free port (``manager_port``)."""
    if KUBECTL is None:
        pytest.fail("kubectl is not installed")
    options: dict[str, Any] = getattr(request, "param", {})
    # A short path: containerd's socket must fit in a unix socket address.
    c = Cluster(Path(tempfile.mkdtemp(prefix="spe2e-", dir="/tmp")))
    if options.get("manager"):
        c.manager_port = free_port()
        c.extra_config += f"manager: true\nmanager-port: {c.manager_port}\n"
    try:
        c.start()
        yield c
    finally:
        if c.proc is not None and c.proc.poll() is None:
            c.proc.send_signal(signal.SIGTERM)
            try:
                c.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                c.proc.kill()
        c.sampan("killall", "--config", str(c.config), "--data-dir", str(c.data))
        shutil.rmtree(c.root, ignore_errors=True)


def test_pods_run_and_killall_cleans_up(cluster: Cluster) -> None:
    def node_ready() -> bool:
        out = cluster.kubectl("get", "nodes", "-o", "json", check=False)
        try:
            nodes = json.loads(out)["items"]
        except (ValueError, KeyError):
            return False
        return any(
            c["type"] == "Ready" and c["status"] == "True"
            for n in nodes
            for c in n.get("status", {}).get("conditions", [])
        )

    cluster.wait("the node to be Ready", node_ready)
    # The server labels its own Node (its kubelet may not: NodeRestriction); it created the
    # kube-dns Service (the agent identity may not create Services).
    cluster.wait(
        "the control-plane role label",
        lambda: "control-plane" in cluster.kubectl("get", "nodes", "--no-headers"),
    )
    assert "10.43.0.10" in cluster.kubectl("get", "service", "kube-dns", "-n", "kube-system")
    # The node's own credentials: Node authorizer and NodeRestriction (kubectl as a user would).
    etc = cluster.data / "agent" / "etc"
    as_kubelet = ("--kubeconfig", str(etc / "kubelet.kubeconfig"))
    as_agent = ("--kubeconfig", str(etc / "agent.kubeconfig"))
    out = subprocess.run(
        [KUBECTL, *as_kubelet, "get", "secrets", "-n", "kube-system"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0 and "Forbidden" in out.stderr, out.stderr
    out = subprocess.run(
        [KUBECTL, *as_kubelet, "create", "token", "default", "-n", "kube-system"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0, out.stdout
    assert "no relationship found between node" in out.stderr, out.stderr
    out = subprocess.run(
        [KUBECTL, *as_agent, "create", "service", "clusterip", "grab", "--tcp=80"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0 and "forbidden" in out.stderr, out.stderr
    cluster.kubectl("run", "b", "--image=busybox:1.36", "--", "sh", "-c", "echo hi; sleep 3600")
    cluster.wait(
        "pod b Running",
        lambda: cluster.kubectl("get", "pod", "b", "-o", "jsonpath={.status.phase}") == "Running",
    )
    assert cluster.kubectl("logs", "b").strip() == "hi"
    assert cluster.kubectl("exec", "b", "--", "cat", "/etc/hostname").strip() == "b"

    cluster.kubectl(
        "create",
        "deployment",
        "web",
        "--image=busybox:1.36",
        "--replicas=2",
        "--",
        "httpd",
        "-f",
        "-p",
        "8080",
    )
    cluster.kubectl("rollout", "status", "deploy/web", "--timeout=90s")
    pods = cluster.kubectl("get", "pods", "-l", "app=web", "-o", "name").split()
    assert len(pods) == 2

    # SIGTERM stops Sampan within 10 s; the containers keep running (as with K3s).
    assert cluster.proc is not None
    cluster.proc.send_signal(signal.SIGTERM)
    assert cluster.proc.wait(timeout=15) == 0, cluster.tail()
    socket_path = str(cluster.data / "agent" / "run" / "containerd" / "containerd.sock")
    shims = subprocess.run(["pgrep", "-f", socket_path], capture_output=True, text=True)
    assert shims.stdout.split(), "the pods' shims should outlive sampan"

    out = cluster.sampan(
        "killall", "--config", str(cluster.config), "--data-dir", str(cluster.data)
    )
    assert out.returncode == 0, out.stderr
    time.sleep(0.5)
    left = subprocess.run(["pgrep", "-f", socket_path], capture_output=True, text=True)
    alive = [
        p
        for p in left.stdout.split()
        if Path(f"/proc/{p}/stat").exists() and " Z " not in Path(f"/proc/{p}/stat").read_text()
    ]
    assert not alive, f"processes left after killall: {alive}"
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(cluster.data) not in mounts
    assert not Path("/sys/class/net/cni0").exists()
