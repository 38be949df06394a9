"""The single-node CNI network configuration the agent's containerd uses for pods.

This module owns one file: ``<cni-conf-dir>/10-sampan.conflist``, a CNI plugin chain of
``bridge`` (a Linux bridge, ``cni0`` by default, as the pods' gateway, with masquerade for
traffic leaving the pod subnet), ``host-local`` IPAM on the node's ``spec.podCIDR``,
``portmap`` (``hostPort``) and ``loopback``. containerd's CRI plugin reads the directory and
calls the plugins for every sandbox.

Invariants:

* the file is written atomically (temporary file in the same directory, then ``rename``), so
  containerd never reads half a configuration;
* writing the same content again does not touch the file (containerd reloads on change);
* ``write_conflist`` is blocking file I/O: call it from a thread (``asyncio.to_thread``);
  the agent's network component (``sampan.network.overlay.Overlay``) calls it whenever the
  own Node's ``spec.podCIDRs`` (set by the node IPAM controller) appears or changes.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sampan.client import Client, Informer
from sampan.tasks import cancel_and_wait

__all__ = [
    "CNI_CONFLIST_NAME",
    "CNI_VERSION",
    "DEFAULT_BRIDGE",
    "DEFAULT_NETWORK_NAME",
    "CNIConfig",
    "render_conflist",
    "write_conflist",
]


CNI_CONFLIST_NAME = "10-sampan.conflist"
CNI_VERSION = "1.0.0"
DEFAULT_BRIDGE = "cni0"
DEFAULT_NETWORK_NAME = "sampan"
MAX_INTERFACE_NAME_CHARS = 15
"""IFNAMSIZ - 1: the kernel refuses longer interface names."""


@dataclass(frozen=True, kw_only=True)
class CNIConfig:
    """What the conflist says: the pod subnet(s) and the bridge that serves them.

    ``pod_cidrs`` holds one CIDR per IP family (``spec.podCIDRs``); ``ipam_data_dir`` is where
    host-local keeps its leases (None: the plugin's default, /var/lib/cni/networks).
    """

    pod_cidrs: tuple[str, ...]
    bridge: str = DEFAULT_BRIDGE
    network_name: str = DEFAULT_NETWORK_NAME
    ip_masq: bool = True
    hairpin: bool = True
    mtu: int | None = None
    ipam_data_dir: Path | None = None

    def __post_init__(self) -> None:
        if not self.pod_cidrs:
            raise ValueError("CNIConfig needs at least one pod CIDR")
        for cidr in self.pod_cidrs:
            ipaddress.ip_network(cidr, strict=True)  # ValueError for garbage
        if not 0 < len(self.bridge) <= MAX_INTERFACE_NAME_CHARS:
            raise ValueError(f"bridge name {self.bridge!r} must be 1-15 characters")


def render_conflist(cfg: CNIConfig) -> dict[str, Any]:
    """The conflist as a JSON-ready dict; pure."""
    ranges = [[{"subnet": cidr}] for cidr in cfg.pod_cidrs]
    routes = [
        {"dst": "0.0.0.0/0" if ipaddress.ip_network(cidr).version == 4 else "::/0"}
        for cidr in cfg.pod_cidrs
    ]
    ipam: dict[str, Any] = {"type": "host-local", "ranges": ranges, "routes": routes}
    if cfg.ipam_data_dir is not None:
        ipam["dataDir"] = str(cfg.ipam_data_dir)
    bridge: dict[str, Any] = {
        "type": "bridge",
        "bridge": cfg.bridge,
        "isGateway": True,
        "ipMasq": cfg.ip_masq,
        "hairpinMode": cfg.hairpin,
        "ipam": ipam,
    }
    if cfg.mtu is not None:
        bridge["mtu"] = cfg.mtu
    return {
        "cniVersion": CNI_VERSION,
        "name": cfg.network_name,
        "plugins": [
            bridge,
            {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
            {"type": "loopback"},
        ],
    }


def write_conflist(conf_dir: Path, cfg: CNIConfig) -> bool:
    """Write the conflist into ``conf_dir`` atomically; True if the file changed. Blocking."""
    conf_dir.mkdir(parents=True, exist_ok=True)
    target = conf_dir / CNI_CONFLIST_NAME
    text = json.dumps(render_conflist(cfg), indent=2, sort_keys=True) + "\n"
    try:
        if target.read_text() == text:
            return False
    except FileNotFoundError:
        pass
    tmp = conf_dir / f".{CNI_CONFLIST_NAME}.tmp"
    with open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, target)
    return True


async def stop_watch_loop(
    task: asyncio.Task[None] | None, informer: Informer | None, *clients: Client | None
) -> None:
    """Stop a Node-watching component (the overlay): cancel its loop and wait for it to end,
    then stop its informer, then close its clients; ``None`` parts are skipped."""
    await cancel_and_wait(task)
    if informer is not None:
        await informer.stop()
    for client in clients:
        if client is not None:
            await client.close()
