"""Fixtures for AddOn manager tests: a real API server in-process, an admin client, and
``start_manager(dir, **options)`` which starts an ``AddonManager`` (stopped at the end)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from sampan.addons import AddonManager, AddonOptions
from sampan.client import Client
from tests.client.conftest import ApiServerHarness


@pytest.fixture
async def api_server(tmp_path: Path) -> AsyncIterator[ApiServerHarness]:
    harness = ApiServerHarness(tmp_path / "server")
    await harness.start()
    try:
        yield harness
    finally:
        await harness.stop()


@pytest.fixture
async def client(api_server: ApiServerHarness) -> AsyncIterator[Client]:
    async with api_server.new_client() as c:
        yield c


@pytest.fixture
async def start_manager(
    api_server: ApiServerHarness,
) -> AsyncIterator[Callable[..., Awaitable[AddonManager]]]:
    managers: list[AddonManager] = []

    async def start(manifests_dir: Path, **options: Any) -> AddonManager:
        manager = AddonManager(
            api_server.client_config(), AddonOptions(manifests_dir=manifests_dir, **options)
        )
        await manager.start()
        managers.append(manager)
        await manager.wait_synced()
        return manager

    yield start
    for manager in managers:
        await manager.stop()
