"""Exec and port-forward over every WebSocket subprotocol a client may ask for, with a raw
WebSocket client through the API server (what client libraries other than kubectl speak).

Channel protocols: ``v5.channel.k8s.io`` (bridged by the kubelet, CLOSE on channel 255),
``v4.channel.k8s.io`` (exit Status on channel 3), ``channel.k8s.io`` and the base64 variants
(``v4.base64.channel.k8s.io``, ``base64.channel.k8s.io``: the channel is an ASCII digit and
the data base64); port-forward with ``v4.channel.k8s.io`` port-prefixed frames (data and error
channel per port, several ports in one request).
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import struct
from urllib.parse import urlencode

import aiohttp
import pytest
import yaml

from tests.kubelet.server.conftest import NodeEnv, unique

pytestmark = pytest.mark.asyncio(loop_scope="session")

STDIN, STDOUT, STDERR, ERROR = 0, 1, 2, 3
WS_TIMEOUT_S = 30.0


def _session(env: NodeEnv) -> tuple[aiohttp.ClientSession, str]:
    config = yaml.safe_load(env.kubeconfig.read_text())
    cluster = config["clusters"][0]["cluster"]
    user = config["users"][0]["user"]
    context = ssl.create_default_context(
        cadata=base64.b64decode(cluster["certificate-authority-data"]).decode()
    )
    cert = env.kubeconfig.parent / "stream-test.crt"
    key = env.kubeconfig.parent / "stream-test.key"
    cert.write_bytes(base64.b64decode(user["client-certificate-data"]))
    key.write_bytes(base64.b64decode(user["client-key-data"]))
    key.chmod(0o600)
    context.load_cert_chain(cert, key)
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context))
    return session, cluster["server"].replace("https://", "wss://")


def _frame(protocol: str, channel: int, data: bytes) -> tuple[str | bytes, bool]:
    """(payload, is_text) of one client frame in ``protocol``'s encoding."""
    if "base64" in protocol:
        return str(channel) + base64.b64encode(data).decode(), True
    return bytes([channel]) + data, False


def _decode(protocol: str, message: aiohttp.WSMessage) -> tuple[int, bytes]:
    if "base64" in protocol:
        text = message.data if isinstance(message.data, str) else message.data.decode()
        return int(text[0]), base64.b64decode(text[1:])
    data = message.data if isinstance(message.data, bytes) else message.data.encode()
    return data[0], data[1:]


async def _exec(
    env: NodeEnv, pod: str, protocol: str, command: list[str], stdin: bytes | None
) -> tuple[str, dict[int, bytes]]:
    session, base = _session(env)
    params = [("command", c) for c in command] + [("stdout", "true"), ("stderr", "true")]
    if stdin is not None:
        params.append(("stdin", "true"))
    query = urlencode(params)
    url = f"{base}/api/v1/namespaces/default/pods/{pod}/exec?{query}"
    got: dict[int, bytes] = {}
    async with session:
        async with session.ws_connect(url, protocols=(protocol,)) as ws:
            assert ws.protocol == protocol
            if stdin is not None:
                payload, text = _frame(protocol, STDIN, stdin)
                await (ws.send_str(payload) if text else ws.send_bytes(payload))
                if protocol.startswith("v5."):
                    await ws.send_bytes(bytes([255, STDIN]))
            async with asyncio.timeout(WS_TIMEOUT_S):
                async for message in ws:
                    if message.type not in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT):
                        break
                    channel, data = _decode(protocol, message)
                    got[channel] = got.get(channel, b"") + data
    return protocol, got


@pytest.mark.parametrize(
    "protocol",
    [
        "v5.channel.k8s.io",
        "v4.channel.k8s.io",
        "v4.base64.channel.k8s.io",
        "channel.k8s.io",
        "base64.channel.k8s.io",
    ],
)
async def test_exec_over_each_channel_protocol(node_env: NodeEnv, protocol: str) -> None:
    name = unique("proto")
    await node_env.run_pod(name, {"c": ["sleep", "3600"]})
    _, got = await _exec(
        node_env, name, protocol, ["sh", "-c", "echo out; echo err >&2; exit 3"], None
    )
    assert got.get(STDOUT) == b"out\n"
    assert got.get(STDERR) == b"err\n"
    if protocol.startswith(("v4.", "v5.")):
        status = json.loads(got[ERROR])
        assert status["status"] == "Failure" and status["reason"] == "NonZeroExitCode"
        causes = status["details"]["causes"]
        assert {"reason": "ExitCode", "message": "3"} in causes


@pytest.mark.parametrize("protocol", ["v5.channel.k8s.io", "v4.base64.channel.k8s.io"])
async def test_exec_stdin_over_websocket(node_env: NodeEnv, protocol: str) -> None:
    name = unique("stdin")
    await node_env.run_pod(name, {"c": ["sleep", "3600"]})
    if protocol.startswith("v5."):
        _, got = await _exec(node_env, name, protocol, ["cat"], b"through-stdin\n")
        assert got.get(STDOUT) == b"through-stdin\n"
        assert json.loads(got[ERROR])["status"] == "Success"
    else:
        # Without v5's CLOSE a client cannot end stdin: read a line, then let head exit.
        _, got = await _exec(node_env, name, protocol, ["head", "-n1"], b"one-line\n")
        assert got.get(STDOUT) == b"one-line\n"


async def test_port_forward_several_ports_over_v4_websocket(node_env: NodeEnv) -> None:
    name = unique("pf")
    await node_env.run_pod(
        name,
        {
            "a": ["sh", "-c", "echo port-a > /tmp/a; exec httpd -f -p 8090 -h /tmp"],
            "b": [
                "sh",
                "-c",
                "mkdir /tmp/b; echo port-b > /tmp/b/a; exec httpd -f -p 8091 -h /tmp/b",
            ],
        },
    )
    session, base = _session(node_env)
    url = f"{base}/api/v1/namespaces/default/pods/{name}/portforward?ports=8090,8091"
    request = b"GET /a HTTP/1.0\r\n\r\n"
    async with session:
        for _ in range(50):  # the servers may still be starting: a refused port is retried
            replies: dict[int, bytes] = {0: b"", 2: b""}
            errors: dict[int, bytes] = {1: b"", 3: b""}
            async with session.ws_connect(url, protocols=("v4.channel.k8s.io",)) as ws:
                assert ws.protocol == "v4.channel.k8s.io"
                first: dict[int, int] = {}
                for channel in (0, 2):
                    await ws.send_bytes(bytes([channel]) + request)
                async with asyncio.timeout(WS_TIMEOUT_S):
                    async for message in ws:
                        if message.type != aiohttp.WSMsgType.BINARY:
                            break
                        channel, data = message.data[0], message.data[1:]
                        if channel not in first:  # each channel starts with its port
                            first[channel] = struct.unpack("<H", data[:2])[0]
                            data = data[2:]
                        (replies if channel in replies else errors)[channel] += data
                        if all(r.endswith(b"\n") and b"port-" in r for r in replies.values()):
                            break
            assert first.get(0) == 8090 and first.get(2) == 8091, first
            if not any(errors.values()):
                break
            await asyncio.sleep(0.2)
    assert replies[0].endswith(b"port-a\n"), (replies, errors)
    assert replies[2].endswith(b"port-b\n"), (replies, errors)
