"""Content negotiation and body decoding.

Owns: reading what the client sent (JSON or YAML within the body limit; the protobuf bodies
client-go's typed clients send are handed to ``protobuf``) and what it wants back (plain
JSON, a meta.k8s.io Table, or PartialObjectMetadata). Sampan answers in JSON only: a client
that prefers protobuf (kubectl sends ``application/vnd.kubernetes.protobuf,
application/json``) gets JSON, which client-go decodes by the response's Content-Type. An
Accept header naming nothing a resource endpoint serves (``text/html``) is a 406 before the
request does anything, as kube-apiserver's.

Invariant: a body is decoded completely or the request fails with a 400/413/415 Status;
nothing downstream ever sees a half-read body.
"""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass
from typing import Any

import yaml
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from sampan.api import jsonwire
from sampan.api.errors import BadRequest, NotAcceptable, RequestEntityTooLarge, UnsupportedMediaType
from sampan.apiserver import protobuf

__all__ = [
    "JSON_CONTENT_TYPE",
    "PROTOBUF_CONTENT_TYPE",
    "OutputFormat",
    "check_acceptable",
    "decode_object",
    "dump_json",
    "media_type_of",
    "parse_accept",
    "read_body",
]

log = logging.getLogger(__name__)

JSON_CONTENT_TYPE = "application/json"
_YAML_TYPES = frozenset({"application/yaml", "application/x-yaml", "text/yaml"})
_JSON_TYPES = frozenset({"application/json", ""})
PROTOBUF_CONTENT_TYPE = "application/vnd.kubernetes.protobuf"
_SUMMARY_CHARS = 30


def dump_json(obj: Any) -> bytes:
    """Compact JSON, UTF-8, as kube-apiserver writes it (no spaces, non-ASCII kept;
    ``jsonwire.dumps``: orjson where it writes the same bytes as ``json.dumps``)."""
    return jsonwire.dumps(obj)


@dataclass(frozen=True, slots=True)
class OutputFormat:
    """What the response should be: the object itself, a Table, or partial metadata."""

    as_kind: str = ""  # "" | "Table" | "PartialObjectMetadata" | "PartialObjectMetadataList"
    group_version: str = ""  # e.g. meta.k8s.io/v1

    @property
    def table(self) -> bool:
        return self.as_kind == "Table"

    @property
    def partial_metadata(self) -> bool:
        return self.as_kind.startswith("PartialObjectMetadata")


_META_VERSIONS = frozenset({"v1", "v1beta1"})
"""The versions of meta.k8s.io whose Table and PartialObjectMetadata kube-apiserver serves."""


@functools.lru_cache(maxsize=256)
def parse_accept(accept: str) -> OutputFormat:
    """Pick the first acceptable media range: Table / PartialObjectMetadata (meta.k8s.io v1 or
    v1beta1) when asked, else plain JSON. A range naming another group or version of those is
    skipped, as are aggregated discovery ranges (plain discovery answers; clients fall
    back)."""
    for media_range in accept.split(","):
        fields = [f.strip() for f in media_range.split(";")]
        media_type = fields[0].lower()
        params: dict[str, str] = {}
        for param in fields[1:]:
            key, _, value = param.partition("=")
            params[key.strip().lower()] = value.strip()
        as_kind = params.get("as", "")
        if media_type not in ("application/json", "*/*", "application/*"):
            continue
        if not as_kind:
            return OutputFormat()
        if (
            params.get("g") == "meta.k8s.io"
            and params.get("v") in _META_VERSIONS
            and as_kind in ("Table", "PartialObjectMetadata", "PartialObjectMetadataList")
        ):
            return OutputFormat(as_kind=as_kind, group_version=f"meta.k8s.io/{params.get('v')}")
    return OutputFormat()


SERVED_MEDIA_TYPES = ("application/json", "application/yaml", PROTOBUF_CONTENT_TYPE)
"""What kube-apiserver's resource endpoints (built-in and custom alike) list as acceptable, in
its order; the 406 message names them."""


