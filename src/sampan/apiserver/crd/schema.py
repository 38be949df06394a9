"""Structural OpenAPI v3 schemas of custom resources: pruning, defaulting, validation, and the
checks that make a CRD's schema structural.

Semantics follow apiextensions-apiserver (written from its documentation, not its code):

* **Pruning** drops every field the schema does not declare: an object node keeps the keys in
  its ``properties`` (or every key, each pruned by ``additionalProperties`` when that is a
  schema), unless ``x-kubernetes-preserve-unknown-fields: true``; arrays prune their items.
  ``x-kubernetes-embedded-resource`` nodes always keep ``apiVersion``, ``kind``, ``metadata``.
  At the root ``apiVersion``, ``kind`` and ``metadata`` are never pruned (metadata is
  ObjectMeta's business). Only the structural part counts: ``allOf``/``anyOf``/``oneOf``/``not``
  never make a field known.
* **Defaulting**: a ``null`` where the schema is not ``nullable`` is dropped first, then
  every missing property with a ``default`` gets a copy of it, depth first.
* **Validation** of types, ``nullable``, ``required``, ``enum``, bounds, lengths, ``pattern``,
  item and property counts, ``uniqueItems``, ``x-kubernetes-int-or-string``, a few formats,
  and the logical junctors. ``pattern`` is RE2 with Go's semantics (``sampan.api.goregexp``),
  as kube-apiserver evaluates it. Error causes are worded as kube-apiserver words them
  (``spec.replicas: Invalid value: "string": spec.replicas in body must be of type integer:
  "string"``). CEL rules (``x-kubernetes-validations``) are not evaluated.
* **CRD checks** (``structural_errors``): the structural-schema rules, default checks and
  OpenAPI keyword checks of kube-apiserver 1.32, with its field paths and messages.

Invariants: functions never mutate a schema; ``prune`` and ``default`` mutate only the object
they are given; paths are rendered as ``spec.items[0].name`` (kube-apiserver's field paths).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sampan.api import fielderrors as fe
from sampan.api import goregexp, names
from sampan.api.errors import Cause

__all__ = [
    "ROOT_KEPT_FIELDS",
    "apply_defaults",
    "prune",
    "structural_errors",
    "validate",
]

Schema = Mapping[str, Any]
JSONObj = dict[str, Any]

ROOT_KEPT_FIELDS = ("apiVersion", "kind", "metadata")
_EMBEDDED_KEPT = ("apiVersion", "kind", "metadata")
_PRESERVE = "x-kubernetes-preserve-unknown-fields"
_INT_OR_STRING = "x-kubernetes-int-or-string"
_EMBEDDED = "x-kubernetes-embedded-resource"
_TYPES = ("object", "array", "string", "integer", "number", "boolean")
_ALLOWED_METADATA_KEYS = ("name", "generateName")


def _child(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _index(path: str, i: int) -> str:
    return f"{path}[{i}]"


def _key(path: str, key: str) -> str:
    return f"{path}[{key}]"


# --- pruning -------------------------------------------------------------------------------


def prune(obj: JSONObj, schema: Schema | None, *, root: bool = True) -> list[str]:
    """Remove undeclared fields from ``obj`` in place; return their paths (``spec.foo``), in
    document order. ``schema`` None means "no schema": nothing is pruned."""
    if schema is None:
        return []
    pruned: list[str] = []
    _prune_object(obj, schema, "", pruned, root=root)
    return pruned


def _prune_value(value: Any, schema: Schema, path: str, pruned: list[str]) -> None:
    if isinstance(value, dict):
        _prune_object(value, schema, path, pruned, root=False)
    elif isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, Mapping):
            for i, item in enumerate(value):
                _prune_value(item, items, _index(path, i), pruned)


def _prune_object(
    obj: JSONObj, schema: Schema, path: str, pruned: list[str], *, root: bool
) -> None:
    properties = schema.get("properties")
    additional = schema.get("additionalProperties")
    preserve = bool(schema.get(_PRESERVE))
    embedded = bool(schema.get(_EMBEDDED)) or root
    for key in list(obj):
        if embedded and key in _EMBEDDED_KEPT:
            if key == "metadata" and not root and isinstance(obj[key], dict):
                continue  # an embedded object's metadata is ObjectMeta: kept as given
            continue
        sub: Schema | None = None
        if isinstance(properties, Mapping) and key in properties:
            sub = properties[key]
        elif isinstance(additional, Mapping):
            sub = additional
        elif additional is True or preserve:
            continue
        if sub is None:
            del obj[key]
            pruned.append(_child(path, key))
            continue
        child_path = _child(path, key) if isinstance(properties, Mapping) else _key(path, key)
        _prune_value(obj[key], sub, child_path, pruned)


# --- defaulting ----------------------------------------------------------------------------


def apply_defaults(obj: JSONObj, schema: Schema | None) -> None:
    """Drop non-nullable nulls and fill ``default`` values, in place (depth first)."""
    if schema is None:
        return
    _default_object(obj, schema)


def _default_value(value: Any, schema: Schema) -> None:
    if isinstance(value, dict):
        _default_object(value, schema)
    elif isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, Mapping):
            for item in value:
                _default_value(item, items)


def _default_object(obj: JSONObj, schema: Schema) -> None:
    properties = schema.get("properties")
    additional = schema.get("additionalProperties")
    if isinstance(properties, Mapping):
        for key, sub in properties.items():
            if not isinstance(sub, Mapping):
                continue
            if key in obj and obj[key] is None and not sub.get("nullable"):
                del obj[key]
            if key not in obj and "default" in sub:
                obj[key] = copy.deepcopy(sub["default"])
            if key in obj:
                _default_value(obj[key], sub)
    elif isinstance(additional, Mapping):
        for key in list(obj):
            if obj[key] is None and not additional.get("nullable"):
                del obj[key]
            else:
                _default_value(obj[key], additional)


# --- validation ----------------------------------------------------------------------------

_FORMAT_CHECKS: dict[str, re.Pattern[str]] = {
    "int32": re.compile(r"^-?[0-9]+$"),
    "uuid": re.compile(
        r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$"
    ),
    "byte": re.compile(r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"),
    "date": re.compile(r"^\d{4}-\d{2}-\d{2}$"),
    "hostname": re.compile(
        r"^[a-zA-Z0-9]([-a-zA-Z0-9]{0,61}[a-zA-Z0-9])?(\.[a-zA-Z0-9]([-a-zA-Z0-9]{0,61}[a-zA-Z0-9])?)*$"
    ),
}


def _type_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "integer" if value.is_integer() else "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _number_text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def validate(obj: JSONObj, schema: Schema | None) -> list[Cause]:
    """Causes for every way ``obj`` breaks ``schema``. Of the root metadata only what the
    schema may constrain (name, generateName) is checked: ObjectMeta validation is the
    store's."""
    if schema is None:
        return []
    causes: list[Cause] = []
    root_schema = dict(schema)
    properties = dict(root_schema.get("properties") or {})
    for key in ROOT_KEPT_FIELDS:
        properties.pop(key, None)
    root_schema["properties"] = properties
    if "required" in root_schema:
        root_schema["required"] = [
            r for r in root_schema["required"] if r not in ("apiVersion", "kind", "metadata")
        ]
    view = {k: v for k, v in obj.items() if k not in ROOT_KEPT_FIELDS}
    _validate(view, root_schema, "", causes)
    _embedded_errors(view, root_schema, "", causes)
    # The schema may constrain metadata.name and metadata.generateName (nothing else there).
    meta_schema = (schema.get("properties") or {}).get("metadata")
    metadata = obj.get("metadata")
    if isinstance(meta_schema, Mapping) and isinstance(metadata, dict):
        for key in _ALLOWED_METADATA_KEYS:
            sub = (meta_schema.get("properties") or {}).get(key)
            if isinstance(sub, Mapping) and isinstance(metadata.get(key), str):
                _validate(metadata[key], sub, f"metadata.{key}", causes)
    return causes


