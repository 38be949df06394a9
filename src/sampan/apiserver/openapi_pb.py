"""The swagger 2.0 document in protobuf, as kube-apiserver serves ``/openapi/v2`` to client-go.

client-go (and so kubectl's client-side validation, which it falls back to when a kind is not
yet in the OpenAPI v3 documents, e.g. a CRD and an object of it in one file) asks for
``application/com.github.proto-openapi.spec.v2@v1.0+protobuf``: the message
``openapi.v2.Document`` of the gnostic project. This module writes that message from the same
JSON document ``OpenAPI.v2_bytes`` serves, so the two forms can never disagree.

The wire format is written by hand from the message layouts (field numbers are facts of the
published format; the tables below are ours). Values that the format keeps as free-form
``Any`` (``default``, ``example``, ``enum`` items and every ``x-`` vendor extension) are written
as YAML text, which gnostic readers parse; JSON text is valid YAML, so they are JSON-encoded.

Invariants: encoding is deterministic (keys in document order), proto3 zero values are left
out, and an unknown JSON key is skipped (the document is ours, so that only drops keys swagger
2.0 has no field for, such as ``nullable``).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["PROTOBUF_CONTENT_TYPE", "PROTOBUF_MEDIA_TYPES", "encode_document"]

PROTOBUF_CONTENT_TYPE = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
PROTOBUF_MEDIA_TYPES = (
    "application/com.github.proto-openapi.spec.v2@v1.0+protobuf",
    PROTOBUF_CONTENT_TYPE,
)
"""Accept values that ask for protobuf: the older spelling client-go sends, then the one
responses carry (an ``@`` is not valid in a media type Go parses)."""

_VARINT, _I64, _LEN = 0, 1, 2


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int64 values are written as ten-byte two's complement
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _tag(field: int, wire_type: int) -> bytes:
    return _varint(field << 3 | wire_type)


def _bytes(field: int, payload: bytes) -> bytes:
    return _tag(field, _LEN) + _varint(len(payload)) + payload


def _string(field: int, value: Any) -> bytes:
    return _bytes(field, str(value).encode()) if value not in (None, "") else b""


def _bool(field: int, value: Any) -> bytes:
    return _tag(field, _VARINT) + b"\x01" if value is True else b""


def _int(field: int, value: Any) -> bytes:
    if isinstance(value, bool) or not isinstance(value, int) or value == 0:
        return b""
    return _tag(field, _VARINT) + _varint(value)


def _double(field: int, value: Any) -> bytes:
    if isinstance(value, bool) or not isinstance(value, int | float) or value == 0:
        return b""
    return _tag(field, _I64) + struct.pack("<d", float(value))


def _any(value: Any) -> bytes:
    """``openapi.v2.Any`` with the value as YAML (field 2)."""
    return _bytes(2, json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


def _any_field(field: int, value: Any) -> bytes:
    return _bytes(field, _any(value)) if value is not None else b""


def _strings(field: int, values: Any) -> bytes:
    return b"".join(_string(field, v) for v in values or ())


def _named(field: int, name: str, value: bytes) -> bytes:
    """One ``Named*`` pair (name = 1, value = 2) as a repeated entry of ``field``."""
    return _bytes(field, _string(1, name) + _bytes(2, value))


def _extensions(field: int, node: Mapping[str, Any]) -> bytes:
    return b"".join(
        _named(field, key, _any(value)) for key, value in node.items() if key.startswith("x-")
    )


# --- schemas ------------------------------------------------------------------------------


def _schema(node: Mapping[str, Any]) -> bytes:
    out = bytearray()
    for key, value in node.items():
        writer = _SCHEMA_FIELDS.get(key)
        if writer is not None:
            out += writer(value)
    out += _extensions(31, node)
    return bytes(out)


def _schema_items(value: Any) -> bytes:
    schemas = value if isinstance(value, list) else [value]
    return _bytes(23, b"".join(_bytes(1, _schema(s)) for s in schemas if isinstance(s, dict)))


def _additional_properties(value: Any) -> bytes:
    if isinstance(value, bool):
        return _bytes(21, _tag(2, _VARINT) + (b"\x01" if value else b"\x00"))
    if isinstance(value, dict):
        return _bytes(21, _bytes(1, _schema(value)))
    return b""


def _properties(value: Any) -> bytes:
    if not isinstance(value, dict):
        return b""
    return _bytes(25, b"".join(_named(1, k, _schema(v)) for k, v in value.items()))


def _type(value: Any) -> bytes:
    return _bytes(22, _strings(1, value if isinstance(value, list) else [value]))


_SCHEMA_FIELDS: dict[str, Callable[[Any], bytes]] = {
    "$ref": lambda v: _string(1, v),
    "format": lambda v: _string(2, v),
    "title": lambda v: _string(3, v),
    "description": lambda v: _string(4, v),
    "default": lambda v: _any_field(5, v),
    "multipleOf": lambda v: _double(6, v),
    "maximum": lambda v: _double(7, v),
    "exclusiveMaximum": lambda v: _bool(8, v),
    "minimum": lambda v: _double(9, v),
    "exclusiveMinimum": lambda v: _bool(10, v),
    "maxLength": lambda v: _int(11, v),
    "minLength": lambda v: _int(12, v),
    "pattern": lambda v: _string(13, v),
    "maxItems": lambda v: _int(14, v),
    "minItems": lambda v: _int(15, v),
    "uniqueItems": lambda v: _bool(16, v),
    "maxProperties": lambda v: _int(17, v),
    "minProperties": lambda v: _int(18, v),
    "required": lambda v: _strings(19, v),
    "enum": lambda v: b"".join(_bytes(20, _any(item)) for item in v or ()),
    "additionalProperties": _additional_properties,
    "type": _type,
    "items": _schema_items,
    "allOf": lambda v: b"".join(_bytes(24, _schema(s)) for s in v or () if isinstance(s, dict)),
    "properties": _properties,
    "discriminator": lambda v: _string(26, v),
    "readOnly": lambda v: _bool(27, v),
    "example": lambda v: _any_field(30, v),
}


# --- parameters ---------------------------------------------------------------------------

# The block of primitive keywords every non-body parameter and ``PrimitivesItems`` share, in
# wire order; each message places it at its own first field number.
_PRIMITIVE_KEYS = (
    "type",
    "format",
    "items",
    "collectionFormat",
    "default",
    "maximum",
    "exclusiveMaximum",
    "minimum",
    "exclusiveMinimum",
    "maxLength",
    "minLength",
    "pattern",
    "maxItems",
    "minItems",
    "uniqueItems",
    "enum",
    "multipleOf",
)
_PRIMITIVE_WRITERS: dict[str, Callable[[int, Any], bytes]] = {
    "type": _string,
    "format": _string,
    "items": lambda f, v: _bytes(f, _primitives_items(v)) if isinstance(v, dict) else b"",
    "collectionFormat": _string,
    "default": _any_field,
    "maximum": _double,
    "exclusiveMaximum": _bool,
    "minimum": _double,
    "exclusiveMinimum": _bool,
    "maxLength": _int,
    "minLength": _int,
    "pattern": _string,
    "maxItems": _int,
    "minItems": _int,
    "uniqueItems": _bool,
    "enum": lambda f, v: b"".join(_bytes(f, _any(item)) for item in v or ()),
    "multipleOf": _double,
}


def _primitive_block(node: Mapping[str, Any], first: int) -> bytes:
    out = bytearray()
    for offset, key in enumerate(_PRIMITIVE_KEYS):
        if key in node:
            out += _PRIMITIVE_WRITERS[key](first + offset, node[key])
    return bytes(out)


def _primitives_items(node: Mapping[str, Any]) -> bytes:
    return _primitive_block(node, 1) + _extensions(18, node)


def _non_body_parameter(node: Mapping[str, Any]) -> bytes:
    location = node.get("in")
    head = _bool(1, node.get("required")) + _string(2, location)
    head += _string(3, node.get("description")) + _string(4, node.get("name"))
    if location in ("query", "formData"):
        # Query and form data parameters add allowEmptyValue (5) before the primitive block.
        body = head + _bool(5, node.get("allowEmptyValue")) + _primitive_block(node, 6)
        body += _extensions(23, node)
        return _bytes(3 if location == "query" else 2, body)
    body = head + _primitive_block(node, 5) + _extensions(22, node)
    return _bytes(1 if location == "header" else 4, body)


def _parameter(node: Mapping[str, Any]) -> bytes:
    """``openapi.v2.Parameter``: a body parameter (1) or a non-body one (2)."""
    if node.get("in") == "body":
        body = _string(1, node.get("description")) + _string(2, node.get("name"))
        body += _string(3, "body") + _bool(4, node.get("required"))
        if isinstance(node.get("schema"), dict):
            body += _bytes(5, _schema(node["schema"]))
        return _bytes(1, body + _extensions(6, node))
    return _bytes(2, _non_body_parameter(node))


def _parameters_item(node: Mapping[str, Any]) -> bytes:
    if "$ref" in node:
        return _bytes(2, _string(1, node["$ref"]) + _string(2, node.get("description")))
    return _bytes(1, _parameter(node))


# --- operations and paths -----------------------------------------------------------------


def _response(node: Mapping[str, Any]) -> bytes:
    out = _string(1, node.get("description"))
    if isinstance(node.get("schema"), dict):
        out += _bytes(2, _bytes(1, _schema(node["schema"])))
    return out + _extensions(5, node)


def _responses(node: Mapping[str, Any]) -> bytes:
    out = bytearray()
    for code, value in node.items():
        if code.startswith("x-") or not isinstance(value, dict):
            continue
        if "$ref" in value:
            item = _bytes(2, _string(1, value["$ref"]))
        else:
            item = _bytes(1, _response(value))
        out += _named(1, code, item)
    return bytes(out) + _extensions(2, node)


def _security(requirements: Any) -> list[bytes]:
    return [
        b"".join(_named(1, name, _strings(1, scopes)) for name, scopes in requirement.items())
        for requirement in requirements or ()
    ]


def _operation(node: Mapping[str, Any]) -> bytes:
    out = _strings(1, node.get("tags")) + _string(2, node.get("summary"))
    out += _string(3, node.get("description")) + _string(5, node.get("operationId"))
    out += _strings(6, node.get("produces")) + _strings(7, node.get("consumes"))
    out += b"".join(_bytes(8, _parameters_item(p)) for p in node.get("parameters") or ())
    if isinstance(node.get("responses"), dict):
        out += _bytes(9, _responses(node["responses"]))
    out += _strings(10, node.get("schemes")) + _bool(11, node.get("deprecated"))
    out += b"".join(_bytes(12, s) for s in _security(node.get("security")))
    return out + _extensions(13, node)


_METHOD_FIELDS = {"get": 2, "put": 3, "post": 4, "delete": 5, "options": 6, "head": 7, "patch": 8}


def _path_item(node: Mapping[str, Any]) -> bytes:
    out = bytearray(_string(1, node.get("$ref")))
    for method, field in _METHOD_FIELDS.items():
        if isinstance(node.get(method), dict):
            out += _bytes(field, _operation(node[method]))
    out += b"".join(_bytes(9, _parameters_item(p)) for p in node.get("parameters") or ())
    return bytes(out) + _extensions(10, node)


def _security_definition(node: Mapping[str, Any]) -> bytes:
    kind = node.get("type")
    if kind == "apiKey":
        body = _string(1, kind) + _string(2, node.get("name")) + _string(3, node.get("in"))
        return _bytes(2, body + _string(4, node.get("description")) + _extensions(5, node))
    if kind == "basic":
        return _bytes(1, _string(1, kind) + _string(2, node.get("description")))
    return b""  # OAuth2 flows: the API server never declares them


# --- the document -------------------------------------------------------------------------


def encode_document(document: Mapping[str, Any]) -> bytes:
    """``openapi.v2.Document`` for a swagger 2.0 document given as parsed JSON."""
    out = bytearray(_string(1, document.get("swagger")))
    info = document.get("info")
    if isinstance(info, dict):
        body = _string(1, info.get("title")) + _string(2, info.get("version"))
        out += _bytes(2, body + _string(3, info.get("description")) + _extensions(7, info))
    out += _string(3, document.get("host")) + _string(4, document.get("basePath"))
    for field, key in ((5, "schemes"), (6, "consumes"), (7, "produces")):
        out += _strings(field, document.get(key))
    paths = document.get("paths")
    if isinstance(paths, dict):
        items = b"".join(
            _named(2, path, _path_item(item))
            for path, item in paths.items()
            if not path.startswith("x-") and isinstance(item, dict)
        )
        out += _bytes(8, _extensions(1, paths) + items)
    for field, key, encode in (
        (9, "definitions", _schema),
        (10, "parameters", _parameter),
        (11, "responses", _response),
        (13, "securityDefinitions", _security_definition),
    ):
        table = document.get(key)
        if isinstance(table, dict) and table:
            out += _bytes(field, b"".join(_named(1, k, encode(v)) for k, v in table.items()))
    out += b"".join(_bytes(12, s) for s in _security(document.get("security")))
    return bytes(out) + _extensions(16, document)
