"""Issue #20's first HA acceptance step, as a new user would do it on four machines: three
full servers (each with its embedded agent, so each is a node) and one agent, each machine a
network namespace of its own on one bridge, every component on its default ports.

Machine 1 runs ``sampan server --cluster-init``; machines 2 and 3 run ``sampan server --server
https://<machine 1>:6443 --token T`` (one after the other: etcd adds one learner at a time);
machine 4 runs ``sampan agent`` against machine 1. On machine 1, ``kubectl get nodes`` lists
the three servers with K3s's server roles (``control-plane,etcd,master``) and the agent with
none, all Ready; Debian's ``etcdctl member list``, with the etcd client certificate the
server generated, lists three started voting members whose peer URLs are the three machines.

Whole-node test (containerd in every namespace): run it under the node lock. The phases'
durations are printed (four containerds on a small machine take a while)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_single_node import KUBECTL

pytestmark = [pytest.mark.etcd, pytest.mark.slow]

_TAG = os.getpid() % 100000
BRIDGE = f"sh3b{_TAG}"
SUBNET = "10.250.81"
GATEWAY = f"{SUBNET}.1"
SERVERS = ("server-1", "server-2", "server-3")
AGENT = "agent-1"
STEP_TIMEOUT_S = 420.0
"""Per phase: a server start, a join, the nodes becoming Ready (a loaded 2-core machine)."""

SERVER_ROLES = "control-plane,etcd,master"
ETCDCTL = shutil.which("etcdctl")


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


class Machine:
    """A network namespace with its own address on the bridge, data dir and config; runs one
    ``sampan server`` or ``sampan agent`` inside it (network namespace only: the kubelet needs
    the host's /sys and cgroups)."""

    def __init__(self, index: int, name: str) -> None:
        self.index = index
        self.name = name
        self.netns = f"sh3n{index}{_TAG}"
        self.host_if = f"sh3{_TAG}h{index}"
        self.ns_if = f"sh3{_TAG}n{index}"
        self.address = f"{SUBNET}.{10 + index}"
        # A short path: containerd's socket must fit in a unix socket address.
        self.root = Path(tempfile.mkdtemp(prefix=f"sh3{index}-", dir="/tmp"))
        self.data = self.root / "d"
        self.config = self.root / "config.yaml"
        self.kubeconfig = self.root / "kubeconfig.yaml"
        self.log = self.root / "sampan.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.command = ""

    @property
    def prefix(self) -> list[str]:
        return ["nsenter", f"--net=/run/netns/{self.netns}", "--"]

    def plug(self) -> None:
        ip("netns", "add", self.netns)
        ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
        ip("link", "set", self.ns_if, "netns", self.netns)
        ip("link", "set", self.host_if, "master", BRIDGE)
        ip("link", "set", self.host_if, "up")
        ip("-n", self.netns, "addr", "add", f"{self.address}/24", "dev", self.ns_if)
        ip("-n", self.netns, "link", "set", self.ns_if, "up")
        ip("-n", self.netns, "link", "set", "lo", "up")
        ip("-n", self.netns, "route", "add", "default", "via", GATEWAY)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SAMPAN_")}
        env["KUBECONFIG"] = str(self.kubeconfig)
        return env

    def start(self, command: str, *args: str) -> None:
        self.command = command
        self.config.write_text(
            f"kubelet-arg:\n- cgroup-root=/sampan-e2e-{self.root.name}\n"
            f"node-name: {self.name}\nnode-ip:\n- {self.address}\n"
            + (f"write-kubeconfig: {self.kubeconfig}\n" if command == "server" else "")
        )
        self.proc = subprocess.Popen(
            [
                *self.prefix,
                sys.executable,
                "-m",
                "sampan.cli.main",
                command,
                "--config",
                str(self.config),
                "--data-dir",
                str(self.data),
                *args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("w"),
            env=self.env(),
        )

    def run(self, *argv: str, timeout_s: float = 120.0) -> subprocess.CompletedProcess[str]:
        """A command inside this machine's network namespace."""
        return subprocess.run(
            [*self.prefix, *argv], capture_output=True, text=True, timeout=timeout_s, env=self.env()
        )

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text().splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.command:
            self.run(
                sys.executable,
                "-m",
                "sampan.cli.main",
                "killall",
                "--config",
                str(self.config),
                "--data-dir",
                str(self.data),
                timeout_s=180,
            )

    def unplug(self) -> None:
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def machines() -> Iterator[list[Machine]]:
    if KUBECTL is None or ETCDCTL is None:
        pytest.fail("kubectl and etcdctl (Debian etcd-client) must be installed")
    all_machines = [Machine(i + 1, name) for i, name in enumerate((*SERVERS, AGENT))]
    ip("link", "add", BRIDGE, "type", "bridge")
    try:
        ip("addr", "add", f"{GATEWAY}/24", "dev", BRIDGE)
        ip("link", "set", BRIDGE, "up")
        for machine in all_machines:
            machine.plug()
        yield all_machines
    finally:
        for machine in reversed(all_machines):
            try:
                machine.stop()
            finally:
                machine.unplug()
        subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True)


def wait(what: str, check: Callable[[], Any], machines: list[Machine]) -> Any:
    """Polls ``check`` until it answers something true; fails naming ``what`` (with the logs)
    on timeout or when a sampan process exits."""
    deadline = time.monotonic() + STEP_TIMEOUT_S
    last: Any = None
    while time.monotonic() < deadline:
        for m in machines:
            if m.proc is not None and m.proc.poll() is not None:
                pytest.fail(f"{what}: {m.name}'s sampan exited {m.proc.returncode}:\n{m.tail()}")
        last = check()
        if last:
            return last
        time.sleep(1.0)
    tails = "\n".join(f"--- {m.name} ---\n{m.tail(25)}" for m in machines if m.command)
    pytest.fail(f"timed out after {STEP_TIMEOUT_S:g}s waiting for {what} (last: {last!r})\n{tails}")


def _ready(node: dict[str, Any]) -> bool:
    conditions = (node.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def test_three_servers_on_embedded_etcd_and_an_agent(machines: list[Machine]) -> None:
    first, second, third, agent = machines
    timings: list[tuple[str, float]] = []
    started = time.monotonic()

    def phase(name: str) -> None:
        timings.append((name, time.monotonic() - started))
        print(f"[{timings[-1][1]:6.1f}s] {name}", flush=True)

    def log_has(machine: Machine, needle: str) -> bool:
        try:
            return needle in machine.log.read_text()
        except OSError:
            return False

    first.start("server", "--cluster-init")
    wait("server-1 (--cluster-init)", lambda: log_has(first, "all components ready"), machines)
    phase("server-1 ready (--cluster-init)")
    token = (first.data / "server" / "token").read_text().strip()
    url = f"https://{first.address}:6443"
    for machine in (second, third):
        machine.start("server", "--server", url, "--token", token)
        wait(
            f"{machine.name} to join",
            lambda m=machine: log_has(m, "all components ready"),
            machines,
        )
        phase(f"{machine.name} joined and ready")
    agent.start("agent", "--server", url, "--token", token)

    def nodes() -> dict[str, dict[str, Any]]:
        out = first.run(KUBECTL or "kubectl", "get", "nodes", "-o", "json")
        if out.returncode != 0:
            return {}
        return {n["metadata"]["name"]: n for n in json.loads(out.stdout)["items"]}

    def all_ready() -> bool:
        found = nodes()
        return set(found) == {*SERVERS, AGENT} and all(_ready(n) for n in found.values())

    wait("three servers and the agent Ready", all_ready, machines)
    phase("four nodes Ready")

    def roles_shown() -> dict[str, tuple[str, str]] | None:
        # What the user reads: NAME STATUS ROLES AGE VERSION.
        out = first.run(KUBECTL or "kubectl", "get", "nodes", "--no-headers")
        rows = {
            line.split()[0]: (line.split()[1], line.split()[2]) for line in out.stdout.splitlines()
        }
        wanted = {**{s: ("Ready", SERVER_ROLES) for s in SERVERS}, AGENT: ("Ready", "<none>")}
        return rows if rows == wanted else None

    table = wait("kubectl get nodes: the servers' roles", roles_shown, machines)
    print(first.run(KUBECTL or "kubectl", "get", "nodes", "-o", "wide").stdout)
    assert table[AGENT] == ("Ready", "<none>")
    for name, node in nodes().items():
        labels = node["metadata"].get("labels") or {}
        roles = {k: v for k, v in labels.items() if k.startswith("node-role.kubernetes.io/")}
        if name == AGENT:
            assert roles == {}, (name, roles)
        else:
            assert roles == {
                "node-role.kubernetes.io/control-plane": "true",
                "node-role.kubernetes.io/etcd": "true",
                "node-role.kubernetes.io/master": "true",
            }, (name, roles)

    # etcdctl (Debian's etcd-client) on machine 1, with the client certificate its server made.
    tls = first.data / "server" / "tls" / "etcd"
    members = first.run(
        ETCDCTL or "etcdctl",
        "--endpoints=https://127.0.0.1:2379",
        f"--cacert={tls / 'server-ca.crt'}",
        f"--cert={tls / 'client.crt'}",
        f"--key={tls / 'client.key'}",
        "member",
        "list",
    )
    print(members.stdout)
    assert members.returncode == 0, members.stderr
    # <id>, <status>, <name>, <peer URLs>, <client URLs>, <is learner>
    rows = [[f.strip() for f in line.split(",")] for line in members.stdout.splitlines()]
    assert len(rows) == 3, members.stdout
    assert [r[1] for r in rows] == ["started"] * 3, members.stdout
    assert [r[5] for r in rows] == ["false"] * 3, members.stdout
    assert sorted(r[3] for r in rows) == [f"https://{m.address}:2380" for m in machines[:3]]
    phase("etcdctl member list: three started members")
    for name, at in timings:
        print(f"  {name:<45} {at:6.1f}s")
