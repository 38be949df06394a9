"""Two nodes: the server's own agent in the root namespace and a joined agent in a network
namespace (its own data dir, containerd and address). Pods reach each other across the nodes
over the vxlan overlay, a Service whose only endpoint is on the other node answers, and DNS
works from a pod on the joined node."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_join import HOST_IP, NS_IP, Agent, netns  # noqa: F401 (fixture)
from tests.e2e.test_single_node import Cluster
from tests.support.images import busybox_archive

pytestmark = pytest.mark.slow

WEB = "mkdir -p /www; echo $HOSTNAME > /www/index.html; exec httpd -f -p 8080 -h /www"


@pytest.fixture(params=["vxlan", "host-gw"])
def server(request: pytest.FixtureRequest, netns: str) -> Iterator[Cluster]:  # noqa: F811
    c = Cluster(Path(tempfile.mkdtemp(prefix="spm-", dir="/tmp")))
    c.backend = request.param
    c.extra_config = (
        f"tls-san:\n- {HOST_IP}\nnode-ip:\n- {HOST_IP}\nflannel-backend: {request.param}\n"
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


def pod(name: str, node: str, command: str, labels: dict[str, str] | None = None) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": labels or {}},
            "spec": {
                "nodeSelector": {"kubernetes.io/hostname": node},
                "containers": [
                    {"name": "c", "image": "busybox:1.36", "command": ["sh", "-c", command]}
                ],
            },
        }
    )


def test_pods_and_services_across_nodes(server: Cluster) -> None:
    def ready(node: str) -> bool:
        out = server.kubectl("get", "node", node, "-o", "json", check=False)
        try:
            conditions = json.loads(out)["status"]["conditions"]
        except (ValueError, KeyError):
            return False
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    local = server.wait(
        "the server's node",
        lambda: json.loads(server.kubectl("get", "nodes", "-o", "json", check=False) or "{}").get(
            "items"
        ),
    )
    local_name = local[0]["metadata"]["name"]
    server.wait("the server's node Ready", lambda: ready(local_name))
    token = (server.data / "server" / "token").read_text().strip()
    root = Path(tempfile.mkdtemp(prefix="spm-a-", dir="/tmp"))
    images = root / "d" / "agent" / "images"
    images.mkdir(parents=True)
    shutil.copy(busybox_archive(server.root / "cache"), images / "busybox.tar")
    agent = Agent(
        root,
        "agent1",
        f"https://{HOST_IP}:{server.port}",
        token,
        extra_config=f"flannel-backend: {server.backend}\n",
    )
    try:
        server.wait("agent1 Ready", lambda: ready("agent1"))
        for name, node, cmd, labels in (
            ("here", local_name, "sleep 3600", {}),
            ("there", "agent1", WEB, {"app": "there"}),
        ):
            subprocess.run(
                ["kubectl", "apply", "-f", "-"],
                input=pod(name, node, cmd, labels),
                text=True,
                check=True,
                capture_output=True,
                env=server.env(),
            )
        for name in ("here", "there"):
            server.kubectl("wait", "--for=condition=Ready", f"pod/{name}", "--timeout=90s")
        there_ip = server.kubectl("get", "pod", "there", "-o", "jsonpath={.status.podIP}")
        assert there_ip.startswith("10.42.")

        def fetch(target: str) -> str:
            out = subprocess.run(
                [
                    "kubectl",
                    "exec",
                    "here",
                    "--",
                    "sh",
                    "-c",
                    f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {target} 8080 | tail -1",
                ],
                capture_output=True,
                text=True,
                timeout=60,
                env=server.env(),
            )
            return out.stdout.strip()

        # Pod to pod across nodes (vxlan), then a Service whose only endpoint is remote.
        assert server.wait("pod-to-pod across nodes", lambda: fetch(there_ip) == "there")
        server.kubectl("expose", "pod", "there", "--port=8080", "--name=there")
        cluster_ip = server.kubectl("get", "svc", "there", "-o", "jsonpath={.spec.clusterIP}")
        assert server.wait("the Service across nodes", lambda: fetch(cluster_ip) == "there")

        # DNS from a pod on the joined node.
        def lookup() -> str:
            out = subprocess.run(
                ["kubectl", "exec", "there", "--", "nslookup", "there.default.svc.cluster.local"],
                capture_output=True,
                text=True,
                timeout=60,
                env=server.env(),
            )
            return out.stdout

        assert server.wait("DNS on the joined node", lambda: cluster_ip in lookup())
    except BaseException:
        print("--- agent log ---\n" + "\n".join(agent.log.read_text().splitlines()[-40:]))
        print(server.kubectl("describe", "pod", "there", check=False)[-2500:])
        raise
    finally:
        agent.stop()
        shutil.rmtree(root, ignore_errors=True)
