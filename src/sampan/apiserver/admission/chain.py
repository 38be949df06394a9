"""The admission chain: what a plugin sees, the plugin protocol, and the chain that runs them.

Owns ``AdmissionAttributes`` (one write as admission sees it), ``AdmissionPlugin``,
``AdmissionChain`` and ``admitted_update`` (the get -> mutate -> admit -> compare-and-swap loop
that lets updates and patches be admitted against the object they will really replace, as
kube-apiserver admits inside its GuaranteedUpdate).

The chain runs mutating plugins first, then validating ones, each group in list order, exactly
like kube-apiserver. Plugins that reserve something outside the object (a ClusterIP, a
NodePort) register hooks on the attributes: ``on_failure`` hooks run when the write does not
happen (a later plugin refused, validation failed, the datastore said no), ``on_success``
hooks run after it was stored. The handler that called ``admit`` must call ``finish`` exactly
once with the outcome (``admitted_update`` does it itself).

Invariants: a plugin either returns (possibly having mutated ``attrs.obj`` in place, for
mutating plugins only) or raises a ``StatusError``; a rejected request writes nothing and
every reservation made for it is released; hooks never raise (failures are logged).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sampan.api.errors import Conflict, Forbidden, qualified_resource
from sampan.api.jsonwire import copy_json
from sampan.apiserver.responses import warning_header, warning_text_ok

__all__ = [
    "MAX_ADMITTED_UPDATE_ATTEMPTS",
    "AdmissionAttributes",
    "AdmissionChain",
    "AdmissionPlugin",
    "Hook",
    "admitted_update",
    "forbidden",
    "warning_header",
    "warning_text_ok",
]

log = logging.getLogger(__name__)

MAX_ADMITTED_UPDATE_ATTEMPTS = 16
"""How often ``admitted_update`` re-reads and re-admits when another writer got in between."""

Hook = Callable[[], Awaitable[None]]


@dataclass(slots=True)
class AdmissionAttributes:
    operation: str  # CREATE | UPDATE | DELETE | CONNECT
    group: str
    version: str
    resource: str
    subresource: str
    namespace: str
    name: str
    namespaced: bool
    obj: dict[str, Any] | None = None
    old_obj: dict[str, Any] | None = None
    dry_run: bool = False
    user: Any = None
    request_name: str | None = None
    """The name in the request's URL where it differs from ``name`` (a POST create names the
    object only in its body: ``""``); what authorization saw."""
    extra: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    """Messages for the client, sent back as ``Warning: 299 - "<message>"`` headers."""
    success_hooks: list[Hook] = field(default_factory=list)
    failure_hooks: list[Hook] = field(default_factory=list)
    finished: bool = False

    def on_success(self, hook: Hook) -> None:
        self.success_hooks.append(hook)

    def on_failure(self, hook: Hook) -> None:
        self.failure_hooks.append(hook)

    def warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)

    def is_resource(self, group: str, resource: str, subresource: str = "") -> bool:
        return (self.group, self.resource, self.subresource) == (group, resource, subresource)


class AdmissionPlugin(Protocol):
    name: str
    mutating: bool

    async def admit(self, attrs: AdmissionAttributes) -> None: ...


def forbidden(attrs: AdmissionAttributes, reason: str) -> Forbidden:
    """kube-apiserver's admission Forbidden wording: ``<resource> "<name>" is forbidden: ...``."""
    resource = qualified_resource(attrs.resource, attrs.group)
    if attrs.name:
        message = f'{resource} "{attrs.name}" is forbidden: {reason}'
    else:
        message = f"{resource} is forbidden: {reason}"
    return Forbidden(message, name=attrs.name, group=attrs.group, kind=attrs.resource)


class AdmissionChain:
    """Runs mutating plugins, then validating plugins, in order."""

    def __init__(self, plugins: Sequence[AdmissionPlugin]) -> None:
        self.plugins = list(plugins)

    async def admit(self, attrs: AdmissionAttributes) -> None:
        """Admit ``attrs``; on refusal the failure hooks already ran when this raises."""
        try:
            for plugin in self.plugins:
                if plugin.mutating:
                    await plugin.admit(attrs)
            for plugin in self.plugins:
                if not plugin.mutating:
                    await plugin.admit(attrs)
        except BaseException:
            await self.finish(attrs, ok=False)
            raise

    async def finish(self, attrs: AdmissionAttributes, *, ok: bool) -> None:
        """Run the success or failure hooks of ``attrs`` (once; later calls do nothing)."""
        if attrs.finished:
            return
        attrs.finished = True
        hooks = attrs.success_hooks if ok else attrs.failure_hooks
        for hook in hooks:
            try:
                await hook()
            except Exception:  # a hook's failure must not change the request's outcome
                log.exception("admission %s hook failed", "success" if ok else "failure")


class _Moved(Exception):
    """The object changed between admission and the compare-and-swap: admit again."""


async def admitted_update(
    chain: AdmissionChain,
    store: Any,
    attrs: AdmissionAttributes,
    mutate: Callable[[dict[str, Any]], Any],
    *,
    subresource: str = "",
) -> dict[str, Any]:
    """Update one object with admission run against the object it really replaces.

    Reads the current object, computes the new one with ``mutate`` (which receives a copy of
    the current object in the storage version and may raise a ``StatusError``), admits it
    (``attrs.obj``/``attrs.old_obj`` are set for the plugins), then writes it with a
    compare-and-swap on the revision that was admitted. Another writer in between makes the
    whole round run again, with fresh attributes hooks. A resourceVersion the caller pinned
    in the new object is honoured (409 when stale), as ``ResourceStore.update`` does.
    Returns the stored object. ``attrs`` ends up describing the admitted attempt."""
    namespace = attrs.namespace or None
    for _attempt in range(MAX_ADMITTED_UPDATE_ATTEMPTS):
        current = await store.get(namespace, attrs.name)
        current_rv = str((current.get("metadata") or {}).get("resourceVersion") or "")
        new = mutate(copy_json(current))
        if inspect.isawaitable(new):  # an async mutate (a conversion webhook on the way)
            new = await new
        pinned_rv = str((new.get("metadata") or {}).get("resourceVersion") or "")
        if pinned_rv and pinned_rv != current_rv:
            raise Conflict.stale(attrs.resource, attrs.group, attrs.name)
        attrs.obj = new
        attrs.old_obj = current
        attrs.success_hooks.clear()
        attrs.failure_hooks.clear()
        attrs.finished = False
        await chain.admit(attrs)
        admitted = attrs.obj

        def fixed(
            latest: dict[str, Any],
            admitted: dict[str, Any] = admitted,
            current_rv: str = current_rv,
        ) -> dict[str, Any]:
            latest_rv = str((latest.get("metadata") or {}).get("resourceVersion") or "")
            if latest_rv != current_rv:
                raise _Moved()
            out = copy_json(admitted)
            out.setdefault("metadata", {})["resourceVersion"] = current_rv
            return out

        try:
            updated = await store.guaranteed_update(
                namespace,
                attrs.name,
                fixed,
                subresource=subresource,
                dry_run=attrs.dry_run,
                mutate_reads_only=True,  # fixed only reads latest's resourceVersion
                known=current,
            )
        except _Moved:
            await chain.finish(attrs, ok=False)
            if pinned_rv:
                raise Conflict.stale(attrs.resource, attrs.group, attrs.name) from None
            continue
        except BaseException:
            await chain.finish(attrs, ok=False)
            raise
        await chain.finish(attrs, ok=True)
        return updated
    raise Conflict.stale(attrs.resource, attrs.group, attrs.name)
