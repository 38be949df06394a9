"""Fixtures for the datastore tests: each driver against a real database (SQLite in a temp
dir, PostgreSQL and etcd in private servers started once per session; on etcd each test has
its own key namespace, and revisions start wherever the shared server is)."""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator

import pytest

from sampan.datastore.etcd import EtcdBackend
from sampan.datastore.postgres import PostgresBackend
from sampan.datastore.sqlite import SQLiteBackend
from sampan.datastore.types import Backend
from tests.support.etcd import EtcdServer, etcd_server
from tests.support.postgres import PostgresServer, postgres_dsn, postgres_server

__all__ = ["etcd_server", "postgres_dsn", "postgres_server"]

DRIVERS = [
    "sqlite",
    pytest.param("postgres", marks=pytest.mark.postgres),
    pytest.param("etcd", marks=pytest.mark.etcd),
]


def make_backend(
    kind: str, tmp_path: pathlib.Path, request: pytest.FixtureRequest
) -> SQLiteBackend | PostgresBackend | EtcdBackend:
    """A fresh, not yet started backend of ``kind`` on an empty database, without the
    background compactor (tests compact explicitly)."""
    if kind == "sqlite":
        return SQLiteBackend(tmp_path / "state.db", auto_compact=False)
    if kind == "etcd":
        etcd: EtcdServer = request.getfixturevalue("etcd_server")
        return EtcdBackend(
            etcd.endpoint, tls=etcd.tls, namespace=etcd.namespace(), auto_compact=False
        )
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return PostgresBackend(server.create_database(), auto_compact=False)


@pytest.fixture(params=DRIVERS)
async def backend(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> AsyncIterator[Backend]:
    store = make_backend(request.param, tmp_path, request)
    await store.start()
    try:
        yield store
    finally:
        await store.close()
