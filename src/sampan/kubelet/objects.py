"""The Secrets and ConfigMaps the kubelet's pods use, each watched on its own (upstream's
watch-based ConfigMap/Secret managers).

Under the Node authorizer a kubelet may read only the Secrets and ConfigMaps its own pods
refer to, one object at a time: a cluster-wide list is refused. So ``PodObjects`` keeps one
informer per referenced object (``list``/``watch`` in its namespace with the field selector
``metadata.name=<name>``), started when the first pod referring to it is prepared and stopped
when the last such pod is released; Services come from one cluster-wide informer (nodes may
list them, for the service environment variables).

``prepare(uid, pod)`` registers a pod's references and waits briefly for their first list,
so a pod's first sync normally sees its objects; an object that cannot be read yet (not synced,
refused) reads as missing and the pod's volume/environment setup retries, as upstream's does.
``on_change`` is called (quickly, from informer handlers) when a watched object changes.

Implements ``sampan.kubelet.env.Sources``. Invariant: an informer runs for a key exactly while
some prepared, unreleased pod refers to it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

from sampan.api.podrefs import pod_configmap_names, pod_secret_names
from sampan.client import Client, Informer, Resource, SharedInformerFactory
from sampan.client.api import CONFIGMAPS, SECRETS, SERVICES

__all__ = ["OBJECT_SYNC_WAIT_S", "PodObjects"]

log = logging.getLogger("sampan.kubelet")

OBJECT_SYNC_WAIT_S = 2.0
"""How long a pod's first sync waits for its objects' first list (upstream: 1 s polls)."""

_Key = tuple[str, str, str]  # (plural, namespace, name)


class PodObjects:
    """See the module docstring."""

    def __init__(
        self,
        client: Client,
        factory: SharedInformerFactory,
        on_change: Callable[[dict[str, Any]], None],
    ) -> None:
        self._client = client
        self._services = factory.informer(SERVICES)
        self._on_change = on_change
        self._informers: dict[_Key, Informer] = {}
        self._users: dict[_Key, set[str]] = {}
        self._pod_keys: dict[str, frozenset[_Key]] = {}
        self._stopping: set[asyncio.Task[None]] = set()

    # -- Sources --

    def configmap(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get(CONFIGMAPS, namespace, name)

    def secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get(SECRETS, namespace, name)

    def services(self, namespace: str) -> list[dict[str, Any]]:
        return self._services.cache.by_index("namespace", namespace)

    def _get(self, resource: Resource, namespace: str, name: str) -> dict[str, Any] | None:
        informer = self._informers.get((resource.plural, namespace, name))
        if informer is None:
            return None
        return informer.cache.get(f"{namespace}/{name}")

    # -- registration --

    @staticmethod
    def _keys(pod: Mapping[str, Any]) -> frozenset[_Key]:
        namespace = (pod.get("metadata") or {}).get("namespace") or ""
        keys = {(SECRETS.plural, namespace, n) for n in pod_secret_names(pod)}
        keys |= {(CONFIGMAPS.plural, namespace, n) for n in pod_configmap_names(pod)}
        return frozenset(keys)

    async def prepare(self, uid: str, pod: Mapping[str, Any]) -> None:
        """Watch what ``pod`` refers to (and stop watching what it no longer does); wait up to
        ``OBJECT_SYNC_WAIT_S`` for the first lists."""
        keys = self._keys(pod)
        previous = self._pod_keys.get(uid, frozenset())
        self._pod_keys[uid] = keys
        for key in keys - previous:
            self._users.setdefault(key, set()).add(uid)
            if key not in self._informers:
                self._informers[key] = self._start(key)
        self._drop(uid, previous - keys)
        pending = [i for i in (self._informers[k] for k in keys) if not i.has_synced]
        if pending:
            await asyncio.gather(*(i.wait_synced(OBJECT_SYNC_WAIT_S) for i in pending))

    def release(self, uid: str) -> None:
        """The pod is gone from this node: stop watching what only it used."""
        self._drop(uid, self._pod_keys.pop(uid, frozenset()))

    def _start(self, key: _Key) -> Informer:
        plural, namespace, name = key
        resource = SECRETS if plural == SECRETS.plural else CONFIGMAPS
        informer = Informer(
            self._client, resource, namespace=namespace, field_selector=f"metadata.name={name}"
        )
        informer.add_event_handler(
            on_add=self._on_change,
            on_update=lambda _old, new: self._on_change(new),
            on_delete=self._on_change,
        )
        informer.start()
        return informer

    def _drop(self, uid: str, keys: frozenset[_Key]) -> None:
        for key in keys:
            users = self._users.get(key)
            if users is None:
                continue
            users.discard(uid)
            if users:
                continue
            del self._users[key]
            informer = self._informers.pop(key, None)
            if informer is not None:
                task = asyncio.get_running_loop().create_task(
                    informer.stop(), name=f"kubelet-stop-{informer.name}"
                )
                self._stopping.add(task)
                task.add_done_callback(self._stopping.discard)

    async def stop(self) -> None:
        informers = list(self._informers.values())
        self._informers.clear()
        self._users.clear()
        self._pod_keys.clear()
        await asyncio.gather(*(i.stop() for i in informers), *self._stopping)
