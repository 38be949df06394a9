"""Bad input and failures: a killed or frozen agent, frames for unknown connections, oversized
and malformed frames, a wrong CA checksum, a wrong token, a manager restart, a second
connection for the same cluster."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import struct
from collections.abc import AsyncIterator

import aiohttp
import pytest

from sampan.manager.tunnel import (
    CONNECT_PATH,
    CAChecksumMismatch,
    DialError,
    DialTimeout,
    StreamReset,
    run_agent,
)
from sampan.manager.tunnel.frames import MAX_FRAME_BYTES, SUBPROTOCOL, FrameType
from tests.manager.tunnel.conftest import (
    CLUSTER_ID,
    CLUSTER_NAME,
    TOKEN,
    Manager,
    Pki,
    agent_process,
    agent_task,
    echo,
    tcp_target,
    wait_until,
)


def frame(kind: FrameType, conn_id: int, payload: bytes = b"") -> bytes:
    return struct.pack("!BI", kind, conn_id) + payload


@contextlib.asynccontextmanager
async def raw_agent(
    manager: Manager, token: str = TOKEN
) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    """A hand-driven agent: the test writes the frames itself."""
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(
            manager.url + CONNECT_PATH,
            headers={"Authorization": f"Bearer {token}", "X-Sampan-Cluster": CLUSTER_NAME},
            protocols=(SUBPROTOCOL,),
            ssl=manager.pki.client_context(),
            max_msg_size=0,
        ) as ws:
            yield ws


async def test_killed_agent_ends_every_open_stream_with_an_error(manager: Manager) -> None:
    async with tcp_target(echo) as target, agent_process(manager, [target.address]) as proc:
        await manager.connected()
        assert manager.server is not None
        streams = [
            await manager.server.dial(CLUSTER_ID, "127.0.0.1", target.port) for _ in range(5)
        ]
        for reader, writer in streams:
            writer.write(b"ping")
            assert await reader.readexactly(4) == b"ping"
        proc.send_signal(signal.SIGKILL)
        for reader, _writer in streams:
            with pytest.raises(StreamReset):
                await asyncio.wait_for(reader.read(), 10)  # the manager's heartbeat is 30 s
        await wait_until(lambda: not manager.server.is_connected(CLUSTER_ID), "the disconnect")
        state = manager.server.state(CLUSTER_ID)
        assert state is not None and not state.connected and state.disconnected_at is not None
        assert [c.connected for c in manager.changes] == [True, False]


async def test_a_frozen_agent_is_dropped_by_the_heartbeat(manager: Manager) -> None:
    await manager.stop()
    manager.heartbeat_s = 0.5
    await manager.start()
    async with tcp_target(echo) as target, agent_process(manager, [target.address]) as proc:
        await manager.connected()
        assert manager.server is not None
        reader, _writer = await manager.server.dial(CLUSTER_ID, "127.0.0.1", target.port)
        os.kill(proc.pid, signal.SIGSTOP)
        with pytest.raises(StreamReset):
            await asyncio.wait_for(reader.read(), 15)
        assert not manager.server.is_connected(CLUSTER_ID)


async def test_frames_for_unknown_connections_are_answered_not_fatal(manager: Manager) -> None:
    async with raw_agent(manager) as ws:
        await manager.connected()
        assert manager.server is not None
        await ws.send_bytes(frame(FrameType.DATA, 42, b"stray"))
        answer = await ws.receive_bytes()
        assert answer == frame(FrameType.ERROR, 42, b"unknown connection 42")
        await ws.send_bytes(frame(FrameType.WINDOW, 44, struct.pack("!I", 1000)))
        assert await ws.receive_bytes() == frame(FrameType.ERROR, 44, b"unknown connection 44")
        await ws.send_bytes(frame(FrameType.CLOSE, 46))  # dropped silently
        await ws.send_bytes(frame(FrameType.ERROR, 48, b"whatever"))  # dropped silently

        # the session still works: a dial arrives, the fake agent refuses it
        dialing = asyncio.ensure_future(
            manager.server.dial(CLUSTER_ID, "10.0.0.1", 6443, timeout_s=10)
        )
        dial = await ws.receive_bytes()
        kind, conn_id = struct.unpack_from("!BI", dial)
        assert kind == FrameType.DIAL and conn_id % 2 == 1
        assert dial.endswith(b"10.0.0.1:6443")
        await ws.send_bytes(frame(FrameType.DIAL_ERROR, conn_id, b"no route to host"))
        with pytest.raises(DialError, match="no route to host"):
            await dialing
        assert manager.server.is_connected(CLUSTER_ID)
        assert manager.server._sessions[CLUSTER_ID].unknown_frames == 4


async def test_oversized_frame_closes_the_session_with_one_log_line(
    manager: Manager, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sampan.manager.tunnel")
    async with raw_agent(manager) as ws:
        await manager.connected()
        assert manager.server is not None
        await ws.send_bytes(frame(FrameType.DATA, 2, b"x" * MAX_FRAME_BYTES))
        msg = await ws.receive()
        assert msg.type is aiohttp.WSMsgType.CLOSE, msg
        assert msg.data == 1009, msg
    await wait_until(lambda: not manager.server.is_connected(CLUSTER_ID), "the disconnect")
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "exceeds limit 65536" in errors[0], errors
    assert f"cluster {CLUSTER_ID}" in errors[0]


@pytest.mark.parametrize(
    ("message", "why"),
    [
        (b"\x63\x00\x00\x00\x02", "unknown frame type 99"),
        (b"\x04\x00\x00", "shorter than its header"),
        (frame(FrameType.DATA, 2, b""), "data frame of 0 bytes"),
        (frame(FrameType.DIAL, 3, struct.pack("!II", 1, 1) + b"h:1"), "parity"),
    ],
)
async def test_malformed_frames_close_the_session(
    manager: Manager, caplog: pytest.LogCaptureFixture, message: bytes, why: str
) -> None:
    async with raw_agent(manager) as ws:
        await manager.connected()
        await ws.send_bytes(message)
        msg = await ws.receive()
        assert msg.type is aiohttp.WSMsgType.CLOSE
        assert ws.close_code == 1002
        assert why in (msg.extra or "")
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and why in errors[0], errors


async def test_data_beyond_the_granted_credit_is_a_protocol_error(manager: Manager) -> None:
    """A fake agent accepts a dial, then floods past the window the manager granted."""
    async with raw_agent(manager) as ws:
        await manager.connected()
        assert manager.server is not None
        dialing = asyncio.ensure_future(
            manager.server.dial(CLUSTER_ID, "127.0.0.1", 1, timeout_s=10)
        )
        _kind, conn_id = struct.unpack_from("!BI", await ws.receive_bytes())
        await ws.send_bytes(frame(FrameType.DIAL_OK, conn_id, struct.pack("!I", 65536)))
        reader, _writer = await dialing
        chunk = b"y" * 32 * 1024
        with contextlib.suppress(ConnectionError):
            # 640 KiB: beyond the 256 KiB window plus whatever credit the manager granted back
            # before its reader paused (nothing reads it meanwhile)
            for _ in range(20):
                await ws.send_bytes(frame(FrameType.DATA, conn_id, chunk))
        await wait_until(lambda: not manager.server.is_connected(CLUSTER_ID), "the disconnect")
        with pytest.raises(StreamReset, match="beyond the granted credit"):
            while await reader.read(1 << 20):
                pass


async def test_wrong_ca_checksum_refuses_before_sending_the_token(
    manager: Manager, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with pytest.raises(CAChecksumMismatch):
        await asyncio.wait_for(
            run_agent(
                manager.url,
                "0" * 64,
                TOKEN,
                CLUSTER_NAME,
                ["127.0.0.1:6443"],
                backoff_initial_s=0.05,
            ),
            20,
        )
    assert manager.auth_calls == []  # the token never reached the manager
    lines = [r for r in caplog.records if r.name == "sampan.manager.agent"]
    assert len(lines) == 1 and lines[0].levelno == logging.ERROR
    assert (
        "CA checksum mismatch" in lines[0].getMessage()
        and manager.checksum in lines[0].getMessage()
    )
    assert TOKEN not in caplog.text


async def test_wrong_token_is_401_with_a_status_and_the_agent_keeps_trying(
    manager: Manager, caplog: pytest.LogCaptureFixture
) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(
            manager.url + CONNECT_PATH,
            headers={
                "Authorization": "Bearer nope",
                "X-Sampan-Cluster": CLUSTER_NAME,
                "Upgrade": "websocket",
            },
            ssl=manager.pki.client_context(),
        ) as response:
            assert response.status == 401
            assert await response.json() == {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": "Unauthorized",
                "reason": "Unauthorized",
                "code": 401,
            }
    caplog.set_level(logging.INFO)
    async with agent_task(manager, ["127.0.0.1:6443"], token="stolen-or-expired"):
        await wait_until(lambda: len(manager.auth_calls) >= 3, "three attempts")
        assert manager.server is not None and not manager.server.is_connected(CLUSTER_ID)
    assert "rejected the agent's token for cluster edge-1 (401)" in caplog.text
    assert "stolen-or-expired" not in caplog.text


async def test_agent_reconnects_after_the_manager_restarts(manager: Manager) -> None:
    async with tcp_target(echo) as target, agent_task(manager, [target.address]):
        await manager.connected()
        assert manager.server is not None
        reader, writer = await manager.server.dial(CLUSTER_ID, "127.0.0.1", target.port)
        await manager.stop()
        with pytest.raises(StreamReset):
            await asyncio.wait_for(reader.read(), 10)
        await manager.start()  # same port, same CA
        await manager.connected()
        reader, writer = await manager.server.dial(CLUSTER_ID, "127.0.0.1", target.port)
        writer.write(b"back")
        writer.write_eof()
        assert await reader.read() == b"back"
        writer.close()


async def test_a_new_connection_replaces_the_old_session(manager: Manager) -> None:
    async with tcp_target(echo) as target, agent_task(manager, [target.address]):
        await manager.connected()
        assert manager.server is not None
        first = manager.server._sessions[CLUSTER_ID]
        async with agent_task(manager, [target.address]):
            await wait_until(
                lambda: manager.server._sessions.get(CLUSTER_ID) is not first, "the second session"
            )
            await wait_until(lambda: not first.alive, "the first session to close")
            assert manager.server.is_connected(CLUSTER_ID)
            assert [c.connected for c in manager.changes] == [True, True]
            reader, writer = await manager.server.dial(CLUSTER_ID, "127.0.0.1", target.port)
            writer.write(b"via the new one")
            writer.write_eof()
            assert await reader.read() == b"via the new one"
            writer.close()


async def test_heartbeats_are_recorded_and_a_disconnected_agent_comes_back(
    manager: Manager,
) -> None:
    async with agent_task(manager, ["127.0.0.1:6443"], heartbeat_s=0.2):
        await manager.connected()
        assert manager.server is not None
        first = manager.server.state(CLUSTER_ID)
        assert first is not None and first.connected and first.cluster_name == CLUSTER_NAME
        assert first.connected_at is not None and first.agent_version
        await wait_until(
            lambda: manager.server.state(CLUSTER_ID).last_heartbeat > first.connected_at,
            "a heartbeat after the connect",
        )
        await manager.server.disconnect(CLUSTER_ID, "cluster deleted")
        await wait_until(lambda: len(manager.changes) >= 3, "the reconnect")
        assert [c.connected for c in manager.changes][:3] == [True, False, True]
        assert manager.changes[1].close_reason == "cluster deleted"


async def test_a_dial_nobody_answers_times_out_and_a_late_dial_ok_is_closed(
    manager: Manager,
) -> None:
    async with raw_agent(manager) as ws:
        await manager.connected()
        assert manager.server is not None
        dialing = asyncio.ensure_future(
            manager.server.dial(CLUSTER_ID, "127.0.0.1", 6443, timeout_s=0.3)
        )
        _kind, conn_id = struct.unpack_from("!BI", await ws.receive_bytes())
        with pytest.raises(DialTimeout, match="timed out"):
            await dialing
        assert await ws.receive_bytes() == frame(FrameType.CLOSE, conn_id)  # the manager gave up
        await ws.send_bytes(frame(FrameType.DIAL_OK, conn_id, struct.pack("!I", 65536)))
        assert await ws.receive_bytes() == frame(FrameType.CLOSE, conn_id)  # late: closed again
        assert manager.server.is_connected(CLUSTER_ID)


async def test_a_manager_whose_certificate_is_not_from_the_checked_ca_never_gets_the_token(
    manager_pki: Pki, downstream_pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    """``/cacerts`` serves the expected CA (the checksum matches) but TLS presents a
    certificate from another CA, as an impostor would: the agent refuses at the handshake."""
    impostor = Manager(Pki(manager_pki.ca_pem, downstream_pki.cert_file, downstream_pki.key_file))
    await impostor.start()
    try:
        caplog.set_level(logging.INFO)
        async with agent_task(impostor, ["127.0.0.1:6443"]):
            await wait_until(lambda: caplog.text.count("cannot reach manager") >= 2, "two attempts")
        assert impostor.auth_calls == []
        assert "CERTIFICATE_VERIFY_FAILED" in caplog.text
    finally:
        await impostor.stop()


async def test_cluster_params_reach_the_manager_and_stay_out_of_logs(
    manager: Manager, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    reads: list[int] = []

    def params() -> dict[str, str]:
        reads.append(1)
        return {"address": "10.43.0.1:443", "caCert": "PEM", "token": f"sa-token-{len(reads)}"}

    async with agent_task(manager, ["10.43.0.1:443"], cluster_params=params):
        await manager.connected()
        assert manager.server is not None
        state = manager.server.state(CLUSTER_ID)
        assert state is not None
        assert dict(state.params) == {
            "address": "10.43.0.1:443",
            "caCert": "PEM",
            "token": "sa-token-1",
        }
        assert "sa-token" not in repr(state)
        await manager.server.disconnect(CLUSTER_ID)  # params are read again at the reconnect
        await wait_until(lambda: len(manager.changes) >= 3, "the reconnect")
        assert manager.server.state(CLUSTER_ID).params["token"] == "sa-token-2"
    assert "sa-token" not in caplog.text


async def test_malformed_cluster_params_are_a_400_status(manager: Manager) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(
            manager.url + CONNECT_PATH,
            headers={
                "Authorization": f"Bearer {TOKEN}",
                "X-Sampan-Cluster": CLUSTER_NAME,
                "X-Sampan-Cluster-Params": "bm90IGpzb24=",  # "not json"
            },
            ssl=manager.pki.client_context(),
        ) as response:
            assert response.status == 400
            body = await response.json()
            assert body["reason"] == "BadRequest" and body["code"] == 400
            assert "X-Sampan-Cluster-Params" in body["message"]


async def test_sigterm_closes_the_tunnel_and_exits_zero(manager: Manager) -> None:
    """In its container the agent is PID 1, where an unhandled SIGTERM is ignored: it must
    handle it, or a deleted pod lingers until SIGKILL and the cluster looks connected."""
    async with tcp_target(echo) as target, agent_process(manager, [target.address]) as proc:
        await manager.connected()
        assert manager.server is not None
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 20) == 0
        await wait_until(lambda: not manager.server.is_connected(CLUSTER_ID), "the disconnect")
        assert proc.stderr is not None
        assert b"terminated: tunnel to the manager closed" in await proc.stderr.read()
