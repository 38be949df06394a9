"""Background-task bookkeeping shared by every layer.

``log_task_end`` is the done-callback every long-lived ``asyncio`` task gets: a task that
ends with an exception is logged once, with its traceback, under its task name (tasks are
named after what they do, e.g. ``sqlite-compactor``); a cancelled or finished task is not.
``cancel_and_wait`` is how a component's ``stop()`` ends such a task: cancel it and wait until
it has ended, without re-raising what it ended with (its done-callback has logged that).
"""

from __future__ import annotations

import asyncio
import logging

__all__ = ["cancel_and_wait", "log_task_end"]

log = logging.getLogger("sampan.tasks")


def log_task_end(task: asyncio.Task[object]) -> None:
    """Done-callback: log the exception ``task`` ended with, if any."""
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.error("task %s failed: %r", task.get_name(), exc, exc_info=exc)


async def cancel_and_wait(task: asyncio.Task[object] | asyncio.Task[None] | None) -> None:
    """Cancel ``task`` (``None``: nothing to do) and wait until it has ended."""
    if task is None:
        return
    task.cancel()
    await asyncio.wait({task})
