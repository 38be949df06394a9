"""The revisioned key-value store under the API server (kine-like, etcd semantics).

Public façade: ``open_backend(endpoint, data_dir)`` picks a driver (SQLite by default,
PostgreSQL for several servers); the ``Backend`` protocol and its records, events and error
tree live in ``sampan.datastore.types`` and are re-exported here. ``redact_endpoint`` and
``describe`` name a store in logs without ever showing a password.
"""

from sampan.datastore.endpoint import (
    DEFAULT_DB_RELATIVE_PATH,
    describe,
    open_backend,
    redact_endpoint,
)
from sampan.datastore.types import (
    KEY_PREFIX,
    MAX_VALUE_BYTES,
    Backend,
    CompactedError,
    ConflictError,
    Event,
    EventType,
    FutureRevisionError,
    InvalidRequestError,
    KeyExistsError,
    KeyNotFoundError,
    KeyValue,
    ListResult,
    StoreError,
    StoreUnavailableError,
    WatchOverflowError,
)

__all__ = [
    "DEFAULT_DB_RELATIVE_PATH",
    "KEY_PREFIX",
    "MAX_VALUE_BYTES",
    "Backend",
    "CompactedError",
    "ConflictError",
    "Event",
    "EventType",
    "FutureRevisionError",
    "InvalidRequestError",
    "KeyExistsError",
    "KeyNotFoundError",
    "KeyValue",
    "ListResult",
    "StoreError",
    "StoreUnavailableError",
    "WatchOverflowError",
    "describe",
    "open_backend",
    "redact_endpoint",
]
