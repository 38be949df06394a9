"""The etcd driver: the ``Backend`` protocol on a real etcd v3 cluster (external or embedded).

Owns one gRPC channel to etcd (client TLS when the endpoint is ``https://``), the watch streams
it opens, and the background compactor.

Client choice. PyPI's ``aetcd`` (1.0.0, asyncio, on ``grpcio``) was evaluated: its ``Client``
only ever opens an *insecure* channel (no CA, no client certificate: unusable for an embedded
etcd with client TLS or K3s's ``--datastore-cafile/certfile/keyfile``), and its watcher hides
``compact_revision`` behind callbacks. Its generated etcd v3 stubs (``aetcd.rpc``: KV, Watch,
Lease, Cluster with learners and ``MemberPromote``, Maintenance) are complete and maintained,
so this module uses those stubs (no JSON gateway, nothing generated at build time, no .proto
of ours) and drives them itself over a ``grpc.aio`` channel with TLS.

Mapping onto etcd (upstream kube-apiserver's own mapping):

* keys are stored as ``namespace + key`` (``namespace`` is empty in production, so etcdctl
  sees ``/registry/...`` as with kube-apiserver; tests give each test its own);
* a revision is etcd's revision: ``mod_revision``/``create_revision`` come straight from etcd,
  so resourceVersion is etcd's revision, as upstream. A fresh etcd is at revision 1;
* create = Txn(create_revision(key) == 0 -> Put); update = Txn(create_revision > 0 and
  mod_revision == expected -> Put(prev_kv), else Range); delete likewise with DeleteRange. A
  refused Txn writes nothing, so refused writes never consume a revision;
* reads use linearizable Range (``limit`` + ``more`` for paging, ``count_only`` for count);
* ``current_revision`` (asked by every consistent read the API server serves from its cache)
  is one count-only Range shared by all concurrent callers: a caller joins the next read not
  yet sent, so each answer is still read after the caller's own earlier writes;
* watch is etcd's watch with ``prev_kv`` from ``start_revision``; a stream broken by a lost
  connection is resumed from the next revision (each event still delivered exactly once);
* compaction: ``compact(N)`` is etcd's ``Compact(N)``. etcd still serves revision N itself
  (so the first event after it keeps its ``prev_kv``), but the protocol says N is gone: the
  driver refuses reads and watches at or below the floor it knows before asking etcd, and
  etcd refuses anything older. etcd does not tell its compaction revision directly; the
  driver finds it with count-only Ranges (a read below it fails with ErrCompacted), starting
  from the floor it knew (one Range when nothing changed);
* ``lease`` is an etcd lease ID; one etcd does not know is granted on first use with a TTL of
  that many seconds (kine's convention: a lease ID is its TTL).

Compaction runs every ``ETCD_COMPACT_INTERVAL_S`` (5 minutes, as kube-apiserver requests it)
and keeps the newest revisions and five minutes of history (``compaction.RetentionWindow``).
Several servers may each request it: a compaction at or below the current floor is a no-op.

Invariants: no grpc error leaves this module (they become ``StoreError``s; unreachable or
timed-out calls ``StoreUnavailableError`` naming the endpoint without credentials); every
unary call has a deadline (``REQUEST_TIMEOUT_S``); no key material is logged.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import functools
import logging
import urllib.parse
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from aetcd.rpc import kv_pb2, rpc_pb2, rpc_pb2_grpc

from sampan.datastore.compaction import RetentionWindow, run_compactor
from sampan.datastore.endpoint import redact_endpoint
from sampan.datastore.keys import check_key, check_prefix, check_value, prefix_end
from sampan.datastore.types import (
    CompactedError,
    ConflictError,
    Event,
    EventType,
    FutureRevisionError,
    InvalidRequestError,
    KeyExistsError,
    KeyNotFoundError,
    KeyValue,
    ListResult,
    StoreError,
    StoreUnavailableError,
)
from sampan.tasks import log_task_end

__all__ = [
    "ETCD_COMPACT_INTERVAL_S",
    "ETCD_SCHEMES",
    "REQUEST_TIMEOUT_S",
    "EtcdBackend",
    "EtcdMember",
    "EtcdMembers",
    "EtcdTLS",
    "parse_etcd_endpoints",
    "probe_etcd",
]

log = logging.getLogger(__name__)

ETCD_SCHEMES = ("http", "https")
"""``--datastore-endpoint`` schemes that name etcd (as K3s tells etcd from SQL)."""

REQUEST_TIMEOUT_S = 10.0
"""Deadline of every unary call: a lost quorum fails requests instead of hanging them."""

CONNECT_TIMEOUT_S = 10.0
ETCD_COMPACT_INTERVAL_S = 300.0
"""How often compaction is requested (kube-apiserver's default ``--etcd-compaction-interval``)."""

WATCH_RESUME_TIMEOUT_S = 30.0
"""A broken watch stream is reopened for at most this long before the watch fails."""

WATCH_RESUME_BACKOFF_S = (0.1, 0.2, 0.5, 1.0, 2.0)
MAX_MESSAGE_BYTES = 512 * 1024 * 1024
"""gRPC message limit for responses: a list of 100,000 objects is one Range response."""

_PROBE_KEY = b"\x00sampan/revision-probe"
"""A key no write ever uses: count-only Ranges on it read the header and test a revision."""

_COMPACTED = "required revision has been compacted"
_FUTURE = "required revision is a future revision"
_LEASE_NOT_FOUND = "requested lease not found"
_TOO_LARGE = "request is too large"


@dataclass(frozen=True)
class EtcdTLS:
    """Client TLS files (K3s's ``--datastore-cafile/certfile/keyfile``); any may be None.
    The files are read once, by the first ``credentials()`` (blocking: the driver calls it
    from a thread at start)."""

    cafile: Path | None = None
    certfile: Path | None = None
    keyfile: Path | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        return self._credentials

    @functools.cached_property
    def _credentials(self) -> grpc.ChannelCredentials:
        def read(path: Path | None) -> bytes | None:
            return path.read_bytes() if path is not None else None

        if (self.certfile is None) != (self.keyfile is None):
            raise InvalidRequestError(
                "etcd client TLS needs both a certificate and a key (datastore-certfile and "
                "datastore-keyfile)"
            )
        try:
            return grpc.ssl_channel_credentials(
                root_certificates=read(self.cafile),
                private_key=read(self.keyfile),
                certificate_chain=read(self.certfile),
            )
        except OSError as err:
            raise InvalidRequestError(
                f"cannot read etcd TLS file {err.filename}: {err.strerror}"
            ) from None


def parse_etcd_endpoints(endpoint: str) -> tuple[str, list[str]]:
    """``(scheme, ["host:port", ...])`` from ``https://a:2379[,https://b:2379]``;
    InvalidRequestError (never echoing credentials) for anything else."""
    schemes = set()
    targets = []
    for part in endpoint.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            url = urllib.parse.urlsplit(part)
            port = url.port or 2379
        except ValueError:
            raise InvalidRequestError(
                f"invalid etcd endpoint {redact_endpoint(part)}: expected https://HOST:PORT"
            ) from None
        if url.scheme not in ETCD_SCHEMES or not url.hostname:
            raise InvalidRequestError(
                f"invalid etcd endpoint {redact_endpoint(part)}: expected https://HOST:PORT"
            )
        if url.path not in ("", "/") or url.query:
            raise InvalidRequestError(
                f"etcd endpoint {redact_endpoint(part)}: a path or query is not supported"
            )
        schemes.add(url.scheme)
        host = f"[{url.hostname}]" if ":" in url.hostname else url.hostname
        targets.append(f"{host}:{port}")
    if not targets:
        raise InvalidRequestError("empty etcd endpoint")
    if len(schemes) != 1:
        raise InvalidRequestError("etcd endpoints must all be http:// or all be https://")
    return schemes.pop(), targets


async def probe_etcd(endpoint: str, tls: EtcdTLS | None = None, timeout_s: float = 2.0) -> int:
    """One linearizable read against the first endpoint: its revision, or
    StoreUnavailableError (for readiness checks; no backend needed)."""
    scheme, targets = parse_etcd_endpoints(endpoint)
    if scheme == "https":
        channel = grpc.aio.secure_channel(targets[0], (tls or EtcdTLS()).credentials())
    else:
        channel = grpc.aio.insecure_channel(targets[0])
    try:
        request = rpc_pb2.RangeRequest(key=_PROBE_KEY, count_only=True)
        response = await rpc_pb2_grpc.KVStub(channel).Range(request, timeout=timeout_s)
        return int(response.header.revision)
    except grpc.aio.AioRpcError as err:
        raise StoreUnavailableError(
            f"etcd {scheme}://{targets[0]}: {err.code().name}: {(err.details() or '')[:200]}"
        ) from None
    finally:
        await channel.close()


@dataclass(frozen=True)
class EtcdMember:
    id: int
    name: str
    """Empty until the member has started and published itself."""
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]
    is_learner: bool


