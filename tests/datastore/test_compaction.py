"""The compaction policy (pure) and the background compactor on a real SQLite store."""

from __future__ import annotations

import asyncio
import pathlib

from sampan.datastore.compaction import RETAIN_REVISIONS, RETAIN_S, RetentionWindow
from sampan.datastore.sqlite import SQLiteBackend
from tests.datastore.helpers import WAIT_S


def test_keeps_the_newest_revisions_and_recent_history() -> None:
    window = RetentionWindow()
    window.observe(0.0, 5_000)
    # Nothing is old enough yet.
    assert window.target(RETAIN_S - 1, 9_000) == 0
    window.observe(100.0, 7_000)
    # Five minutes after the first sample: everything up to it may go...
    assert window.target(RETAIN_S, 9_000) == 5_000
    # ...but never the newest RETAIN_REVISIONS.
    assert window.target(RETAIN_S, 5_500) == 5_500 - RETAIN_REVISIONS
    # Later, the newer sample is old enough and the older one is forgotten.
    assert window.target(100.0 + RETAIN_S, 9_000) == 7_000
    assert window.target(100.0 + RETAIN_S, 100) == 0


async def test_background_compaction_raises_the_floor(tmp_path: pathlib.Path) -> None:
    backend = SQLiteBackend(
        tmp_path / "state.db",
        compact_interval_s=0.01,
        retention=RetentionWindow(retain_revisions=5, retain_s=0.0),
    )
    await backend.start()
    try:
        rev = await backend.create("/registry/a", b"0")
        for i in range(19):
            rev = (await backend.update("/registry/a", str(i).encode(), rev)).mod_revision
        assert rev == 20

        async def floor_reaches(target: int) -> None:
            while True:
                if await backend.compact_revision() >= target:
                    return
                await asyncio.sleep(0.01)

        await asyncio.wait_for(floor_reaches(15), WAIT_S)
        assert await backend.compact_revision() == 15
        _, kv = await backend.get("/registry/a")
        assert kv is not None
        assert kv.value == b"18"
        assert (await backend.get("/registry/a", 16))[1].mod_revision == 16
    finally:
        await backend.close()


def sqlite_bytes(path: pathlib.Path) -> int:
    return sum(p.stat().st_size for p in (path, path.with_name(path.name + "-wal")) if p.exists())


async def test_compaction_gives_sqlite_space_back(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "state.db"
    backend = SQLiteBackend(path, auto_compact=False)
    await backend.start()
    try:
        rev = await backend.create("/registry/big", b"v" * 4096)
        for _ in range(300):
            rev = (await backend.update("/registry/big", b"v" * 4096, rev)).mod_revision
        before = sqlite_bytes(path)
        await backend.compact(rev - 1)
        after = sqlite_bytes(path)
        assert after < before // 4, (before, after)
        assert (await backend.get("/registry/big"))[1].mod_revision == rev
    finally:
        await backend.close()