def _embedded_errors(value: Any, schema: Schema, path: str, causes: list[Cause]) -> None:
    """Type and object metadata of nested ``x-kubernetes-embedded-resource`` objects:
    ``apiVersion`` and ``kind`` are required and well-formed, metadata labels and
    annotations valid (after the schema errors, as upstream reports them)."""
    if isinstance(value, dict):
        if schema.get(_EMBEDDED) and path:
            _embedded_resource_errors(value, path, causes)
        properties = _props(schema)
        additional = schema.get("additionalProperties")
        for key, item in value.items():
            if key in properties and isinstance(properties[key], Mapping):
                _embedded_errors(item, properties[key], _child(path, key), causes)
            elif isinstance(additional, Mapping):
                _embedded_errors(item, additional, _key(path, key), causes)
    elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for i, item in enumerate(value):
            _embedded_errors(item, schema["items"], _index(path, i), causes)


def _embedded_resource_errors(value: JSONObj, path: str, causes: list[Cause]) -> None:
    for key in ("apiVersion", "kind"):
        if key not in value:
            causes.append(fe.required(_child(path, key), "must not be empty"))
    api_version = value.get("apiVersion", "")
    if "apiVersion" in value:
        where = _child(path, "apiVersion")
        if not isinstance(api_version, str):
            causes.append(fe.invalid(where, api_version, "must be a string"))
        elif not api_version:
            causes.append(fe.invalid(where, api_version, "must not be empty"))
        elif api_version.count("/") > 1:
            causes.append(
                fe.invalid(where, api_version, f"unexpected GroupVersion string: {api_version}")
            )
    kind = value.get("kind", "")
    if "kind" in value:
        where = _child(path, "kind")
        if not isinstance(kind, str):
            causes.append(fe.invalid(where, kind, "must be a string"))
        elif not kind:
            causes.append(fe.invalid(where, kind, "must not be empty"))
        elif problems := names.is_dns1035_label(kind.lower()):
            causes.append(
                fe.invalid(
                    where,
                    kind,
                    "may have mixed case, but should otherwise match: " + ",".join(problems),
                )
            )
    metadata = value.get("metadata")
    if isinstance(metadata, dict):
        meta_path = _child(path, "metadata")
        causes.extend(names.validate_labels(metadata.get("labels"), _child(meta_path, "labels")))
        causes.extend(
            names.validate_annotations(
                metadata.get("annotations"), _child(meta_path, "annotations")
            )
        )


def _validate(value: Any, schema: Schema, path: str, causes: list[Cause]) -> None:
    body = path or "<root>"
    if value is None:
        if not schema.get("nullable") and (schema.get("type") or schema.get(_INT_OR_STRING)):
            if not schema.get(_PRESERVE) or schema.get("type"):
                causes.append(
                    fe.invalid(
                        path,
                        "null",
                        f'{body} in body must be of type {schema.get("type") or "string"}: "null"',
                    )
                )
        return
    actual = _type_of(value)
    wanted = schema.get("type")
    if schema.get(_INT_OR_STRING):
        if actual not in ("integer", "string"):
            causes.append(
                fe.invalid(
                    path, actual, f'{body} in body must be of type integer,string: "{actual}"'
                )
            )
            return
    elif wanted and wanted in _TYPES:
        ok = actual == wanted or (wanted == "number" and actual == "integer")
        if not ok:
            causes.append(
                fe.invalid(path, actual, f'{body} in body must be of type {wanted}: "{actual}"')
            )
            return
    enum = schema.get("enum")
    if isinstance(enum, list) and value not in enum:
        causes.append(
            fe.not_supported(
                path, value, [json.dumps(e) if not isinstance(e, str) else e for e in enum]
            )
        )
    if actual in ("integer", "number"):
        _validate_number(value, schema, path, body, causes)
    elif actual == "string":
        _validate_string(value, schema, path, body, causes)
    elif actual == "array":
        _validate_array(value, schema, path, body, causes)
    elif actual == "object":
        _validate_object(value, schema, path, body, causes)
    _validate_junctors(value, schema, path, body, causes)


