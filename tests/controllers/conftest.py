"""Fixtures for controller tests: a real API server in-process, and clients for it.

* ``api_server``, ``client``: the shared harness of ``tests/support/apiserver.py`` (a real
  API server over SQLite and TLS; an admin ``Client`` — the test plays the user and kubelet).
* ``controller_config``: a ``ClientConfig`` for ``system:sampan-controller`` (the identity
  the controllers run as in ``sampan server``), so RBAC gaps show up in tests.
* ``run_controller(cls, options=None, clock=None)``: build ``cls`` in a fresh
  ``ControllerContext``, start the informers and ``run()`` it as a task; everything is torn
  down at the end of the test. Returns the controller instance.
* ``eventually``: ``tests/support/poll.py``'s, re-exported for the tests here.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from sampan.client import Client, ClientConfig, SharedInformerFactory
from sampan.client.workqueue import Clock
from sampan.controllers.base import Controller, ControllerContext, ControllerManagerOptions
from tests.support.apiserver import ApiServerHarness, api_server, client  # noqa: F401
from tests.support.poll import eventually  # noqa: F401


@pytest.fixture
async def controller_config(api_server: ApiServerHarness) -> ClientConfig:  # noqa: F811
    return await api_server.identity_config("system:sampan-controller")


RunController = Callable[..., Awaitable[Any]]


@pytest.fixture
async def run_controller(controller_config: ClientConfig) -> AsyncIterator[RunController]:
    started: list[tuple[asyncio.Task[None], SharedInformerFactory, ControllerContext]] = []
    clients: list[Client] = []

    async def start(
        cls: type[Controller],
        options: ControllerManagerOptions | None = None,
        clock: Clock | None = None,
        workers: int = 2,
    ) -> Any:
        ctrl_client = Client(controller_config)
        clients.append(ctrl_client)
        factory = SharedInformerFactory(ctrl_client)
        context = ControllerContext(
            ctrl_client, factory, options or ControllerManagerOptions(), clock
        )
        controller = cls(context)
        factory.start()
        task = asyncio.get_running_loop().create_task(
            controller.run(workers), name=f"test-controller-{controller.name}"
        )
        started.append((task, factory, context))
        return controller

    try:
        yield start
    finally:
        for task, factory, context in started:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await factory.stop()
            await context.aclose()
        for ctrl_client in clients:
            await ctrl_client.close()
