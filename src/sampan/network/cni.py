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
* ``CNIConfigWriter`` is the agent component that calls it whenever the own Node's
  ``spec.podCIDRs`` (set by the node IPAM controller) appears or changes.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from sampan.client import Client, ClientConfig, Informer
from sampan.client.api import NODES
from sampan.tasks import cancel_and_wait, log_task_end

__all__ = [
    "CNI_CONFLIST_NAME",
    "CNI_VERSION",
    "DEFAULT_BRIDGE",
    "DEFAULT_NETWORK_NAME",
    "CNIConfig",
    "CNIConfigWriter",
    "render_conflist",
    "write_conflist",
]

log = logging.getLogger("sampan.network.cni")

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
    """Stop a Node-watching component (this writer, the overlay): cancel its loop and wait
    for it to end, then stop its informer, then close its clients; ``None`` parts are skipped."""
    await cancel_and_wait(task)
    if informer is not None:
        await informer.stop()
    for client in clients:
        if client is not None:
            await client.close()


class _FailureSink(Protocol):
    def fail(self, reason: str) -> None: ...


# Only tests call this: the test cluster's agents (no overlay) write the conflist with it.
class CNIConfigWriter:
    """Agent component: writes the conflist once this node's ``spec.podCIDRs`` is known.

    Watches the own Node (field selector on its name); each new pod CIDR set rewrites the
    file (atomically, only if its content changes). ``start`` returns at once: the kubelet
    waits for the runtime's NetworkReady, not for this component.
    """

    name = "network-cni"

    def __init__(
        self,
        client_config: ClientConfig,
        *,
        node_name: str,
        conf_dir: Path,
        bridge: str = DEFAULT_BRIDGE,
        ip_masq: bool = True,
        ipam_data_dir: Path | None = None,
    ) -> None:
        self.client_config = client_config
        self.node_name = node_name
        self.conf_dir = conf_dir
        self.bridge = bridge
        self.ip_masq = ip_masq
        self.ipam_data_dir = ipam_data_dir
        self.pod_cidrs: tuple[str, ...] = ()
        self._client: Client | None = None
        self._informer: Informer | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.written = asyncio.Event()

    async def start(self, ctx: _FailureSink | None = None) -> None:
        self._client = Client(self.client_config)
        self._informer = Informer(
            self._client, NODES, field_selector=f"metadata.name={self.node_name}"
        )
        self._informer.add_event_handler(
            on_add=self._on_node, on_update=lambda _old, new: self._on_node(new)
        )
        self._informer.start()
        self._task = asyncio.create_task(self._run(), name="network-cni-writer")
        self._task.add_done_callback(log_task_end)

    def _on_node(self, node: dict[str, Any]) -> None:
        spec = node.get("spec") or {}
        cidrs = tuple(spec.get("podCIDRs") or ([spec["podCIDR"]] if spec.get("podCIDR") else []))
        if cidrs and cidrs != self.pod_cidrs:
            self.pod_cidrs = cidrs
            self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            cfg = CNIConfig(
                pod_cidrs=self.pod_cidrs,
                bridge=self.bridge,
                ip_masq=self.ip_masq,
                ipam_data_dir=self.ipam_data_dir,
            )
            changed = await asyncio.to_thread(write_conflist, self.conf_dir, cfg)
            log.info(
                "network: pod CIDR %s; CNI configuration %s",
                ",".join(self.pod_cidrs),
                "written" if changed else "unchanged",
            )
            self.written.set()

    async def stop(self) -> None:
        task, informer, client = self._task, self._informer, self._client
        self._task, self._informer, self._client = None, None, None
        await stop_watch_loop(task, informer, client)
