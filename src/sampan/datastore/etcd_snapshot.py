"""Snapshots of an etcd datastore: the ``SnapshotBackend`` for the embedded etcd (``sampan
etcd-snapshot save`` and ``sampan server --cluster-reset --cluster-reset-restore-path``).

* ``save(dest)``: etcd's ``Maintenance.Snapshot`` stream over the driver's gRPC stubs (the
  same aetcd-generated ``rpc_pb2`` modules, a blocking channel with the client TLS files):
  the whole backend database as of one revision, followed by etcd's SHA-256 of it, which is
  what ``etcdctl snapshot save`` writes too;
* ``verify(path)``: the file is a bbolt database (the meta page's magic) and its last 32 bytes
  are the SHA-256 of everything before them (``etcdctl snapshot restore``'s integrity check),
  so a truncated file or one that is not a snapshot is refused with one line; the revision
  and key count come from ``etcdctl snapshot status`` (Debian's ``etcd-client``);
* ``restore(path)``: ``etcdctl snapshot restore`` into a fresh directory beside the member's
  data dir, with this member's name and peer URL as a one-member cluster; only when that
  succeeded is the old ``member`` directory moved aside (``<etcd dir>-old-<unix ts>``, as K3s
  keeps it) and the restored one moved in. The server is stopped (checked: nothing answers on
  the client URL).

Revisions after a restore never go backwards (the choice etcd 3.5.10+/3.6 offers as ``etcdutl
snapshot restore --bump-revision N --mark-compacted``, which Kubernetes' etcd restore guide
recommends; etcd 3.4's ``etcdctl`` has no such flag). Before the old member is moved aside,
its database's revision is read (``sampan.datastore.bbolt``); the restored database's
``finishedCompactRev`` is then raised to ``max(snapshot revision, that revision) +
REVISION_BUMP`` (1,000, as for SQLite), so etcd 3.4 opens it at that revision with everything
older compacted: the restored objects keep their resourceVersions, the next write is above
every revision this member handed out, and a client watching from an older resourceVersion is
answered 410 Gone and relists. A member restored on a machine with no earlier data continues
from the snapshot's revision + 1,000 (a client that saw more than 1,000 later writes gets
``Too large resource version`` and relists). ``save`` first asks etcd to compact at revision 1
(a no-op on history; refused harmlessly once anything is compacted), so every snapshot it
writes holds the ``finishedCompactRev`` mark the restore raises; a foreign snapshot without
it is restored unbumped (``SnapshotInfo.revision`` then says the snapshot's own).

Everything here blocks (file I/O, subprocesses, a blocking gRPC channel): async callers use a
thread.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import grpc
from aetcd.rpc import rpc_pb2, rpc_pb2_grpc

from sampan.datastore.bbolt import BoltError, etcd_revisions, raise_compact_revision
from sampan.datastore.etcd import MAX_MESSAGE_BYTES, EtcdTLS, parse_etcd_endpoints
from sampan.datastore.snapshot import REVISION_BUMP, SnapshotError, SnapshotInfo

__all__ = ["EtcdSnapshots", "check_etcd_snapshot"]

ETCDCTL_BIN = "etcdctl"
SNAPSHOT_TIMEOUT_S = 600.0
ETCDCTL_TIMEOUT_S = 300.0
_HASH_BYTES = hashlib.sha256().digest_size
_BOLT_MAGIC = 0xED0CDAED
_BOLT_MAGIC_OFFSET = 16
"""bbolt's first page: a 16-byte page header, then the meta whose first field is the magic."""
_MIN_BOLT_BYTES = 2 * 4096


