"""What only the etcd driver has: endpoints and client TLS, leases, a floor moved by another
server, and watches that survive an etcd restart. The shared behaviour is in
test_conformance.py (which runs against etcd too)."""

from __future__ import annotations

import asyncio
import pathlib
from collections.abc import Iterator

import pytest

from sampan.datastore import (
    CompactedError,
    InvalidRequestError,
    StoreUnavailableError,
    describe,
    open_backend,
)
from sampan.datastore.etcd import EtcdBackend, EtcdTLS, parse_etcd_endpoints
from tests.datastore.helpers import next_events
from tests.support.etcd import EtcdServer, start_etcd

pytestmark = pytest.mark.etcd

P = "/registry/things/"


@pytest.fixture(scope="module")
def tls_etcd() -> Iterator[EtcdServer]:
    with start_etcd(tls=True) as server:
        yield server


def test_endpoints_are_parsed_without_echoing_credentials() -> None:
    assert parse_etcd_endpoints("https://10.0.0.1:2379, https://[fd00::1]:2379") == (
        "https",
        ["10.0.0.1:2379", "[fd00::1]:2379"],
    )
    assert parse_etcd_endpoints("http://etcd.example") == ("http", ["etcd.example:2379"])
    for bad in ("https://u:hunter2@h:2379/path", "https://u:hunter2@h:99999", "https://"):
        with pytest.raises(InvalidRequestError) as caught:
            parse_etcd_endpoints(bad)
        assert "hunter2" not in str(caught.value)
    with pytest.raises(InvalidRequestError, match="all be http:// or all be https://"):
        parse_etcd_endpoints("http://a:2379,https://b:2379")


def test_tls_files_apply_to_etcd_only(tmp_path: pathlib.Path) -> None:
    backend = open_backend("https://127.0.0.1:2379", tmp_path, tls=EtcdTLS(cafile=tmp_path))
    assert isinstance(backend, EtcdBackend)
    assert describe(backend) == "etcd https://127.0.0.1:2379"
    with pytest.raises(InvalidRequestError, match="sslrootcert"):
        open_backend("postgres://u@db/k8s", tmp_path, tls=EtcdTLS(cafile=tmp_path / "ca.crt"))


async def test_client_tls_with_k3s_style_files(
    tls_etcd: EtcdServer, tmp_path: pathlib.Path
) -> None:
    assert tls_etcd.tls is not None
    store = open_backend(tls_etcd.endpoint, tmp_path, tls=tls_etcd.tls)
    await store.start()
    try:
        rev = await store.create(P + "a", b"secret")
        assert (await store.get(P + "a"))[1].mod_revision == rev
    finally:
        await store.close()


