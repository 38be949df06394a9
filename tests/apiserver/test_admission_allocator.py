"""RangeAllocator over a real SQLite datastore: claims, exhaustion, static band, release
ownership and repair."""

from __future__ import annotations

import ipaddress
import json

import pytest

from sampan.apiserver.admission.allocator import (
    AlreadyAllocated,
    NotInRange,
    RangeFull,
    ip_range,
    port_range,
)
from sampan.datastore import open_backend


@pytest.fixture
async def backend(tmp_path):
    store = open_backend("", tmp_path)
    await store.start()
    try:
        yield store
    finally:
        await store.close()


async def test_small_range_fills_up(backend):
    ips = ip_range(backend, "10.9.0.0/29")
    got = {await ips.claim_next(f"ns/s{i}") for i in range(6)}
    assert {ips.render(i) for i in got} == {f"10.9.0.{n}" for n in range(1, 7)}
    with pytest.raises(RangeFull):
        await ips.claim_next("ns/more")
    # Releasing needs the owner; then the address is free again.
    item = int(ipaddress.ip_address("10.9.0.3"))
    assert not await ips.release(item, "ns/someone-else")
    owner = await ips.owner_of(item)
    assert owner is not None and await ips.release(item, owner)
    assert await ips.claim_next("ns/more") == item


async def test_static_band_and_errors(backend):
    ports = port_range(backend, "30000-32767")
    for _ in range(20):
        assert await ports.claim_next("ns/dyn") >= 30086  # upstream's band: 30000-30085
    await ports.claim(30010, "ns/a")
    assert not await ports.claim(30010, "ns/a")  # already its own: nothing new
    with pytest.raises(AlreadyAllocated, match="provided port is already allocated"):
        await ports.claim(30010, "ns/b")
    with pytest.raises(NotInRange, match="The range of valid ports is 30000-32767"):
        await ports.claim(80, "ns/b")
    assert await ports.claim(30011, "ns/b", dry_run=True)
    assert await ports.owner_of(30011) is None


async def test_repair(backend):
    now = 1000.0
    ports = port_range(backend, "30000-30100", leak_grace_s=30, clock=lambda: now)
    await ports.claim(30001, "ns/gone")
    await ports.claim(30002, "ns/young")
    await ports.claim(30003, "ns/old-name")
    claims = await ports.claims()
    now = 1020.0
    result = await ports.repair({30003: "ns/new-name", 30004: "ns/unclaimed"}, claims)
    # Young leaks are kept (a create may be in flight); a renamed owner is re-owned.
    assert result.released == () and set(result.claimed) == {"30004"}
    assert result.duplicates == ("30003",)
    now = 1040.0
    result = await ports.repair({30003: "ns/new-name", 30004: "ns/unclaimed"}, await ports.claims())
    assert set(result.released) == {"30001", "30002"}
    _, kv = await backend.get("/registry/sampan/servicenodeports/30003")
    assert json.loads(kv.value)["owner"] == "ns/new-name"
