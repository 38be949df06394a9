"""The PostgreSQL driver: the same log table in PostgreSQL, for several servers on one database.

Owns its connections (a small pool for writes and single statements, a small pool of
read-only REPEATABLE READ connections for snapshot reads, one LISTEN connection) and two
background tasks: the listener and the poller.

Writes: one short transaction per write. It first takes a transaction-scoped advisory lock on
the key (``pg_advisory_xact_lock(hashtextextended(key, 0))``), so writers of one key, in any
process, run one after another: the "is the key live / is the revision current" check and the
insert cannot race, UNIQUE(name, prev_revision) stays a safety net, and a refused write never
allocates an id. The insert sends ``NOTIFY sampan_kv``; the commit delivers it.

Watch: ONE poller per backend reads rows above its high-water mark (on NOTIFY, on a local
write, and every ``POLL_INTERVAL_S`` in any case) and publishes them to the broadcaster, only
ever a gap-free prefix. That mark is also the revision reads happen at ("current"): every id
at or below it is settled, so list-then-watch never misses a late commit. A write returns once
the poller has published it, and a read first lets the poller catch up to the MAX(id) it sees
(both bounded by ``PUBLISH_WAIT_S``), which gives read-your-writes across servers.

Ids come from a sequence, so a row may become visible after a higher one (its transaction
committed later) or never (it rolled back, e.g. a cancelled write). The poller waits
``GAP_FILL_AFTER_S`` for a missing id, then inserts a "gap-fill" tombstone with exactly that
id (``ON CONFLICT DO NOTHING``: if the late transaction is still running, the insert waits for
it and then either loses to the real row or fills the hole). Gap-fill rows are named outside
``KEY_PREFIX``, so no read or watch ever sees them, and compaction removes them.

Invariants: no psycopg error leaves this module (they become StoreUnavailableError with a
message that names the endpoint only in redacted form, never the DSN); no DSN is logged.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import psycopg
from psycopg import errors as pg_errors
from psycopg.pq import TransactionStatus

from sampan.datastore.compaction import (
    COMPACT_BATCH_ROWS,
    COMPACT_INTERVAL_S,
    RetentionWindow,
    run_compactor,
)
from sampan.datastore.endpoint import redact_endpoint
from sampan.datastore.keys import (
    COLUMNS,
    GAP_FILL_PREFIX,
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
    StoreUnavailableError,
)
from sampan.datastore.watch import Broadcaster, watch_events
from sampan.tasks import log_task_end

__all__ = [
    "GAP_FILL_AFTER_S",
    "POLL_INTERVAL_S",
    "PostgresBackend",
]

log = logging.getLogger(__name__)


async def _fetch_one(
    conn: psycopg.AsyncConnection[Any], sql: str, params: tuple[Any, ...] | None = None
) -> tuple[Any, ...]:
    """The one row of a statement that always returns one (aggregates, RETURNING)."""
    row = await (await conn.execute(sql, params)).fetchone()
    if row is None:
        raise RuntimeError(f"{sql.split()[0]} returned no row")
    return tuple(row)


POOL_SIZE = 8
"""Connections in each of the write and read pools."""

CONNECT_TIMEOUT_S = 10
POLL_INTERVAL_S = 1.0
"""The poller reads new rows at least this often, even with no NOTIFY."""

POLL_BATCH_ROWS = 1_000
GAP_RETRY_S = 0.02
"""While a gap is open, the poller looks again this often."""

GAP_FILL_AFTER_S = 0.25
"""A missing id still missing after this long is filled with a gap-fill row."""

GAP_FILL_LOCK_TIMEOUT = "2s"
PUBLISH_WAIT_S = 1.0
"""A write waits at most this long for the poller to publish it before returning."""

LISTEN_RETRY_S = 1.0
NOTIFY_CHANNEL = "sampan_kv"
WRITE_ATTEMPTS = 3
"""A write that meets a unique violation (it should not, given the key lock) is retried."""

COMPACT_SCAN_WINDOW_IDS = 5_000

_SCHEMA_LOCK_ID = 0x53414D50414E  # "SAMPAN": serialises schema creation across processes
_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS kv (
        id BIGSERIAL PRIMARY KEY,
        name TEXT COLLATE "C" NOT NULL,
        created BOOLEAN NOT NULL,
        deleted BOOLEAN NOT NULL,
        create_revision BIGINT NOT NULL,
        prev_revision BIGINT NOT NULL,
        lease BIGINT NOT NULL,
        value BYTEA NOT NULL,
        old_value BYTEA NOT NULL,
        CONSTRAINT kv_name_prev_revision UNIQUE (name, prev_revision)
    )""",
    "CREATE INDEX IF NOT EXISTS kv_name_id ON kv (name, id)",
    "CREATE TABLE IF NOT EXISTS kv_meta (name TEXT PRIMARY KEY, value BIGINT NOT NULL)",
    "INSERT INTO kv_meta (name, value) VALUES ('compact_revision', 0) ON CONFLICT DO NOTHING",
]