def _validate_number(value: Any, schema: Schema, path: str, body: str, causes: list[Cause]) -> None:
    minimum = schema.get("minimum")
    if isinstance(minimum, int | float):
        if schema.get("exclusiveMinimum") and value <= minimum:
            causes.append(
                fe.invalid(
                    path, value, f"{body} in body should be greater than {_number_text(minimum)}"
                )
            )
        elif value < minimum:
            causes.append(
                fe.invalid(
                    path,
                    value,
                    f"{body} in body should be greater than or equal to {_number_text(minimum)}",
                )
            )
    maximum = schema.get("maximum")
    if isinstance(maximum, int | float):
        if schema.get("exclusiveMaximum") and value >= maximum:
            causes.append(
                fe.invalid(
                    path, value, f"{body} in body should be less than {_number_text(maximum)}"
                )
            )
        elif value > maximum:
            causes.append(
                fe.invalid(
                    path,
                    value,
                    f"{body} in body should be less than or equal to {_number_text(maximum)}",
                )
            )
    multiple = schema.get("multipleOf")
    if isinstance(multiple, int | float) and multiple > 0:
        quotient = value / multiple
        if abs(quotient - round(quotient)) > 1e-9:
            causes.append(
                fe.invalid(
                    path, value, f"{body} in body should be a multiple of {_number_text(multiple)}"
                )
            )


def _validate_string(value: str, schema: Schema, path: str, body: str, causes: list[Cause]) -> None:
    max_length = schema.get("maxLength")
    if isinstance(max_length, int) and len(value) > max_length:
        causes.append(fe.too_long(path, max_length))
    min_length = schema.get("minLength")
    if isinstance(min_length, int) and len(value) < min_length:
        causes.append(
            fe.invalid(path, value, f"{body} in body should be at least {min_length} chars long")
        )
    pattern = schema.get("pattern")
    if isinstance(pattern, str):
        try:
            matched = goregexp.search(pattern, value)
        except goregexp.GoRegexpError:
            matched = True  # the CRD check refuses bad patterns; never fail objects for one
        if not matched:
            causes.append(fe.invalid(path, value, f"{body} in body should match '{pattern}'"))
    fmt = schema.get("format")
    if isinstance(fmt, str) and value:
        if not _format_ok(fmt, value):
            causes.append(
                fe.invalid(
                    path, value, f"{body} in body must be of type {fmt}: {json.dumps(value)}"
                )
            )


def _format_ok(fmt: str, value: str) -> bool:
    if fmt == "date-time":
        try:
            datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            return False
        return True
    check = _FORMAT_CHECKS.get(fmt)
    return check is None or check.match(value) is not None


def _validate_array(
    value: list[Any], schema: Schema, path: str, body: str, causes: list[Cause]
) -> None:
    max_items = schema.get("maxItems")
    if isinstance(max_items, int) and len(value) > max_items:
        causes.append(fe.too_many(path, len(value), max_items))
    min_items = schema.get("minItems")
    if isinstance(min_items, int) and len(value) < min_items:
        causes.append(
            fe.invalid(path, value, f"{body} in body should have at least {min_items} items")
        )
    if schema.get("uniqueItems") or schema.get("x-kubernetes-list-type") == "set":
        seen: list[str] = []
        for i, item in enumerate(value):
            key = json.dumps(item, sort_keys=True)
            if key in seen:
                causes.append(fe.duplicate(_index(path, i), item))
            seen.append(key)
    if schema.get("x-kubernetes-list-type") == "map":
        keys = schema.get("x-kubernetes-list-map-keys") or []
        seen_keys: set[str] = set()
        for i, item in enumerate(value):
            if isinstance(item, dict):
                ident = json.dumps([item.get(k) for k in keys])
                if ident in seen_keys:
                    causes.append(fe.duplicate(_index(path, i), {k: item.get(k) for k in keys}))
                seen_keys.add(ident)
    items = schema.get("items")
    if isinstance(items, Mapping):
        for i, item in enumerate(value):
            _validate(item, items, _index(path, i), causes)


def _validate_object(
    value: JSONObj, schema: Schema, path: str, body: str, causes: list[Cause]
) -> None:
    for name in schema.get("required") or []:
        if name not in value:
            causes.append(fe.required(_child(path, name)))
    max_props = schema.get("maxProperties")
    if isinstance(max_props, int) and len(value) > max_props:
        causes.append(fe.too_many(path, len(value), max_props))
    min_props = schema.get("minProperties")
    if isinstance(min_props, int) and len(value) < min_props:
        causes.append(
            fe.invalid(path, value, f"{body} in body should have at least {min_props} properties")
        )
    properties = schema.get("properties")
    additional = schema.get("additionalProperties")
    for key, item in value.items():
        if isinstance(properties, Mapping) and key in properties:
            _validate(item, properties[key], _child(path, key), causes)
        elif isinstance(additional, Mapping):
            _validate(item, additional, _key(path, key), causes)


