"""Datastore benchmark:
``python -m bench.datastore [--backend sqlite,postgres,etcd] [--postgres DSN] [--quick]``.

Prints, for the SQLite driver (synchronous=FULL, in a temp dir; always, as the reference) and
for each other backend asked for: creates/s and updates/s with 1 and 32 concurrent writers,
list latency over 10,000 and 100,000 keys, watch delivery latency (create() call -> event at
a watcher) p50/p99, and the database size before and after compaction.

Floors, measured in this same run: a plain sqlite3 loop (one INSERT per COMMIT, WAL,
synchronous=FULL) for SQLite and PostgreSQL; for etcd, the raw put rate of the same etcd
(plain KV Put RPCs of the same values with 1 and 32 concurrent clients, what
``etcdctl check perf`` measures), so the driver's cost on top of etcd is visible. PostgreSQL
is a private server started here unless ``--postgres DSN`` names one; etcd is a private
Debian etcd (fsync on, data in a temp dir) started here.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import pathlib
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable

from sampan.datastore import describe, redact_endpoint
from sampan.datastore.etcd import EtcdBackend
from sampan.datastore.postgres import PostgresBackend
from sampan.datastore.sqlite import SQLiteBackend
from sampan.datastore.types import Backend

VALUE = b"x" * 512
"""A small object, roughly a ConfigMap."""

WRITERS = 32
BASELINE_ROWS = 3_000
LIST_SIZES = (10_000, 100_000)
LIST_REPEATS = 5
WATCH_SAMPLES = 2_000


def baseline_inserts_per_s(path: pathlib.Path, rows: int) -> float:
    """The floor: a plain sqlite3 insert-and-commit loop, one row per commit."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT, value BLOB)")
    started = time.perf_counter()
    for i in range(rows):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t (name, value) VALUES (?, ?)", (f"/registry/b/{i}", VALUE))
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return rows / elapsed


async def rate(total: int, writers: int, one: Callable[[int, int], Awaitable[None]]) -> float:
    """Operations per second for ``total`` operations spread over ``writers`` coroutines;
    ``one(writer, i)`` is called once for every i in range(total)."""

    async def writer(w: int) -> None:
        for i in range(w, total, writers):
            await one(w, i)

    started = time.perf_counter()
    await asyncio.gather(*(writer(w) for w in range(writers)))
    return total / (time.perf_counter() - started)


async def bench_creates(store: Backend, base: str, total: int, writers: int) -> float:
    async def create(w: int, i: int) -> None:
        await store.create(f"{base}{i:07d}", VALUE)

    return await rate(total, writers, create)


async def bench_updates(store: Backend, base: str, total: int, writers: int) -> float:
    """Each writer compare-and-swaps its own key over and over."""
    revs = {w: await store.create(f"{base}hot/{w}", VALUE) for w in range(writers)}

    async def update(w: int, i: int) -> None:
        kv = await store.update(f"{base}hot/{w}", VALUE, revs[w])
        revs[w] = kv.mod_revision

    return await rate(total, writers, update)


async def bench_writes(store: Backend, scale: int, tag: str) -> dict[str, float]:
    figures: dict[str, float] = {}
    for writers, total in ((1, 200 * scale), (WRITERS, 2_000 * scale)):
        base = f"/registry/bench-{tag}/w{writers}/"
        figures[f"creates/s, {writers} writer(s)"] = await bench_creates(
            store, base, total, writers
        )
        figures[f"updates/s, {writers} writer(s)"] = await bench_updates(
            store, base, total, writers
        )
    return figures


async def list_ms(store: Backend, prefix: str, expect: int, limit: int = 0) -> float:
    samples = []
    for _ in range(LIST_REPEATS):
        started = time.perf_counter()
        result = await store.list(prefix, limit=limit)
        samples.append((time.perf_counter() - started) * 1000)
        assert len(result.items) == (limit or expect), (len(result.items), expect)
    return statistics.median(samples)


async def bench_lists(store: Backend, sizes: tuple[int, ...], tag: str) -> dict[str, float]:
    figures: dict[str, float] = {}
    for size in sizes:
        prefix = f"/registry/list-{tag}-{size}/"
        await bench_creates(store, prefix, size, WRITERS)
        figures[f"list {size:,} keys (ms)"] = await list_ms(store, prefix, size)
        figures[f"list {size:,} keys, limit 500 (ms)"] = await list_ms(store, prefix, size, 500)
    return figures


