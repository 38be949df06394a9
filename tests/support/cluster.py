"""A whole node for tests: an in-process API server plus a real kubelet on a private containerd.

``NodeHarness.start()`` starts the API server (SQLite in a temp dir), issues the kubelet its
``system:node:<name>`` client certificate, drops the busybox test image into the agent's image
directory, starts ``Kubelet`` with per-session host names (cgroup root, CNI bridge, pod
subnet; no masquerade so no iptables rules), and sets the Node's pod CIDR as the node IPAM
controller would; ``tests.support.cni_writer.CNIConfigWriter`` then writes the CNI
configuration. ``stop()`` always leaves the host clean: pods' sandboxes removed through
CRI, containerd stopped, shims killed, mounts under the data dir unmounted, cgroups and the
bridge deleted, temp dirs removed.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from sampan.client import Client, ClientConfig, NotFoundError
from sampan.client.api import CONFIGMAPS, NAMESPACES, NODES, PODS, SERVICEACCOUNTS
from sampan.kubelet.kubelet import Kubelet
from sampan.kubelet.options import KubeletOptions
from sampan.pki.cluster import ensure_client_kubeconfig
from tests.client.conftest import ApiServerHarness
from tests.kubelet.runtime.conftest import HostNames, cleanup_host, remove_all_sandboxes
from tests.support.cni_writer import CNIConfigWriter
from tests.support.images import busybox_archive
from tests.support.poll import eventually as wait_for

__all__ = ["BUSYBOX", "NodeHarness", "container_log_path", "wait_for"]

log = logging.getLogger("tests.support.cluster")

BUSYBOX = "docker.io/library/busybox:1.36"
CLEANUP_TIMEOUT_S = 60.0


class NodeHarness:
    """API server + kubelet + containerd; see the module docstring."""

    def __init__(self, image_cache_dir: Path, **kubelet_overrides: Any) -> None:
        self.image_cache_dir = image_cache_dir
        self.root = Path(tempfile.mkdtemp(prefix="sampan-node-"))
        self.names = HostNames.new()
        self.node_name = f"node-{secrets.token_hex(3)}"
        self.api = ApiServerHarness(self.root / "api")
        self.data_dir = self.root / "data"
        self.kubelet: Kubelet | None = None
        self.network: CNIConfigWriter | None = None
        self.client: Client | None = None
        self.kubelet_overrides = kubelet_overrides

    @property
    def options(self) -> KubeletOptions:
        values: dict[str, Any] = {
            "node_name": self.node_name,
            "data_dir": self.data_dir,
            "node_ips": ("127.0.0.1",),
            "kubelet_args": {"cgroup-root": self.names.cgroup_root},
            "pod_logs_dir": self.root / "pod-logs",
            "crash_backoff_initial_s": 1.0,
            "crash_backoff_max_s": 4.0,
            "static_pod_poll_interval_s": 0.5,
            "image_poll_interval_s": 0.5,
        }
        values.update(self.kubelet_overrides)
        return KubeletOptions(**values)

    def kubelet_config(self) -> ClientConfig:
        assert self.api.server is not None
        path = self.root / "kubelet.kubeconfig"
        ensure_client_kubeconfig(
            self.api.server.pki,
            name=f"kubelet-{self.node_name}",
            common_name=f"system:node:{self.node_name}",
            organizations=("system:nodes",),
            path=path,
            server_url=self.api.url,
        )
        return ClientConfig.from_kubeconfig(path)

    async def start(self) -> None:
        self.root.joinpath("api").mkdir(parents=True, exist_ok=True)
        await self.api.start()
        self.client = self.api.new_client()
        archive = await asyncio.to_thread(busybox_archive, self.image_cache_dir)
        images_dir = self.data_dir / "agent" / "images"
        images_dir.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(shutil.copy, archive, images_dir / archive.name)
        config = await asyncio.to_thread(self.kubelet_config)
        await self.start_kubelet(config)
        assert self.kubelet is not None
        self.network = CNIConfigWriter(
            config,
            node_name=self.node_name,
            conf_dir=self.kubelet.cni_conf_dir,
            bridge=self.names.bridge,
            ip_masq=False,
            ipam_data_dir=self.data_dir / "agent" / "cni-ipam",
        )
        await self.network.start()
        # What the node IPAM controller does.
        await self.client.patch(
            NODES,
            self.node_name,
            {"spec": {"podCIDR": self.names.pod_subnet, "podCIDRs": [self.names.pod_subnet]}},
        )

    async def start_kubelet(self, config: ClientConfig | None = None) -> Kubelet:
        config = config or await asyncio.to_thread(self.kubelet_config)
        self.kubelet = Kubelet(config, self.options)
        await self.kubelet.start()
        return self.kubelet

    async def stop_kubelet(self) -> None:
        """Stop the kubelet the way an agent restart does: containers keep running."""
        if self.kubelet is not None:
            await self.kubelet.stop()
            self.kubelet = None

    async def namespace(self, name: str | None = None) -> str:
        assert self.client is not None
        name = name or f"t-{secrets.token_hex(4)}"
        await self.client.create(NAMESPACES, {"metadata": {"name": name}})
        # What the serviceaccount and root-ca-cert-publisher controllers would add.
        await self.client.create(SERVICEACCOUNTS, {"metadata": {"name": "default"}}, namespace=name)
        assert self.api.server is not None
        ca_pem = self.api.server.pki.ca_pem
        await self.client.create(
            CONFIGMAPS,
            {
                "metadata": {"name": "kube-root-ca.crt"},
                "data": {"ca.crt": ca_pem.decode() if isinstance(ca_pem, bytes) else ca_pem},
            },
            namespace=name,
        )
        return name

    async def create_pod(self, namespace: str, pod: dict[str, Any]) -> dict[str, Any]:
        assert self.client is not None
        body = {"apiVersion": "v1", "kind": "Pod", **pod}
        body.setdefault("spec", {})["nodeName"] = self.node_name
        return await self.client.create(PODS, body, namespace=namespace)

    async def get_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        assert self.client is not None
        try:
            return await self.client.get(PODS, name, namespace=namespace)
        except NotFoundError:
            return None

    async def stop(self) -> None:
        started = time.monotonic()
        kubelet = self.kubelet
        try:
            if kubelet is not None:
                await kubelet.stop_pod_sync()
                if kubelet.runtime_component.connection is not None:
                    try:
                        await asyncio.wait_for(
                            remove_all_sandboxes(kubelet.runtime_component), CLEANUP_TIMEOUT_S
                        )
                    except Exception:
                        log.exception("could not remove the test sandboxes through CRI")
                await kubelet.stop()
                self.kubelet = None
            if self.network is not None:
                await self.network.stop()
            if self.client is not None:
                await self.client.close()
            await self.api.stop()
        finally:
            socket_path = self.data_dir / "agent" / "run" / "containerd" / "containerd.sock"
            await asyncio.to_thread(cleanup_host, self.data_dir, socket_path, self.names)
            await asyncio.to_thread(shutil.rmtree, self.root, True)
            log.info("node harness cleanup took %.1fs", time.monotonic() - started)


async def container_log_path(
    kubelet: Kubelet, namespace: str, pod: str, container: str, *, previous: bool = False
) -> Path | None:
    """The CRI log file of the container's current (or previous) run, as the runtime reports
    it (the kubelet's log server finds it through ``sampan.kubelet.server.lookup``)."""
    cid = await kubelet.pod_container_id(namespace, pod, container, previous=previous)
    if cid is None:
        return None
    status = await kubelet.runtime.container_status(cid)
    return Path(status.status.log_path) if status.status.log_path else None
