"""The smallest protobuf reader the API server needs: Kubernetes' ``k8s\\x00`` envelope and the
few kinds clients send only as protobuf.

Sampan answers in JSON, but client-go 1.32 typed clients (and so kubectl's ``create
namespace``, ``create configmap``, ``create secret``, ``create serviceaccount``, ``auth
whoami``, ``auth can-i``) send request bodies as ``application/vnd.kubernetes.protobuf``
whatever the server prefers. This module decodes those bodies into the same dicts the JSON
path produces, from small per-kind schemas (field number -> JSON name and type, as published
in Kubernetes' ``generated.proto`` files). A kind without a schema here is refused by the
caller with 415; part 2 of the API server widens the table (or serves protobuf fully).

Invariant: decoding never raises anything but ``ProtobufError``; empty scalar fields, which
Go's encoder writes out, are dropped the way ``omitempty`` drops them in JSON.
"""

from __future__ import annotations

import base64
import datetime as dt
from dataclasses import dataclass
from typing import Any

__all__ = ["ENVELOPE_MAGIC", "ProtobufError", "decode_object", "supported_kinds"]

ENVELOPE_MAGIC = b"k8s\x00"
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


class ProtobufError(ValueError):
    pass


_Schema = dict[int, Any]
"""Field number -> _Field (plus the _IGNORED entry)."""


@dataclass(frozen=True)
class _Field:
    name: str
    type: str  # string | bytes | bool | int | time | map_str | map_bytes | message
    repeated: bool = False
    schema: _Schema | None = None


def _f(name: str, type_: str, *, repeated: bool = False, schema: Any = None) -> _Field:
    return _Field(name, type_, repeated, schema)


_TIME = "time"
_OWNER_REFERENCE = {
    1: _f("kind", "string"),
    3: _f("name", "string"),
    4: _f("uid", "string"),
    5: _f("apiVersion", "string"),
    6: _f("controller", "bool"),
    7: _f("blockOwnerDeletion", "bool"),
}
_IGNORED = -1
"""Schema key listing field numbers that are read and deliberately discarded."""
_OBJECT_META: dict[int, Any] = {
    _IGNORED: (4, 17),  # selfLink (deprecated), managedFields (server-side apply, part 2)
    1: _f("name", "string"),
    2: _f("generateName", "string"),
    3: _f("namespace", "string"),
    5: _f("uid", "string"),
    6: _f("resourceVersion", "string"),
    7: _f("generation", "int"),
    8: _f("creationTimestamp", _TIME),
    9: _f("deletionTimestamp", _TIME),
    10: _f("deletionGracePeriodSeconds", "int"),
    11: _f("labels", "map_str"),
    12: _f("annotations", "map_str"),
    13: _f("ownerReferences", "message", repeated=True, schema=_OWNER_REFERENCE),
    14: _f("finalizers", "string", repeated=True),
}
_META = _f("metadata", "message", schema=_OBJECT_META)
_RESOURCE_ATTRIBUTES = {
    1: _f("namespace", "string"),
    2: _f("verb", "string"),
    3: _f("group", "string"),
    4: _f("version", "string"),
    5: _f("resource", "string"),
    6: _f("subresource", "string"),
    7: _f("name", "string"),
}
_NON_RESOURCE_ATTRIBUTES = {1: _f("path", "string"), 2: _f("verb", "string")}
_REFERENCE = {
    1: _f("kind", "string"),
    2: _f("namespace", "string"),
    3: _f("name", "string"),
    4: _f("uid", "string"),
    5: _f("apiVersion", "string"),
    6: _f("resourceVersion", "string"),
    7: _f("fieldPath", "string"),
}

_KINDS: dict[tuple[str, str], _Schema] = {
    ("v1", "Namespace"): {
        _IGNORED: (3,),  # status: set by the server on create
        1: _META,
        2: _f("spec", "message", schema={1: _f("finalizers", "string", repeated=True)}),
    },
    ("v1", "ConfigMap"): {
        1: _META,
        2: _f("data", "map_str"),
        3: _f("binaryData", "map_bytes"),
        4: _f("immutable", "bool"),
    },
    ("v1", "Secret"): {
        1: _META,
        2: _f("data", "map_bytes"),
        3: _f("type", "string"),
        4: _f("stringData", "map_str"),
        5: _f("immutable", "bool"),
    },
    ("v1", "ServiceAccount"): {
        1: _META,
        2: _f("secrets", "message", repeated=True, schema=_REFERENCE),
        3: _f("imagePullSecrets", "message", repeated=True, schema={1: _f("name", "string")}),
        4: _f("automountServiceAccountToken", "bool"),
    },
    ("authentication.k8s.io/v1", "SelfSubjectReview"): {_IGNORED: (2,), 1: _META},
    ("authorization.k8s.io/v1", "SelfSubjectAccessReview"): {
        _IGNORED: (3,),  # status: computed by the server
        1: _META,
        2: _f(
            "spec",
            "message",
            schema={
                1: _f("resourceAttributes", "message", schema=_RESOURCE_ATTRIBUTES),
                2: _f("nonResourceAttributes", "message", schema=_NON_RESOURCE_ATTRIBUTES),
            },
        ),
    },
}


