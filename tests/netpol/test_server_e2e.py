"""NetworkPolicy as a user meets it: ``sampan server`` (a real process: overlay, proxy, DNS,
network policy, kubelet), kubectl, pods talking through a Service and to the cluster DNS, then
``sampan killall`` removing the node's chains and sets."""

from __future__ import annotations

import json
import subprocess

import pytest

from sampan.netpol import Names, names_for_data_dir
from tests.e2e.test_single_node import Cluster, cluster  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow

SERVER = "mkdir -p /www; echo hello > /www/index.html; exec httpd -f -p 8080 -h /www"


def _pod(name: str, command: str, labels: dict[str, str]) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": labels},
            "spec": {
                "terminationGracePeriodSeconds": 1,
                "containers": [
                    {
                        "name": "c",
                        "image": "busybox:1.36",
                        "command": ["sh", "-c", command],
                        "ports": [{"name": "http", "containerPort": 8080}],
                    }
                ],
            },
        }
    )


def _apply(cluster: Cluster, doc: str) -> None:  # noqa: F811
    out = subprocess.run(
        ["kubectl", "apply", "-f", "-"],
        input=doc,
        text=True,
        capture_output=True,
        env=cluster.env(),
        timeout=60,
    )
    assert out.returncode == 0, out.stderr


def _policy(name: str, spec: dict[str, object]) -> str:
    return json.dumps(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": name},
            "spec": spec,
        }
    )


def _exec(cluster: Cluster, pod: str, script: str) -> str:  # noqa: F811
    out = subprocess.run(
        ["kubectl", "exec", pod, "--", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env=cluster.env(),
    )
    return out.stdout


def _fetch(cluster: Cluster, pod: str, target: str) -> str:  # noqa: F811
    script = f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {target} 8080 | tail -1"
    return _exec(cluster, pod, script).strip()


def _lookup(cluster: Cluster, pod: str) -> bool:  # noqa: F811
    out = _exec(cluster, pod, "timeout 5 nslookup web.default.svc.cluster.local || true")
    return "Address" in out and "10.43." in out.split("web.default", 1)[-1]


def _sets(prefix: str) -> list[str]:
    names = subprocess.run(["ipset", "list", "-n"], capture_output=True, text=True).stdout
    return [n for n in names.split() if n.startswith(prefix)]


def test_policies_through_services_dns_and_killall(cluster: Cluster) -> None:  # noqa: F811
    for name, command, labels in (
        ("web", SERVER, {"app": "web"}),
        ("client", "sleep 3600", {"role": "client"}),
        ("other", "sleep 3600", {}),
    ):
        doc = _pod(name, command, labels)
        cluster.wait(f"pod {name} created", lambda doc=doc: _try_apply(cluster, doc))
    for name in ("web", "client", "other"):
        cluster.wait(
            f"pod {name} Ready",
            lambda name=name: (
                "condition met"
                in cluster.kubectl(
                    "wait", "--for=condition=Ready", f"pod/{name}", "--timeout=5s", check=False
                )
            ),
        )
    cluster.kubectl("expose", "pod", "web", "--port=8080", "--name=web")
    service = cluster.kubectl("get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}")
    cluster.wait("client -> Service", lambda: _fetch(cluster, "client", service) == "hello")
    cluster.wait("other -> Service", lambda: _fetch(cluster, "other", service) == "hello")
    cluster.wait("DNS from client", lambda: _lookup(cluster, "client"))

    _apply(cluster, _policy("deny", {"podSelector": {}, "policyTypes": ["Ingress"]}))
    cluster.wait("client refused", lambda: _fetch(cluster, "client", service) == "")
    web_from_clients = {
        "podSelector": {"matchLabels": {"app": "web"}},
        "ingress": [
            {
                "from": [{"podSelector": {"matchLabels": {"role": "client"}}}],
                "ports": [{"port": "http"}],
            }
        ],
    }
    _apply(cluster, _policy("web-from-clients", web_from_clients))
    cluster.wait("client allowed", lambda: _fetch(cluster, "client", service) == "hello")
    assert _fetch(cluster, "other", service) == ""

    # Egress default deny for the client: the cluster DNS (node-local, through INPUT) stops
    # answering until a policy allows port 53, as upstream.
    _apply(
        cluster,
        _policy(
            "client-egress",
            {"podSelector": {"matchLabels": {"role": "client"}}, "policyTypes": ["Egress"]},
        ),
    )
    cluster.wait("client egress refused", lambda: _fetch(cluster, "client", service) == "")
    assert not _lookup(cluster, "client")
    _apply(
        cluster,
        _policy(
            "client-egress",
            {
                "podSelector": {"matchLabels": {"role": "client"}},
                "policyTypes": ["Egress"],
                "egress": [
                    {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
                    {"to": [{"podSelector": {"matchLabels": {"app": "web"}}}]},
                ],
            },
        ),
    )
    cluster.wait("DNS allowed", lambda: _lookup(cluster, "client"))
    cluster.wait("client egress allowed", lambda: _fetch(cluster, "client", service) == "hello")

    cluster.kubectl("delete", "networkpolicy", "--all")
    cluster.wait("other allowed again", lambda: _fetch(cluster, "other", service) == "hello")

    # killall removes this node's chains and sets
    names = names_for_data_dir(cluster.data)
    _apply(cluster, _policy("web-from-clients", web_from_clients))
    cluster.wait("a set exists", lambda: bool(_sets(names.set_prefix)))
    assert _has_chains(names)
    out = cluster.sampan(
        "killall", "--config", str(cluster.config), "--data-dir", str(cluster.data)
    )
    assert out.returncode == 0, out.stderr
    assert not _has_chains(names)
    assert _sets(names.set_prefix) == []


def _try_apply(cluster: Cluster, doc: str) -> bool:  # noqa: F811
    out = subprocess.run(
        ["kubectl", "apply", "-f", "-"],
        input=doc,
        text=True,
        capture_output=True,
        env=cluster.env(),
        timeout=60,
    )
    return out.returncode == 0  # the default service account may not exist yet


def _has_chains(names: Names) -> bool:
    saved = subprocess.run(["iptables-save", "-t", "filter"], capture_output=True, text=True)
    return names.chain_prefix in saved.stdout