_SNAPSHOT_SQL = (
    "SELECT GREATEST(COALESCE((SELECT MAX(id) FROM kv), 0), m.value), m.value"
    " FROM kv_meta AS m WHERE m.name = 'compact_revision'"
)
_MAX_ID_SQL = "SELECT COALESCE(MAX(id), 0) FROM kv"
_FLOOR_SQL = "SELECT value FROM kv_meta WHERE name = 'compact_revision'"
_KEY_LOCK_SQL = "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))"
_LATEST_SQL = f"SELECT {COLUMNS} FROM kv WHERE name = %s ORDER BY id DESC LIMIT 1"
_GET_SQL = (
    f"SELECT deleted, {KV_COLUMNS} FROM kv WHERE name = %s AND id <= %s ORDER BY id DESC LIMIT 1"
)
_INSERT_SQL = (
    "WITH ins AS (INSERT INTO kv (name, created, deleted, create_revision, prev_revision,"
    " lease, value, old_value) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id)"
    f" SELECT id, pg_notify('{NOTIFY_CHANNEL}', '') FROM ins"
)
_LIVE_AT = (
    "k.id <= %s AND NOT k.deleted AND NOT EXISTS (SELECT 1 FROM kv AS s"
    " WHERE s.name = k.name AND s.prev_revision = k.id AND s.id <= %s)"
)
_LIST_SQL = (
    f"SELECT {KV_COLUMNS} FROM kv AS k WHERE k.name {{lower}} %s AND k.name < %s AND {_LIVE_AT}"
    " ORDER BY k.name LIMIT %s"
)
_LIST_FROM_PREFIX_SQL = _LIST_SQL.format(lower=">=")
_LIST_AFTER_KEY_SQL = _LIST_SQL.format(lower=">")
_COUNT_SQL = f"SELECT COUNT(*) FROM kv AS k WHERE k.name >= %s AND k.name < %s AND {_LIVE_AT}"
_HISTORY_SQL = (
    f"SELECT {COLUMNS} FROM kv WHERE id > %s AND id <= %s AND name >= %s AND name < %s ORDER BY id"
)
_POLL_SQL = f"SELECT {COLUMNS} FROM kv WHERE id > %s ORDER BY id LIMIT %s"
_GAP_FILL_SQL = (
    "INSERT INTO kv (id, name, created, deleted, create_revision, prev_revision, lease, value,"
    " old_value) VALUES (%s, %s, false, true, 0, 0, 0, '', '') ON CONFLICT DO NOTHING"
)
_RAISE_FLOOR_SQL = "UPDATE kv_meta SET value = GREATEST(value, %s) WHERE name = 'compact_revision'"
_COMPACT_BATCH_SQL = (
    "DELETE FROM kv WHERE id IN (SELECT k.id FROM kv AS k WHERE k.id > %s AND k.id <= %s"
    " AND (k.deleted OR EXISTS (SELECT 1 FROM kv AS s WHERE s.name = k.name"
    " AND s.prev_revision = k.id AND s.id <= %s)) ORDER BY k.id LIMIT %s) RETURNING id"
)


