"""The embedded SQLite driver: one log table, one writer thread with group commit, reader pool.

Owns the SQLite file (and its WAL) for the life of the process; no other process may write it.

Write path: callers validate on the event loop, then enqueue a request (an operation plus a
future) for the single writer thread. The writer takes every request queued at that moment
(up to ``MAX_GROUP_REQUESTS``), runs them one after another in ONE ``BEGIN IMMEDIATE``
transaction and commits once (one fsync with ``synchronous=FULL``), then hands the results and
the new rows' events back to the loop in one callback. So N concurrent writers share one fsync.

Invariants:

* only the writer thread writes; each operation checks its precondition (key live, expected
  revision) before inserting, so a refused request inserts nothing and consumes no id — the id
  sequence (``AUTOINCREMENT``, never reused) has no holes and watchers never wait on one;
* events are published to the broadcaster on the loop *before* the writers' futures resolve,
  in commit order, exactly once;
* reads run on a small pool of reader threads, each with its own connection, each read in one
  snapshot (WAL readers never wait for the writer); no sqlite call runs on the event loop.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import functools
import logging
import os
import pathlib
import queue
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from sampan.datastore.compaction import (
    COMPACT_BATCH_ROWS,
    COMPACT_INTERVAL_S,
    RetentionWindow,
    run_compactor,
)
from sampan.datastore.keys import (
    COLUMNS,
    KV_COLUMNS,
    Row,
    check_key,
    check_prefix,
    check_value,
    prefix_end,
    row_event,
    row_kv,
)
from sampan.datastore.types import (
    KEY_PREFIX,
    CompactedError,
    ConflictError,
    Event,
    FutureRevisionError,
    KeyExistsError,
    KeyNotFoundError,
    KeyValue,
    ListResult,
    StoreError,
    StoreUnavailableError,
)
from sampan.datastore.watch import Broadcaster, watch_events
from sampan.tasks import log_task_end

__all__ = [
    "DB_FILE_MODE",
    "MAX_GROUP_REQUESTS",
    "READER_THREADS",
    "SQLiteBackend",
]

log = logging.getLogger(__name__)
_T = TypeVar("_T")

MAX_GROUP_REQUESTS = 1_000
"""Most requests committed in one transaction."""

READER_THREADS = 4
"""Reader threads (each with its own connection)."""

BUSY_TIMEOUT_MS = 5_000
"""How long a connection waits for a lock held by another connection."""

JOURNAL_SIZE_LIMIT_BYTES = 64 * 1024 * 1024
"""The WAL file is truncated back to this size after a checkpoint."""

DB_FILE_MODE = 0o600
"""The database, its WAL and shared-memory files are readable by their owner only."""

COMPACT_SCAN_WINDOW_IDS = 5_000
"""Ids scanned per compaction batch at most, so a batch with few candidates stays short."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    created INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
    create_revision INTEGER NOT NULL,
    prev_revision INTEGER NOT NULL,
    lease INTEGER NOT NULL,
    value BLOB NOT NULL,
    old_value BLOB NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS kv_name_prev_revision ON kv (name, prev_revision);
