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
  and the logical junctors. Error causes are worded as kube-apiserver words them
  (``spec.replicas: Invalid value: "x": spec.replicas in body must be of type integer:
  "string"``). CEL rules (``x-kubernetes-validations``) are not evaluated.

Invariants: functions never mutate a schema; ``prune`` and ``default`` mutate only the object
they are given; paths are rendered as ``spec.items[0].name`` (kube-apiserver's field paths).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

from sampan.api import fielderrors as fe
from sampan.apiserver.errors import Cause

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
    # The schema may constrain metadata.name and metadata.generateName (nothing else there).
    meta_schema = (schema.get("properties") or {}).get("metadata")
    metadata = obj.get("metadata")
    if isinstance(meta_schema, Mapping) and isinstance(metadata, dict):
        for key in _ALLOWED_METADATA_KEYS:
            sub = (meta_schema.get("properties") or {}).get(key)
            if isinstance(sub, Mapping) and isinstance(metadata.get(key), str):
                _validate(metadata[key], sub, f"metadata.{key}", causes)
    return causes


def _validate(value: Any, schema: Schema, path: str, causes: list[Cause]) -> None:
    body = path or "<root>"
    if value is None:
        if not schema.get("nullable") and (schema.get("type") or schema.get(_INT_OR_STRING)):
            if not schema.get(_PRESERVE) or schema.get("type"):
                causes.append(
                    fe.invalid(
                        path,
                        None,
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
                    path, value, f'{body} in body must be of type integer,string: "{actual}"'
                )
            )
            return
    elif wanted and wanted in _TYPES:
        ok = actual == wanted or (wanted == "number" and actual == "integer")
        if not ok:
            causes.append(
                fe.invalid(path, value, f'{body} in body must be of type {wanted}: "{actual}"')
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
            matched = re.search(pattern, value) is not None
        except re.error:
            matched = True  # the CRD check reports bad patterns; do not fail objects for it
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


# --- structural schema checks (CRD create/update) ------------------------------------------


def structural_errors(schema: Any, path: str) -> list[Cause]:
    """Why ``schema`` (a version's ``openAPIV3Schema``) is not a structural schema that
    Sampan can serve; ``path`` is its field path in the CRD."""
    causes: list[Cause] = []
    if not isinstance(schema, Mapping):
        return [fe.required(path, "schemas are required")]
    if schema.get("type") not in (None, "object"):
        causes.append(
            fe.invalid(_child(path, "type"), schema.get("type"), "must be object at the root")
        )
    if not schema.get("type") and not schema.get(_PRESERVE):
        causes.append(fe.required(_child(path, "type"), "must not be empty at the root"))
    metadata = (schema.get("properties") or {}).get("metadata")
    if isinstance(metadata, Mapping):
        for key in metadata.get("properties") or {}:
            if key not in _ALLOWED_METADATA_KEYS:
                causes.append(
                    fe.forbidden(
                        _child(_key(_child(path, "properties"), "metadata"), "properties"),
                        "only name and generateName may be set",
                    )
                )
                break
    for node_path, node, in_junctor in _walk(schema, path, False):
        causes.extend(_node_errors(node, node_path, in_junctor, is_root=node is schema))
    return causes


def _walk(schema: Schema, path: str, in_junctor: bool) -> Iterator[tuple[str, Schema, bool]]:
    yield path, schema, in_junctor
    properties = schema.get("properties")
    if isinstance(properties, Mapping):
        for key, sub in properties.items():
            if isinstance(sub, Mapping):
                yield from _walk(sub, _key(_child(path, "properties"), key), in_junctor)
    items = schema.get("items")
    if isinstance(items, Mapping):
        yield from _walk(items, _child(path, "items"), in_junctor)
    additional = schema.get("additionalProperties")
    if isinstance(additional, Mapping):
        yield from _walk(additional, _child(path, "additionalProperties"), in_junctor)
    for junctor in ("allOf", "anyOf", "oneOf"):
        for i, sub in enumerate(schema.get(junctor) or []):
            if isinstance(sub, Mapping):
                yield from _walk(sub, _index(_child(path, junctor), i), True)
    not_schema = schema.get("not")
    if isinstance(not_schema, Mapping):
        yield from _walk(not_schema, _child(path, "not"), True)


def _node_errors(node: Schema, path: str, in_junctor: bool, *, is_root: bool) -> list[Cause]:
    causes: list[Cause] = []
    if "$ref" in node:
        causes.append(fe.forbidden(_child(path, "$ref"), "$ref is not supported"))
    node_type = node.get("type")
    if node_type is not None and node_type not in _TYPES:
        causes.append(fe.not_supported(_child(path, "type"), node_type, list(_TYPES)))
    if in_junctor:
        for key in ("type", "default", "nullable", "additionalProperties", _PRESERVE, _EMBEDDED):
            if key in node:
                causes.append(fe.forbidden(_child(path, key), "must be empty to be structural"))
        return causes
    if not is_root and not node_type and not node.get(_INT_OR_STRING) and not node.get(_PRESERVE):
        causes.append(
            fe.required(_child(path, "type"), "must not be empty for specified object fields")
        )
    if node_type == "array" and not isinstance(node.get("items"), Mapping):
        causes.append(fe.required(_child(path, "items"), "must be specified"))
    if isinstance(node.get("properties"), Mapping) and isinstance(
        node.get("additionalProperties"), Mapping
    ):
        causes.append(
            fe.forbidden(
                _child(path, "additionalProperties"),
                "additionalProperties and properties are mutual exclusive",
            )
        )
    if node.get(_EMBEDDED) and node_type != "object":
        causes.append(
            fe.required(
                _child(path, "type"), "must be object if x-kubernetes-embedded-resource is true"
            )
        )
    if node.get(_INT_OR_STRING) and node_type:
        causes.append(
            fe.invalid(
                _child(path, "type"),
                node_type,
                "must be empty if x-kubernetes-int-or-string is true",
            )
        )
    pattern = node.get("pattern")
    if isinstance(pattern, str):
        try:
            re.compile(pattern)
        except re.error as exc:
            causes.append(
                fe.invalid(
                    _child(path, "pattern"), pattern, f"must be a valid regular expression: {exc}"
                )
            )
    if "default" in node and node.get("default") is not None:
        found: list[Cause] = []
        default = copy.deepcopy(node["default"])
        _validate(default, node, _child(path, "default"), found)
        causes.extend(Cause(c.reason, c.message, _child(path, "default")) for c in found)
    return causes
