"""Response rendering: objects, lists, Tables, partial metadata and Status errors.

Owns how a dict (or a list page of serialized items) becomes bytes on the wire, including the
optional version conversion (served version != storage version) and the Accept-driven output
forms (``as=Table``, ``as=PartialObjectMetadata[List]``). Lists whose items need neither
conversion nor transformation are assembled from the stored bytes without parsing them.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from sampan.apiserver.errors import StatusError
from sampan.apiserver.negotiation import JSON_CONTENT_TYPE, OutputFormat, dump_json

__all__ = [
    "Converter",
    "Renderer",
    "error_response",
    "json_response",
    "status_success",
]

log = logging.getLogger(__name__)

Converter = Callable[[dict[str, Any]], dict[str, Any]]


def json_response(body: bytes | dict[str, Any], status: int = 200) -> web.Response:
    data = body if isinstance(body, bytes) else dump_json(body)
    return web.Response(body=data, status=status, content_type=JSON_CONTENT_TYPE)


def error_response(error: StatusError) -> web.Response:
    response = web.Response(body=error.to_json(), status=error.code, content_type=JSON_CONTENT_TYPE)
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


def _load_to_table() -> Callable[..., dict[str, Any]] | None:
    try:
        from sampan.api import printing
    except ImportError:
        return None
    return getattr(printing, "to_table", None)


class Renderer:
    """Renders one resource's objects for one request (version + Accept)."""

    def __init__(
        self,
        info: Any,
        output: OutputFormat,
        convert: Converter | None,
        *,
        wide: bool = False,
        include_object: str = "Metadata",
    ) -> None:
        self.info = info
        self.output = output
        self.convert = convert
        self.wide = wide
        self.include_object = include_object
        self._to_table = _load_to_table() if output.table else None
        self._columns_sent = False

    @property
    def passthrough(self) -> bool:
        """True when stored bytes can be sent as they are."""
        return self.convert is None and not self.output.as_kind

    def object(self, obj: dict[str, Any]) -> dict[str, Any]:
        if self.convert is not None:
            obj = self.convert(obj)
        if self.output.table:
            return self.table([obj], resource_version="")
        if self.output.partial_metadata:
            return partial_metadata(obj, self.output.group_version)
        return obj

    def object_bytes(self, obj: dict[str, Any]) -> bytes:
        return dump_json(self.object(obj))

    def table(self, objs: Sequence[dict[str, Any]], *, resource_version: str) -> dict[str, Any]:
        if self._to_table is None:
            # Printing not available: kubectl accepts plain objects as a fallback.
            if len(objs) == 1:
                return objs[0]
            return {
                "apiVersion": self.info.api_version,
                "kind": self.info.list_kind,
                "metadata": {"resourceVersion": resource_version},
                "items": list(objs),
            }
        table = _call_to_table(
            self._to_table, self.info, list(objs), self.wide, self.include_object
        )
        table.setdefault("kind", "Table")
        table.setdefault("apiVersion", self.output.group_version or "meta.k8s.io/v1")
        metadata = table.setdefault("metadata", {})
        if resource_version:
            metadata["resourceVersion"] = resource_version
        return table

    def watch_table(self, obj: dict[str, Any]) -> dict[str, Any]:
        """A Table for one watch event: column definitions only on the first one."""
        if self.convert is not None:
            obj = self.convert(obj)
        table = self.table([obj], resource_version="")
        if table.get("kind") == "Table":
            if self._columns_sent:
                table["columnDefinitions"] = []
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
        import json

        objs = [json.loads(item) for item in items]
        if self.convert is not None:
            objs = [self.convert(o) for o in objs]
        if self.output.table:
            table = self.table(objs, resource_version=resource_version)
            if table.get("kind") == "Table":
                table["metadata"] = metadata
            return dump_json(table)
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


def _call_to_table(
    to_table: Callable[..., dict[str, Any]],
    info: Any,
    objs: list[dict[str, Any]],
    wide: bool,
    include_object: str,
) -> dict[str, Any]:
    """The printing helper was specified twice (``to_table(info, objs, ...)`` and
    ``to_table(kind, group, objs, ...)``); call whichever shape exists."""
    params = list(inspect.signature(to_table).parameters)
    if params and params[0] == "info":
        return to_table(info, objs, wide=wide, include_object=include_object)
    return to_table(
        info.kind,
        info.group,
        objs,
        wide=wide,
        include_object=include_object,
        now=datetime.now(UTC),
    )