def _validate_junctors(
    value: Any, schema: Schema, path: str, body: str, causes: list[Cause]
) -> None:
    for sub in schema.get("allOf") or []:
        if isinstance(sub, Mapping):
            _validate(value, sub, path, causes)
    any_of = [s for s in schema.get("anyOf") or [] if isinstance(s, Mapping)]
    if any_of and not any(_matches(value, s, path) for s in any_of):
        causes.append(fe.invalid(path, value, f'{body} in body must be of "anyOf" the schemas'))
    one_of = [s for s in schema.get("oneOf") or [] if isinstance(s, Mapping)]
    if one_of and sum(1 for s in one_of if _matches(value, s, path)) != 1:
        causes.append(
            fe.invalid(path, value, f"{body} in body must validate one and only one schema (oneOf)")
        )
    not_schema = schema.get("not")
    if isinstance(not_schema, Mapping) and _matches(value, not_schema, path):
        causes.append(
            fe.invalid(path, value, f"{body} in body should not validate the schema (not)")
        )


def _matches(value: Any, schema: Schema, path: str) -> bool:
    found: list[Cause] = []
    _validate(value, schema, path, found)
    return not found


# --- CRD schema checks (CRD create/update) -------------------------------------------------
#
# kube-apiserver 1.32 checks a version's openAPIV3Schema in this order, and so do we:
#   1. with the status subresource, only some keywords at the root (and type object);
#   2. ``nullable`` is forbidden at the root;
#   3. the structural-schema invariants (errors sorted by their text, as upstream sorts them),
#      and only when those hold, the defaults (they must validate and be pruned already);
#   4. the OpenAPI keyword checks, node by node (junctors included).
# The "structural part" of a schema is what is reachable through properties, items and
# additionalProperties without entering allOf/anyOf/oneOf/not; inside a junctor ("value
# validation") only value constraints may appear, with one exception: the int-or-string form
# ``anyOf: [{type: integer}, {type: string}]`` (alone or as ``allOf[0]``).

_ROOT_LEVEL, _ITEM_LEVEL, _FIELD_LEVEL = "root", "item", "field"
_OPENAPI_TYPES = ("array", "boolean", "integer", "number", "object", "string")
_INT_OR_STRING_ANY_OF = [{"type": "integer"}, {"type": "string"}]
_META_FIELDS = ("metadata", "kind", "apiVersion")
_LIST_TYPES = ("atomic", "set", "map")
_MAP_TYPES = ("atomic", "granular")
_VALIDATION_REASONS = (
    "FieldValueDuplicate",
    "FieldValueForbidden",
    "FieldValueInvalid",
    "FieldValueRequired",
)
# Root keywords allowed with the status subresource (upstream names them by Go field).
_STATUS_ROOT_ALLOWED = {
    "description": "Description",
    "type": "Type",
    "format": "Format",
    "title": "Title",
    "maximum": "Maximum",
    "exclusiveMaximum": "ExclusiveMaximum",
    "minimum": "Minimum",
    "exclusiveMinimum": "ExclusiveMinimum",
    "maxLength": "MaxLength",
    "minLength": "MinLength",
    "pattern": "Pattern",
    "maxItems": "MaxItems",
    "minItems": "MinItems",
    "uniqueItems": "UniqueItems",
    "multipleOf": "MultipleOf",
    "required": "Required",
    "items": "Items",
    "properties": "Properties",
    "externalDocs": "ExternalDocs",
    "example": "Example",
    _PRESERVE: "XPreserveUnknownFields",
    "x-kubernetes-validations": "XValidations",
}
_JUNCTORS = ("allOf", "anyOf", "oneOf")


def _props(node: Schema) -> Mapping[str, Any]:
    properties = node.get("properties")
    return properties if isinstance(properties, Mapping) else {}


def _schema_list(node: Schema, key: str) -> list[Any]:
    value = node.get(key)
    return list(value) if isinstance(value, list) else []


def _is_zero(value: Any) -> bool:
    return (
        value is None
        or value is False
        or value == ""
        or value == []
        or value == {}
        or (value == 0 and not isinstance(value, bool))
    )


def structural_errors(schema: Any, path: str, *, status_enabled: bool = False) -> list[Cause]:
    """Why ``schema`` (a version's ``openAPIV3Schema``, at field path ``path`` in the CRD) is
    refused, worded and ordered as kube-apiserver 1.32 does (see the comment above)."""
    if not isinstance(schema, Mapping):
        return [fe.required(path, "schemas are required")]
    causes: list[Cause] = []
    if status_enabled:
        causes.extend(_status_root_errors(schema, path))
    if schema.get("nullable"):
        causes.append(fe.forbidden(_child(path, "nullable"), "nullable cannot be true at the root"))
    structural = _structural_invariants(schema, _ROOT_LEVEL, path)
    structural.extend(_completeness(schema, schema, path, path))
    if structural:
        causes.extend(sorted(structural, key=fe.error_string))
    else:
        causes.extend(_default_errors(schema, path, _ROOT_LEVEL, embedded=True))
    causes.extend(_openapi_errors(schema, path, _Ctx(), is_root=True))
    return causes


# JSONSchemaProps' fields in declaration order: upstream reports the first offending one.
_FIELD_ORDER = (
    "id $schema $ref description type format title default maximum exclusiveMaximum minimum "
    "exclusiveMinimum maxLength minLength pattern maxItems minItems uniqueItems multipleOf enum "
    "maxProperties minProperties required items allOf oneOf anyOf not properties "
    "additionalProperties patternProperties dependencies additionalItems definitions "
    "externalDocs example nullable x-kubernetes-preserve-unknown-fields "
    "x-kubernetes-embedded-resource x-kubernetes-int-or-string x-kubernetes-list-map-keys "
    "x-kubernetes-list-type x-kubernetes-map-type x-kubernetes-validations"
).split()


def _status_root_errors(schema: Schema, path: str) -> list[Cause]:
    order = {name: i for i, name in enumerate(_FIELD_ORDER)}
    for key in sorted(schema, key=lambda k: order.get(k, len(order))):
        value = schema[key]
        if _is_zero(value):
            continue
        if key == "type":
            if value != "object":
                return [
                    fe.invalid(
                        _child(path, "type"),
                        value,
                        'only "object" is allowed as the type at the root of the schema if the '
                        "status subresource is enabled",
                    )
                ]
            continue
        if key not in _STATUS_ROOT_ALLOWED:
            allowed = " ".join(_STATUS_ROOT_ALLOWED.values())
            return [
                fe.invalid(
                    path,
                    dict(schema),
                    f"only [{allowed}] fields are allowed at the root of the schema if the "
                    "status subresource is enabled",
                )
            ]
    return []


