"""Fixtures for proxy tests: an in-process API server (with component identities) and a
private network namespace playing the node, with a "pod" veth address 10.42.0.5 and a route
to the service CIDR. Nothing outside the namespace is touched; it is deleted at the end."""

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
_counter = itertools.count()


def sh(*argv: str, check: bool = True, stdin: str | None = None) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, check=False, input=stdin)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {result.stderr.strip()}")
    return result.stdout


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
        max_workers=2, initializer=enter_netns, initargs=(NETNS_DIR / netns,)
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
