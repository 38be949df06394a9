"""Legacy service-account token Secrets: the ``serviceaccount-token`` controller.

A user may create a Secret of type ``kubernetes.io/service-account-token`` annotated
``kubernetes.io/service-account.name: NAME`` to get a long-lived token for the ServiceAccount
``NAME``. This controller (upstream's TokensController) owns such Secrets:

* it fills what is missing: ``data.token`` (a non-expiring JWT signed with the service-account
  key, naming the Secret, the ServiceAccount and its uid), ``data.namespace`` and ``data.ca.crt``
  (the cluster CA, the bundle ``root-ca-cert-publisher`` puts into ``kube-root-ca.crt``; a
  different ``ca.crt`` is replaced), and stamps the ``kubernetes.io/service-account.uid``
  annotation. A ``data.token`` the user wrote is left alone, as upstream: the authenticator
  only accepts a token whose signature verifies and which the Secret it names still holds, so
  writing one forges nothing;
* it deletes a token Secret whose ServiceAccount does not exist, or exists with another uid
  than the Secret's uid annotation (a cache miss is confirmed by a live read first), and all
  token Secrets of a ServiceAccount when that ServiceAccount is deleted; deletes carry a uid
  precondition so a Secret re-created under the same name is never hit;
* when a token Secret is deleted, it drops the Secret from its ServiceAccount's ``secrets``
  list (if listed).

Token Secrets without the name annotation are ignored (validation refuses them anyway).
Without a service-account key (``ControllerManagerOptions.service_account_private_key_pem``)
the controller does not run, as upstream. Writes start from a live read whose
resourceVersion must match the informer's copy: when it does not, a newer event is already on
its way and will be handled then. Tokens are never logged.
"""

from __future__ import annotations

import base64
import binascii
import copy
import logging
from typing import Any

from sampan.client import ConflictError, NotFoundError
from sampan.client.api import SECRETS, SERVICEACCOUNTS
from sampan.client.informer import INDEX_NAMESPACE
from sampan.controllers.base import ControllerContext, ControllerDisabled, QueueController
from sampan.controllers.serviceaccount import cluster_root_ca
from sampan.pki.satokens import ServiceAccountSigner

__all__ = [
    "SA_NAME_ANNOTATION",
    "SA_UID_ANNOTATION",
    "TOKEN_SECRET_TYPE",
    "TokensController",
]

log = logging.getLogger(__name__)

TOKEN_SECRET_TYPE = "kubernetes.io/service-account-token"
SA_NAME_ANNOTATION = "kubernetes.io/service-account.name"
SA_UID_ANNOTATION = "kubernetes.io/service-account.uid"
TOKEN_KEY = "token"
NAMESPACE_KEY = "namespace"
CA_KEY = "ca.crt"

# Work-queue keys: what to look at, with what a deletion event alone can tell.
_SECRET = "secret"  # secret:<namespace>/<name>            fill or delete the Secret
_ACCOUNT_GONE = "account-gone"  # account-gone:<ns>/<sa>/<uid>  delete that account's tokens
_SECRET_GONE = "secret-gone"  # secret-gone:<ns>/<secret>/<sa>/<sa-uid>  drop the reference


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    return obj.get("metadata") or {}


def _annotations(obj: dict[str, Any]) -> dict[str, str]:
    return _meta(obj).get("annotations") or {}


def _decoded(data: dict[str, Any], key: str) -> bytes:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        return b""
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return b""


