"""Leader election against a real in-process API server, with short lease durations."""

from __future__ import annotations

import asyncio

import pytest

from sampan.client.api import LEASES, Client, ConflictError
from sampan.client.leaderelection import LeaderElector

from .conftest import ApiServerHarness

LEASE_S = 1.0
RENEW_S = 0.6
RETRY_S = 0.1
WAIT_S = 15.0
NAMESPACE = "kube-system"


class Candidate:
    """One elector and what happened to it."""

    def __init__(self, client: Client, identity: str, lease_name: str = "test-lock") -> None:
        self.identity = identity
        self.leading = asyncio.Event()
        self.stopped = asyncio.Event()
        self.work_cancelled = asyncio.Event()
        self.terms = 0
        self.elector = LeaderElector(
            client,
            NAMESPACE,
            lease_name,
            identity,
            self._lead,
            self._stop,
            lease_duration_s=LEASE_S,
            renew_deadline_s=RENEW_S,
            retry_period_s=RETRY_S,
        )
        self.task: asyncio.Task[None] | None = None

    async def _lead(self) -> None:
        self.terms += 1
        self.leading.set()
        try:
            await asyncio.Event().wait()  # a controller that runs until cancelled
        except asyncio.CancelledError:
            self.work_cancelled.set()
            raise

    def _stop(self) -> None:
        self.stopped.set()

    def start(self) -> None:
        self.task = asyncio.ensure_future(self.elector.run())

    async def cancel(self) -> None:
        assert self.task is not None
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task


async def wait_first(*events: asyncio.Event) -> None:
    waits = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait_for(
            asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED), timeout=WAIT_S
        )
    finally:
        for w in waits:
            w.cancel()


async def test_one_leads_and_the_other_takes_over_after_release(
    api_server: ApiServerHarness, client: Client
) -> None:
    async with api_server.new_client() as other_client:
        a, b = Candidate(client, "a"), Candidate(other_client, "b")
        a.start()
        b.start()
        try:
            await wait_first(a.leading, b.leading)
            await asyncio.sleep(LEASE_S * 2)  # long enough for a wrong second leader to appear
            assert a.leading.is_set() != b.leading.is_set()
            leader, follower = (a, b) if a.leading.is_set() else (b, a)
            assert leader.elector.is_leader and not follower.elector.is_leader
            lease = await client.get(LEASES, "test-lock", namespace=NAMESPACE)
            assert lease["spec"]["holderIdentity"] == leader.identity
            assert follower.elector.leader == leader.identity

            await leader.cancel()  # clean shutdown: work cancelled, lease released
            assert leader.work_cancelled.is_set() and leader.stopped.is_set()
            await asyncio.wait_for(follower.leading.wait(), timeout=WAIT_S)
            lease = await client.get(LEASES, "test-lock", namespace=NAMESPACE)
            assert lease["spec"]["holderIdentity"] == follower.identity
            assert lease["spec"]["leaseTransitions"] >= 1
        finally:
            for c in (a, b):
                if c.task is not None and not c.task.done():
                    await c.cancel()
    lease = await client.get(LEASES, "test-lock", namespace=NAMESPACE)
    assert lease["spec"]["holderIdentity"] == ""  # the last leader released on cancel


async def test_takeover_after_expiry_when_leader_vanishes(
    api_server: ApiServerHarness, client: Client
) -> None:
    """A leader that dies without releasing: the other waits out the lease, then leads."""
    async with api_server.new_client() as dead_client:
        dead = Candidate(dead_client, "dead", lease_name="expiry-lock")
        dead.start()
        await asyncio.wait_for(dead.leading.wait(), timeout=WAIT_S)
        # Kill it hard: close its connection so it can neither renew nor release.
        await dead_client.close()
        await dead.cancel()
    lease = await client.get(LEASES, "expiry-lock", namespace=NAMESPACE)
    assert lease["spec"]["holderIdentity"] == "dead"

    heir = Candidate(client, "heir", lease_name="expiry-lock")
    loop = asyncio.get_running_loop()
    started_s = loop.time()
    heir.start()
    try:
        await asyncio.wait_for(heir.leading.wait(), timeout=WAIT_S)
        waited_s = loop.time() - started_s
        # It must have waited for the dead holder's lease to run out (observed by itself).
        assert waited_s >= LEASE_S
        lease = await client.get(LEASES, "expiry-lock", namespace=NAMESPACE)
        assert lease["spec"]["holderIdentity"] == "heir"
    finally:
        await heir.cancel()


async def test_leader_that_cannot_renew_stops_its_work(
    api_server: ApiServerHarness, client: Client
) -> None:
    """Someone else takes the lease: the leader notices at renew time and steps down."""
    leader = Candidate(client, "leader", lease_name="stolen-lock")
    leader.start()
    await asyncio.wait_for(leader.leading.wait(), timeout=WAIT_S)
    for _ in range(20):  # the leader renews concurrently: retry on conflict
        lease = await client.get(LEASES, "stolen-lock", namespace=NAMESPACE)
        lease["spec"]["holderIdentity"] = "usurper"
        lease["spec"]["leaseDurationSeconds"] = 60
        try:
            await client.update(LEASES, lease)
            break
        except ConflictError:
            continue
    else:
        raise AssertionError("could not steal the lease")
    assert leader.task is not None
    await asyncio.wait_for(leader.task, timeout=WAIT_S)  # run() returns on loss
    assert leader.work_cancelled.is_set() and leader.stopped.is_set()
    assert not leader.elector.is_leader
    lease = await client.get(LEASES, "stolen-lock", namespace=NAMESPACE)
    assert lease["spec"]["holderIdentity"] == "usurper"  # a loser does not release


def test_durations_are_checked() -> None:
    async def noop() -> None:
        return None

    with pytest.raises(ValueError):
        LeaderElector(
            None,  # type: ignore[arg-type]
            "ns",
            "n",
            "id",
            noop,
            lambda: None,
            lease_duration_s=5,
            renew_deadline_s=10,
        )
    with pytest.raises(ValueError):
        LeaderElector(None, "ns", "n", "", noop, lambda: None)  # type: ignore[arg-type]
