"""The sync-loop lifecycle the proxy, network policy and ingress share, against a real
in-process API server: a change wakes a sync, a failed sync is retried, a loop that dies
fails the component, and a failed start closes what it opened."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from sampan.client.api import CONFIGMAPS, Client
from sampan.client.informer import SharedInformerFactory
from sampan.client.syncloop import SyncLoop
from sampan.ingress.controller import IngressController
from sampan.netpol.controller import NetworkPolicyController
from sampan.proxy.service import Proxy
from tests.support.syncloop import wait_sync

from .conftest import ApiServerHarness

WAIT_S = 15.0


class Sink:
    def __init__(self) -> None:
        self.reasons: list[str] = []
        self.failed = asyncio.Event()

    def fail(self, reason: str) -> None:
        self.reasons.append(reason)
        self.failed.set()


class Bug(BaseException):
    """Not an ``Exception``: the loop does not retry it, as it would not retry a bug that
    escaped its handler."""


class Names(SyncLoop):
    """Keeps ``seen`` equal to the ConfigMap names; ``failures`` syncs fail first."""

    name = "names"
    log_name = "names"

    def __init__(self, harness: ApiServerHarness, failures: int = 0) -> None:
        super().__init__(harness.client_config(), "test", resync_s=60.0, min_interval_s=0.01)
        self.seen: set[str] = set()
        self.failures = failures
        self.released = 0
        self.die: BaseException | None = None

    def _add_informers(self, factory: SharedInformerFactory, client: Client) -> None:
        self._configmaps = factory.informer(CONFIGMAPS)
        self._wake_on_changes(self._configmaps)

    async def _sync(self) -> None:
        if self.die is not None:
            raise self.die
        if self.failures > 0:
            self.failures -= 1
            raise RuntimeError("the outside world said no")
        self.seen = {
            o["metadata"]["name"]
            for o in self._configmaps.cache.list()
            if o["metadata"]["namespace"] == "default"
        }

    async def _release(self) -> None:
        self.released += 1


async def _create(client: Client, name: str) -> None:
    await client.create(CONFIGMAPS, {"metadata": {"name": name}, "data": {}}, namespace="default")


async def test_a_change_wakes_a_sync_and_stop_closes_everything(
    api_server: ApiServerHarness, client: Client
) -> None:
    await _create(client, "one")
    loop = Names(api_server)
    await loop.start(Sink())
    assert loop.seen == {"one"} and loop.sync_count == 1  # start waited for the first sync
    await _create(client, "two")
    async with asyncio.timeout(WAIT_S):
        while loop.seen != {"one", "two"}:
            await wait_sync(loop, WAIT_S)
    await loop.stop()
    assert loop.released == 1 and loop._client is None and loop._factory is None


async def test_a_failed_sync_is_retried_and_its_error_kept_until_one_succeeds(
    api_server: ApiServerHarness, caplog: pytest.LogCaptureFixture
) -> None:
    loop = Names(api_server)
    await loop.start()
    try:
        loop.failures = 10**9  # the outside world refuses until told otherwise
        count = await wait_sync(loop, WAIT_S)
        assert loop.last_sync_error == "the outside world said no"
        async with asyncio.timeout(WAIT_S):
            while caplog.text.count("names: sync failed (retrying): the outside world said no") < 3:
                await wait_sync(loop, WAIT_S)  # retried without being woken by a change
        loop.failures = 0
        async with asyncio.timeout(WAIT_S):
            while loop.last_sync_error is not None:
                count = await wait_sync(loop, WAIT_S)
        assert count >= 5
    finally:
        await loop.stop()


async def test_a_failing_first_sync_fails_start_and_closes_what_it_opened(
    api_server: ApiServerHarness,
) -> None:
    loop = Names(api_server, failures=1)
    with pytest.raises(RuntimeError, match="said no"):
        await loop.start()
    assert loop.released == 1 and loop._client is None and loop._factory is None
    assert loop._task is None


async def test_a_loop_that_dies_fails_the_component(api_server: ApiServerHarness) -> None:
    sink = Sink()
    loop = Names(api_server)
    await loop.start(sink)
    try:
        loop.die = Bug("the loop's own bug")
        loop.request_sync()
        async with asyncio.timeout(WAIT_S):
            await sink.failed.wait()
        assert sink.reasons == ["names sync loop died: the loop's own bug"]
    finally:
        await loop.stop()


def _unused(*_: Any) -> None: ...


def test_a_subclass_must_say_what_it_watches_and_what_a_sync_does(
    api_server: ApiServerHarness,
) -> None:
    """The two hooks are abstract: a subclass that forgets one cannot be made (instead of
    failing at its first start); the node's three sync loops provide both."""

    class NoSync(SyncLoop):
        def _add_informers(self, factory: SharedInformerFactory, client: Client) -> None:
            pass

    with pytest.raises(TypeError, match="_sync"):
        NoSync(api_server.client_config(), "test", resync_s=1.0, min_interval_s=0.1)  # type: ignore[abstract]
    assert SyncLoop.__abstractmethods__ == {"_add_informers", "_sync"}
    for component in (IngressController, NetworkPolicyController, Proxy):
        assert not component.__abstractmethods__, component
