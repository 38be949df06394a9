"""Watch streaming: storage watch events -> a chunked HTTP response, one JSON event per line.

Owns the wire side of a watch: headers are sent at once (client-go waits for them before it
returns from Watch()), then every event is written as ``{"type":...,"object":...}\\n`` and
flushed on its own. The stream ends, with a clean chunked terminator, when the timeout
(``timeoutSeconds`` or a random 30-60 minutes, as kube-apiserver's min-request-timeout does)
expires, when the server stops, when the storage iterator ends, or when the client goes away
(noticed when its connection is lost, ``httpconn.on_connection_lost``, not only at the next
write: a closed watch with no traffic would otherwise keep its watcher, queue and timer for up
to an hour).

A StatusError raised by the storage iterator (e.g. 410 for a too-old resourceVersion) becomes
an ERROR event carrying the Status, which is how kube-apiserver reports it mid-stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web

from sampan.api.errors import StatusError
from sampan.apiserver.negotiation import JSON_CONTENT_TYPE, dump_json
from sampan.apiserver.responses import Renderer
from sampan.httpconn import on_connection_lost

__all__ = [
    "MAX_WATCH_TIMEOUT_S",
    "MIN_WATCH_TIMEOUT_S",
    "WatchTracker",
    "default_timeout_s",
    "serve_watch",
]

log = logging.getLogger(__name__)

Convert = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]
"""(event type, object) -> the object converted before rendering (CRD conversion webhooks;
BOOKMARK objects too, which carry only metadata); a StatusError ends the watch with an ERROR
event."""

MIN_WATCH_TIMEOUT_S = 1800.0
"""kube-apiserver's --min-request-timeout: watches last between this and twice this."""
MAX_WATCH_TIMEOUT_S = 2 * MIN_WATCH_TIMEOUT_S


def default_timeout_s() -> float:
    return random.uniform(MIN_WATCH_TIMEOUT_S, MAX_WATCH_TIMEOUT_S)


def _encode(renderer: Renderer, event_type: str, obj: bytes) -> bytes:
    if renderer.passthrough or event_type == "ERROR":
        return b'{"type":"' + event_type.encode() + b'","object":' + obj + b"}\n"
    parsed: dict[str, Any] = json.loads(obj)
    if event_type == "BOOKMARK":
        if renderer.output.table:
            # An empty Table carrying the bookmark's resourceVersion and annotations
            # (k8s.io/initial-events-end matters to watch-list clients).
            bookmark_meta = parsed.get("metadata") or {}
            table_meta = {"resourceVersion": bookmark_meta.get("resourceVersion", "")}
            if bookmark_meta.get("annotations"):
                table_meta["annotations"] = bookmark_meta["annotations"]
            out: dict[str, Any] = {
                "kind": "Table",
                "apiVersion": renderer.output.group_version or "meta.k8s.io/v1",
                "metadata": table_meta,
                "columnDefinitions": [],
                "rows": [],
            }
        elif renderer.output.partial_metadata:
            out = renderer.object(parsed)
        else:
            out = renderer.convert(parsed) if renderer.convert else parsed
    elif renderer.output.table:
        out = renderer.watch_table(parsed)
    else:
        out = renderer.object(parsed)
    return dump_json({"type": event_type, "object": out}) + b"\n"


class WatchTracker:
    """The server's open watches, so stop() can end them all cleanly at once.

    Each watch runs inside an ``asyncio.timeout`` scope (its timeoutSeconds); ending a watch
    early is rescheduling that scope to now, which interrupts whatever the watch awaits and
    leaves it on the normal end-of-stream path (chunked terminator written). This costs one
    timer per watch instead of extra tasks per event.
    """

    def __init__(self) -> None:
        self._scopes: set[asyncio.Timeout] = set()
        self.stopped = False

    def add(self, scope: asyncio.Timeout) -> None:
        self._scopes.add(scope)

    def discard(self, scope: asyncio.Timeout) -> None:
        self._scopes.discard(scope)

    def stop_all(self) -> None:
        self.stopped = True
        now = asyncio.get_running_loop().time()
        for scope in list(self._scopes):
            if not scope.expired():
                scope.reschedule(now)

    def __len__(self) -> int:
        return len(self._scopes)


async def serve_watch(
    request: web.Request,
    events: AsyncIterator[Any],
    renderer: Renderer,
    *,
    timeout_s: float | None,
    tracker: WatchTracker,
    convert: Convert | None = None,
) -> web.StreamResponse:
    response = web.StreamResponse(status=200)
    response.content_type = JSON_CONTENT_TYPE
    response.enable_chunked_encoding()
    response.headers["Cache-Control"] = "no-cache, private"
    await response.prepare(request)
    iterator = aiter(events)
    try:
        if not tracker.stopped:
            await _pump(
                request,
                response,
                iterator,
                renderer,
                timeout_s or default_timeout_s(),
                tracker,
                convert,
            )
    except (ConnectionResetError, ConnectionError) as exc:
        log.debug("watch client went away: %s", exc)
        return response
    finally:
        closer = getattr(iterator, "aclose", None)
        if closer is not None:
            try:
                await closer()
            except (RuntimeError, StatusError) as exc:
                log.debug("closing a storage watch: %s", exc)
    with contextlib.suppress(ConnectionResetError, ConnectionError):
        await response.write_eof()
    return response


def _end_now(scope: asyncio.Timeout, loop: asyncio.AbstractEventLoop) -> None:
    if not scope.expired():
        scope.reschedule(loop.time())


async def _pump(
    request: web.Request,
    response: web.StreamResponse,
    iterator: AsyncIterator[Any],
    renderer: Renderer,
    timeout_s: float,
    tracker: WatchTracker,
    convert: Convert | None = None,
) -> None:
    """Write events until the iterator ends, the timeout expires, the server stops or the
    client goes away."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout_s) as scope:
            tracker.add(scope)
            forget = on_connection_lost(request, lambda: _end_now(scope, loop))
            try:
                while True:
                    try:
                        event = await anext(iterator)
                    except StopAsyncIteration:
                        return
                    except StatusError as exc:
                        await response.write(b'{"type":"ERROR","object":' + exc.to_json() + b"}\n")
                        return
                    data = event.object
                    if convert is not None and event.type != "ERROR":
                        try:
                            converted = await convert(event.type, json.loads(data))
                        except StatusError as exc:
                            await response.write(
                                b'{"type":"ERROR","object":' + exc.to_json() + b"}\n"
                            )
                            return
                        data = dump_json(converted)
                    await response.write(_encode(renderer, event.type, data))
            finally:
                forget()
                tracker.discard(scope)
    except TimeoutError:
        return  # timeoutSeconds reached or the server is stopping: end the stream cleanly
