"""Scheduled snapshots against a real API server: taken on the cron schedule, pruned to the
retention, and recorded in ``kube-system/sampan-etcd-snapshots`` (this node's entries only)."""

from __future__ import annotations

import asyncio
import json

from sampan.client import Client
from sampan.client.api import CONFIGMAPS
from sampan.config import Config
from sampan.supervisor.snapshots import (
    RECORDS_CONFIGMAP,
    RECORDS_NAMESPACE,
    SnapshotComponent,
    sync_records,
)
from tests.support.apiserver import ApiServerHarness, api_server

__all__ = ["api_server"]

WAIT_S = 90.0


async def _records(client: Client) -> dict[str, dict]:
    cm = await client.get(CONFIGMAPS, RECORDS_CONFIGMAP, namespace=RECORDS_NAMESPACE)
    return {k: json.loads(v) for k, v in (cm.get("data") or {}).items()}


async def test_schedule_retention_and_records(api_server: ApiServerHarness) -> None:
    config = Config(
        command="server",
        data_dir=api_server.data_dir,
        etcd_snapshot_schedule_cron="@every 1s",
        etcd_snapshot_retention=2,
    )
    directory = api_server.data_dir / "server" / "db" / "snapshots"
    async with api_server.new_client() as client:
        # Another node's record is left alone.
        other = {"nodeName": "node-b", "name": "etcd-snapshot-node-b-1", "status": "successful"}
        await client.create(
            CONFIGMAPS,
            {
                "metadata": {"name": RECORDS_CONFIGMAP},
                "data": {"etcd-snapshot-node-b-1": json.dumps(other)},
            },
            namespace=RECORDS_NAMESPACE,
        )
        component = SnapshotComponent(api_server.client_config(), config, "node-a")
        await component.start(None)  # type: ignore[arg-type]
        seen: set[str] = set()
        try:
            async with asyncio.timeout(WAIT_S):
                while True:
                    names = sorted(p.name for p in directory.glob("etcd-snapshot-node-a-*"))
                    seen.update(names)
                    records = await _records(client)
                    mine = sorted(k for k, v in records.items() if v["nodeName"] == "node-a")
                    # More taken than kept: pruned to the retention; records in step.
                    if len(seen) >= 3 and len(names) == 2 and mine == names:
                        break
                    await asyncio.sleep(0.2)
        finally:
            await component.stop()
        records = await _records(client)
        assert records["etcd-snapshot-node-b-1"] == other
        entry = records[names[0]]
        assert entry["location"] == (directory / names[0]).resolve().as_uri()
        assert entry["size"] == (directory / names[0]).stat().st_size
        # A file deleted by hand disappears from the records at the next sync.
        (directory / names[0]).unlink()
        assert await sync_records(client, "node-a", directory)
        assert names[0] not in await _records(client)
