"""The webhook HTTPS client (admission.webhooks_http) against a real aiohttp TLS server:
keep-alive reuse, chunked and connection-delimited answers, a server that closed an idle
connection, refused connections and untrusted certificates."""

from __future__ import annotations

import json
import ssl
import uuid

import pytest

from sampan.apiserver.admission.webhooks_http import DialError, HTTPSPool, TLSError
from tests.apiserver.webhook_server import WebhookServer, make_pki


@pytest.fixture
async def hooks(tmp_path):
    server = WebhookServer(make_pki(tmp_path / "pki"))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def review() -> bytes:
    return json.dumps(
        {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {"uid": str(uuid.uuid4()), "object": {"metadata": {}}},
        }
    ).encode()


async def call(pool: HTTPSPool, server: WebhookServer, path: str, context=None):
    context = context or ssl.create_default_context(cadata=server.pki.ca_pem.decode())
    return await pool.post(
        "127.0.0.1",
        server.port,
        "127.0.0.1",
        context,
        "test",
        path,
        (("Host", f"127.0.0.1:{server.port}"), ("Content-Type", "application/json")),
        review(),
    )


@pytest.mark.parametrize("path", ["/allow", "/chunked", "/close"])
async def test_answers_and_reuse(hooks, path):
    pool = HTTPSPool()
    try:
        for _ in range(3):
            status, body = await call(pool, hooks, path)
            assert status == 200
            assert json.loads(body)["response"]["allowed"] is True
        idle = sum(len(conns) for conns in pool._idle.values())
        assert idle == (0 if path == "/close" else 1)
    finally:
        pool.close()
    assert len(hooks.seen(path)) == 3


async def test_idle_connection_closed_by_the_server_is_retried(hooks):
    pool = HTTPSPool()
    try:
        status, _ = await call(pool, hooks, "/allow")
        assert status == 200
        port = hooks.port
        await hooks.stop()  # closes the idle keep-alive connection
        again = WebhookServer(hooks.pki, port=port)
        await again.start()
        try:
            status, body = await call(pool, again, "/allow")
            assert status == 200, body
            assert len(again.seen("/allow")) == 1
        finally:
            await again.stop()
    finally:
        pool.close()


async def test_refused_and_untrusted(hooks, tmp_path):
    pool = HTTPSPool()
    try:
        other = make_pki(tmp_path / "other")
        with pytest.raises(TLSError, match="x509: certificate signed by unknown authority"):
            await call(
                pool, hooks, "/allow", ssl.create_default_context(cadata=other.ca_pem.decode())
            )
        port = hooks.port
        await hooks.stop()
        with pytest.raises(
            DialError, match=f"dial tcp 127.0.0.1:{port}: connect: connection refused"
        ):
            await call(pool, hooks, "/allow")
    finally:
        pool.close()