# structural invariants ----------------------------------------------------------------------


def _is_int_or_string_any_of(node: Mapping[str, Any] | None) -> bool:
    return isinstance(node, Mapping) and node.get("anyOf") == _INT_OR_STRING_ANY_OF


def _is_int_or_string_all_of(node: Schema) -> bool:
    all_of = _schema_list(node, "allOf")
    return bool(all_of) and _is_int_or_string_any_of(all_of[0])


def _structural_invariants(node: Schema, level: str, path: str) -> list[Cause]:
    causes: list[Cause] = []
    node_type = node.get("type") or ""
    items = node.get("items")
    if node_type == "array" and items is None:
        causes.append(fe.required(_child(path, "items"), "must be specified"))
    if isinstance(items, Mapping):
        causes.extend(_structural_invariants(items, _ITEM_LEVEL, _child(path, "items")))
    for key, sub in _props(node).items():
        if isinstance(sub, Mapping):
            causes.extend(
                _structural_invariants(sub, _FIELD_LEVEL, _key(_child(path, "properties"), key))
            )
    has_additional = "additionalProperties" in node and node["additionalProperties"] is not None
    if has_additional:
        if level == _ROOT_LEVEL:
            causes.append(
                fe.forbidden(_child(path, "additionalProperties"), "must not be used at the root")
            )
        additional = node["additionalProperties"]
        if isinstance(additional, Mapping):
            causes.extend(
                _structural_invariants(
                    additional, _FIELD_LEVEL, _child(path, "additionalProperties")
                )
            )
    int_or_string = bool(node.get(_INT_OR_STRING))
    preserve = bool(node.get(_PRESERVE))
    embedded = bool(node.get(_EMBEDDED))
    if int_or_string and preserve:
        causes.append(
            fe.invalid(
                _child(path, _PRESERVE), True, "must be false if x-kubernetes-int-or-string is true"
            )
        )
    if int_or_string and embedded:
        causes.append(
            fe.invalid(
                _child(path, _EMBEDDED), True, "must be false if x-kubernetes-int-or-string is true"
            )
        )
    causes.extend(
        _value_validation(
            node,
            skip_any_of=_is_int_or_string_any_of(node),
            skip_first_all_of_any_of=_is_int_or_string_all_of(node),
            level=level,
            path=path,
        )
    )
    check_metadata = level == _ROOT_LEVEL or embedded
    if embedded and node_type != "object":
        detail = "must be object if x-kubernetes-embedded-resource is true"
        if not node_type:
            causes.append(fe.required(_child(path, "type"), detail))
        else:
            causes.append(fe.invalid(_child(path, "type"), node_type, detail))
    elif not node_type and not int_or_string and not preserve:
        detail = {
            _ROOT_LEVEL: "must not be empty at the root",
            _ITEM_LEVEL: "must not be empty for specified array items",
            _FIELD_LEVEL: "must not be empty for specified object fields",
        }[level]
        causes.append(fe.required(_child(path, "type"), detail))
    if embedded and has_additional:
        causes.append(
            fe.forbidden(
                _child(path, "additionalProperties"),
                "must not be used if x-kubernetes-embedded-resource is set",
            )
        )
    if level == _ROOT_LEVEL and node_type and node_type != "object":
        causes.append(fe.invalid(_child(path, "type"), node_type, "must be object at the root"))
    properties = _props(node)
    for meta_key in ("kind", "apiVersion"):
        sub = properties.get(meta_key)
        if isinstance(sub, Mapping) and check_metadata and sub.get("type") != "string":
            causes.append(
                fe.invalid(
                    _child(_key(_child(path, "properties"), meta_key), "type"),
                    sub.get("type") or "",
                    "must be string",
                )
            )
    metadata = properties.get("metadata")
    if isinstance(metadata, Mapping):
        causes.extend(
            _metadata_invariants(
                metadata, check_metadata, level, _key(_child(path, "properties"), "metadata")
            )
        )
    if embedded and not preserve and not properties:
        causes.append(
            fe.required(
                _child(path, "properties"),
                "must not be empty if x-kubernetes-embedded-resource is true without "
                "x-kubernetes-preserve-unknown-fields",
            )
        )
    return causes


def _metadata_invariants(node: Schema, check: bool, level: str, path: str) -> list[Cause]:
    causes: list[Cause] = []
    if check and node.get("type") != "object":
        causes.append(fe.invalid(_child(path, "type"), node.get("type") or "", "must be object"))
    if level == _ROOT_LEVEL:
        rest = {k: v for k, v in node.items() if k not in ("type", "default")}
        properties = rest.get("properties")
        if (
            isinstance(properties, Mapping)
            and properties
            and set(properties)
            <= {
                "name",
                "generateName",
            }
        ):
            rest.pop("properties")
        if any(not _is_zero(v) for v in rest.values()):
            causes.append(
                fe.forbidden(
                    path,
                    "must not specify anything other than name and generateName, but metadata "
                    "is implicitly specified",
                )
            )
    return causes


