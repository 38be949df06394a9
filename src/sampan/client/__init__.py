"""The Kubernetes client library every Sampan component is built on.

Modules (import from them, or use the names re-exported here):

* ``sampan.client.api``: ``ClientConfig``, ``Client``, ``Resource`` and its constants
  (``PODS``, ``NODES``...), ``PatchType``, ``WatchStream`` and the error tree (``ApiError``...).
* ``sampan.client.informer``: ``Informer``, ``SharedInformerFactory``, ``Cache``, keys.
* ``sampan.client.workqueue``: ``WorkQueue``, rate limiters, ``Clock``/``FakeClock``.
* ``sampan.client.leaderelection``: ``LeaderElector`` on a Lease.
* ``sampan.client.events``: ``EventRecorder``.

This layer talks to the API server only over HTTP(S); it imports nothing from the server side.
"""

from sampan.client.api import (
    AlreadyExistsError,
    ApiError,
    Client,
    ClientConfig,
    ClientError,
    ConflictError,
    NotFoundError,
    PatchType,
    Resource,
    ResourceExpired,
    TransportError,
)
from sampan.client.events import EventRecorder
from sampan.client.informer import Informer, SharedInformerFactory, object_key, split_key
from sampan.client.leaderelection import LeaderElector
from sampan.client.workqueue import QueueShutDown, WorkQueue

__all__ = [
    "AlreadyExistsError",
    "ApiError",
    "Client",
    "ClientConfig",
    "ClientError",
    "ConflictError",
    "EventRecorder",
    "Informer",
    "LeaderElector",
    "NotFoundError",
    "PatchType",
    "QueueShutDown",
    "Resource",
    "ResourceExpired",
    "SharedInformerFactory",
    "TransportError",
    "WorkQueue",
    "object_key",
    "split_key",
]
