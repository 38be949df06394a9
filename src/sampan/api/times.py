"""Timestamps as the Kubernetes API writes and reads them.

``metav1.Time`` is RFC 3339 in UTC with second precision (``2026-12-07T03:04:05Z``);
``metav1.MicroTime`` (Leases, events.k8s.io Events) adds six fractional digits
(``2026-12-07T03:04:05.123456Z``). Every component formats and parses through this module,
so one format is written everywhere.

Invariants: formatting always converts to UTC first (a naive datetime is taken as UTC);
``parse`` never raises: absent, malformed or Go's zero time (``0001-01-01T00:00:00Z``) give
None, and a parsed value is always timezone-aware.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

__all__ = ["from_unix", "micro", "now", "parse", "rfc3339"]

_SECONDS = "%Y-%m-%dT%H:%M:%SZ"
_MICROS = "%Y-%m-%dT%H:%M:%S.%fZ"
_ZERO_TIME = datetime(1, 1, 1, tzinfo=UTC)


def _utc(moment: datetime | None) -> datetime:
    if moment is None:
        return datetime.now(UTC)
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def rfc3339(moment: datetime | None = None) -> str:
    """A ``metav1.Time`` string for ``moment`` (now when None)."""
    return _utc(moment).strftime(_SECONDS)


def micro(moment: datetime | None = None) -> str:
    """A ``metav1.MicroTime`` string for ``moment`` (now when None)."""
    return _utc(moment).strftime(_MICROS)


def now() -> str:
    """The current time as a ``metav1.Time`` string."""
    return rfc3339(None)


def from_unix(seconds: float) -> datetime:
    """The aware UTC datetime of a Unix time in seconds (divide nanoseconds by 1e9 first)."""
    return datetime.fromtimestamp(seconds, UTC)


def parse(text: Any) -> datetime | None:
    """A ``metav1.Time`` or ``MicroTime`` string (any RFC 3339 offset), or None."""
    if not isinstance(text, str) or not text:
        return None
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    if parsed <= _ZERO_TIME:
        return None
    return parsed
