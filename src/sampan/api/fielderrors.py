"""Field errors worded as kube-apiserver words them (``field.ErrorList`` in upstream terms).

Each helper returns a ``Cause`` whose ``message`` is the error *body* upstream puts in a
Status cause (``Invalid value: "Foo": a lowercase RFC 1123 ...``) and whose ``field`` is the
path (``spec.containers[0].name``). ``error_string`` renders the ``<field>: <body>`` form that
upstream joins into the top-level Status message; ``invalid_message`` builds that message.

Values are rendered like Go's ``%q`` for strings, ``%v`` for numbers and booleans, ``%#v`` for
string maps and string lists (``map[string]string{"app":"web"}``, ``[]string{"a", "b"}``), and
as JSON for anything else (upstream prints Go syntax there; clients do not parse it).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from sampan.api.errors import Cause

__all__ = [
    "REASON_DUPLICATE",
    "REASON_FORBIDDEN",
    "REASON_INVALID",
    "REASON_NOT_FOUND",
    "REASON_NOT_SUPPORTED",
    "REASON_REQUIRED",
    "REASON_TOO_LONG",
    "REASON_TOO_MANY",
    "duplicate",
    "error_string",
    "forbidden",
    "format_value",
    "invalid",
    "invalid_message",
    "not_found",
    "not_supported",
    "required",
    "too_long",
    "too_many",
]

REASON_REQUIRED = "FieldValueRequired"
REASON_INVALID = "FieldValueInvalid"
REASON_DUPLICATE = "FieldValueDuplicate"
REASON_NOT_SUPPORTED = "FieldValueNotSupported"
REASON_FORBIDDEN = "FieldValueForbidden"
REASON_TOO_LONG = "FieldValueTooLong"
REASON_TOO_MANY = "FieldValueTooMany"
REASON_NOT_FOUND = "FieldValueNotFound"


def _cause(reason: str, message: str, path: str) -> Cause:
    return Cause(reason, message, path)


def format_value(value: Any) -> str:
    """Render a bad value as upstream's ErrorBody does."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if value is None:
        return "null"
    if isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        # Go's %#v of a map[string]string (label sets, selectors): keys sorted.
        inner = ", ".join(
            f"{json.dumps(k, ensure_ascii=False)}:{json.dumps(v, ensure_ascii=False)}"
            for k, v in sorted(value.items())
        )
        return f"map[string]string{{{inner}}}"
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        # Go's %#v of a []string.
        inner = ", ".join(json.dumps(v, ensure_ascii=False) for v in value)
        return f"[]string{{{inner}}}"
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)


def _with_detail(body: str, detail: str) -> str:
    return f"{body}: {detail}" if detail else body


def required(path: str, detail: str = "") -> Cause:
    return _cause(REASON_REQUIRED, _with_detail("Required value", detail), path)


def invalid(path: str, value: Any, detail: str = "") -> Cause:
    return _cause(
        REASON_INVALID, _with_detail(f"Invalid value: {format_value(value)}", detail), path
    )


def duplicate(path: str, value: Any) -> Cause:
    return _cause(REASON_DUPLICATE, f"Duplicate value: {format_value(value)}", path)


def not_supported(path: str, value: Any, supported: Sequence[str]) -> Cause:
    detail = ""
    if supported:
        detail = "supported values: " + ", ".join(json.dumps(str(s)) for s in supported)
    return _cause(
        REASON_NOT_SUPPORTED,
        _with_detail(f"Unsupported value: {format_value(value)}", detail),
        path,
    )


def forbidden(path: str, detail: str = "") -> Cause:
    return _cause(REASON_FORBIDDEN, _with_detail("Forbidden", detail), path)


def too_long(path: str, max_length: int) -> Cause:
    return _cause(REASON_TOO_LONG, f"Too long: may not be more than {max_length} bytes", path)


def too_many(path: str, actual: int, max_items: int) -> Cause:
    return _cause(REASON_TOO_MANY, f"Too many: {actual}: must have at most {max_items} items", path)


def not_found(path: str, value: Any) -> Cause:
    return _cause(REASON_NOT_FOUND, f"Not found: {format_value(value)}", path)


def error_string(cause: Cause) -> str:
    """``<field>: <body>``, one entry of upstream's aggregated error message."""
    return f"{cause.field}: {cause.message}" if cause.field else cause.message


def invalid_message(kind: str, name: str, causes: Iterable[Cause]) -> str:
    """The Status message of a 422: ``Pod "web" is invalid: <errors>`` (several errors are
    joined as ``[a, b]`` the way upstream's aggregate prints them)."""
    parts = [error_string(c) for c in causes]
    joined = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
    return f'{kind} "{name}" is invalid: {joined}'
