"""Just enough of bbolt's file format (etcd's backend database, ``member/snap/db``) to read
the revisions an etcd member holds and to raise its compaction revision, with etcd stopped.

Why: after ``etcdctl snapshot restore`` (etcd 3.4, Debian 12) a member continues from the
snapshot's revision, lower than revisions clients already hold. etcd 3.5.10+/3.6's ``etcdutl
snapshot restore --bump-revision N --mark-compacted`` fixes that; 3.4 has no such flag. etcd
3.4 itself, when it opens its database, starts from ``max(latest key revision,
finishedCompactRev)`` and refuses reads and watches below ``finishedCompactRev`` (mvcc's
restore). So raising ``finishedCompactRev`` (meta bucket) of a restored database to R makes it
serve revision R and continue at R + 1, with every older revision compacted: what
``--bump-revision --mark-compacted`` does.

What this module reads and writes (bbolt 1.3's layout, little-endian):

* two meta pages (0 and 1); the valid one (magic, FNV-1a checksum) with the higher txid
  names the page size and the root of the bucket tree;
* branch pages (elements ``pos, ksize, pgid``) and leaf pages (``flags, pos, ksize, vsize``);
  a bucket is a leaf value ``root pgid, sequence``, followed by its page when it is inline
  (root 0);
* writing: ``overwrite_value`` replaces a value with one of the *same length* in place (no
  page split, no freelist change; leaf pages carry no checksum in bbolt 1.3) and fsyncs.

Invariants: nothing here ever changes a file's structure; a file that does not parse (bad
magic or checksum, an element outside the file) raises ``BoltError``; blocking I/O.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "BoltError",
    "BoltFile",
    "etcd_revisions",
    "raise_compact_revision",
]

_MAGIC = 0xED0CDAED
_PAGE_HEADER = struct.Struct("<QHHI")  # id, flags, count, overflow
_META = struct.Struct("<IIII QQ QQQ Q")  # magic, version, page size, flags, root bucket
# (root, sequence), freelist, high-water pgid, txid, checksum
_BRANCH_ELEMENT = struct.Struct("<IIQ")  # pos, ksize, pgid
_LEAF_ELEMENT = struct.Struct("<IIII")  # flags, pos, ksize, vsize
_BUCKET = struct.Struct("<QQ")  # root pgid, sequence
_BRANCH_PAGE = 0x01
_LEAF_PAGE = 0x02
_BUCKET_LEAF = 0x01
_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3

# etcd's schema: the key bucket holds revision -> KeyValue, the meta bucket the compaction
# marks. A revision is 8 bytes main (big-endian), "_", 8 bytes sub.
ETCD_KEY_BUCKET = b"key"
ETCD_META_BUCKET = b"meta"
FINISHED_COMPACT_KEY = b"finishedCompactRev"
SCHEDULED_COMPACT_KEY = b"scheduledCompactRev"
_REVISION = struct.Struct(">Qc Q")


class BoltError(Exception):
    """The file is not a bbolt database this module can read (one line)."""


def _fnv1a64(data: bytes) -> int:
    h = _FNV_OFFSET
    for byte in data:
        h = ((h ^ byte) * _FNV_PRIME) & 0xFFFFFFFFFFFFFFFF
    return h


def _revision_main(raw: bytes) -> int:
    if len(raw) < 8:
        raise BoltError(f"not an etcd revision: {raw!r}")
    return int.from_bytes(raw[:8], "big")


def revision_bytes(main: int) -> bytes:
    """etcd's 17-byte encoding of revision ``{main, sub 0}``."""
    return _REVISION.pack(main, b"_", 0)


@dataclass(frozen=True)
class _Leaf:
    key: bytes
    flags: int
    value_offset: int
    """Absolute file offset of the value."""
    value: bytes


