"""Fixtures for the whole-node network policy tests: one ``NodeHarness`` per session (API
server, kubelet, private containerd, pods on a per-session CNI bridge) plus the
``NetworkPolicyController`` running as the agent identity (``system:sampan-agent``, so the
bootstrap RBAC is exercised) in the host's network namespace. Teardown removes the
controller's chains and sets (what ``sampan killall`` does).

``netns``: a private network namespace (own iptables and ipsets) for tests that need no pods,
with a worker thread inside it; deleted at the end."""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest
import pytest_asyncio

from sampan.netns import enter as enter_netns
from sampan.netpol import (
    NetworkPolicyController,
    NetworkPolicyOptions,
    cleanup,
    names_for_data_dir,
)
from tests.support.cluster import NodeHarness

T = TypeVar("T")
NETNS_DIR = Path("/run/netns")
_counter = itertools.count()


class Netns:
    """A private network namespace: ``call`` runs a function on a thread inside it, ``sh`` a
    command."""

    def __init__(self, name: str, executor: ThreadPoolExecutor) -> None:
        self.name = name
        self.executor = executor

    @property
    def path(self) -> Path:
        return NETNS_DIR / self.name

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        return self.executor.submit(fn, *args).result()

    def sh(self, *argv: str) -> str:
        result = subprocess.run(
            ["ip", "netns", "exec", self.name, *argv], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    def sets(self) -> set[str]:
        return set(self.sh("ipset", "list", "-n").split())


@pytest.fixture
def netns() -> Iterator[Netns]:
    if os.geteuid() != 0 or shutil.which("ipset") is None:
        pytest.skip("needs root and ipset")
    name = f"spnp{os.getpid() % 100000}x{next(_counter)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    executor = ThreadPoolExecutor(
        max_workers=1, initializer=enter_netns, initargs=(NETNS_DIR / name,)
    )
    try:
        yield Netns(name, executor)
    finally:
        executor.shutdown(wait=True)
        subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.fixture(scope="session")
def node_image_cache() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="sampan-node-images-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def node(node_image_cache: Path) -> AsyncIterator[NodeHarness]:
    if os.geteuid() != 0 or shutil.which("ipset") is None:
        pytest.skip("network policy tests need root and ipset")
    harness = NodeHarness(node_image_cache)
    try:
        await harness.start()
        yield harness
    finally:
        await harness.stop()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def netpol(node: NodeHarness) -> AsyncIterator[NetworkPolicyController]:
    names = names_for_data_dir(node.data_dir)
    config = await node.api.identity_config("system:sampan-agent")
    controller = NetworkPolicyController(
        config, NetworkPolicyOptions(node_name=node.node_name, names=names)
    )
    await controller.start()
    try:
        yield controller
    finally:
        await controller.stop()
        await asyncio.to_thread(cleanup, names)


@pytest_asyncio.fixture(loop_scope="session")
async def ns(node: NodeHarness) -> str:
    return await node.namespace()
