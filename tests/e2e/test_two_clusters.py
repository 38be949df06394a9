"""Two independent single-node clusters on one host at the same time, in the same network
namespace: cluster A with K3s's names (cni0, KUBE-*, kubelet on 10250) and cluster B with
``--cluster-name e2eb``, its own API and kubelet ports, CIDRs and node-port range. Both pass a
smoke test (node Ready, pods Running, a ClusterIP Service answering by DNS name from a pod,
kubectl logs and exec through each cluster's own kubelet port); stopping B leaves A's rules and
interfaces alone; ``sampan killall`` of B removes B's and leaves A running."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from sampan.config import host_names
from tests.e2e.test_single_node import KUBECTL, Cluster, free_port
from tests.support.images import busybox_archive

pytestmark = pytest.mark.slow

B_NAME = "e2eb"
B = host_names(B_NAME)
A_CONFIG = "service-node-port-range: 30000-30499\n"  # the two clusters' node ports must not overlap
B_CONFIG = (
    f"cluster-name: {B_NAME}\n"
    "cluster-cidr: 10.152.0.0/16\n"
    "service-cidr: 10.153.0.0/16\n"
    "cluster-dns: 10.153.0.10\n"
    "service-node-port-range: 30500-30999\n"
)
WEB = "mkdir -p /www; echo $HOSTNAME > /www/index.html; exec httpd -f -p 8080 -h /www"
WEB_NAME = "web.default.svc.cluster.local"
GET = "printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n'"  # busybox-static's wget crashes here


class NamedCluster(Cluster):
    """A cluster whose config comes whole from ``config_text`` (no fixed cgroup root: a
    named cluster's is derived from its name)."""

    def __init__(self, root: Path, config_text: str) -> None:
        super().__init__(root)
        self.kubelet_port = free_port()
        self.config_text = config_text + f"kubelet-arg:\n- port={self.kubelet_port}\n"

    def start(self) -> None:
        self.config.write_text(
            f"write-kubeconfig: {self.kubeconfig}\n"
            f"https-listen-port: {self.port}\n" + self.config_text
        )
        images = self.data / "agent" / "images"
        images.mkdir(parents=True)
        shutil.copy(busybox_archive(self.root / "cache"), images / "busybox.tar")
        self.proc = subprocess.Popen(
            [
                *self.prefix,
                *(sys.executable, "-m", "sampan.cli.main", "server"),
                *("--config", str(self.config), "--data-dir", str(self.data)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("w"),
            env=self.env(),
        )


def _stop(c: Cluster) -> None:
    if c.proc is not None and c.proc.poll() is None:
        c.proc.send_signal(signal.SIGTERM)
        try:
            c.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            c.proc.kill()


@pytest.fixture
def clusters() -> Iterator[tuple[Cluster, NamedCluster]]:
    if KUBECTL is None:
        pytest.fail("kubectl is not installed")
    a = Cluster(Path(tempfile.mkdtemp(prefix="sp2a-", dir="/tmp")))
    a.cgroup_root = f"/sampan-e2e-{os.getpid()}-a"
    a.extra_config = A_CONFIG
    b = NamedCluster(Path(tempfile.mkdtemp(prefix="sp2b-", dir="/tmp")), B_CONFIG)
    try:
        a.start()
        b.start()
        yield a, b
    finally:
        for c in (b, a):
            _stop(c)
            c.sampan("killall", "--config", str(c.config), "--data-dir", str(c.data))
            shutil.rmtree(c.root, ignore_errors=True)


def _node(c: Cluster) -> dict:
    items = json.loads(c.kubectl("get", "nodes", "-o", "json", check=False) or "{}").get("items")
    return items[0] if items else {}


def _ready(c: Cluster) -> bool:
    conditions = _node(c).get("status", {}).get("conditions", [])
    return any(x["type"] == "Ready" and x["status"] == "True" for x in conditions)


def _fetch(c: Cluster) -> str:
    """The web Service's answer, asked by DNS name from the client pod (kubectl exec: through
    the cluster's own kubelet port)."""
    out = subprocess.run(
        [KUBECTL, "exec", "client", "--", "sh", "-c", f"{GET} | nc -w 3 {WEB_NAME} 80 | tail -1"],
        capture_output=True,
        text=True,
        timeout=60,
        env=c.env(),
    )
    return out.stdout.strip() or f"({out.returncode}) {out.stderr.strip()}"


def _smoke(c: Cluster, kubelet_port: int, tag: str) -> None:
    c.wait("the node Ready", lambda: _ready(c))
    endpoint = _node(c)["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
    assert endpoint == kubelet_port
    c.kubectl("run", "web", "--image=busybox:1.36", "--labels=app=web", "--", "sh", "-c", WEB)
    c.kubectl(
        "run", "client", "--image=busybox:1.36", "--", "sh", "-c", f"echo hi-{tag}; sleep 3600"
    )
    c.kubectl("expose", "pod", "web", "--port=80", "--target-port=8080", "--name=web")
    for pod in ("web", "client"):
        c.kubectl("wait", "--for=condition=Ready", f"pod/{pod}", "--timeout=120s")
    assert c.kubectl("logs", "client").strip() == f"hi-{tag}"
    assert c.kubectl("exec", "client", "--", "cat", "/etc/hostname").strip() == "client"
    try:
        c.wait("the web Service by DNS name", lambda: _fetch(c) == "web")
    except AssertionError:
        print(_fetch(c))
        print(c.kubectl("exec", "client", "--", "nslookup", WEB_NAME, check=False))
        print(c.kubectl("get", "svc,endpointslices,pods", "-A", "-o", "wide", check=False))
        print(subprocess.run(["iptables-save"], capture_output=True, text=True).stdout)
        raise


def _chains() -> set[str]:
    chains: set[str] = set()
    for table in ("nat", "filter"):
        out = subprocess.run(
            ["iptables-save", "-t", table], capture_output=True, text=True, check=True
        ).stdout
        chains |= {line[1:].split()[0] for line in out.splitlines() if line.startswith(":")}
    return chains


def _link(name: str) -> bool:
    return Path(f"/sys/class/net/{name}").exists()


A_CHAINS = {"KUBE-SERVICES", "KUBE-POSTROUTING", "SAMPAN-POSTROUTING", "SAMPAN-FORWARD"}
A_LINKS = ("cni0", "sampan.1", "sampan-dns")
B_CHAINS = {
    f"{B.proxy_chain_prefix}SERVICES",
    f"{B.proxy_chain_prefix}POSTROUTING",
    f"{B.network_chain_prefix}POSTROUTING",
    f"{B.network_chain_prefix}FORWARD",
}
B_LINKS = (B.bridge, B.vxlan_device, B.dns_interface)


def test_two_clusters_side_by_side(clusters: tuple[Cluster, NamedCluster]) -> None:
    a, b = clusters
    _smoke(a, 10250, "a")
    _smoke(b, b.kubelet_port, "b")
    ip = b.kubectl("get", "pod", "client", "-o", "jsonpath={.status.podIP}")
    assert ip.startswith("10.152."), ip
    assert A_CHAINS | B_CHAINS <= _chains()
    assert all(_link(n) for n in A_LINKS + B_LINKS)
    cgroups = Path("/sys/fs/cgroup/pids")
    cgroups = cgroups if cgroups.is_dir() else Path("/sys/fs/cgroup")
    assert (cgroups / B.cgroup_root.lstrip("/")).is_dir()

    # Stopping B (SIGTERM) touches none of A's rules or interfaces; A keeps serving.
    assert b.proc is not None
    b.proc.send_signal(signal.SIGTERM)
    assert b.proc.wait(timeout=30) == 0, b.tail()
    assert A_CHAINS <= _chains() and all(_link(n) for n in A_LINKS)
    assert _fetch(a) == "web"

    # killall of B removes B's chains, links and cgroups, and leaves A running.
    out = b.sampan("killall", "--config", str(b.config), "--data-dir", str(b.data))
    assert out.returncode == 0, out.stderr
    chains = _chains()
    assert not {c for c in chains if c.startswith((B.proxy_chain_prefix, B.network_chain_prefix))}
    assert A_CHAINS <= chains
    assert not any(_link(n) for n in B_LINKS)
    assert all(_link(n) for n in A_LINKS)
    assert not (cgroups / B.cgroup_root.lstrip("/")).exists()
    assert a.proc is not None and a.proc.poll() is None, a.tail()
    assert _ready(a)
    assert a.wait("A's Service after B's killall", lambda: _fetch(a) == "web", 60.0)
    assert a.kubectl("logs", "client").strip() == "hi-a"