def check_etcd_snapshot(path: Path) -> None:
    """``SnapshotError`` (one line) unless ``path`` is a complete etcd snapshot: a bbolt
    database followed by the SHA-256 of its bytes."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(_BOLT_MAGIC_OFFSET + 4)
            if len(head) < _BOLT_MAGIC_OFFSET + 4 or (
                int.from_bytes(head[_BOLT_MAGIC_OFFSET:], "little") != _BOLT_MAGIC
            ):
                raise SnapshotError(f"{path} is not an etcd snapshot (not a bbolt database)")
            if size < _MIN_BOLT_BYTES + _HASH_BYTES:
                raise SnapshotError(f"{path} is truncated ({size} bytes): not a complete snapshot")
            f.seek(0)
            digest = hashlib.sha256()
            remaining = size - _HASH_BYTES
            while remaining:
                chunk = f.read(min(remaining, 1 << 20))
                if not chunk:
                    raise SnapshotError(f"{path} changed while it was read")
                digest.update(chunk)
                remaining -= len(chunk)
            trailer = f.read(_HASH_BYTES)
    except OSError as exc:
        raise SnapshotError(f"cannot read {path}: {exc.strerror}") from None
    if digest.digest() != trailer:
        raise SnapshotError(
            f"{path} is truncated or damaged: its SHA-256 does not match (not a complete etcd "
            "snapshot)"
        )


def _etcdctl(*args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which(ETCDCTL_BIN) is None:
        raise SnapshotError("etcdctl is not installed (apt-get install etcd-client)")
    try:
        return subprocess.run(
            [ETCDCTL_BIN, *args],
            capture_output=True,
            text=True,
            timeout=ETCDCTL_TIMEOUT_S,
            env={**os.environ, "ETCDCTL_API": "3"},
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise SnapshotError(f"etcdctl {args[0]} {args[1]} did not finish in time") from None


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "no output"


class EtcdSnapshots:
    """The ``SnapshotBackend`` of one embedded etcd member (see the module docstring)."""

    kind = "etcd"

    def __init__(
        self,
        endpoint: str,
        tls: EtcdTLS,
        *,
        data_dir: Path,
        member_name: str,
        peer_url: str,
    ) -> None:
        self.endpoint = endpoint
        self.tls = tls
        self.data_dir = Path(data_dir)
        """etcd's ``--data-dir`` (holds ``member/``)."""
        self.member_name = member_name
        self.peer_url = peer_url

    def _channel(self) -> grpc.Channel:
        scheme, targets = parse_etcd_endpoints(self.endpoint)
        options = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]
        if scheme == "https":
            return grpc.secure_channel(targets[0], self.tls.credentials(), options=options)
        return grpc.insecure_channel(targets[0], options=options)

    def save(self, dest: Path) -> None:
        channel = self._channel()
        try:
            # The compaction mark a restore raises (see the module docstring): compacting
            # at revision 1 removes no history; etcd refuses it once anything is compacted.
            try:
                rpc_pb2_grpc.KVStub(channel).Compact(
                    rpc_pb2.CompactionRequest(revision=1), timeout=SNAPSHOT_TIMEOUT_S
                )
            except grpc.RpcError as err:
                details = err.details() if hasattr(err, "details") else ""
                if "compacted" not in (details or ""):
                    raise
            stream = rpc_pb2_grpc.MaintenanceStub(channel).Snapshot(
                rpc_pb2.SnapshotRequest(), timeout=SNAPSHOT_TIMEOUT_S
            )
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                for response in stream:
                    out.write(response.blob)
                out.flush()
                os.fsync(out.fileno())
        except grpc.RpcError as err:
            details = err.details() if hasattr(err, "details") else str(err)
            raise SnapshotError(
                f"etcd at {self.endpoint} refused the snapshot: {(details or '')[:200]}"
            ) from None
        finally:
            channel.close()

    def verify(self, path: Path) -> SnapshotInfo:
        check_etcd_snapshot(path)
        out = _etcdctl("snapshot", "status", str(path), "-w", "json")
        try:
            status = json.loads(out.stdout) if out.returncode == 0 else None
        except ValueError:
            status = None
        if not isinstance(status, dict):
            raise SnapshotError(f"{path} cannot be read: {_last_line(out.stderr)}")
        return SnapshotInfo(revision=int(status.get("revision", 0)), keys=int(status["totalKey"]))

    def _running(self) -> bool:
        channel = self._channel()
        try:
            rpc_pb2_grpc.MaintenanceStub(channel).Status(rpc_pb2.StatusRequest(), timeout=2)
            return True
        except grpc.RpcError:
            return False
        finally:
            channel.close()

    def _member_revision(self) -> int:
        """The revision of the member being replaced (0 without one or if unreadable)."""
        db = self.data_dir / "member" / "snap" / "db"
        if not db.exists():
            return 0
        try:
            return etcd_revisions(db)[0]
        except BoltError:
            return 0

    def restore(self, path: Path) -> SnapshotInfo:
        info = self.verify(path)
        if self._running():
            raise SnapshotError(f"etcd answers on {self.endpoint}: stop the server first")
        previous = self._member_revision()
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        scratch = Path(tempfile.mkdtemp(prefix=".restore-", dir=self.data_dir.parent))
        try:
            target = scratch / "etcd"
            out = _etcdctl(
                "snapshot",
                "restore",
                str(path),
                f"--data-dir={target}",
                f"--name={self.member_name}",
                f"--initial-cluster={self.member_name}={self.peer_url}",
                f"--initial-advertise-peer-urls={self.peer_url}",
                "--initial-cluster-token=sampan-restored",
            )
            if out.returncode != 0 or not (target / "member").is_dir():
                raise SnapshotError(f"etcdctl snapshot restore failed: {_last_line(out.stderr)}")
            revision = max(info.revision, previous) + REVISION_BUMP
            try:
                bumped = raise_compact_revision(target / "member" / "snap" / "db", revision)
            except BoltError as exc:
                raise SnapshotError(f"cannot set the restored revision: {exc}") from None
            if bumped:
                info = SnapshotInfo(revision=revision, keys=info.keys)
            current = self.data_dir / "member"
            if current.exists():
                old = self.data_dir.with_name(f"{self.data_dir.name}-old-{int(time.time())}")
                old.mkdir(mode=0o700)
                os.replace(current, old / "member")
            os.replace(target / "member", current)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return info
