"""Fixtures for the tunnel tests: a TLS manager (``TunnelServer`` + ``/cacerts`` on a real
port), cluster agents (in-process tasks, or child processes that can be SIGKILLed), and TCP
targets on loopback. Everything runs on real sockets; nothing of the tunnel is mocked."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import ssl
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from sampan.manager.tunnel import (
    CACERTS_PATH,
    TunnelServer,
    TunnelState,
    ca_checksum,
    cacerts_handler,
    run_agent,
)
from sampan.pki.certs import cert_to_pem, create_ca, issue_leaf, key_to_pem, split_names

TOKEN = "reg-token-edge-1"
CLUSTER_NAME = "edge-1"
CLUSTER_ID = "c-edge1"
WAIT_S = 20.0


async def wait_until(predicate: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    """Poll until ``predicate()``; fail (not a timing assertion: a hang guard) otherwise."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@dataclass
class Pki:
    ca_pem: bytes
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cadata=self.ca_pem.decode())


def make_pki(directory: Path, name: str) -> Pki:
    ca_cert, ca_key = create_ca(f"{name}-ca")
    leaf, leaf_key = issue_leaf(
        ca_cert,
        ca_key,
        common_name=name,
        names=split_names(["127.0.0.1", "localhost"]),
        server_auth=True,
    )
    cert_file = directory / f"{name}.crt"
    key_file = directory / f"{name}.key"
    cert_file.write_bytes(cert_to_pem(leaf))
    key_file.write_bytes(key_to_pem(leaf_key))
    key_file.chmod(0o600)
    return Pki(ca_pem=cert_to_pem(ca_cert), cert_file=cert_file, key_file=key_file)


@pytest.fixture(scope="session")
def pki_dir() -> Any:
    with tempfile.TemporaryDirectory(prefix="sampan-tunnel-") as directory:
        yield Path(directory)


@pytest.fixture(scope="session")
def manager_pki(pki_dir: Path) -> Pki:
    return make_pki(pki_dir, "manager")


@pytest.fixture(scope="session")
def downstream_pki(pki_dir: Path) -> Pki:
    return make_pki(pki_dir, "downstream")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Manager:
    """A manager's tunnel endpoint over TLS, restartable on the same port."""

    pki: Pki
    port: int = field(default_factory=free_port)
    heartbeat_s: float = 30.0
    window_bytes: int | None = None
    auth_calls: list[tuple[str, str]] = field(default_factory=list)
    changes: list[TunnelState] = field(default_factory=list)
    server: TunnelServer | None = None
    runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def checksum(self) -> str:
        return ca_checksum(self.pki.ca_pem)

    def authenticate(self, token: str, cluster_name: str) -> str | None:
        self.auth_calls.append((token, cluster_name))
        return CLUSTER_ID if (token, cluster_name) == (TOKEN, CLUSTER_NAME) else None

    async def start(self) -> TunnelServer:
        kwargs: dict[str, Any] = {"heartbeat_s": self.heartbeat_s}
        if self.window_bytes is not None:
            kwargs["window_bytes"] = self.window_bytes
        self.server = TunnelServer(self.authenticate, on_change=self.changes.append, **kwargs)
        app = web.Application()
        self.server.add_routes(app)
        app.router.add_get(CACERTS_PATH, cacerts_handler(self.pki.ca_pem))
        self.runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self.runner.setup()
        site = web.TCPSite(
            self.runner, "127.0.0.1", self.port, ssl_context=self.pki.server_context()
        )
        await site.start()
        return self.server

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def connected(self) -> None:
        await wait_until(
            lambda: self.server is not None and self.server.is_connected(CLUSTER_ID), "the agent"
        )


@pytest.fixture
async def manager(manager_pki: Pki) -> AsyncIterator[Manager]:
    m = Manager(manager_pki)
    await m.start()
    try:
        yield m
    finally:
        await m.stop()


@dataclass
class Target:
    """A TCP server on loopback; ``address`` is its ``host:port``."""

    server: asyncio.Server
    host: str = "127.0.0.1"

    @property
    def port(self) -> int:
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def tcp_target(handler: Handler) -> AsyncIterator[Target]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    try:
        yield Target(server)
    finally:
        server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 5)


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Echo until EOF, then half-close back."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.write_eof()
        await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def agent_task(
    manager: Manager, allowed: list[str], **kwargs: Any
) -> AsyncIterator[asyncio.Task[Any]]:
    """``run_agent`` in this process, cancelled at the end."""
    params: dict[str, Any] = {"heartbeat_s": 5.0, "backoff_initial_s": 0.05, "backoff_max_s": 0.5}
    params.update(kwargs)
    task = asyncio.ensure_future(
        run_agent(
            manager.url,
            params.pop("ca_checksum", manager.checksum),
            params.pop("token", TOKEN),
            CLUSTER_NAME,
            allowed,
            **params,
        )
    )
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task


@contextlib.asynccontextmanager
async def agent_process(
    manager: Manager, allowed: list[str]
) -> AsyncIterator[asyncio.subprocess.Process]:
    """The agent as its container runs it (``python -m sampan.manager.tunnel``), killable."""
    env = dict(os.environ)
    env.update(
        SAMPAN_MANAGER_URL=manager.url,
        SAMPAN_CA_CHECKSUM=manager.checksum,
        SAMPAN_TOKEN=TOKEN,
        SAMPAN_CLUSTER_NAME=CLUSTER_NAME,
        SAMPAN_ALLOWED_TARGETS=",".join(allowed),
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sampan.manager.tunnel",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, 18)  # SIGCONT, in case a test stopped it
        await proc.wait()


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
