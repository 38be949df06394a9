"""DNSServer against an in-process API server: real UDP and TCP queries over loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import yaml
from dnslib import QTYPE, RCODE, DNSRecord

from sampan.addons import packaged_manifests, render, template_vars
from sampan.client import ApiError, Client
from sampan.client.api import ENDPOINTSLICES, SERVICES
from sampan.dns import DNSOptions, DNSServer

from .conftest import UPSTREAM_ADDRESS, ApiServerHarness, Upstream

WAIT_S = 20.0


@pytest.fixture
async def dns(api_server: ApiServerHarness, upstream: Upstream) -> AsyncIterator[DNSServer]:
    config = await api_server.identity_config("system:sampan-agent")
    server = DNSServer(
        config,
        DNSOptions(
            listen_address="127.0.0.1",
            listen_port=0,
            upstreams=(("127.0.0.1", upstream.port),),
            create_interface=False,
        ),
    )
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def query(server: DNSServer, name: str, qtype: str = "A", *, tcp: bool = False) -> DNSRecord:
    packet = DNSRecord.question(name, qtype)
    raw = await asyncio.to_thread(packet.send, "127.0.0.1", server.port, tcp=tcp, timeout=5)
    reply = DNSRecord.parse(raw)
    assert reply.header.id == packet.header.id  # also through forwarding (IDs are remapped)
    assert reply.q == packet.q
    return reply


async def until(
    server: DNSServer, name: str, qtype: str, ok: Callable[[DNSRecord], bool], **kw: Any
) -> DNSRecord:
    """Query until the informer caches have caught up and ``ok(reply)`` holds."""
    async with asyncio.timeout(WAIT_S):
        while True:
            reply = await query(server, name, qtype, **kw)
            if ok(reply):
                return reply
            await asyncio.sleep(0.05)


def values(reply: DNSRecord, qtype: str) -> list[str]:
    return sorted(str(rr.rdata) for rr in reply.rr if rr.rtype == getattr(QTYPE, qtype))


async def test_cluster_names_udp_tcp_and_forwarding(
    dns: DNSServer, admin: Client, upstream: Upstream
) -> None:
    await admin.create(
        SERVICES,
        {
            "metadata": {"name": "web"},
            "spec": {
                "clusterIP": "10.43.0.80",
                "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
            },
        },
        namespace="default",
    )
    await admin.create(
        SERVICES,
        {"metadata": {"name": "db"}, "spec": {"clusterIP": "None", "ports": [{"port": 5432}]}},
        namespace="default",
    )
    await admin.create(
        ENDPOINTSLICES,
        {
            "metadata": {"name": "db-abc", "labels": {"kubernetes.io/service-name": "db"}},
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": ["10.42.0.5"], "hostname": "db-0", "conditions": {"ready": True}},
                {"addresses": ["10.42.0.6"], "conditions": {"ready": True}},
            ],
            "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}],
        },
        namespace="default",
    )

    web = await until(dns, "web.default.svc.cluster.local", "A", lambda r: bool(r.rr))
    assert values(web, "A") == ["10.43.0.80"]
    assert web.header.aa == 1

    headless = await until(dns, "db.default.svc.cluster.local", "A", lambda r: len(r.rr) == 2)
    assert values(headless, "A") == ["10.42.0.5", "10.42.0.6"]
    assert values(await query(dns, "db-0.db.default.svc.cluster.local"), "A") == ["10.42.0.5"]

    srv = await query(dns, "_http._tcp.web.default.svc.cluster.local", "SRV")
    assert [(rr.rdata.port, str(rr.rdata.target)) for rr in srv.rr] == [
        (80, "web.default.svc.cluster.local.")
    ]
    ptr = await query(dns, "80.0.43.10.in-addr.arpa", "PTR")
    assert values(ptr, "PTR") == ["web.default.svc.cluster.local."]

    missing = await query(dns, "nope.default.svc.cluster.local")
    assert missing.header.rcode == RCODE.NXDOMAIN
    assert missing.auth and missing.auth[0].rtype == QTYPE.SOA

    over_tcp = await query(dns, "web.default.svc.cluster.local", tcp=True)
    assert values(over_tcp, "A") == ["10.43.0.80"]

    forwarded = await query(dns, "example.com")
    assert values(forwarded, "A") == [UPSTREAM_ADDRESS]
    many = await asyncio.gather(*(query(dns, f"host-{i}.example.net") for i in range(20)))
    assert all(values(r, "A") == [UPSTREAM_ADDRESS] for r in many)
    assert [str(r.q.qname) for r in many] == [f"host-{i}.example.net." for i in range(20)]
    before = upstream.queries
    again = await query(dns, "host-3.example.net")  # kept for its TTL
    assert values(again, "A") == [UPSTREAM_ADDRESS]
    assert upstream.queries == before
    forwarded_tcp = await query(dns, "example.org", tcp=True)
    assert values(forwarded_tcp, "A") == [UPSTREAM_ADDRESS]

    # changes reach the answers; the cached reply is not served past a change
    await admin.delete(SERVICES, "web", namespace="default")
    await until(
        dns, "web.default.svc.cluster.local", "A", lambda r: r.header.rcode == RCODE.NXDOMAIN
    )


def kube_dns_service() -> dict[str, Any]:
    """The kube-dns Service as the server's packaged manifest describes it."""
    values = template_vars(
        cluster_dns="10.43.0.10", cluster_domain="cluster.local", default_local_storage_path="/s"
    )
    service = yaml.safe_load(render(packaged_manifests()["coredns"], values))
    assert service["metadata"]["labels"]["k8s-app"] == "kube-dns"
    return service


