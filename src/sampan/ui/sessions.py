"""Browser sessions: an opaque id in a cookie, everything else server side.

The cookie (``COOKIE``) holds only a random session id (``secrets.token_urlsafe(32)``); it is
``Secure``, ``HttpOnly``, ``SameSite=Strict`` and scoped to the UI's path. The session keeps
the user's credential (never sent to the browser, never logged), the user's display name and a
CSRF token that every state-changing request must echo (header ``X-CSRF-Token`` or form
field ``csrf_token``; compared in constant time).

A session ends at logout, after ``IDLE_TTL_S`` without a request, after ``MAX_TTL_S`` in all,
or when the credential expires (a manager token's own TTL); an ended session is forgotten and
its id answers as no session (the UI then redirects to its login page).
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ["COOKIE", "IDLE_TTL_S", "MAX_TTL_S", "Session", "Sessions"]

COOKIE = "sampan_ui_session"
IDLE_TTL_S = 30 * 60.0
MAX_TTL_S = 12 * 3600.0
MAX_SESSIONS = 10_000


@dataclass
class Session:
    id: str = field(repr=False)
    user: str
    token: str = field(repr=False)
    csrf: str = field(repr=False)
    created: float
    last_seen: float
    expires: float
    """Absolute end (``MAX_TTL_S`` or the credential's expiry, whichever is first)."""
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def csrf_ok(self, presented: str | None) -> bool:
        return bool(presented) and hmac.compare_digest(self.csrf, presented or "")


class Sessions:
    """The live sessions of one UI server (in memory: a restart logs everyone out)."""

    def __init__(self, *, idle_ttl_s: float = IDLE_TTL_S, clock: Any = time.monotonic) -> None:
        self._sessions: dict[str, Session] = {}
        self.idle_ttl_s = idle_ttl_s
        self._clock = clock

    def create(self, user: str, token: str, *, ttl_s: float | None = None, **extra: Any) -> Session:
        now = self._clock()
        self._expire(now)
        if len(self._sessions) >= MAX_SESSIONS:
            oldest = min(self._sessions.values(), key=lambda s: s.last_seen)
            self._sessions.pop(oldest.id, None)
        lifetime = MAX_TTL_S if ttl_s is None else min(ttl_s, MAX_TTL_S)
        session = Session(
            id=secrets.token_urlsafe(32),
            user=user,
            token=token,
            csrf=secrets.token_urlsafe(32),
            created=now,
            last_seen=now,
            expires=now + lifetime,
            extra=extra,
        )
        self._sessions[session.id] = session
        return session

    def get(self, session_id: str | None) -> Session | None:
        """The live session of that id (its idle clock restarts), or None."""
        if not session_id:
            return None
        session = self._sessions.get(session_id)
        if session is None:
            return None
        now = self._clock()
        if now >= session.expires or now - session.last_seen >= self.idle_ttl_s:
            self._sessions.pop(session_id, None)
            return None
        session.last_seen = now
        return session

    def peek(self, session_id: str | None) -> Session | None:
        """Like ``get`` without touching the idle clock (live streams use it)."""
        session = self._sessions.get(session_id or "")
        if session is None:
            return None
        now = self._clock()
        if now >= session.expires or now - session.last_seen >= self.idle_ttl_s:
            return None
        return session

    def end(self, session_id: str) -> Session | None:
        return self._sessions.pop(session_id, None)

    def _expire(self, now: float) -> None:
        for sid in [
            s.id
            for s in self._sessions.values()
            if now >= s.expires or now - s.last_seen >= self.idle_ttl_s
        ]:
            del self._sessions[sid]

    def __len__(self) -> int:
        return len(self._sessions)
