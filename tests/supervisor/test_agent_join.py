"""The agent's join against a real API server in-process: the server must prove its name.
After the CA is pinned by the token's hash, the join request checks the server certificate's
host name against the address in ``--server``: an address the certificate does not carry is
refused with one clear line; a carried one joins."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sampan.apiserver import APIServer, APIServerOptions
from sampan.datastore import open_backend
from sampan.pki.certs import cert_names, load_cert, split_names
from sampan.supervisor.agent import JoinComponent
from sampan.supervisor.token import ca_hash

SECRET = "agent-secret-0123456789"
# Loopback answers on all of 127/8: the server listens on 127.0.0.2, which its certificate
# (localhost, 127.0.0.1, ::1, the service names and IP) does not carry.
UNLISTED_IP = "127.0.0.2"


async def _start_server(data_dir: Path, bind_address: str) -> tuple[APIServer, object]:
    backend = open_backend("", data_dir)
    await backend.start()
    server = APIServer(
        APIServerOptions(
            tls_dir=data_dir / "server" / "tls",
            hostname="localhost",
            node_ips=("127.0.0.1",),
            bind_address=bind_address,
            port=0,
        ),
        backend,
    )
    await server.start()
    server.set_join_secrets({"server": "s" * 24, "node": SECRET})
    return server, backend


@pytest.fixture
async def servers(tmp_path: Path) -> AsyncIterator[dict[str, APIServer]]:
    """Two servers of one cluster data dir would fight; use two data dirs."""
    started: dict[str, tuple[APIServer, object]] = {}
    try:
        for bind in ("127.0.0.1", UNLISTED_IP):
            started[bind] = await _start_server(tmp_path / bind, bind)
        yield {bind: server for bind, (server, _) in started.items()}
    finally:
        for server, backend in started.values():
            await server.stop()
            await backend.close()  # type: ignore[attr-defined]


def _join(server: APIServer, url: str, data_dir: Path) -> JoinComponent:
    token = f"K10{ca_hash(server.pki.ca_pem)}::node:{SECRET}"
    return JoinComponent(
        server_url=lambda: url,
        token=lambda: token,
        node_name="worker-a",
        node_ips=("192.0.2.31",),
        data_dir=data_dir,
    )


async def test_an_address_the_server_certificate_lacks_is_one_clear_line(
    servers: dict[str, APIServer], tmp_path: Path
) -> None:
    server = servers[UNLISTED_IP]
    join = _join(server, f"https://{UNLISTED_IP}:{server.port}", tmp_path / "agent")
    records: list[logging.LogRecord] = []
    logged = asyncio.Event()

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)
            logged.set()

    handler = Catch(logging.ERROR)
    logging.getLogger("sampan.agent").addHandler(handler)
    task = asyncio.create_task(join.start(None))  # type: ignore[arg-type]
    try:
        async with asyncio.timeout(60):
            await logged.wait()  # the first failed attempt; the join then retries
    finally:
        logging.getLogger("sampan.agent").removeHandler(handler)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    message = records[0].getMessage()
    assert "\n" not in message
    assert message.startswith(f"join https://{UNLISTED_IP}:{server.port}: ")
    assert "the server's certificate is not valid for the host in --server" in message
    assert UNLISTED_IP in message
    assert "--tls-san" in message
    assert join.credentials is None
    assert not (tmp_path / "agent" / "agent" / "etc" / "serving-kubelet.crt").exists()


async def test_an_address_the_certificate_carries_joins(
    servers: dict[str, APIServer], tmp_path: Path
) -> None:
    server = servers["127.0.0.1"]
    join = _join(server, f"https://127.0.0.1:{server.port}", tmp_path / "agent")
    async with asyncio.timeout(60):
        await join.start(None)  # type: ignore[arg-type]
    assert join.credentials is not None
    serving = load_cert(join.credentials.serving_cert.read_bytes())
    assert cert_names(serving) == split_names(["worker-a", "192.0.2.31"])
    assert (join.credentials.serving_key.stat().st_mode & 0o777) == 0o600


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []
        self.logged = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.logged.set()


async def test_through_the_load_balancer_the_name_in_server_is_still_checked(
    servers: dict[str, APIServer], tmp_path: Path
) -> None:
    """The join connects through the agent's load balancer (127.0.0.1, which every server's
    certificate carries) yet checks the certificate for the host in --server."""
    from sampan.client import ClientConfig
    from sampan.supervisor.loadbalancer import LoadBalancer

    for bind, joins in (("127.0.0.1", True), (UNLISTED_IP, False)):
        server = servers[bind]
        lb = LoadBalancer("lb", f"{bind}:{server.port}", port=0)
        await lb.start()
        token = f"K10{ca_hash(server.pki.ca_pem)}::node:{SECRET}"
        join = JoinComponent(
            server_url=lambda bind=bind, server=server: f"https://{bind}:{server.port}",
            dial_url=lambda lb=lb: lb.url,
            token=lambda token=token: token,
            node_name="worker-a",
            node_ips=("192.0.2.31",),
            data_dir=tmp_path / bind,
        )
        try:
            if joins:
                async with asyncio.timeout(60):
                    await join.start(None)  # type: ignore[arg-type]
                assert join.credentials is not None
                kubeconfig = join.credentials.kubeconfig("kubelet")
                assert ClientConfig.from_kubeconfig(kubeconfig).server == lb.url
            else:
                handler = _Errors()
                logging.getLogger("sampan.agent").addHandler(handler)
                task = asyncio.create_task(join.start(None))  # type: ignore[arg-type]
                try:
                    async with asyncio.timeout(60):
                        await handler.logged.wait()
                finally:
                    logging.getLogger("sampan.agent").removeHandler(handler)
                    task.cancel()
                    with pytest.raises(asyncio.CancelledError):
                        await task
                message = handler.records[0].getMessage()
                assert message.startswith(f"join https://{bind}:{server.port}: ")
                assert "not valid for the host in --server" in message
                assert join.credentials is None
        finally:
            await lb.stop()
