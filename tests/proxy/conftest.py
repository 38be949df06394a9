"""Fixtures for proxy tests: an in-process API server (with component identities) and a
private network namespace playing the node, with a "pod" veth address 10.42.0.5 and a route
to the service CIDR. Nothing outside the namespace is touched; it is deleted at the end."""

from __future__ import annotations

import asyncio
import ctypes
import itertools
import os
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from sampan.apiserver import APIServer, APIServerOptions
from sampan.client import Client, ClientConfig
from sampan.datastore import open_backend
from sampan.pki import ensure_client_kubeconfig

T = TypeVar("T")
NETNS_DIR = Path("/run/netns")
_counter = itertools.count()


def sh(*argv: str, check: bool = True, stdin: str | None = None) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, check=False, input=stdin)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {result.stderr.strip()}")
    return result.stdout


def _enter_netns(path: Path) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, 0x40000000) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
    finally:
        os.close(fd)


class ApiServerHarness:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.kubeconfig = data_dir / "admin.kubeconfig"
        self.server: APIServer | None = None
        self.backend: Any = None

    async def start(self) -> None:
        self.backend = open_backend("", self.data_dir)
        await self.backend.start()
        options = APIServerOptions(
            tls_dir=self.data_dir / "server" / "tls",
            hostname="localhost",
            node_ips=("127.0.0.1",),
            bind_address="127.0.0.1",
            port=0,
            kubeconfig_path=self.kubeconfig,
        )
        self.server = APIServer(options, self.backend)
        await self.server.start()

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()
        if self.backend is not None:
            await self.backend.close()

    async def identity_config(self, user: str) -> ClientConfig:
        assert self.server is not None
        path = self.data_dir / f"{user.replace(':', '-')}.kubeconfig"
        await asyncio.to_thread(
            ensure_client_kubeconfig,
            self.server.pki,
            name=user.replace(":", "-"),
            common_name=user,
            path=path,
            server_url=self.server.url,
        )
        return ClientConfig.from_kubeconfig(path)


@pytest.fixture
async def api_server(tmp_path: Path) -> AsyncIterator[ApiServerHarness]:
    harness = ApiServerHarness(tmp_path)
    await harness.start()
    try:
        yield harness
    finally:
        await harness.stop()


@pytest.fixture
async def client(api_server: ApiServerHarness) -> AsyncIterator[Client]:
    async with Client(ClientConfig.from_kubeconfig(api_server.kubeconfig)) as c:
        yield c


@dataclass
class Node:
    """The node namespace: ``node_ip`` 10.42.0.1 on ``va``, pod address 10.42.0.5 on ``vb``."""

    netns: str
    executor: ThreadPoolExecutor = field(repr=False)
    node_ip: str = "10.42.0.1"
    pod_ip: str = "10.42.0.5"

    @property
    def path(self) -> Path:
        return NETNS_DIR / self.netns

    def save(self) -> str:
        return sh("ip", "netns", "exec", self.netns, "iptables-save")

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)


@pytest.fixture
def node() -> Iterator[Node]:
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    netns = f"sppx{os.getpid() % 100000}x{next(_counter)}"
    sh("ip", "netns", "add", netns)
    executor = ThreadPoolExecutor(
        max_workers=2, initializer=_enter_netns, initargs=(NETNS_DIR / netns,)
    )
    try:
        for argv in (
            ("link", "set", "lo", "up"),
            ("link", "add", "va", "type", "veth", "peer", "name", "vb"),
            ("addr", "add", "10.42.0.1/24", "dev", "va"),
            ("addr", "add", "10.42.0.5/24", "dev", "vb"),
            ("link", "set", "va", "up"),
            ("link", "set", "vb", "up"),
            ("route", "add", "10.43.0.0/16", "dev", "va"),
        ):
            sh("ip", "-n", netns, *argv)
        yield Node(netns, executor)
    finally:
        executor.shutdown(wait=True)
        sh("ip", "netns", "del", netns, check=False)
