"""Background compaction policy shared by the drivers.

The drivers know *how* to compact (``Backend.compact(revision)`` deletes superseded rows and
tombstones at or below a revision in small batches, then the floor is raised); this module
decides *when* and *how far*.

Policy: every ``COMPACT_INTERVAL_S`` the compactor samples the current revision. The target is
the smaller of

* ``current - RETAIN_REVISIONS`` (keep at least the newest 1,000 revisions), and
* the revision sampled at least ``RETAIN_S`` ago (keep at least 5 minutes of history).

A freshly started process has no sample that old, so it never compacts in its first five
minutes: the time guarantee holds across restarts without storing write times in rows.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from typing import Protocol

from sampan.datastore.types import StoreError

__all__ = [
    "COMPACT_BATCH_ROWS",
    "COMPACT_INTERVAL_S",
    "RETAIN_REVISIONS",
    "RETAIN_S",
    "Compactable",
    "RetentionWindow",
    "run_compactor",
]

log = logging.getLogger(__name__)

COMPACT_INTERVAL_S = 60.0
"""How often the compactor wakes."""

RETAIN_REVISIONS = 1_000
"""Compaction always keeps at least this many of the newest revisions."""

RETAIN_S = 300.0
"""Compaction always keeps at least this much (wall time) of history."""

COMPACT_BATCH_ROWS = 500
"""Rows deleted per transaction, so the writer is never held for long."""


class Compactable(Protocol):
    async def current_revision(self) -> int: ...

    async def compact_revision(self) -> int: ...

    async def compact(self, revision: int) -> None: ...


class RetentionWindow:
    """Remembers (time, revision) samples and says how far compaction may go."""

    def __init__(
        self, *, retain_revisions: int = RETAIN_REVISIONS, retain_s: float = RETAIN_S
    ) -> None:
        self._retain_revisions = retain_revisions
        self._retain_s = retain_s
        self._samples: collections.deque[tuple[float, int]] = collections.deque()

    def observe(self, now_s: float, revision: int) -> None:
        self._samples.append((now_s, revision))

    def target(self, now_s: float, current_revision: int) -> int:
        """The highest revision that may be compacted now (0: nothing)."""
        cutoff_s = now_s - self._retain_s
        # Keep only the newest sample old enough, and everything younger.
        while len(self._samples) >= 2 and self._samples[1][0] <= cutoff_s:
            self._samples.popleft()
        if not self._samples or self._samples[0][0] > cutoff_s:
            return 0
        old_revision = self._samples[0][1]
        return max(0, min(old_revision, current_revision - self._retain_revisions))


async def run_compactor(
    backend: Compactable,
    *,
    interval_s: float = COMPACT_INTERVAL_S,
    window: RetentionWindow | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Compact ``backend`` forever (until cancelled); store errors are logged and retried at
    the next interval."""
    window = window or RetentionWindow()
    first = True
    while True:
        if not first:
            await asyncio.sleep(interval_s)
        first = False
        try:
            current = await backend.current_revision()
            now_s = clock()
            window.observe(now_s, current)
            target = window.target(now_s, current)
            if target > await backend.compact_revision():
                started_s = clock()
                await backend.compact(target)
                log.info(
                    "compacted datastore to revision %d (current %d) in %.3f s",
                    target,
                    current,
                    clock() - started_s,
                )
        except StoreError as err:
            log.warning("datastore compaction failed, will retry: %s", err)
