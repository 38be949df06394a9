"""``CNIConfigWriter``: the test node's network component, the conflist without the overlay.

The real agent's ``sampan.network.overlay.Overlay`` writes the conflist and also programs
routes and masquerade; a single test node (``tests.support.cluster``) needs only the file,
written from ``sampan.network.cni.write_conflist`` once its Node's ``spec.podCIDRs`` is set.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any, Protocol

from sampan.client import Client, ClientConfig, Informer
from sampan.client.api import NODES
from sampan.network.cni import DEFAULT_BRIDGE, CNIConfig, stop_watch_loop, write_conflist
from sampan.tasks import log_task_end

__all__ = ["CNIConfigWriter"]

log = logging.getLogger("tests.support.cni_writer")


class _FailureSink(Protocol):
    def fail(self, reason: str) -> None: ...


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
