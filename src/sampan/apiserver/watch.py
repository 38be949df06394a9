"""Watch streaming: storage watch events -> a chunked HTTP response, one JSON event per line.

Owns the wire side of a watch: headers are sent at once (client-go waits for them before it
returns from Watch()), then every event is written as ``{"type":...,"object":...}\\n`` and
flushed on its own. The stream ends, with a clean chunked terminator, when the timeout
(``timeoutSeconds`` or a random 30-60 minutes, as kube-apiserver's min-request-timeout does)
expires, when the server stops, when the storage iterator ends, or when the client goes away.

A StatusError raised by the storage iterator (e.g. 410 for a too-old resourceVersion) becomes
an ERROR event carrying the Status, which is how kube-apiserver reports it mid-stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from sampan.apiserver.errors import StatusError
from sampan.apiserver.negotiation import JSON_CONTENT_TYPE, dump_json
from sampan.apiserver.responses import Renderer

__all__ = ["MAX_WATCH_TIMEOUT_S", "MIN_WATCH_TIMEOUT_S", "default_timeout_s", "serve_watch"]

log = logging.getLogger(__name__)

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


async def _next_event(iterator: AsyncIterator[Any]) -> Any:
    return await anext(iterator)


async def serve_watch(
    request: web.Request,
    events: AsyncIterator[Any],
    renderer: Renderer,
    *,
    timeout_s: float | None,
    stopping: asyncio.Event,
) -> web.StreamResponse:
    response = web.StreamResponse(status=200)
    response.content_type = JSON_CONTENT_TYPE
    response.enable_chunked_encoding()
    response.headers["Cache-Control"] = "no-cache, private"
    await response.prepare(request)
    deadline = asyncio.get_running_loop().time() + (timeout_s or default_timeout_s())
    iterator = aiter(events)
    stop_task = asyncio.create_task(stopping.wait(), name="watch-stop-signal")
    next_task: asyncio.Future[Any] | None = None
    try:
        while True:
            remaining_s = deadline - asyncio.get_running_loop().time()
            if remaining_s <= 0:
                break
            next_task = asyncio.create_task(_next_event(iterator), name="watch-next-event")
            done, _ = await asyncio.wait(
                {next_task, stop_task}, timeout=remaining_s, return_when=asyncio.FIRST_COMPLETED
            )
            if next_task not in done:
                next_task.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration, StatusError):
                    await next_task
                break
            try:
                event = next_task.result()
            except StopAsyncIteration:
                break
            except StatusError as exc:
                await response.write(b'{"type":"ERROR","object":' + exc.to_json() + b"}\n")
                break
            await response.write(_encode(renderer, event.type, event.object))
    except (ConnectionResetError, ConnectionError) as exc:
        log.debug("watch client went away: %s", exc)
        return response
    finally:
        for task in (stop_task, next_task):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration, StatusError):
                    await task
        closer = getattr(iterator, "aclose", None)
        if closer is not None:
            try:
                await closer()
            except (RuntimeError, StatusError) as exc:
                log.debug("closing a storage watch: %s", exc)
    with contextlib.suppress(ConnectionResetError, ConnectionError):
        await response.write_eof()
    return response