async def test_kube_dns_service_is_not_the_agents_to_create(
    dns: DNSServer, admin: Client, api_server: ApiServerHarness
) -> None:
    """The agent identity only reads; the server applies kube-dns (the packaged component
    ``coredns``), and once it exists the node's server answers for it."""
    agent = Client(await api_server.identity_config("system:sampan-agent"))
    try:
        with pytest.raises(ApiError) as refused:
            await agent.create(SERVICES, kube_dns_service(), namespace="kube-system")
        assert refused.value.code == 403
    finally:
        await agent.close()
    await admin.create(SERVICES, kube_dns_service(), namespace="kube-system")
    service = await admin.get(SERVICES, "kube-dns", namespace="kube-system")
    assert service["spec"]["clusterIP"] == "10.43.0.10"
    reply = await until(dns, "kube-dns.kube-system.svc.cluster.local", "A", lambda r: bool(r.rr))
    assert values(reply, "A") == ["10.43.0.10"]


async def test_no_upstream_answers_servfail(api_server: ApiServerHarness) -> None:
    config = await api_server.identity_config("system:sampan-agent")
    server = DNSServer(
        config,
        DNSOptions(
            listen_address="127.0.0.1",
            listen_port=0,
            upstreams=(),
            create_interface=False,
        ),
    )
    await server.start()
    try:
        reply = await query(server, "example.com")
        assert reply.header.rcode == RCODE.SERVFAIL
        garbage = await asyncio.to_thread(_send_raw, server.port, b"\x12\x34garbage")
        assert garbage[:2] == b"\x12\x34" and garbage[3] & 0x0F == RCODE.FORMERR
    finally:
        await server.stop()


def _send_raw(port: int, data: bytes) -> bytes:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.sendto(data, ("127.0.0.1", port))
        return sock.recv(4096)


async def test_start_fails_when_the_port_is_taken(api_server: ApiServerHarness) -> None:
    import socket

    config = await api_server.identity_config("system:sampan-agent")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        server = DNSServer(
            config,
            DNSOptions(
                listen_address="127.0.0.1",
                listen_port=port,
                upstreams=(),
                create_interface=False,
            ),
        )
        with pytest.raises(OSError):
            await server.start()
    assert server._factory is None and server._client is None  # stopped what it had started


async def test_losing_the_udp_socket_is_reported(api_server: ApiServerHarness) -> None:
    class Ctx:
        def __init__(self) -> None:
            self.reasons: list[str] = []
            self.failed = asyncio.Event()

        def fail(self, reason: str) -> None:
            self.reasons.append(reason)
            self.failed.set()

    ctx = Ctx()
    config = await api_server.identity_config("system:sampan-agent")
    server = DNSServer(
        config,
        DNSOptions(
            listen_address="127.0.0.1",
            listen_port=0,
            upstreams=(),
            create_interface=False,
        ),
    )
    await server.start(ctx)
    try:
        assert server._udp is not None
        server._udp.close()
        async with asyncio.timeout(WAIT_S):
            await ctx.failed.wait()
        assert "UDP socket" in ctx.reasons[0]
    finally:
        await server.stop()
    assert len(ctx.reasons) == 1  # stop() itself is not a failure


async def test_coredns_metrics(api_server: ApiServerHarness, upstream: Upstream) -> None:
    """``coredns_dns_*`` with CoreDNS's labels: one request and one response per reply, by
    protocol, type, rcode and the plugin that answered."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    registry = CollectorRegistry()
    config = await api_server.identity_config("system:sampan-agent")
    server = DNSServer(
        config,
        DNSOptions(
            listen_address="127.0.0.1",
            listen_port=0,
            upstreams=(("127.0.0.1", upstream.port),),
            create_interface=False,
        ),
        metrics_registry=registry,
    )
    await server.start()
    try:
        await until(
            server,
            "kubernetes.default.svc.cluster.local",
            "A",
            lambda r: r.header.rcode in (RCODE.NOERROR, RCODE.NXDOMAIN),
        )
        await query(server, "nope.default.svc.cluster.local", "AAAA", tcp=True)
        await query(server, "example.com")
        await query(server, "example.com", "CAA")
    finally:
        await server.stop()
    text = generate_latest(registry).decode()
    assert "_created" not in text
    samples = [s for f in text_string_to_metric_families(text) for s in f.samples]

    def total(name: str, **labels: str) -> float:
        return sum(
            s.value
            for s in samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        )

    server_label = f"dns://:{server.port}"
    common = {"server": server_label, "zone": ".", "view": ""}
    assert total("coredns_dns_requests_total", **common, proto="tcp", family="1", type="AAAA") == 1
    assert total("coredns_dns_requests_total", type="other") == 1  # CAA is not tracked
    assert total("coredns_dns_requests_total", proto="udp", type="A") >= 2
    assert (
        total("coredns_dns_responses_total", **common, rcode="NXDOMAIN", plugin="kubernetes") >= 1
    )
    assert total("coredns_dns_responses_total", rcode="NOERROR", plugin="forward") >= 1
    requests = total("coredns_dns_requests_total")
    assert requests == total("coredns_dns_responses_total")
    assert total("coredns_dns_request_duration_seconds_count", **common) == requests
    buckets = [
        s.labels["le"] for s in samples if s.name == "coredns_dns_request_duration_seconds_bucket"
    ]
    assert buckets[:2] == ["0.00025", "0.0005"] and buckets[-2:] == ["8.192", "+Inf"]
