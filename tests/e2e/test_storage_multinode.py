"""Local-path volumes on two nodes: the server's own agent and a joined agent in a network
namespace. A claim first used by a pod on the joined node is provisioned there (the volume's
node affinity names it); a later pod using the claim, with no node selector and a preference
for the other node, is scheduled to the node holding the directory and finds the data; a pod
pinned to the other node stays Pending with the scheduler's volume node affinity conflict;
deleting the claim has the joined node's agent (not the server's) remove the directory.

Both agents share one filesystem here (only the network is namespaced), and the server decides
a volume's path from its own storage root, so every node must use the same
``default-local-storage-path`` (K3s's rule: one fixed path on every node); the test sets it on
both.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_join import HOST_IP, Agent, netns  # noqa: F401 (fixture)
from tests.e2e.test_single_node import Cluster
from tests.support.images import busybox_archive

pytestmark = pytest.mark.slow

CLAIM = {
    "apiVersion": "v1",
    "kind": "PersistentVolumeClaim",
    "metadata": {"name": "data"},
    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
}


def _pod(name: str, command: str, **spec: object) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "c",
                    "image": "docker.io/library/busybox:1.36",
                    "command": ["sh", "-c", command],
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                }
            ],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}],
            **spec,
        },
    }


def _prefer(node: str) -> dict:
    term = {
        "matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]
    }
    return {
        "nodeAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 100, "preference": term}]
        }
    }


@pytest.fixture
def server(netns: str) -> Iterator[Cluster]:  # noqa: F811
    c = Cluster(Path(tempfile.mkdtemp(prefix="sps-", dir="/tmp")))
    c.storage = c.root / "storage"
    c.extra_config = (
        f"tls-san:\n- {HOST_IP}\nnode-ip:\n- {HOST_IP}\ndefault-local-storage-path: {c.storage}\n"
    )
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


def test_claim_pinned_to_the_node_holding_its_directory(server: Cluster) -> None:
    def get(*args: str) -> dict:
        out = server.kubectl("get", *args, "-o", "json", check=False)
        try:
            return json.loads(out)
        except ValueError:
            return {}

    def ready(node: str) -> bool:
        conditions = get("node", node).get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def apply(obj: dict) -> None:
        subprocess.run(
            ["kubectl", "apply", "-f", "-"],
            input=json.dumps(obj),
            text=True,
            check=True,
            capture_output=True,
            env=server.env(),
        )

    items = server.wait("the server's node", lambda: get("nodes").get("items"))
    local = items[0]["metadata"]["name"]
    server.wait("the server's node Ready", lambda: ready(local))
    token = (server.data / "server" / "token").read_text().strip()
    root = Path(tempfile.mkdtemp(prefix="sps-a-", dir="/tmp"))
    images = root / "d" / "agent" / "images"
    images.mkdir(parents=True)
    shutil.copy(busybox_archive(server.root / "cache"), images / "busybox.tar")
    agent = Agent(
        root,
        "agent1",
        f"https://{HOST_IP}:{server.port}",
        token,
        extra_config=f"default-local-storage-path: {server.storage}\n",
    )
    try:
        server.wait("agent1 Ready", lambda: ready("agent1"))
        apply(CLAIM)
        apply(
            _pod(
                "writer",
                "echo written-on-agent1 > /data/file; sleep 3600",
                nodeSelector={"kubernetes.io/hostname": "agent1"},
            )
        )
        server.kubectl("wait", "--for=condition=Ready", "pod/writer", "--timeout=120s")
        claim = get("pvc", "data")
        assert claim["status"]["phase"] == "Bound"
        assert claim["metadata"]["annotations"]["volume.kubernetes.io/selected-node"] == "agent1"
        pv = get("pv", claim["spec"]["volumeName"])
        terms = pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"]
        assert terms == [
            {
                "matchExpressions": [
                    {"key": "kubernetes.io/hostname", "operator": "In", "values": ["agent1"]}
                ]
            }
        ]
        directory = Path(pv["spec"]["hostPath"]["path"])
        assert directory.parent == server.storage
        assert (directory / "file").read_text() == "written-on-agent1\n"
        server.kubectl("delete", "pod", "writer", "--wait=true")

        # No node selector, a strong preference for the server's node: the volume decides.
        apply(_pod("reader", "cat /data/file; sleep 3600", affinity=_prefer(local)))
        server.kubectl("wait", "--for=condition=Ready", "pod/reader", "--timeout=120s")
        assert get("pod", "reader")["spec"]["nodeName"] == "agent1"
        assert server.kubectl("exec", "reader", "--", "cat", "/data/file") == (
            "written-on-agent1\n"
        )

        # Pinned to the other node: unschedulable, with the upstream reason.
        apply(
            _pod(
                "elsewhere",
                "sleep 3600",
                nodeSelector={"kubernetes.io/hostname": local},
            )
        )

        def conflict() -> bool:
            out = server.kubectl(
                "get",
                "events",
                "--field-selector",
                "involvedObject.name=elsewhere",
                check=False,
            )
            return "FailedScheduling" in out and "volume node affinity conflict" in out

        server.wait("FailedScheduling for elsewhere", conflict, timeout_s=60)
        assert not get("pod", "elsewhere")["spec"].get("nodeName")

        # Deleting the claim: agent1's half of the provisioner removes the directory.
        server.kubectl("delete", "pod", "reader", "elsewhere", "--wait=true")
        server.kubectl("delete", "pvc", "data", "--wait=true")
        server.wait("the directory removed", lambda: not directory.exists(), timeout_s=120)
        server.wait("the volume deleted", lambda: not get("pv").get("items"), timeout_s=60)
    except BaseException:
        print("--- agent log ---\n" + "\n".join(agent.log.read_text().splitlines()[-40:]))
        print(server.kubectl("describe", "pod", check=False)[-3000:])
        raise
    finally:
        agent.stop()
        shutil.rmtree(root, ignore_errors=True)