class _Pool:
    """A few reusable connections; a connection that broke or was left mid-transaction is
    closed instead of being reused."""

    def __init__(self, dsn: str, size: int, *, read_only: bool, failure: Any) -> None:
        self._dsn = dsn
        self._read_only = read_only
        self._failure = failure
        self._idle: list[psycopg.AsyncConnection[Any]] = []
        self._slots = asyncio.Semaphore(size)
        self._closed = False

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        try:
            if self._read_only:
                conn = await psycopg.AsyncConnection.connect(
                    self._dsn, connect_timeout=CONNECT_TIMEOUT_S, autocommit=False
                )
                await conn.set_isolation_level(psycopg.IsolationLevel.REPEATABLE_READ)
                await conn.set_read_only(True)
            else:
                conn = await psycopg.AsyncConnection.connect(
                    self._dsn, connect_timeout=CONNECT_TIMEOUT_S, autocommit=True
                )
        except psycopg.Error as err:
            raise self._failure(err) from None
        return conn

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        if self._closed:
            raise StoreUnavailableError("postgres datastore is closed")
        async with self._slots:
            conn = self._idle.pop() if self._idle else await self._connect()
            try:
                yield conn
            finally:
                reusable = (
                    not self._closed
                    and not conn.broken
                    and not conn.closed
                    and conn.info.transaction_status == TransactionStatus.IDLE
                )
                if reusable:
                    self._idle.append(conn)
                else:
                    with contextlib.suppress(psycopg.Error):
                        await conn.close()

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            with contextlib.suppress(psycopg.Error):
                await conn.close()


