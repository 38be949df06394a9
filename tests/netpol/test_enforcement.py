"""NetworkPolicy enforcement on a real node: pods on the CNI bridge, real iptables and ipsets,
connections tried from inside the pods with busybox ``nc`` against busybox ``httpd``.

Every expectation is polled (the controller syncs at most once a second), never timed."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
from typing import Any

import pytest

from sampan.client.api import NAMESPACES, NETWORKPOLICIES
from sampan.netpol import NetworkPolicyController, names_for_data_dir
from tests.support.cluster import BUSYBOX, NodeHarness, wait_for
from tests.support.syncloop import wait_sync

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.slow]

PORT = 8080


def _pod(name: str, labels: dict[str, str], *, server: bool) -> dict[str, Any]:
    web = f"mkdir -p /www; echo hello > /www/index.html; exec httpd -f -p {PORT} -h /www"
    command = ["sh", "-c", web] if server else ["sleep", "3600"]
    container: dict[str, Any] = {"name": "main", "image": BUSYBOX, "command": command}
    if server:
        container["ports"] = [{"name": "http", "containerPort": PORT}]
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [container], "terminationGracePeriodSeconds": 1},
    }


async def _ready(node: NodeHarness, ns: str, name: str) -> bool:
    pod = await node.get_pod(ns, name)
    conditions = ((pod or {}).get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


async def _running(node: NodeHarness, ns: str, name: str) -> str:
    """The pod's IP once its container runs."""

    async def check() -> str | None:
        pod = await node.get_pod(ns, name)
        status = (pod or {}).get("status") or {}
        if status.get("phase") == "Running" and status.get("podIP"):
            return status["podIP"]
        return None

    return await wait_for(check, what=f"pod {ns}/{name} running")


async def _start(
    node: NodeHarness, ns: str, name: str, labels: dict[str, str] | None = None, *, server: bool
) -> str:
    await node.create_pod(ns, _pod(name, labels or {}, server=server))
    return await _running(node, ns, name)


async def _connects(node: NodeHarness, ns: str, pod: str, ip: str) -> bool:
    """Whether ``pod`` gets an HTTP answer from ``ip:PORT``."""
    assert node.kubelet is not None
    cid = await node.kubelet.pod_container_id(ns, pod, "main")
    assert cid is not None
    script = f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {ip} {PORT}"
    result = await node.kubelet.runtime.exec_sync(cid, ["sh", "-c", script], timeout_s=10)
    return b"HTTP/1." in result.stdout


async def _eventually(node: NodeHarness, ns: str, pod: str, ip: str, expected: bool) -> None:
    async def check() -> bool:
        return await _connects(node, ns, pod, ip) is expected

    state = "connect" if expected else "be refused"
    await wait_for(check, what=f"{ns}/{pod} to {state} to {ip}:{PORT}")


async def _policy(node: NodeHarness, ns: str, name: str, spec: dict[str, Any]) -> None:
    assert node.client is not None
    body = {"metadata": {"name": name}, "spec": spec}
    await node.client.create(NETWORKPOLICIES, body, namespace=ns)


async def _delete_policy(node: NodeHarness, ns: str, name: str) -> None:
    assert node.client is not None
    await node.client.delete(NETWORKPOLICIES, name, namespace=ns)


async def test_ingress_default_deny_then_allow_by_label(
    node: NodeHarness, netpol: NetworkPolicyController, ns: str
) -> None:
    a, _b, _c = await asyncio.gather(
        _start(node, ns, "a", {"app": "server"}, server=True),
        _start(node, ns, "b", {"role": "client"}, server=False),
        _start(node, ns, "c", server=False),
    )
    await _eventually(node, ns, "b", a, True)
    await _eventually(node, ns, "c", a, True)

    await _policy(node, ns, "deny", {"podSelector": {}, "policyTypes": ["Ingress"]})
    await _eventually(node, ns, "b", a, False)
    assert not await _connects(node, ns, "c", a)
    # the node itself still reaches its pods: an HTTP readiness probe passes under the deny
    probed = _pod("probed", {"app": "server"}, server=True)
    probed["spec"]["containers"][0]["readinessProbe"] = {
        "httpGet": {"path": "/", "port": "http"},
        "periodSeconds": 1,
    }
    await node.create_pod(ns, probed)
    await wait_for(lambda: _ready(node, ns, "probed"), what="probed pod Ready")

    await _policy(
        node,
        ns,
        "allow-clients",
        {
            "podSelector": {"matchLabels": {"app": "server"}},
            "ingress": [
                {
                    "from": [{"podSelector": {"matchLabels": {"role": "client"}}}],
                    "ports": [{"protocol": "TCP", "port": PORT}],
                }
            ],
        },
    )
    await _eventually(node, ns, "b", a, True)
    assert not await _connects(node, ns, "c", a)

    await _delete_policy(node, ns, "allow-clients")
    await _eventually(node, ns, "b", a, False)
    await _delete_policy(node, ns, "deny")
    await _eventually(node, ns, "c", a, True)
    await _eventually(node, ns, "b", a, True)


