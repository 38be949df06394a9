"""The official kubernetes Python client's exec (WebSocket v4.channel.k8s.io) end to end."""

from __future__ import annotations

import asyncio

import pytest

from tests.kubelet.server.conftest import NodeEnv, unique

pytestmark = pytest.mark.asyncio(loop_scope="session")


def _exec(kubeconfig: str, pod: str, command: list[str]) -> str:
    from kubernetes import client, config
    from kubernetes.stream import stream

    api_client = config.new_client_from_config(config_file=kubeconfig)
    try:
        core = client.CoreV1Api(api_client)
        return stream(
            core.connect_get_namespaced_pod_exec,
            pod,
            "default",
            command=command,
            stderr=True,
            stdin=False,
            stdout=True,
            tty=False,
        )
    finally:
        api_client.close()


async def test_python_client_exec(node_env: NodeEnv) -> None:
    name = unique("py")
    await node_env.run_pod(name, {"c": ["sleep", "3600"]})
    out = await asyncio.to_thread(
        _exec, str(node_env.kubeconfig), name, ["sh", "-c", "echo from-python; echo err >&2"]
    )
    assert "from-python" in out
