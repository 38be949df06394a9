"""ControllerManager: leader election, per-term controllers, health, clean stop."""

from __future__ import annotations

import asyncio

import pytest

from sampan.client import ClientConfig, NotFoundError
from sampan.client.api import CONFIGMAPS, EVENTS, LEASES, NAMESPACES, SERVICEACCOUNTS
from sampan.controllers.base import (
    ControllerContext,
    ControllerManagerOptions,
    QueueController,
    parse_duration_s,
)
from sampan.controllers.manager import LEASE_NAME, LEASE_NAMESPACE, ControllerManager

from .conftest import eventually

FAST_ELECTION = {
    "leader-elect-lease-duration": "2s",
    "leader-elect-renew-deadline": "1s",
    "leader-elect-retry-period": "200ms",
}


class NamespaceCounter(QueueController):
    """A toy controller: remembers every namespace key it reconciled."""

    name = "nscounter"
    instances: list[NamespaceCounter] = []

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.seen: set[str] = set()
        self.cancelled = False
        informer = self.watch(ctx.informers.informer(NAMESPACES))
        informer.add_event_handler(on_add=lambda obj: self.queue.add(obj["metadata"]["name"]))
        NamespaceCounter.instances.append(self)

    async def reconcile(self, key: str) -> None:
        self.seen.add(key)

    async def run(self, workers: int) -> None:
        try:
            await super().run(workers)
        except asyncio.CancelledError:
            self.cancelled = True
            raise


class Broken:
    name = "broken"

    def __init__(self, ctx: ControllerContext) -> None:
        raise RuntimeError("cannot build")


@pytest.fixture(autouse=True)
def _reset_instances() -> None:
    NamespaceCounter.instances.clear()


def test_options_args_are_validated_and_applied() -> None:
    options = ControllerManagerOptions(
        args={
            "concurrent-deployment-syncs": "7",
            "node-monitor-grace-period": "1m0s",
            "controllers": "*,-podgc",
            "cluster-cidr": "10.50.0.0/16",
        }
    )
    assert options.workers("deployment") == 7
    assert options.workers("namespace") == 10
    assert options.node_monitor_grace_period_s == 60.0
    assert options.cluster_cidr == "10.50.0.0/16"
    assert not options.enabled("podgc")
    assert options.enabled("deployment")
    with pytest.raises(ValueError, match="unknown"):
        ControllerManagerOptions(args={"no-such-flag": "1"})
    with pytest.raises(ValueError, match="concurrent-gc-syncs"):
        ControllerManagerOptions(args={"concurrent-gc-syncs": "many"})
    only = ControllerManagerOptions(controllers=("namespace",))
    assert only.enabled("namespace") and not only.enabled("deployment")


def test_parse_duration() -> None:
    assert parse_duration_s("5m0s") == 300.0
    assert parse_duration_s("1h30m") == 5400.0
    assert parse_duration_s("250ms") == 0.25
    assert parse_duration_s("12") == 12.0
    with pytest.raises(ValueError):
        parse_duration_s("5 minutes")


async def test_manager_runs_controllers_and_a_peer_takes_over(
    controller_config: ClientConfig, client
) -> None:
    registry = {"nscounter": NamespaceCounter, "broken": Broken}
    first = ControllerManager(
        controller_config,
        ControllerManagerOptions(identity="first", args=FAST_ELECTION),
        controllers=registry,
    )
    second = ControllerManager(
        controller_config,
        ControllerManagerOptions(identity="second", args=FAST_ELECTION),
        controllers=registry,
    )
    await first.start()
    try:
        await eventually(lambda: _true(first.is_leader))
        await second.start()
        await eventually(lambda: _true(first.health() == {"nscounter": True}))
        leader_ctrl = NamespaceCounter.instances[0]
        await eventually(lambda: _true("kube-system" in leader_ctrl.seen))
        lease = await client.get(LEASES, LEASE_NAME, namespace=LEASE_NAMESPACE)
        assert lease["spec"]["holderIdentity"] == "first"

        async def announced() -> bool:
            events = (await client.list(EVENTS, namespace=LEASE_NAMESPACE))["items"]
            return any(
                e["reason"] == "LeaderElection" and e["message"] == "first became leader"
                for e in events
            )

        await eventually(announced)
        assert not second.is_leader and second.health() == {}

        await first.stop()
        assert leader_ctrl.cancelled
        assert first.health() == {}
        await eventually(lambda: _true(second.is_leader))
        await eventually(lambda: _true(second.health() == {"nscounter": True}))
        assert second.terms == 1
        lease = await client.get(LEASES, LEASE_NAME, namespace=LEASE_NAMESPACE)
        assert lease["spec"]["holderIdentity"] == "second"
    finally:
        await first.stop()
        await second.stop()
    lease = await client.get(LEASES, LEASE_NAME, namespace=LEASE_NAMESPACE)
    assert not lease["spec"].get("holderIdentity")


