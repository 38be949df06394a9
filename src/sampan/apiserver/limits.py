"""Request limits: in-flight requests (kube-apiserver's max-in-flight filter) and watches per
user, so that one client cannot stall the API server.

Owns two counters and the ``kube-apiserver-arg`` keys that size them:

* ``InFlightLimiter``: at most ``max_requests_inflight`` non-mutating (get, list) and
  ``max_mutating_requests_inflight`` mutating requests are served at once, as kube-apiserver's
  non-APF ``WithMaxInFlightLimit``: long-running requests (the verbs watch and proxy; the
  subresources attach, exec, log, portforward, proxy) are not counted, a request beyond the
  limit gets 429 ``TooManyRequests`` with ``Retry-After: 1`` unless its user is in
  ``system:masters`` (served, untracked, as upstream: "a system:master should always get an
  answer"). A limit of 0 turns that kind's limit off. The health and version endpoints are
  exempt (the server checks that before asking): upstream exempts probes through the
  flow-control "exempt" priority level.
* ``WatchLimiter``: at most ``max_watches_per_user`` watches open at once per user name (after
  impersonation); the next one gets 429 with ``Retry-After: 1``. Not an upstream feature: it
  bounds the memory one identity can pin with open watch streams. 0 turns it off.

Invariants: a slot is taken and given back by the same ``with`` block, so counts never leak
(an exception, a cancelled request or a client that went away all leave through ``__exit__``);
per-user watch counts of zero are removed, so the map holds only users with open watches.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from sampan.api.errors import TooManyRequests

__all__ = [
    "DEFAULT_MAX_MUTATING_REQUESTS_INFLIGHT",
    "DEFAULT_MAX_REQUESTS_INFLIGHT",
    "DEFAULT_MAX_WATCHES_PER_USER",
    "LIMITS_ARGS",
    "InFlightLimiter",
    "LimitsOptions",
    "WatchLimiter",
    "is_long_running",
    "parse_limits_args",
]

DEFAULT_MAX_REQUESTS_INFLIGHT = 400
"""kube-apiserver's --max-requests-inflight default (non-mutating requests)."""
DEFAULT_MAX_MUTATING_REQUESTS_INFLIGHT = 200
"""kube-apiserver's --max-mutating-requests-inflight default."""
DEFAULT_MAX_WATCHES_PER_USER = 500
"""Open watches per user. Each is one connection (no HTTP/2 here), about 0.3 MB with its TLS
buffers, so one identity can pin at most about 150 MB; the busiest in-process identity (the
controller manager) holds a few dozen, operators one per kind (and namespace) they watch."""
RETRY_AFTER_S = 1
TOO_MANY_REQUESTS_MESSAGE = "Too many requests, please try again later."
SYSTEM_PRIVILEGED_GROUP = "system:masters"

NON_MUTATING_VERBS = frozenset({"get", "list", "watch"})
LONG_RUNNING_VERBS = frozenset({"watch", "proxy"})
LONG_RUNNING_SUBRESOURCES = frozenset({"attach", "exec", "proxy", "log", "portforward"})

LIMITS_ARGS = (
    "max-requests-inflight",
    "max-mutating-requests-inflight",
    "max-watches-per-user",
)
"""The ``kube-apiserver-arg`` keys that size these limits (the first two are upstream's)."""


@dataclass(frozen=True)
class LimitsOptions:
    max_requests_inflight: int = DEFAULT_MAX_REQUESTS_INFLIGHT
    max_mutating_requests_inflight: int = DEFAULT_MAX_MUTATING_REQUESTS_INFLIGHT
    max_watches_per_user: int = DEFAULT_MAX_WATCHES_PER_USER


def parse_limits_args(args: Mapping[str, str]) -> LimitsOptions:
    """``LimitsOptions`` from ``kube-apiserver-arg`` entries (key without dashes -> value).
    ValueError naming the flag for a key not in ``LIMITS_ARGS`` (the only keys acted on) or a
    value that is not a non-negative integer."""
    for key in args:
        if key not in LIMITS_ARGS:
            raise ValueError(f"unsupported key {key!r} (supported: {', '.join(LIMITS_ARGS)})")
    values: dict[str, int] = {}
    for key in LIMITS_ARGS:
        raw = args.get(key)
        if raw is None:
            continue
        try:
            value = int(raw.strip())
        except ValueError:
            raise ValueError(f"--{key}: {raw!r} is not an integer") from None
        if value < 0:
            raise ValueError(f"--{key}: {value} must not be negative (0 turns the limit off)")
        values[key.replace("-", "_")] = value
    return LimitsOptions(**values)


def is_long_running(verb: str, subresource: str) -> bool:
    """kube-apiserver's long-running check: watches, proxies and streaming subresources."""
    return verb in LONG_RUNNING_VERBS or subresource in LONG_RUNNING_SUBRESOURCES


def _privileged(user: Any) -> bool:
    return user is not None and SYSTEM_PRIVILEGED_GROUP in getattr(user, "groups", ())


def too_many_requests(message: str = TOO_MANY_REQUESTS_MESSAGE) -> TooManyRequests:
    return TooManyRequests(message, retry_after_s=RETRY_AFTER_S)


class InFlightLimiter:
    """Counts requests being served; see the module docstring."""

    def __init__(self, max_non_mutating: int, max_mutating: int) -> None:
        self.max_non_mutating = max_non_mutating
        self.max_mutating = max_mutating
        self.non_mutating = 0
        self.mutating = 0

    @contextlib.contextmanager
    def admit(self, verb: str, subresource: str, user: Any) -> Iterator[None]:
        """Hold a slot for the body of the ``with``; TooManyRequests when none is free."""
        if is_long_running(verb, subresource):
            yield
            return
        mutating = verb not in NON_MUTATING_VERBS
        limit = self.max_mutating if mutating else self.max_non_mutating
        current = self.mutating if mutating else self.non_mutating
        if limit <= 0:
            yield
            return
        if current >= limit:
            if _privileged(user):
                yield
                return
            raise too_many_requests()
        if mutating:
            self.mutating += 1
        else:
            self.non_mutating += 1
        try:
            yield
        finally:
            if mutating:
                self.mutating -= 1
            else:
                self.non_mutating -= 1


class WatchLimiter:
    """Open watches per user name; see the module docstring."""

    def __init__(self, max_per_user: int) -> None:
        self.max_per_user = max_per_user
        self.by_user: dict[str, int] = {}

    @contextlib.contextmanager
    def admit(self, user: Any) -> Iterator[None]:
        name = str(getattr(user, "name", "") or "")
        if self.max_per_user <= 0:
            yield
            return
        count = self.by_user.get(name, 0)
        if count >= self.max_per_user:
            raise too_many_requests(
                f'Too many watches open for user "{name}" (limit {self.max_per_user}), '
                "please try again later."
            )
        self.by_user[name] = count + 1
        try:
            yield
        finally:
            left = self.by_user[name] - 1
            if left:
                self.by_user[name] = left
            else:
                del self.by_user[name]

    def __len__(self) -> int:
        return sum(self.by_user.values())
