"""Fixtures for the whole-node network policy tests: one ``NodeHarness`` per session (API
server, kubelet, private containerd, pods on a per-session CNI bridge) plus the
``NetworkPolicyController`` running as the agent identity (``system:sampan-agent``, so the
bootstrap RBAC is exercised) in the host's network namespace. Teardown removes the
controller's chains and sets (what ``sampan killall`` does)."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from sampan.netpol import (
    NetworkPolicyController,
    NetworkPolicyOptions,
    cleanup,
    names_for_data_dir,
)
from tests.support.cluster import NodeHarness


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
