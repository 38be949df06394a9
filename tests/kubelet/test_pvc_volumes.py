"""persistentVolumeClaim volumes in the kubelet's VolumeManager, with claims and volumes read
from a real in-process API server (as the kubelet reads them)."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest

from sampan.client import Client, NotFoundError
from sampan.client.api import PVCS, PVS
from sampan.kubelet.volumes import VolumeError, VolumeManager
from tests.support.apiserver import ApiServerHarness, api_server, client  # noqa: F401

NS = "default"


def _manager(api: Client, tmp_path: Path) -> VolumeManager:
    async def get_pvc(namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return await api.get(PVCS, name, namespace=namespace)
        except NotFoundError:
            return None

    async def get_pv(name: str) -> dict[str, Any] | None:
        try:
            return await api.get(PVS, name)
        except NotFoundError:
            return None

    async def no_tokens(*_: Any) -> dict[str, Any]:
        raise AssertionError("no token is needed for claims")

    return VolumeManager(
        tmp_path / "kubelet",
        None,
        no_tokens,
        get_pvc=get_pvc,
        get_pv=get_pv,  # type: ignore[arg-type]
    )


def _pod(claim: str, *, read_only: bool = False) -> dict[str, Any]:
    return {
        "metadata": {"name": "p", "namespace": NS, "uid": "u1"},
        "spec": {
            "volumes": [
                {"name": "d", "persistentVolumeClaim": {"claimName": claim, "readOnly": read_only}}
            ]
        },
    }


async def _bind(api: Client, claim: str, volume: dict[str, Any]) -> None:
    await api.create(PVS, volume)
    pvc = await api.create(
        PVCS,
        {
            "metadata": {"name": claim},
            "spec": {
                "storageClassName": "",
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
                "volumeName": volume["metadata"]["name"],
            },
        },
        namespace=NS,
    )
    pvc["status"] = {"phase": "Bound"}
    await api.update_status(PVCS, pvc, namespace=NS)


def _pv(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], **spec},
    }


async def test_claim_volumes(client: Client, tmp_path: Path) -> None:  # noqa: F811
    manager = _manager(client, tmp_path)
    with pytest.raises(VolumeError, match='persistentvolumeclaim "missing" not found'):
        await manager.setup(_pod("missing"), {})
    await client.create(
        PVCS,
        {
            "metadata": {"name": "pending"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1"}}},
        },
        namespace=NS,
    )
    with pytest.raises(VolumeError, match='persistentvolumeclaim "pending" is not bound'):
        await manager.setup(_pod("pending"), {})

    target = tmp_path / "storage" / "pvc-x_default_data"
    await _bind(
        client,
        "data",
        _pv("host", {"hostPath": {"path": str(target), "type": "DirectoryOrCreate"}}),
    )
    mounted = await manager.setup(_pod("data", read_only=True), {})
    assert mounted["d"].host_path == str(target)
    assert mounted["d"].read_only
    assert target.is_dir()

    local = tmp_path / "storage" / "pvc-y_default_lp"
    volume = _pv("lp", {"hostPath": {"path": str(local), "type": "DirectoryOrCreate"}})
    volume["metadata"]["annotations"] = {"pv.kubernetes.io/provisioned-by": "rancher.io/local-path"}
    await _bind(client, "lp", volume)
    await manager.setup(_pod("lp"), {})
    assert local.is_dir() and stat.S_IMODE(local.stat().st_mode) == 0o777
    assert stat.S_IMODE(target.stat().st_mode) == 0o755  # plain hostPath: upstream's 0755

    await _bind(
        client,
        "raw",
        _pv(
            "block",
            {
                "local": {"path": "/dev/null"},
                "volumeMode": "Block",
                "nodeAffinity": {
                    "required": {
                        "nodeSelectorTerms": [
                            {
                                "matchExpressions": [
                                    {
                                        "key": "kubernetes.io/hostname",
                                        "operator": "In",
                                        "values": ["n"],
                                    }
                                ]
                            }
                        ]
                    }
                },
            },
        ),
    )
    with pytest.raises(VolumeError, match="volumeMode Block: block volumes are not supported"):
        await manager.setup(_pod("raw"), {})