CREATE INDEX IF NOT EXISTS kv_name_id ON kv (name, id);
CREATE TABLE IF NOT EXISTS kv_meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO kv_meta (name, value) VALUES ('compact_revision', 0);
"""

_SNAPSHOT_SQL = (
    "SELECT (SELECT seq FROM sqlite_sequence WHERE name = 'kv'),"
    " (SELECT value FROM kv_meta WHERE name = 'compact_revision')"
)
_LATEST_SQL = f"SELECT {COLUMNS} FROM kv WHERE name = ? ORDER BY id DESC LIMIT 1"
_GET_SQL = (
    f"SELECT deleted, {KV_COLUMNS} FROM kv WHERE name = ? AND id <= ? ORDER BY id DESC LIMIT 1"
)
_INSERT_SQL = (
    "INSERT INTO kv (name, created, deleted, create_revision, prev_revision, lease, value,"
    " old_value) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
# A row is the live record of its key at revision R when it is not a tombstone, id <= R, and
# no row written at or before R superseded it (UNIQUE(name, prev_revision) finds that one).
_LIVE_AT = (
    "k.id <= ? AND k.deleted = 0 AND NOT EXISTS (SELECT 1 FROM kv AS s"
    " WHERE s.name = k.name AND s.prev_revision = k.id AND s.id <= ?)"
)
_LIST_SQL = (
    f"SELECT {KV_COLUMNS} FROM kv AS k WHERE k.name {{lower}} ? AND k.name < ? AND {_LIVE_AT}"
    " ORDER BY k.name LIMIT ?"
)
_LIST_FROM_PREFIX_SQL = _LIST_SQL.format(lower=">=")
_LIST_AFTER_KEY_SQL = _LIST_SQL.format(lower=">")
_COUNT_SQL = f"SELECT COUNT(*) FROM kv AS k WHERE k.name >= ? AND k.name < ? AND {_LIVE_AT}"
# Unary + keeps the planner on the primary key (an id range) rather than the name index.
_HISTORY_SQL = (
    f"SELECT {COLUMNS} FROM kv WHERE id > ? AND id <= ? AND +name >= ? AND +name < ? ORDER BY id"
)
_COMPACT_CANDIDATES_SQL = (
    "SELECT k.id FROM kv AS k WHERE k.id > ? AND k.id <= ? AND (k.deleted = 1 OR EXISTS"
    " (SELECT 1 FROM kv AS s WHERE s.name = k.name AND s.prev_revision = k.id AND s.id <= ?))"
    " ORDER BY k.id LIMIT ?"
)

_Op = Callable[[sqlite3.Connection], tuple[Any, list[Row]]]


@dataclass(slots=True)
class _Request:
    op: _Op
    future: asyncio.Future[Any]
    standalone: bool = False
    """Run outside any transaction (PRAGMAs such as checkpoints), not grouped."""


def _connect(path: pathlib.Path, *, read_only: bool) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    if read_only:
        conn.execute("PRAGMA query_only = 1")
    return conn


def _unavailable(err: sqlite3.Error) -> StoreUnavailableError:
    return StoreUnavailableError(f"sqlite datastore failed: {type(err).__name__}: {err}")


def _snapshot(conn: sqlite3.Connection, revision: int) -> tuple[int, int]:
    """(revision to read at, compaction floor) inside the caller's read transaction."""
    current, floor = conn.execute(_SNAPSHOT_SQL).fetchone()
    current = current or 0
    floor = floor or 0
    if revision <= 0:
        return current, floor
    if revision > current:
        raise FutureRevisionError(revision, current)
    if revision <= floor:
        raise CompactedError(revision, floor)
    return revision, floor


# --- operations run by the writer thread (conn is the writer's connection) -------------------


def _op_create(
    key: str, value: bytes, lease: int, conn: sqlite3.Connection
) -> tuple[Any, list[tuple[Any, ...]]]:
    latest = conn.execute(_LATEST_SQL, (key,)).fetchone()
    if latest is not None and not latest[3]:
        raise KeyExistsError(key)
    prev = latest[0] if latest is not None else 0
    row_id = conn.execute(_INSERT_SQL, (key, 1, 0, 0, prev, lease, value, b"")).lastrowid
    return row_id, [(row_id, key, 1, 0, 0, prev, lease, value, b"")]


def _op_update(
    key: str, value: bytes, expected: int, lease: int, conn: sqlite3.Connection
) -> tuple[Any, list[tuple[Any, ...]]]:
    latest = conn.execute(_LATEST_SQL, (key,)).fetchone()
    if latest is None or latest[3]:
        raise KeyNotFoundError(key)
    if latest[0] != expected:
        raise ConflictError(key, expected, row_kv(latest))
    create_rev = latest[0] if latest[2] else latest[4]
    params = (key, 0, 0, create_rev, latest[0], lease, value, latest[7])
    row_id = conn.execute(_INSERT_SQL, params).lastrowid
    row = (row_id, *params)
    return row_kv(row), [row]


def _op_delete(
    key: str, expected: int, conn: sqlite3.Connection
) -> tuple[Any, list[tuple[Any, ...]]]:
    latest = conn.execute(_LATEST_SQL, (key,)).fetchone()
    if latest is None or latest[3]:
        raise KeyNotFoundError(key)
    if expected and latest[0] != expected:
        raise ConflictError(key, expected, row_kv(latest))
    create_rev = latest[0] if latest[2] else latest[4]
    params = (key, 0, 1, create_rev, latest[0], latest[6], b"", latest[7])
    row_id = conn.execute(_INSERT_SQL, params).lastrowid
    return row_kv(latest), [(row_id, *params)]


def _op_raise_floor(revision: int, conn: sqlite3.Connection) -> tuple[Any, list[tuple[Any, ...]]]:
    conn.execute(
        "UPDATE kv_meta SET value = MAX(value, ?) WHERE name = 'compact_revision'", (revision,)
    )
    return None, []


