"""Supervised children with real processes: a child that exits is respawned after the
back-off, a failing respawn is retried, nothing is respawned once the owner stops, and
``terminate`` escalates to SIGKILL."""

from __future__ import annotations

import asyncio
import time

import pytest

from sampan import children

FAST = children.RestartBackoff(start_s=0.05, max_s=0.2, stable_s=60.0)
WAIT_S = 20.0


class Owner:
    def __init__(self, argv: list[str], failures: int = 0) -> None:
        self.argv = argv
        self.failures = failures
        self.proc: asyncio.subprocess.Process | None = None
        self.spawned = 0
        self.exits = 0
        self.restarts = 0
        self.stopping = False
        self.twice = asyncio.Event()

    async def spawn(self) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise OSError("no such thing, this time")
        self.proc = await asyncio.create_subprocess_exec(*self.argv)
        self.spawned += 1

    def exited(self) -> None:
        self.exits += 1

    def restarted(self) -> None:
        self.restarts += 1
        if self.restarts >= 2:
            self.twice.set()

    async def watch(self) -> None:
        await children.keep_running(
            "child",
            lambda: self.proc,
            self.spawn,
            lambda: self.stopping,
            retry=(OSError,),
            backoff=FAST,
            on_exit=self.exited,
            on_restart=self.restarted,
        )


async def test_an_exiting_child_is_respawned_and_a_failed_respawn_retried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    owner = Owner(["sh", "-c", "exit 3"])
    await owner.spawn()
    owner.failures = 2  # the first two respawns fail
    watch = asyncio.create_task(owner.watch())
    try:
        await asyncio.wait_for(owner.twice.wait(), WAIT_S)
    finally:
        owner.stopping = True
        await asyncio.wait_for(watch, WAIT_S)  # returns once the current child exits
    assert owner.spawned >= 3 and owner.failures == 0
    assert "exited with code 3; restarting in 0.05s" in caplog.text
    assert caplog.text.count("child restart failed: no such thing, this time") == 2
    # the back-off doubled up to its cap while the child kept failing
    assert "restarting in 0.2s" in caplog.text


async def test_nothing_is_respawned_once_the_owner_stops() -> None:
    owner = Owner(["sleep", "30"])
    await owner.spawn()
    watch = asyncio.create_task(owner.watch())
    owner.stopping = True
    assert owner.proc is not None
    await children.terminate(owner.proc, 5.0, "child")
    await asyncio.wait_for(watch, WAIT_S)
    assert owner.spawned == 1 and owner.exits == 0 and owner.restarts == 0


async def test_terminate_kills_a_child_that_ignores_sigterm(
    caplog: pytest.LogCaptureFixture,
) -> None:
    proc = await asyncio.create_subprocess_exec(
        "sh", "-c", "trap '' TERM; echo ready; exec sleep 30", stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    assert await proc.stdout.readline() == b"ready\n"  # the trap is set
    started = time.monotonic()
    await children.terminate(proc, 0.3, "stubborn")
    assert proc.returncode == -9
    assert time.monotonic() - started < WAIT_S
    assert "stubborn (pid" in caplog.text and "killing it" in caplog.text
    await children.terminate(proc, 0.3, "stubborn")  # already gone: returns at once