async def watch_latencies_ms(store: Backend, prefix: str, total: int, writers: int) -> list[float]:
    """Latency from the create() call to the event reaching a watcher, per event."""
    sent: dict[str, float] = {}
    latencies_ms: list[float] = []
    watch = store.watch(prefix, 0)
    first = asyncio.ensure_future(anext(watch))
    probes = 0
    while not first.done():  # probe writes until the watch is live
        await store.create(f"{prefix}probe-{probes}", b"p")
        probes += 1
        await asyncio.wait([first], timeout=0.01)
    first.result()

    async def consume() -> None:
        async for batch in watch:
            now = time.perf_counter()
            for event in batch:
                started = sent.get(event.kv.key)
                if started is not None:
                    latencies_ms.append((now - started) * 1000)
            if len(latencies_ms) >= total:
                return

    consumer = asyncio.ensure_future(consume())

    async def create(w: int, i: int) -> None:
        key = f"{prefix}{i:07d}"
        sent[key] = time.perf_counter()
        await store.create(key, VALUE)

    await rate(total, writers, create)
    await asyncio.wait_for(consumer, 30)
    await watch.aclose()
    return sorted(latencies_ms)


async def bench_watch(store: Backend, samples: int, tag: str) -> dict[str, float]:
    figures: dict[str, float] = {}
    for writers in (1, WRITERS):
        prefix = f"/registry/watch-{tag}-{writers}/"
        latencies = await watch_latencies_ms(store, prefix, samples, writers)
        figures[f"watch p50 (ms), {writers} writer(s)"] = latencies[len(latencies) // 2]
        figures[f"watch p99 (ms), {writers} writer(s)"] = latencies[int(len(latencies) * 0.99)]
    return figures


def sqlite_size_mb(path: pathlib.Path) -> float:
    total = 0
    for suffix in ("", "-wal"):
        candidate = pathlib.Path(str(path) + suffix)
        if candidate.exists():
            total += candidate.stat().st_size
    return total / 1e6


async def postgres_size_mb(dsn: str) -> float:
    import psycopg

    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute("SELECT pg_total_relation_size('kv')")
        return (await cur.fetchone())[0] / 1e6


async def bench_compaction(
    store: Backend, size_mb: Callable[[], Awaitable[float]]
) -> dict[str, float]:
    before = await size_mb()
    current = await store.current_revision()
    started = time.perf_counter()
    await store.compact(current - 1)
    elapsed = time.perf_counter() - started
    after = await size_mb()
    return {
        "DB size before compaction (MB)": before,
        "DB size after compaction (MB)": after,
        "compaction time (s)": elapsed,
    }


async def run_store(
    store: Backend, size_mb: Callable[[], Awaitable[float]], scale: int, sizes: tuple[int, ...]
) -> dict[str, float]:
    await store.start()
    try:
        tag = str(os.getpid())
        figures = await bench_writes(store, scale, tag)
        figures |= await bench_watch(store, WATCH_SAMPLES * scale // 10, tag)
        figures |= await bench_lists(store, sizes, tag)
        figures |= await bench_compaction(store, size_mb)
        return figures
    finally:
        await store.close()


def show(
    title: str,
    figures: dict[str, float],
    floor: float | None,
    *,
    floors: dict[int, float] | None = None,
    floor_name: str = "the plain sqlite3 loop",
) -> None:
    """``floors`` (per writer count) wins over the single ``floor``."""
    print(f"\n{title}")
    for name, value in figures.items():
        line = f"  {name:<40} {value:>12,.2f}"
        if name.startswith(("creates/s", "updates/s")):
            writers = int(name.split(", ")[1].split()[0])
            base = (floors or {}).get(writers, floor)
            if base:
                line += f"   ({value / base:.0%} of {floor_name})"
        print(line)


async def raw_etcd_puts_per_s(
    endpoint: str, total: int, clients: int, *, txn: bool = False
) -> float:
    """The etcd floor: plain KV Put RPCs (no transaction, no compare) of ``VALUE`` to new keys
    from ``clients`` concurrent callers on one channel. With ``txn``, the same puts inside the
    create-if-absent transaction the driver sends (etcd's own cost of compare-and-swap)."""
    import grpc
    from aetcd.rpc import rpc_pb2, rpc_pb2_grpc

    target = endpoint.split("://", 1)[1]
    async with grpc.aio.insecure_channel(target) as channel:
        kv = rpc_pb2_grpc.KVStub(channel)
        await kv.Range(rpc_pb2.RangeRequest(key=b"warm-up"), timeout=10)

        async def put(w: int, i: int) -> None:
            key = f"/raw/{clients}/{txn}/{i:07d}".encode()
            request = rpc_pb2.PutRequest(key=key, value=VALUE)
            if not txn:
                await kv.Put(request)
                return
            absent = rpc_pb2.Compare(
                result=rpc_pb2.Compare.EQUAL, target=rpc_pb2.Compare.CREATE, key=key
            )
            await kv.Txn(
                rpc_pb2.TxnRequest(
                    compare=[absent], success=[rpc_pb2.RequestOp(request_put=request)]
                )
            )

        return await rate(total, clients, put)


async def etcd_size_mb(endpoint: str) -> float:
    """etcd's backend size in use (compaction frees pages; only a defrag shrinks the file)."""
    import grpc
    from aetcd.rpc import rpc_pb2, rpc_pb2_grpc

    async with grpc.aio.insecure_channel(endpoint.split("://", 1)[1]) as channel:
        status = await rpc_pb2_grpc.MaintenanceStub(channel).Status(
            rpc_pb2.StatusRequest(), timeout=10
        )
    return status.dbSizeInUse / 1e6


async def run_etcd(scale: int, sizes: tuple[int, ...]) -> None:
    from tests.support.etcd import start_etcd

    with start_etcd() as server:
        floors = {
            1: await raw_etcd_puts_per_s(server.endpoint, 200 * scale, 1),
            WRITERS: await raw_etcd_puts_per_s(server.endpoint, 2_000 * scale, WRITERS),
        }
        txn_rate = await raw_etcd_puts_per_s(server.endpoint, 2_000 * scale, WRITERS, txn=True)
        print(
            f"\n  etcd floor: raw Put RPCs of {len(VALUE)} B values: "
            f"{floors[1]:,.0f}/s with 1 client, {floors[WRITERS]:,.0f}/s with {WRITERS}"
            f"\n  (raw create-if-absent Txn RPCs, etcd's own CAS cost: {txn_rate:,.0f}/s with "
            f"{WRITERS})"
        )
        store = EtcdBackend(server.endpoint, auto_compact=False)

        async def size() -> float:
            return await etcd_size_mb(server.endpoint)

        started = time.perf_counter()
        figures = await run_store(store, size, scale, sizes)
        show(
            f"{describe(store)} (Debian etcd 3.4, fsync on)",
            figures,
            None,
            floors=floors,
            floor_name="raw etcd puts",
        )
        print(f"  ({time.perf_counter() - started:.1f} s)")


async def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.datastore", description=__doc__)
    parser.add_argument(
        "--backend",
        default="sqlite",
        help="comma-separated: sqlite (always run, the reference), postgres, etcd",
    )
    parser.add_argument(
        "--postgres", metavar="DSN", help="run PostgreSQL against this database (not a private one)"
    )
    parser.add_argument("--quick", action="store_true", help="a tenth of the work (smoke run)")
    args = parser.parse_args()
    backends = {b.strip() for b in args.backend.split(",") if b.strip()}
    unknown = backends - {"sqlite", "postgres", "etcd"}
    if unknown:
        parser.error(f"unknown backend(s): {', '.join(sorted(unknown))}")
    if args.postgres:
        backends.add("postgres")
    logging.basicConfig(level=logging.WARNING)
    scale = 1 if args.quick else 10
    sizes = (1_000, 10_000) if args.quick else LIST_SIZES

    with tempfile.TemporaryDirectory(prefix="sampan-bench-") as tmp:
        tmp_path = pathlib.Path(tmp)
        floor = await asyncio.to_thread(
            baseline_inserts_per_s, tmp_path / "baseline.db", BASELINE_ROWS * scale // 10
        )
        print("Sampan datastore benchmark")
        print(
            f"  floor: plain sqlite3 loop, 1 row per commit, WAL, synchronous=FULL: {floor:,.0f}/s"
        )

        db_path = tmp_path / "state.db"
        store = SQLiteBackend(db_path, auto_compact=False)

        async def sqlite_size() -> float:
            return sqlite_size_mb(db_path)

        started = time.perf_counter()
        figures = await run_store(store, sqlite_size, scale, sizes)
        show(f"{describe(store)} (synchronous=FULL)", figures, floor)
        print(f"  ({time.perf_counter() - started:.1f} s)")

    if "postgres" in backends:
        with contextlib.ExitStack() as stack:
            dsn = args.postgres
            if not dsn:
                from tests.support.postgres import start_postgres

                dsn = stack.enter_context(start_postgres()).create_database("bench")
            store = PostgresBackend(dsn, auto_compact=False)

            async def pg_size() -> float:
                return await postgres_size_mb(dsn)

            started = time.perf_counter()
            figures = await run_store(store, pg_size, max(1, scale // 2), sizes)
            show(f"postgres {redact_endpoint(dsn)}", figures, floor)
            print(f"  ({time.perf_counter() - started:.1f} s)")

    if "etcd" in backends:
        await run_etcd(scale, sizes)


if __name__ == "__main__":
    asyncio.run(main())
