"""Response rendering: objects, lists, Tables, partial metadata and Status errors.

Owns how a dict (or a list page of serialized items) becomes bytes on the wire, including the
optional version conversion (served version != storage version) and the Accept-driven output
forms (``as=Table``, ``as=PartialObjectMetadata[List]``). Lists whose items need neither
conversion nor transformation are assembled from the stored bytes without parsing them; a
large list is produced and written in pieces (``list_chunks``, ``stream_json``) so one LIST
never holds the event loop for long.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from sampan.api.errors import BadRequest, StatusError
from sampan.api.printing import to_table
from sampan.apiserver.negotiation import JSON_CONTENT_TYPE, OutputFormat, dump_json

__all__ = [
    "LIST_CHUNK_BYTES",
    "Converter",
    "Renderer",
    "bounded_warnings",
    "error_response",
    "json_response",
    "status_success",
    "stream_json",
    "warning_header",
    "warning_text_ok",
]

log = logging.getLogger(__name__)

Converter = Callable[[dict[str, Any]], dict[str, Any]]

LIST_CHUNK_BYTES = 16 * 1024
"""A large LIST body is produced and written in pieces of about this size, yielding to the
event loop between them: encoding and TLS-encrypting 50 MB in one go held the loop (and every
other request, /readyz included) for about half a second per LIST."""
STREAM_TIMEOUT_S = 60.0
"""kube-apiserver's --request-timeout: a streamed body not written by then (a client that
stopped reading) is cut off, as upstream's timeout filter aborts it, so a stalled reader
cannot hold an in-flight slot for ever."""


def warning_text_ok(message: str) -> bool:
    """Whether kube-apiserver would send this warning text: it refuses (drops) text with a
    control character (Go's ``unicode.IsControl``: C0, DEL and C1)."""
    return not any(ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 for ch in message)


WARNINGS_TOTAL_RUNES = 4 * 1024
"""kube-apiserver's bound on the warning text of one response; past it every warning is cut
to ``WARNING_ITEM_RUNES`` and, once that too is spent, the rest are dropped."""
WARNING_ITEM_RUNES = 256


def bounded_warnings(messages: Iterable[str]) -> list[str]:
    """The warnings (already deduplicated, in order) a response carries, bounded as
    kube-apiserver's warning recorder bounds them: all of them while their text adds up to
    at most ``WARNINGS_TOTAL_RUNES`` characters; otherwise each cut to ``WARNING_ITEM_RUNES``,
    adding warnings until the total reaches the bound. So a body with thousands of unknown
    fields never makes a response with thousands of ``Warning`` headers."""
    kept: list[str] = []
    seen: list[str] = []
    written = 0
    truncating = False
    for text in messages:
        if not text:
            continue
        if truncating and written >= WARNINGS_TOTAL_RUNES:
            break
        seen.append(text)
        if truncating:
            text = text[:WARNING_ITEM_RUNES]
        if truncating or written + len(text) <= WARNINGS_TOTAL_RUNES:
            written += len(text)
            kept.append(text)
            continue
        truncating = True
        kept = [item[:WARNING_ITEM_RUNES] for item in seen]
        written = sum(len(item) for item in kept)
    return kept


def warning_header(message: str) -> str:
    """One ``Warning`` header value as kube-apiserver writes it: code 299, agent ``-``, the
    text quoted with ``"`` and ``\\`` escaped. Callers drop text ``warning_text_ok`` refuses,
    as upstream; should such text get here anyway its control characters are escaped, never
    written raw (a CR or LF in a header value would split the response)."""
    escaped = message.replace("\\", "\\\\").replace('"', '\\"')
    if not warning_text_ok(escaped):
        escaped = "".join(ch if warning_text_ok(ch) else f"\\u{ord(ch):04x}" for ch in escaped)
    return f'299 - "{escaped}"'


def json_response(body: bytes | dict[str, Any], status: int = 200) -> web.Response:
    data = body if isinstance(body, bytes) else dump_json(body)
    return web.Response(body=data, status=status, content_type=JSON_CONTENT_TYPE)


async def stream_json(request: web.Request, chunks: Iterable[bytes]) -> web.StreamResponse:
    """A 200 JSON response from ``chunks``: one plain response when they add up to less than
    ``LIST_CHUNK_BYTES``; otherwise a chunked stream, written piece by piece with a yield to
    the event loop after each (``write`` only waits when the peer is slow, so without the yield
    a fast reader would still monopolise the loop). A client that goes away mid-stream ends it
    quietly; one that has not read it all after ``STREAM_TIMEOUT_S`` is disconnected."""
    iterator = iter(chunks)
    head: list[bytes] = []
    size = 0
    for chunk in iterator:
        head.append(chunk)
        size += len(chunk)
        if size >= LIST_CHUNK_BYTES:
            break
    else:
        return json_response(b"".join(head))
    response = web.StreamResponse(status=200)
    response.content_type = JSON_CONTENT_TYPE
    response.enable_chunked_encoding()
    await response.prepare(request)
    try:
        async with asyncio.timeout(STREAM_TIMEOUT_S):
            await response.write(b"".join(head))
            del head
            for chunk in iterator:
                await asyncio.sleep(0)
                await response.write(chunk)
            await response.write_eof()
    except ConnectionError as exc:  # ConnectionResetError included
        log.debug("client went away during a streamed response: %s", exc)
    except TimeoutError:
        log.info(
            "%s %s: response not read in %gs, closing",
            request.method,
            request.path,
            STREAM_TIMEOUT_S,
        )
        if request.transport is not None:
            request.transport.abort()  # close() would wait to flush to the stalled peer
    return response


def error_response(error: StatusError) -> web.Response:
    # kube-apiserver's encoder ends every body with a newline; clients comparing bytes see it.
    body = error.to_json() + b"\n"
    response = web.Response(body=body, status=error.code, content_type=JSON_CONTENT_TYPE)
    if error.retry_after_s:
        response.headers["Retry-After"] = str(error.retry_after_s)
    return response


def status_success(code: int = 200, details: dict[str, Any] | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
    }
    if details:
        status["details"] = details
    if code != 200:
        status["code"] = code
    return status


class Renderer:
    """Renders one resource's objects for one request (version + Accept)."""

    def __init__(
        self,
        info: Any,
        output: OutputFormat,
        convert: Converter | None,
        *,
        include_object: str = "Metadata",
    ) -> None:
        self.info = info
        self.output = output
        self.convert = convert
        self.include_object = include_object
        self._columns_sent = False

    @property
    def passthrough(self) -> bool:
        """True when stored bytes can be sent as they are."""
        return self.convert is None and not self.output.as_kind

    def object(self, obj: dict[str, Any]) -> dict[str, Any]:
        if self.convert is not None:
            obj = self.convert(obj)
        if self.output.table:
            return self.table([obj])
        if self.output.partial_metadata:
            return partial_metadata(obj, self.output.group_version)
        return obj

    def object_bytes(self, obj: dict[str, Any]) -> bytes:
        return dump_json(self.object(obj))

    def table(
        self,
        objs: Sequence[dict[str, Any]],
        *,
        resource_version: str = "",
        continue_token: str | None = None,
        remaining: int | None = None,
        no_headers: bool = False,
    ) -> dict[str, Any]:
        """A meta.k8s.io Table with every column (kubectl hides priority-1 ones itself)."""
        try:
            table = to_table(
                self.info.kind,
                self.info.group,
                list(objs),
                include_object=self.include_object,
                now=datetime.now(UTC),
                no_headers=no_headers,
                resource_version=resource_version or None,
                continue_token=continue_token,
                remaining_item_count=remaining,
            )
        except ValueError as exc:  # an includeObject value the printer does not know
            raise BadRequest(str(exc)) from exc
        if self.output.group_version:
            table["apiVersion"] = self.output.group_version
        return table

    def watch_table(self, obj: dict[str, Any]) -> dict[str, Any]:
        """A Table for one watch event: column definitions only on the first one."""
        if self.convert is not None:
            obj = self.convert(obj)
        table = self.table([obj], no_headers=self._columns_sent)
        self._columns_sent = True
        return table

    def list_bytes(
        self,
        items: Sequence[bytes],
        *,
        resource_version: str,
        continue_token: str | None,
        remaining: int | None,
    ) -> bytes:
        """The whole list body at once (small lists; ``list_chunks`` for the served LIST)."""
        return b"".join(
            self.list_chunks(
                items,
                resource_version=resource_version,
                continue_token=continue_token,
                remaining=remaining,
            )
        )

    def list_chunks(
        self,
        items: Sequence[bytes],
        *,
        resource_version: str,
        continue_token: str | None,
        remaining: int | None,
        chunk_bytes: int = LIST_CHUNK_BYTES,
    ) -> Iterator[bytes]:
        """The list body in pieces of about ``chunk_bytes``, produced lazily: stored bytes are
        joined a group at a time, and converted or partial-metadata items are parsed and
        encoded one by one, so no step costs more than one piece. A Table is built whole."""
        metadata: dict[str, Any] = {"resourceVersion": resource_version}
        if continue_token:
            metadata["continue"] = continue_token
        if remaining is not None:
            metadata["remainingItemCount"] = remaining
        if self.output.table:
            objs = [json.loads(item) for item in items]
            if self.convert is not None:
                objs = [self.convert(o) for o in objs]
            yield dump_json(
                self.table(
                    objs,
                    resource_version=resource_version,
                    continue_token=continue_token,
                    remaining=remaining,
                )
            )
            return
        if self.passthrough:
            kind, api_version = self.info.list_kind, self.info.api_version
            encoded: Iterable[bytes] = items
        elif self.output.partial_metadata:
            kind, api_version = "PartialObjectMetadataList", self.output.group_version
            encoded = (dump_json(self.object(json.loads(item))) for item in items)
        else:
            kind, api_version = self.info.list_kind, self.info.api_version
            encoded = (self.object_bytes(json.loads(item)) for item in items)
        head = dump_json({"kind": kind, "apiVersion": api_version, "metadata": metadata})
        yield head[:-1] + b',"items":['
        group: list[bytes] = []
        size = 0
        first = True
        for item in encoded:
            group.append(item)
            size += len(item)
            if size >= chunk_bytes:
                yield (b"" if first else b",") + b",".join(group)
                first = False
                group = []
                size = 0
        if group:
            yield (b"" if first else b",") + b",".join(group)
        yield b"]}"


def partial_metadata(obj: dict[str, Any], group_version: str) -> dict[str, Any]:
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": group_version or "meta.k8s.io/v1",
        "metadata": obj.get("metadata", {}),
    }
