"""The storage layer over PostgreSQL, with two API servers' storage layers on one database:
a write through one is seen by the other's consistent reads and watches."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from sampan.api.resources import ResourceRegistry, builtin_registry
from sampan.apiserver.storage import DeleteOptions, Storage
from sampan.datastore.postgres import PostgresBackend
from tests.support.postgres import PostgresServer, postgres_server

from .conftest import READY_TIMEOUT_S, TEST_SETTINGS, configmap

__all__ = ["postgres_server"]

pytestmark = pytest.mark.postgres

CROSS_SERVER_TIMEOUT_S = 5.0


@pytest.fixture
async def two_storages(
    postgres_server: PostgresServer,
) -> AsyncIterator[tuple[Storage, Storage, ResourceRegistry]]:
    dsn = postgres_server.create_database()
    backends = [PostgresBackend(dsn, auto_compact=False) for _ in range(2)]
    registry = builtin_registry()
    storages: list[Storage] = []
    try:
        for backend in backends:
            await backend.start()
            storage = Storage(backend, registry, settings=TEST_SETTINGS)
            await storage.start()
            await storage.wait_ready(READY_TIMEOUT_S)
            storages.append(storage)
        yield storages[0], storages[1], registry
    finally:
        for storage in storages:
            await storage.stop()
        for backend in backends:
            await backend.close()


async def test_write_on_one_seen_by_the_other(
    two_storages: tuple[Storage, Storage, ResourceRegistry],
) -> None:
    one, two, registry = two_storages
    info = registry.by_resource("", "v1", "configmaps")
    assert info is not None
    cms_one, cms_two = one.for_resource(info), two.for_resource(info)
    stream = cms_two.watch("default", resource_version="0")
    try:
        first = asyncio.ensure_future(anext(stream))
        created = await cms_one.create(configmap("a"))
        ev = await asyncio.wait_for(first, CROSS_SERVER_TIMEOUT_S)
        assert ev.type == "ADDED"
        assert (
            json.loads(ev.object)["metadata"]["resourceVersion"]
            == (created["metadata"]["resourceVersion"])
        )
        # A consistent read on the other server sees the write.
        got = await cms_two.get("default", "a")
        assert got["metadata"]["uid"] == created["metadata"]["uid"]
        page = await cms_two.list("default")
        assert [json.loads(i)["metadata"]["name"] for i in page.items] == ["a"]
        # CAS across servers: a stale update on one loses after a write on the other.
        got["data"] = {"k": "two"}
        await cms_two.update("default", "a", got)
        created["data"] = {"k": "one"}
        with pytest.raises(Exception, match="the object has been modified"):
            await cms_one.update("default", "a", created)
        _, deleted = await cms_one.delete("default", "a", DeleteOptions())
        assert deleted
        types = []
        while len(types) < 2:
            ev = await asyncio.wait_for(anext(stream), CROSS_SERVER_TIMEOUT_S)
            types.append(ev.type)
        assert types == ["MODIFIED", "DELETED"]
    finally:
        await stream.aclose()
