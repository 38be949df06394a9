"""Snapshots of the embedded datastore: consistent point-in-time copies, listing, pruning and
restore (what ``sampan etcd-snapshot`` and ``sampan server --cluster-reset
--cluster-reset-restore-path`` do; K3s's names and layout).

Two layers:

* a ``SnapshotBackend`` per datastore kind does the datastore-specific work — ``save(dest)``
  (a consistent copy while writes continue), ``verify(path)`` (is this file a complete
  snapshot of this kind?) and ``restore(path)`` (replace the datastore with it; the server is
  stopped). ``snapshot_backend(endpoint, data_dir)`` picks it. SQLite's is here
  (``SQLiteSnapshots``: SQLite's online backup API); the embedded etcd's is
  ``sampan.datastore.etcd_snapshot.EtcdSnapshots`` (etcd's Maintenance.Snapshot, ``etcdctl
  snapshot restore``), chosen by the supervisor (``supervisor.snapshots.backend_for``)
  because it needs the member's name, ports and certificates. PostgreSQL has none: it is
  backed up with its own tools.
* file handling shared by every kind: names ``<name>-<node>-<unix ts>`` (``.zip`` when
  compressed: one member, the raw snapshot), the directory (default
  ``<data-dir>/server/db/snapshots``, 0700; files 0600), ``list_snapshots``,
  ``delete_snapshots``, ``prune_snapshots`` (keep the newest N of one name prefix and node)
  and ``restore_snapshot`` (unzips, verifies, then hands over to the backend).

Invariants: a snapshot file appears only complete (written to a temporary name, verified,
then renamed); a restore checks the whole file before it touches the datastore, so a truncated
file or one that is not a snapshot changes nothing (``SnapshotError``, one line); after a
restore (SQLite, or etcd: ``etcd_snapshot``) every revision a client saw before is compacted
and the next write gets a higher revision than any of them (as ``etcdutl snapshot restore
--bump-revision --mark-compacted``), so watchers relist instead of waiting on revisions that
will never come.

Everything here blocks (file I/O, SQLite): async callers use a thread.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sqlite3
import tempfile
import time
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

__all__ = [
    "DEFAULT_SNAPSHOT_RELATIVE_DIR",
    "ON_DEMAND_NAME",
    "REVISION_BUMP",
    "SCHEDULED_NAME",
    "SQLiteSnapshots",
    "SnapshotBackend",
    "SnapshotError",
    "SnapshotFile",
    "SnapshotInfo",
    "delete_snapshots",
    "list_snapshots",
    "prune_snapshots",
    "restore_snapshot",
    "save_snapshot",
    "snapshot_backend",
    "snapshot_name",
]

DEFAULT_SNAPSHOT_RELATIVE_DIR = Path("server") / "db" / "snapshots"
SCHEDULED_NAME = "etcd-snapshot"
"""K3s's name for scheduled snapshots."""
ON_DEMAND_NAME = "on-demand"
"""K3s's default ``--name`` of ``etcd-snapshot save``."""
ZIP_SUFFIX = ".zip"
FILE_MODE = 0o600
DIR_MODE = 0o700
REVISION_BUMP = 1_000
"""How far past every revision seen before a restored SQLite datastore continues."""

_SQLITE_MAGIC = b"SQLite format 3\x00"
_SQLITE_HEADER_BYTES = 100
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_TS_RE = re.compile(r"^(?P<base>.+)-(?P<ts>\d{9,12})$")


class SnapshotError(Exception):
    """A snapshot cannot be made, read or restored; the message is one line."""


@dataclass(frozen=True)
class SnapshotInfo:
    """What ``verify`` found in a snapshot."""

    revision: int
    keys: int
    """Live keys at that revision."""


@dataclass(frozen=True)
class SnapshotFile:
    name: str
    """The file name (with ``.zip`` when compressed)."""
    path: Path
    size: int
    created: int
    """Unix seconds: from the name, else the file's modification time."""
    compressed: bool

    @property
    def base(self) -> str:
        """``<name>-<node>`` (the name without timestamp and suffix)."""
        stem = self.name.removesuffix(ZIP_SUFFIX)
        match = _TS_RE.match(stem)
        return match["base"] if match else stem


