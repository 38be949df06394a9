"""Background-task bookkeeping shared by every layer.

``log_task_end`` is the done-callback every long-lived ``asyncio`` task gets: a task that
ends with an exception is logged once, with its traceback, under its task name (tasks are
named after what they do, e.g. ``sqlite-compactor``); a cancelled or finished task is not.
``cancel_and_wait`` is how a component's ``stop()`` ends such tasks (and how a handler ends
its helper tasks): cancel them and wait until they have ended, without re-raising what they
ended with (a long-lived task's done-callback has logged that).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

__all__ = ["cancel_and_wait", "log_task_end"]

log = logging.getLogger("sampan.tasks")


def log_task_end(task: asyncio.Task[object]) -> None:
    """Done-callback: log the exception ``task`` ended with, if any."""
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.error("task %s failed: %r", task.get_name(), exc, exc_info=exc)


async def cancel_and_wait(*tasks: asyncio.Future[Any] | None) -> None:
    """Cancel each of ``tasks`` (``None``s skipped) and wait until all have ended. What one
    ended with is not raised (nor left to asyncio's "never retrieved" warning), and a
    cancellation of the caller is not swallowed."""
    pending = {task for task in tasks if task is not None}
    if not pending:
        return
    for task in pending:
        task.cancel()
    await asyncio.wait(pending)
    for task in pending:
        if not task.cancelled():
            task.exception()
