"""Recording ``core/v1`` Events about objects, as client-go's ``record.EventRecorder``.

This module owns how components tell users what they did ("Scheduled", "Pulled", "Killing",
"FailedCreate"...). ``EventRecorder.event(obj, type, reason, message)`` never blocks and never
raises: it puts the event on a bounded queue (full -> the event is dropped and counted, as
client-go's broadcaster does) and one background task (``events-<component>``) writes it.

Aggregation (client-go's event logger): events are keyed by (involved object, type, reason,
message, source). The first occurrence is created as ``<object name>.<hex unix nanos>`` in the
object's namespace (``default`` for cluster-scoped objects) with ``count: 1``; a repeat of the
same key patches that Event's ``count`` and ``lastTimestamp`` instead of creating a new one. If
the Event vanished meanwhile (expired by TTL, deleted), a new one is created. The key cache is
an LRU of ``EVENT_CACHE_SIZE`` entries. Failed writes are retried a few times, then dropped
(events are best effort; a component must never stall on them).

Spam filter (client-go's ``EventSourceObjectSpamFilter``): each (source, involved object) has a
token bucket of ``SPAM_BURST`` events refilled one per ``SPAM_REFILL_S``; an event finding the
bucket empty is dropped and counted in ``dropped``. A controller stuck in an error loop thus
costs the API server a few writes per object, not one per retry.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sampan.api import times
from sampan.client.api import (
    EVENTS,
    AlreadyExistsError,
    Client,
    ClientError,
    NotFoundError,
    PatchType,
)

__all__ = [
    "EVENT_CACHE_SIZE",
    "EVENT_QUEUE_SIZE",
    "TYPE_NORMAL",
    "TYPE_WARNING",
    "EventRecorder",
]

log = logging.getLogger(__name__)

TYPE_NORMAL = "Normal"
TYPE_WARNING = "Warning"
EVENT_QUEUE_SIZE = 1000
EVENT_CACHE_SIZE = 4096
MAX_WRITE_ATTEMPTS = 3
RETRY_DELAY_S = 1.0
MAX_MESSAGE_BYTES = 1024
DEFAULT_EVENT_NAMESPACE = "default"
SPAM_BURST = 25
SPAM_REFILL_S = 300.0


def _timestamp(moment: datetime) -> str:
    return times.rfc3339(moment)


@dataclass
class _Seen:
    namespace: str
    name: str
    count: int
    first_timestamp: str


@dataclass(frozen=True)
class _Pending:
    involved: dict[str, Any]
    event_type: str
    reason: str
    message: str
    action: str | None
    at: datetime


class EventRecorder:
    """Write Events from ``component`` on ``host`` (see the module docstring).

    Call ``start()`` from the event loop before recording (or let the first ``event()`` start
    it) and ``await stop()`` at shutdown; ``stop`` writes what is queued, for at most
    ``drain_timeout_s``.
    """

    def __init__(
        self,
        client: Client,
        component: str,
        host: str | None = None,
        *,
        spam_burst: int = SPAM_BURST,
        spam_refill_s: float = SPAM_REFILL_S,
    ) -> None:
        self.client = client
        self.component = component
        self.host = host
        self.spam_burst = spam_burst
        self.spam_refill_s = spam_refill_s
        # (object identity) -> (tokens left, loop time of the last refill); LRU-bounded.
        self._spam: OrderedDict[tuple[str, ...], tuple[float, float]] = OrderedDict()
        self.dropped = 0
        """Events dropped because the queue was full or every write attempt failed."""
        self._overflow_drops = 0  # drops since the queue last filled up (logged once per burst)
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue(maxsize=EVENT_QUEUE_SIZE)
        self._seen: OrderedDict[tuple[str, ...], _Seen] = OrderedDict()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    # -- recording ---------------------------------------------------------------------------

    def event(
        self,
        involved: Mapping[str, Any],
        event_type: str,
        reason: str,
        message: str,
        *,
        action: str | None = None,
    ) -> None:
        """Record that ``reason``/``message`` happened to the object ``involved`` (a full
        object dict, or an ObjectReference with kind/namespace/name/uid/apiVersion).

        ``event_type`` is ``TYPE_NORMAL`` or ``TYPE_WARNING``. Returns at once.
        """
        if event_type not in (TYPE_NORMAL, TYPE_WARNING):
            raise ValueError(f"event type must be Normal or Warning, not {event_type!r}")
        if self._stopping:
            return
        self.start()
        pending = _Pending(
            _reference(involved), event_type, reason, message, action, datetime.now(UTC)
        )
        if not self._spam_allows(pending.involved):
            self.dropped += 1
            log.debug("events: rate limited %s %s", reason, _describe(pending.involved))
            return
        try:
            self._queue.put_nowait(pending)
        except asyncio.QueueFull:
            self.dropped += 1
            self._overflow_drops += 1
            if self._overflow_drops == 1:  # one line per burst, not one per event
                log.warning(
                    "events: queue full; dropping events until it drains (first: %s %s)",
                    reason,
                    _describe(pending.involved),
                )

    def _spam_allows(self, ref: Mapping[str, Any]) -> bool:
        key = tuple(str(ref.get(f, "")) for f in ("kind", "namespace", "name", "uid"))
        now_s = asyncio.get_running_loop().time()
        tokens, last_s = self._spam.pop(key, (float(self.spam_burst), now_s))
        tokens = min(float(self.spam_burst), tokens + (now_s - last_s) / self.spam_refill_s)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self._spam[key] = (tokens, now_s)
        while len(self._spam) > EVENT_CACHE_SIZE:
            self._spam.popitem(last=False)
        return allowed

    def eventf(
        self,
        involved: Mapping[str, Any],
        event_type: str,
        reason: str,
        message_format: str,
        *args: object,
    ) -> None:
        """``event`` with a %-style message."""
        self.event(involved, event_type, reason, message_format % args if args else message_format)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._write_loop(), name=f"events-{self.component}"
            )
            self._task.add_done_callback(self._log_task_end)

    async def flush(self) -> None:
        """Wait until every queued event has been written (or given up on)."""
        await self._queue.join()

    async def stop(self, drain_timeout_s: float = 5.0) -> None:
        self._stopping = True
        if self._task is None:
            return
        try:
            async with asyncio.timeout(drain_timeout_s):
                await self._queue.join()
        except TimeoutError:
            log.warning("events: %d events not written at shutdown", self._queue.qsize())
        self._task.cancel()
        await asyncio.wait({self._task})
        self._task = None

    def _log_task_end(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("event recorder %s died", self.component, exc_info=task.exception())

    # -- writing -----------------------------------------------------------------------------

    async def _write_loop(self) -> None:
        while True:
            pending = await self._queue.get()
            if self._overflow_drops and self._queue.qsize() < self._queue.maxsize // 2:
                log.warning(
                    "events: %d events were dropped while the queue was full", self._overflow_drops
                )
                self._overflow_drops = 0
            try:
                for attempt in range(1, MAX_WRITE_ATTEMPTS + 1):
                    try:
                        await self._write(pending)
                        break
                    except ClientError as exc:
                        if attempt == MAX_WRITE_ATTEMPTS:
                            self.dropped += 1
                            log.warning(
                                "events: giving up on %s %s: %s",
                                pending.reason,
                                _describe(pending.involved),
                                exc,
                            )
                        else:
                            await asyncio.sleep(RETRY_DELAY_S * attempt)
            finally:
                self._queue.task_done()

    def _key(self, pending: _Pending) -> tuple[str, ...]:
        ref = pending.involved
        return (
            self.component,
            self.host or "",
            ref.get("kind", ""),
            ref.get("apiVersion", ""),
            ref.get("namespace", ""),
            ref.get("name", ""),
            ref.get("uid", ""),
            ref.get("fieldPath", ""),
            pending.event_type,
            pending.reason,
            pending.message,
        )

    async def _write(self, pending: _Pending) -> None:
        key = self._key(pending)
        timestamp = _timestamp(pending.at)
        seen = self._seen.get(key)
        if seen is not None:
            try:
                await self.client.patch(
                    EVENTS,
                    seen.name,
                    {"count": seen.count + 1, "lastTimestamp": timestamp},
                    namespace=seen.namespace,
                    patch_type=PatchType.MERGE,
                )
            except NotFoundError:
                del self._seen[key]
            else:
                seen.count += 1
                self._seen.move_to_end(key)
                return
        namespace = pending.involved.get("namespace") or DEFAULT_EVENT_NAMESPACE
        name = f"{pending.involved.get('name') or 'unknown'}.{time.time_ns():x}"
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": pending.involved,
            "reason": pending.reason,
            "message": _truncate(pending.message),
            "type": pending.event_type,
            "source": {"component": self.component, **({"host": self.host} if self.host else {})},
            "firstTimestamp": timestamp,
            "lastTimestamp": timestamp,
            "count": 1,
            "reportingComponent": self.component,
            "reportingInstance": self.host or "",
        }
        if pending.action:
            body["action"] = pending.action
        try:
            await self.client.create(EVENTS, body, namespace=namespace)
        except AlreadyExistsError:
            pass  # same nanosecond name twice: the first one stands
        self._seen[key] = _Seen(namespace, name, 1, timestamp)
        while len(self._seen) > EVENT_CACHE_SIZE:
            self._seen.popitem(last=False)


def _reference(involved: Mapping[str, Any]) -> dict[str, Any]:
    """An ObjectReference for an object (or a copy of a reference)."""
    if "metadata" not in involved:
        return {k: v for k, v in involved.items() if v}
    metadata = involved.get("metadata") or {}
    ref = {
        "kind": involved.get("kind"),
        "apiVersion": involved.get("apiVersion"),
        "namespace": metadata.get("namespace"),
        "name": metadata.get("name"),
        "uid": metadata.get("uid"),
        "resourceVersion": metadata.get("resourceVersion"),
    }
    return {k: v for k, v in ref.items() if v}


def _describe(ref: Mapping[str, Any]) -> str:
    namespace = ref.get("namespace")
    name = ref.get("name", "?")
    return f"{ref.get('kind', '?')} {namespace + '/' if namespace else ''}{name}"


def _truncate(message: str) -> str:
    encoded = message.encode()
    if len(encoded) <= MAX_MESSAGE_BYTES:
        return message
    return encoded[: MAX_MESSAGE_BYTES - 3].decode("utf-8", "ignore") + "..."
