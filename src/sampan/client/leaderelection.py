"""Leader election on a ``coordination.k8s.io/v1`` Lease, as client-go's ``leaderelection``.

This module owns deciding which of several replicas of a component (controller manager,
scheduler) does the work. ``LeaderElector.run()``:

1. **Acquire.** Every ``retry_period_s`` (jittered) try to take the Lease: create it if absent;
   take it if its holder is empty, is us, or has not renewed it for ``lease_duration_s`` *as
   observed by us* (we time the holder's silence on our own monotonic clock, never comparing
   our wall clock with the holder's timestamps, so clock skew cannot steal a lease). Every
   write is a compare-and-swap on the Lease's resourceVersion, so two candidates can never
   both win.
2. **Lead.** Run ``on_started_leading()`` as a task and renew every ``retry_period_s``. A renew
   round retries until ``renew_deadline_s`` has passed; if it never succeeds, leadership is
   **lost**: the leading task is cancelled (the work stops *before* another replica may take
   over, since ``renew_deadline_s < lease_duration_s``), ``on_stopped_leading()`` is called and
   ``run()`` returns. Callers normally shut the component down then, as upstream does.
3. **Release.** When ``run()`` is cancelled while leading (clean shutdown) the work is
   cancelled, the Lease is released (``holderIdentity`` cleared, duration 1 s, like upstream's
   ``ReleaseOnCancel``) so a successor need not wait for expiry, ``on_stopped_leading()`` is
   called, and the cancellation propagates.

If ``on_started_leading`` raises, leadership is released and the exception leaves ``run()``.
If it returns, we keep the lease (and keep renewing) until cancelled, as upstream.
``on_stopped_leading`` is called only if we led, exactly once per term.

Defaults are upstream's: lease 15 s, renew deadline 10 s, retry 2 s. Tests pass shorter ones.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sampan.api import times
from sampan.client.api import (
    LEASES,
    AlreadyExistsError,
    Client,
    ClientError,
    ConflictError,
    NotFoundError,
)

__all__ = [
    "DEFAULT_LEASE_DURATION_S",
    "DEFAULT_RENEW_DEADLINE_S",
    "DEFAULT_RETRY_PERIOD_S",
    "LeaderElector",
    "LeaseRecord",
]

log = logging.getLogger(__name__)

DEFAULT_LEASE_DURATION_S = 15.0
DEFAULT_RENEW_DEADLINE_S = 10.0
DEFAULT_RETRY_PERIOD_S = 2.0
JITTER_FACTOR = 1.2
"""Acquire retries wait ``retry_period_s * (1 + random * JITTER_FACTOR)`` (upstream's)."""
RELEASED_LEASE_DURATION_S = 1
RELEASE_ATTEMPTS = 3


def _micro_time(moment: datetime) -> str:
    """A ``metav1.MicroTime`` string: RFC 3339 with microseconds, in UTC."""
    return times.micro(moment)


@dataclass(frozen=True)
class LeaseRecord:
    """The fields of a Lease's spec that election reads and writes."""

    holder_identity: str
    lease_duration_s: int
    acquire_time: str | None
    renew_time: str | None
    lease_transitions: int

    @staticmethod
    def from_lease(lease: dict[str, Any]) -> LeaseRecord:
        spec = lease.get("spec") or {}
        return LeaseRecord(
            holder_identity=spec.get("holderIdentity") or "",
            lease_duration_s=int(spec.get("leaseDurationSeconds") or 0),
            acquire_time=spec.get("acquireTime"),
            renew_time=spec.get("renewTime"),
            lease_transitions=int(spec.get("leaseTransitions") or 0),
        )

    def to_spec(self) -> dict[str, Any]:
        return {
            "holderIdentity": self.holder_identity,
            "leaseDurationSeconds": self.lease_duration_s,
            "acquireTime": self.acquire_time,
            "renewTime": self.renew_time,
            "leaseTransitions": self.lease_transitions,
        }


class LeaderElector:
    """Compete for the Lease ``namespace/name`` as ``identity``; see the module docstring."""

    def __init__(
        self,
        client: Client,
        namespace: str,
        name: str,
        identity: str,
        on_started_leading: Callable[[], Coroutine[Any, Any, None]],
        on_stopped_leading: Callable[[], None],
        *,
        lease_duration_s: float = DEFAULT_LEASE_DURATION_S,
        renew_deadline_s: float = DEFAULT_RENEW_DEADLINE_S,
        retry_period_s: float = DEFAULT_RETRY_PERIOD_S,
        on_new_leader: Callable[[str], None] | None = None,
    ) -> None:
        if not identity:
            raise ValueError("leader election needs a non-empty identity")
        if not lease_duration_s > renew_deadline_s > retry_period_s * JITTER_FACTOR > 0:
            raise ValueError("need lease_duration_s > renew_deadline_s > retry_period_s * 1.2 > 0")
        self.client = client
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.on_started_leading = on_started_leading
        self.on_stopped_leading = on_stopped_leading
        self.on_new_leader = on_new_leader
        self.lease_duration_s = lease_duration_s
        self.renew_deadline_s = renew_deadline_s
        self.retry_period_s = retry_period_s
        self._observed: LeaseRecord | None = None
        self._observed_rv: str | None = None
        self._observed_at_s = 0.0
        self._leading = False
        self._reported_leader: str | None = None

    @property
    def is_leader(self) -> bool:
        return self._leading

    @property
    def leader(self) -> str | None:
        """The holder we last observed (None before the first read)."""
        return self._observed.holder_identity if self._observed else None

    # -- the loop ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Acquire, lead until the lease is lost (then return) or until cancelled (then
        release and re-raise)."""
        await self._acquire()
        self._leading = True
        log.info("%s: %s became the leader", self._lease_name, self.identity)
        work: asyncio.Task[None] = asyncio.get_running_loop().create_task(
            self.on_started_leading(), name=f"leader-{self.name}-work"
        )
        renewer = asyncio.get_running_loop().create_task(
            self._renew_until_lost(), name=f"leader-{self.name}-renew"
        )
        try:
            await asyncio.wait({work, renewer}, return_when=asyncio.FIRST_COMPLETED)
            if work.done() and not work.cancelled() and work.exception() is not None:
                log.error(
                    "%s: leading work failed; stepping down",
                    self._lease_name,
                    exc_info=work.exception(),
                )
                await self._stop_leading(work, renewer, release=True)
                raise work.exception()  # type: ignore[misc]
            if work.done():
                # The work finished on its own: keep the lease until lost or cancelled.
                await renewer
            log.warning("%s: %s lost the lease", self._lease_name, self.identity)
            await self._stop_leading(work, renewer, release=False)
        except asyncio.CancelledError:
            await asyncio.shield(self._stop_leading(work, renewer, release=True))
            raise

    async def _stop_leading(
        self, work: asyncio.Task[None], renewer: asyncio.Task[None], *, release: bool
    ) -> None:
        if not self._leading:
            return
        self._leading = False
        for task in (work, renewer):
            task.cancel()
        await asyncio.wait({work, renewer})
        if release:
            await self._release()
        try:
            self.on_stopped_leading()
        except Exception:
            log.exception("%s: on_stopped_leading failed", self._lease_name)

    async def _acquire(self) -> None:
        while True:
            if await self._try_acquire_or_renew():
                return
            delay_s = self.retry_period_s * (1 + random.random() * JITTER_FACTOR)
            await asyncio.sleep(delay_s)

    async def _renew_until_lost(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            deadline_s = loop.time() + self.renew_deadline_s
            renewed = False
            while not renewed:
                remaining_s = deadline_s - loop.time()
                if remaining_s <= 0:
                    return
                try:
                    async with asyncio.timeout(remaining_s):
                        renewed = await self._try_acquire_or_renew()
                except TimeoutError:
                    return
                if not renewed:
                    if loop.time() + self.retry_period_s >= deadline_s:
                        return
                    await asyncio.sleep(self.retry_period_s)
            await asyncio.sleep(self.retry_period_s)

    # -- one attempt -------------------------------------------------------------------------

    @property
    def _lease_name(self) -> str:
        return f"lease {self.namespace}/{self.name}"

    async def _try_acquire_or_renew(self) -> bool:
        """One attempt; True if we hold the lease afterwards. API failures count as False."""
        loop = asyncio.get_running_loop()
        now = datetime.now(UTC)
        try:
            lease = await self.client.get(LEASES, self.name, namespace=self.namespace)
        except NotFoundError:
            record = LeaseRecord(
                holder_identity=self.identity,
                lease_duration_s=round(self.lease_duration_s),
                acquire_time=_micro_time(now),
                renew_time=_micro_time(now),
                lease_transitions=0,
            )
            try:
                created = await self.client.create(
                    LEASES,
                    {
                        "metadata": {"name": self.name, "namespace": self.namespace},
                        "spec": record.to_spec(),
                    },
                )
            except AlreadyExistsError:
                return False
            except ClientError as exc:
                log.warning("%s: cannot create: %s", self._lease_name, exc)
                return False
            self._observe(record, created, loop.time())
            return True
        except ClientError as exc:
            log.warning("%s: cannot read: %s", self._lease_name, exc)
            return False

        current = LeaseRecord.from_lease(lease)
        rv = (lease.get("metadata") or {}).get("resourceVersion")
        if current != self._observed:
            self._observe(current, lease, loop.time())
        held_by_other = current.holder_identity not in ("", self.identity)
        if held_by_other and loop.time() < self._observed_at_s + max(current.lease_duration_s, 1):
            return False

        if current.holder_identity == self.identity:
            acquire_time = current.acquire_time or _micro_time(now)
            transitions = current.lease_transitions
        else:
            acquire_time = _micro_time(now)
            transitions = current.lease_transitions + 1
        record = LeaseRecord(
            holder_identity=self.identity,
            lease_duration_s=round(self.lease_duration_s),
            acquire_time=acquire_time,
            renew_time=_micro_time(now),
            lease_transitions=transitions,
        )
        body = {
            **lease,
            "metadata": {**lease["metadata"], "resourceVersion": rv},
            "spec": {**(lease.get("spec") or {}), **record.to_spec()},
        }
        try:
            updated = await self.client.update(LEASES, body, namespace=self.namespace)
        except ConflictError:
            return False
        except ClientError as exc:
            log.warning("%s: cannot update: %s", self._lease_name, exc)
            return False
        self._observe(record, updated, loop.time())
        return True

    def _observe(self, record: LeaseRecord, lease: dict[str, Any], at_s: float) -> None:
        self._observed = record
        self._observed_rv = (lease.get("metadata") or {}).get("resourceVersion")
        self._observed_at_s = at_s
        holder = record.holder_identity
        if holder and holder != self._reported_leader:
            self._reported_leader = holder
            if self.on_new_leader is not None:
                try:
                    self.on_new_leader(holder)
                except Exception:
                    log.exception("%s: on_new_leader failed", self._lease_name)

    async def _release(self) -> None:
        """Clear the holder if we still hold the lease (best effort, bounded in time).

        Reads the Lease first: a renew cancelled in flight may have changed its
        resourceVersion after our last observation. A conflict means it changed again under
        us; read and try again, a few times.
        """
        if self._observed is None or self._observed.holder_identity != self.identity:
            return
        try:
            async with asyncio.timeout(self.renew_deadline_s):
                for _ in range(RELEASE_ATTEMPTS):
                    try:
                        if await self._try_release():
                            log.info("%s: released by %s", self._lease_name, self.identity)
                        return
                    except ConflictError:
                        continue
                    except ClientError as exc:
                        log.warning("%s: could not release: %s", self._lease_name, exc)
                        return
        except TimeoutError:
            pass
        log.warning("%s: could not release; successors wait for it to expire", self._lease_name)

    async def _try_release(self) -> bool:
        """One release attempt; False if the lease is no longer ours (nothing to do)."""
        lease = await self.client.get(LEASES, self.name, namespace=self.namespace)
        current = LeaseRecord.from_lease(lease)
        if current.holder_identity != self.identity:
            return False
        now = _micro_time(datetime.now(UTC))
        record = LeaseRecord(
            holder_identity="",
            lease_duration_s=RELEASED_LEASE_DURATION_S,
            acquire_time=now,
            renew_time=now,
            lease_transitions=current.lease_transitions,
        )
        body = {**lease, "spec": {**(lease.get("spec") or {}), **record.to_spec()}}
        updated = await self.client.update(LEASES, body, namespace=self.namespace)
        self._observe(record, updated, asyncio.get_running_loop().time())
        return True
