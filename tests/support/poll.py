"""``eventually``: the one way tests wait for something that happens asynchronously.

It polls an async (or plain) predicate until it returns something truthy and returns that
value. An ``AssertionError`` the predicate raises counts as "not yet" (its last one is kept
for the failure message). The bound only keeps a broken test from hanging: no test asserts
how long anything took.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

__all__ = ["EVENTUALLY_TIMEOUT_S", "POLL_INTERVAL_S", "eventually"]

T = TypeVar("T")

#: Long enough for a loaded 2-core machine; a passing test never gets near it.
EVENTUALLY_TIMEOUT_S = 60.0
POLL_INTERVAL_S = 0.05


async def eventually(
    predicate: Callable[[], Awaitable[T] | T],
    timeout_s: float = EVENTUALLY_TIMEOUT_S,
    *,
    what: str = "",
    interval_s: float = POLL_INTERVAL_S,
) -> T:
    """Poll ``predicate`` until truthy and return its value; fail after ``timeout_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    last: Any = None
    last_error: AssertionError | None = None
    while True:
        try:
            last = predicate()
            if inspect.isawaitable(last):
                last = await last
        except AssertionError as exc:
            last_error, last = exc, None
        if last:
            return last  # type: ignore[no-any-return]
        if loop.time() >= deadline:
            break
        await asyncio.sleep(interval_s)
    detail = f"last error {last_error!r}" if last_error is not None else f"last value {last!r}"
    what = what or getattr(predicate, "__name__", "a condition")
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}; {detail}")
