"""The DNS server's Prometheus series, named as CoreDNS's (in the node registry, served on the
kubelet API's ``/metrics``; see ``sampan.client.metrics``):

* ``coredns_dns_requests_total{server,zone,view,proto,family,type}``
* ``coredns_dns_responses_total{server,zone,view,rcode,plugin}``
* ``coredns_dns_request_duration_seconds{server,zone,view}`` (CoreDNS's ``TimeBuckets``,
  ``ExponentialBuckets(0.00025, 2, 16)``)

Labels as CoreDNS with K3s's Corefile (one server block for ``.``): ``server`` is
``dns://:<port>``, ``zone`` ``.``, ``view`` empty, ``proto`` ``udp``/``tcp``, ``family``
``1`` (IPv4) or ``2`` (IPv6), ``type`` the query type for the types CoreDNS tracks and
``other`` for the rest, ``rcode`` its name (``NOERROR``, ``NXDOMAIN``...). ``plugin`` says
what answered, as the CoreDNS plugin that would have: ``kubernetes`` (a cluster name),
``forward`` (an upstream), ``cache`` (a reply reused from either cache), empty for errors
the server itself writes (malformed queries).

Invariant: one request and one response counted per reply sent (counted as plain integers,
summed per family when scraped); parsing for the labels
never raises (a query too short to read counts as type ``other``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from sampan.client.metrics import CompactHistogram, exponential_buckets

__all__ = ["TIME_BUCKETS", "DNSMetrics"]

TIME_BUCKETS = exponential_buckets(0.00025, 2, 16)
ZONE = "."
_TYPES = {
    1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 15: "MX", 16: "TXT", 28: "AAAA",
    33: "SRV", 43: "DS", 46: "RRSIG", 47: "NSEC", 48: "DNSKEY", 50: "NSEC3", 64: "SVCB",
    65: "HTTPS", 251: "IXFR", 252: "AXFR", 255: "ANY",
}  # fmt: skip
_RCODES = {
    0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED",
    6: "YXDOMAIN", 7: "YXRRSET", 8: "NXRRSET", 9: "NOTAUTH", 10: "NOTZONE",
}  # fmt: skip


def query_type(data: bytes) -> str:
    """The label for the first question's type of the query ``data``."""
    i = 12
    try:
        while data[i]:
            if data[i] & 0xC0:  # a pointer: not in a query's first name
                return "other"
            i += data[i] + 1
        qtype = (data[i + 1] << 8) | data[i + 2]
    except IndexError:
        return "other"
    return _TYPES.get(qtype, "other")


class DNSMetrics(Collector):
    """The families, registered in ``registry``. Counts are plain integers per label set,
    summed into the two counter families when scraped: a reply costs a dict update and a
    histogram observation (no lock; the server answers on the event loop)."""

    def __init__(self, registry: CollectorRegistry, port: int) -> None:
        self.server = f"dns://:{port}"
        self.duration = CompactHistogram(
            "coredns_dns_request_duration_seconds",
            "Histogram of the time (in seconds) each request took per zone.",
            ("server", "zone", "view"),
            buckets=TIME_BUCKETS,
            registry=registry,
        )
        self._duration = self.duration.labels(self.server, ZONE, "")
        # (type, tcp, ipv6, rcode, plugin) -> replies
        self._counts: dict[tuple[str, bool, bool, int, str], int] = {}
        registry.register(self)

    def report(
        self, query: bytes, reply: bytes, *, tcp: bool, ipv6: bool, plugin: str, took_s: float
    ) -> None:
        rcode = reply[3] & 0x0F if len(reply) > 3 else 2  # SERVFAIL when there is no reply
        key = (query_type(query), tcp, ipv6, rcode, plugin)
        counts = self._counts
        counts[key] = counts.get(key, 0) + 1
        self._duration.observe(took_s)

    def collect(self) -> Iterable[Any]:
        requests: dict[tuple[str, str, str], int] = {}
        responses: dict[tuple[str, str], int] = {}
        for (qtype, tcp, ipv6, rcode, plugin), count in list(self._counts.items()):
            req = ("tcp" if tcp else "udp", "2" if ipv6 else "1", qtype)
            requests[req] = requests.get(req, 0) + count
            res = (_RCODES.get(rcode, str(rcode)), plugin)
            responses[res] = responses.get(res, 0) + count
        family = CounterMetricFamily(
            "coredns_dns_requests",
            "Counter of DNS requests made per zone, protocol and family.",
            labels=["server", "zone", "view", "proto", "family", "type"],
        )
        for (proto, fam, qtype), count in sorted(requests.items()):
            family.add_metric([self.server, ZONE, "", proto, fam, qtype], count)
        yield family
        family = CounterMetricFamily(
            "coredns_dns_responses",
            "Counter of response status codes.",
            labels=["server", "zone", "view", "rcode", "plugin"],
        )
        for (rcode_name, plugin), count in sorted(responses.items()):
            family.add_metric([self.server, ZONE, "", rcode_name, plugin], count)
        yield family

    def describe(self) -> Iterable[Any]:
        return []