class EtcdMembers:
    """etcd's cluster membership API on one endpoint (``async with EtcdMembers(...) as m``).
    Errors become StoreUnavailableError carrying etcd's own message."""

    def __init__(self, endpoint: str, tls: EtcdTLS | None = None) -> None:
        scheme, targets = parse_etcd_endpoints(endpoint)
        self._where = f"{scheme}://{targets[0]}"
        if scheme == "https":
            self._channel = grpc.aio.secure_channel(targets[0], (tls or EtcdTLS()).credentials())
        else:
            self._channel = grpc.aio.insecure_channel(targets[0])
        self._cluster = rpc_pb2_grpc.ClusterStub(self._channel)
        self._maintenance = rpc_pb2_grpc.MaintenanceStub(self._channel)

    async def __aenter__(self) -> EtcdMembers:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._channel.close()

    async def _rpc(self, call: Any, request: Any) -> Any:
        try:
            return await call(request, timeout=REQUEST_TIMEOUT_S)
        except grpc.aio.AioRpcError as err:
            raise StoreUnavailableError(
                f"etcd {self._where}: {(err.details() or err.code().name)[:200]}"
            ) from None

    @staticmethod
    def _member(m: Any) -> EtcdMember:
        return EtcdMember(m.ID, m.name, tuple(m.peerURLs), tuple(m.clientURLs), m.isLearner)

    async def list(self) -> list[EtcdMember]:
        response = await self._rpc(self._cluster.MemberList, rpc_pb2.MemberListRequest())
        return [self._member(m) for m in response.members]

    async def add_learner(self, peer_url: str) -> tuple[EtcdMember, builtins.list[EtcdMember]]:
        """Adds a learner; returns it and the members after the change."""
        request = rpc_pb2.MemberAddRequest(peerURLs=[peer_url], isLearner=True)
        response = await self._rpc(self._cluster.MemberAdd, request)
        return self._member(response.member), [self._member(m) for m in response.members]

    async def promote(self, member_id: int) -> None:
        await self._rpc(self._cluster.MemberPromote, rpc_pb2.MemberPromoteRequest(ID=member_id))

    async def remove(self, member_id: int) -> None:
        await self._rpc(self._cluster.MemberRemove, rpc_pb2.MemberRemoveRequest(ID=member_id))

    async def status(self) -> int:
        """This endpoint's member ID (answers on a learner too, unlike a linearizable read)."""
        response = await self._rpc(self._maintenance.Status, rpc_pb2.StatusRequest())
        return int(response.header.member_id)


