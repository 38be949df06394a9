"""Response rendering: objects, lists, Tables, partial metadata and Status errors.

Owns how a dict (or a list page of serialized items) becomes bytes on the wire, including the
optional version conversion (served version != storage version) and the Accept-driven output
forms (``as=Table``, ``as=PartialObjectMetadata[List]``). Lists whose items need neither
conversion nor transformation are assembled from the stored bytes without parsing them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from sampan.api.printing import to_table
from sampan.apiserver.errors import BadRequest, StatusError
from sampan.apiserver.negotiation import JSON_CONTENT_TYPE, OutputFormat, dump_json

__all__ = [
    "Converter",
    "Renderer",
    "error_response",
    "json_response",
    "status_success",
    "warning_header",
    "warning_text_ok",
]

log = logging.getLogger(__name__)

Converter = Callable[[dict[str, Any]], dict[str, Any]]


def warning_text_ok(message: str) -> bool:
    """Whether kube-apiserver would send this warning text: it refuses (drops) text with a
    control character (Go's ``unicode.IsControl``: C0, DEL and C1)."""
    return not any(ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 for ch in message)


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
        metadata: dict[str, Any] = {"resourceVersion": resource_version}
        if continue_token:
            metadata["continue"] = continue_token
        if remaining is not None:
            metadata["remainingItemCount"] = remaining
        if self.passthrough:
            head = dump_json(
                {
                    "kind": self.info.list_kind,
                    "apiVersion": self.info.api_version,
                    "metadata": metadata,
                }
            )
            return head[:-1] + b',"items":[' + b",".join(items) + b"]}"
        objs = [json.loads(item) for item in items]
        if self.convert is not None:
            objs = [self.convert(o) for o in objs]
        if self.output.table:
            return dump_json(
                self.table(
                    objs,
                    resource_version=resource_version,
                    continue_token=continue_token,
                    remaining=remaining,
                )
            )
        if self.output.partial_metadata:
            return dump_json(
                {
                    "kind": "PartialObjectMetadataList",
                    "apiVersion": self.output.group_version,
                    "metadata": metadata,
                    "items": [partial_metadata(o, self.output.group_version) for o in objs],
                }
            )
        return dump_json(
            {
                "kind": self.info.list_kind,
                "apiVersion": self.info.api_version,
                "metadata": metadata,
                "items": objs,
            }
        )


def partial_metadata(obj: dict[str, Any], group_version: str) -> dict[str, Any]:
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": group_version or "meta.k8s.io/v1",
        "metadata": obj.get("metadata", {}),
    }
