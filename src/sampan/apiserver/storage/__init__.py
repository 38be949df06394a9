"""The API server's storage layer: watch caches plus the generic registry store.

Public façade (the contract with the HTTP layer): ``Storage`` (one per API server) hands out a
``ResourceStore`` per resource; reads are served from per-storage-resource watch caches fed by
one datastore watch, writes go to the datastore with compare-and-swap; ``ListPage``,
``WatchEvent`` and ``DeleteOptions`` are the value types; ``StorageSettings`` the tunables.
Errors are ``sampan.api.errors.StatusError`` subclasses, never datastore errors.
"""

from sampan.apiserver.storage.factory import Storage
from sampan.apiserver.storage.store import ResourceStore
from sampan.apiserver.storage.types import (
    DeleteOptions,
    ListPage,
    StorageSettings,
    WatchEvent,
)

__all__ = [
    "DeleteOptions",
    "ListPage",
    "ResourceStore",
    "Storage",
    "StorageSettings",
    "WatchEvent",
]
