"""sampan.tasks: ending a component's background task."""

from __future__ import annotations

import asyncio

from sampan.tasks import cancel_and_wait


async def test_cancel_and_wait_ends_a_running_task() -> None:
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(forever())
    await started.wait()
    await cancel_and_wait(task)
    assert task.cancelled()


async def test_cancel_and_wait_does_not_raise_what_the_task_ended_with() -> None:
    async def fails() -> None:
        raise RuntimeError("boom")

    task = asyncio.create_task(fails())
    await asyncio.wait({task})
    await cancel_and_wait(task)
    assert isinstance(task.exception(), RuntimeError)


async def test_cancel_and_wait_accepts_none() -> None:
    await cancel_and_wait(None)


async def test_cancel_and_wait_ends_several_tasks_and_keeps_the_callers_cancellation() -> None:
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    async def fails() -> None:
        raise RuntimeError("boom")

    running, failed = asyncio.create_task(forever()), asyncio.create_task(fails())
    await started.wait()
    await cancel_and_wait(running, None, failed)
    assert running.cancelled() and isinstance(failed.exception(), RuntimeError)

    # A caller cancelled while it waits is cancelled: the wait does not swallow it.
    stubborn_started, release = asyncio.Event(), asyncio.Event()

    async def stubborn() -> None:
        stubborn_started.set()
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue  # ends only when released

    inner = asyncio.create_task(stubborn())
    await stubborn_started.wait()
    caller = asyncio.create_task(cancel_and_wait(inner))
    await asyncio.sleep(0)
    caller.cancel()
    await asyncio.wait({caller})
    assert caller.cancelled()
    release.set()
    await inner