def _value_validation(
    node: Schema, *, skip_any_of: bool, skip_first_all_of_any_of: bool, level: str, path: str
) -> list[Cause]:
    causes: list[Cause] = []
    if not skip_any_of:
        for i, sub in enumerate(_schema_list(node, "anyOf")):
            causes.extend(_nested(sub, False, level, _index(_child(path, "anyOf"), i)))
    for i, sub in enumerate(_schema_list(node, "allOf")):
        skip = skip_first_all_of_any_of and i == 0
        causes.extend(_nested(sub, skip, level, _index(_child(path, "allOf"), i)))
    for i, sub in enumerate(_schema_list(node, "oneOf")):
        causes.extend(_nested(sub, False, level, _index(_child(path, "oneOf"), i)))
    if "not" in node:
        causes.extend(_nested(node.get("not"), False, level, _child(path, "not")))
    pattern = node.get("pattern")
    if isinstance(pattern, str) and pattern:
        try:
            goregexp.compile_go(pattern)
        except goregexp.GoRegexpError as exc:
            causes.append(
                fe.invalid(
                    _child(path, "pattern"),
                    pattern,
                    f"must be a valid regular expression, but isn't: {exc}",
                )
            )
    return causes


_NESTED_FORBIDDEN: tuple[tuple[str, str], ...] = (
    ("default", "must be undefined to be structural"),
    ("title", "must be empty to be structural"),
    ("description", "must be empty to be structural"),
    ("nullable", "must be false to be structural"),
    (_PRESERVE, "must be false to be structural"),
    (_EMBEDDED, "must be false to be structural"),
    (_INT_OR_STRING, "must be false to be structural"),
    ("x-kubernetes-list-map-keys", "must be empty to be structural"),
    ("x-kubernetes-list-type", "must be undefined to be structural"),
    ("x-kubernetes-map-type", "must be undefined to be structural"),
    ("x-kubernetes-validations", "must be empty to be structural"),
)


def _nested(node: Any, skip_any_of: bool, level: str, path: str) -> list[Cause]:
    """A schema under allOf/anyOf/oneOf/not: value validation only."""
    if not isinstance(node, Mapping):
        return []
    causes = _value_validation(
        node, skip_any_of=skip_any_of, skip_first_all_of_any_of=False, level=level, path=path
    )
    if isinstance(node.get("items"), Mapping):
        causes.extend(_nested(node["items"], False, level, _child(path, "items")))
    for key, sub in _props(node).items():
        causes.extend(_nested(sub, False, _FIELD_LEVEL, _key(_child(path, "properties"), key)))
    if node.get("type"):
        causes.append(fe.forbidden(_child(path, "type"), "must be empty to be structural"))
    if node.get("additionalProperties") is not None:
        causes.append(
            fe.forbidden(_child(path, "additionalProperties"), "must be undefined to be structural")
        )
    for key, detail in _NESTED_FORBIDDEN:
        value = node.get(key)
        if key == "default" and value is not None:
            causes.append(fe.forbidden(_child(path, key), detail))
        elif key in ("x-kubernetes-list-type", "x-kubernetes-map-type") and key in node:
            causes.append(fe.forbidden(_child(path, key), detail))
        elif key not in ("default", "x-kubernetes-list-type", "x-kubernetes-map-type") and value:
            causes.append(fe.forbidden(_child(path, key), detail))
    if "metadata" in _props(node):
        causes.append(
            fe.forbidden(
                _key(_child(path, "properties"), "metadata"),
                "must not be specified in a nested context",
            )
        )
    return causes


def _completeness(
    value_node: Any, structural: Any, s_path: str, v_path: str, *, nested: bool = False
) -> list[Cause]:
    """Every property or items a junctor constrains must exist in the structural part (checked
    from the root's junctors, as upstream does)."""
    if not isinstance(value_node, Mapping):
        return []
    if not isinstance(structural, Mapping):
        return [fe.required(s_path, f"because it is defined in {v_path}")]
    causes: list[Cause] = []
    if "not" in value_node:
        causes.extend(
            _completeness(value_node["not"], structural, s_path, _child(v_path, "not"), nested=True)
        )
    for junctor in _JUNCTORS:
        for i, sub in enumerate(_schema_list(value_node, junctor)):
            causes.extend(
                _completeness(
                    sub, structural, s_path, _index(_child(v_path, junctor), i), nested=True
                )
            )
    if not nested:
        return causes
    if isinstance(value_node.get("items"), Mapping):
        causes.extend(
            _completeness(
                value_node["items"],
                structural.get("items"),
                _child(s_path, "items"),
                _child(v_path, "items"),
                nested=True,
            )
        )
    s_props = _props(structural)
    for key, sub in _props(value_node).items():
        s_child = _key(_child(s_path, "properties"), key)
        v_child = _key(_child(v_path, "properties"), key)
        if key not in s_props:
            causes.append(fe.required(s_child, f"because it is defined in {v_child}"))
        else:
            causes.extend(_completeness(sub, s_props[key], s_child, v_child, nested=True))
    return causes


# defaults ------------------------------------------------------------------------------------


def _default_errors(node: Schema, path: str, level: str, *, embedded: bool) -> list[Cause]:
    """Defaults must validate against their schema and hold no field pruning would drop
    (additionalProperties are not followed: defaults are not checked there upstream)."""
    causes: list[Cause] = []
    embedded = embedded or bool(node.get(_EMBEDDED))
    default = node.get("default")
    if default is not None:
        default_path = _child(path, "default")
        if isinstance(default, dict):
            pruned = copy.deepcopy(default)
            _prune_object(pruned, node, "", [], root=embedded)
            if pruned != default:
                causes.append(fe.invalid(default_path, default, "must not have unknown fields"))
        found: list[Cause] = []
        _validate(copy.deepcopy(default), node, default_path, found)
        causes.extend(found)
    items = node.get("items")
    if isinstance(items, Mapping):
        causes.extend(_default_errors(items, _child(path, "items"), _ITEM_LEVEL, embedded=False))
    for key, sub in _props(node).items():
        if isinstance(sub, Mapping):
            causes.extend(
                _default_errors(
                    sub, _key(_child(path, "properties"), key), _FIELD_LEVEL, embedded=False
                )
            )
    return causes


