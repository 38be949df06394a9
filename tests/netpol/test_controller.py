"""The controller end to end without pods: a real API server, the agent identity, the real
iptables and ipset inside a private network namespace. Policy, pod and namespace changes
reach the rules; ``stop()`` leaves them in force; a new controller picks them up."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sampan.client import Client, PatchType
from sampan.client.api import NAMESPACES, NETWORKPOLICIES, PODS, SERVICEACCOUNTS
from sampan.netpol import NetworkPolicyController, NetworkPolicyOptions, cleanup, names_for_data_dir
from tests.netpol.conftest import Netns
from tests.support.apiserver import ApiServerHarness, api_server, client  # noqa: F401
from tests.support.cluster import wait_for

NODE = "n1"


async def _pod(
    client: Client,  # noqa: F811
    ns: str,
    name: str,
    ip: str,
    labels: dict[str, str],
    node: str = NODE,
) -> None:
    body = {
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "nodeName": node,
            "containers": [
                {"name": "c", "image": "busybox", "ports": [{"name": "http", "containerPort": 80}]}
            ],
        },
    }
    await client.create(PODS, body, namespace=ns)
    status = {"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}}
    await client.patch(
        PODS, name, status, namespace=ns, patch_type=PatchType.MERGE, subresource="status"
    )


async def _controller(
    api_server: ApiServerHarness,  # noqa: F811
    netns: Netns,
    data_dir: Path,
) -> NetworkPolicyController:
    options = NetworkPolicyOptions(
        node_name=NODE, names=names_for_data_dir(data_dir), netns=netns.path
    )
    controller = NetworkPolicyController(
        await api_server.identity_config("system:sampan-agent"), options
    )
    await controller.start()
    return controller


def _members(netns: Netns, name: str) -> set[str]:
    text = netns.sh("ipset", "list", name)
    return set(text.split("Members:\n", 1)[1].split())


def _members_are(netns: Netns, name: str, expected: set[str]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return _members(netns, name) == expected

    return check


async def test_changes_reach_the_rules_and_survive_a_restart(
    api_server: ApiServerHarness,  # noqa: F811
    client: Client,  # noqa: F811
    netns: Netns,
    tmp_path: Path,
) -> None:
    names = names_for_data_dir(tmp_path)
    for ns in ("shop", "ops"):
        await client.create(NAMESPACES, {"metadata": {"name": ns}})
        await client.create(SERVICEACCOUNTS, {"metadata": {"name": "default"}}, namespace=ns)
    await _pod(client, "shop", "web", "10.42.0.10", {"app": "web"})
    await _pod(client, "shop", "client", "10.42.0.20", {"role": "client"})
    await _pod(client, "ops", "far", "10.42.1.30", {"role": "client"}, node="n2")

    controller = await _controller(api_server, netns, tmp_path)
    try:
        saved = netns.sh("iptables-save", "-t", "filter")
        assert f"-j {names.forward_chain}" in saved and f"-j {names.input_chain}" in saved
        web_chain = names.pod_chain("ingress", "shop", "web")
        assert web_chain not in saved  # no policy: nobody isolated

        policy: dict[str, Any] = {
            "metadata": {"name": "web"},
            "spec": {
                "podSelector": {"matchLabels": {"app": "web"}},
                "ingress": [
                    {
                        "from": [
                            {
                                "namespaceSelector": {"matchLabels": {"team": "ops"}},
                                "podSelector": {"matchLabels": {"role": "client"}},
                            }
                        ],
                        "ports": [{"port": "http"}],
                    }
                ],
            },
        }
        await client.create(NETWORKPOLICIES, policy, namespace="shop")

        async def isolated() -> str | None:
            text = netns.sh("iptables-save", "-t", "filter")
            return text if f"-A {web_chain} " in text else None

        saved = await wait_for(isolated, what="the web pod's ingress chain")
        rule = next(line for line in saved.splitlines() if "--dport 80 " in line)
        peers = rule.split("--match-set ")[1].split()[0]
        assert _members(netns, peers) == set()  # ops is not labelled yet

        # a namespace label brings its pods in; a pod label change takes one out
        await client.patch(
            NAMESPACES, "ops", {"metadata": {"labels": {"team": "ops"}}}, patch_type=PatchType.MERGE
        )
        await wait_for(_members_are(netns, peers, {"10.42.1.30"}), what="ops pods in the set")
        await client.patch(
            PODS,
            "far",
            {"metadata": {"labels": {"role": "none"}}},
            namespace="ops",
            patch_type=PatchType.MERGE,
        )
        await wait_for(_members_are(netns, peers, set()), what="far out of the set")
    finally:
        await controller.stop()

    # stopped: the rules stay in force (as K3s: policies keep applying across a restart)
    assert f"-A {web_chain} " in netns.sh("iptables-save", "-t", "filter")
    assert peers in netns.sets()

    controller = await _controller(api_server, netns, tmp_path)
    try:
        await client.delete(NETWORKPOLICIES, "web", namespace="shop")

        async def released() -> bool:
            return web_chain not in netns.sh("iptables-save", "-t", "filter")

        await wait_for(released, what="the web pod's chain removed")
        assert netns.sets() == set()
    finally:
        await controller.stop()
    assert netns.call(cleanup, names) == 2  # the FWD and IN chains
    assert "SAMPAN-NP-" not in netns.sh("iptables-save", "-t", "filter")
