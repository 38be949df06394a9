"""Fixtures for the storage-layer tests: a real datastore (SQLite in a temp dir, and etcd: a
private server shared by the session, a key namespace per test), the built-in registry, and a
started ``Storage`` with small limits (so rings and queues overflow quickly)."""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from sampan.api.resources import ResourceInfo, ResourceRegistry, builtin_registry
from sampan.apiserver.storage import ResourceStore, Storage, StorageSettings
from sampan.datastore.etcd import EtcdBackend
from sampan.datastore.sqlite import SQLiteBackend
from tests.support.etcd import EtcdServer, etcd_server

__all__ = ["etcd_server"]

TEST_SETTINGS = StorageSettings(
    ring_size=1_000,
    watcher_queue_size=1_000,
    bookmark_interval_s=60.0,
    consistent_read_wait_s=3.0,
    freshness_wait_s=0.5,
    ready_wait_s=5.0,
)

READY_TIMEOUT_S = 10.0

StorageFactory = Callable[..., Awaitable[Storage]]


@pytest.fixture
def registry() -> ResourceRegistry:
    return builtin_registry()


@pytest.fixture(params=["sqlite", pytest.param("etcd", marks=pytest.mark.etcd)])
async def backend(
    request: pytest.FixtureRequest, tmp_path: pathlib.Path
) -> AsyncIterator[SQLiteBackend | EtcdBackend]:
    if request.param == "etcd":
        server: EtcdServer = request.getfixturevalue("etcd_server")
        store: SQLiteBackend | EtcdBackend = EtcdBackend(
            server.endpoint, namespace=server.namespace(), auto_compact=False
        )
    else:
        store = SQLiteBackend(tmp_path / "state.db", auto_compact=False)
    await store.start()
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def make_storage(
    backend: SQLiteBackend | EtcdBackend, registry: ResourceRegistry
) -> AsyncIterator[StorageFactory]:
    """Start a Storage over the shared backend with settings overridden by keyword."""
    started: list[Storage] = []

    async def make(**overrides: object) -> Storage:
        fields = {
            name: getattr(TEST_SETTINGS, name) for name in StorageSettings.__dataclass_fields__
        }
        fields.update(overrides)
        storage = Storage(backend, registry, settings=StorageSettings(**fields))  # type: ignore[arg-type]
        await storage.start()
        await storage.wait_ready(READY_TIMEOUT_S)
        started.append(storage)
        return storage

    yield make
    for storage in started:
        await storage.stop()


@pytest.fixture
async def storage(make_storage: StorageFactory) -> Storage:
    return await make_storage()


def resource(registry: ResourceRegistry, group: str, version: str, plural: str) -> ResourceInfo:
    info = registry.by_resource(group, version, plural)
    assert info is not None, plural
    return info


@pytest.fixture
def configmaps(storage: Storage, registry: ResourceRegistry) -> ResourceStore:
    return storage.for_resource(resource(registry, "", "v1", "configmaps"))


@pytest.fixture
def pods(storage: Storage, registry: ResourceRegistry) -> ResourceStore:
    return storage.for_resource(resource(registry, "", "v1", "pods"))


@pytest.fixture
def deployments(storage: Storage, registry: ResourceRegistry) -> ResourceStore:
    return storage.for_resource(resource(registry, "apps", "v1", "deployments"))


@pytest.fixture
def namespaces(storage: Storage, registry: ResourceRegistry) -> ResourceStore:
    return storage.for_resource(resource(registry, "", "v1", "namespaces"))


def configmap(name: str, namespace: str = "default", **labels: str) -> dict:
    meta: dict = {"name": name, "namespace": namespace}
    if labels:
        meta["labels"] = dict(labels)
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"k": name}}


def pod(name: str, namespace: str = "default", node: str = "", **spec: object) -> dict:
    body: dict = {"containers": [{"name": "c", "image": "busybox:1.36"}], **spec}
    if node:
        body["nodeName"] = node
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": body,
    }


def deployment(name: str, replicas: int = 1, image: str = "nginx:1.27") -> dict:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "web", "image": image}]},
            },
        },
    }
