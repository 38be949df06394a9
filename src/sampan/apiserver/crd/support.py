"""``CustomResources``: what the request handlers ask about custom resources and request bodies.

The CRD controller fills it (``set_crd``/``remove_crd``/``set_terminating``); the handlers call

* ``prepare_body(request, info, obj, operation=..., subresource=...)`` on every object a write
  is about to store (create and update bodies, the result of a patch): field validation
  (``fieldValidation`` Strict/Warn/Ignore: unknown fields of built-in kinds against their
  definitions, of custom resources by pruning against the CRD schema), then for custom
  resources defaulting and schema validation, and for CRDs themselves the names defaults and
  the structural-schema checks. Warnings go to the request with ``add_warning``;
* ``drop_unknown_fields(request, info, obj)``: the field-validation step alone, for partial
  objects (a server-side apply configuration before it is merged);
* ``renderer(info, ...)`` for a Table renderer that prints a version's
  ``additionalPrinterColumns``;
* ``scale_paths(info)`` for the scale subresource of a custom resource.

Invariants: it never performs I/O; a lookup only answers for the exact ResourceInfo the
registry currently serves, so a stale handler never sees another CRD's schema.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from sampan.api import fielderrors as fe
from sampan.api.errors import BadRequest, Cause, Invalid, MethodNotSupported
from sampan.api.printing import crd_table
from sampan.api.resources import ResourceInfo
from sampan.apiserver.crd import celrules
from sampan.apiserver.crd import schema as crd_schema
from sampan.apiserver.crd.conversion import ConversionFailed, WebhookConversion
from sampan.apiserver.crd.fieldvalidation import (
    BuiltinSchemas,
    parse_directive,
    strict_error,
    unknown_field_warning,
)
from sampan.apiserver.crd.model import ScalePaths, ServedVersion, crd_names
from sampan.apiserver.responses import (
    Converter,
    Renderer,
    warning_header,
    warning_text_ok,
)

__all__ = [
    "WARNINGS_KEY",
    "CustomResourceRenderer",
    "CustomResources",
    "add_warning",
    "request_warnings",
    "warning_header",
]

WARNINGS_KEY: Any = (
    web.RequestKey("sampan.warnings", list) if hasattr(web, "RequestKey") else "sampan.warnings"
)
"""Where a request collects the warnings its response sends as ``Warning: 299`` headers
(a typed request key on aiohttp >= 3.12, a plain string key before)."""

_CRD_KEY = ("apiextensions.k8s.io", "CustomResourceDefinition")

JSONObj = dict[str, Any]


def add_warning(request: web.Request, message: str) -> None:
    """Queue one warning for the response (duplicates are sent once)."""
    if not warning_text_ok(message):
        return  # upstream drops a warning with control characters (it cannot be a header)
    warnings: list[str] = request.setdefault(WARNINGS_KEY, [])
    if message not in warnings:
        warnings.append(message)


def request_warnings(request: web.Request) -> list[str]:
    return list(request.get(WARNINGS_KEY) or ())


class CustomResourceRenderer(Renderer):
    """Tables of a custom resource version print its ``additionalPrinterColumns``; every
    object read from storage is first defaulted with the storage version's schema
    (``read_defaults``), as kube-apiserver's storage decoding does. Watch bookmarks carry no
    object and are not defaulted."""

    def __init__(
        self,
        info: Any,
        output: Any,
        convert: Converter | None,
        columns: Sequence[Mapping[str, Any]],
        *,
        include_object: str = "Metadata",
        read_defaults: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(info, output, convert, include_object=include_object)
        self.columns = list(columns)
        self._read_defaults = read_defaults

    @property
    def passthrough(self) -> bool:
        return self._read_defaults is None and super().passthrough

    def _defaulted(self, obj: dict[str, Any]) -> dict[str, Any]:
        if self._read_defaults is None:
            return obj
        obj = copy.deepcopy(obj)  # the stored object may be shared (watch cache)
        crd_schema.apply_defaults(obj, self._read_defaults)
        return obj

    def object(self, obj: dict[str, Any]) -> dict[str, Any]:
        return super().object(self._defaulted(obj))

    def watch_table(self, obj: dict[str, Any]) -> dict[str, Any]:
        return super().watch_table(self._defaulted(obj))

    def table(
        self,
        objs: Sequence[dict[str, Any]],
        *,
        resource_version: str = "",
        continue_token: str | None = None,
        remaining: int | None = None,
        no_headers: bool = False,
    ) -> dict[str, Any]:
        try:
            table = crd_table(
                self.columns,
                list(objs),
                include_object=self.include_object,
                now=datetime.now(UTC),
                no_headers=no_headers,
                resource_version=resource_version or None,
                continue_token=continue_token,
                remaining_item_count=remaining,
            )
        except ValueError as exc:
            raise BadRequest(str(exc)) from exc
        if self.output.group_version:
            table["apiVersion"] = self.output.group_version
        return table


class CustomResources:
    """The served custom resource versions (see the module docstring)."""

    def __init__(self, builtin: BuiltinSchemas | None) -> None:
        self._builtin = builtin
        self.conversion: WebhookConversion | None = None
        """Conversion through CRD conversion webhooks (set once the webhook caller exists)."""
        self._versions: dict[tuple[str, str, str], ServedVersion] = {}
        self._by_crd: dict[str, list[tuple[str, str, str]]] = {}
        self._terminating: set[str] = set()

    # --- the controller's side -------------------------------------------------------------

    def set_crd(self, crd_name: str, versions: Sequence[ServedVersion]) -> None:
        versions_by_key = dict(self._versions)
        for key in self._by_crd.get(crd_name, ()):
            versions_by_key.pop(key, None)
        keys = []
        for version in versions:
            key = (version.info.group, version.info.version, version.info.plural)
            versions_by_key[key] = version
            keys.append(key)
        self._versions = versions_by_key
        self._by_crd[crd_name] = keys

    def remove_crd(self, crd_name: str) -> None:
        self.set_crd(crd_name, ())
        self._by_crd.pop(crd_name, None)
        self._terminating.discard(crd_name)

    def set_terminating(self, crd_name: str, terminating: bool) -> None:
        if terminating:
            self._terminating.add(crd_name)
        else:
            self._terminating.discard(crd_name)

    # --- the handlers' side -----------------------------------------------------------------

    def lookup(self, info: ResourceInfo) -> ServedVersion | None:
        version = self._versions.get((info.group, info.version, info.plural))
        if version is None or version.info != info:
            return None
        return version

    def conversion_webhook(self, info: ResourceInfo) -> dict[str, Any] | None:
        """``spec.conversion.webhook`` of the CRD serving ``info`` when its strategy is
        ``Webhook`` (None otherwise)."""
        version = self.lookup(info)
        return version.conversion_webhook if version is not None else None

    async def convert(
        self, info: ResourceInfo, objects: list[JSONObj], api_version: str
    ) -> list[JSONObj]:
        """``objects`` of ``info``'s CRD in ``api_version``: through its conversion webhook
        when it has one (ConversionFailed, a 500, when that fails), else unchanged (the
        handlers' synchronous converter sets ``apiVersion``)."""
        webhook = self.conversion_webhook(info)
        if webhook is None:
            return objects
        if self.conversion is None:
            raise ConversionFailed(
                f"conversion webhook for {info.api_version}, Kind={info.kind} failed: "
                "no conversion webhook client"
            )
        return await self.conversion.convert(objects, api_version, webhook)

    def version_for(self, group: str, version: str, plural: str) -> ServedVersion | None:
        """The served version of a custom resource by group, version and plural."""
        return self._versions.get((group, version, plural))

    def scale_paths(self, info: ResourceInfo) -> ScalePaths | None:
        version = self.lookup(info)
        return version.scale if version is not None else None

    def renderer(
        self,
        info: ResourceInfo,
        output: Any,
        convert: Converter | None,
        *,
        include_object: str = "Metadata",
        request: web.Request | None = None,
    ) -> Renderer | None:
        """The renderer of a custom resource version (None for other kinds); a request to a
        deprecated version gets the version's deprecation warning."""
        version = self.lookup(info)
        if version is None:
            return None
        if request is not None and version.deprecation_warning:
            add_warning(request, version.deprecation_warning)
        return CustomResourceRenderer(
            info,
            output,
            convert,
            version.columns,
            include_object=include_object,
            read_defaults=version.read_defaults,
        )

    def prepare_body(
        self,
        request: web.Request,
        info: ResourceInfo,
        obj: JSONObj,
        *,
        operation: str,
        subresource: str = "",
    ) -> JSONObj:
        """The object to store for this write (mutated in place and returned); raises
        BadRequest (Strict unknown fields), Invalid (schema) or MethodNotSupported."""
        version = self.lookup(info)
        if version is not None and operation == "CREATE" and version.crd_name in self._terminating:
            raise MethodNotSupported(
                "create not allowed while custom resource definition is terminating"
            )
        self.drop_unknown_fields(request, info, obj)
        if version is not None:
            crd_schema.apply_defaults(obj, version.schema)
            self._validate_custom(version, obj, subresource=subresource)
        elif (info.group, info.kind) == _CRD_KEY:
            prepare_crd(obj, status_only=subresource == "status")
        return obj

    def drop_unknown_fields(
        self, request: web.Request, info: ResourceInfo, obj: JSONObj
    ) -> JSONObj:
        """Field validation alone (no defaults, no schema checks): remove the fields the kind
        does not declare (pruning, for custom resources) and apply the request's
        ``fieldValidation`` directive: Strict -> BadRequest, Warn -> one warning per field.
        Usable on partial objects such as a server-side apply configuration."""
        directive = parse_directive(request.query)
        version = self.lookup(info)
        if version is not None:
            unknown = self._prune_custom(version, obj)
        else:
            unknown = self._drop_builtin_unknown(info, obj)
        if unknown:
            if directive == "Strict":
                raise strict_error(info.kind, info.version, unknown)
            if directive == "Warn":
                for path in unknown:
                    add_warning(request, unknown_field_warning(path))
        return obj

    def _drop_builtin_unknown(self, info: ResourceInfo, obj: JSONObj) -> list[str]:
        if self._builtin is None:
            return []
        schema = self._builtin.schema_for(info.group, info.version, info.kind)
        return self._builtin.unknown_fields(schema, obj, drop=True)

    def _prune_custom(self, version: ServedVersion, obj: JSONObj) -> list[str]:
        unknown: list[str] = []
        metadata = obj.get("metadata")
        if self._builtin is not None and isinstance(metadata, dict):
            unknown.extend(
                self._builtin.unknown_fields(
                    self._builtin.object_meta(), metadata, drop=True, path="metadata"
                )
            )
        if version.schema is not None and not version.preserve_unknown_fields:
            unknown.extend(crd_schema.prune(obj, version.schema))
        return unknown

    def _validate_custom(self, version: ServedVersion, obj: JSONObj, *, subresource: str) -> None:
        if version.schema is None:
            return
        schema = version.schema
        view = obj
        if version.has_status and subresource != "status":
            # The store keeps the stored status on main-resource writes (and drops it on
            # create): what the client sent there is never stored, so never judged.
            schema = copy.copy(schema)
            properties = dict(schema.get("properties") or {})
            properties.pop("status", None)
            schema["properties"] = properties
            schema["required"] = [r for r in schema.get("required") or [] if r != "status"]
            view = {k: v for k, v in obj.items() if k != "status"}
        causes = crd_schema.validate(view, schema)
        if causes:
            info = version.info
            name = str((obj.get("metadata") or {}).get("name") or "")
            raise _invalid(f"{info.kind}.{info.group}", info.kind, info.group, name, causes)


def invalid_error(
    qualified_kind: str, kind: str, group: str, name: str, causes: list[Cause]
) -> Invalid:
    """``<Kind>.<group> "<name>" is invalid: <errors>`` (422) with ``causes``."""
    return _invalid(qualified_kind, kind, group, name, causes)


def _invalid(qualified_kind: str, kind: str, group: str, name: str, causes: list[Cause]) -> Invalid:
    parts = [fe.error_string(c) for c in causes]
    summary = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
    return Invalid(
        f'{qualified_kind} "{name}" is invalid: {summary}',
        name=name,
        group=group,
        kind=kind,
        causes=causes,
    )


def simple_json_path_errors(value: str, path: str) -> list[Cause]:
    """Upstream's check of printer-column and scale paths: a JSON path in dot notation."""
    if not value:
        return [fe.invalid(path, value, "must not be empty")]
    if not value.startswith("."):
        return [fe.invalid(path, value, "must be a simple json path starting with .")]
    return []


def _scale_errors(version: Mapping[str, Any], path: str) -> list[Cause]:
    subresources = version.get("subresources")
    scale = subresources.get("scale") if isinstance(subresources, dict) else None
    if not isinstance(scale, dict):
        return []
    causes: list[Cause] = []
    for key, prefixes, where in (
        ("specReplicasPath", (".spec.",), ".spec"),
        ("statusReplicasPath", (".status.",), ".status"),
        ("labelSelectorPath", (".spec.", ".status."), "either .spec or .status"),
    ):
        value = scale.get(key)
        if not value:
            if key != "labelSelectorPath":
                causes.append(fe.required(f"{path}.{key}"))
            continue
        value = str(value)
        errors = simple_json_path_errors(value, f"{path}.{key}")
        if errors:
            causes.extend(errors)
        elif not value.startswith(prefixes):
            causes.append(
                fe.invalid(f"{path}.{key}", value, f"should be a json path under {where}")
            )
    return causes


_COLUMN_TYPES = ("boolean", "date", "integer", "number", "string")
_COLUMN_FORMATS = ("byte", "date", "date-time", "double", "float", "int32", "int64", "password")


def _column_errors(column: Mapping[str, Any], path: str) -> list[Cause]:
    """A printer column as upstream checks it (the field path says ``JSONPath``, the name of
    the field in the internal API, as kube-apiserver reports it)."""
    causes: list[Cause] = []
    if not column.get("name"):
        causes.append(fe.required(f"{path}.name"))
    column_type = column.get("type")
    types = ",".join(_COLUMN_TYPES)
    if not column_type:
        causes.append(fe.required(f"{path}.type", f"must be one of {types}"))
    elif column_type not in _COLUMN_TYPES:
        causes.append(fe.invalid(f"{path}.type", column_type, f"must be one of {types}"))
    column_format = column.get("format")
    if column_format and column_format not in _COLUMN_FORMATS:
        causes.append(
            fe.invalid(
                f"{path}.format", column_format, f"must be one of {','.join(_COLUMN_FORMATS)}"
            )
        )
    json_path = column.get("jsonPath")
    if not json_path:
        causes.append(fe.required(f"{path}.JSONPath"))
    else:
        causes.extend(simple_json_path_errors(str(json_path), f"{path}.JSONPath"))
    return causes


def prepare_crd(crd: JSONObj, *, status_only: bool = False) -> None:
    """Defaults and structural-schema checks of a CRD body (Invalid when not servable).
    A write of the status subresource is checked for its status only, as upstream does (the
    spec it carries is the stored one)."""
    spec = crd.get("spec")
    if not isinstance(spec, dict):
        return
    if status_only:
        _raise_if(crd, _stored_version_errors(crd, spec))
        return
    names = spec.get("names")
    if isinstance(names, dict) and names.get("kind"):
        defaulted = crd_names(crd)
        names["singular"] = defaulted["singular"]
        names["listKind"] = defaulted["listKind"]
    causes: list[Cause] = []
    preserve = bool(spec.get("preserveUnknownFields"))
    if preserve:
        causes.append(
            fe.invalid(
                "spec.preserveUnknownFields",
                True,
                "cannot set to true, set x-kubernetes-preserve-unknown-fields to true in "
                "spec.versions[*].schema instead",
            )
        )
    for i, version in enumerate(spec.get("versions") or []):
        if not isinstance(version, dict):
            continue
        path = f"spec.versions[{i}].schema.openAPIV3Schema"
        schema = (
            (version.get("schema") or {}).get("openAPIV3Schema")
            if isinstance(version.get("schema"), dict)
            else None
        )
        subresources = version.get("subresources")
        status_enabled = isinstance(subresources, dict) and isinstance(
            subresources.get("status"), dict
        )
        causes.extend(crd_schema.structural_errors(schema, path, status_enabled=status_enabled))
        causes.extend(celrules.compile_errors(schema, path))
        for j, column in enumerate(version.get("additionalPrinterColumns") or []):
            if isinstance(column, dict):
                causes.extend(
                    _column_errors(column, f"spec.versions[{i}].additionalPrinterColumns[{j}]")
                )
        causes.extend(_scale_errors(version, f"spec.versions[{i}].subresources.scale"))
    causes.extend(_stored_version_errors(crd, spec))
    _raise_if(crd, causes)


def _stored_version_errors(crd: JSONObj, spec: JSONObj) -> list[Cause]:
    # A version objects may still be stored in cannot go (the update body carries the status
    # it was made from: a patch of the current object, or what a client read and changed).
    names = {v.get("name") for v in spec.get("versions") or [] if isinstance(v, dict)}
    status = crd.get("status")
    stored = status.get("storedVersions") if isinstance(status, dict) else None
    return [
        fe.invalid(f"status.storedVersions[{i}]", stored_version, "must appear in spec.versions")
        for i, stored_version in enumerate(stored if isinstance(stored, list) else [])
        if stored_version not in names
    ]


def _raise_if(crd: JSONObj, causes: list[Cause]) -> None:
    if causes:
        name = str((crd.get("metadata") or {}).get("name") or "")
        raise _invalid(
            "CustomResourceDefinition.apiextensions.k8s.io",
            "CustomResourceDefinition",
            "apiextensions.k8s.io",
            name,
            causes,
        )
