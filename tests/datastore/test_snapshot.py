"""SQLite snapshots: a consistent copy while writes continue, verification, restore, files."""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import zipfile
from pathlib import Path

import pytest

from sampan.datastore.snapshot import (
    REVISION_BUMP,
    SnapshotError,
    SQLiteSnapshots,
    delete_snapshots,
    list_snapshots,
    prune_snapshots,
    restore_snapshot,
    save_snapshot,
    snapshot_backend,
)
from sampan.datastore.sqlite import SQLiteBackend
from sampan.datastore.types import CompactedError

PREFIX = "/registry/configmaps/default/"


def _log_is_a_prefix(path: Path) -> tuple[int, int]:
    """(revision, rows): the copy holds every revision up to its sequence and nothing after,
    i.e. the log as of one commit."""
    conn = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
    try:
        seq = conn.execute("SELECT seq FROM sqlite_sequence WHERE name='kv'").fetchone()[0]
        rows, top = conn.execute("SELECT COUNT(*), MAX(id) FROM kv").fetchone()
    finally:
        conn.close()
    assert rows == seq == top
    return seq, rows


async def test_snapshot_is_consistent_while_writes_continue(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    backend = SQLiteBackend(db, auto_compact=False)
    await backend.start()
    stop = asyncio.Event()
    warmed_up = asyncio.Event()
    written: list[int] = []

    async def writer(n: int) -> None:
        i = 0
        while not stop.is_set():
            rev = await backend.create(f"{PREFIX}w{n}-{i}", b"x" * 200)
            rev = await backend.update(f"{PREFIX}w{n}-{i}", b"y" * 200, rev)
            written.append(rev)
            if len(written) >= 50:
                warmed_up.set()
            i += 1

    writers = [asyncio.create_task(writer(n)) for n in range(4)]
    snapshots = SQLiteSnapshots(db)
    taken = []
    try:
        await warmed_up.wait()
        for i in range(3):
            snap = await asyncio.to_thread(
                functools.partial(
                    save_snapshot,
                    snapshots,
                    tmp_path / "snaps",
                    name="on-demand",
                    node="n1",
                    now_s=1_000_000_000 + i,
                )
            )
            taken.append(snap)
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.gather(*writers)
    final = await backend.current_revision()
    await backend.close()
    revisions = []
    for snap in taken:
        assert snap.path.stat().st_mode & 0o777 == 0o600
        revision, _ = _log_is_a_prefix(snap.path)
        info = snapshots.verify(snap.path)
        assert info.revision == revision
        revisions.append(revision)
    assert 0 < revisions[0] <= revisions[-1] < final  # taken while writes went on

    # Restore the first snapshot into a fresh place and read it through the driver.
    target = tmp_path / "restored" / "state.db"
    restored = SQLiteSnapshots(target).restore(taken[0].path)
    assert restored.revision == revisions[0] + REVISION_BUMP
    backend = SQLiteBackend(target, auto_compact=False)
    await backend.start()
    try:
        assert await backend.current_revision() == revisions[0] + REVISION_BUMP
        listed = await backend.list(PREFIX)
        assert len(listed.items) == restored.keys > 0
        with pytest.raises(CompactedError):
            await backend.get(listed.items[0].key, revision=revisions[0])
        rev = await backend.create(f"{PREFIX}after", b"z")
        assert rev == revisions[0] + REVISION_BUMP + 1
    finally:
        await backend.close()


async def test_restore_refuses_bad_files_and_a_running_server(tmp_path: Path) -> None:
    db = tmp_path / "db" / "state.db"
    backend = SQLiteBackend(db, auto_compact=False)
    await backend.start()
    for i in range(20):
        await backend.create(f"{PREFIX}k{i}", b"v" * 4000)
    snapshots = SQLiteSnapshots(db)
    good = save_snapshot(snapshots, tmp_path / "s", name="on-demand", node="n", now_s=1000000001)
    zipped = save_snapshot(
        snapshots, tmp_path / "s", name="on-demand", node="n", compress=True, now_s=1000000002
    )
    assert zipfile.is_zipfile(zipped.path)
    with pytest.raises(SnapshotError, match="in use: stop the server first"):
        restore_snapshot(snapshots, good.path)
    await backend.close()
    before = db.read_bytes()

    truncated = tmp_path / "truncated.db"
    truncated.write_bytes(good.path.read_bytes()[: good.size // 2])
    not_db = tmp_path / "notes.txt"
    not_db.write_text("hello\n")
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.commit()
    cut_zip = tmp_path / "cut.zip"
    cut_zip.write_bytes(zipped.path.read_bytes()[:100])
    for bad, message in (
        (truncated, "truncated"),
        (not_db, "not a Sampan snapshot"),
        (other, "not a Sampan datastore"),
        (cut_zip, "not a zip archive"),
        (tmp_path / "missing.db", "no such snapshot file"),
    ):
        with pytest.raises(SnapshotError, match=message) as info:
            restore_snapshot(snapshots, bad)
        assert "\n" not in str(info.value)
        assert db.read_bytes() == before  # nothing changed

    info = restore_snapshot(snapshots, zipped.path)
    assert info.keys == 20


async def test_files_list_delete_prune(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    backend = SQLiteBackend(db, auto_compact=False)
    await backend.start()
    await backend.create(f"{PREFIX}a", b"1")
    await backend.close()
    snapshots = snapshot_backend(f"sqlite://{db}", tmp_path)
    directory = tmp_path / "snaps"
    for ts in range(1000000001, 1000000008):
        save_snapshot(snapshots, directory, name="etcd-snapshot", node="node-a", now_s=ts)
    save_snapshot(snapshots, directory, name="on-demand", node="node-a", now_s=1000000009)
    names = [s.name for s in list_snapshots(directory)]
    assert names[0] == "etcd-snapshot-node-a-1000000001" and len(names) == 8
    assert directory.stat().st_mode & 0o777 == 0o700
    pruned = prune_snapshots(directory, name="etcd-snapshot", node="node-a", retention=5)
    assert pruned == ["etcd-snapshot-node-a-1000000001", "etcd-snapshot-node-a-1000000002"]
    assert delete_snapshots(directory, ["on-demand-node-a-1000000009"]) == [
        "on-demand-node-a-1000000009"
    ]
    assert len(list_snapshots(directory)) == 5
    with pytest.raises(SnapshotError, match="not found"):
        delete_snapshots(directory, ["nope"])
    with pytest.raises(SnapshotError, match="pg_dump"):
        snapshot_backend("postgres://u:secret@h/db", tmp_path)