def supported_kinds() -> list[tuple[str, str]]:
    """(apiVersion, kind) pairs whose protobuf bodies can be decoded."""
    return sorted(_KINDS)


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ProtobufError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ProtobufError("varint too long")


def _fields(data: bytes) -> list[tuple[int, int, Any]]:
    """(field number, wire type, value) for every field of one message, in order."""
    out: list[tuple[int, int, Any]] = []
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, pos = _varint(data, pos)
        elif wire == _LEN:
            length, pos = _varint(data, pos)
            if pos + length > len(data):
                raise ProtobufError("truncated field")
            value = data[pos : pos + length]
            pos += length
        elif wire in (_I64, _I32):
            size = 8 if wire == _I64 else 4
            if pos + size > len(data):
                raise ProtobufError("truncated field")
            value, pos = data[pos : pos + size], pos + size
        else:
            raise ProtobufError(f"unsupported wire type {wire}")
        out.append((number, wire, value))
    return out


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _time(data: bytes) -> str | None:
    seconds = 0
    for number, wire, value in _fields(data):
        if number == 1 and wire == _VARINT:
            seconds = _signed(value)
    if seconds == 0:
        return None
    moment = dt.datetime.fromtimestamp(seconds, dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _map_entry(data: bytes) -> tuple[str, bytes]:
    key = ""
    value = b""
    for number, wire, item in _fields(data):
        if wire != _LEN:
            continue
        if number == 1:
            key = item.decode("utf-8")
        elif number == 2:
            value = item
    return key, value


def _scalar(field: _Field, wire: int, value: Any) -> Any:
    kind = field.type
    if kind in ("string", "bytes") and wire == _LEN:
        return value.decode("utf-8") if kind == "string" else base64.b64encode(value).decode()
    if kind == "bool" and wire == _VARINT:
        return bool(value)
    if kind == "int" and wire == _VARINT:
        return _signed(value)
    if kind == _TIME and wire == _LEN:
        return _time(value)
    if kind == "message" and wire == _LEN:
        assert field.schema is not None
        return _message(value, field.schema)
    raise ProtobufError(f"field {field.name}: unexpected wire type {wire}")


def _message(data: bytes, schema: _Schema) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for number, wire, value in _fields(data):
        field = schema.get(number)
        if field is None:
            if number in schema.get(_IGNORED, ()) or (wire == _LEN and not value):
                continue  # deliberately ignored, or an empty message (e.g. status: {})
            # Never drop data silently: a field this table does not know refuses the body.
            raise ProtobufError(f"protobuf field {number} is not supported yet")
        if field.type in ("map_str", "map_bytes"):
            key, raw = _map_entry(value)
            entry = (
                raw.decode("utf-8") if field.type == "map_str" else (base64.b64encode(raw).decode())
            )
            out.setdefault(field.name, {})[key] = entry
            continue
        decoded = _scalar(field, wire, value)
        if field.repeated:
            out.setdefault(field.name, []).append(decoded)
        elif decoded not in ("", 0, None) or isinstance(decoded, bool):
            out[field.name] = decoded
    return out


def decode_object(body: bytes) -> dict[str, Any]:
    """A protobuf-enveloped object of a supported kind, as the dict its JSON form decodes to."""
    if not body.startswith(ENVELOPE_MAGIC):
        raise ProtobufError("the body does not start with the Kubernetes protobuf envelope")
    try:
        api_version = kind = ""
        raw = b""
        for number, wire, value in _fields(body[len(ENVELOPE_MAGIC) :]):
            if number == 1 and wire == _LEN:  # typeMeta {apiVersion=1, kind=2}
                for sub_number, sub_wire, sub_value in _fields(value):
                    if sub_wire == _LEN and sub_number == 1:
                        api_version = sub_value.decode("utf-8")
                    elif sub_wire == _LEN and sub_number == 2:
                        kind = sub_value.decode("utf-8")
            elif number == 2 and wire == _LEN:
                raw = value
        schema = _KINDS.get((api_version, kind))
        if schema is None:
            raise ProtobufError(
                f"protobuf bodies of kind {kind or '?'} ({api_version or '?'}) are not "
                "supported yet: send application/json"
            )
        obj = _message(raw, schema)
        obj.setdefault("metadata", {})
        return {"apiVersion": api_version, "kind": kind, **obj}
    except (UnicodeDecodeError, OverflowError, ValueError) as exc:
        if isinstance(exc, ProtobufError):
            raise
        raise ProtobufError(f"malformed protobuf body: {exc}") from exc
