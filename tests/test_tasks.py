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
