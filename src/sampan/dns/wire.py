"""A fast path for the DNS wire format of ordinary queries and the cluster answers to them.

``parse_query`` reads the common query shape only: a standard query (QR=0, opcode 0) with one
question of class IN, no answer or authority records, and at most one additional record that
is an EDNS OPT at the root. Anything else returns None and the caller falls back to dnslib,
which handles (and rejects) the rest. ``encode_reply`` writes the reply for a
``sampan.dns.records.Answer``: the question echoed byte for byte, answer names equal to the
question name compressed to a pointer at it, other names written in full, and an SOA in the
authority section when there are no answers. It raises ``ValueError`` for a name it cannot
write (a label over 63 bytes or not ASCII); the caller falls back to dnslib then.

Invariant: for every input this module accepts, its output parses with dnslib to the same
records the dnslib path would produce (tests/dns/test_wire.py checks that).
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from sampan.dns.records import Answer, Record

__all__ = ["Query", "encode_reply", "parse_query"]

_HEADER = struct.Struct("!HHHHHH")
_QTYPE_NAMES = {1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 15: "MX", 16: "TXT"}
_QTYPE_NAMES |= {28: "AAAA", 33: "SRV", 35: "NAPTR", 65: "HTTPS", 255: "ANY"}
_TYPE_CODES = {"A": 1, "CNAME": 5, "SOA": 6, "PTR": 12, "AAAA": 28, "SRV": 33}
_CLASS_IN = 1
_TYPE_OPT = 41
_FLAG_QR = 0x8000
_FLAG_AA = 0x0400
_FLAG_TC = 0x0200
_FLAG_RD = 0x0100
_FLAG_RA = 0x0080
_OPCODE_MASK = 0x7800
_POINTER_TO_QUESTION = b"\xc0\x0c"
UDP_DEFAULT_PAYLOAD = 512
UDP_MAX_PAYLOAD = 4096
SOA_REFRESH_S, SOA_RETRY_S, SOA_EXPIRE_S = 7200, 1800, 86400


@dataclass(frozen=True, slots=True)
class Query:
    """A parsed ordinary query: ``name`` lower-case without the final dot, ``qtype`` a name
    (``"A"``) or ``"TYPE<n>"``, ``question`` the raw question bytes to echo."""

    id_bytes: bytes
    flags: int
    name: str
    qtype: str
    question: bytes
    udp_payload: int


def parse_query(data: bytes) -> Query | None:
    if len(data) < 17:
        return None
    _, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(data)
    if flags & (_FLAG_QR | _OPCODE_MASK) or qdcount != 1 or ancount or nscount or arcount > 1:
        return None
    labels = []
    offset = 12
    while True:
        length = data[offset]
        if length == 0:
            offset += 1
            break
        if length > 63:  # a compression pointer or a reserved label type
            return None
        labels.append(data[offset + 1 : offset + 1 + length])
        offset += 1 + length
        if offset >= len(data):
            return None
    if offset + 4 > len(data):
        return None
    qtype_code, qclass = struct.unpack_from("!HH", data, offset)
    offset += 4
    if qclass != _CLASS_IN:
        return None
    question = data[12:offset]
    udp_payload = UDP_DEFAULT_PAYLOAD
    if arcount:
        # OPT: root name, type, payload size (class), ttl, rdlength, rdata
        if offset + 11 > len(data) or data[offset] != 0:
            return None
        rtype, payload, _, rdlength = struct.unpack_from("!HHIH", data, offset + 1)
        if rtype != _TYPE_OPT:
            return None
        offset += 11 + rdlength
        udp_payload = max(UDP_DEFAULT_PAYLOAD, min(payload, UDP_MAX_PAYLOAD))
    if offset != len(data):
        return None
    try:
        name = b".".join(labels).decode("ascii").lower()
    except UnicodeDecodeError:
        return None
    if any(b"." in label for label in labels):
        return None  # a dot inside a label: leave it to dnslib
    qtype = _QTYPE_NAMES.get(qtype_code) or f"TYPE{qtype_code}"
    return Query(data[:2], flags, name, qtype, question, udp_payload)


def _name(name: str) -> bytes:
    out = bytearray()
    for label in name.rstrip(".").split("."):
        if not label:
            continue
        raw = label.encode("ascii")
        if len(raw) > 63:
            raise ValueError(f"label too long in {name!r}")
        out.append(len(raw))
        out += raw
    out.append(0)
    return bytes(out)


def _record(query: Query, record: Record) -> bytes:
    owner = _POINTER_TO_QUESTION if record.name == query.name else _name(record.name)
    rtype = record.rtype
    if rtype == "A":
        rdata = socket.inet_aton(record.data)
    elif rtype == "AAAA":
        rdata = socket.inet_pton(socket.AF_INET6, record.data)
    elif rtype in ("CNAME", "PTR"):
        rdata = _name(record.data)
    elif rtype == "SRV":
        priority, weight, port, target = record.data
        rdata = struct.pack("!HHH", priority, weight, port) + _name(target)
    else:
        raise ValueError(f"no fast encoding for {rtype}")
    return (
        owner
        + struct.pack("!HHIH", _TYPE_CODES[rtype], _CLASS_IN, record.ttl_s, len(rdata))
        + rdata
    )


def _soa(zone: str, domain: str, serial: int, ttl_s: int) -> bytes:
    rdata = (
        _name("ns.dns." + domain)
        + _name("hostmaster." + domain)
        + struct.pack(
            "!IIIII", serial & 0xFFFFFFFF, SOA_REFRESH_S, SOA_RETRY_S, SOA_EXPIRE_S, ttl_s
        )
    )
    return (
        _name(zone) + struct.pack("!HHIH", _TYPE_CODES["SOA"], _CLASS_IN, ttl_s, len(rdata)) + rdata
    )


def encode_reply(
    query: Query,
    answer: Answer,
    *,
    domain: str,
    in_domain: bool,
    serial: int,
    ttl_s: int,
    udp: bool,
) -> bytes:
    """The packed reply to ``query``; over UDP one that does not fit the client's payload size
    is sent without records and with TC set."""
    flags = _FLAG_QR | (query.flags & _FLAG_RD) | _FLAG_RA | (answer.rcode & 0xF)
    if answer.authoritative:
        flags |= _FLAG_AA
    answers = b"".join(_record(query, r) for r in answer.answers)
    additional = b"".join(_record(query, r) for r in answer.additional)
    authority = b""
    if not answer.answers:
        zone = domain if in_domain else query.name
        authority = _soa(zone, domain, serial, ttl_s)
    counts = (
        1,
        len(answer.answers),
        1 if authority else 0,
        len(answer.additional),
    )
    header = query.id_bytes + struct.pack("!HHHHH", flags, *counts)
    reply = header + query.question + answers + authority + additional
    if udp and len(reply) > query.udp_payload:
        header = query.id_bytes + struct.pack("!HHHHH", flags | _FLAG_TC, 1, 0, 0, 0)
        reply = header + query.question
    return reply
