"""The request side of field management: which manager, which schema, which operation.

Owns ``FieldManager``, the one object the resource handlers call on every write:
``on_write`` (create/update/non-apply patch -> managedFields updated), ``apply`` (an apply
patch -> the merged object, conflicts raised), ``schema`` (a kind's schema for strategic
merge patch) and ``is_custom`` (strategic merge patch is refused for custom resources).

Manager names: the ``fieldManager`` query parameter, else the User-Agent up to its first
'/' (upstream's default); apply requires an explicit one. ``force`` is only valid on apply.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sampan.api.defaults import apply_defaults
from sampan.api.errors import BadRequest, Invalid
from sampan.api.jsonwire import copy_json
from sampan.apiserver.apply.managed import (
    ApplyConflict,
    field_set,
    server_side_apply,
    track_update,
)

if TYPE_CHECKING:
    from aiohttp import web

    from sampan.api.resources import ResourceInfo
    from sampan.apiserver.openapi import OpenAPI
    from sampan.apiserver.openapi_data import SchemaView

__all__ = ["FieldManager"]

MAX_MANAGER_LENGTH = 128
KUBECTL_MANAGER = "kubectl"
"""kubectl apply --server-side's default manager: the one the last-applied upgrade serves."""
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def _annotations(obj: dict[str, Any] | None) -> dict[str, Any]:
    if not isinstance(obj, dict):
        return {}
    annotations = (obj.get("metadata") or {}).get("annotations")
    return annotations if isinstance(annotations, dict) else {}


def _last_applied(live: dict[str, Any] | None) -> dict[str, Any] | None:
    text = _annotations(live).get(LAST_APPLIED)
    if not isinstance(text, str):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) and value.get("kind") else None


def _sync_last_applied(result: dict[str, Any], applied: dict[str, Any]) -> None:
    """Keep an existing last-applied annotation equal to what kubectl applied server-side,
    so a later client-side apply computes its three-way patch from the right base."""
    annotations = _annotations(result)
    if LAST_APPLIED not in annotations:
        return
    config = copy_json(applied)
    config_annotations = _annotations(config)
    config_annotations.pop(LAST_APPLIED, None)
    annotations[LAST_APPLIED] = json.dumps(config, separators=(",", ":")) + "\n"


def _defaulted(info: ResourceInfo) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def normalize(obj: dict[str, Any]) -> dict[str, Any]:
        result = copy_json(obj)
        apply_defaults(info, result)
        return result

    return normalize


def _flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "").lower() in ("1", "true", "yes")


class FieldManager:
    def __init__(self, openapi: OpenAPI | None) -> None:
        self._openapi = openapi

    def schema(self, info: ResourceInfo) -> SchemaView | None:
        if self._openapi is None:
            return None
        return self._openapi.schema_for(info.group, info.version, info.kind)

    def is_custom(self, info: ResourceInfo) -> bool:
        return self._openapi is not None and self._openapi.is_custom(
            info.group, info.version, info.kind
        )

    def manager(self, request: web.Request, *, apply: bool = False) -> str:
        manager = request.query.get("fieldManager", "")
        if len(manager) > MAX_MANAGER_LENGTH:
            raise Invalid(
                f'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Too long: may not be '
                f"more than {MAX_MANAGER_LENGTH} bytes"
            )
        if manager or apply:
            return manager
        agent = request.headers.get("User-Agent", "")
        return agent.split("/", 1)[0].strip()[:MAX_MANAGER_LENGTH]

    def check_force(self, request: web.Request, *, apply: bool) -> bool:
        force = _flag(request, "force")
        if force and not apply:
            raise Invalid(
                'PatchOptions.meta.k8s.io "" is invalid: force: Forbidden: may not be '
                "specified for non-apply patch"
            )
        return force

    def on_write(
        self,
        request: web.Request,
        info: ResourceInfo,
        old: dict[str, Any] | None,
        new: dict[str, Any],
        *,
        subresource: str = "",
        copy_new: bool = False,
    ) -> dict[str, Any]:
        """``new`` with managedFields updated for this create/update/patch request.

        The result shares nested values with ``new``; ``copy_new`` deep-copies it first, for
        a caller that reuses ``new`` across retries (the store's strategies edit in place)."""
        return track_update(
            old,
            copy_json(new) if copy_new else new,
            manager=self.manager(request),
            api_version=info.api_version,
            schema=self.schema(info),
            subresource=subresource,
            has_status=info.subresource("status") is not None,
            normalize=_defaulted(info),
        )

    @staticmethod
    def check_type(info: ResourceInfo, applied: dict[str, Any]) -> None:
        """kube-apiserver's version check, with Go's GroupVersionKind.String(): the first
        thing an apply configuration meets after YAML decoding, so a non-string apiVersion
        or kind reads as empty here rather than failing the typed decoding."""
        group, version, kind = _applied_gvk(applied)
        if (group, version, kind) != (info.group, info.version, info.kind):
            raise BadRequest(f"invalid object type: {group}/{version}, Kind={kind}")

    def apply(
        self,
        request: web.Request,
        info: ResourceInfo,
        live: dict[str, Any] | None,
        applied: dict[str, Any],
        *,
        subresource: str = "",
    ) -> dict[str, Any]:
        """The object after this apply request (``live`` None: the object is created)."""
        self.check_type(info, applied)
        manager = self.manager(request, apply=True)
        force = self.check_force(request, apply=True)

        def run(base: dict[str, Any] | None, config: dict[str, Any], forced: bool) -> Any:
            return server_side_apply(
                base,
                config,
                manager=manager,
                api_version=info.api_version,
                schema=self.schema(info),
                force=forced,
                subresource=subresource,
                has_status=info.subresource("status") is not None,
                normalize=_defaulted(info),
            )

        try:
            result = run(live, applied, force)
        except ApplyConflict as conflict:
            # kubectl's client-side -> server-side apply upgrade, as upstream: conflicts that
            # all lie within the last-applied-configuration's fields are taken over.
            last_applied = _last_applied(live) if manager == KUBECTL_MANAGER else None
            if last_applied is None:
                raise
            allowed = field_set(
                last_applied,
                self.schema(info),
                subresource=subresource,
                has_status=info.subresource("status") is not None,
            )
            if not conflict.paths <= allowed:
                raise
            result = run(live, applied, True)
        if manager == KUBECTL_MANAGER:
            _sync_last_applied(result, applied)
        return result


def _applied_gvk(applied: dict[str, Any]) -> tuple[str, str, str]:
    """(group, version, kind) of an apply configuration as an unstructured object reads
    them: a missing or non-string field is empty, and an apiVersion with more than one
    ``/`` gives an empty group-version-kind."""
    api_version = applied.get("apiVersion")
    kind = applied.get("kind")
    api_version = api_version if isinstance(api_version, str) else ""
    kind = kind if isinstance(kind, str) else ""
    if api_version.count("/") > 1:
        return "", "", ""
    group, _, version = api_version.rpartition("/")
    return group, version, kind