class SnapshotBackend(Protocol):
    kind: str

    def save(self, dest: Path) -> None:
        """Write a consistent snapshot of the running datastore to ``dest``."""

    def verify(self, path: Path) -> SnapshotInfo:
        """Check that ``path`` is a complete snapshot of this kind (``SnapshotError`` if not)."""

    def restore(self, path: Path) -> SnapshotInfo:
        """Replace the (stopped) datastore with the verified snapshot at ``path``."""


def snapshot_backend(endpoint: str, data_dir: Path) -> SnapshotBackend:
    """The snapshot backend for ``--datastore-endpoint`` (``SnapshotError`` when that kind has
    none)."""
    from sampan.datastore.endpoint import DEFAULT_DB_RELATIVE_PATH

    if endpoint in ("", "sqlite"):
        return SQLiteSnapshots(data_dir / DEFAULT_DB_RELATIVE_PATH)
    if endpoint.startswith("sqlite:///"):
        from urllib.parse import unquote

        return SQLiteSnapshots(Path(unquote(endpoint[len("sqlite://") :])))
    if endpoint.split("://", 1)[0].lower() in ("postgres", "postgresql"):
        raise SnapshotError(
            "snapshots are for the embedded datastore (SQLite) and etcd; back up PostgreSQL "
            "with pg_dump"
        )
    raise SnapshotError("snapshots are not available for this datastore endpoint")


# --- SQLite -----------------------------------------------------------------------------------