class PostgresBackend:
    """The PostgreSQL ``Backend``. Construct with a DSN, ``await start()``, ``await close()``."""

    def __init__(
        self,
        dsn: str,
        *,
        pool_size: int = POOL_SIZE,
        compact_interval_s: float = COMPACT_INTERVAL_S,
        retention: RetentionWindow | None = None,
        auto_compact: bool = True,
    ) -> None:
        self._dsn = dsn
        self._redacted = redact_endpoint(dsn)
        self._writes = _Pool(dsn, pool_size, read_only=False, failure=self._failure)
        self._reads = _Pool(dsn, pool_size, read_only=True, failure=self._failure)
        self._compact_interval_s = compact_interval_s
        self._retention = retention
        self._auto_compact = auto_compact
        self._broadcaster: Broadcaster | None = None
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._compact_lock = asyncio.Lock()
        self._start_lock = asyncio.Lock()
        self._started = False
        self._closed = False

    def __repr__(self) -> str:
        return f"PostgresBackend({self._redacted!r})"

    @property
    def description(self) -> str:
        return f"postgres {self._redacted}"

    def _failure(self, err: psycopg.Error) -> StoreUnavailableError:
        """A StoreUnavailableError for ``err`` that cannot contain the DSN: only the error
        class, its SQLSTATE and the server's own primary message are kept."""
        detail = type(err).__name__
        if err.sqlstate:
            detail += f" [{err.sqlstate}]"
            primary = err.diag.message_primary
            if primary:
                detail += f": {primary}"
        else:
            # Connection failures carry no SQLSTATE; libpq's reason ("Connection refused",
            # "password authentication failed ...") follows the last "failed: ". libpq never
            # echoes the password, but scrub it anyway should a future version do so.
            lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
            failed = [ln for ln in lines if "failed: " in ln]
            reason = (failed or lines or [""])[-1].rsplit("failed: ", 1)[-1]
            password = urlsplit(self._dsn).password if "://" in self._dsn else None
            if password:
                reason = reason.replace(password, "***")
            if reason:
                detail += f": {reason[:200]}"
        return StoreUnavailableError(f"postgres datastore {self._redacted} failed: {detail}")

    @contextlib.asynccontextmanager
    async def _translated(self) -> AsyncIterator[None]:
        try:
            yield
        except psycopg.Error as err:
            raise self._failure(err) from None

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        async with self._start_lock:
            await self._start()

    async def _start(self) -> None:
        if self._started:
            return
        if self._closed:
            raise StoreUnavailableError("postgres datastore is closed")
        async with self._translated(), self._writes.connection() as conn:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK_ID,))
                for statement in _SCHEMA:
                    await conn.execute(statement)
            current, _floor = await _fetch_one(conn, _SNAPSHOT_SQL)
        self._broadcaster = Broadcaster(current)
        self._started = True
        self._spawn(self._listen_loop(), "datastore-postgres-listener")
        self._spawn(self._poll_loop(), "datastore-postgres-poller")
        if self._auto_compact:
            self._spawn(
                run_compactor(self, interval_s=self._compact_interval_s, window=self._retention),
                "datastore-postgres-compactor",
            )
        log.info("datastore %s ready at revision %d", self.description, current)

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(log_task_end)
        self._tasks.append(task)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            # wait(), not "await task": a cancellation of close() itself must propagate.
            await asyncio.wait(self._tasks)
        self._tasks.clear()
        if self._broadcaster is not None:
            self._broadcaster.close()
        await self._writes.close()
        await self._reads.close()

    def _check_open(self) -> None:
        if not self._started or self._closed:
            raise StoreUnavailableError("postgres datastore is not running")

    # --- writes ---------------------------------------------------------------------------

    async def _locked_write(self, key: str, decide: Any) -> Any:
        """Run ``decide(latest_row) -> (result, insert params)`` under the key's lock and
        insert; ``decide`` raises StoreError to refuse (nothing is inserted)."""
        self._check_open()
        for attempt in range(WRITE_ATTEMPTS):
            try:
                async with self._writes.connection() as conn:
                    async with conn.transaction():
                        await conn.execute(_KEY_LOCK_SQL, (key,))
                        latest = await (await conn.execute(_LATEST_SQL, (key,))).fetchone()
                        result, params = decide(latest)
                        row_id = (await _fetch_one(conn, _INSERT_SQL, params))[0]
            except pg_errors.UniqueViolation as err:
                # Another writer of this key won without our lock (it should not happen):
                # decide again against the row that won.
                if attempt + 1 < WRITE_ATTEMPTS:
                    continue
                raise self._failure(err) from None
            except psycopg.Error as err:
                raise self._failure(err) from None
            self._wake.set()
            await self._settled(row_id)
            return row_id, result, params
        raise AssertionError("unreachable")

    async def _settled(self, revision: int) -> None:
        """Wait until the poller has published ``revision`` (so every id below it is settled:
        committed or filled). Reads "at the current revision" read at the published
        revision, so this gives read-your-writes; the timeout keeps a stuck poller from
        holding writers (the write itself is committed either way)."""
        assert self._broadcaster is not None
        try:
            async with asyncio.timeout(PUBLISH_WAIT_S):
                await self._broadcaster.wait_published(revision)
        except TimeoutError:
            log.warning("datastore poller is behind: revision %d not yet published", revision)

    async def create(self, key: str, value: bytes, lease: int = 0) -> int:
        check_key(key)
        check_value(value)

        def decide(latest: Row | None) -> tuple[None, tuple[Any, ...]]:
            if latest is not None and not latest[3]:
                raise KeyExistsError(key)
            prev = latest[0] if latest is not None else 0
            return None, (key, True, False, 0, prev, lease, value, b"")

        row_id, _, _ = await self._locked_write(key, decide)
        revision: int = row_id
        return revision

    async def update(
        self, key: str, value: bytes, expected_revision: int, lease: int = 0
    ) -> KeyValue:
        check_key(key)
        check_value(value)

        def decide(latest: Row | None) -> tuple[None, tuple[Any, ...]]:
            if latest is None or latest[3]:
                raise KeyNotFoundError(key)
            if latest[0] != expected_revision:
                raise ConflictError(key, expected_revision, row_kv(latest))
            create_rev = latest[0] if latest[2] else latest[4]
            return None, (key, False, False, create_rev, latest[0], lease, value, latest[7])

        row_id, _, params = await self._locked_write(key, decide)
        return row_kv((row_id, *params))

    async def delete(self, key: str, expected_revision: int = 0) -> KeyValue:
        check_key(key)

        def decide(latest: Row | None) -> tuple[KeyValue, tuple[Any, ...]]:
            if latest is None or latest[3]:
                raise KeyNotFoundError(key)
            if expected_revision and latest[0] != expected_revision:
                raise ConflictError(key, expected_revision, row_kv(latest))
            create_rev = latest[0] if latest[2] else latest[4]
            params = (key, False, True, create_rev, latest[0], latest[6], b"", latest[7])
            return row_kv(latest), params

        _, result, _ = await self._locked_write(key, decide)
        record: KeyValue = result
        return record

    # --- reads ----------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _snapshot(self, revision: int) -> AsyncIterator[tuple[Any, int, int]]:
        """A read-only REPEATABLE READ transaction: (connection, revision to read at, floor)."""
        self._check_open()
        assert self._broadcaster is not None
        current = await self._caught_up_revision()
        settled = self._broadcaster.revision
        async with self._translated(), self._reads.connection() as conn:
            async with conn.transaction():
                floor = (await _fetch_one(conn, _FLOOR_SQL))[0]
                if revision <= 0:
                    at = current if current > floor else settled
                elif revision > settled:
                    raise FutureRevisionError(revision, current)
                elif revision <= floor:
                    raise CompactedError(revision, floor)
                else:
                    at = revision
                yield conn, at, floor

    async def _caught_up_revision(self) -> int:
        """The store's current revision, as a revision below which everything is settled.

        Reads happen at the poller's high-water mark, not at MAX(id): every id up to the mark
        is committed or filled, so a list at that revision followed by a watch from the next
        one misses nothing even when a transaction holding a lower id commits late. To still
        see every write committed before the read began (by any server), the poller is first
        woken and awaited up to the MAX(id) seen now."""
        assert self._broadcaster is not None
        async with self._translated(), self._writes.connection() as conn:
            newest = (await _fetch_one(conn, _MAX_ID_SQL))[0]
        if newest > self._broadcaster.revision:
            self._wake.set()
            await self._settled(newest)
        # The newest *event*: reading there equals reading at the settled mark (only gap fills
        # lie between), and a watch cache waiting for "the current revision" gets an event.
        return self._broadcaster.event_revision

    async def current_revision(self) -> int:
        self._check_open()
        return await self._caught_up_revision()

    async def compact_revision(self) -> int:
        self._check_open()
        async with self._translated(), self._writes.connection() as conn:
            return int((await _fetch_one(conn, _FLOOR_SQL))[0])

    async def get(self, key: str, revision: int = 0) -> tuple[int, KeyValue | None]:
        check_key(key)
        async with self._snapshot(revision) as (conn, at, _):
            row = await (await conn.execute(_GET_SQL, (key, at))).fetchone()
        return at, (KeyValue(*row[1:]) if row is not None and not row[0] else None)

    async def list(
        self, prefix: str, revision: int = 0, limit: int = 0, start_after: str = ""
    ) -> ListResult:
        check_prefix(prefix)
        fetch = limit + 1 if limit > 0 else None
        if start_after and start_after >= prefix:
            sql, lower = _LIST_AFTER_KEY_SQL, start_after
        else:
            sql, lower = _LIST_FROM_PREFIX_SQL, prefix
        async with self._snapshot(revision) as (conn, at, _):
            cur = await conn.execute(sql, (lower, prefix_end(prefix), at, at, fetch))
            rows = await cur.fetchall()
        more = 0 < limit < len(rows)
        if more:
            rows = rows[:limit]
        return ListResult(items=[KeyValue(*r) for r in rows], revision=at, more=more)

    async def count(self, prefix: str, revision: int = 0) -> tuple[int, int]:
        check_prefix(prefix)
        async with self._snapshot(revision) as (conn, at, _):
            cur = await conn.execute(_COUNT_SQL, (prefix, prefix_end(prefix), at, at))
            n = (await cur.fetchone())[0]
        return at, n

    async def _history(
        self, prefix: str, after: int, upto: int
    ) -> tuple[int, builtins.list[Event]]:
        async with self._snapshot(0) as (conn, _, floor):
            if upto <= after:
                return floor, []
            params = (after, upto, prefix, prefix_end(prefix))
            rows = await (await conn.execute(_HISTORY_SQL, params)).fetchall()
        return floor, [row_event(r) for r in rows]

    async def watch(self, prefix: str, start_revision: int) -> AsyncIterator[builtins.list[Event]]:
        check_prefix(prefix)
        self._check_open()
        assert self._broadcaster is not None
        async for batch in watch_events(
            self._broadcaster, self._history, self.current_revision, prefix, start_revision
        ):
            yield batch

    # --- the listener and the poller ----------------------------------------------------

    async def _listen_loop(self) -> None:
        """Wake the poller on every NOTIFY; reconnect (quietly retrying) when the link drops.
        The poller polls every POLL_INTERVAL_S anyway, so a lost listener only adds latency."""
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self._dsn, connect_timeout=CONNECT_TIMEOUT_S, autocommit=True
                )
                try:
                    await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    self._wake.set()  # anything committed while we were not listening
                    async for _ in conn.notifies():
                        self._wake.set()
                finally:
                    with contextlib.suppress(psycopg.Error):
                        await conn.close()
            except psycopg.Error as err:
                log.warning("datastore listener: %s; retrying", self._failure(err))
            await asyncio.sleep(LISTEN_RETRY_S)

    async def _poll_loop(self) -> None:
        assert self._broadcaster is not None
        broadcaster = self._broadcaster
        gap_id = 0
        gap_since_s = 0.0
        # The poller's own connection: it never waits behind writers for a pool slot.
        conn: psycopg.AsyncConnection[Any] | None = None
        try:
            while True:
                try:
                    if conn is None or conn.broken or conn.closed:
                        conn = await psycopg.AsyncConnection.connect(
                            self._dsn, connect_timeout=CONNECT_TIMEOUT_S, autocommit=True
                        )
                    cur = await conn.execute(_POLL_SQL, (broadcaster.revision, POLL_BATCH_ROWS))
                    rows = await cur.fetchall()
                except psycopg.Error as err:
                    log.warning("datastore poller: %s; retrying", self._failure(err))
                    await self._sleep_or_wake(POLL_INTERVAL_S)
                    continue
                gap_id, gap_since_s = await self._publish_polled(rows, gap_id, gap_since_s)
        finally:
            if conn is not None:
                with contextlib.suppress(psycopg.Error):
                    await conn.close()

    async def _publish_polled(
        self, rows: builtins.list[Row], gap_id: int, gap_since_s: float
    ) -> tuple[int, float]:
        """Publish the gap-free head of ``rows``, then wait as the situation asks: briefly
        while a gap is open (filling it once it is old enough), else until woken."""
        assert self._broadcaster is not None
        broadcaster = self._broadcaster
        expected = broadcaster.revision + 1
        ready: list[Row] = []
        for row in rows:
            if row[0] != expected:
                break
            ready.append(row)
            expected += 1
        if ready:
            events = [row_event(r) for r in ready if r[1].startswith(KEY_PREFIX)]
            broadcaster.publish(events, ready[-1][0])
        if len(ready) < len(rows):
            # An id is missing below a committed row: its transaction is late or gone.
            now_s = time.monotonic()
            if gap_id != expected:
                gap_id, gap_since_s = expected, now_s
            elif now_s - gap_since_s >= GAP_FILL_AFTER_S:
                await self._fill_gap(expected)
                return gap_id, gap_since_s
            await self._sleep_or_wake(GAP_RETRY_S)
            return gap_id, gap_since_s
        if len(rows) < POLL_BATCH_ROWS:
            await self._sleep_or_wake(POLL_INTERVAL_S)
        return 0, 0.0

    async def _sleep_or_wake(self, timeout_s: float) -> None:
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
        # arrives just as the event is set, and close() would then wait forever.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._wake.wait()
        self._wake.clear()

    async def _fill_gap(self, row_id: int) -> None:
        try:
            async with self._writes.connection() as conn, conn.transaction():
                await conn.execute(f"SET LOCAL lock_timeout = '{GAP_FILL_LOCK_TIMEOUT}'")
                await conn.execute(_GAP_FILL_SQL, (row_id, f"{GAP_FILL_PREFIX}{row_id}"))
        except (psycopg.Error, StoreUnavailableError) as err:
            failure = self._failure(err) if isinstance(err, psycopg.Error) else err
            log.warning("datastore poller could not fill revision %d: %s", row_id, failure)
            await asyncio.sleep(GAP_RETRY_S)
        else:
            log.debug("filled revision gap at %d", row_id)

    # --- compaction -----------------------------------------------------------------------

    async def compact(self, revision: int) -> None:
        await self.current_revision()
        assert self._broadcaster is not None
        if revision > self._broadcaster.revision:
            raise FutureRevisionError(revision, self._broadcaster.revision)
        async with self._compact_lock:
            if revision <= await self.compact_revision():
                return
            async with self._translated(), self._writes.connection() as conn:
                # Floor first: readers then never look at what the batches below remove.
                await conn.execute(_RAISE_FLOOR_SQL, (revision,))
                after = 0
                deleted = 0
                while after < revision:
                    upto = min(after + COMPACT_SCAN_WINDOW_IDS, revision)
                    params = (after, upto, revision, COMPACT_BATCH_ROWS)
                    ids = [r[0] for r in await (await conn.execute(_COMPACT_BATCH_SQL, params))
                           .fetchall()]  # fmt: skip
                    deleted += len(ids)
                    after = max(ids) if len(ids) == COMPACT_BATCH_ROWS else upto
            log.debug("compacted %d rows at or below revision %d", deleted, revision)
