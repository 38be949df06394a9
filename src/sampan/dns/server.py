"""The agent's cluster DNS server: UDP and TCP on a node-local address, answering from caches.

``DNSServer`` (component name ``dns``) watches Services and EndpointSlices with informers into a
``sampan.dns.records.ClusterRecords`` and answers queries on ``listen_address:listen_port``
(default 169.254.20.10:53, on a dummy interface ``sampan-dns`` it creates, like node-local-dns).
The proxy sends the kube-dns Service IP (``cluster_dns``, 10.43.0.10) there. Names outside the
cluster domain, and reverse names that are not cluster addresses, are forwarded unchanged to the
upstream resolvers (``nameserver`` lines of the host's /etc/resolv.conf by default), over UDP
for UDP clients (a truncated reply is relayed, the client retries over TCP) and over TCP for TCP
clients; SERVFAIL when none answers. The server runs in the host's network namespace, so
loopback upstreams such as 127.0.0.53 work; an upstream equal to our own address or to the
cluster DNS IP is dropped (no forwarding loop). Where the kernel has no dummy link driver the
interface is an empty bridge (it only has to hold the address).

Invariants:
* Cluster answers are computed on the event loop without awaiting (they only read the cache),
  so a UDP query is answered in the callback that received it.
* Packed cluster replies are cached by the request bytes after the ID and reused while
  ``ClusterRecords.generation`` is unchanged; the cache is bounded (``RESPONSE_CACHE_ENTRIES``)
  and dropped as a whole on any change or when full.
* Forwarded replies (NOERROR/NXDOMAIN with records) are reused for their smallest TTL, at
  most ``FORWARD_CACHE_MAX_TTL_S``, from a bounded cache (``FORWARD_CACHE_ENTRIES``); never
  those for reverse names, which may become cluster addresses (those are answered locally).
* UDP replies never exceed 512 bytes or the client's EDNS payload size: larger ones are sent
  empty with TC set, so the client retries over TCP.
* The server only reads (Services, EndpointSlices): the ``kube-dns`` Service itself is the
  packaged component ``coredns`` the Sampan server applies (``sampan/addons/packaged/
  coredns.yaml``), so the agent identity needs no write permission.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import secrets
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from dnslib import AAAA, CNAME, PTR, QTYPE, RCODE, RR, SOA, SRV, A, DNSError, DNSLabel, DNSRecord
from prometheus_client import CollectorRegistry

from sampan.client import Client, ClientConfig, SharedInformerFactory
from sampan.client.api import ENDPOINTSLICES, SERVICES
from sampan.dns.metrics import DNSMetrics
from sampan.dns.records import DEFAULT_CLUSTER_DOMAIN, Answer, ClusterRecords, Record
from sampan.dns.wire import encode_reply, parse_query

__all__ = [
    "DEFAULT_CLUSTER_DNS",
    "DEFAULT_INTERFACE",
    "DEFAULT_LISTEN_ADDRESS",
    "DEFAULT_LISTEN_PORT",
    "DNSOptions",
    "DNSServer",
    "answer_query",
    "ensure_dummy_interface",
    "read_resolv_conf",
]

log = logging.getLogger(__name__)

DEFAULT_CLUSTER_DNS = "10.43.0.10"
DEFAULT_LISTEN_ADDRESS = "169.254.20.10"
DEFAULT_LISTEN_PORT = 53
DEFAULT_INTERFACE = "sampan-dns"
DEFAULT_RESOLV_CONF = Path("/etc/resolv.conf")
DNS_PORT = 53
KUBE_DNS_NAMESPACE = "kube-system"
KUBE_DNS_NAME = "kube-dns"
FORWARD_TIMEOUT_S = 2.0
SYNC_TIMEOUT_S = 60.0
TCP_IDLE_TIMEOUT_S = 10.0
RESPONSE_CACHE_ENTRIES = 10_000
FORWARD_CACHE_ENTRIES = 10_000
FORWARD_CACHE_MAX_TTL_S = 30
UDP_DEFAULT_PAYLOAD = 512
UDP_MAX_PAYLOAD = 4096
UPSTREAM_SOCKETS = 4
MAX_FORWARDS_IN_FLIGHT = 1000
"""Forwarded queries waiting for an upstream at once; more are answered SERVFAIL at once."""
SOA_REFRESH_S, SOA_RETRY_S, SOA_EXPIRE_S = 7200, 1800, 86400


class _FailureSink(Protocol):
    def fail(self, reason: str) -> None: ...


def read_resolv_conf(path: Path = DEFAULT_RESOLV_CONF) -> tuple[tuple[str, int], ...]:
    """The ``nameserver`` addresses of a resolv.conf as (host, 53); () if unreadable."""
    try:
        text = path.read_text()
    except OSError:
        return ()
    servers = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            host = fields[1].split("%", 1)[0]
            try:
                ipaddress.ip_address(host)
            except ValueError:
                continue
            servers.append((host, DNS_PORT))
    return tuple(servers)


@dataclass(frozen=True)
class DNSOptions:
    """Static configuration. ``upstreams`` default to the host's /etc/resolv.conf (read when
    the options are made). ``create_interface`` makes the dummy interface ``interface`` carry
    ``listen_address`` (skipped for loopback addresses). ``listen_port=0`` picks a free port
    (tests); the bound one is ``DNSServer.port``."""

    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN
    cluster_dns: str = DEFAULT_CLUSTER_DNS
    listen_address: str = DEFAULT_LISTEN_ADDRESS
    listen_port: int = DEFAULT_LISTEN_PORT
    upstreams: tuple[tuple[str, int], ...] = field(default_factory=read_resolv_conf)
    create_interface: bool = True
    interface: str = DEFAULT_INTERFACE
    forward_timeout_s: float = FORWARD_TIMEOUT_S
    response_cache: bool = True
    """Reuse packed cluster replies while the records are unchanged (off: for benchmarks)."""


def ensure_dummy_interface(name: str, address: str) -> None:
    """Create link ``name`` carrying ``address``/32 (or /128), up: a dummy link, or an empty
    bridge where the kernel has no dummy driver (both only hold a local address). Blocking: run
    it in a thread. Idempotent."""
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    ip = ipaddress.ip_address(address)
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=name)
        if not found:
            try:
                ipr.link("add", ifname=name, kind="dummy")
            except NetlinkError as exc:
                if exc.code != errno.EOPNOTSUPP:
                    raise
                log.info("dns: no dummy link driver here; %s is an empty bridge", name)
                ipr.link("add", ifname=name, kind="bridge")
            found = ipr.link_lookup(ifname=name)
        index = found[0]
        present = {a.get("address") for a in ipr.get_addr(index=index)}
        if address not in present:
            ipr.addr("add", index=index, address=address, prefixlen=ip.max_prefixlen)
        ipr.link("set", index=index, state="up")


def _rr(record: Record) -> RR:
    rtype = record.rtype
    if rtype == "A":
        rdata: Any = A(record.data)
    elif rtype == "AAAA":
        rdata = AAAA(record.data)
    elif rtype == "CNAME":
        rdata = CNAME(record.data + ".")
    elif rtype == "PTR":
        rdata = PTR(record.data + ".")
    else:
        priority, weight, port, target = record.data
        rdata = SRV(priority, weight, port, target + ".")
    return RR(record.name + ".", getattr(QTYPE, rtype), rdata=rdata, ttl=record.ttl_s)


def answer_query(records: ClusterRecords, request: DNSRecord) -> tuple[DNSRecord, bool]:
    """The reply to ``request`` from ``records``, and whether it must be forwarded instead."""
    question = request.q
    qname = str(question.qname)
    qtype = QTYPE.get(question.qtype, "")
    answer: Answer = records.resolve(qname, str(qtype))
    if answer.forward:
        return request.reply(), True
    reply = request.reply(ra=1, aa=1 if answer.authoritative else 0)
    reply.header.rcode = answer.rcode
    for record in answer.answers:
        reply.add_answer(_rr(record))
    for record in answer.additional:
        reply.add_ar(_rr(record))
    if not answer.answers:
        zone = records.domain if records.in_domain(qname) else qname.rstrip(".")
        soa = SOA(
            DNSLabel("ns.dns." + records.domain + "."),
            DNSLabel("hostmaster." + records.domain + "."),
            (records.generation, SOA_REFRESH_S, SOA_RETRY_S, SOA_EXPIRE_S, records.ttl_s),
        )
        reply.add_auth(RR(zone + ".", QTYPE.SOA, rdata=soa, ttl=records.ttl_s))
    return reply, False


def _payload_limit(request: DNSRecord) -> int:
    for rr in request.ar:
        if rr.rtype == QTYPE.OPT:
            return max(UDP_DEFAULT_PAYLOAD, min(int(rr.rclass), UDP_MAX_PAYLOAD))
    return UDP_DEFAULT_PAYLOAD


def _error_reply(data: bytes, rcode: int) -> bytes | None:
    """A header-only error reply echoing the request's ID and question when parseable."""
    try:
        request = DNSRecord.parse(data)
    except DNSError:
        if len(data) < 2:
            return None
        # ID, QR=1 + opcode 0, rcode; no records.
        return data[:2] + struct.pack("!BBHHHH", 0x80, rcode, 0, 0, 0, 0)
    reply = request.reply()
    reply.header.rcode = rcode
    return reply.pack()


