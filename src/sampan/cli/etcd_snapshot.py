"""``sampan etcd-snapshot``: snapshots of the datastore on this server, as ``k3s etcd-snapshot``.

* ``save [--name on-demand] [--etcd-snapshot-dir DIR] [--etcd-snapshot-compress]``: a
  consistent snapshot ``<name>-<node>-<unix ts>`` (``.zip`` compressed) of the datastore while
  the server keeps running (SQLite's online backup API; etcd's Maintenance.Snapshot on an
  embedded-etcd server), printed with its path;
* ``ls`` (``list``): the snapshot files, oldest first: ``Name Location Size Created``;
* ``delete NAME...``: remove snapshot files;
* ``prune [--name etcd-snapshot] [--etcd-snapshot-retention N]``: keep the newest ``N`` of
  ``<name>-<node>-*`` (default 5, K3s's), remove the older ones.

After ``save``, ``delete`` and ``prune`` the records ConfigMap (``kube-system/
sampan-etcd-snapshots``, see ``sampan.supervisor.snapshots``) is updated through the admin
kubeconfig; when the API cannot be reached that is said on stderr and the running server
catches up within a minute. Options come from the server's configuration (data dir, datastore
endpoint, snapshot dir, node name) like ``sampan server``'s; every error is one line.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from sampan.api import times
from sampan.config import ConfigError, load_config

__all__ = ["add_etcd_snapshot_parser", "run_etcd_snapshot"]

EXIT_OK = 0
EXIT_FAILED = 1
_CONFIG_KEYS = (
    "config",
    "data_dir",
    "etcd_snapshot_dir",
    "etcd_snapshot_compress",
    "etcd_snapshot_retention",
    "node_name",
    "datastore_endpoint",
    "etcd_client_port",
    "etcd_peer_port",
)


def add_etcd_snapshot_parser(sub: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    text = "Save, list, delete and prune datastore snapshots"
    cmd = sub.add_parser("etcd-snapshot", help=text, description=text)
    common = argparse.ArgumentParser(add_help=False)
    s = argparse.SUPPRESS
    common.add_argument("--config", "-c", default=s, help="configuration file")
    common.add_argument("--data-dir", "-d", default=s, help="data dir")
    common.add_argument("--node-name", default=s, help="node name (default: the host name)")
    common.add_argument(
        "--datastore-endpoint", default=s, help="the server's datastore (default: SQLite)"
    )
    common.add_argument(
        "--etcd-client-port", default=s, help="the embedded etcd's client port (2379)"
    )
    common.add_argument("--etcd-peer-port", default=s, help="the embedded etcd's peer port (2380)")
    common.add_argument(
        "--etcd-snapshot-dir",
        "--dir",
        dest="etcd_snapshot_dir",
        default=s,
        help="directory of snapshots (default: <data-dir>/server/db/snapshots)",
    )
    common.add_argument(
        "--kubeconfig",
        default=None,
        help="admin kubeconfig for the records (default: the server's)",
    )
    verbs = cmd.add_subparsers(dest="snapshot_command", metavar="VERB", parser_class=parser_class)
    save = verbs.add_parser("save", parents=[common], help="Take a snapshot now")
    save.add_argument("--name", default="on-demand", help="snapshot name prefix (on-demand)")
    save.add_argument(
        "--etcd-snapshot-compress",
        "--compress",
        dest="etcd_snapshot_compress",
        action="store_const",
        const="true",
        default=s,
        help="compress the snapshot (zip)",
    )
    for verb in ("ls", "list"):
        verbs.add_parser(verb, parents=[common], help="List the snapshots")
    delete = verbs.add_parser("delete", parents=[common], help="Delete snapshots")
    delete.add_argument("names", nargs="+", metavar="NAME")
    prune = verbs.add_parser("prune", parents=[common], help="Keep only the newest snapshots")
    prune.add_argument("--name", default="on-demand", help="snapshot name prefix (on-demand)")
    prune.add_argument(
        "--etcd-snapshot-retention",
        "--snapshot-retention",
        dest="etcd_snapshot_retention",
        default=s,
        help="snapshots to keep (default 5)",
    )


def run_etcd_snapshot(ns: argparse.Namespace) -> int:
    from sampan.datastore.snapshot import (
        SnapshotError,
        delete_snapshots,
        list_snapshots,
        prune_snapshots,
        save_snapshot,
    )
    from sampan.supervisor.agent import node_name
    from sampan.supervisor.snapshots import backend_for

    verb = getattr(ns, "snapshot_command", None)
    if verb is None:
        print("sampan etcd-snapshot: a verb is required: save, ls, delete, prune", file=sys.stderr)
        return EXIT_FAILED
    flags = {k: getattr(ns, k) for k in _CONFIG_KEYS if hasattr(ns, k)}
    try:
        config = load_config("server", flags)
        directory = config.snapshot_dir
        node = node_name(config)
        if verb in ("ls", "list"):
            print(f"{'Name':<48} {'Location':<72} {'Size':>10} Created")
            for snap in list_snapshots(directory):
                created = times.rfc3339(times.from_unix(snap.created))
                location = snap.path.resolve().as_uri()
                print(f"{snap.name:<48} {location:<72} {snap.size:>10} {created}")
            return EXIT_OK
        if verb == "save":
            backend = backend_for(config)
            snap = save_snapshot(
                backend,
                directory,
                name=ns.name,
                node=node,
                compress=config.etcd_snapshot_compress,
            )
            print(f"Snapshot {snap.name} saved at {snap.path}")
        elif verb == "delete":
            for name in delete_snapshots(directory, ns.names):
                print(f"Removing snapshot {name}")
        else:
            for name in prune_snapshots(
                directory, name=ns.name, node=node, retention=config.etcd_snapshot_retention
            ):
                print(f"Removing snapshot {name}")
    except (SnapshotError, ConfigError, OSError) as exc:
        print(f"sampan etcd-snapshot {verb}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    kubeconfig = Path(ns.kubeconfig) if ns.kubeconfig else config.write_kubeconfig
    _update_records(kubeconfig, node, directory)
    return EXIT_OK


def _update_records(kubeconfig: Path, node: str, directory: Path) -> None:
    """Best effort: the running server's sync loop catches up when this fails."""
    from sampan.client import ClientConfig, ClientError
    from sampan.datastore.snapshot import SnapshotError

    try:
        client_config = ClientConfig.from_kubeconfig(kubeconfig)
        asyncio.run(_sync(client_config, node, directory))
    except (ClientError, SnapshotError, OSError, ValueError) as exc:
        print(
            f"note: snapshot records not updated now ({str(exc).splitlines()[0]}); the server "
            "updates them when it runs",
            file=sys.stderr,
        )


async def _sync(client_config: Any, node: str, directory: Path) -> None:
    from sampan.client import Client
    from sampan.supervisor.snapshots import sync_records

    async with Client(client_config) as client:
        await sync_records(client, node, directory)
