"""The Helm engine's child process: its failures are answers, and its death is not ours."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from sampan.helm.engine import EngineError, HelmEngine

pytestmark = pytest.mark.timeout(120)


async def hanging_registry(connected: asyncio.Event) -> tuple[asyncio.Server, int]:
    """A TCP server that accepts and never answers (a registry that hangs)."""

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connected.set()
        await reader.read()  # until the peer goes away
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_errors_are_answers_and_the_child_is_reused() -> None:
    async with HelmEngine() as engine:
        for _ in range(2):
            with pytest.raises(EngineError) as caught:
                await engine.run(
                    {
                        "action": "pull",
                        "chart_ref": "oci://127.0.0.1:1/charts/none",
                        "plain_http": True,
                    }
                )
            assert caught.value.kind.startswith("Helm")
            assert "127.0.0.1:1" in caught.value.message
        with pytest.raises(EngineError) as caught:
            await engine.run({"action": "nonsense", "kubeconfig": "", "namespace": "x"})
        assert caught.value.kind == "ValueError"
        assert engine.started == 1


async def test_a_killed_child_fails_one_request_and_is_replaced() -> None:
    connected = asyncio.Event()
    server, port = await hanging_registry(connected)
    async with server, HelmEngine() as engine:
        request = {"action": "pull", "chart_ref": f"oci://127.0.0.1:{port}/c/x", "plain_http": True}
        running = asyncio.create_task(engine.run(request, timeout_s=60))
        await connected.wait()  # the child is inside Helm, waiting on the registry
        assert engine._proc is not None
        os.kill(engine._proc.pid, signal.SIGKILL)
        with pytest.raises(EngineError) as caught:
            await running
        assert caught.value.kind == "EngineCrashed"
        assert "-9" in caught.value.message
        # The next request gets a fresh child.
        with pytest.raises(EngineError) as caught:
            await engine.run(
                {"action": "pull", "chart_ref": "oci://127.0.0.1:1/charts/none", "plain_http": True}
            )
        assert caught.value.kind.startswith("Helm")
        assert engine.started == 2


async def test_an_idle_child_exits() -> None:
    async with HelmEngine(idle_exit_s=0.2) as engine:
        with pytest.raises(EngineError):
            await engine.run({"action": "nonsense", "kubeconfig": "", "namespace": "x"})
        proc = engine._proc
        assert proc is not None
        await asyncio.wait_for(proc.wait(), 30)
        assert engine._proc is None
