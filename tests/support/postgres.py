"""A private, throw-away PostgreSQL server for tests (real binaries, never a mock).

``postgres_server`` is a session-scoped pytest fixture: it runs Debian's ``initdb`` into a
temporary directory owned by the ``postgres`` user (tests run as root, and PostgreSQL refuses
to run as root), starts ``postgres`` on 127.0.0.1 on a free port with its unix socket inside
that directory and ``fsync=on``, and stops it (``pg_ctl stop -m fast``) and removes the
directory at the end. ``postgres_dsn`` (per test) yields the DSN of a fresh, empty database on
it; ``PostgresServer.create_database()`` makes more when a test needs them.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pathlib
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator

import psycopg
import pytest

__all__ = [
    "PostgresServer",
    "find_postgres_bin",
    "postgres_dsn",
    "postgres_server",
    "start_postgres",
]

PG_GLOB = "/usr/lib/postgresql/*/bin"
PG_USER = "postgres"
START_TIMEOUT_S = 60


def find_postgres_bin() -> pathlib.Path:
    """The newest Debian PostgreSQL bin directory; fails the test run if there is none."""
    candidates = [pathlib.Path(p) for p in glob.glob(PG_GLOB) if os.path.exists(p + "/initdb")]

    def version(path: pathlib.Path) -> tuple[int, ...]:
        parts = path.parent.name.split(".")
        return tuple(int(p) for p in parts if p.isdigit())

    if not candidates:
        pytest.fail(
            f"PostgreSQL server binaries not found under {PG_GLOB}: `make test` installs the"
            " Debian `postgresql` package (or run `apt-get install postgresql`)",
            pytrace=False,
        )
    return max(candidates, key=version)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresServer:
    """A running private server; ``dsn(dbname)`` builds a DSN for one of its databases."""

    def __init__(self, bin_dir: pathlib.Path, root: pathlib.Path) -> None:
        self.bin_dir = bin_dir
        self.root = root
        self.data_dir = root / "data"
        self.socket_dir = root / "sock"
        self.log_path = root / "postgres.log"
        self.port = 0
        self._counter = itertools.count(1)

    def _run(self, *args: str) -> None:
        cmd = [str(self.bin_dir / args[0]), *args[1:]]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", PG_USER, "--", *cmd]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=START_TIMEOUT_S)
        if result.returncode != 0:
            log_tail = ""
            with contextlib.suppress(OSError):
                log_tail = self.log_path.read_text()[-2000:]
            raise RuntimeError(
                f"{args[0]} failed ({result.returncode}): {result.stderr.strip()}\n{log_tail}"
            )

    def start(self) -> None:
        if os.geteuid() == 0:
            owner = pwd.getpwnam(PG_USER)
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
        self.socket_dir.mkdir()
        if os.geteuid() == 0:
            os.chown(self.socket_dir, owner.pw_uid, owner.pw_gid)
        self._run("initdb", "-D", str(self.data_dir), "-U", PG_USER, "--auth=trust",
                  "-E", "UTF8", "--no-locale", "--no-sync")  # fmt: skip
        self.port = _free_port()
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port}"
            f" -c unix_socket_directories={self.socket_dir} -c fsync=on"
            " -c max_connections=300"
        )
        self._run("pg_ctl", "start", "-w", "-t", str(START_TIMEOUT_S), "-D", str(self.data_dir),
                  "-l", str(self.log_path), "-o", options)  # fmt: skip

    def stop(self) -> None:
        if self.port:
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self._run("pg_ctl", "stop", "-m", "fast", "-w", "-D", str(self.data_dir))

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://{PG_USER}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, prefix: str = "sampan_test") -> str:
        """A new, empty database; returns its DSN."""
        name = f"{prefix}_{next(self._counter)}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)


@contextlib.contextmanager
def start_postgres() -> Iterator[PostgresServer]:
    bin_dir = find_postgres_bin()
    root = pathlib.Path(tempfile.mkdtemp(prefix="sampan-pg-"))
    server = PostgresServer(bin_dir, root)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    with start_postgres() as server:
        yield server


@pytest.fixture
def postgres_dsn(postgres_server: PostgresServer) -> str:
    """The DSN of a new, empty database on the session's private server."""
    return postgres_server.create_database()