async def test_manager_without_leader_election(controller_config: ClientConfig, client) -> None:
    manager = ControllerManager(
        controller_config,
        ControllerManagerOptions(identity="solo", leader_elect=False),
        controllers={"nscounter": NamespaceCounter},
    )
    await manager.start()
    try:
        await eventually(lambda: _true(manager.health() == {"nscounter": True}))
    finally:
        await manager.stop()
    with pytest.raises(NotFoundError):
        await client.get(LEASES, LEASE_NAME, namespace=LEASE_NAMESPACE)


async def _true(value: bool) -> bool:
    return value


async def test_losing_the_lease_stops_the_controllers(
    controller_config: ClientConfig, client
) -> None:
    manager = ControllerManager(
        controller_config,
        ControllerManagerOptions(identity="victim", args=FAST_ELECTION),
        controllers={"nscounter": NamespaceCounter},
    )
    await manager.start()
    try:
        await eventually(lambda: _true(manager.health() == {"nscounter": True}))
        running = NamespaceCounter.instances[0]
        lease = await client.get(LEASES, LEASE_NAME, namespace=LEASE_NAMESPACE)
        lease["spec"]["holderIdentity"] = "intruder"
        lease["spec"]["leaseDurationSeconds"] = 3600
        await client.update(LEASES, lease, namespace=LEASE_NAMESPACE)
        await eventually(lambda: _true(not manager.is_leader and running.cancelled))
        assert manager.health() == {}
        assert manager.terms == 1  # it competes again but cannot win against a live holder
    finally:
        await manager.stop()
    lease = await client.get(LEASES, LEASE_NAME, namespace=LEASE_NAMESPACE)
    assert lease["spec"]["holderIdentity"] == "intruder"  # stop() never releases a lease it lost


async def test_every_registered_controller_runs_under_the_manager(
    controller_config: ClientConfig, client, api_server
) -> None:
    from sampan.controllers.registry import CONTROLLERS

    # As ``sampan server`` builds it: with the service-account key (serviceaccount-token).
    key_pem = await asyncio.to_thread(api_server.server.pki.sa_private_key_pem)
    options = ControllerManagerOptions(
        identity="all", leader_elect=False, service_account_private_key_pem=key_pem
    )
    manager = ControllerManager(controller_config, options)
    await manager.start()
    try:

        async def all_healthy() -> bool:
            health = manager.health()
            return set(health) == set(CONTROLLERS) and all(health.values())

        await eventually(all_healthy)
        # One end-to-end effect through the manager: a new namespace gets its defaults.
        await client.create(NAMESPACES, {"metadata": {"name": "via-manager"}})

        async def defaults_exist() -> bool:
            try:
                await client.get(SERVICEACCOUNTS, "default", namespace="via-manager")
                await client.get(CONFIGMAPS, "kube-root-ca.crt", namespace="via-manager")
            except NotFoundError:
                return False
            return True

        await eventually(defaults_exist)
    finally:
        await manager.stop()


async def test_a_controller_that_opts_out_is_not_run(controller_config: ClientConfig) -> None:
    """``serviceaccount-token`` without a signing key: disabled (not unhealthy), as upstream."""
    from sampan.controllers.tokens import TokensController

    registry = {"serviceaccount-token": TokensController, "nscounter": NamespaceCounter}
    manager = ControllerManager(
        controller_config,
        ControllerManagerOptions(identity="solo", leader_elect=False),
        controllers=registry,
    )
    await manager.start()
    try:

        async def running() -> dict[str, bool] | None:
            health = manager.health()
            return health if health.get("nscounter") else None

        assert await eventually(running) == {"nscounter": True}
    finally:
        await manager.stop()


async def test_a_peer_takes_over_after_the_leader_dies(
    controller_config: ClientConfig, client
) -> None:
    """A leader that dies without releasing: the peer waits for the lease to expire."""
    registry = {"nscounter": NamespaceCounter}
    dying = ControllerManager(
        controller_config,
        ControllerManagerOptions(identity="dying", args=FAST_ELECTION),
        controllers=registry,
    )
    peer = ControllerManager(
        controller_config,
        ControllerManagerOptions(identity="peer", args=FAST_ELECTION),
        controllers=registry,
    )
    await dying.start()
    try:
        await eventually(lambda: _true(dying.is_leader))
        await peer.start()
        assert dying._elector is not None

        async def no_release() -> None:  # a killed process releases nothing
            return None

        dying._elector._release = no_release  # type: ignore[method-assign]
        await dying.stop()
        lease = await client.get(LEASES, LEASE_NAME, namespace=LEASE_NAMESPACE)
        assert lease["spec"]["holderIdentity"] == "dying"
        await eventually(lambda: _true(peer.health() == {"nscounter": True}))
        lease = await client.get(LEASES, LEASE_NAME, namespace=LEASE_NAMESPACE)
        assert lease["spec"]["holderIdentity"] == "peer"
    finally:
        await dying.stop()
        await peer.stop()