class BoltFile:
    """A bbolt file opened for reading (the whole file in memory: etcd backends of a small
    cluster are megabytes; a restore is a one-off)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self._data = self.path.read_bytes()
        except OSError as exc:
            raise BoltError(f"cannot read {path}: {exc.strerror}") from None
        self.page_size, self.root = self._meta()

    def _meta(self) -> tuple[int, int]:
        best: tuple[int, int, int] | None = None  # txid, page size, root
        size = _PAGE_HEADER.size + _META.size
        if len(self._data) < size:
            raise BoltError(f"{self.path} is not a bbolt database (too short)")
        page_size = _META.unpack_from(self._data, _PAGE_HEADER.size)[2]
        for offset in (0, page_size):
            start = offset + _PAGE_HEADER.size
            if page_size < 512 or start + _META.size > len(self._data):
                continue
            fields = _META.unpack_from(self._data, start)
            magic, _version, psize, _flags, root, _seq, _free, _pgid, txid, checksum = fields
            if magic != _MAGIC:
                continue
            if _fnv1a64(self._data[start : start + _META.size - 8]) != checksum:
                continue
            if best is None or txid > best[0]:
                best = (txid, psize, root)
        if best is None:
            raise BoltError(f"{self.path} is not a bbolt database (no valid meta page)")
        return best[1], best[2]

    def _check(self, start: int, length: int) -> None:
        if start < 0 or start + length > len(self._data):
            raise BoltError(f"{self.path} is damaged (a page element lies outside the file)")

    def _page(self, pgid: int) -> tuple[int, int, int]:
        """(file offset, flags, count) of page ``pgid``."""
        offset = pgid * self.page_size
        self._check(offset, _PAGE_HEADER.size)
        _id, flags, count, _overflow = _PAGE_HEADER.unpack_from(self._data, offset)
        return offset, flags, count

    def _leaves_of_page(self, offset: int, count: int) -> list[_Leaf]:
        leaves = []
        for i in range(count):
            at = offset + _PAGE_HEADER.size + i * _LEAF_ELEMENT.size
            self._check(at, _LEAF_ELEMENT.size)
            flags, pos, ksize, vsize = _LEAF_ELEMENT.unpack_from(self._data, at)
            key_at = at + pos
            self._check(key_at, ksize + vsize)
            leaves.append(
                _Leaf(
                    key=self._data[key_at : key_at + ksize],
                    flags=flags,
                    value_offset=key_at + ksize,
                    value=self._data[key_at + ksize : key_at + ksize + vsize],
                )
            )
        return leaves

    def _branches(self, offset: int, count: int) -> list[tuple[bytes, int]]:
        out = []
        for i in range(count):
            at = offset + _PAGE_HEADER.size + i * _BRANCH_ELEMENT.size
            self._check(at, _BRANCH_ELEMENT.size)
            pos, ksize, pgid = _BRANCH_ELEMENT.unpack_from(self._data, at)
            self._check(at + pos, ksize)
            out.append((self._data[at + pos : at + pos + ksize], pgid))
        return out

    def _leaf_page_for(self, root: int | _Leaf, key: bytes | None) -> list[_Leaf]:
        """The leaf elements of the page that holds ``key`` (the last page for None) in the
        tree whose root is page ``root``, or an inline bucket's own page."""
        if isinstance(root, _Leaf):  # inline bucket: its page follows the bucket header
            offset = root.value_offset + _BUCKET.size
            self._check(offset, _PAGE_HEADER.size)
            _id, flags, count, _overflow = _PAGE_HEADER.unpack_from(self._data, offset)
            return self._leaves_of_page(offset, count)
        pgid = root
        for _depth in range(64):
            offset, flags, count = self._page(pgid)
            if flags & _LEAF_PAGE:
                return self._leaves_of_page(offset, count)
            if not flags & _BRANCH_PAGE or count == 0:
                raise BoltError(f"{self.path} is damaged (page {pgid} is neither branch nor leaf)")
            branches = self._branches(offset, count)
            chosen = branches[-1][1]
            if key is not None:
                chosen = branches[0][1]
                for branch_key, child in branches:
                    if branch_key <= key:
                        chosen = child
                    else:
                        break
            pgid = chosen
        raise BoltError(f"{self.path} is damaged (a tree deeper than 64 levels)")

    def _bucket(self, name: bytes) -> int | _Leaf:
        for leaf in self._leaf_page_for(self.root, name):
            if leaf.key == name and leaf.flags & _BUCKET_LEAF:
                root, _sequence = _BUCKET.unpack_from(leaf.value)
                return leaf if root == 0 else root
        raise BoltError(f"{self.path} has no bucket {name.decode(errors='replace')!r}")

    def get(self, bucket: bytes, key: bytes) -> _Leaf | None:
        """The element of ``key`` in ``bucket`` (None when absent)."""
        for leaf in self._leaf_page_for(self._bucket(bucket), key):
            if leaf.key == key and not leaf.flags & _BUCKET_LEAF:
                return leaf
        return None

    def last_key(self, bucket: bytes) -> bytes | None:
        leaves = self._leaf_page_for(self._bucket(bucket), None)
        return leaves[-1].key if leaves else None


def etcd_revisions(path: Path) -> tuple[int, int]:
    """``(latest revision, compaction revision)`` of the etcd backend database at ``path``:
    the revision etcd would serve when it opens it, and ``finishedCompactRev`` (0 if never
    compacted). ``BoltError`` if it cannot be read."""
    db = BoltFile(path)
    last = db.last_key(ETCD_KEY_BUCKET)
    latest = _revision_main(last) if last else 0
    compacted = 0
    for name in (FINISHED_COMPACT_KEY, SCHEDULED_COMPACT_KEY):
        leaf = db.get(ETCD_META_BUCKET, name)
        if leaf is not None:
            mark = _revision_main(leaf.value)
            latest = max(latest, mark)
            if name == FINISHED_COMPACT_KEY:
                compacted = mark
    return latest, compacted


def raise_compact_revision(path: Path, revision: int) -> bool:
    """Sets ``finishedCompactRev`` of the (stopped) etcd database at ``path`` to
    ``revision`` in place, so etcd opens it at that revision with everything older compacted.
    False (nothing written) when the database holds no ``finishedCompactRev`` to overwrite
    (never compacted); ``BoltError`` for a file that does not parse or a lower revision."""
    db = BoltFile(path)
    leaf = db.get(ETCD_META_BUCKET, FINISHED_COMPACT_KEY)
    if leaf is None:
        return False
    new = revision_bytes(revision)
    if len(leaf.value) != len(new):
        raise BoltError(f"{path}: finishedCompactRev is {len(leaf.value)} bytes, not 17")
    if _revision_main(leaf.value) > revision:
        raise BoltError(f"{path} is compacted at {_revision_main(leaf.value)}, past {revision}")
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, new, leaf.value_offset)
        os.fsync(fd)
    finally:
        os.close(fd)
    return True
