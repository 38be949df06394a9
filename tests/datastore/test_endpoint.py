"""Driver selection from --datastore-endpoint, and endpoint redaction."""

from __future__ import annotations

import pathlib
import stat

import pytest

from sampan.datastore import (
    InvalidRequestError,
    describe,
    open_backend,
    redact_endpoint,
)
from sampan.datastore.postgres import PostgresBackend
from sampan.datastore.sqlite import SQLiteBackend


async def test_default_is_sqlite_under_the_data_dir(tmp_path: pathlib.Path) -> None:
    for endpoint in ("", "sqlite"):
        backend = open_backend(endpoint, tmp_path)
        assert isinstance(backend, SQLiteBackend)
        assert backend.path == tmp_path / "server" / "db" / "state.db"
    db_dir = tmp_path / "server" / "db"
    await backend.start()
    try:
        await backend.create("/registry/x", b"1")
        # The store holds Secrets: the directory and every file of the database are private.
        assert stat.S_IMODE(db_dir.stat().st_mode) == 0o700
        for name in ("state.db", "state.db-wal", "state.db-shm"):
            assert stat.S_IMODE((db_dir / name).stat().st_mode) == 0o600, name
    finally:
        await backend.close()
    assert (db_dir / "state.db").is_file()
    assert describe(backend) == f"sqlite {db_dir / 'state.db'}"


def test_sqlite_url_names_the_file(tmp_path: pathlib.Path) -> None:
    backend = open_backend(f"sqlite://{tmp_path}/elsewhere.db", tmp_path / "unused")
    assert isinstance(backend, SQLiteBackend)
    assert backend.path == tmp_path / "elsewhere.db"
    with pytest.raises(InvalidRequestError):
        open_backend("sqlite://relative.db", tmp_path)


def test_postgres_urls_pick_the_postgres_driver(tmp_path: pathlib.Path) -> None:
    for scheme in ("postgres", "postgresql"):
        backend = open_backend(f"{scheme}://u:hunter2@db.example:5432/k8s", tmp_path)
        assert isinstance(backend, PostgresBackend)
        assert describe(backend) == f"postgres {scheme}://u:***@db.example:5432/k8s"
        assert "hunter2" not in repr(backend)


def test_unknown_endpoints_are_refused_without_echoing_them(tmp_path: pathlib.Path) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        open_backend("mysql://root:hunter2@db/k8s", tmp_path)
    assert "'mysql'" in str(caught.value)
    assert "hunter2" not in str(caught.value)
    with pytest.raises(InvalidRequestError) as caught:
        open_backend("host=db password=hunter2", tmp_path)
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    ("endpoint", "shown"),
    [
        ("postgres://user:pw@host/db", "postgres://user:***@host/db"),
        ("postgresql://user@host:5433/db", "postgresql://user@host:5433/db"),
        (
            "postgres://user:p%40ss@host/db?sslmode=require",
            "postgres://user:***@host/db?sslmode=require",
        ),
        ("postgres://host/db?user=u&password=pw", "postgres://host/db?user=u&password=***"),
        ("sqlite:///var/lib/x.db", "sqlite:///var/lib/x.db"),
        ("", "sqlite"),
        ("host=db password=pw", "***"),
    ],
)
def test_redact_endpoint(endpoint: str, shown: str) -> None:
    assert redact_endpoint(endpoint) == shown


@pytest.mark.postgres
async def test_a_postgres_endpoint_opens_a_working_store(
    postgres_dsn: str, tmp_path: pathlib.Path
) -> None:
    backend = open_backend(postgres_dsn, tmp_path)
    await backend.start()
    try:
        rev = await backend.create("/registry/x", b"1")
        assert await backend.get("/registry/x") == (
            rev,
            (await backend.list("/registry/")).items[0],
        )
        assert describe(backend).startswith("postgres postgresql://postgres@127.0.0.1:")
    finally:
        await backend.close()
    assert not (tmp_path / "server").exists()  # nothing written under the data dir
