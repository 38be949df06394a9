"""Request validation and the row layout shared by the SQL drivers.

Owns the rules for what a caller may send (keys under ``KEY_PREFIX``, values within
``MAX_VALUE_BYTES``) and the mapping from a log row to ``KeyValue``/``Event``.

Row layout (one row per write; the row id is the revision)::

    (id, name, created, deleted, create_revision, prev_revision, lease, value, old_value)

Invariants:

* a row with ``created`` starts a new life of its key; its create revision is its own id (it is
  stored as 0 because the id is not known before the insert);
* an update or delete row carries the create revision of the life it continues and, in
  ``old_value``, the value of the row it superseded (``prev_revision``), so a watch event can
  carry ``prev_kv`` without a second lookup;
* a tombstone (``deleted``) has an empty ``value``.
"""

from __future__ import annotations

from typing import Any

from sampan.datastore.types import (
    KEY_PREFIX,
    MAX_VALUE_BYTES,
    Event,
    EventType,
    InvalidRequestError,
    KeyValue,
)

__all__ = [
    "COLUMNS",
    "GAP_FILL_PREFIX",
    "KV_COLUMNS",
    "Row",
    "check_key",
    "check_prefix",
    "check_value",
    "prefix_end",
    "row_event",
    "row_kv",
]

COLUMNS = "id, name, created, deleted, create_revision, prev_revision, lease, value, old_value"
"""The column order every driver selects, matching ``Row``."""

KV_COLUMNS = "name, value, CASE WHEN created THEN id ELSE create_revision END, id, lease"
"""Columns that build a ``KeyValue`` directly (``KeyValue(*row)``): the fast path for reads."""

GAP_FILL_PREFIX = "gap-fill/"
"""Names of rows written to fill a revision gap; outside ``KEY_PREFIX`` so no read sees them."""

Row = tuple[Any, ...]
"""One log row in ``COLUMNS`` order."""


def check_key(key: str) -> None:
    """Refuse an empty key or one outside the store's prefix."""
    if not isinstance(key, str) or not key:
        raise InvalidRequestError("key must be a non-empty string")
    if not key.startswith(KEY_PREFIX) or key == KEY_PREFIX:
        raise InvalidRequestError(f"key {key[:200]!r} is not under {KEY_PREFIX!r}")
    if "\x00" in key:
        raise InvalidRequestError("key must not contain NUL characters")


def check_prefix(prefix: str) -> None:
    """Refuse a range prefix outside the store's prefix (the prefix itself is allowed)."""
    if not isinstance(prefix, str) or not prefix.startswith(KEY_PREFIX):
        raise InvalidRequestError(f"range {str(prefix)[:200]!r} is not under {KEY_PREFIX!r}")


def check_value(value: bytes) -> None:
    """Refuse a value that is not bytes or is larger than ``MAX_VALUE_BYTES``."""
    if not isinstance(value, bytes):
        raise InvalidRequestError(f"value must be bytes, not {type(value).__name__}")
    if len(value) > MAX_VALUE_BYTES:
        raise InvalidRequestError(
            f"value of {len(value)} bytes is larger than the limit of {MAX_VALUE_BYTES} bytes"
        )


def prefix_end(prefix: str) -> str:
    """The smallest string greater than every string that starts with ``prefix``."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def row_kv(row: Row) -> KeyValue:
    """The record a live row stands for."""
    row_id, name, created, _deleted, create_revision, _prev, lease, value, _old = row
    return KeyValue(
        key=name,
        value=bytes(value),
        create_revision=row_id if created else create_revision,
        mod_revision=row_id,
        lease=lease,
    )


def row_event(row: Row) -> Event:
    """The watch event a row stands for (PUT for creates and updates, DELETE for tombstones)."""
    row_id, name, created, deleted, create_revision, prev_revision, lease, value, old = row
    create_rev = row_id if created else create_revision
    prev_kv = (
        None
        if created
        else KeyValue(
            key=name,
            value=bytes(old),
            create_revision=create_rev,
            mod_revision=prev_revision,
            lease=lease,
        )
    )
    if deleted:
        kv = KeyValue(key=name, value=b"", create_revision=create_rev, mod_revision=row_id)
        return Event(EventType.DELETE, kv, prev_kv)
    kv = KeyValue(
        key=name, value=bytes(value), create_revision=create_rev, mod_revision=row_id, lease=lease
    )
    return Event(EventType.PUT, kv, prev_kv)
