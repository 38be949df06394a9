"""The local-path provisioner's node half: which paths a node may remove
(``sampan.api.localpath.volume_dir``) and the cleaner against a real in-process API server,
running as the agent identity ``system:sampan-agent`` (so RBAC gaps show)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from sampan.api.localpath import UnsafePath, volume_dir
from sampan.client import Client, NotFoundError
from sampan.client.api import EVENTS, PVS
from sampan.kubelet.localpath import LocalPathCleaner
from tests.support.apiserver import ApiServerHarness, api_server, client  # noqa: F401

WAIT_S = 15.0
POLL_S = 0.05


def test_volume_dir_accepts_only_pvc_dirs_inside_the_root(tmp_path: Path) -> None:
    root = tmp_path / "storage"
    root.mkdir()
    good = root / "pvc-1_default_data"
    good.mkdir()
    assert volume_dir(root, str(good)) == Path(os.path.realpath(good))
    # Not yet created is fine (nothing to remove, the volume may still go).
    assert volume_dir(root, str(root / "pvc-2_ns_c")).name == "pvc-2_ns_c"
    refused = [
        str(root / ".." / "pvc-3"),
        str(root / "pvc-4" / ".." / ".."),
        str(root),
        str(root / "other"),
        str(root / "pvc-5" / "nested"),
        "/etc",
        "relative/pvc-6",
        "",
    ]
    for path in refused:
        with pytest.raises(UnsafePath):
            volume_dir(root, path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "pvc-7_ns_link").symlink_to(outside)
    with pytest.raises(UnsafePath, match="resolves outside"):
        volume_dir(root, str(root / "pvc-7_ns_link"))


def _volume(name: str, path: str, node: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "annotations": {"pv.kubernetes.io/provisioned-by": "rancher.io/local-path"},
        },
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": "local-path",
            "hostPath": {"path": path, "type": "DirectoryOrCreate"},
            "nodeAffinity": {
                "required": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {
                                    "key": "kubernetes.io/hostname",
                                    "operator": "In",
                                    "values": [node],
                                }
                            ]
                        }
                    ]
                }
            },
        },
    }


async def _release(api: Client, name: str) -> None:
    pv = await api.get(PVS, name)
    pv["status"] = {"phase": "Released"}
    await api.update_status(PVS, pv)


async def _wait(check, what: str) -> None:
    """Bounds a wait (it times nothing)."""
    for _ in range(int(WAIT_S / POLL_S)):
        if await check():
            return
        await asyncio.sleep(POLL_S)
    raise AssertionError(f"timed out waiting for {what}")


async def test_cleaner_removes_released_volumes_of_its_node(
    api_server: ApiServerHarness,  # noqa: F811
    client: Client,  # noqa: F811
    tmp_path: Path,
) -> None:
    root = tmp_path / "storage"
    root.mkdir()
    mine = root / "pvc-a_default_data"
    mine.mkdir()
    (mine / "file").write_text("x")
    theirs = root / "pvc-b_default_data"
    theirs.mkdir()
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious").write_text("keep")
    await client.create(PVS, _volume("pvc-a", str(mine), "node-1"))
    await client.create(PVS, _volume("pvc-b", str(theirs), "node-2"))
    await client.create(PVS, _volume("pvc-evil", str(victim), "node-1"))
    config = await api_server.identity_config("system:sampan-agent")
    cleaner = LocalPathCleaner(config, node_name="node-1", storage_root=root)
    await cleaner.start()
    try:
        for name in ("pvc-a", "pvc-b", "pvc-evil"):
            pv = await client.get(PVS, name)
            pv["metadata"]["finalizers"] = []
            await client.update(PVS, pv)
            await _release(client, name)

        async def gone() -> bool:
            try:
                await client.get(PVS, "pvc-a")
            except NotFoundError:
                return True
            return False

        await _wait(gone, "pvc-a deleted")
        assert not mine.exists()

        async def refused() -> bool:
            events = (await client.list(EVENTS, namespace="default"))["items"]
            return any(
                e["reason"] == "VolumeFailedDelete"
                and e["involvedObject"]["name"] == "pvc-evil"
                and "is not directly inside the storage root" in e["message"]
                for e in events
            )

        await _wait(refused, "pvc-evil refused")
    finally:
        await cleaner.stop()
    assert theirs.is_dir()  # another node's volume
    assert (victim / "precious").read_text() == "keep"
    assert (await client.get(PVS, "pvc-b"))["metadata"]["name"] == "pvc-b"
    assert (await client.get(PVS, "pvc-evil"))["metadata"]["name"] == "pvc-evil"