async def test_etcd_refuses_a_client_without_a_certificate(
    tls_etcd: EtcdServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sampan.datastore.etcd as driver

    monkeypatch.setattr(driver, "CONNECT_TIMEOUT_S", 1.0)
    assert tls_etcd.tls is not None
    store = EtcdBackend(tls_etcd.endpoint, tls=EtcdTLS(cafile=tls_etcd.tls.cafile))
    with pytest.raises(StoreUnavailableError) as caught:
        await store.start()
    assert str(caught.value).startswith(f"etcd datastore {tls_etcd.endpoint} failed: UNAVAILABLE")
    await store.close()


async def test_a_lease_is_granted_on_first_use(etcd_server: EtcdServer) -> None:
    store = EtcdBackend(etcd_server.endpoint, namespace=etcd_server.namespace())
    await store.start()
    try:
        await store.create(P + "ttl", b"v", lease=600)
        await store.create(P + "ttl2", b"v", lease=600)  # the same lease, already granted
        assert (await store.get(P + "ttl"))[1].lease == 600
    finally:
        await store.close()


async def test_a_floor_raised_by_another_server_is_found(etcd_server: EtcdServer) -> None:
    namespace = etcd_server.namespace()
    one = EtcdBackend(etcd_server.endpoint, namespace=namespace, auto_compact=False)
    two = EtcdBackend(etcd_server.endpoint, namespace=namespace, auto_compact=False)
    await one.start()
    await two.start()
    try:
        rev = await one.create(P + "a", b"0")
        for i in range(5):
            rev = (await one.update(P + "a", str(i).encode(), rev)).mod_revision
        await one.compact(rev - 1)
        with pytest.raises(CompactedError) as caught:
            await two.get(P + "a", revision=rev - 3)
        assert caught.value.compact_revision == rev - 1
        assert await two.compact_revision() == rev - 1
        with pytest.raises(CompactedError):
            await anext(two.watch(P, rev - 1))
    finally:
        await one.close()
        await two.close()


async def test_a_watch_resumes_across_an_etcd_restart() -> None:
    with start_etcd() as server:
        store = EtcdBackend(server.endpoint, auto_compact=False)
        await store.start()
        try:
            first = await store.create(P + "before", b"1")
            watch = store.watch(P, first)
            assert [e.revision for e in await next_events(watch, 1)] == [first]
            await asyncio.to_thread(server.stop)
            await asyncio.to_thread(server.start, same_ports=True)
            after = await store.create(P + "after", b"2")
            events = await next_events(watch, 1, wait_s=30)
            assert [(e.kv.key, e.revision) for e in events] == [(P + "after", after)]
            await watch.aclose()
        finally:
            await store.close()


async def test_compacting_to_the_present_keeps_the_present_readable(
    etcd_server: EtcdServer,
) -> None:
    """A cache that lists at "now" right after another server compacted to "now" must not
    loop on 410s: the present is never compacted away."""
    store = EtcdBackend(etcd_server.endpoint, namespace=etcd_server.namespace(), auto_compact=False)
    await store.start()
    try:
        rev = await store.create(P + "a", b"0")
        rev = (await store.update(P + "a", b"1", rev)).mod_revision
        await store.compact(rev)
        assert [kv.value for kv in (await store.list(P, revision=rev)).items] == [b"1"]
        with pytest.raises(CompactedError):
            await store.get(P + "a", revision=rev - 1)
        watch = store.watch(P, rev + 1)
        later = await store.update(P + "a", b"2", rev)
        assert [e.revision for e in await next_events(watch, 1)] == [later.mod_revision]
        await watch.aclose()
    finally:
        await store.close()


def _range_calls(server: EtcdServer) -> int:
    """Range RPCs etcd has answered so far (its own metrics, on the client URL)."""
    import urllib.request

    with urllib.request.urlopen(server.endpoint + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return sum(
        int(float(line.rsplit(" ", 1)[1]))
        for line in text.splitlines()
        if line.startswith("grpc_server_handled_total{")
        and 'grpc_method="Range"' in line
        and 'grpc_service="etcdserverpb.KV"' in line
    )


async def test_concurrent_revision_reads_share_a_range_and_follow_earlier_writes(
    etcd_server: EtcdServer,
) -> None:
    """The API server asks for the current revision on every consistent read; concurrent
    askers share one Range, yet each answer is read after its caller's earlier write (a caller
    never joins a read already sent)."""
    store = EtcdBackend(etcd_server.endpoint, namespace=etcd_server.namespace(), auto_compact=False)
    await store.start()
    try:
        before = await asyncio.to_thread(_range_calls, etcd_server)
        revisions = await asyncio.gather(*(store.current_revision() for _ in range(200)))
        used = await asyncio.to_thread(_range_calls, etcd_server) - before
        assert len(set(revisions)) == 1
        assert used <= 2, f"{used} Range calls for 200 concurrent revision reads"

        # A read whose answer is still on its way (held back here after etcd answered it)
        # must not serve a caller whose write completed meanwhile.
        real_call = store._call
        hold = asyncio.Event()

        async def held_call(method: str, request: object, **kwargs: object) -> object:
            response = await real_call(method, request, **kwargs)  # type: ignore[arg-type]
            if method == "Range" and not hold.is_set():
                await hold.wait()
            return response

        store._call = held_call  # type: ignore[method-assign]
        early = asyncio.ensure_future(store.current_revision())
        await asyncio.sleep(0.2)  # its Range has been answered, its answer is held
        written = await store.create(P + "after", b"v")
        late = asyncio.ensure_future(store.current_revision())
        await asyncio.sleep(0.2)
        hold.set()
        assert await early < written <= await late
        store._call = real_call  # type: ignore[method-assign]
        await store.close()
        with pytest.raises(StoreUnavailableError):
            await store.current_revision()
    finally:
        await store.close()
