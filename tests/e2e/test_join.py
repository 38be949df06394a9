"""A second "machine" (a network namespace with its own data dir) joins the server with the
token; a wrong token, a stolen node name and a server address its certificate does not carry
are refused with one clear line."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_single_node import KUBECTL, Cluster
from tests.support.netns import ip, veth_namespace  # noqa: F401 (ip: re-exported)

pytestmark = pytest.mark.slow

NETNS = f"spjoin{os.getpid() % 100000}"
HOST_IF = f"spj{os.getpid() % 100000}h"
NS_IF = f"spj{os.getpid() % 100000}n"
# Addresses of this test's own veth pair, inside its own network namespace.
HOST_IP = "10.250.77.1"
NS_IP = "10.250.77.2"
# Another address of the server's host, not among its certificate's names (no --tls-san).
UNLISTED_IP = "10.250.78.1"


# Enter only the network namespace (see tests.support.netns).
IN_NETNS = ["nsenter", f"--net=/run/netns/{NETNS}", "--"]


@pytest.fixture
def netns() -> Iterator[str]:
    with veth_namespace(
        NETNS, HOST_IF, NS_IF, HOST_IP, NS_IP, extra_host_addresses=(UNLISTED_IP,)
    ) as namespace:
        yield namespace.name


class Agent:
    def __init__(
        self, root: Path, name: str, server: str, token: str, extra_config: str = ""
    ) -> None:
        self.root = root
        self.data = root / "d"
        self.log = root / "agent.log"
        self.config = root / "config.yaml"
        self.config.write_text(
            f"kubelet-arg:\n- cgroup-root=/sampan-e2e-{root.name}\n" + extra_config
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("SAMPAN_")}
        self.proc = subprocess.Popen(
            [
                *IN_NETNS,
                sys.executable,
                "-m",
                "sampan.cli.main",
                "agent",
                "--config",
                str(self.config),
                "--data-dir",
                str(self.data),
                "--server",
                server,
                "--token",
                token,
                "--node-name",
                name,
                "--node-ip",
                NS_IP,
            ],
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("w"),
            env=env,
        )

    def wait_log(self, needle: str, timeout_s: float = 60.0) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            text = self.log.read_text()
            if needle in text:
                return text
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"no {needle!r} in the agent log:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        subprocess.run(
            [
                *IN_NETNS,
                sys.executable,
                "-m",
                "sampan.cli.main",
                "killall",
                "--config",
                str(self.config),
                "--data-dir",
                str(self.data),
            ],
            capture_output=True,
            timeout=120,
        )


@pytest.fixture
def server(netns: str) -> Iterator[Cluster]:
    c = Cluster(Path(tempfile.mkdtemp(prefix="spj-", dir="/tmp")))
    c.extra_config = f"tls-san:\n- {HOST_IP}\ndisable-agent: true\n"
    try:
        c.start()
        c.wait("the API", lambda: "all components ready" in c.log.read_text())
        yield c
    finally:
        if c.proc is not None and c.proc.poll() is None:
            c.proc.send_signal(signal.SIGTERM)
            try:
                c.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                c.proc.kill()
        shutil.rmtree(c.root, ignore_errors=True)


def test_agent_joins_and_bad_joins_are_refused(server: Cluster) -> None:
    token = (server.data / "server" / "token").read_text().strip()
    url = f"https://{HOST_IP}:{server.port}"
    agents: list[Agent] = []
    try:
        good = Agent(Path(tempfile.mkdtemp(prefix="spa-", dir="/tmp")), "agent1", url, token)
        agents.append(good)
        good.wait_log("joined")

        def ready() -> bool:
            out = server.kubectl("get", "node", "agent1", "-o", "json", check=False)
            try:
                conditions = json.loads(out)["status"]["conditions"]
            except (ValueError, KeyError):
                return False
            return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

        server.wait("agent1 Ready", ready)

        # What the joined node's own credential may not do (Node authorizer, NodeRestriction).
        # Its kubeconfig names the agent's load balancer (loopback of the agent's network
        # namespace): from here, reach the server directly.
        kubeconfig = good.data / "agent" / "etc" / "kubelet.kubeconfig"
        assert "https://127.0.0.1:" in kubeconfig.read_text()
        as_node = ("--kubeconfig", str(kubeconfig), "--server", url)

        def refused(*args: str) -> str:
            assert KUBECTL is not None
            out = subprocess.run(
                [KUBECTL, *as_node, *args], capture_output=True, text=True, timeout=60
            )
            assert out.returncode != 0, out.stdout
            return out.stderr

        assert "Forbidden" in refused("get", "secrets", "-n", "kube-system")
        assert "Forbidden" in refused("get", "pods", "-A")
        message = refused("label", "node", "agent1", "node-role.kubernetes.io/master=")
        assert "is not allowed to modify labels: node-role.kubernetes.io/master" in message
        message = refused("create", "token", "default", "-n", "kube-system")
        assert "no relationship found between node 'agent1' and this object" in message
        assert "Forbidden" in refused("run", "x", "--image=busybox:1.36")

        wrong = token.rsplit(":", 1)[0] + ":not-the-secret"
        bad = Agent(Path(tempfile.mkdtemp(prefix="spa-", dir="/tmp")), "agent2", url, wrong)
        agents.append(bad)
        line = bad.wait_log("the server refused the token", timeout_s=30)
        assert "not-the-secret" not in line

        thief = Agent(Path(tempfile.mkdtemp(prefix="spa-", dir="/tmp")), "agent1", url, token)
        agents.append(thief)
        thief.wait_log(
            "node password rejected: duplicate hostname or contents of /etc/sampan/node changed",
            timeout_s=30,
        )

        unlisted_url = f"https://{UNLISTED_IP}:{server.port}"
        unlisted = Agent(
            Path(tempfile.mkdtemp(prefix="spa-", dir="/tmp")), "agent3", unlisted_url, token
        )
        agents.append(unlisted)
        log = unlisted.wait_log(
            "the server's certificate is not valid for the host in --server", timeout_s=30
        )
        line = next(x for x in log.splitlines() if "not valid for the host" in x)
        assert UNLISTED_IP in line and "--tls-san" in line
        assert not (unlisted.data / "agent" / "etc" / "serving-kubelet.crt").exists()
    finally:
        for agent in agents:
            agent.stop()
            shutil.rmtree(agent.root, ignore_errors=True)
