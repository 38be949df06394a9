"""Cluster-wide allocators for Service ClusterIPs and NodePorts, kept in the datastore.

Owns ``RangeAllocator``: one claim key per allocated item under a datastore prefix
(``/registry/sampan/serviceips/10.43.0.1``, ``/registry/sampan/servicenodeports/30080``),
whose value names the owner (``namespace/name``) and when it was claimed. Creating a key is
an atomic claim in every backend, so several API servers over one datastore never hand out the
same item (upstream reaches the same with one compare-and-swapped bitmap; per-item claims
avoid making every Service create contend on one key, and are what upstream's newer
IPAddress objects do). ``ip_range``/``port_range`` build the two allocators the way
kube-apiserver splits its ranges: dynamic allocation prefers the upper part of the range and
leaves the lower "static band" (e.g. 10.43.0.0-10.43.0.255, 30000-30085) to users who pick
their own item, so a well-known address such as the DNS service's 10.43.0.10 stays free.

Repair (``repair``): claims are compared with what the Services really use. Items in use
without a claim get one; claims nobody uses are released once older than ``leak_grace_s``
(a claim that young may belong to a create still in flight on another server); an item two
owners claim is logged. The API server runs it at start and periodically, so nothing leaks
after a crash between claim and create, or after deletes that bypassed release.

Invariants: a claim is only removed by its owner's release or by repair; ``claim`` of an
item someone else holds raises ``AlreadyAllocated``; dry runs never write.
"""

from __future__ import annotations

import abc
import ipaddress
import json
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sampan.datastore.types import (
    ConflictError,
    KeyExistsError,
    KeyNotFoundError,
)

__all__ = [
    "DEFAULT_LEAK_GRACE_S",
    "DEFAULT_NODE_PORT_RANGE",
    "IP_PREFIX",
    "NODE_PORT_PREFIX",
    "AllocationError",
    "AlreadyAllocated",
    "NotInRange",
    "RangeAllocator",
    "RangeFull",
    "RepairResult",
    "ip_range",
    "parse_port_range",
    "port_range",
]

log = logging.getLogger(__name__)

IP_PREFIX = "/registry/sampan/serviceips/"
NODE_PORT_PREFIX = "/registry/sampan/servicenodeports/"
DEFAULT_NODE_PORT_RANGE = "30000-32767"
DEFAULT_LEAK_GRACE_S = 30.0
"""A claim without a user is freed by repair only when older than this (in-flight creates)."""
RANDOM_ATTEMPTS = 32
"""Random candidates tried before falling back to an exact scan of the claims."""

# kube-apiserver's static band: min(max(floor, size / step), cap) items at the range start.
IP_BAND_FLOOR, IP_BAND_STEP, IP_BAND_CAP = 16, 16, 256
PORT_BAND_FLOOR, PORT_BAND_STEP, PORT_BAND_CAP = 16, 32, 128


class AllocationError(Exception):
    """Base of the allocator errors; the message is upstream's wording."""


class AlreadyAllocated(AllocationError):
    pass


class NotInRange(AllocationError):
    pass


class RangeFull(AllocationError):
    pass


@dataclass(frozen=True, slots=True)
class RepairResult:
    claimed: tuple[str, ...]
    released: tuple[str, ...]
    duplicates: tuple[str, ...]


