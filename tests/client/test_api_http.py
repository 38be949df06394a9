"""Client behaviour the real API server does not easily provoke (429s, broken streams, odd
bodies), against a tiny scripted aiohttp server over a real socket."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

from sampan.client.api import (
    CONFIGMAPS,
    ApiError,
    Client,
    ClientConfig,
    ServerError,
    TooManyRequestsError,
    TransportError,
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[Client]]]:
    runners: list[web.AppRunner] = []
    clients: list[Client] = []

    async def start(handler: Handler) -> Client:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        client = Client(ClientConfig(server=f"http://127.0.0.1:{port}", token="t0ken"))
        clients.append(client)
        return client

    yield start
    for client in clients:
        await client.close()
    for runner in runners:
        await runner.cleanup()


async def test_429_is_retried_after_retry_after(serve) -> None:
    calls: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        calls.append(request.headers.get("Authorization", ""))
        if len(calls) < 3:
            return web.json_response(
                {"kind": "Status", "code": 429, "reason": "TooManyRequests", "message": "slow"},
                status=429,
                headers={"Retry-After": "0"},
            )
        return web.json_response({"kind": "ConfigMap", "metadata": {"name": "x"}})

    client = await serve(handler)
    got = await client.get(CONFIGMAPS, "x", namespace="default")
    assert got["metadata"]["name"] == "x"
    assert calls == ["Bearer t0ken"] * 3


async def test_429_gives_up_eventually(serve) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=429, text="busy", headers={"Retry-After": "0"})

    client = await serve(handler)
    with pytest.raises(TooManyRequestsError) as exc_info:
        await client.get(CONFIGMAPS, "x", namespace="default")
    assert exc_info.value.message == "busy"  # non-Status bodies become a Status


async def test_non_status_errors_and_non_json_answers(serve) -> None:
    async def handler(request: web.Request) -> web.Response:
        if request.path.endswith("/broken"):
            return web.Response(status=503, text="<html>down</html>")
        return web.Response(status=200, text="not json")

    client = await serve(handler)
    with pytest.raises(ServerError) as exc_info:
        await client.get(CONFIGMAPS, "broken", namespace="default")
    assert exc_info.value.code == 503 and exc_info.value.reason == "ServiceUnavailable"
    with pytest.raises(TransportError):
        await client.get(CONFIGMAPS, "fine", namespace="default")


async def test_watch_error_event_and_truncated_stream(serve) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        added = {"type": "ADDED", "object": {"metadata": {"name": "a", "resourceVersion": "7"}}}
        await response.write(json.dumps(added).encode() + b"\n")
        if request.query.get("labelSelector") == "error":
            status = {"kind": "Status", "code": 500, "reason": "InternalError", "message": "boom"}
            await response.write(json.dumps({"type": "ERROR", "object": status}).encode() + b"\n")
        else:
            await response.write(b'{"type": "MODIFIED", "obj')  # cut mid-event
        await response.write_eof()
        return response

    client = await serve(handler)
    async with client.watch(CONFIGMAPS, label_selector="error") as stream:
        assert (await anext(stream))[0] == "ADDED"
        assert stream.resource_version == "7"
        with pytest.raises(ApiError) as exc_info:
            await anext(stream)
        assert exc_info.value.code == 500 and exc_info.value.message == "boom"
    async with client.watch(CONFIGMAPS, label_selector="cut") as stream:
        assert (await anext(stream))[0] == "ADDED"
        with pytest.raises(TransportError):
            await anext(stream)
    assert client.active_watches == 0


async def test_closed_client_refuses_calls(serve) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response({})

    client = await serve(handler)
    await client.close()
    with pytest.raises(TransportError):
        await client.get(CONFIGMAPS, "x", namespace="default")