class SQLiteSnapshots:
    """Snapshots of the SQLite datastore at ``db_path`` through SQLite's online backup API:
    the copy is made in one backup step, inside one read transaction of the source, so it is
    the database as of one commit while the server keeps writing (WAL readers never block the
    writer)."""

    kind = "sqlite"

    def __init__(self, db_path: Path) -> None:
        self.db_path = Path(db_path)

    def save(self, dest: Path) -> None:
        if not self.db_path.exists():
            raise SnapshotError(f"no datastore at {self.db_path}: start the server first")
        try:
            source = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=30)
        except sqlite3.Error as exc:
            raise SnapshotError(f"cannot open {self.db_path}: {exc}") from None
        try:
            target = sqlite3.connect(dest)
            try:
                source.backup(target)  # pages=-1: everything in one step (one snapshot)
                target.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
            finally:
                target.close()
        except sqlite3.Error as exc:
            raise SnapshotError(f"snapshot of {self.db_path} failed: {exc}") from None
        finally:
            source.close()

    def verify(self, path: Path) -> SnapshotInfo:
        size = path.stat().st_size
        with path.open("rb") as f:
            header = f.read(_SQLITE_HEADER_BYTES)
        if len(header) < _SQLITE_HEADER_BYTES or not header.startswith(_SQLITE_MAGIC):
            raise SnapshotError(f"{path} is not a Sampan snapshot (not an SQLite database)")
        page_size = int.from_bytes(header[16:18], "big")
        page_size = 65536 if page_size == 1 else page_size
        pages = int.from_bytes(header[28:32], "big")
        if pages and size < page_size * pages:
            raise SnapshotError(
                f"{path} is truncated ({size} bytes of {page_size * pages}): not a complete "
                "snapshot"
            )
        try:
            conn = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
        except sqlite3.Error as exc:
            raise SnapshotError(f"{path} cannot be opened: {exc}") from None
        try:
            check = conn.execute("PRAGMA integrity_check").fetchone()
            if not check or check[0] != "ok":
                raise SnapshotError(f"{path} is damaged: {check[0] if check else 'no answer'}")
            tables = {
                row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
            if not {"kv", "kv_meta"} <= tables:
                raise SnapshotError(f"{path} is an SQLite database but not a Sampan datastore")
            row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'kv'").fetchone()
            revision = int(row[0]) if row else 0
            keys = conn.execute(
                "SELECT COUNT(*) FROM kv AS k WHERE k.deleted = 0 AND NOT EXISTS"
                " (SELECT 1 FROM kv AS s WHERE s.name = k.name AND s.prev_revision = k.id)"
            ).fetchone()[0]
            return SnapshotInfo(revision=revision, keys=int(keys))
        except sqlite3.DatabaseError as exc:
            raise SnapshotError(f"{path} is damaged or not a snapshot: {exc}") from None
        finally:
            conn.close()

    def restore(self, path: Path) -> SnapshotInfo:
        info = self.verify(path)
        previous = self._stop_using_current()
        db = self.db_path
        db.parent.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
        tmp = db.with_name(f".{db.name}.restore")
        shutil.copyfile(path, tmp)
        os.chmod(tmp, FILE_MODE)
        try:
            conn = sqlite3.connect(tmp)
            try:
                revision = max(info.revision, previous) + REVISION_BUMP
                with conn:
                    # sqlite_sequence has no key: update the row, or add it when the
                    # snapshot's log was still empty.
                    if not conn.execute(
                        "UPDATE sqlite_sequence SET seq = ? WHERE name = 'kv'", (revision,)
                    ).rowcount:
                        conn.execute(
                            "INSERT INTO sqlite_sequence (name, seq) VALUES ('kv', ?)",
                            (revision,),
                        )
                    # Everything before the bumped revision is compacted; the bumped one is
                    # where lists and watches start.
                    conn.execute(
                        "UPDATE kv_meta SET value = ? WHERE name = 'compact_revision'",
                        (revision - 1,),
                    )
                conn.execute("PRAGMA journal_mode=DELETE")
            finally:
                conn.close()
            for suffix in ("-wal", "-shm", "-journal"):
                with contextlib.suppress(FileNotFoundError):
                    db.with_name(db.name + suffix).unlink()
            os.replace(tmp, db)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
        return SnapshotInfo(revision=revision, keys=info.keys)

    def _stop_using_current(self) -> int:
        """The current datastore's revision (0 if there is none); ``SnapshotError`` when a
        running server still has it open (switching it out of WAL mode needs every other
        connection closed)."""
        if not self.db_path.exists():
            return 0
        try:
            conn = sqlite3.connect(self.db_path, timeout=0)
        except sqlite3.Error as exc:
            raise SnapshotError(f"cannot open {self.db_path}: {exc}") from None
        try:
            mode = conn.execute("PRAGMA journal_mode=DELETE").fetchone()
            if not mode or str(mode[0]).lower() != "delete":
                raise SnapshotError(f"{self.db_path} is in use: stop the server first")
            row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'kv'").fetchone()
            return int(row[0]) if row else 0
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise SnapshotError(f"{self.db_path} is in use: stop the server first") from None
            return 0  # not a datastore we can read: the restore replaces it
        finally:
            conn.close()


# --- files --------------------------------------------------------------------------------------


def snapshot_name(name: str, node: str, now_s: float | None = None) -> str:
    """``<name>-<node>-<unix ts>`` (K3s's form)."""
    if not _NAME_RE.match(name):
        raise SnapshotError(f"--name {name!r}: use letters, digits, '.', '_' and '-'")
    return f"{name}-{node}-{int(time.time() if now_s is None else now_s)}"


def _ensure_dir(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    if (directory.stat().st_mode & 0o777) != DIR_MODE:
        directory.chmod(DIR_MODE)


def _entry(path: Path) -> SnapshotFile:
    stat = path.stat()
    stem = path.name.removesuffix(ZIP_SUFFIX)
    match = _TS_RE.match(stem)
    created = int(match["ts"]) if match else int(stat.st_mtime)
    return SnapshotFile(
        name=path.name,
        path=path,
        size=stat.st_size,
        created=created,
        compressed=path.name.endswith(ZIP_SUFFIX),
    )


def save_snapshot(
    backend: SnapshotBackend,
    directory: Path,
    *,
    name: str,
    node: str,
    compress: bool = False,
    now_s: float | None = None,
) -> SnapshotFile:
    """Take a snapshot into ``directory`` as ``<name>-<node>-<ts>[.zip]``; returns it."""
    _ensure_dir(directory)
    base = snapshot_name(name, node, now_s)
    final = directory / (base + (ZIP_SUFFIX if compress else ""))
    if final.exists():
        raise SnapshotError(f"{final} exists already")
    with tempfile.TemporaryDirectory(prefix=".snapshot-", dir=directory) as scratch:
        raw = Path(scratch) / base
        backend.save(raw)
        backend.verify(raw)
        os.chmod(raw, FILE_MODE)
        if compress:
            packed = Path(scratch) / (base + ZIP_SUFFIX)
            with zipfile.ZipFile(packed, "w", compression=zipfile.ZIP_DEFLATED) as archive:
                archive.write(raw, arcname=base)
            os.chmod(packed, FILE_MODE)
            raw = packed
        with open(raw, "rb") as f:
            os.fsync(f.fileno())
        os.replace(raw, final)
    return _entry(final)


def list_snapshots(directory: Path) -> list[SnapshotFile]:
    """The snapshot files in ``directory``, oldest first (none when it does not exist)."""
    if not directory.is_dir():
        return []
    found = [
        _entry(p)
        for p in directory.iterdir()
        if p.is_file() and not p.name.startswith(".") and _NAME_RE.match(p.name)
    ]
    return sorted(found, key=lambda s: (s.created, s.name))


def delete_snapshots(directory: Path, names: Iterable[str]) -> list[str]:
    """Delete the named snapshots (with or without ``.zip``); returns the files removed.
    ``SnapshotError`` for a name that is not a snapshot in ``directory``."""
    present = {s.name: s for s in list_snapshots(directory)}
    chosen = []
    for name in names:
        entry = present.get(name) or present.get(name + ZIP_SUFFIX)
        if entry is None or "/" in name:
            raise SnapshotError(f"snapshot {name} not found in {directory}")
        chosen.append(entry)
    for entry in chosen:
        entry.path.unlink(missing_ok=True)
    return [e.name for e in chosen]


def prune_snapshots(directory: Path, *, name: str, node: str, retention: int) -> list[str]:
    """Keep the newest ``retention`` snapshots named ``<name>-<node>-*``; delete the rest."""
    if retention < 1:
        raise SnapshotError("--etcd-snapshot-retention must be at least 1")
    mine = [s for s in list_snapshots(directory) if s.base == f"{name}-{node}"]
    doomed = mine[: max(0, len(mine) - retention)]
    for entry in doomed:
        entry.path.unlink(missing_ok=True)
    return [e.name for e in doomed]


def restore_snapshot(backend: SnapshotBackend, path: Path) -> SnapshotInfo:
    """Restore the datastore from ``path`` (raw or ``.zip``), verified first in full."""
    if not path.is_file():
        raise SnapshotError(f"{path}: no such snapshot file")
    with tempfile.TemporaryDirectory(prefix="sampan-restore-") as scratch:
        raw = path
        if zipfile.is_zipfile(path):
            try:
                with zipfile.ZipFile(path) as archive:
                    members = archive.infolist()
                    if len(members) != 1 or members[0].is_dir():
                        raise SnapshotError(f"{path} is not a snapshot archive (one file)")
                    raw = Path(scratch) / "snapshot"
                    with archive.open(members[0]) as src, raw.open("wb") as dst:
                        shutil.copyfileobj(src, dst)
            except (zipfile.BadZipFile, OSError, EOFError) as exc:
                raise SnapshotError(f"{path} is a damaged archive: {exc}") from None
        elif path.name.endswith(ZIP_SUFFIX):
            raise SnapshotError(f"{path} is not a zip archive (truncated?)")
        backend.verify(raw)
        return backend.restore(raw)
