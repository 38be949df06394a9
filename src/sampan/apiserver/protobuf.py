"""The smallest protobuf reader the API server needs: Kubernetes' ``k8s\\x00`` envelope and the
few messages clients send only as protobuf.

Sampan answers in JSON, but kubectl's typed clients send some request bodies as
``application/vnd.kubernetes.protobuf`` regardless of the server (``kubectl auth whoami``
posts a SelfSubjectReview, ``kubectl auth can-i`` a SelfSubjectAccessReview). Those review
bodies are tiny and fixed, so this module decodes them by field number (from Kubernetes'
published ``generated.proto``); any other protobuf body is refused with 415 by the caller.

Invariant: decoding never raises anything but ``ProtobufError``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ENVELOPE_MAGIC", "ProtobufError", "decode_review"]

ENVELOPE_MAGIC = b"k8s\x00"
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


class ProtobufError(ValueError):
    pass


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
    """(field number, wire type, value) for every field of one message."""
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
        elif wire == _I64:
            value, pos = data[pos : pos + 8], pos + 8
        elif wire == _I32:
            value, pos = data[pos : pos + 4], pos + 4
        else:
            raise ProtobufError(f"unsupported wire type {wire}")
        out.append((number, wire, value))
    return out


def _strings(data: bytes, names: dict[int, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for number, wire, value in _fields(data):
        if wire == _LEN and number in names:
            out[names[number]] = value.decode("utf-8", "replace")
    return out


def _envelope(body: bytes) -> tuple[str, str, bytes]:
    if not body.startswith(ENVELOPE_MAGIC):
        raise ProtobufError("missing the k8s protobuf envelope")
    api_version = kind = ""
    raw = b""
    for number, wire, value in _fields(body[len(ENVELOPE_MAGIC) :]):
        if number == 1 and wire == _LEN:  # typeMeta
            meta = _strings(value, {1: "apiVersion", 2: "kind"})
            api_version, kind = meta.get("apiVersion", ""), meta.get("kind", "")
        elif number == 2 and wire == _LEN:  # raw
            raw = value
    return api_version, kind, raw


# ResourceAttributes / NonResourceAttributes field numbers (authorization/v1 generated.proto).
_RESOURCE_ATTRIBUTES = {
    1: "namespace",
    2: "verb",
    3: "group",
    4: "version",
    5: "resource",
    6: "subresource",
    7: "name",
}
_NON_RESOURCE_ATTRIBUTES = {1: "path", 2: "verb"}


def _access_review_spec(data: bytes) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    for number, wire, value in _fields(data):
        if wire != _LEN:
            continue
        if number == 1:
            spec["resourceAttributes"] = _strings(value, _RESOURCE_ATTRIBUTES)
        elif number == 2:
            spec["nonResourceAttributes"] = _strings(value, _NON_RESOURCE_ATTRIBUTES)
    return spec


def decode_review(body: bytes) -> dict[str, Any]:
    """A SelfSubjectReview or SelfSubjectAccessReview sent as protobuf, as a JSON-shaped dict."""
    try:
        api_version, kind, raw = _envelope(body)
        obj: dict[str, Any] = {"apiVersion": api_version, "kind": kind, "metadata": {}}
        if kind == "SelfSubjectAccessReview":
            for number, wire, value in _fields(raw):
                if number == 2 and wire == _LEN:
                    obj["spec"] = _access_review_spec(value)
        elif kind != "SelfSubjectReview":
            raise ProtobufError(f"protobuf bodies of kind {kind or '?'} are not supported")
        return obj
    except (IndexError, UnicodeDecodeError) as exc:
        raise ProtobufError(str(exc)) from exc