async def test_namespace_selector_and_named_port(
    node: NodeHarness, netpol: NetworkPolicyController, ns: str
) -> None:
    assert node.client is not None
    team = f"team-{secrets.token_hex(3)}"
    friends = await node.namespace()
    strangers = await node.namespace()
    await node.client.patch(NAMESPACES, friends, {"metadata": {"labels": {"team": team}}})
    a, _d, _d2, _e = await asyncio.gather(
        _start(node, ns, "a", {"app": "server"}, server=True),
        _start(node, friends, "d", {"role": "client"}, server=False),
        _start(node, friends, "d2", server=False),
        _start(node, strangers, "e", {"role": "client"}, server=False),
    )
    await _eventually(node, strangers, "e", a, True)

    # one peer with both selectors: pods labelled role=client in namespaces of the team
    await _policy(
        node,
        ns,
        "from-team",
        {
            "podSelector": {"matchLabels": {"app": "server"}},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [
                        {
                            "namespaceSelector": {"matchLabels": {"team": team}},
                            "podSelector": {"matchLabels": {"role": "client"}},
                        }
                    ],
                    "ports": [{"port": "http"}],
                }
            ],
        },
    )
    await _eventually(node, strangers, "e", a, False)
    await _eventually(node, friends, "d", a, True)
    assert not await _connects(node, friends, "d2", a)

    # labelling the other namespace lets its role=client pod in (namespace watch)
    await node.client.patch(NAMESPACES, strangers, {"metadata": {"labels": {"team": team}}})
    await _eventually(node, strangers, "e", a, True)
    await _delete_policy(node, ns, "from-team")
    await _eventually(node, friends, "d2", a, True)


async def test_egress_default_deny_then_allow_to_ip_block(
    node: NodeHarness, netpol: NetworkPolicyController, ns: str
) -> None:
    a, other, _b = await asyncio.gather(
        _start(node, ns, "a", {"app": "server"}, server=True),
        _start(node, ns, "other", {"app": "other"}, server=True),
        _start(node, ns, "b", {"role": "client"}, server=False),
    )
    await _eventually(node, ns, "b", a, True)

    await _policy(
        node,
        ns,
        "no-egress",
        {"podSelector": {"matchLabels": {"role": "client"}}, "policyTypes": ["Egress"]},
    )
    await _eventually(node, ns, "b", a, False)
    assert not await _connects(node, ns, "b", other)

    network = ".".join(a.split(".")[:3]) + ".0/24"
    await _policy(
        node,
        ns,
        "to-a",
        {
            "podSelector": {"matchLabels": {"role": "client"}},
            "policyTypes": ["Egress"],
            "egress": [
                {
                    "to": [{"ipBlock": {"cidr": network, "except": [f"{other}/32"]}}],
                    "ports": [{"protocol": "TCP", "port": PORT - 10, "endPort": PORT + 10}],
                }
            ],
        },
    )
    await _eventually(node, ns, "b", a, True)
    assert not await _connects(node, ns, "b", other)

    await _delete_policy(node, ns, "to-a")
    await _delete_policy(node, ns, "no-egress")
    await _eventually(node, ns, "b", other, True)


async def test_jumps_come_first_and_carry_the_node_suffix(
    node: NodeHarness, netpol: NetworkPolicyController
) -> None:
    names = names_for_data_dir(node.data_dir)
    await wait_sync(netpol, timeout_s=30)
    saved = subprocess.run(
        ["iptables-save", "-t", "filter"], capture_output=True, text=True, check=True
    ).stdout
    for builtin, chain in names.jumps():
        rules = [line for line in saved.splitlines() if line.startswith(f"-A {builtin} ")]
        ours = [i for i, line in enumerate(rules) if line.endswith(f"-j {chain}")]
        assert len(ours) == 1, rules
        assert all("-j SAMPAN-NP-" in line for line in rules[: ours[0]]), rules