def _op_compact_batch(
    after_id: int, upto_id: int, target: int, limit: int, conn: sqlite3.Connection
) -> tuple[Any, list[tuple[Any, ...]]]:
    ids = [r[0] for r in conn.execute(_COMPACT_CANDIDATES_SQL, (after_id, upto_id, target, limit))]
    conn.executemany("DELETE FROM kv WHERE id = ?", [(i,) for i in ids])
    next_after = ids[-1] if len(ids) == limit else upto_id
    return (len(ids), next_after), []


def _op_reclaim(conn: sqlite3.Connection) -> tuple[Any, list[tuple[Any, ...]]]:
    # executescript steps the pragma to the end; execute() would free a single page.
    conn.executescript("PRAGMA incremental_vacuum;")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    return None, []


class _Writer:
    """The single writer thread and its request queue."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        loop: asyncio.AbstractEventLoop,
        on_committed: Callable[[list[tuple[_Request, bool, Any]], list[Event], int], None],
    ) -> None:
        self._conn = conn
        self._loop = loop
        self._on_committed = on_committed
        # Unbounded on purpose: every entry is awaited by a caller, so its length is bounded by
        # the number of concurrent callers (which the API server bounds).
        self._queue: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="sampan-sqlite-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, request: _Request) -> None:
        self._queue.put(request)

    def stop(self) -> None:
        """Ask the thread to finish what is queued and exit; the caller joins it."""
        self._queue.put(None)

    def join(self) -> None:
        self._thread.join()

    def _run(self) -> None:
        running = True
        while running:
            request = self._queue.get()
            group: list[_Request] = []
            while True:
                if request is None:
                    running = False
                    break
                if request.standalone:
                    if group:
                        self._execute_group(group)
                        group = []
                    self._execute_standalone(request)
                else:
                    group.append(request)
                    if len(group) >= MAX_GROUP_REQUESTS:
                        break
                try:
                    request = self._queue.get_nowait()
                except queue.Empty:
                    break
            if group:
                self._execute_group(group)
        self._conn.close()

    def _deliver(
        self, outcomes: list[tuple[_Request, bool, Any]], events: list[Event], revision: int
    ) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            self._loop.call_soon_threadsafe(self._on_committed, outcomes, events, revision)

    def _execute_standalone(self, request: _Request) -> None:
        try:
            result, _ = request.op(self._conn)
        except sqlite3.Error as err:
            self._deliver([(request, False, _unavailable(err))], [], 0)
        except Exception as err:  # handed to the awaiting caller
            self._deliver([(request, False, err)], [], 0)
        else:
            self._deliver([(request, True, result)], [], 0)

    def _execute_group(self, group: list[_Request]) -> None:
        conn = self._conn
        outcomes: list[tuple[_Request, bool, Any]] = []
        rows: list[Row] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for request in group:
                try:
                    result, new_rows = request.op(conn)
                except StoreError as err:
                    # Refused before writing anything: the rest of the group is unaffected.
                    outcomes.append((request, False, err))
                    continue
                outcomes.append((request, True, result))
                rows.extend(new_rows)
            conn.execute("COMMIT")
        except Exception as err:  # rolled back, then reported per request
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            if len(group) > 1:
                # Find the request at fault: run each alone, so the others still commit.
                for request in group:
                    self._execute_group([request])
                return
            failure = _unavailable(err) if isinstance(err, sqlite3.Error) else err
            self._deliver([(group[0], False, failure)], [], 0)
            return
        events = [row_event(r) for r in rows if r[1].startswith(KEY_PREFIX)]
        self._deliver(outcomes, events, rows[-1][0] if rows else 0)


class SQLiteBackend:
    """The SQLite ``Backend``. Construct, ``await start()``, use, ``await close()``."""

    def __init__(
        self,
        path: pathlib.Path,
        *,
        private_dir: bool = False,
        reader_threads: int = READER_THREADS,
        compact_interval_s: float = COMPACT_INTERVAL_S,
        retention: RetentionWindow | None = None,
        auto_compact: bool = True,
    ) -> None:
        self.path = path
        self._private_dir = private_dir
        self._reader_threads = reader_threads
        self._compact_interval_s = compact_interval_s
        self._retention = retention
        self._auto_compact = auto_compact
        self._writer: _Writer | None = None
        self._readers: ThreadPoolExecutor | None = None
        self._reader_local = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []
        self._reader_conns_lock = threading.Lock()
        self._broadcaster: Broadcaster | None = None
        self._compactor: asyncio.Task[None] | None = None
        self._revision = 0
        self._compact_lock = asyncio.Lock()
        self._start_lock = asyncio.Lock()
        self._started = False
        self._closed = False

    @property
    def description(self) -> str:
        return f"sqlite {self.path}"

    # --- lifecycle ------------------------------------------------------------------------

    def _open_writer(self) -> tuple[sqlite3.Connection, int]:
        parent = self.path.parent
        if self._private_dir:
            parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(parent, 0o700)
        else:
            parent.mkdir(parents=True, exist_ok=True)
        conn = _connect(self.path, read_only=False)
        try:
            # The store holds Secrets: owner-only, before the WAL (which copies the mode) exists.
            self._restrict_files()
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")  # only takes effect on a new file
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise StoreUnavailableError(f"sqlite refused WAL mode (got {mode})")
            self._restrict_files()
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT_BYTES}")
            conn.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute("COMMIT")
            current, _floor = conn.execute(_SNAPSHOT_SQL).fetchone()
        except BaseException:
            conn.close()
            raise
        return conn, current or 0

    def _restrict_files(self) -> None:
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.chmod(f"{self.path}{suffix}", DB_FILE_MODE)

    async def start(self) -> None:
        async with self._start_lock:
            await self._start()

    async def _start(self) -> None:
        if self._started:
            return
        if self._closed:
            raise StoreUnavailableError("sqlite datastore is closed")
        try:
            conn, current = await asyncio.to_thread(self._open_writer)
        except sqlite3.Error as err:
            raise _unavailable(err) from err
        except OSError as err:
            raise StoreUnavailableError(f"cannot create the datastore directory: {err}") from err
        self._revision = current
        self._broadcaster = Broadcaster(current)
        self._readers = ThreadPoolExecutor(
            max_workers=self._reader_threads, thread_name_prefix="sampan-sqlite-read"
        )
        self._writer = _Writer(conn, asyncio.get_running_loop(), self._on_committed)
        self._writer.start()
        self._started = True
        if self._auto_compact:
            self._compactor = asyncio.create_task(
                run_compactor(self, interval_s=self._compact_interval_s, window=self._retention),
                name="datastore-sqlite-compactor",
            )
            self._compactor.add_done_callback(log_task_end)
        log.info("datastore %s ready at revision %d", self.description, current)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._compactor is not None:
            self._compactor.cancel()
            # wait(), not "await task": a cancellation of close() itself must propagate.
            await asyncio.wait([self._compactor])
        if self._broadcaster is not None:
            self._broadcaster.close()
        if self._writer is not None:
            self._writer.stop()
            await asyncio.to_thread(self._writer.join)
        if self._readers is not None:
            await asyncio.to_thread(self._close_readers, self._readers)

    def _close_readers(self, readers: ThreadPoolExecutor) -> None:
        readers.shutdown(wait=True)
        with self._reader_conns_lock:
            for conn in self._reader_conns:
                conn.close()
            self._reader_conns.clear()

    def _check_open(self) -> None:
        if not self._started or self._closed:
            raise StoreUnavailableError("sqlite datastore is not running")

    # --- writes ---------------------------------------------------------------------------

    def _on_committed(
        self, outcomes: list[tuple[_Request, bool, Any]], events: list[Event], revision: int
    ) -> None:
        if revision:
            self._revision = max(self._revision, revision)
            if self._broadcaster is not None:
                self._broadcaster.publish(events, revision)
        for request, ok, result in outcomes:
            if request.future.done():
                continue  # the caller was cancelled; the write stands
            if ok:
                request.future.set_result(result)
            else:
                request.future.set_exception(result)

    async def _write(self, op: _Op, *, standalone: bool = False) -> Any:
        self._check_open()
        assert self._writer is not None
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._writer.submit(_Request(op, future, standalone))
        return await future

    async def create(self, key: str, value: bytes, lease: int = 0) -> int:
        check_key(key)
        check_value(value)
        revision: int = await self._write(functools.partial(_op_create, key, value, lease))
        return revision

    async def update(
        self, key: str, value: bytes, expected_revision: int, lease: int = 0
    ) -> KeyValue:
        check_key(key)
        check_value(value)
        updated: KeyValue = await self._write(
            functools.partial(_op_update, key, value, expected_revision, lease)
        )
        return updated

    async def delete(self, key: str, expected_revision: int = 0) -> KeyValue:
        check_key(key)
        deleted: KeyValue = await self._write(functools.partial(_op_delete, key, expected_revision))
        return deleted

    # --- reads ----------------------------------------------------------------------------

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._reader_local, "conn", None)
        if conn is None:
            conn = _connect(self.path, read_only=True)
            self._reader_local.conn = conn
            with self._reader_conns_lock:
                self._reader_conns.append(conn)
        return conn

    def _in_snapshot(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        try:
            conn = self._reader()
            conn.execute("BEGIN")
            try:
                return fn(conn)
            finally:
                conn.execute("COMMIT")
        except sqlite3.Error as err:
            raise _unavailable(err) from err

    async def _read(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        self._check_open()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, self._in_snapshot, fn)

    async def current_revision(self) -> int:
        self._check_open()
        return self._revision

    async def compact_revision(self) -> int:
        def read(conn: sqlite3.Connection) -> int:
            return _snapshot(conn, 0)[1]

        return await self._read(read)

    async def get(self, key: str, revision: int = 0) -> tuple[int, KeyValue | None]:
        check_key(key)

        def read(conn: sqlite3.Connection) -> tuple[int, KeyValue | None]:
            at, _ = _snapshot(conn, revision)
            row = conn.execute(_GET_SQL, (key, at)).fetchone()
            return at, (KeyValue(*row[1:]) if row is not None and not row[0] else None)

        return await self._read(read)

    async def list(
        self, prefix: str, revision: int = 0, limit: int = 0, start_after: str = ""
    ) -> ListResult:
        check_prefix(prefix)

        def read(conn: sqlite3.Connection) -> ListResult:
            at, _ = _snapshot(conn, revision)
            end = prefix_end(prefix)
            fetch = limit + 1 if limit > 0 else -1
            if start_after and start_after >= prefix:
                sql, lower = _LIST_AFTER_KEY_SQL, start_after
            else:
                sql, lower = _LIST_FROM_PREFIX_SQL, prefix
            rows = conn.execute(sql, (lower, end, at, at, fetch)).fetchall()
            more = 0 < limit < len(rows)
            if more:
                rows = rows[:limit]
            return ListResult(items=[KeyValue(*r) for r in rows], revision=at, more=more)

        return await self._read(read)

    async def count(self, prefix: str, revision: int = 0) -> tuple[int, int]:
        check_prefix(prefix)

        def read(conn: sqlite3.Connection) -> tuple[int, int]:
            at, _ = _snapshot(conn, revision)
            n = conn.execute(_COUNT_SQL, (prefix, prefix_end(prefix), at, at)).fetchone()[0]
            return at, n

        return await self._read(read)

    async def _history(
        self, prefix: str, after: int, upto: int
    ) -> tuple[int, builtins.list[Event]]:
        def read(conn: sqlite3.Connection) -> tuple[int, builtins.list[Event]]:
            _, floor = _snapshot(conn, 0)
            if upto <= after:
                return floor, []
            params = (after, upto, prefix, prefix_end(prefix))
            return floor, [row_event(r) for r in conn.execute(_HISTORY_SQL, params)]

        return await self._read(read)

    async def watch(self, prefix: str, start_revision: int) -> AsyncIterator[builtins.list[Event]]:
        check_prefix(prefix)
        self._check_open()
        assert self._broadcaster is not None
        async for batch in watch_events(
            self._broadcaster, self._history, self.current_revision, prefix, start_revision
        ):
            yield batch

    # --- compaction -----------------------------------------------------------------------

    async def compact(self, revision: int) -> None:
        self._check_open()
        if revision > self._revision:
            raise FutureRevisionError(revision, self._revision)
        async with self._compact_lock:
            if revision <= await self.compact_revision():
                return
            # Raise the floor first: from now on nobody reads at or below it, so deleting in
            # several transactions never shows a reader a half-compacted past.
            await self._write(functools.partial(_op_raise_floor, revision))
            after = 0
            deleted = 0
            while after < revision:
                upto = min(after + COMPACT_SCAN_WINDOW_IDS, revision)
                n, after = await self._write(
                    functools.partial(_op_compact_batch, after, upto, revision, COMPACT_BATCH_ROWS)
                )
                deleted += n
            if deleted:
                await self._write(_op_reclaim, standalone=True)
            log.debug("compacted %d rows at or below revision %d", deleted, revision)
