"""Small helpers for reading watches in tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from sampan.datastore.types import Event

__all__ = ["WAIT_S", "next_events"]

WAIT_S = 5.0
"""Generous upper bound for an event to arrive (a hang guard, not a timing assertion)."""


async def next_events(
    watch: AsyncIterator[list[Event]], count: int, wait_s: float = WAIT_S
) -> list[Event]:
    """Read batches until at least ``count`` events arrived (fails if they do not)."""
    events: list[Event] = []

    async def read() -> None:
        while len(events) < count:
            events.extend(await anext(watch))

    await asyncio.wait_for(read(), wait_s)
    return events