# OpenAPI keyword checks ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Ctx:
    allow_defaults: bool = True
    no_defaults_reason: str = ""
    inside_meta: bool = False

    def without_defaults(self, reason: str) -> _Ctx:
        return _Ctx(False, reason, self.inside_meta)

    def in_meta(self) -> _Ctx:
        return _Ctx(self.allow_defaults, self.no_defaults_reason, True)


def _keyword_errors(node: Schema, path: str, ctx: _Ctx) -> list[Cause]:
    causes: list[Cause] = []
    node_type = node.get("type")
    if node_type and node_type not in _OPENAPI_TYPES:
        causes.append(fe.not_supported(_child(path, "type"), node_type, list(_OPENAPI_TYPES)))
    if node.get("default") is not None and not ctx.allow_defaults:
        detail = "must not be set"
        if ctx.no_defaults_reason:
            detail += " " + ctx.no_defaults_reason
        causes.append(fe.forbidden(_child(path, "default"), detail))
    for key, name in (
        ("id", "id"),
        ("additionalItems", "additionalItems"),
        ("patternProperties", "patternProperties"),
        ("definitions", "definitions"),
        ("dependencies", "dependencies"),
        ("$ref", "$ref"),
    ):
        if not _is_zero(node.get(key)) or (key == "additionalItems" and key in node):
            causes.append(fe.forbidden(_child(path, key), f"{name} is not supported"))
    if node_type == "null":
        causes.append(
            fe.forbidden(
                _child(path, "type"), "type cannot be set to null, use nullable as an alternative"
            )
        )
    if isinstance(node.get("items"), list) and node["items"]:
        causes.append(
            fe.forbidden(_child(path, "items"), "items must be a schema object and not an array")
        )
    if ctx.inside_meta and node.get(_EMBEDDED):
        causes.append(
            fe.forbidden(_child(path, _EMBEDDED), "must not be used inside of resource meta")
        )
    return causes


def _openapi_errors(node: Any, path: str, ctx: _Ctx, *, is_root: bool = False) -> list[Cause]:
    if not isinstance(node, Mapping):
        return []
    causes = _keyword_errors(node, path, ctx)
    if node.get("uniqueItems"):
        causes.append(
            fe.forbidden(
                _child(path, "uniqueItems"),
                "uniqueItems cannot be set to true since the runtime complexity becomes quadratic",
            )
        )
    properties = _props(node)
    if "additionalProperties" in node and node["additionalProperties"] is not None:
        additional = node["additionalProperties"]
        if properties and (additional is False or isinstance(additional, Mapping)):
            causes.append(
                fe.forbidden(
                    _child(path, "additionalProperties"),
                    "additionalProperties and properties are mutual exclusive",
                )
            )
        sub_ctx = ctx
        if ctx.inside_meta:
            sub_ctx = ctx.without_defaults(
                "inside additionalProperties applying to object metadata"
            )
        causes.extend(_openapi_errors(additional, _child(path, "additionalProperties"), sub_ctx))
    for key, sub in properties.items():
        sub_ctx = ctx
        if (is_root or node.get(_EMBEDDED)) and key in _META_FIELDS:
            sub_ctx = sub_ctx.in_meta()
            if is_root:
                sub_ctx = sub_ctx.without_defaults(f"in top-level {key}")
        causes.extend(_openapi_errors(sub, _key(_child(path, "properties"), key), sub_ctx))
    causes.extend(_openapi_errors(node.get("not"), _child(path, "not"), ctx))
    for junctor in ("allOf", "oneOf", "anyOf"):
        for i, sub in enumerate(_schema_list(node, junctor)):
            causes.extend(_openapi_errors(sub, _index(_child(path, junctor), i), ctx))
    definitions = node.get("definitions")
    if isinstance(definitions, Mapping):
        for key, sub in definitions.items():
            causes.extend(_openapi_errors(sub, _key(_child(path, "definitions"), key), ctx))
    items = node.get("items")
    if isinstance(items, Mapping):
        causes.extend(_openapi_errors(items, _child(path, "items"), ctx))
    elif isinstance(items, list):
        for i, sub in enumerate(items):
            causes.extend(_openapi_errors(sub, _index(_child(path, "items"), i), ctx))
    dependencies = node.get("dependencies")
    if isinstance(dependencies, Mapping):
        for key, sub in dependencies.items():
            if isinstance(sub, Mapping):
                causes.extend(_openapi_errors(sub, _key(_child(path, "dependencies"), key), ctx))
    causes.extend(_extension_errors(node, path))
    return causes


