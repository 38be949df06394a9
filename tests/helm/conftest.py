"""Fixtures for the helm controller: the in-process API server, a chart repository, and the
"helm-controller" component running against them (leader election off).

* ``repo``: a started ``ChartRepo`` holding the demo chart 0.1.0.
* ``helm_controller``: ``HelmControllerComponent`` started with the admin identity (the
  server gives it cluster-admin too) and ``<tmp>/static`` as its static directory.
* waits: ``tests/support/poll.py``'s ``eventually``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sampan.controllers.base import ControllerManagerOptions
from sampan.helm import HelmControllerComponent, HelmOptions
from tests.helm.charts import ChartRepo, demo_chart_files
from tests.support.apiserver import ApiServerHarness, api_server, client  # noqa: F401
from tests.support.poll import EVENTUALLY_TIMEOUT_S


@pytest.fixture
async def repo() -> AsyncIterator[ChartRepo]:
    chart_repo = ChartRepo()
    chart_repo.add(demo_chart_files())
    await chart_repo.start()
    try:
        yield chart_repo
    finally:
        await chart_repo.stop()


@pytest.fixture
async def helm_controller(
    api_server: ApiServerHarness,  # noqa: F811
    tmp_path: Path,
) -> AsyncIterator[HelmControllerComponent]:
    static = tmp_path / "static"
    (static / "charts").mkdir(parents=True)
    component = HelmControllerComponent(
        api_server.client_config(),
        HelmOptions(static_dir=static),
        ControllerManagerOptions(leader_elect=False),
    )
    await component.start()
    await asyncio.wait_for(component.wait_started(), EVENTUALLY_TIMEOUT_S)
    try:
        yield component
    finally:
        await component.stop()
