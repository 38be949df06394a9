"""Request limits against a real in-process API server (and kubelet API listener): the
in-flight limit's 429, the per-user watch cap, closed watches leaving nothing behind, and the
header-read timeout on both listeners.

Requests are held in flight for real: a LIST far larger than the socket buffers, sent over a
connection whose client reads nothing, keeps its handler writing (the body is streamed with
backpressure) until the client goes away. Waits are for server state (polled), never timed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
import yaml

from sampan.apiserver.limits import LimitsOptions, parse_limits_args
from sampan.config import ConfigError, load_config
from sampan.kubelet.runtime import cri
from sampan.kubelet.server import KubeletServer, KubeletServerOptions
from sampan.pki import issue_kubelet_serving_certificate
from sampan.supervisor.server import server_components
from tests.support.apiserver import ApiServerHarness

SAFETY_TIMEOUT_S = 60.0  # only bounds a broken run; nothing asserts on time
BIG_OBJECTS = 32
BIG_OBJECT_BYTES = 950_000  # 32 x 0.95 MB: far beyond loopback socket buffers
HEADER_TIMEOUT_S = 0.5


def _ssl_context(kubeconfig: Path) -> ssl.SSLContext:
    cfg = yaml.safe_load(kubeconfig.read_text())
    cluster = cfg["clusters"][0]["cluster"]
    user = cfg["users"][0]["user"]
    ctx = ssl.create_default_context(
        cadata=base64.b64decode(cluster["certificate-authority-data"]).decode()
    )
    ctx.check_hostname = False
    directory = kubeconfig.parent
    cert = directory / f"{kubeconfig.stem}.crt"
    key = directory / f"{kubeconfig.stem}.key"
    cert.write_bytes(base64.b64decode(user["client-certificate-data"]))
    key.write_bytes(base64.b64decode(user["client-key-data"]))
    key.chmod(0o600)
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


async def _until(predicate: Callable[[], bool]) -> None:
    async with asyncio.timeout(SAFETY_TIMEOUT_S):
        while not predicate():  # noqa: ASYNC110 - polls server state; no event exposes it
            await asyncio.sleep(0.02)


def _session(ctx: ssl.SSLContext) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=ctx, limit=0, force_close=True),
        timeout=aiohttp.ClientTimeout(total=SAFETY_TIMEOUT_S),
    )


@pytest.fixture
async def limited(tmp_path: Path) -> AsyncIterator[ApiServerHarness]:
    harness = ApiServerHarness(
        tmp_path,
        limits=LimitsOptions(
            max_requests_inflight=1, max_mutating_requests_inflight=1, max_watches_per_user=2
        ),
        header_read_timeout_s=HEADER_TIMEOUT_S,
    )
    await harness.start()
    try:
        yield harness
    finally:
        await harness.stop()


@pytest.fixture
async def plain(tmp_path: Path) -> AsyncIterator[ApiServerHarness]:
    harness = ApiServerHarness(tmp_path)
    await harness.start()
    try:
        yield harness
    finally:
        await harness.stop()


async def _alice(harness: ApiServerHarness, admin: aiohttp.ClientSession) -> ssl.SSLContext:
    """A user outside system:masters, bound to cluster-admin."""
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "alice-admin"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "cluster-admin",
        },
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"}],
    }
    url = f"{harness.url}/apis/rbac.authorization.k8s.io/v1/clusterrolebindings"
    async with admin.post(url, json=binding) as r:
        assert r.status == 201, await r.text()
    await harness.identity_config("alice")
    return _ssl_context(harness.data_dir / "alice.kubeconfig")


async def _hold_list(harness: ApiServerHarness, ctx: ssl.SSLContext, path: str) -> Any:
    """Send a LIST over a raw connection and read nothing back: the handler stays in flight."""
    assert harness.server is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", harness.server.port, ssl=ctx)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    await writer.drain()
    del reader
    return writer


async def test_inflight_limit_answers_429_with_retry_after(limited: ApiServerHarness) -> None:
    server = limited.server
    assert server is not None
    admin_ctx = _ssl_context(limited.kubeconfig)
    cms = "/api/v1/namespaces/default/configmaps"
    async with _session(admin_ctx) as admin:
        payload = "x" * BIG_OBJECT_BYTES
        for i in range(BIG_OBJECTS):
            body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"big-{i}"}}
            body["data"] = {"payload": payload}
            async with admin.post(limited.url + cms, json=body) as r:
                assert r.status == 201, await r.text()
        alice_ctx = await _alice(limited, admin)

        writer = await _hold_list(limited, alice_ctx, cms)
        await _until(lambda: server.inflight.non_mutating == 1)
        async with _session(alice_ctx) as alice:
            async with alice.get(f"{limited.url}{cms}/big-0") as r:
                assert r.status == 429
                assert r.headers["Retry-After"] == "1"
                assert r.headers["Content-Type"] == "application/json"
                status = json.loads(await r.read())
            assert status == {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": "Too many requests, please try again later.",
                "reason": "TooManyRequests",
                "details": {"retryAfterSeconds": 1},
                "code": 429,
            }
            # Mutating requests have their own limit: one slot, free.
            async with alice.post(
                limited.url + cms,
                json={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "small"}},
            ) as r:
                assert r.status == 201, await r.text()
            # Exempt: health checks, long-running requests (a watch), system:masters.
            async with alice.get(f"{limited.url}/readyz") as r:
                assert r.status == 200
            async with alice.get(f"{limited.url}{cms}?watch=true&timeoutSeconds=1") as r:
                assert r.status == 200
                await r.read()
            async with admin.get(f"{limited.url}{cms}/big-0") as r:
                assert r.status == 200
            assert server.inflight.non_mutating == 1

            writer.close()
            await _until(lambda: server.inflight.non_mutating == 0)
            async with alice.get(f"{limited.url}{cms}/big-0") as r:
                assert r.status == 200


async def test_watches_per_user_are_capped(limited: ApiServerHarness) -> None:
    server = limited.server
    assert server is not None
    cms = f"{limited.url}/api/v1/namespaces/default/configmaps?watch=true"
    async with _session(_ssl_context(limited.kubeconfig)) as admin:
        alice_ctx = await _alice(limited, admin)
        async with _session(alice_ctx) as alice:
            first = await alice.get(cms)
            second = await alice.get(cms)
            assert (first.status, second.status) == (200, 200)
            async with alice.get(cms) as r:
                assert r.status == 429
                assert r.headers["Retry-After"] == "1"
                status = json.loads(await r.read())
            assert status["reason"] == "TooManyRequests"
            assert status["message"] == (
                'Too many watches open for user "alice" (limit 2), please try again later.'
            )
            # Another user has a cap of their own.
            async with admin.get(cms + "&timeoutSeconds=1") as r:
                assert r.status == 200
                await r.read()
            first.close()
            await _until(lambda: server.watch_limiter.by_user.get("alice") == 1)
            async with alice.get(cms + "&timeoutSeconds=1") as r:
                assert r.status == 200
                await r.read()
            second.close()
            await _until(lambda: not server.watch_limiter.by_user)


async def test_closed_watches_leave_no_watcher_behind(plain: ApiServerHarness) -> None:
    """Watches whose clients go away (no event ever sent on them) are unregistered at once,
    not at their next write or their timeout."""
    server = plain.server
    assert server is not None
    storage: Any = server.storage

    def watchers() -> int:
        return sum(cache.watcher_count for cache in storage._caches.values())

    baseline = watchers()
    paths = [
        "/api/v1/namespaces/default/configmaps?watch=true",
        "/api/v1/configmaps?watch=true&labelSelector=a%3Db",
        "/api/v1/namespaces/kube-system/secrets?watch=true&allowWatchBookmarks=true",
        "/apis/apps/v1/deployments?watch=true&resourceVersion=0",
    ]
    n = 60
    async with _session(_ssl_context(plain.kubeconfig)) as admin:
        responses = [await admin.get(plain.url + paths[i % len(paths)]) for i in range(n)]
        assert all(r.status == 200 for r in responses)
        await _until(lambda: watchers() == baseline + n)
        assert server.open_watch_streams == n
        assert sum(server.watch_limiter.by_user.values()) == n
        for r in responses:
            r.close()
        await _until(lambda: watchers() == baseline)
        await _until(lambda: server.open_watch_streams == 0)
    assert server.watch_limiter.by_user == {}
    assert (server.inflight.non_mutating, server.inflight.mutating) == (0, 0)


async def _slow_header_connection_is_closed(port: int, ctx: ssl.SSLContext) -> None:
    """A client that keeps sending header bytes, one at a time, is cut off."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)

    async def trickle() -> None:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
        while not writer.is_closing():
            writer.write(b"X")
            await writer.drain()
            await asyncio.sleep(HEADER_TIMEOUT_S / 5)

    task = asyncio.create_task(trickle())
    try:
        async with asyncio.timeout(SAFETY_TIMEOUT_S):
            data = await reader.read()
        assert data == b""  # closed without a response
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        writer.close()


