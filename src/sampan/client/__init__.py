"""The Kubernetes client library every Sampan component is built on.

Modules (import from them, or use the names re-exported here):

* ``sampan.client.api``: ``ClientConfig``, ``Client``, ``Resource`` and its constants
  (``PODS``, ``NODES``...), ``PatchType``, ``WatchStream`` and the error tree (``ApiError``...).
* ``sampan.client.informer``: ``Informer``, ``SharedInformerFactory``, ``Cache``, keys.
* ``sampan.client.workqueue``: ``WorkQueue``, rate limiters, ``Clock``/``FakeClock``.
* ``sampan.client.leaderelection``: ``LeaderElector`` on a Lease.
* ``sampan.client.events``: ``EventRecorder``.

This layer talks to the API server only over HTTP(S); it imports nothing from the server side.

The shape of a controller built on it::

    client = Client(ClientConfig.from_kubeconfig(path))          # one per component
    factory = SharedInformerFactory(client)                      # one per process
    pods = factory.informer(PODS)
    queue: WorkQueue[str] = WorkQueue("my-controller")
    pods.add_event_handler(                                       # handlers only enqueue
        on_add=lambda o: queue.add(object_key(o)),
        on_update=lambda old, new: queue.add(object_key(new)),
        on_delete=lambda o: queue.add(object_key(o)),
    )
    factory.start()
    await factory.wait_synced()

    async def worker() -> None:                                   # run a few of these
        while True:
            try:
                key = await queue.get()
            except QueueShutDown:
                return
            try:
                await reconcile(key, pods.cache.get(key))        # level-triggered, idempotent
            except Exception:
                log.exception("reconcile %s", key)
                queue.add_rate_limited(key)                       # back off per key
            else:
                queue.forget(key)
            finally:
                queue.done(key)

Run it under ``LeaderElector(...).run()`` when only one replica may act, and report what it
did with ``EventRecorder``. Never mutate objects from the cache or from handlers: copy first.
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
from sampan.client.informer import (
    Informer,
    SharedInformerFactory,
    compact,
    object_key,
    split_key,
)
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
    "compact",
    "object_key",
    "split_key",
]