@functools.lru_cache(maxsize=256)
def check_acceptable(accept: str) -> None:
    """406 NotAcceptable, worded as kube-apiserver's, when a non-empty Accept header has no
    media range a resource endpoint serves: none of :data:`SERVED_MEDIA_TYPES`, ``*/*`` or
    ``application/*``, or only ones asking (``as=``) for a kind other than meta.k8s.io's Table
    or PartialObjectMetadata. Checked before the request does anything."""
    if not accept.strip():
        return
    for media_range in accept.split(","):
        fields = [f.strip() for f in media_range.split(";")]
        media_type = fields[0].lower()
        if media_type not in (*SERVED_MEDIA_TYPES, "*/*", "application/*"):
            continue
        params = {
            key.strip().lower(): value.strip()
            for key, _, value in (param.partition("=") for param in fields[1:])
        }
        if not any(key in params for key in ("as", "g", "v")):
            return
        if (
            params.get("g") == "meta.k8s.io"
            and params.get("v") in _META_VERSIONS
            and params.get("as") in ("Table", "PartialObjectMetadata", "PartialObjectMetadataList")
        ):
            return
    raise NotAcceptable(
        "only the following media types are accepted: " + ", ".join(SERVED_MEDIA_TYPES)
    )


async def read_body(request: web.Request, max_body_bytes: int) -> bytes:
    """The whole body, or 413 when it exceeds ``max_body_bytes`` (checked while reading, so a
    lying Content-Length cannot make us buffer more)."""
    if request.content_length is not None and request.content_length > max_body_bytes:
        raise _too_large(max_body_bytes)
    chunks: list[bytes] = []
    total = 0
    try:
        async for chunk in request.content.iter_chunked(64 * 1024):
            total += len(chunk)
            if total > max_body_bytes:
                raise _too_large(max_body_bytes)
            chunks.append(chunk)
    except ConnectionResetError as exc:
        # The client went away mid-body: nobody is left to read an answer, and it is no
        # server fault (no error log, no 500). The 400 goes to the access log and audit.
        log.debug("client %s closed its connection mid-body: %s", request.remote, exc)
        raise BadRequest(
            "error reading the request body: the client closed the connection"
        ) from exc
    except (HttpProcessingError, RequestPayloadError) as exc:
        # The body itself is malformed (a Content-Encoding that does not decode, a broken
        # chunk): the client's error, not the server's.
        detail = " ".join(str(getattr(exc, "message", "") or exc).split())
        detail = re.sub(r"^\d{3}, message: ", "", detail)  # aiohttp's wrapper prefix
        raise BadRequest(f"error reading the request body: {detail}") from exc
    return b"".join(chunks)


def _too_large(limit: int) -> RequestEntityTooLarge:
    return RequestEntityTooLarge(f"Request entity too large: limit is {limit}")


def media_type_of(request: web.Request) -> str:
    return request.headers.get("Content-Type", "").split(";")[0].strip().lower()


def decode_object(body: bytes, media_type: str, expected_kind: str) -> dict[str, Any]:
    """Decode a JSON or YAML object body. Errors read like kube-apiserver's decode errors."""
    if media_type == PROTOBUF_CONTENT_TYPE:
        try:
            return protobuf.decode_object(body)
        except protobuf.ProtobufError as exc:
            raise UnsupportedMediaType(
                "the body of the request was in an unknown format - accepted media types "
                f"include: application/json, application/yaml ({exc})"
            ) from exc
    if media_type in _YAML_TYPES:
        try:
            obj = jsonwire.load_yaml(body.decode("utf-8")) if body.strip() else None
        except (yaml.YAMLError, UnicodeDecodeError, jsonwire.DecodeError) as exc:
            raise _unrecognized(expected_kind, f"yaml: {_one_line(str(exc))}", body) from exc
    elif media_type in _JSON_TYPES or media_type.endswith("+json"):
        try:
            obj = jsonwire.loads(body) if body.strip() else None
        except jsonwire.DecodeError as exc:
            raise _unrecognized(
                expected_kind, f"couldn't get version/kind; json parse error: {exc}", body
            ) from exc
    else:
        raise UnsupportedMediaType(
            "the body of the request was in an unknown format - accepted media types include: "
            "application/json, application/yaml"
        )
    if not isinstance(obj, dict):
        raise _unrecognized(
            expected_kind,
            "couldn't get version/kind; json parse error: "
            "Object 'Kind' is missing in the request body",
            body,
        )
    return obj


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _unrecognized(expected_kind: str, reason: str, body: bytes) -> BadRequest:
    summary = body[:_SUMMARY_CHARS].decode("utf-8", "replace")
    if len(body) > _SUMMARY_CHARS:
        summary += " ..."
    return BadRequest(
        f"the object provided is unrecognized (must be of type {expected_kind}): "
        f"{reason} ({summary})"
    )
