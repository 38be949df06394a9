"""Fixtures for the whole-node kubelet tests: one ``NodeHarness`` per session (API server,
kubelet, private containerd); each test works in its own namespace."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.support.cluster import NodeHarness


@pytest.fixture(scope="session")
def node_image_cache() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="sampan-node-images-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def node(node_image_cache: Path) -> AsyncIterator[NodeHarness]:
    harness = NodeHarness(node_image_cache)
    try:
        await harness.start()
        yield harness
    finally:
        await harness.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def ns(node: NodeHarness) -> str:
    return await node.namespace()