def _extension_errors(node: Schema, path: str) -> list[Cause]:
    causes: list[Cause] = []
    node_type = node.get("type") or ""
    if node.get(_PRESERVE) is False:
        causes.append(fe.invalid(_child(path, _PRESERVE), False, "must be true or undefined"))
    map_type = node.get("x-kubernetes-map-type")
    if map_type is not None and node_type != "object":
        detail = "must be object if x-kubernetes-map-type is specified"
        if not node_type:
            causes.append(fe.required(_child(path, "type"), detail))
        else:
            causes.append(fe.invalid(_child(path, "type"), node_type, detail))
    if map_type is not None and map_type not in _MAP_TYPES:
        causes.append(
            fe.not_supported(_child(path, "x-kubernetes-map-type"), map_type, list(_MAP_TYPES))
        )
    list_type = node.get("x-kubernetes-list-type")
    items = node.get("items")
    if list_type is not None and node_type != "array":
        detail = "must be array if x-kubernetes-list-type is specified"
        if not node_type:
            causes.append(fe.required(_child(path, "type"), detail))
        else:
            causes.append(fe.invalid(_child(path, "type"), node_type, detail))
    elif list_type == "set" and isinstance(items, Mapping):
        detail = "must be atomic as item of a list with x-kubernetes-list-type=set"
        item_list_type = items.get("x-kubernetes-list-type")
        if items.get("type") == "array" and item_list_type not in (None, "atomic"):
            causes.append(
                fe.invalid(_child(path, "items.x-kubernetes-list-type"), item_list_type, detail)
            )
        elif items.get("type") == "object" and items.get("x-kubernetes-map-type") != "atomic":
            causes.append(
                fe.invalid(_child(path, "items.x-kubernetes-map-type"), item_list_type, detail)
            )
    if list_type is not None and list_type not in _LIST_TYPES:
        causes.append(
            fe.not_supported(_child(path, "x-kubernetes-list-type"), list_type, list(_LIST_TYPES))
        )
    keys = _schema_list(node, "x-kubernetes-list-map-keys")
    if keys:
        detail = "must be map if x-kubernetes-list-map-keys is non-empty"
        if list_type is None:
            causes.append(fe.required(_child(path, "x-kubernetes-list-type"), detail))
        elif list_type != "map":
            causes.append(fe.invalid(_child(path, "x-kubernetes-list-type"), list_type, detail))
    if list_type == "map":
        causes.extend(_list_map_errors(node, keys, path))
    if list_type in ("set", "map") and isinstance(items, Mapping):
        causes.extend(_list_map_set_errors(node, items, keys, list_type, path))
    causes.extend(_x_validation_errors(node, path))
    return causes


def _list_map_errors(node: Schema, keys: list[Any], path: str) -> list[Cause]:
    causes: list[Cause] = []
    items = node.get("items")
    if not keys:
        causes.append(
            fe.required(
                _child(path, "x-kubernetes-list-map-keys"),
                "must not be empty if x-kubernetes-list-type is map",
            )
        )
    if items is None:
        causes.append(
            fe.required(
                _child(path, "items"), "must have a schema if x-kubernetes-list-type is map"
            )
        )
        return causes
    if not isinstance(items, Mapping):
        causes.append(
            fe.invalid(
                _child(path, "items"),
                items,
                "must only have a single schema if x-kubernetes-list-type is map",
            )
        )
        return causes
    if items.get("type") != "object":
        causes.append(
            fe.invalid(
                _child(path, "items.type"),
                items.get("type") or "",
                "must be object if parent array's x-kubernetes-list-type is map",
            )
        )
        return causes
    seen: set[str] = set()
    item_props = _props(items)
    for key in keys:
        sub = item_props.get(key)
        if isinstance(sub, Mapping):
            if sub.get("type") in ("array", "object"):
                causes.append(
                    fe.invalid(
                        _child(_key(_child(path, "items.properties"), str(key)), "type"),
                        items.get("type"),
                        "must be a scalar type if parent array's x-kubernetes-list-type is map",
                    )
                )
        else:
            causes.append(
                fe.invalid(
                    _child(path, "x-kubernetes-list-map-keys"),
                    keys,
                    "entries must all be names of item properties",
                )
            )
        if key in seen:
            causes.append(
                fe.invalid(
                    _child(path, "x-kubernetes-list-map-keys"),
                    keys,
                    "must not contain duplicate entries",
                )
            )
        seen.add(key)
    return causes


def _list_map_set_errors(
    node: Schema, items: Schema, keys: list[Any], list_type: str, path: str
) -> list[Cause]:
    causes: list[Cause] = []
    if items.get("nullable"):
        causes.append(
            fe.forbidden(
                _child(path, "items.nullable"),
                f"cannot be nullable when x-kubernetes-list-type is {list_type}",
            )
        )
    if list_type != "map":
        return causes
    required = set(_schema_list(items, "required"))
    item_props = _props(items)
    for key in keys:
        sub = item_props.get(key)
        if not isinstance(sub, Mapping):
            continue
        key_path = _key(_child(path, "items.properties"), str(key))
        if key not in required and sub.get("default") is None:
            causes.append(
                fe.required(
                    _child(key_path, "default"),
                    "this property is in x-kubernetes-list-map-keys, so it must have a default "
                    "or be a required property",
                )
            )
        if sub.get("nullable"):
            causes.append(
                fe.forbidden(
                    _child(key_path, "nullable"),
                    "this property is in x-kubernetes-list-map-keys, so it cannot be nullable",
                )
            )
    return causes


def _x_validation_errors(node: Schema, path: str) -> list[Cause]:
    """The static checks of ``x-kubernetes-validations`` rules (CEL itself is not compiled)."""
    causes: list[Cause] = []
    for i, rule in enumerate(_schema_list(node, "x-kubernetes-validations")):
        if not isinstance(rule, Mapping):
            continue
        rule_path = _index(_child(path, "x-kubernetes-validations"), i)
        text = str(rule.get("rule") or "").strip()
        message = str(rule.get("message") or "")
        if not text:
            causes.append(fe.required(_child(rule_path, "rule"), "rule is not specified"))
        elif message and not message.strip():
            causes.append(
                fe.invalid(
                    _child(rule_path, "message"), message, "message must be non-empty if specified"
                )
            )
        elif "\n" in message.strip() or "\r" in message.strip():
            causes.append(
                fe.invalid(
                    _child(rule_path, "message"), message, "message must not contain line breaks"
                )
            )
        elif ("\n" in text or "\r" in text) and not message.strip():
            causes.append(
                fe.required(
                    _child(rule_path, "message"),
                    "message must be specified if rule contains line breaks",
                )
            )
        expression = str(rule.get("messageExpression") or "")
        if expression and not expression.strip():
            causes.append(
                fe.required(
                    _child(rule_path, "messageExpression"),
                    "messageExpression must be non-empty if specified",
                )
            )
        reason = rule.get("reason")
        if reason is not None and reason not in _VALIDATION_REASONS:
            causes.append(
                fe.not_supported(_child(rule_path, "reason"), reason, list(_VALIDATION_REASONS))
            )
    return causes
