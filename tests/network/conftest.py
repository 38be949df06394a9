"""Fixtures for the pod network: an in-process API server, and two "hosts" as network
namespaces joined by veths to a bridge inside a third namespace (addresses in 10.251.0.0/24).

Nothing outside the namespaces the fixture creates is touched; they are deleted (with every
device in them) at the end.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from sampan.netns import enter as enter_netns
from tests.support.apiserver import ApiServerHarness, api_server, client  # noqa: F401

T = TypeVar("T")
NETNS_DIR = Path("/run/netns")
UNDERLAY_PREFIX = "10.251.0"
_counter = itertools.count()


def sh(*argv: str, check: bool = True) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {result.stderr.strip()}")
    return result.stdout


@dataclass
class Host:
    """One network namespace playing a node; ``run`` calls a function on a thread inside."""

    name: str
    netns: str
    ip: str
    executor: ThreadPoolExecutor = field(repr=False)

    @property
    def netns_path(self) -> Path:
        return NETNS_DIR / self.netns

    def ip_cmd(self, *args: str) -> str:
        return sh("ip", "-n", self.netns, *args)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)


@dataclass
class Hosts:
    switch: str
    hosts: list[Host]
    tag: str = ""
    extra: list[Host] = field(default_factory=list)

    def add_netns(self, suffix: str) -> Host:
        """Another namespace (a "pod"), deleted with the hosts; ``ip`` is left empty."""
        netns = f"{self.tag}-{suffix}"
        sh("ip", "netns", "add", netns)
        executor = ThreadPoolExecutor(
            max_workers=2, initializer=enter_netns, initargs=(NETNS_DIR / netns,)
        )
        made = Host(suffix, netns, "", executor)
        self.extra.append(made)
        return made


def _need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")


@pytest.fixture
def hosts() -> Iterator[Hosts]:
    """Two hosts (h1 10.251.0.1, h2 10.251.0.2, uplink ``eth0``, MTU 1500) on one bridge."""
    _need_root()
    tag = f"sp{os.getpid() % 100000}x{next(_counter)}"
    switch = f"{tag}-sw"
    created: list[str] = []
    made: list[Host] = []
    everything = Hosts(switch, made, tag)
    try:
        sh("ip", "netns", "add", switch)
        created.append(switch)
        sh("ip", "-n", switch, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", switch, "link", "set", "br0", "up")
        for number in (1, 2):
            netns = f"{tag}-h{number}"
            sh("ip", "netns", "add", netns)
            created.append(netns)
            port = f"p{number}"
            sh("ip", "-n", netns, "link", "add", "eth0", "type", "veth", "peer", "name", port,
               "netns", switch)  # fmt: skip
            sh("ip", "-n", switch, "link", "set", port, "master", "br0", "up")
            address = f"{UNDERLAY_PREFIX}.{number}"
            sh("ip", "-n", netns, "addr", "add", f"{address}/24", "dev", "eth0")
            sh("ip", "-n", netns, "link", "set", "eth0", "up")
            sh("ip", "-n", netns, "link", "set", "lo", "up")
            executor = ThreadPoolExecutor(
                max_workers=2, initializer=enter_netns, initargs=(NETNS_DIR / netns,)
            )
            made.append(Host(f"h{number}", netns, address, executor))
        yield everything
    finally:
        for host in made + everything.extra:
            host.executor.shutdown(wait=True)
        for netns in [h.netns for h in everything.extra] + created[::-1]:
            sh("ip", "netns", "del", netns, check=False)