def _cacheable_ttl_s(reply: bytes) -> int:
    """How long a forwarded reply may be reused: 0 unless a complete NOERROR/NXDOMAIN reply
    with records, else the smallest TTL in it, at most ``FORWARD_CACHE_MAX_TTL_S`` (the TTLs
    in a reused reply are not counted down, so the cap bounds how stale a client can get)."""
    try:
        parsed = DNSRecord.parse(reply)
    except DNSError:
        return 0
    if parsed.header.tc or parsed.header.rcode not in (RCODE.NOERROR, RCODE.NXDOMAIN):
        return 0
    ttls = [rr.ttl for rr in (*parsed.rr, *parsed.auth)]
    if not ttls:
        return 0
    return min(*ttls, FORWARD_CACHE_MAX_TTL_S)


class _UpstreamSocket(asyncio.DatagramProtocol):
    """One connected UDP socket to an upstream, shared by many queries: each query is sent
    under a fresh random ID (its ``pending`` key) and its reply matched by that ID."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.pending: dict[int, asyncio.Future[bytes]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if len(data) < 12:
            return
        future = self.pending.pop(int.from_bytes(data[:2], "big"), None)
        if future is not None and not future.done():
            future.set_result(data)

    def error_received(self, exc: Exception) -> None:
        # An ICMP error (port unreachable...) says the upstream is down for everyone waiting.
        pending, self.pending = self.pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.error_received(exc or ConnectionResetError("upstream socket closed"))

    async def query(self, data: bytes, timeout_s: float) -> bytes:
        assert self.transport is not None
        query_id = secrets.randbits(16)
        while query_id in self.pending:
            query_id = secrets.randbits(16)
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.pending[query_id] = future
        try:
            self.transport.sendto(query_id.to_bytes(2, "big") + data[2:])
            async with asyncio.timeout(timeout_s):
                reply = await future
        finally:
            if self.pending.get(query_id) is future:
                del self.pending[query_id]
        return data[:2] + reply[2:]


class _UpstreamPool:
    """``UPSTREAM_SOCKETS`` shared UDP sockets per upstream, opened on first use, used in
    turn (several source ports, so an off-path forger has to guess port and ID)."""

    def __init__(self) -> None:
        self._sockets: dict[tuple[str, int], list[_UpstreamSocket]] = {}
        self._turn = 0

    async def query(self, upstream: tuple[str, int], data: bytes, timeout_s: float) -> bytes:
        sockets = self._sockets.get(upstream)
        if sockets is None:
            sockets = self._sockets[upstream] = []
        self._turn += 1
        if len(sockets) < UPSTREAM_SOCKETS:
            loop = asyncio.get_running_loop()
            _, protocol = await loop.create_datagram_endpoint(_UpstreamSocket, remote_addr=upstream)
            sockets.append(protocol)
        else:
            protocol = sockets[self._turn % len(sockets)]
            if protocol.transport is None:  # closed: replace it
                sockets.remove(protocol)
                return await self.query(upstream, data, timeout_s)
        return await protocol.query(data, timeout_s)

    def close(self) -> None:
        for sockets in self._sockets.values():
            for protocol in sockets:
                if protocol.transport is not None:
                    protocol.transport.close()
        self._sockets.clear()


async def _query_tcp(upstream: tuple[str, int], data: bytes, timeout_s: float) -> bytes:
    async with asyncio.timeout(timeout_s):
        reader, writer = await asyncio.open_connection(*upstream)
        try:
            writer.write(struct.pack("!H", len(data)) + data)
            await writer.drain()
            (length,) = struct.unpack("!H", await reader.readexactly(2))
            return await reader.readexactly(length)
        finally:
            writer.close()


class _UDPServer(asyncio.DatagramProtocol):
    def __init__(self, server: DNSServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        assert self.transport is not None
        started = time.perf_counter()
        server = self.server
        reply = server.answer_local(data, tcp=False)
        if reply is not None:
            self.transport.sendto(reply, addr)
            server.report(data, reply, tcp=False, ipv6=len(addr) > 2, started=started)
        elif len(data) >= 12:
            server.spawn_forward(data, lambda r: self._send(data, r, addr, started))

    def _send(self, query: bytes, reply: bytes, addr: Any, started: float) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(reply, addr)
            self.server.report(
                query, reply, tcp=False, ipv6=len(addr) > 2, started=started, plugin="forward"
            )

    def error_received(self, exc: Exception) -> None:
        log.debug("dns: UDP error: %s", exc)

    def connection_lost(self, exc: Exception | None) -> None:
        transport, self.transport = self.transport, None
        self.server.udp_lost(exc, transport)


PORT_ATTEMPTS = 20
"""Tries at a free UDP port whose TCP port is free too (``listen_port`` 0)."""


class DNSServer:
    """The node-local cluster DNS server component (see the module docstring).

    Construct with ``DNSServer(ClientConfig.from_kubeconfig(agent_kubeconfig), DNSOptions(...))``;
    ``start(ctx)`` returns once the caches are synced and both sockets listen.
    """

    name = "dns"

    def __init__(
        self,
        client_config: ClientConfig,
        options: DNSOptions | None = None,
        *,
        metrics_registry: CollectorRegistry | None = None,
    ) -> None:
        """``metrics_registry``: where ``coredns_*`` series go (the agent's node registry;
        None: a private one)."""
        self.options = options or DNSOptions()
        self._metrics_registry = (
            metrics_registry if metrics_registry is not None else CollectorRegistry()
        )
        self.metrics: DNSMetrics | None = None  # made once the port is known (start)
        self.answered_by = ""
        """What made the last reply of ``answer_local``: kubernetes, cache or "" (an error)."""
        self.client_config = client_config.with_user_agent("sampan-dns")
        self.records = ClusterRecords(domain=self.options.cluster_domain)
        self.upstreams = tuple(
            u
            for u in self.options.upstreams
            if u != (self.options.listen_address, self.options.listen_port)
            and u[0] != self.options.cluster_dns
        )
        self.port = self.options.listen_port
        self.address = self.options.listen_address
        self.queries_answered = 0
        self.queries_forwarded = 0
        self._client: Client | None = None
        self._factory: SharedInformerFactory | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._cache: dict[bytes, bytes] = {}
        self._cache_generation = -1
        self._forward_cache: dict[bytes, tuple[float, bytes]] = {}
        self._ctx: _FailureSink | None = None
        self._upstreams = _UpstreamPool()

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, ctx: _FailureSink | None = None) -> None:
        self._ctx = ctx
        self._client = Client(self.client_config)
        self._factory = SharedInformerFactory(self._client)
        records = self.records
        services = self._factory.informer(SERVICES)
        services.add_event_handler(
            on_add=records.upsert_service,
            on_update=lambda _old, new: records.upsert_service(new),
            on_delete=records.delete_service,
        )
        slices = self._factory.informer(ENDPOINTSLICES)
        slices.add_event_handler(
            on_add=records.upsert_slice,
            on_update=lambda _old, new: records.upsert_slice(new),
            on_delete=records.delete_slice,
        )
        self._factory.start()
        try:
            if not await self._factory.wait_synced(SYNC_TIMEOUT_S):
                raise RuntimeError(f"dns: caches not synced within {SYNC_TIMEOUT_S:g} s")
            await self._listen()
        except BaseException:  # cancelled or failed: leave nothing running, then re-raise
            await self.stop()
            raise
        log.info(
            "dns: serving %s on %s:%d (udp, tcp), upstreams %s",
            self.records.domain,
            self.address,
            self.port,
            ", ".join(f"{h}:{p}" for h, p in self.upstreams) or "none",
        )

    async def _listen(self) -> None:
        address = self.options.listen_address
        if self.options.create_interface and not ipaddress.ip_address(address).is_loopback:
            await asyncio.to_thread(ensure_dummy_interface, self.options.interface, address)
        loop = asyncio.get_running_loop()
        # With listen_port 0 the kernel picks a free UDP port, whose TCP twin may be taken:
        # then pick again (a fixed port that is taken fails at once).
        for attempt in range(PORT_ATTEMPTS):
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _UDPServer(self), local_addr=(address, self.options.listen_port)
            )
            self._udp = transport
            self.port = transport.get_extra_info("sockname")[1]
            try:
                self._tcp = await asyncio.start_server(self._serve_tcp, address, self.port)
            except OSError as exc:
                if (
                    exc.errno != errno.EADDRINUSE
                    or self.options.listen_port != 0
                    or attempt == PORT_ATTEMPTS - 1
                ):
                    raise
                self._udp = None  # closed on purpose: udp_lost() must not fail the agent
                transport.close()
                continue
            break
        if self.metrics is None:
            self.metrics = DNSMetrics(self._metrics_registry, self.port)

    def udp_lost(self, exc: Exception | None, transport: Any = None) -> None:
        """The UDP socket closed: expected in ``stop()`` (or for a socket given up at start),
        fatal otherwise."""
        if self._udp is None or (transport is not None and transport is not self._udp):
            return
        self._udp = None
        reason = f"dns: UDP socket on {self.address}:{self.port} closed: {exc}"
        log.error("%s", reason)
        if self._ctx is not None:
            self._ctx.fail(reason)

    async def stop(self) -> None:
        if self._udp is not None:
            udp, self._udp = self._udp, None
            udp.close()
        if self._tcp is not None:
            self._tcp.close()
            await self._tcp.wait_closed()
            self._tcp = None
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._upstreams.close()
        if self._factory is not None:
            await self._factory.stop()
            self._factory = None
        if self._client is not None:
            await self._client.close()
            self._client = None

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("dns: task %s failed", task.get_name(), exc_info=task.exception())

    # -- answering ---------------------------------------------------------------------------

    def report(
        self,
        query: bytes,
        reply: bytes,
        *,
        tcp: bool,
        ipv6: bool,
        started: float,
        plugin: str | None = None,
    ) -> None:
        """Count one reply sent (``plugin`` None: what ``answer_local`` last used)."""
        if self.metrics is not None:
            self.metrics.report(
                query,
                reply,
                tcp=tcp,
                ipv6=ipv6,
                plugin=self.answered_by if plugin is None else plugin,
                took_s=time.perf_counter() - started,
            )

    def answer_local(self, data: bytes, *, tcp: bool) -> bytes | None:
        """The packed reply to ``data`` if it is a cluster name (or malformed); None when it
        has to be forwarded."""
        generation = self.records.generation
        if generation != self._cache_generation:
            self._cache.clear()
            self._cache_generation = generation
        key = (b"T" if tcp else b"U") + data[2:]
        cached = self._cache.get(key)
        if cached is not None:
            self.queries_answered += 1
            self.answered_by = "cache"
            return data[:2] + cached
        if key in self._forward_cache:
            forwarded = self._forwarded_from_cache(key, data)
            if forwarded is not None:
                return forwarded
        packed = self._answer_fast(data, tcp=tcp)
        if packed is not None:
            if not packed:
                return None
            self._remember(key, packed)
            self.answered_by = "kubernetes"
            return packed
        self.answered_by = ""
        try:
            request = DNSRecord.parse(data)
        except DNSError:
            return _error_reply(data, RCODE.FORMERR)
        if request.header.qr or request.header.opcode != 0 or len(request.questions) != 1:
            return _error_reply(data, RCODE.NOTIMP if request.header.opcode else RCODE.FORMERR)
        self.answered_by = "kubernetes"
        reply, forward = answer_query(self.records, request)
        if forward:
            return None
        packed = reply.pack()
        if not tcp and len(packed) > _payload_limit(request):
            truncated = request.reply(ra=1, aa=1)
            truncated.header.tc = 1
            truncated.header.rcode = reply.header.rcode
            packed = truncated.pack()
        self._remember(key, packed)
        return packed

    def _answer_fast(self, data: bytes, *, tcp: bool) -> bytes | None:
        """The reply through ``sampan.dns.wire``; b"" to forward; None to use dnslib."""
        query = parse_query(data)
        if query is None:
            return None
        records = self.records
        answer = records.resolve(query.name, query.qtype)
        if answer.forward:
            return b""
        try:
            return encode_reply(
                query,
                answer,
                domain=records.domain,
                in_domain=records.in_domain(query.name),
                serial=records.generation,
                ttl_s=records.ttl_s,
                udp=not tcp,
            )
        except ValueError:
            return None

    def _remember(self, key: bytes, packed: bytes) -> None:
        self.queries_answered += 1
        if self.options.response_cache:
            if len(self._cache) >= RESPONSE_CACHE_ENTRIES:
                self._cache.clear()
            self._cache[key] = packed[2:]

    def spawn_forward(self, data: bytes, send: Any) -> None:
        """Forward ``data`` upstream in a task and ``send(reply)`` when it comes back."""
        if len(self._tasks) >= MAX_FORWARDS_IN_FLIGHT:
            reply = _error_reply(data, RCODE.SERVFAIL)
            if reply is not None:
                send(reply)
            return

        async def forward() -> None:
            send(await self.forward(data, tcp=False))

        self._spawn(forward(), "dns-forward")

    def _forwarded_from_cache(self, key: bytes, data: bytes) -> bytes | None:
        entry = self._forward_cache.get(key)
        if entry is None:
            return None
        if entry[0] <= asyncio.get_running_loop().time():
            del self._forward_cache[key]
            return None
        self.queries_answered += 1
        self.answered_by = "cache"
        return data[:2] + entry[1]

    def _remember_forwarded(self, data: bytes, reply: bytes, *, tcp: bool) -> None:
        if b"\x04arpa\x00" in data[12:].lower():
            return  # reverse names may become cluster addresses: never kept
        ttl_s = _cacheable_ttl_s(reply)
        if ttl_s <= 0:
            return
        now = asyncio.get_running_loop().time()
        if len(self._forward_cache) >= FORWARD_CACHE_ENTRIES:
            self._forward_cache = {k: v for k, v in self._forward_cache.items() if v[0] > now}
            if len(self._forward_cache) >= FORWARD_CACHE_ENTRIES:
                self._forward_cache.clear()
        key = (b"T" if tcp else b"U") + data[2:]
        self._forward_cache[key] = (now + ttl_s, reply[2:])

    async def forward(self, data: bytes, *, tcp: bool) -> bytes:
        """The upstream reply to ``data``; SERVFAIL when no upstream answers. Good replies are
        kept for their smallest TTL, at most ``FORWARD_CACHE_MAX_TTL_S``."""
        reply = await self._forward(data, tcp=tcp)
        if self.options.response_cache and reply:
            self._remember_forwarded(data, reply, tcp=tcp)
        return reply

    async def _forward(self, data: bytes, *, tcp: bool) -> bytes:
        self.queries_forwarded += 1
        timeout_s = self.options.forward_timeout_s
        for upstream in self.upstreams:
            try:
                if tcp:
                    return await _query_tcp(upstream, data, timeout_s)
                # A truncated (TC) reply goes back as it is: the client retries over TCP.
                return await self._upstreams.query(upstream, data, timeout_s)
            except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
                log.debug("dns: upstream %s:%d failed: %s", upstream[0], upstream[1], exc)
        reply = _error_reply(data, RCODE.SERVFAIL)
        return reply if reply is not None else b""

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        ipv6 = isinstance(peer, tuple) and len(peer) > 2
        try:
            while True:
                try:
                    async with asyncio.timeout(TCP_IDLE_TIMEOUT_S):
                        (length,) = struct.unpack("!H", await reader.readexactly(2))
                        data = await reader.readexactly(length)
                except (TimeoutError, asyncio.IncompleteReadError):
                    return
                started = time.perf_counter()
                reply = self.answer_local(data, tcp=True)
                plugin = self.answered_by
                if reply is None:
                    reply = await self.forward(data, tcp=True)
                    plugin = "forward"
                if not reply:
                    return
                writer.write(struct.pack("!H", len(reply)) + reply)
                self.report(data, reply, tcp=True, ipv6=ipv6, started=started, plugin=plugin)
                await writer.drain()
        except OSError as exc:
            log.debug("dns: TCP client error: %s", exc)
        finally:
            writer.close()
