"""sampan.dns.wire against dnslib: the fast path's replies parse to what the dnslib path gives."""

from __future__ import annotations

import pytest
from dnslib import EDNS0, QTYPE, DNSRecord

from sampan.dns.server import answer_query
from sampan.dns.wire import encode_reply, parse_query

from .test_records import records

NAMES = [
    ("web.default.svc.cluster.local", "A"),
    ("WEB.Default.svc.cluster.local.", "A"),
    ("web.default.svc.cluster.local", "AAAA"),
    ("web.default.svc.cluster.local", "SRV"),
    ("_http._tcp.web.default.svc.cluster.local", "SRV"),
    ("db.default.svc.cluster.local", "A"),
    ("_pg._tcp.db.default.svc.cluster.local", "SRV"),
    ("db-0.db.default.svc.cluster.local", "A"),
    ("ext.other.svc.cluster.local", "A"),
    ("nope.default.svc.cluster.local", "A"),
    ("20.0.43.10.in-addr.arpa", "PTR"),
    ("10-42-1-7.default.pod.cluster.local", "A"),
    ("cluster.local", "TXT"),
    ("web.default.svc.cluster.local", "MX"),
]


def summary(reply: DNSRecord) -> tuple[object, ...]:
    def rrs(section: list) -> list[tuple[str, int, int, str]]:
        return [(str(rr.rname).lower(), rr.rtype, rr.ttl, str(rr.rdata)) for rr in section]

    header = reply.header
    return (
        header.id,
        header.qr,
        header.aa,
        header.tc,
        header.rd,
        header.ra,
        header.rcode,
        str(reply.q.qname),
        reply.q.qtype,
        rrs(reply.rr),
        rrs(reply.auth),
        rrs(reply.ar),
    )


@pytest.mark.parametrize(("name", "qtype"), NAMES)
@pytest.mark.parametrize("edns", [False, True])
def test_fast_path_matches_dnslib(name: str, qtype: str, edns: bool) -> None:
    r = records()
    request = DNSRecord.question(name, qtype)
    if edns:
        request.add_ar(EDNS0(udp_len=1232))
    data = request.pack()
    query = parse_query(data)
    assert query is not None
    answer = r.resolve(query.name, query.qtype)
    assert not answer.forward
    fast = encode_reply(
        query,
        answer,
        domain=r.domain,
        in_domain=r.in_domain(query.name),
        serial=r.generation,
        ttl_s=r.ttl_s,
        udp=True,
    )
    slow, forward = answer_query(r, DNSRecord.parse(data))
    assert not forward
    assert summary(DNSRecord.parse(fast)) == summary(slow)
    assert fast[12 : 12 + len(query.question)] == data[12 : 12 + len(query.question)]


def test_forwarded_names_are_parsed_too() -> None:
    query = parse_query(DNSRecord.question("Example.COM", "AAAA").pack())
    assert query is not None and query.name == "example.com" and query.qtype == "AAAA"
    assert records().resolve(query.name, query.qtype).forward


def test_unusual_queries_left_to_dnslib() -> None:
    normal = DNSRecord.question("web.default.svc.cluster.local").pack()
    response = bytearray(normal)
    response[2] |= 0x80  # QR set
    assert parse_query(bytes(response)) is None
    two = DNSRecord.question("a.cluster.local")
    two.add_question(*DNSRecord.question("b.cluster.local").questions)
    assert parse_query(two.pack()) is None
    pointer = normal[:12] + b"\xc0\x0c" + normal[-4:]
    assert parse_query(pointer) is None
    assert parse_query(normal[:-1]) is None
    assert parse_query(normal + b"\x00") is None
    chaos = DNSRecord.question("version.bind", "TXT", "CH").pack()
    assert parse_query(chaos) is None


def test_udp_reply_too_large_is_truncated() -> None:
    r = records()
    for i in range(60):
        r.upsert_slice(
            {
                "metadata": {
                    "name": f"db-x{i}",
                    "namespace": "default",
                    "labels": {"kubernetes.io/service-name": "db"},
                },
                "addressType": "IPv4",
                "endpoints": [{"addresses": [f"10.42.1.{i}"], "hostname": f"host-number-{i}"}],
                "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}],
            }
        )
    query = parse_query(DNSRecord.question("_pg._tcp.db.default.svc.cluster.local", "SRV").pack())
    assert query is not None
    answer = r.resolve(query.name, query.qtype)
    kw = dict(domain=r.domain, in_domain=True, serial=r.generation, ttl_s=r.ttl_s)
    udp = DNSRecord.parse(encode_reply(query, answer, udp=True, **kw))
    assert udp.header.tc == 1 and not udp.rr
    tcp = DNSRecord.parse(encode_reply(query, answer, udp=False, **kw))
    assert tcp.header.tc == 0 and len(tcp.rr) == 62
    assert all(rr.rtype == QTYPE.SRV for rr in tcp.rr)