def _retrieve(future: asyncio.Future[int]) -> None:
    """Marks a shared result's exception retrieved (every waiter may have been cancelled)."""
    if not future.cancelled():
        future.exception()


def _kv(kv: Any, strip: int) -> KeyValue:
    return KeyValue(
        key=kv.key[strip:].decode(),
        value=kv.value,
        create_revision=kv.create_revision,
        mod_revision=kv.mod_revision,
        lease=kv.lease,
    )


class EtcdBackend:
    """The etcd ``Backend``. Construct with an endpoint, ``await start()``, ``await close()``."""

    def __init__(
        self,
        endpoint: str,
        *,
        tls: EtcdTLS | None = None,
        namespace: str = "",
        compact_interval_s: float = ETCD_COMPACT_INTERVAL_S,
        retention: RetentionWindow | None = None,
        auto_compact: bool = True,
    ) -> None:
        self._scheme, self._targets = parse_etcd_endpoints(endpoint)
        self._tls = tls or EtcdTLS()
        self._redacted = ",".join(f"{self._scheme}://{t}" for t in self._targets)
        self._ns = namespace.encode()
        self._compact_interval_s = compact_interval_s
        self._retention = retention
        self._auto_compact = auto_compact
        self._target_index = 0
        self._channel: grpc.aio.Channel | None = None
        self._kv: Any = None
        self._watch: Any = None
        self._lease: Any = None
        self._floor = 0
        self._revision_batch: asyncio.Future[int] | None = None
        self._revision_reader: asyncio.Task[None] | None = None
        self._watch_calls: set[Any] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._start_lock = asyncio.Lock()
        self._compact_lock = asyncio.Lock()
        self._started = False
        self._closed = False

    def __repr__(self) -> str:
        return f"EtcdBackend({self._redacted!r})"

    @property
    def description(self) -> str:
        return f"etcd {self._redacted}"

    # --- connection -----------------------------------------------------------------------

    def _open_channel(self) -> None:
        target = self._targets[self._target_index % len(self._targets)]
        options = [
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.keepalive_permit_without_calls", 1),
        ]
        if self._scheme == "https":
            channel = grpc.aio.secure_channel(target, self._tls.credentials(), options=options)
        else:
            channel = grpc.aio.insecure_channel(target, options=options)
        self._channel = channel
        self._kv = rpc_pb2_grpc.KVStub(channel)
        self._watch = rpc_pb2_grpc.WatchStub(channel)
        self._lease = rpc_pb2_grpc.LeaseStub(channel)

    async def _failover(self, channel: grpc.aio.Channel | None) -> None:
        """After an unreachable endpoint, the next call goes to the next one (if several)."""
        if len(self._targets) < 2 or channel is not self._channel or self._closed:
            return
        self._target_index += 1
        old = self._channel
        self._open_channel()
        log.warning("etcd datastore: switching to %s", self._current_target())
        if old is not None:
            # Watches on the old channel break and resume on the new one.
            await old.close(grace=1.0)

    def _current_target(self) -> str:
        return f"{self._scheme}://{self._targets[self._target_index % len(self._targets)]}"

    def _failure(self, err: grpc.aio.AioRpcError, revision: int = 0) -> StoreError:
        """The StoreError for a failed call (only etcd's own message is kept)."""
        details = err.details() or ""
        if _COMPACTED in details:
            return CompactedError(revision, max(self._floor, revision))
        if _FUTURE in details:
            return FutureRevisionError(revision, revision - 1)
        if _TOO_LARGE in details:
            return InvalidRequestError(f"etcd refused the request: {details[:200]}")
        return StoreUnavailableError(
            f"etcd datastore {self._current_target()} failed: {err.code().name}: {details[:200]}"
        )

    async def _call(
        self,
        method: str,
        request: Any,
        *,
        stub: str = "_kv",
        revision: int = 0,
        refine: bool = True,
    ) -> Any:
        """One unary call with a deadline. With ``refine``, a CompactedError carries the
        actual floor and a FutureRevisionError the actual current revision (more calls)."""
        self._check_open()
        channel = self._channel
        try:
            return await getattr(getattr(self, stub), method)(request, timeout=REQUEST_TIMEOUT_S)
        except grpc.aio.AioRpcError as err:
            if err.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                await self._failover(channel)
            failure = self._failure(err, revision)
        if refine and isinstance(failure, CompactedError):
            failure = CompactedError(revision, await self._find_floor())
        elif refine and isinstance(failure, FutureRevisionError):
            failure = FutureRevisionError(revision, await self.current_revision())
        raise failure

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        async with self._start_lock:
            if self._started:
                return
            if self._closed:
                raise StoreUnavailableError("etcd datastore is closed")
            if self._scheme == "https":
                await asyncio.to_thread(self._tls.credentials)  # reads the files once
            self._open_channel()
            self._started = True
            try:
                current = await self._wait_reachable()
                self._floor = await self._find_floor()
            except BaseException:
                self._started = False
                assert self._channel is not None
                await self._channel.close()
                raise
            if self._auto_compact:
                task = asyncio.create_task(
                    run_compactor(
                        self, interval_s=self._compact_interval_s, window=self._retention
                    ),
                    name="datastore-etcd-compactor",
                )
                task.add_done_callback(log_task_end)
                self._tasks.append(task)
            log.info("datastore %s ready at revision %d", self.description, current)

    async def _wait_reachable(self) -> int:
        """The current revision, waiting up to CONNECT_TIMEOUT_S for etcd to answer (each
        endpoint in turn when there are several)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CONNECT_TIMEOUT_S * len(self._targets)
        while True:
            try:
                return await self.current_revision()
            except StoreUnavailableError:
                if loop.time() >= deadline:
                    raise
                await asyncio.sleep(0.2)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        reader = self._revision_reader
        for task in [*self._tasks, *([reader] if reader is not None else [])]:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)
        self._tasks.clear()
        if reader is not None:
            await asyncio.wait([reader])
        if self._revision_batch is not None and not self._revision_batch.done():
            self._revision_batch.set_exception(StoreUnavailableError("etcd datastore is closed"))
        for call in list(self._watch_calls):
            call.cancel()
        if self._channel is not None:
            await self._channel.close()

    def _check_open(self) -> None:
        if not self._started or self._closed:
            raise StoreUnavailableError("etcd datastore is not running")

    # --- reads ----------------------------------------------------------------------------

    async def current_revision(self) -> int:
        """etcd's revision, read linearizably *after* this call began. Concurrent callers
        share one Range: a caller joins the next read that has not been sent yet, never one
        already in flight (which etcd may have served before the caller's own earlier write
        committed), so at most one read is in flight and one more is gathering callers."""
        self._check_open()
        batch = self._revision_batch
        if batch is None:
            batch = self._revision_batch = asyncio.get_running_loop().create_future()
            batch.add_done_callback(_retrieve)
            if self._revision_reader is None or self._revision_reader.done():
                self._revision_reader = asyncio.create_task(
                    self._read_revisions(), name="datastore-etcd-revision"
                )
        return await asyncio.shield(batch)

    async def _read_revisions(self) -> None:
        """Sends one count-only Range per gathered batch until no caller is waiting."""
        request = rpc_pb2.RangeRequest(key=_PROBE_KEY, count_only=True)
        while (batch := self._revision_batch) is not None:
            self._revision_batch = None  # callers from now on wait for the next read
            try:
                response = await self._call("Range", request)
            except Exception as exc:
                batch.set_exception(exc)  # to every caller of this batch
            except BaseException:
                batch.set_exception(StoreUnavailableError("etcd datastore is closed"))
                raise
            else:
                batch.set_result(int(response.header.revision))

    async def _readable(self, revision: int) -> bool:
        """False when ``revision`` has been compacted away."""
        request = rpc_pb2.RangeRequest(key=_PROBE_KEY, count_only=True, revision=revision)
        try:
            await self._call("Range", request, revision=revision, refine=False)
        except CompactedError:
            return False
        return True

    async def _find_floor(self) -> int:
        """The compaction floor, searched above the last one known (one Range when it has
        not moved). etcd serves its compaction revision C itself and fails below it, so C is
        the lowest readable revision once anything fails."""
        low = self._floor
        current = await self.current_revision()
        if low >= current or await self._readable(low + 1):
            return low
        failing, readable = low + 1, current
        while readable - failing > 1:
            middle = (failing + readable) // 2
            if await self._readable(middle):
                readable = middle
            else:
                failing = middle
        self._floor = max(self._floor, readable)
        return self._floor

    async def compact_revision(self) -> int:
        return await self._find_floor()

    def _key(self, key: str) -> bytes:
        return self._ns + key.encode()

    async def get(self, key: str, revision: int = 0) -> tuple[int, KeyValue | None]:
        check_key(key)
        await self._check_revision(revision)
        request = rpc_pb2.RangeRequest(key=self._key(key), revision=max(revision, 0))
        response = await self._call("Range", request, revision=revision)
        at = revision if revision > 0 else response.header.revision
        kv = _kv(response.kvs[0], len(self._ns)) if response.kvs else None
        return at, kv

    async def _check_revision(self, revision: int) -> None:
        """Refuse a read at or below the known floor, except at the current revision itself:
        compaction never removes the present (etcd serves its compaction revision), and a
        cache that lists "now" right after a compaction to "now" must not loop on 410s."""
        if 0 < revision <= self._floor:
            if revision == self._floor and revision == await self.current_revision():
                return
            raise CompactedError(revision, self._floor)

    async def list(
        self, prefix: str, revision: int = 0, limit: int = 0, start_after: str = ""
    ) -> ListResult:
        check_prefix(prefix)
        await self._check_revision(revision)
        lower = self._key(prefix)
        if start_after and start_after >= prefix:
            lower = self._key(start_after) + b"\x00"
        request = rpc_pb2.RangeRequest(
            key=lower,
            range_end=self._key(prefix_end(prefix)),
            revision=max(revision, 0),
            limit=max(limit, 0),
        )
        response = await self._call("Range", request, revision=revision)
        strip = len(self._ns)
        return ListResult(
            items=[_kv(kv, strip) for kv in response.kvs],
            revision=revision if revision > 0 else response.header.revision,
            more=bool(response.more),
        )

    async def count(self, prefix: str, revision: int = 0) -> tuple[int, int]:
        check_prefix(prefix)
        await self._check_revision(revision)
        request = rpc_pb2.RangeRequest(
            key=self._key(prefix),
            range_end=self._key(prefix_end(prefix)),
            revision=max(revision, 0),
            count_only=True,
        )
        response = await self._call("Range", request, revision=revision)
        return (revision if revision > 0 else response.header.revision), response.count

    # --- writes ---------------------------------------------------------------------------

    async def _txn(self, request: Any, lease: int) -> Any:
        try:
            return await self._call("Txn", request)
        except StoreUnavailableError as err:
            if lease <= 0 or _LEASE_NOT_FOUND not in str(err):
                raise
        grant = rpc_pb2.LeaseGrantRequest(ID=lease, TTL=lease)
        with contextlib.suppress(StoreUnavailableError):  # granted meanwhile by another writer
            await self._call("LeaseGrant", grant, stub="_lease")
        return await self._call("Txn", request)

    def _exists(self, key: bytes) -> Any:
        return rpc_pb2.Compare(
            result=rpc_pb2.Compare.GREATER,
            target=rpc_pb2.Compare.CREATE,
            key=key,
            create_revision=0,
        )

    def _mod_is(self, key: bytes, revision: int) -> Any:
        return rpc_pb2.Compare(
            result=rpc_pb2.Compare.EQUAL, target=rpc_pb2.Compare.MOD, key=key, mod_revision=revision
        )

    async def create(self, key: str, value: bytes, lease: int = 0) -> int:
        check_key(key)
        check_value(value)
        k = self._key(key)
        request = rpc_pb2.TxnRequest(
            compare=[
                rpc_pb2.Compare(
                    result=rpc_pb2.Compare.EQUAL,
                    target=rpc_pb2.Compare.CREATE,
                    key=k,
                    create_revision=0,
                )
            ],
            success=[
                rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=k, value=value, lease=lease))
            ],
        )
        response = await self._txn(request, lease)
        if not response.succeeded:
            raise KeyExistsError(key)
        return int(response.header.revision)

    def _refused(self, key: str, expected: int, response: Any) -> StoreError:
        kvs = response.responses[0].response_range.kvs if response.responses else []
        if not kvs:
            return KeyNotFoundError(key)
        return ConflictError(key, expected, _kv(kvs[0], len(self._ns)))

    async def update(
        self, key: str, value: bytes, expected_revision: int, lease: int = 0
    ) -> KeyValue:
        check_key(key)
        check_value(value)
        k = self._key(key)
        request = rpc_pb2.TxnRequest(
            compare=[self._exists(k), self._mod_is(k, expected_revision)],
            success=[
                rpc_pb2.RequestOp(
                    request_put=rpc_pb2.PutRequest(key=k, value=value, lease=lease, prev_kv=True)
                )
            ],
            failure=[rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=k))],
        )
        response = await self._txn(request, lease)
        if not response.succeeded:
            raise self._refused(key, expected_revision, response)
        prev = response.responses[0].response_put.prev_kv
        return KeyValue(
            key=key,
            value=value,
            create_revision=prev.create_revision,
            mod_revision=response.header.revision,
            lease=lease,
        )

    async def delete(self, key: str, expected_revision: int = 0) -> KeyValue:
        check_key(key)
        k = self._key(key)
        compare = [self._exists(k)]
        if expected_revision:
            compare.append(self._mod_is(k, expected_revision))
        request = rpc_pb2.TxnRequest(
            compare=compare,
            success=[
                rpc_pb2.RequestOp(
                    request_delete_range=rpc_pb2.DeleteRangeRequest(key=k, prev_kv=True)
                )
            ],
            failure=[rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=k))],
        )
        response = await self._call("Txn", request)
        if not response.succeeded:
            raise self._refused(key, expected_revision, response)
        prev_kvs = response.responses[0].response_delete_range.prev_kvs
        if not prev_kvs:  # deleted between the compare and the delete: cannot happen in a Txn
            raise KeyNotFoundError(key)
        return _kv(prev_kvs[0], len(self._ns))

    # --- watch ----------------------------------------------------------------------------

    def _event(self, event: Any) -> Event:
        strip = len(self._ns)
        prev = _kv(event.prev_kv, strip) if event.HasField("prev_kv") else None
        if event.type == kv_pb2.Event.DELETE:
            kv = KeyValue(
                key=event.kv.key[strip:].decode(),
                value=b"",
                create_revision=prev.create_revision if prev is not None else 0,
                mod_revision=event.kv.mod_revision,
            )
            return Event(EventType.DELETE, kv, prev)
        return Event(EventType.PUT, _kv(event.kv, strip), prev)

    async def watch(self, prefix: str, start_revision: int) -> AsyncIterator[builtins.list[Event]]:
        check_prefix(prefix)
        self._check_open()
        current = await self.current_revision()
        if start_revision > 0:
            if start_revision <= self._floor:
                raise CompactedError(start_revision, self._floor)
            if start_revision <= current and not await self._readable(start_revision):
                raise CompactedError(start_revision, await self._find_floor())
        else:
            # "Now": only changes after the current revision.
            start_revision = current + 1
        next_revision = start_revision
        loop = asyncio.get_running_loop()
        broken_since = 0.0
        attempt = 0
        while not self._closed:
            try:
                async with contextlib.aclosing(self._watch_stream(prefix, next_revision)) as stream:
                    async for batch in stream:
                        broken_since, attempt = 0.0, 0
                        next_revision = batch[-1].revision + 1
                        yield batch
                return  # the backend closed
            except StoreUnavailableError:
                if self._closed:
                    return
                now = loop.time()
                broken_since = broken_since or now
                if now - broken_since > WATCH_RESUME_TIMEOUT_S:
                    raise
                delay = WATCH_RESUME_BACKOFF_S[min(attempt, len(WATCH_RESUME_BACKOFF_S) - 1)]
                attempt += 1
                log.debug("etcd watch on %s broke; resuming at %d", prefix, next_revision)
                await asyncio.sleep(delay)

    async def _watch_stream(
        self, prefix: str, start_revision: int
    ) -> AsyncGenerator[builtins.list[Event], None]:
        """One etcd watch stream from ``start_revision``; StoreUnavailableError when it
        breaks, CompactedError when etcd has compacted past the start; returns on close."""
        channel = self._channel
        call = self._watch.Watch(timeout=None)
        self._watch_calls.add(call)
        try:
            await call.write(
                rpc_pb2.WatchRequest(
                    create_request=rpc_pb2.WatchCreateRequest(
                        key=self._key(prefix),
                        range_end=self._key(prefix_end(prefix)),
                        start_revision=start_revision,
                        prev_kv=True,
                    )
                )
            )
            while True:
                response = await call.read()
                if response is grpc.aio.EOF:
                    raise StoreUnavailableError(f"etcd datastore {self._current_target()}: "
                                                "watch stream ended")  # fmt: skip
                if response.compact_revision:
                    raise CompactedError(start_revision, response.compact_revision)
                if response.canceled:
                    raise StoreUnavailableError(
                        f"etcd datastore {self._current_target()}: watch canceled: "
                        f"{response.cancel_reason[:200]}"
                    )
                if response.events:
                    yield [self._event(e) for e in response.events]
        except grpc.aio.AioRpcError as err:
            if self._closed:
                return
            if err.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                await self._failover(channel)
            failure = self._failure(err, start_revision)
            if isinstance(failure, CompactedError):
                failure = CompactedError(start_revision, await self._find_floor())
            raise failure from None
        except asyncio.CancelledError:
            # close() cancelled the call (not this task): the watch ends.
            task = asyncio.current_task()
            if self._closed and task is not None and not task.cancelling():
                return
            raise
        finally:
            self._watch_calls.discard(call)
            call.cancel()

    # --- compaction -----------------------------------------------------------------------

    async def compact(self, revision: int) -> None:
        current = await self.current_revision()
        if revision > current:
            raise FutureRevisionError(revision, current)
        async with self._compact_lock:
            if revision <= await self._find_floor():
                return
            try:
                await self._call("Compact", rpc_pb2.CompactionRequest(revision=revision))
            except CompactedError:
                return  # another server compacted at least as far meanwhile
            self._floor = max(self._floor, revision)
            log.debug("compacted etcd at revision %d", revision)
