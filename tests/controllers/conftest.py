"""Fixtures for controller tests: a real API server in-process, and clients for it.

* ``api_server``: ``ApiServerHarness`` — ``sampan.apiserver.APIServer`` on 127.0.0.1 over the
  real SQLite backend in a temp dir, real TLS, admin kubeconfig written.
* ``client``: an admin ``Client`` (the test plays the user and the kubelet with it).
* ``controller_config``: a ``ClientConfig`` for ``system:sampan-controller`` (the identity
  the controllers run as in ``sampan server``), so RBAC gaps show up in tests.
* ``run_controller(cls, options=None, clock=None)``: build ``cls`` in a fresh
  ``ControllerContext``, start the informers and ``run()`` it as a task; everything is torn
  down at the end of the test. Returns the controller instance.
* ``eventually(predicate, timeout_s=...)``: poll an async predicate until it returns a truthy
  value (returned) or fail. It bounds a wait; it does not time anything.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from sampan.apiserver import APIServer, APIServerOptions
from sampan.client import Client, ClientConfig, SharedInformerFactory
from sampan.client.workqueue import Clock
from sampan.controllers.base import Controller, ControllerContext, ControllerManagerOptions
from sampan.datastore import open_backend
from sampan.pki import ensure_client_kubeconfig

T = TypeVar("T")
EVENTUALLY_TIMEOUT_S = 15.0
POLL_INTERVAL_S = 0.05


class ApiServerHarness:
    """One API server over one data dir."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.kubeconfig = data_dir / "admin.kubeconfig"
        self.server: APIServer | None = None
        self.backend: Any = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

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
            self.server = None
        if self.backend is not None:
            await self.backend.close()
            self.backend = None

    def client_config(self) -> ClientConfig:
        return ClientConfig.from_kubeconfig(self.kubeconfig)

    def new_client(self) -> Client:
        return Client(self.client_config())

    async def identity_config(
        self, user: str, groups: tuple[str, ...] = (), file_name: str = ""
    ) -> ClientConfig:
        """A ClientConfig with a client certificate for ``user`` in ``groups``."""
        assert self.server is not None
        path = self.data_dir / (file_name or f"{user.replace(':', '-')}.kubeconfig")
        await asyncio.to_thread(
            ensure_client_kubeconfig,
            self.server.pki,
            name=user.replace(":", "-"),
            common_name=user,
            organizations=groups,
            path=path,
            server_url=self.url,
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
    async with api_server.new_client() as c:
        yield c


@pytest.fixture
async def controller_config(api_server: ApiServerHarness) -> ClientConfig:
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


async def eventually(
    predicate: Callable[[], Awaitable[T]], timeout_s: float = EVENTUALLY_TIMEOUT_S
) -> T:
    """Poll ``predicate`` until truthy; fail the test after ``timeout_s``."""
    last_error: Exception | None = None
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                try:
                    value = await predicate()
                except AssertionError as exc:
                    last_error = exc
                    value = None
                if value:
                    return value
                await asyncio.sleep(POLL_INTERVAL_S)
    except TimeoutError:
        pytest.fail(f"condition not met within {timeout_s}s (last error: {last_error!r})")
