"""PostgreSQL-only behaviour: several backends on one database, revision gaps, no DSN leaks."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import psycopg
import pytest

from sampan.datastore.postgres import GAP_FILL_AFTER_S, PostgresBackend
from sampan.datastore.types import EventType, StoreUnavailableError
from tests.datastore.helpers import next_events
from tests.support.postgres import PostgresServer

pytestmark = pytest.mark.postgres

P = "/registry/things/"


@pytest.fixture
async def two_backends(
    postgres_server: PostgresServer,
) -> AsyncIterator[tuple[PostgresBackend, PostgresBackend, str]]:
    dsn = postgres_server.create_database()
    first = PostgresBackend(dsn, auto_compact=False)
    second = PostgresBackend(dsn, auto_compact=False)
    await first.start()
    await second.start()
    try:
        yield first, second, dsn
    finally:
        await first.close()
        await second.close()


async def test_a_write_through_one_server_reaches_a_watch_on_another(
    two_backends: tuple[PostgresBackend, PostgresBackend, str],
) -> None:
    first, second, _ = two_backends
    watch = second.watch(P, 1)
    try:
        rev = await first.create(P + "a", b"from first")
        events = await next_events(watch, 1)
        assert [(e.type, e.kv.key, e.revision) for e in events] == [(EventType.PUT, P + "a", rev)]
        await second.update(P + "a", b"from second", rev)
        _, kv = await first.get(P + "a")
        assert kv is not None
        assert kv.value == b"from second"
    finally:
        await watch.aclose()


async def test_a_revision_that_never_commits_is_filled_and_does_not_stall_watchers(
    two_backends: tuple[PostgresBackend, PostgresBackend, str],
) -> None:
    first, second, dsn = two_backends
    await first.create(P + "before", b"x")
    # Allocate an id and never use it: a permanent hole, as a rolled-back write leaves.
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        hole = (await (await conn.execute("SELECT nextval('kv_id_seq')")).fetchone())[0]
    after = await first.create(P + "after", b"y")
    assert after == hole + 1
    watch = second.watch(P, 1)
    try:
        events = await next_events(watch, 2)
        assert [e.kv.key for e in events] == [P + "before", P + "after"]
    finally:
        await watch.aclose()
    # The hole was filled with a row no read can see.
    assert [kv.key for kv in (await second.list("/registry/")).items] == [
        P + "after",
        P + "before",
    ]


async def test_a_late_commit_is_delivered_in_revision_order(
    two_backends: tuple[PostgresBackend, PostgresBackend, str],
) -> None:
    first, second, dsn = two_backends
    await first.create(P + "start", b"x")
    watch = second.watch(P, 2)
    try:
        async with await psycopg.AsyncConnection.connect(dsn) as slow:
            # A transaction takes the next id, then stalls before committing.
            await slow.execute(
                "INSERT INTO kv (name, created, deleted, create_revision, prev_revision, lease,"
                " value, old_value) VALUES (%s, true, false, 0, 0, 0, %s, '')",
                (P + "late", b"late"),
            )
            # The create commits at once but returns only when everything below it is settled.
            fast_write = asyncio.ensure_future(first.create(P + "fast", b"fast"))
            # Let the poller see the gap and try to fill it (it waits on the open transaction).
            await asyncio.sleep(GAP_FILL_AFTER_S * 2)
            await slow.commit()
            fast = await fast_write
        events = await next_events(watch, 2)
        assert [(e.kv.key, e.revision) for e in events] == [
            (P + "late", fast - 1),
            (P + "fast", fast),
        ]
    finally:
        await watch.aclose()


async def test_failures_never_show_the_dsn(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "s3cret-Passw0rd"
    dsn = f"postgresql://sampan:{secret}@127.0.0.1:1/sampan?connect_timeout=2"
    backend = PostgresBackend(dsn)
    assert secret not in repr(backend)
    assert secret not in backend.description
    with pytest.raises(StoreUnavailableError) as caught:
        await backend.start()
    assert secret not in str(caught.value)
    assert "sampan:***@127.0.0.1:1" in str(caught.value)
    assert caught.value.__cause__ is None
    assert secret not in caplog.text
    await backend.close()
