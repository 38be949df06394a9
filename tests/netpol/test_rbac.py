"""The agent identity reads what network policy enforcement needs, and nothing more: list and
watch NetworkPolicies, Pods and Namespaces cluster-wide; no writes, no Secrets."""

from __future__ import annotations

import pytest

from sampan.client import Client
from sampan.client.api import NAMESPACES, NETWORKPOLICIES, PODS, SECRETS, ForbiddenError
from tests.support.apiserver import ApiServerHarness, api_server  # noqa: F401


async def test_agent_lists_and_watches_policy_inputs_only(
    api_server: ApiServerHarness,  # noqa: F811
) -> None:
    async with Client(await api_server.identity_config("system:sampan-agent")) as agent:
        for resource in (NETWORKPOLICIES, PODS, NAMESPACES):
            listed = await agent.list(resource)
            assert "resourceVersion" in listed["metadata"]
        policy = {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "open"},
            "spec": {"podSelector": {}, "ingress": [{}]},
        }
        with pytest.raises(ForbiddenError) as refused:
            await agent.create(NETWORKPOLICIES, policy, namespace="default")
        assert refused.value.message == (
            'networkpolicies.networking.k8s.io is forbidden: User "system:sampan-agent" cannot '
            'create resource "networkpolicies" in API group "networking.k8s.io" in the '
            'namespace "default"'
        )
        with pytest.raises(ForbiddenError):
            await agent.list(SECRETS)
        with pytest.raises(ForbiddenError):
            await agent.delete(PODS, "x", namespace="default")
