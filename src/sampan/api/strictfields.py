"""Strict reads of typed fields from plain-JSON objects.

Objects travel as plain dicts, so nothing stops ``"privileged": "true"`` (a string) or
``"hostPID": 1`` from reaching code that asks "is this set?". Python's truthiness would call
both true, an ``is True`` test would call both false: two readers of one pod could disagree
about a security setting. Every security decision reads its fields through these helpers
instead — PodSecurity admission on the API side, the kubelet's sandbox and container configs
on the node — so both sides see the same typed value or the same error.

Rules (those of the Kubernetes JSON decoding of a typed field):

* an absent key and JSON ``null`` both mean "unset" (``None``, or an empty container);
* a boolean is ``True``/``False`` only; an integer is an ``int`` that is not a ``bool``
  (``True`` is not 1); a string is a ``str``; an object a ``dict``; an array a ``list``;
* anything else raises ``FieldTypeError`` naming the field path, the value and the expected
  type, worded as upstream words a field error
  (``spec.hostPID: Invalid value: 1: must be a boolean``). Never coerced, never defaulted.

Pure functions, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sampan.api.fielderrors import format_value

__all__ = [
    "FieldTypeError",
    "get_bool",
    "get_int",
    "get_int_list",
    "get_list",
    "get_obj",
    "get_str",
    "get_str_list",
    "join_path",
]


class FieldTypeError(ValueError):
    """A field holds a JSON value of the wrong type."""

    def __init__(self, path: str, value: Any, expected: str) -> None:
        self.path = path
        self.value = value
        self.expected = expected
        super().__init__(f"{path}: Invalid value: {format_value(value)}: must be {expected}")

    @property
    def detail(self) -> str:
        """The part after the value (``must be a boolean``), for a field-error cause."""
        return f"must be {self.expected}"


def join_path(parent: str, key: str | int) -> str:
    """``spec`` + ``hostPID`` -> ``spec.hostPID``; ``spec.containers`` + 0 -> ``...[0]``."""
    if isinstance(key, int):
        return f"{parent}[{key}]"
    return f"{parent}.{key}" if parent else key


def _raw(obj: Mapping[str, Any] | None, key: str) -> Any:
    return None if obj is None else obj.get(key)


def get_bool(obj: Mapping[str, Any] | None, key: str, parent: str = "") -> bool | None:
    value = _raw(obj, key)
    if value is None or isinstance(value, bool):
        return value
    raise FieldTypeError(join_path(parent, key), value, "a boolean")


def get_int(obj: Mapping[str, Any] | None, key: str, parent: str = "") -> int | None:
    value = _raw(obj, key)
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise FieldTypeError(join_path(parent, key), value, "an integer")


def get_str(obj: Mapping[str, Any] | None, key: str, parent: str = "") -> str | None:
    value = _raw(obj, key)
    if value is None or isinstance(value, str):
        return value
    raise FieldTypeError(join_path(parent, key), value, "a string")


def get_obj(obj: Mapping[str, Any] | None, key: str, parent: str = "") -> Mapping[str, Any]:
    """The nested object (``{}`` when unset)."""
    value = _raw(obj, key)
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    raise FieldTypeError(join_path(parent, key), value, "an object")


def get_list(obj: Mapping[str, Any] | None, key: str, parent: str = "") -> list[Any]:
    """The array (``[]`` when unset); its items are not checked."""
    value = _raw(obj, key)
    if value is None:
        return []
    if isinstance(value, list):
        return value
    raise FieldTypeError(join_path(parent, key), value, "an array")


def get_str_list(obj: Mapping[str, Any] | None, key: str, parent: str = "") -> list[str]:
    items = get_list(obj, key, parent)
    for index, item in enumerate(items):
        if not isinstance(item, str):
            raise FieldTypeError(join_path(join_path(parent, key), index), item, "a string")
    return items


def get_int_list(obj: Mapping[str, Any] | None, key: str, parent: str = "") -> list[int]:
    items = get_list(obj, key, parent)
    for index, item in enumerate(items):
        if not isinstance(item, int) or isinstance(item, bool):
            raise FieldTypeError(join_path(join_path(parent, key), index), item, "an integer")
    return items