def _band(size: int, floor: int, step: int, cap: int) -> int:
    if size < floor:
        return 0  # too small to split: the whole range is dynamic
    return min(max(floor, size // step), cap)


class RangeAllocator(abc.ABC):
    """Claims items of an integer range ``[first, last]`` as datastore keys (see the module
    docstring). ``render``/``parse`` turn an item into the key suffix / user-facing text."""

    def __init__(
        self,
        backend: Any,
        prefix: str,
        first: int,
        last: int,
        *,
        what: str,
        range_text: str,
        not_in_range: Callable[[str], str],
        render: Callable[[int], str] = str,
        static_band: int = 0,
        leak_grace_s: float = DEFAULT_LEAK_GRACE_S,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self._backend = backend
        self.prefix = prefix
        self.first = first
        self.last = last
        self.what = what
        self.range_text = range_text
        self._not_in_range = not_in_range
        self.render = render
        self._static_band = static_band
        self.leak_grace_s = leak_grace_s
        self._clock = clock
        self._rng = rng or random.Random()
        self._known: set[int] = set()  # items seen taken (a hint; the datastore decides)

    # --- helpers ----------------------------------------------------------------------------

    def contains(self, item: int) -> bool:
        return self.first <= item <= self.last

    def _key(self, item: int) -> str:
        return self.prefix + self.render(item)

    def _value(self, owner: str) -> bytes:
        return json.dumps({"owner": owner, "claimedAt": self._clock()}).encode()

    @staticmethod
    def _decode(value: bytes) -> dict[str, Any]:
        try:
            decoded = json.loads(value)
        except ValueError:
            return {}
        return decoded if isinstance(decoded, dict) else {}

    def check_range(self, item: int) -> None:
        if not self.contains(item):
            raise NotInRange(self._not_in_range(self.render(item)))

    # --- claims -----------------------------------------------------------------------------

    async def owner_of(self, item: int) -> str | None:
        """Who holds ``item`` ("" for a claim that names nobody), None when it is free."""
        _, kv = await self._backend.get(self._key(item))
        if kv is None:
            return None
        return str(self._decode(kv.value).get("owner", ""))

    async def claim(self, item: int, owner: str, *, dry_run: bool = False) -> bool:
        """Claim ``item`` for ``owner``. Returns False when ``owner`` already held it (nothing
        new to release on failure), True for a new claim. Raises NotInRange/AlreadyAllocated."""
        self.check_range(item)
        key = self._key(item)
        holder = await self.owner_of(item)
        if holder is not None:
            if holder == owner:
                return False
            self._known.add(item)
            raise AlreadyAllocated(f"provided {self.what} is already allocated")
        if dry_run:
            return True
        try:
            await self._backend.create(key, self._value(owner))
        except KeyExistsError as exc:
            self._known.add(item)
            raise AlreadyAllocated(f"provided {self.what} is already allocated") from exc
        self._known.add(item)
        return True

    def _candidates(self) -> list[int]:
        """Random picks: the dynamic part of the range first, then the static band."""
        dynamic_first = self.first + self._static_band
        picks: list[int] = []
        for low, high in ((dynamic_first, self.last), (self.first, dynamic_first - 1)):
            if low > high:
                continue
            for _ in range(RANDOM_ATTEMPTS // 2):
                item = self._rng.randint(low, high)
                if item not in self._known and item not in picks:
                    picks.append(item)
        return picks

    async def claim_next(self, owner: str, *, dry_run: bool = False) -> int:
        """Claim a free item for ``owner``; RangeFull when none is left."""
        for item in self._candidates():
            try:
                await self.claim(item, owner, dry_run=dry_run)
            except AlreadyAllocated:
                continue
            return item
        # Crowded (or unlucky): look at every claim and walk the free ones in order.
        taken = set((await self.claims()).keys())
        self._known = set(taken)
        dynamic_first = self.first + self._static_band
        order = [*range(dynamic_first, self.last + 1), *range(self.first, dynamic_first)]
        for item in order:
            if item in taken:
                continue
            try:
                await self.claim(item, owner, dry_run=dry_run)
            except AlreadyAllocated:
                continue
            return item
        raise RangeFull("range is full")

    async def release(self, item: int, owner: str) -> bool:
        """Drop ``owner``'s claim on ``item`` (someone else's claim is left alone)."""
        key = self._key(item)
        _, kv = await self._backend.get(key)
        if kv is None or self._decode(kv.value).get("owner") != owner:
            return False
        try:
            await self._backend.delete(key, kv.mod_revision)
        except (ConflictError, KeyNotFoundError):
            return False  # changed meanwhile: its new holder decides
        self._known.discard(item)
        return True

    async def claims(self) -> dict[int, tuple[str, float, int]]:
        """Every claim: item -> (owner, claimedAt, mod revision)."""
        out: dict[int, tuple[str, float, int]] = {}
        start_after = ""
        while True:
            result = await self._backend.list(self.prefix, limit=1000, start_after=start_after)
            for kv in result.items:
                item = self._parse_key(kv.key)
                if item is None:
                    continue
                value = self._decode(kv.value)
                claimed_at = value.get("claimedAt")
                out[item] = (
                    str(value.get("owner", "")),
                    float(claimed_at) if isinstance(claimed_at, int | float) else 0.0,
                    kv.mod_revision,
                )
            if not result.more or not result.items:
                return out
            start_after = result.items[-1].key

    @abc.abstractmethod
    def _parse_key(self, key: str) -> int | None:
        """The number a datastore claim key stands for, or None for a foreign key."""

    # --- repair -----------------------------------------------------------------------------

    async def repair(
        self, in_use: Mapping[int, str], claims: dict[int, tuple[str, float, int]]
    ) -> RepairResult:
        """Make the claims match ``in_use`` (item -> owner, from the Services), given the
        ``claims`` read *before* the Services were listed (see the module docstring)."""
        claimed: list[str] = []
        released: list[str] = []
        duplicates: list[str] = []
        now = self._clock()
        for item, owner in sorted(in_use.items()):
            if not self.contains(item):
                continue  # outside the range (e.g. the range changed): nothing to track
            held = claims.get(item)
            if held is None:
                try:
                    await self._backend.create(self._key(item), self._value(owner))
                    claimed.append(self.render(item))
                except KeyExistsError:
                    pass  # claimed since the snapshot; the next repair looks again
            elif held[0] != owner:
                # The claim names another owner (a deleted Service's name reused, or a
                # duplicate). The Service that uses it now owns it.
                try:
                    await self._backend.update(self._key(item), self._value(owner), held[2])
                    duplicates.append(self.render(item))
                except (ConflictError, KeyNotFoundError):
                    pass
        for item, (_owner, claimed_at, revision) in sorted(claims.items()):
            if item in in_use or now - claimed_at < self.leak_grace_s:
                continue
            try:
                await self._backend.delete(self._key(item), revision)
                released.append(self.render(item))
            except (ConflictError, KeyNotFoundError):
                pass
        self._known = set(claims) | set(in_use)
        self._known.difference_update(self._parse_text(t) for t in released)
        return RepairResult(tuple(claimed), tuple(released), tuple(duplicates))

    @abc.abstractmethod
    def _parse_text(self, text: str) -> int:
        """The number a user wrote (an IP address or a port)."""


class IPRangeAllocator(RangeAllocator):
    def _parse_key(self, key: str) -> int | None:
        try:
            return int(ipaddress.ip_address(key[len(self.prefix) :]))
        except ValueError:
            return None

    def _parse_text(self, text: str) -> int:
        return int(ipaddress.ip_address(text))


class PortRangeAllocator(RangeAllocator):
    def _parse_key(self, key: str) -> int | None:
        suffix = key[len(self.prefix) :]
        return int(suffix) if suffix.isdigit() else None

    def _parse_text(self, text: str) -> int:
        return int(text)


def ip_range(backend: Any, cidr: str, **kwargs: Any) -> IPRangeAllocator:
    """The ClusterIP allocator of ``cidr``: every address but the network and broadcast ones
    (IPv4) or the subnet-router anycast address (IPv6)."""
    network = ipaddress.ip_network(cidr, strict=False)
    first = int(network.network_address) + 1
    last = int(network.broadcast_address) - (1 if network.version == 4 else 0)
    size = max(last - first + 1, 0)
    return IPRangeAllocator(
        backend,
        IP_PREFIX,
        first,
        last,
        what="IP",
        range_text=str(network),
        not_in_range=lambda ip: (
            f"the provided IP ({ip}) is not in the valid range. The range of valid IPs is {network}"
        ),
        render=lambda item: str(ipaddress.ip_address(item)),
        static_band=_band(size + 2, IP_BAND_FLOOR, IP_BAND_STEP, IP_BAND_CAP),
        **kwargs,
    )


def parse_port_range(text: str) -> tuple[int, int]:
    """``30000-32767`` (or a single port) -> (first, last)."""
    low, sep, high = text.strip().partition("-")
    first = int(low)
    last = int(high) if sep else first
    if not 0 < first <= last <= 65535:
        raise ValueError(f"invalid port range {text!r}")
    return first, last


def port_range(backend: Any, text: str = DEFAULT_NODE_PORT_RANGE, **kwargs: Any) -> RangeAllocator:
    """The NodePort allocator of ``text`` (``first-last``, inclusive)."""
    first, last = parse_port_range(text)
    range_text = f"{first}-{last}"
    return PortRangeAllocator(
        backend,
        NODE_PORT_PREFIX,
        first,
        last,
        what="port",
        range_text=range_text,
        not_in_range=lambda _port: (
            f"provided port is not in the valid range. The range of valid ports is {range_text}"
        ),
        static_band=_band(last - first + 1, PORT_BAND_FLOOR, PORT_BAND_STEP, PORT_BAND_CAP),
        **kwargs,
    )
