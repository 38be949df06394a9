"""Datastore snapshots from the server's side: the schedule, retention, the records users see
through the API, and ``--cluster-reset --cluster-reset-restore-path``.

Records: the ConfigMap ``kube-system/sampan-etcd-snapshots``, one data key per snapshot file
(the file name), its value a JSON object ``{"name", "location": "file://...", "nodeName",
"createdAt", "size", "compressed", "status"}`` — the form K3s used (``k3s-etcd-snapshots``)
before it moved to its ``ETCDSnapshotFile`` CRD. A ConfigMap rather than a CRD: every client
reads it with no schema to install, version and keep served (``kubectl -n kube-system get cm
sampan-etcd-snapshots -o yaml``), and a record is a few hundred bytes, so the 1 MiB object
limit holds thousands of snapshots. Each node owns the entries with its ``nodeName``:
``sync_records`` makes them match the files in its snapshot directory (stale entries of this
node removed, new files added), never touching another node's entries; writes use the
object's resourceVersion and retry on conflicts.

``SnapshotComponent`` (unless ``--etcd-disable-snapshots``): at start and every
``SNAPSHOT_SYNC_INTERVAL_S`` it syncs the records (so ``sampan etcd-snapshot save|delete|prune``
done while the API was down show up); at every ``--etcd-snapshot-schedule-cron`` time it takes
an ``etcd-snapshot-<node>-<ts>`` snapshot, prunes to ``--etcd-snapshot-retention`` and syncs.
A failed snapshot is logged and retried at the next scheduled time.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sampan.api import times
from sampan.config import Config, ConfigError
from sampan.datastore.snapshot import (
    SCHEDULED_NAME,
    SnapshotError,
    SnapshotFile,
    list_snapshots,
    prune_snapshots,
    restore_snapshot,
    save_snapshot,
    snapshot_backend,
)
from sampan.supervisor.supervisor import ComponentContext

__all__ = [
    "RECORDS_CONFIGMAP",
    "RECORDS_NAMESPACE",
    "SnapshotComponent",
    "backend_for",
    "check_snapshot_options",
    "cluster_reset",
    "sync_records",
]

log = logging.getLogger("sampan.snapshots")

RECORDS_NAMESPACE = "kube-system"
RECORDS_CONFIGMAP = "sampan-etcd-snapshots"
SNAPSHOT_SYNC_INTERVAL_S = 60.0
UPDATE_ATTEMPTS = 5


def _record(node: str, snap: SnapshotFile) -> str:
    created = times.rfc3339(times.from_unix(snap.created))
    return json.dumps(
        {
            "name": snap.name,
            "location": snap.path.resolve().as_uri(),
            "nodeName": node,
            "createdAt": created,
            "size": snap.size,
            "compressed": snap.compressed,
            "status": "successful",
        },
        sort_keys=True,
    )


def _owner(value: str) -> str | None:
    try:
        doc = json.loads(value)
    except ValueError:
        return None
    return doc.get("nodeName") if isinstance(doc, dict) else None


async def sync_records(client: Any, node: str, directory: Path) -> bool:
    """Make this node's entries in the records ConfigMap match the files in ``directory``.
    True when something was written. ``ClientError`` when the API refuses."""
    from sampan.client import AlreadyExistsError, ConflictError, NotFoundError
    from sampan.client.api import CONFIGMAPS

    files = await asyncio.to_thread(list_snapshots, directory)
    wanted = {snap.name: _record(node, snap) for snap in files}
    for _ in range(UPDATE_ATTEMPTS):
        try:
            current = await client.get(CONFIGMAPS, RECORDS_CONFIGMAP, namespace=RECORDS_NAMESPACE)
        except NotFoundError:
            if not wanted:
                return False
            body = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": RECORDS_CONFIGMAP, "namespace": RECORDS_NAMESPACE},
                "data": wanted,
            }
            try:
                await client.create(CONFIGMAPS, body, namespace=RECORDS_NAMESPACE)
                return True
            except AlreadyExistsError:
                continue
        data = dict(current.get("data") or {})
        merged = {k: v for k, v in data.items() if _owner(v) != node}
        merged.update(wanted)
        if merged == data:
            return False
        current["data"] = merged
        try:
            await client.update(CONFIGMAPS, current, namespace=RECORDS_NAMESPACE)
            return True
        except (ConflictError, NotFoundError):
            continue
    raise SnapshotError("the snapshot records kept changing; try again")


def check_snapshot_options(config: Config) -> Any:
    """The parsed schedule; ``ConfigError`` for a bad schedule or retention."""
    from sampan.api.cron import CronError, parse_schedule

    if config.etcd_snapshot_retention < 1:
        raise ConfigError("etcd-snapshot-retention: must be at least 1")
    try:
        return parse_schedule(config.etcd_snapshot_schedule_cron)
    except CronError as exc:
        raise ConfigError(f"etcd-snapshot-schedule-cron: {exc}") from None


class SnapshotComponent:
    """Scheduled snapshots and the records (see the module docstring)."""

    name = "etcd-snapshots"

    def __init__(self, client_config: Any, config: Config, node: str) -> None:
        self._client_config = client_config
        self._config = config
        self._node = node
        self._schedule = check_snapshot_options(config)
        self._client: Any = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, ctx: ComponentContext) -> None:
        from sampan.client import Client

        del ctx
        self._client = Client(self._client_config)
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._sync_loop(), name="etcd-snapshots:sync"),
            loop.create_task(self._schedule_loop(), name="etcd-snapshots:schedule"),
        ]

    async def _sync(self) -> None:
        from sampan.client import ClientError

        try:
            if await sync_records(self._client, self._node, self._config.snapshot_dir):
                log.info("snapshot records updated")
        except (ClientError, SnapshotError) as exc:
            log.warning("cannot update the snapshot records: %s", exc)

    async def _sync_loop(self) -> None:
        while True:
            await self._sync()
            await asyncio.sleep(SNAPSHOT_SYNC_INTERVAL_S)

    async def _schedule_loop(self) -> None:
        config = self._config
        while True:
            now = datetime.now(UTC)
            due = self._schedule.next_after(now)
            await asyncio.sleep(max(0.0, (due - now).total_seconds()))
            try:
                snap = await asyncio.to_thread(self._take)
                log.info("snapshot %s saved (%d bytes)", snap.path, snap.size)
                pruned = await asyncio.to_thread(
                    prune_snapshots,
                    config.snapshot_dir,
                    name=SCHEDULED_NAME,
                    node=self._node,
                    retention=config.etcd_snapshot_retention,
                )
                for name in pruned:
                    log.info(
                        "snapshot %s removed (retention %d)", name, config.etcd_snapshot_retention
                    )
            except (SnapshotError, OSError) as exc:
                log.error("scheduled snapshot failed: %s", exc)
            await self._sync()

    def _take(self) -> SnapshotFile:
        config = self._config
        backend = backend_for(config)
        return save_snapshot(
            backend,
            config.snapshot_dir,
            name=SCHEDULED_NAME,
            node=self._node,
            compress=config.etcd_snapshot_compress,
        )

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._client is not None:
            await self._client.close()
            self._client = None


def backend_for(config: Config) -> Any:
    """The snapshot backend of this server's datastore: its embedded etcd member, else by
    ``--datastore-endpoint`` (SQLite). ``SnapshotError`` when there is none."""
    from sampan.supervisor.etcd import etcd_snapshot_backend, uses_embedded_etcd

    if uses_embedded_etcd(config):
        return etcd_snapshot_backend(config)
    return snapshot_backend(config.datastore_endpoint.reveal(), config.data_dir)


def cluster_reset(config: Config) -> str:
    """``--cluster-reset``: restore the datastore from ``--cluster-reset-restore-path`` (the
    server is not running), or with embedded etcd and no path, make this member the only one
    (``--force-new-cluster``). Returns the line to log; ``SnapshotError`` (nothing changed)
    when the file is not a complete snapshot. Blocking."""
    from sampan.supervisor.etcd import force_new_cluster, uses_embedded_etcd

    embedded = uses_embedded_etcd(config)
    if embedded and not config.cluster_reset_restore_path:
        try:
            return asyncio.run(force_new_cluster(config))
        except RuntimeError as exc:
            raise SnapshotError(str(exc).splitlines()[0]) from None
    if not config.cluster_reset_restore_path:
        raise SnapshotError(
            "--cluster-reset with the SQLite datastore needs --cluster-reset-restore-path: a "
            "single-server datastore has no members to reset"
        )
    backend = backend_for(config)
    path = Path(config.cluster_reset_restore_path)
    info = restore_snapshot(backend, path)
    if embedded:
        return (
            f"etcd restored from {path} as a one-member cluster ({info.keys} keys at revision "
            f"{info.revision}); restart without --cluster-reset, then wipe and rejoin the "
            "other servers"
        )
    return (
        f"datastore restored from {path} ({info.keys} keys; revisions continue after "
        f"{info.revision}); restart without --cluster-reset"
    )
