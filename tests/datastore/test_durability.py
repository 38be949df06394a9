"""SQLite durability: a writer killed with SIGKILL loses nothing it reported as committed."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys

from sampan.datastore.sqlite import SQLiteBackend
from tests.datastore.helpers import next_events

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
WRITES_BEFORE_KILL = 400
WRITERS = 8


def run_and_kill_writer(db_path: pathlib.Path) -> list[tuple[int, str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.datastore.durability_writer", str(db_path), str(WRITERS)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    acknowledged: list[tuple[int, str]] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            revision, key = line.split()
            acknowledged.append((int(revision), key))
            if len(acknowledged) >= WRITES_BEFORE_KILL:
                os.kill(proc.pid, signal.SIGKILL)
                break
        # Lines already written before the kill were acknowledged too.
        rest, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL, err
    for line in rest.splitlines():
        if line.strip():
            revision, key = line.split()
            acknowledged.append((int(revision), key))
    return acknowledged


async def test_every_acknowledged_write_survives_sigkill(tmp_path: pathlib.Path) -> None:
    db_path = tmp_path / "state.db"
    acknowledged = run_and_kill_writer(db_path)
    assert len(acknowledged) >= WRITES_BEFORE_KILL

    backend = SQLiteBackend(db_path, auto_compact=False)
    await backend.start()
    try:
        current = await backend.current_revision()
        assert current >= max(rev for rev, _ in acknowledged)
        for revision, key in acknowledged:
            _, kv = await backend.get(key)
            assert kv is not None, key
            assert kv.mod_revision == revision
        watch = backend.watch("/registry/", 1)
        try:
            events = await next_events(watch, current)
        finally:
            await watch.aclose()
        assert [e.revision for e in events] == list(range(1, current + 1))
        # The store still takes writes after the crash.
        assert await backend.create("/registry/durable/after", b"x") == current + 1
    finally:
        await backend.close()