async def _keepalive_survives_idle(port: int, ctx: ssl.SSLContext) -> None:
    """A complete request, an idle pause longer than the header timeout, another request on
    the same connection: both answered."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    try:
        for _ in range(2):
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            await writer.drain()
            async with asyncio.timeout(SAFETY_TIMEOUT_S):
                status = await reader.readline()
                headers = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in headers.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                await reader.readexactly(length)
            assert status.startswith(b"HTTP/1.1 200"), status
            await asyncio.sleep(HEADER_TIMEOUT_S * 3)
    finally:
        writer.close()


async def test_api_server_closes_slow_header_connections(limited: ApiServerHarness) -> None:
    assert limited.server is not None
    ctx = _ssl_context(limited.kubeconfig)
    await _slow_header_connection_is_closed(limited.server.port, ctx)
    await _keepalive_survives_idle(limited.server.port, ctx)


async def test_kubelet_api_closes_slow_header_connections(
    plain: ApiServerHarness, tmp_path: Path
) -> None:
    assert plain.server is not None
    pki = plain.server.pki
    cert_pem, key_pem = await asyncio.to_thread(
        issue_kubelet_serving_certificate, pki, ["limits-node", "localhost"], ["127.0.0.1"]
    )
    (tmp_path / "kubelet.crt").write_bytes(cert_pem)
    (tmp_path / "kubelet.key").write_bytes(key_pem)
    (tmp_path / "kubelet.key").chmod(0o600)
    # /healthz never reaches the runtime: a client for a socket nobody serves will do.
    channel = grpc.aio.insecure_channel(f"unix://{tmp_path}/no-runtime.sock")
    kubelet = KubeletServer(
        KubeletServerOptions(
            node_name="limits-node",
            cert_path=tmp_path / "kubelet.crt",
            key_path=tmp_path / "kubelet.key",
            client_ca_path=pki.client_ca_cert_path,
            bind_address="127.0.0.1",
            port=0,
            header_read_timeout_s=HEADER_TIMEOUT_S,
        ),
        cri.RuntimeClient(channel),
    )
    await kubelet.start()
    try:
        ctx = ssl.create_default_context(cadata=pki.kubelet_ca_pem.decode())
        ctx.check_hostname = False
        await _slow_header_connection_is_closed(kubelet.port, ctx)
        await _keepalive_survives_idle(kubelet.port, ctx)
    finally:
        await kubelet.stop()
        await channel.close()


def test_limits_args_parse_and_errors_name_the_flag() -> None:
    assert parse_limits_args({}) == LimitsOptions(400, 200, 500)
    assert parse_limits_args(
        {"max-requests-inflight": "10", "max-mutating-requests-inflight": "0"}
    ) == LimitsOptions(max_requests_inflight=10, max_mutating_requests_inflight=0)
    with pytest.raises(ValueError, match=r"^--max-requests-inflight: 'ten' is not an integer$"):
        parse_limits_args({"max-requests-inflight": "ten"})
    with pytest.raises(ValueError, match=r"^--max-watches-per-user: -1 must not be negative"):
        parse_limits_args({"max-watches-per-user": "-1"})


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        (
            "max-mutating-requests-inflight=many",
            r"^kube-apiserver-arg: --max-mutating-requests-inflight: 'many' is not an integer$",
        ),
        ("profiling=false", r"^kube-apiserver-arg: unsupported key 'profiling'"),
    ],
)
def test_bad_kube_apiserver_arg_stops_the_server_at_configuration(
    tmp_path: Path, arg: str, message: str
) -> None:
    config = load_config(
        "server",
        {"data_dir": str(tmp_path), "kube_apiserver_arg": [arg]},
        env={},
        default_config_file=tmp_path / "none.yaml",
    )
    with pytest.raises(ConfigError, match=message):
        server_components(config)


async def test_large_lists_are_streamed_whole(plain: ApiServerHarness) -> None:
    """A LIST larger than one piece is sent chunked; every output form parses whole."""
    n = 40
    cms = f"{plain.url}/api/v1/namespaces/default/configmaps"
    async with _session(_ssl_context(plain.kubeconfig)) as admin:
        for i in range(n):
            body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"cm-{i:02d}"}}
            body["data"] = {"payload": "y" * 2000}
            async with admin.post(cms, json=body) as r:
                assert r.status == 201, await r.text()
        async with admin.get(cms) as r:
            assert r.status == 200
            assert r.headers.get("Transfer-Encoding") == "chunked"
            listed = json.loads(await r.read())
        assert listed["kind"] == "ConfigMapList"
        assert [o["metadata"]["name"] for o in listed["items"]] == [f"cm-{i:02d}" for i in range(n)]
        assert all(o["data"]["payload"] == "y" * 2000 for o in listed["items"])
        accept = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
        async with admin.get(cms, headers={"Accept": accept}) as r:
            assert r.status == 200
            partial = json.loads(await r.read())
        assert partial["kind"] == "PartialObjectMetadataList"
        assert len(partial["items"]) == n
        assert "data" not in partial["items"][0]
        async with admin.get(cms + "?limit=5") as r:
            page = json.loads(await r.read())
        assert len(page["items"]) == 5 and page["metadata"]["continue"]
