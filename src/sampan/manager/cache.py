"""Watch-backed caches of the manager's own objects, for its request path and RBAC upkeep.

``ManagerObjects`` keeps one informer (list, then watch, on the local API) for each of Users,
Tokens, GlobalRoleBindings, ClusterRoleTemplateBindings, RoleTemplates and Clusters; the
bindings are indexed by user id. Authenticating a token (``store.authenticate`` with
``objects``), telling whether a user is an admin or which clusters they are bound to, and
finding a Cluster then read memory only: a proxied request reads none of the manager's objects
from the API.

Invariants:

* **A change takes effect when its watch event arrives.** A revoked or deleted Token, a deleted
  or disabled User, a removed binding or Cluster stop working then (the cache is updated before
  anything else sees the event).
* **A miss is asked of the API.** A Token, User or ClusterRoleTemplateBinding written a moment
  ago whose event has not arrived yet still works at once (``token``/``user`` return ``None``
  and the caller reads it; ``bound_clusters`` is complemented by a live read only when it does
  not grant what is asked, so only a refusal costs a read). The admin role is the exception:
  it is read from the cache alone (a non-admin must not cost a read per request), so a new
  GlobalRoleBinding counts once its event arrived. Until every informer has listed once
  (``synced``), every lookup answers "unknown" and the callers read the API, as without a
  cache.
* **What this manager writes or deletes itself is seen at once**: ``wrote`` (a User whose
  password was just changed: no 403 "must change" on the next request) and ``deleted`` (a
  logout, a revoked Token, a deleted User or binding: refused) take precedence over the cache
  until its watch event with that revision (or a later one, or the DELETED event) arrives;
  then they are dropped, so they stay as small as the writes in flight.
* Objects handed out are the informers' own dicts, shared: callers must not mutate them.
* ``on_bindings_changed`` is called (from the informers' task: it must only schedule work) for
  every add, update and delete of a binding or RoleTemplate, after the cache has it, so work
  that reads the cache (downstream RBAC) sees the change.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from sampan.client import Client, Resource
from sampan.client.informer import Informer
from sampan.manager.crds import (
    ADMIN_ROLE,
    CLUSTER_ROLE_TEMPLATE_BINDINGS,
    CLUSTERS,
    GLOBAL_ROLE_BINDINGS,
    ROLE_TEMPLATES,
    TOKENS,
    USERS,
)

__all__ = ["INDEX_USER_ID", "SYNC_TIMEOUT_S", "ManagerObjects"]

log = logging.getLogger(__name__)

INDEX_USER_ID = "user-id"
SYNC_TIMEOUT_S = 30.0
"""How long ``start`` waits for the first lists (the API reads are the fallback meanwhile)."""


def _revision(obj: Mapping[str, Any]) -> int:
    try:
        return int((obj.get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


def _index_user_id(obj: Mapping[str, Any]) -> Iterable[str]:
    user_id = (obj.get("spec") or {}).get("userId")
    return [user_id] if isinstance(user_id, str) and user_id else []


class ManagerObjects:
    """See the module docstring."""

    def __init__(self, client: Client) -> None:
        by_user = {INDEX_USER_ID: _index_user_id}
        self.users = Informer(client, USERS)
        self.tokens = Informer(client, TOKENS)
        self.global_bindings = Informer(client, GLOBAL_ROLE_BINDINGS, indexers=by_user)
        self.cluster_bindings = Informer(client, CLUSTER_ROLE_TEMPLATE_BINDINGS, indexers=by_user)
        self.role_templates = Informer(client, ROLE_TEMPLATES)
        self.clusters = Informer(client, CLUSTERS)
        self._deleted: dict[str, set[str]] = {}
        """Resource plural -> names this manager deleted whose DELETED event is still due."""
        self._written: dict[str, dict[str, dict[str, Any]]] = {}
        """Resource plural -> name -> what this manager wrote, until the cache catches up."""
        self._all = (
            self.users,
            self.tokens,
            self.global_bindings,
            self.cluster_bindings,
            self.role_templates,
            self.clusters,
        )
        for informer in self._all:
            self._catch_up(informer)

    def _catch_up(self, informer: Informer) -> None:
        """Handlers that drop what ``wrote``/``deleted`` remembered once the cache has it."""
        plural = informer.resource.plural

        def seen(obj: dict[str, Any]) -> None:
            written = self._written.get(plural, {})
            name = obj["metadata"]["name"]
            if name in written and _revision(obj) >= _revision(written[name]):
                del written[name]

        def updated(_old: dict[str, Any], new: dict[str, Any]) -> None:
            seen(new)

        def gone(obj: dict[str, Any]) -> None:
            name = obj["metadata"]["name"]
            self._deleted.get(plural, set()).discard(name)
            self._written.get(plural, {}).pop(name, None)

        informer.add_event_handler(on_add=seen, on_update=updated, on_delete=gone)

    def wrote(self, resource: Resource, obj: dict[str, Any]) -> None:
        """This manager wrote ``obj`` (as the API answered it): lookups answer it until the
        cache holds that revision or a later one (see the module docstring)."""
        informer = self._informer(resource)
        if informer is None:
            return  # not cached here
        cached = informer.cache.get_by_name(obj["metadata"]["name"])
        if cached is None or _revision(cached) < _revision(obj):
            self._written.setdefault(resource.plural, {})[obj["metadata"]["name"]] = obj

    def deleted(self, resource: Resource, name: str) -> None:
        """This manager deleted ``name``: hide it now (see the module docstring)."""
        informer = self._informer(resource)
        if informer is None:
            return  # not cached here
        self._written.get(resource.plural, {}).pop(name, None)
        if name in informer.cache:
            self._deleted.setdefault(resource.plural, set()).add(name)

    def _informer(self, resource: Resource) -> Informer | None:
        return next((i for i in self._all if i.resource == resource), None)

    def _lookup(self, informer: Informer, name: str) -> dict[str, Any] | None:
        if not self.synced:
            return None
        plural = informer.resource.plural
        written = self._written.get(plural, {}).get(name)
        if written is not None:
            return written
        if name in self._deleted.get(plural, ()):
            return None
        return informer.cache.get_by_name(name)

    def _indexed(self, informer: Informer, user_id: str) -> list[dict[str, Any]]:
        hidden = self._deleted.get(informer.resource.plural, ())
        return [
            obj
            for obj in informer.cache.by_index(INDEX_USER_ID, user_id)
            if obj["metadata"]["name"] not in hidden
        ]

    def on_bindings_changed(self, callback: Callable[[], None]) -> None:
        def changed(*_objects: dict[str, Any]) -> None:
            callback()

        for informer in (self.global_bindings, self.cluster_bindings, self.role_templates):
            informer.add_event_handler(on_add=changed, on_update=changed, on_delete=changed)

    async def start(self, sync_timeout_s: float = SYNC_TIMEOUT_S) -> bool:
        """Start the informers and wait (at most ``sync_timeout_s``) for their first lists;
        returns whether they all synced (if not, they keep trying in the background)."""
        for informer in self._all:
            informer.start()
        synced = True
        try:
            async with asyncio.timeout(sync_timeout_s):
                for informer in self._all:
                    await informer.wait_synced()
        except TimeoutError:
            synced = False
            log.warning(
                "manager: object caches not synced after %ss; reading the API", sync_timeout_s
            )
        return synced

    async def stop(self) -> None:
        await asyncio.gather(*(informer.stop() for informer in self._all))

    @property
    def synced(self) -> bool:
        return all(informer.has_synced for informer in self._all)

    # -- lookups (None: unknown here, ask the API) -----------------------------------------

    def token(self, name: str) -> dict[str, Any] | None:
        return self._lookup(self.tokens, name)

    def user(self, name: str) -> dict[str, Any] | None:
        return self._lookup(self.users, name)

    def cluster(self, name: str) -> dict[str, Any] | None:
        return self._lookup(self.clusters, name)

    def is_admin(self, user_id: str) -> bool | None:
        if not self.synced:
            return None
        return any(
            (b.get("spec") or {}).get("globalRoleName") == ADMIN_ROLE
            for b in self._indexed(self.global_bindings, user_id)
        )

    def bound_clusters(self, user_id: str) -> dict[str, set[str]] | None:
        """Cluster name -> the role templates ``user_id`` holds there."""
        if not self.synced:
            return None
        bound: dict[str, set[str]] = {}
        for binding in self._indexed(self.cluster_bindings, user_id):
            spec = binding.get("spec") or {}
            bound.setdefault(str(spec.get("clusterName", "")), set()).add(
                str(spec.get("roleTemplateName", ""))
            )
        return bound

    def rbac_inputs(
        self,
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, dict[str, Any]]] | None:
        """(ClusterRoleTemplateBindings, GlobalRoleBindings, RoleTemplates by name) for the
        downstream RBAC, or None before the first lists."""
        if not self.synced:
            return None
        templates = {t["metadata"]["name"]: t for t in self.role_templates.cache.list()}
        hidden_crtbs = self._deleted.get(self.cluster_bindings.resource.plural, ())
        hidden_grbs = self._deleted.get(self.global_bindings.resource.plural, ())
        return (
            [
                b
                for b in self.cluster_bindings.cache.list()
                if b["metadata"]["name"] not in hidden_crtbs
            ],
            [
                b
                for b in self.global_bindings.cache.list()
                if b["metadata"]["name"] not in hidden_grbs
            ],
            templates,
        )
