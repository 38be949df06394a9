"""The official kubernetes Python client's exec (WebSocket v4.channel.k8s.io) end to end."""

from __future__ import annotations

import asyncio
import time

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


def _client(kubeconfig: str):
    from kubernetes import client, config

    api_client = config.new_client_from_config(config_file=kubeconfig)
    return api_client, client.CoreV1Api(api_client)


def _exec_with_stdin(kubeconfig: str, pod: str) -> tuple[str, str, str, int | None]:
    """write_stdin + readline_stdout on a shell, then the v5 CLOSE signal ending ``cat``."""
    from kubernetes.stream import stream

    api_client, core = _client(kubeconfig)
    try:
        shell = stream(
            core.connect_get_namespaced_pod_exec,
            pod,
            "default",
            command=["sh"],
            stderr=True,
            stdin=True,
            stdout=True,
            tty=False,
            _preload_content=False,
        )
        try:
            shell.write_stdin("echo line-one\n")
            first = shell.readline_stdout(timeout=20)
            shell.write_stdin("echo line-two\n")
            second = shell.readline_stdout(timeout=20)
        finally:
            shell.close()
        cat = stream(
            core.connect_get_namespaced_pod_exec,
            pod,
            "default",
            command=["cat"],
            stderr=True,
            stdin=True,
            stdout=True,
            tty=False,
            _preload_content=False,
        )
        protocol = cat.subprotocol or ""
        cat.write_stdin("to-cat\n")
        cat.close_channel(0)  # v5: stdin is closed, so cat sees EOF and exits
        cat.run_forever(timeout=20)
        code = cat.returncode
        echoed = cat.read_stdout()
        cat.close()
        return first, second, protocol + "|" + echoed, code
    finally:
        api_client.close()


async def test_python_client_exec_with_stdin_and_v5_close(node_env: NodeEnv) -> None:
    name = unique("pyin")
    await node_env.run_pod(name, {"c": ["sleep", "3600"]})
    first, second, echoed, code = await asyncio.to_thread(
        _exec_with_stdin, str(node_env.kubeconfig), name
    )
    assert first == "line-one"
    assert second == "line-two"
    assert echoed == "v5.channel.k8s.io|to-cat\n"
    assert code == 0


def _port_forward_get(kubeconfig: str, pod: str, port: int) -> bytes:
    from kubernetes.stream import portforward

    api_client, core = _client(kubeconfig)
    try:
        forward = portforward(
            core.connect_get_namespaced_pod_portforward, pod, "default", ports=str(port)
        )
        sock = forward.socket(port)
        sock.setblocking(True)
        data = b""
        try:
            sock.sendall(b"GET /index.html HTTP/1.0\r\nHost: pod\r\n\r\n")
            while chunk := sock.recv(4096):
                data += chunk
        except (BrokenPipeError, ConnectionResetError):
            # Nothing listens yet: the kubelet answered on the error channel and the client
            # closed its end of the socket pair (as against kube-apiserver). Retried.
            return b""
        finally:
            sock.close()
        error = forward.error(port)
        forward.close()
        if not data and error is not None and "refused" in error:
            return b""  # the same, when the error arrived first
        assert error is None, error
        return data
    finally:
        api_client.close()


async def test_python_client_port_forward(node_env: NodeEnv) -> None:
    name = unique("pypf")
    await node_env.run_pod(
        name,
        {
            "w": [
                "sh",
                "-c",
                "echo hello-py > /var/www/index.html; exec httpd -f -p 8081 -h /var/www",
            ]
        },
    )
    await asyncio.sleep(0)  # httpd is started by the shell; the GET below retries on refusal
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        reply = await asyncio.to_thread(_port_forward_get, str(node_env.kubeconfig), name, 8081)
        if reply:
            break
        await asyncio.sleep(0.2)
    assert reply.startswith(b"HTTP/1.") and reply.endswith(b"hello-py\n"), reply
