"""Per-namespace defaults: the ``default`` ServiceAccount and the ``kube-root-ca.crt`` ConfigMap.

Two controllers, as upstream splits them:

* ``ServiceAccountsController`` ("serviceaccount") makes sure every active namespace has a
  ServiceAccount named ``default``; deleting it brings it back.
* ``RootCACertPublisher`` ("root-ca-cert-publisher") makes sure every active namespace has the
  ConfigMap ``kube-root-ca.crt`` whose ``ca.crt`` is the cluster's root CA (what pods use to
  verify the API server); edits to its data are reverted, deleting it brings it back.

Both skip namespaces that are terminating (the API server refuses creations there anyway) and
never touch other ServiceAccounts or ConfigMaps.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from sampan.client import AlreadyExistsError, NotFoundError
from sampan.client.api import CONFIGMAPS, NAMESPACES, SERVICEACCOUNTS
from sampan.controllers.base import ControllerContext, QueueController

__all__ = [
    "DEFAULT_SERVICE_ACCOUNT",
    "ROOT_CA_CONFIGMAP",
    "ROOT_CA_DESCRIPTION",
    "ROOT_CA_KEY",
    "RootCACertPublisher",
    "ServiceAccountsController",
    "cluster_root_ca",
]

log = logging.getLogger(__name__)

DEFAULT_SERVICE_ACCOUNT = "default"
ROOT_CA_CONFIGMAP = "kube-root-ca.crt"
ROOT_CA_KEY = "ca.crt"
DESCRIPTION_ANNOTATION = "kubernetes.io/description"
ROOT_CA_DESCRIPTION = (
    "Contains a CA bundle that can be used to verify the kube-apiserver when using internal "
    "endpoints such as the internal service IP or kubernetes.default.svc. No other usage is "
    "guaranteed across distributions of Kubernetes clusters."
)


def cluster_root_ca(ctx: ControllerContext) -> bytes:
    """The cluster CA bundle handed to workloads (``kube-root-ca.crt``, token Secrets'
    ``ca.crt``): ``options.root_ca_pem``, else the CA the controllers' client trusts."""
    return ctx.options.root_ca_pem or ctx.client.config.ca_pem or b""


def _active(namespace: dict[str, Any] | None) -> bool:
    if namespace is None:
        return False
    if (namespace.get("metadata") or {}).get("deletionTimestamp"):
        return False
    return (namespace.get("status") or {}).get("phase", "Active") == "Active"


def _namespace_of(obj: dict[str, Any]) -> str:
    return (obj.get("metadata") or {}).get("namespace") or ""


class ServiceAccountsController(QueueController):
    """A ``default`` ServiceAccount in every active namespace."""

    name = "serviceaccount"

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.client = ctx.client
        self.namespaces = self.watch(ctx.informers.informer(NAMESPACES))
        self.accounts = self.watch(ctx.informers.informer(SERVICEACCOUNTS))
        self.namespaces.add_event_handler(
            on_add=lambda ns: self.queue.add(ns["metadata"]["name"]),
            on_update=lambda _old, ns: self.queue.add(ns["metadata"]["name"]),
        )
        self.accounts.add_event_handler(on_delete=self._account_deleted)

    def _account_deleted(self, account: dict[str, Any]) -> None:
        if (account.get("metadata") or {}).get("name") == DEFAULT_SERVICE_ACCOUNT:
            self.queue.add(_namespace_of(account))

    async def reconcile(self, key: str) -> None:
        if not _active(self.namespaces.cache.get(key)):
            return
        if self.accounts.cache.get(f"{key}/{DEFAULT_SERVICE_ACCOUNT}") is not None:
            return
        try:
            await self.client.create(
                SERVICEACCOUNTS, {"metadata": {"name": DEFAULT_SERVICE_ACCOUNT}}, namespace=key
            )
        except AlreadyExistsError:
            return
        log.debug("serviceaccount: created %s/%s", key, DEFAULT_SERVICE_ACCOUNT)


class RootCACertPublisher(QueueController):
    """The ``kube-root-ca.crt`` ConfigMap in every active namespace."""

    name = "root-ca-cert-publisher"

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.client = ctx.client
        self.ca_text = cluster_root_ca(ctx).decode()
        self.namespaces = self.watch(ctx.informers.informer(NAMESPACES))
        self.configmaps = self.watch(
            ctx.informers.informer(CONFIGMAPS, field_selector=f"metadata.name={ROOT_CA_CONFIGMAP}")
        )
        self.namespaces.add_event_handler(
            on_add=lambda ns: self.queue.add(ns["metadata"]["name"]),
            on_update=lambda _old, ns: self.queue.add(ns["metadata"]["name"]),
        )
        self.configmaps.add_event_handler(
            on_update=lambda _old, cm: self.queue.add(_namespace_of(cm)),
            on_delete=lambda cm: self.queue.add(_namespace_of(cm)),
        )

    async def on_synced(self) -> None:
        if not self.ca_text:
            log.warning("root-ca-cert-publisher: no root CA known; nothing to publish")

    async def reconcile(self, key: str) -> None:
        if not self.ca_text or not _active(self.namespaces.cache.get(key)):
            return
        cached = self.configmaps.cache.get(f"{key}/{ROOT_CA_CONFIGMAP}")
        if cached is None:
            body = {
                "metadata": {
                    "name": ROOT_CA_CONFIGMAP,
                    "annotations": {DESCRIPTION_ANNOTATION: ROOT_CA_DESCRIPTION},
                },
                "data": {ROOT_CA_KEY: self.ca_text},
            }
            try:
                await self.client.create(CONFIGMAPS, body, namespace=key)
            except AlreadyExistsError:
                return  # the informer will show it; an update event re-checks the data
            log.debug("root-ca-cert-publisher: created %s/%s", key, ROOT_CA_CONFIGMAP)
            return
        annotations = (cached.get("metadata") or {}).get("annotations") or {}
        if cached.get("data") == {ROOT_CA_KEY: self.ca_text} and (
            annotations.get(DESCRIPTION_ANNOTATION) == ROOT_CA_DESCRIPTION
        ):
            return
        body = copy.deepcopy(cached)
        body["data"] = {ROOT_CA_KEY: self.ca_text}
        body.pop("binaryData", None)
        body["metadata"].setdefault("annotations", {})[DESCRIPTION_ANNOTATION] = ROOT_CA_DESCRIPTION
        try:
            await self.client.update(CONFIGMAPS, body, namespace=key)
        except NotFoundError:
            self.queue.add(key)
            return
        log.debug("root-ca-cert-publisher: restored %s/%s", key, ROOT_CA_CONFIGMAP)
