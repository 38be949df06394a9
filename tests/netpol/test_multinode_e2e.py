"""NetworkPolicy across nodes: the server's agent (root namespace) and a joined agent (its own
network namespace, vxlan overlay) each enforce the policies of their own pods, for traffic
that crosses the overlay."""

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

WEB = "mkdir -p /www; echo $HOSTNAME > /www/index.html; exec httpd -f -p 8080 -h /www"


@pytest.fixture
def server(netns: str) -> Iterator[Cluster]:  # noqa: F811
    c = Cluster(Path(tempfile.mkdtemp(prefix="spnp-", dir="/tmp")))
    c.extra_config = f"tls-san:\n- {HOST_IP}\nnode-ip:\n- {HOST_IP}\n"
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


def _pod(name: str, node: str, command: str, labels: dict[str, str]) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": labels},
            "spec": {
                "terminationGracePeriodSeconds": 1,
                "nodeSelector": {"kubernetes.io/hostname": node},
                "containers": [
                    {"name": "c", "image": "busybox:1.36", "command": ["sh", "-c", command]}
                ],
            },
        }
    )


def _policy(name: str, spec: dict[str, object]) -> str:
    body = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy"}
    return json.dumps({**body, "metadata": {"name": name}, "spec": spec})


def _apply(server: Cluster, doc: str) -> bool:
    out = subprocess.run(
        ["kubectl", "apply", "-f", "-"],
        input=doc,
        text=True,
        capture_output=True,
        env=server.env(),
        timeout=60,
    )
    return out.returncode == 0


def _fetch(server: Cluster, pod: str, target: str) -> str:
    script = f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {target} 8080 | tail -1"
    out = subprocess.run(
        ["kubectl", "exec", pod, "--", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env=server.env(),
    )
    return out.stdout.strip()


def _ready(server: Cluster, node: str) -> bool:
    out = server.kubectl("get", "node", node, "-o", "json", check=False)
    try:
        conditions = json.loads(out)["status"]["conditions"]
    except (ValueError, KeyError):
        return False
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def test_policies_apply_across_the_overlay(server: Cluster) -> None:
    nodes = server.wait(
        "the server's node",
        lambda: json.loads(server.kubectl("get", "nodes", "-o", "json", check=False) or "{}").get(
            "items"
        ),
    )
    local = nodes[0]["metadata"]["name"]
    server.wait("the server's node Ready", lambda: _ready(server, local))
    token = (server.data / "server" / "token").read_text().strip()
    root = Path(tempfile.mkdtemp(prefix="spnp-a-", dir="/tmp"))
    images = root / "d" / "agent" / "images"
    images.mkdir(parents=True)
    shutil.copy(busybox_archive(server.root / "cache"), images / "busybox.tar")
    agent = Agent(root, "agent1", f"https://{HOST_IP}:{server.port}", token)
    try:
        server.wait("agent1 Ready", lambda: _ready(server, "agent1"))
        for name, node, command, labels in (
            ("web", "agent1", WEB, {"app": "web"}),
            ("client", local, "sleep 3600", {"role": "client"}),
            ("other", local, "sleep 3600", {}),
        ):
            doc = _pod(name, node, command, labels)
            server.wait(f"pod {name} created", lambda doc=doc: _apply(server, doc))
        for name in ("web", "client", "other"):
            server.kubectl("wait", "--for=condition=Ready", f"pod/{name}", "--timeout=90s")
        web = server.kubectl("get", "pod", "web", "-o", "jsonpath={.status.podIP}")
        server.wait("client -> web across nodes", lambda: _fetch(server, "client", web) == "web")
        server.wait("other -> web across nodes", lambda: _fetch(server, "other", web) == "web")

        # ingress of a pod on agent1: enforced by agent1 for traffic from the server's node
        assert _apply(
            server,
            _policy(
                "web-from-clients",
                {
                    "podSelector": {"matchLabels": {"app": "web"}},
                    "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}]}],
                },
            ),
        )
        server.wait("other refused", lambda: _fetch(server, "other", web) == "")
        assert _fetch(server, "client", web) == "web"

        # egress of a pod on the server's node, towards agent1: enforced by the server's agent
        assert _apply(
            server,
            _policy(
                "client-egress",
                {"podSelector": {"matchLabels": {"role": "client"}}, "policyTypes": ["Egress"]},
            ),
        )
        server.wait("client refused", lambda: _fetch(server, "client", web) == "")
        server.kubectl("delete", "networkpolicy", "--all")
        server.wait("client allowed again", lambda: _fetch(server, "client", web) == "web")
        server.wait("other allowed again", lambda: _fetch(server, "other", web) == "web")
    except BaseException:
        print("--- agent log ---\n" + "\n".join(agent.log.read_text().splitlines()[-40:]))
        raise
    finally:
        agent.stop()
        shutil.rmtree(root, ignore_errors=True)
