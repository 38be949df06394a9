"""etcd snapshots restored with ``EtcdSnapshots`` never move revisions backwards: the restored
member opens above every revision it handed out before (and above the snapshot's), with all
older revisions compacted, so a client holding a later resourceVersion relists instead of
missing writes. Against a private Debian etcd 3.4 (never a mock)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from sampan.datastore import CompactedError
from sampan.datastore.bbolt import BoltError, BoltFile, etcd_revisions
from sampan.datastore.etcd import EtcdBackend
from sampan.datastore.etcd_snapshot import EtcdSnapshots
from sampan.datastore.snapshot import REVISION_BUMP
from tests.support.etcd import EtcdServer, start_etcd

pytestmark = pytest.mark.etcd

P = "/registry/things/"
VALUE = b"x" * 300


def _snapshots(server: EtcdServer) -> EtcdSnapshots:
    from sampan.datastore.etcd import EtcdTLS

    return EtcdSnapshots(
        server.endpoint,
        EtcdTLS(),
        data_dir=server.data_dir,
        member_name="test",
        peer_url=f"http://127.0.0.1:{server.peer_port}",
    )


async def _write(server: EtcdServer, first: int, count: int, *, compact: bool = False) -> int:
    store = EtcdBackend(server.endpoint, auto_compact=False)
    await store.start()
    try:
        for i in range(first, first + count):
            await store.create(f"{P}{i:06d}", VALUE)
        if compact:
            await store.compact(await store.current_revision() - 10)
        return await store.current_revision()
    finally:
        await store.close()


@pytest.mark.parametrize("compacted_before", [True, False], ids=["compacted", "never-compacted"])
async def test_a_restored_member_continues_above_every_revision_it_handed_out(
    tmp_path: Path, compacted_before: bool
) -> None:
    with start_etcd() as server:
        # Enough keys for a key bucket several pages deep.
        snap_revision = await _write(server, 0, 1500, compact=compacted_before)
        snapshots = _snapshots(server)
        snapshot = tmp_path / "snap.db"
        await asyncio.to_thread(snapshots.save, snapshot)
        later = await _write(server, 1500, 300)  # writes the snapshot does not hold
        await asyncio.to_thread(server.stop)
        db = server.data_dir / "member" / "snap" / "db"
        assert etcd_revisions(db)[0] <= later  # the backend may trail etcd's log a little

        info = await asyncio.to_thread(snapshots.restore, snapshot)
        assert info.revision == max(etcd_revisions(snapshot)[0], later) + REVISION_BUMP
        assert info.revision > later > snap_revision
        assert etcd_revisions(db) == (info.revision, info.revision)
        assert list(server.data_dir.parent.glob(f"{server.data_dir.name}-old-*"))

        await asyncio.to_thread(server.start, same_ports=True)
        store = EtcdBackend(server.endpoint, auto_compact=False)
        await store.start()
        try:
            assert await store.current_revision() == info.revision
            assert await store.compact_revision() == info.revision
            listed = await store.list(P)
            assert len(listed.items) == 1500  # the snapshot's keys, with their revisions
            assert max(kv.mod_revision for kv in listed.items) <= snap_revision
            with pytest.raises(CompactedError):
                await anext(store.watch(P, later))
            watch = store.watch(P, info.revision + 1)
            written = await store.create(P + "after", VALUE)
            assert written == info.revision + 1
            batch = await asyncio.wait_for(anext(watch), 30)
            assert [(e.kv.key, e.revision) for e in batch] == [(P + "after", written)]
            await watch.aclose()
        finally:
            await store.close()


def test_a_file_that_is_not_bbolt_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "db"
    bad.write_bytes(b"\0" * 8192)
    with pytest.raises(BoltError, match="not a bbolt database"):
        BoltFile(bad)


async def test_a_restore_onto_a_machine_without_a_member_bumps_the_snapshot(
    tmp_path: Path,
) -> None:
    with start_etcd() as server:
        await _write(server, 0, 20)
        snapshot = tmp_path / "snap.db"
        await asyncio.to_thread(_snapshots(server).save, snapshot)
        await asyncio.to_thread(server.stop)
        shutil.rmtree(server.data_dir)
        info = await asyncio.to_thread(_snapshots(server).restore, snapshot)
        assert info.revision == etcd_revisions(snapshot)[0] + REVISION_BUMP
        await asyncio.to_thread(server.start, same_ports=True)
        store = EtcdBackend(server.endpoint, auto_compact=False)
        await store.start()
        try:
            assert await store.current_revision() == info.revision
            assert len((await store.list(P)).items) == 20
        finally:
            await store.close()
