"""Every HTTPS listener (the API server, the kubelet API) speaks TLS 1.3 and TLS 1.2 with
ECDHE + AEAD suites only — checked with ``openssl s_client`` over real sockets. A control
server that allows everything shows the same client commands do succeed where permitted, so
a refusal is the listener's doing."""

from __future__ import annotations

import asyncio
import re
import ssl
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from sampan.kubelet.server import KubeletServer, KubeletServerOptions
from sampan.kubelet.server.lookup import CRIPodLookup
from sampan.pki import TLS12_CIPHERS, issue_kubelet_serving_certificate, server_ssl_context
from tests.support.apiserver import ApiServerHarness, api_server  # noqa: F401

LEGACY = ("-cipher", "DEFAULT@SECLEVEL=0")  # lets the client offer TLS 1.1 / CBC at all
REFUSED = [
    pytest.param(("-tls1_2", "-cipher", "AES256-SHA256@SECLEVEL=0"), id="tls12-rsa-cbc"),
    pytest.param(("-tls1_2", "-cipher", "ECDHE-ECDSA-AES256-SHA384"), id="tls12-ecdhe-cbc384"),
    pytest.param(("-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA256"), id="tls12-ecdhe-cbc256"),
    pytest.param(("-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA"), id="tls12-ecdhe-sha1"),
    pytest.param(("-tls1_1", *LEGACY), id="tls11"),
    pytest.param(("-tls1", *LEGACY), id="tls10"),
]
ACCEPTED = [
    pytest.param(("-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"), id="tls12-gcm128"),
    pytest.param(("-tls1_2", "-cipher", "ECDHE-ECDSA-AES256-GCM-SHA384"), id="tls12-gcm256"),
    pytest.param(("-tls1_2", "-cipher", "ECDHE-ECDSA-CHACHA20-POLY1305"), id="tls12-chacha"),
    pytest.param(("-tls1_3",), id="tls13"),
]


def s_client(port: int, args: tuple[str, ...]) -> bool:
    """True if the handshake completed (blocking: run it in a thread)."""
    command = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost"]
    done = subprocess.run(
        [*command, *args], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30
    )
    # "New, TLSv1.2, Cipher is ECDHE-..." after a handshake; "Cipher is (NONE)" without one.
    # (The exit code says nothing: a server closing at once is an error to s_client.)
    return re.search(r"^New, TLSv[\d.]+, Cipher is [A-Z0-9_-]+$", done.stdout, re.M) is not None


@pytest.fixture
async def kubelet_listener(api_server: ApiServerHarness, tmp_path: Path) -> AsyncIterator[int]:  # noqa: F811
    """The real kubelet API server (its TLS comes from ``KubeletServerOptions``); the
    handshake needs no container runtime."""
    assert api_server.server is not None
    pki = api_server.server.pki
    cert, key = await asyncio.to_thread(
        issue_kubelet_serving_certificate, pki, ["node-1", "localhost"], []
    )
    (tmp_path / "k.crt").write_bytes(cert)
    (tmp_path / "k.key").write_bytes(key)
    (tmp_path / "client-ca.crt").write_bytes(pki.client_ca_pem)
    options = KubeletServerOptions(
        node_name="node-1",
        cert_path=tmp_path / "k.crt",
        key_path=tmp_path / "k.key",
        client_ca_path=tmp_path / "client-ca.crt",
        bind_address="127.0.0.1",
        port=0,
    )
    server = KubeletServer(options, None, lookup=CRIPodLookup(None))  # type: ignore[arg-type]
    await server.start()
    try:
        yield server.port
    finally:
        await server.stop()


@pytest.fixture(scope="module")
def permissive_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A control TLS server accepting TLS 1.0+ and any suite (what the listeners must not
    be), with an ECDSA P-256 key like theirs and an RSA key."""
    import socket
    import threading

    from sampan.pki.certs import cert_to_pem, create_ca, issue_leaf, key_to_pem, split_names

    ca, ca_key = create_ca("control")
    cert, key = issue_leaf(
        ca, ca_key, common_name="localhost", names=split_names(["localhost"]), server_auth=True
    )
    tmp = tmp_path_factory.mktemp("control")
    (tmp / "c.crt").write_bytes(cert_to_pem(cert))
    (tmp / "c.key").write_bytes(key_to_pem(key))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    context.set_ciphers("ALL@SECLEVEL=0")
    context.load_cert_chain(tmp / "c.crt", tmp / "c.key")
    # and an RSA key, for the static-RSA suites (AES256-SHA256 needs an RSA certificate)
    rsa = ["-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-days", "1"]
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            *rsa,
            "-keyout",
            str(tmp / "r.key"),
            "-out",
            str(tmp / "r.crt"),
        ],
        check=True,
        capture_output=True,
    )
    context.load_cert_chain(tmp / "r.crt", tmp / "r.key")
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            try:
                with context.wrap_socket(conn, server_side=True):
                    pass
            except (OSError, ssl.SSLError):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        listener.close()
        thread.join(timeout=5)


@pytest.mark.parametrize("args", REFUSED)
def test_the_control_server_accepts_what_the_listeners_refuse(
    permissive_port: int, args: tuple[str, ...]
) -> None:
    assert s_client(permissive_port, args)


@pytest.mark.parametrize("args", REFUSED)
async def test_api_server_refuses_old_protocols_and_cbc(
    api_server: ApiServerHarness,  # noqa: F811
    args: tuple[str, ...],
) -> None:
    assert api_server.server is not None
    assert not await asyncio.to_thread(s_client, api_server.server.port, args)


@pytest.mark.parametrize("args", ACCEPTED)
async def test_api_server_accepts_aead_and_tls13(
    api_server: ApiServerHarness,  # noqa: F811
    args: tuple[str, ...],
) -> None:
    assert api_server.server is not None
    assert await asyncio.to_thread(s_client, api_server.server.port, args)


@pytest.mark.parametrize("args", REFUSED)
async def test_kubelet_api_refuses_old_protocols_and_cbc(
    kubelet_listener: int, args: tuple[str, ...]
) -> None:
    assert not await asyncio.to_thread(s_client, kubelet_listener, args)


@pytest.mark.parametrize("args", ACCEPTED)
async def test_kubelet_api_accepts_aead_and_tls13(
    kubelet_listener: int, args: tuple[str, ...]
) -> None:
    assert await asyncio.to_thread(s_client, kubelet_listener, args)


def test_the_helper_offers_only_ecdhe_aead_on_tls12(tmp_path: Path) -> None:
    from sampan.pki.certs import cert_to_pem, create_ca, issue_leaf, key_to_pem

    ca, ca_key = create_ca("t")
    cert, key = issue_leaf(ca, ca_key, common_name="t", server_auth=True)
    (tmp_path / "t.crt").write_bytes(cert_to_pem(cert))
    (tmp_path / "t.key").write_bytes(key_to_pem(key))
    context = server_ssl_context(tmp_path / "t.crt", tmp_path / "t.key")
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    tls12 = {c["name"] for c in context.get_ciphers() if c["protocol"] == "TLSv1.2"}
    assert tls12 == set(TLS12_CIPHERS.split(":"))
    assert all(c["aead"] for c in context.get_ciphers())