def _encoded(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _is_token_of(secret: dict[str, Any], name: str, uid: str) -> bool:
    """Whether ``secret`` is a token Secret of the account ``name`` with ``uid`` (a Secret
    without the uid annotation belongs to whichever account has the name)."""
    if secret.get("type") != TOKEN_SECRET_TYPE:
        return False
    annotations = _annotations(secret)
    if annotations.get(SA_NAME_ANNOTATION) != name:
        return False
    secret_uid = annotations.get(SA_UID_ANNOTATION, "")
    return not secret_uid or secret_uid == uid


class TokensController(QueueController):
    """Populates and garbage-collects ``kubernetes.io/service-account-token`` Secrets."""

    name = "serviceaccount-token"

    def __init__(self, ctx: ControllerContext) -> None:
        key_pem = ctx.options.service_account_private_key_pem
        if not key_pem:
            raise ControllerDisabled("there is no service-account private key")
        super().__init__(ctx)
        self.client = ctx.client
        self.signer = ServiceAccountSigner(key_pem)
        self.root_ca = cluster_root_ca(ctx)
        self.accounts = self.watch(ctx.informers.informer(SERVICEACCOUNTS))
        self.secrets = self.watch(
            ctx.informers.informer(SECRETS, field_selector=f"type={TOKEN_SECRET_TYPE}")
        )
        self.accounts.add_event_handler(on_delete=self._account_deleted)
        self.secrets.add_event_handler(
            on_add=self._secret_changed,
            on_update=lambda _old, secret: self._secret_changed(secret),
            on_delete=self._secret_deleted,
        )

    # -- event handlers (only enqueue) --------------------------------------------------------

    def _account_deleted(self, account: dict[str, Any]) -> None:
        meta = _meta(account)
        if meta.get("namespace") and meta.get("name") and meta.get("uid"):
            self.queue.add(f"{_ACCOUNT_GONE}:{meta['namespace']}/{meta['name']}/{meta['uid']}")

    def _secret_changed(self, secret: dict[str, Any]) -> None:
        meta = _meta(secret)
        if meta.get("namespace") and meta.get("name"):
            self.queue.add(f"{_SECRET}:{meta['namespace']}/{meta['name']}")

    def _secret_deleted(self, secret: dict[str, Any]) -> None:
        meta = _meta(secret)
        annotations = _annotations(secret)
        sa_name = annotations.get(SA_NAME_ANNOTATION, "")
        if meta.get("namespace") and meta.get("name") and sa_name:
            sa_uid = annotations.get(SA_UID_ANNOTATION, "")
            self.queue.add(f"{_SECRET_GONE}:{meta['namespace']}/{meta['name']}/{sa_name}/{sa_uid}")

    # -- reconcile ----------------------------------------------------------------------------

    async def reconcile(self, key: str) -> None:
        kind, _, rest = key.partition(":")
        parts = rest.split("/")
        if kind == _SECRET and len(parts) == 2:
            await self._sync_secret(*parts)
        elif kind == _ACCOUNT_GONE and len(parts) == 3:
            await self._delete_tokens_of(*parts)
        elif kind == _SECRET_GONE and len(parts) == 4:
            await self._drop_reference(*parts)
        else:
            log.error("serviceaccount-token: malformed queue key %r dropped", key)

    async def _account(
        self, namespace: str, name: str, uid: str, *, live_on_miss: bool
    ) -> dict[str, Any] | None:
        """The ServiceAccount ``namespace/name`` if it exists (with ``uid`` when given)."""
        cached = self.accounts.cache.get(f"{namespace}/{name}")
        if cached is not None and (not uid or _meta(cached).get("uid") == uid):
            return cached
        if not live_on_miss:
            return None
        try:
            live = await self.client.get(SERVICEACCOUNTS, name, namespace=namespace)
        except NotFoundError:
            return None
        return live if not uid or _meta(live).get("uid") == uid else None

    async def _delete_secret(self, namespace: str, name: str, uid: str) -> None:
        try:
            await self.client.delete(
                SECRETS, name, namespace=namespace, precondition_uid=uid or None
            )
        except (NotFoundError, ConflictError):
            return  # already gone, or a different Secret of that name now
        log.info(
            "serviceaccount-token: deleted %s/%s (its service account is gone)", namespace, name
        )

    async def _sync_secret(self, namespace: str, name: str) -> None:
        cached = self.secrets.cache.get(f"{namespace}/{name}")
        if cached is None:
            return  # deleted: the secret-gone key handles what follows
        annotations = _annotations(cached)
        sa_name = annotations.get(SA_NAME_ANNOTATION, "")
        if not sa_name:
            return
        sa_uid = annotations.get(SA_UID_ANNOTATION, "")
        account = await self._account(namespace, sa_name, sa_uid, live_on_miss=True)
        if account is None:
            await self._delete_secret(namespace, name, _meta(cached).get("uid", ""))
            return
        if not self._missing(cached):
            return
        try:
            live = await self.client.get(SECRETS, name, namespace=namespace)
        except NotFoundError:
            return
        if _meta(live).get("resourceVersion") != _meta(cached).get("resourceVersion"):
            return  # our copy is behind; the update event brings us back
        missing = self._missing(live)
        if not missing:
            return
        body = copy.deepcopy(live)
        data = body.get("data") or {}
        body["data"] = data
        if CA_KEY in missing:
            data[CA_KEY] = _encoded(self.root_ca)
        if NAMESPACE_KEY in missing:
            data[NAMESPACE_KEY] = _encoded(namespace.encode())
        if TOKEN_KEY in missing:
            token = self.signer.sign_legacy(namespace, sa_name, _meta(account)["uid"], name)
            data[TOKEN_KEY] = _encoded(token.encode("ascii"))
        body_annotations = body["metadata"].get("annotations") or {}
        body["metadata"]["annotations"] = body_annotations
        body_annotations[SA_NAME_ANNOTATION] = sa_name
        body_annotations[SA_UID_ANNOTATION] = _meta(account)["uid"]
        try:
            await self.client.update(SECRETS, body, namespace=namespace)
        except (NotFoundError, ConflictError):
            return  # deleted, or changed by someone else: the next event decides
        log.info(
            "serviceaccount-token: filled %s in %s/%s for service account %s",
            ", ".join(sorted(missing)),
            namespace,
            name,
            sa_name,
        )

    def _missing(self, secret: dict[str, Any]) -> set[str]:
        """The data keys this controller must (re)write in ``secret``."""
        data = secret.get("data") or {}
        missing = set()
        if self.root_ca and _decoded(data, CA_KEY) != self.root_ca:
            missing.add(CA_KEY)
        if not _decoded(data, NAMESPACE_KEY):
            missing.add(NAMESPACE_KEY)
        if not _decoded(data, TOKEN_KEY):
            missing.add(TOKEN_KEY)
        return missing

    async def _delete_tokens_of(self, namespace: str, sa_name: str, sa_uid: str) -> None:
        if await self._account(namespace, sa_name, sa_uid, live_on_miss=False) is not None:
            return
        failures: list[Exception] = []
        for secret in self.secrets.cache.by_index(INDEX_NAMESPACE, namespace):
            if not _is_token_of(secret, sa_name, sa_uid):
                continue
            meta = _meta(secret)
            try:
                await self._delete_secret(namespace, meta["name"], meta.get("uid", ""))
            except Exception as exc:  # try the others, then fail for a retry
                failures.append(exc)
        if failures:
            raise failures[0]

    async def _drop_reference(
        self, namespace: str, secret_name: str, sa_name: str, sa_uid: str
    ) -> None:
        if await self._account(namespace, sa_name, sa_uid, live_on_miss=False) is None:
            return
        try:
            live = await self.client.get(SERVICEACCOUNTS, sa_name, namespace=namespace)
        except NotFoundError:
            return
        if sa_uid and _meta(live).get("uid") != sa_uid:
            return
        refs = live.get("secrets") or []
        kept = [
            ref for ref in refs if not (isinstance(ref, dict) and ref.get("name") == secret_name)
        ]
        if len(kept) == len(refs):
            return
        body = copy.deepcopy(live)
        if kept:
            body["secrets"] = kept
        else:
            body.pop("secrets", None)  # an empty list is left out, as Go's omitempty does
        try:
            await self.client.update(SERVICEACCOUNTS, body, namespace=namespace)
        except NotFoundError:
            return
        log.info(
            "serviceaccount-token: removed deleted secret %s from service account %s/%s",
            secret_name,
            namespace,
            sa_name,
        )
