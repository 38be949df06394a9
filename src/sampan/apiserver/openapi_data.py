"""The Kubernetes 1.32 API definitions, loaded from the ``kubernetes-validate`` package.

Owns turning the JSON-Schema files that package ships (``v1.32.0-local/_definitions.json``,
one entry per ``io.k8s...`` definition) back into OpenAPI component schemas, and walking them:

* ``load_definitions()`` reads the file once per process (call it from a thread: it is a
  1 MB JSON parse) and returns ``{definition name: schema}`` with references written as
  ``#/components/schemas/<name>`` (the OpenAPI v3 form; ``to_v2`` rewrites them to
  ``#/definitions/<name>``).
* ``SchemaView`` is a read-only cursor over one schema that resolves ``$ref`` and single
  ``allOf`` wrappers, and answers what strategic merge patch and server-side apply ask:
  the schema of a field, of list items, of map values, and the list/patch extensions.

What the conversion undoes (the package's generator made the definitions stricter JSON
Schema): ``type: [T, "null"]`` becomes ``type: T``; the ``enum`` pinned on every kind's
``apiVersion``/``kind`` is dropped; ``IntOrString`` and ``Quantity`` become the string-typed
schemas kube-apiserver publishes (``format: int-or-string`` / ``x-kubernetes-int-or-string``).
Those string forms are what swagger 2.0 publishes and what the checkers here walk; the
OpenAPI v3 documents publish both types as ``oneOf`` without a ``type`` (``V3_PUBLISHED``),
as kube-apiserver does (kubectl explain then names them ``<IntOrString>``/``<Quantity>``).

``builtin_type_error`` checks an object against a kind's definition as kube-apiserver's typed
decoding does (one compiled checker per process, see ``sampan.api.typecheck``).

Invariant: the loaded definitions are shared and never mutated; callers copy before editing.
"""

from __future__ import annotations

import functools
import importlib.util
import json
from pathlib import Path
from typing import Any

from sampan.api.typecheck import TypeChecker

__all__ = [
    "KUBERNETES_SCHEMA_VERSION",
    "REF_PREFIX_V2",
    "REF_PREFIX_V3",
    "V3_PUBLISHED",
    "SchemaView",
    "builtin_type_error",
    "convert_schema",
    "definitions_path",
    "load_definitions",
    "to_v2",
]

KUBERNETES_SCHEMA_VERSION = "v1.32.0"
"""The definitions served: the Kubernetes minor Sampan implements."""
REF_PREFIX_V3 = "#/components/schemas/"
REF_PREFIX_V2 = "#/definitions/"
_SOURCE_REF_PREFIX = "#/$defs/"
_PACKAGE = "kubernetes_validate"
_INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
_QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
_KIND_FIELDS = ("apiVersion", "kind")

V3_PUBLISHED: dict[str, dict[str, Any]] = {
    _INT_OR_STRING: {
        "description": "IntOrString is a type that can hold an int32 or a string.",
        "format": "int-or-string",
        "oneOf": [{"type": "integer"}, {"type": "string"}],
    },
    _QUANTITY: {
        "description": "Quantity is a fixed-point representation of a number.",
        "oneOf": [{"type": "string"}, {"type": "number"}],
    },
}
"""The component schemas the OpenAPI v3 documents publish instead of the loaded ones: the
two types whose JSON is a string or a number (their Go types' OpenAPIV3OneOfTypes)."""


class DefinitionsUnavailable(RuntimeError):
    """The kubernetes-validate package (or its 1.32 schema directory) is missing."""


def definitions_path() -> Path:
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DefinitionsUnavailable(f"the {_PACKAGE} package is not installed")
    base = Path(next(iter(spec.submodule_search_locations)))
    path = (
        base
        / "kubernetes-json-schema"
        / f"{KUBERNETES_SCHEMA_VERSION}-local"
        / ("_definitions.json")
    )
    if not path.is_file():
        raise DefinitionsUnavailable(f"{path} does not exist")
    return path


@functools.cache
def load_definitions() -> dict[str, dict[str, Any]]:
    """All 1.32 definitions in OpenAPI v3 component form (blocking: run in a thread)."""
    raw = json.loads(definitions_path().read_text())
    source: dict[str, Any] = raw.get("$defs") or raw.get("definitions") or {}
    result: dict[str, dict[str, Any]] = {}
    for name, schema in source.items():
        if name == _INT_OR_STRING:
            result[name] = {
                "description": "IntOrString is a type that can hold an int32 or a string.",
                "type": "string",
                "format": "int-or-string",
            }
        elif name == _QUANTITY:
            result[name] = {
                "description": "Quantity is a fixed-point representation of a number.",
                "type": "string",
            }
        else:
            result[name] = convert_schema(schema, top_level=True)
    return result


@functools.cache
def _builtin_types() -> tuple[TypeChecker, dict[tuple[str, str, str], str]]:
    definitions = load_definitions()
    index: dict[tuple[str, str, str], str] = {}
    for name, schema in definitions.items():
        for gvk in schema.get("x-kubernetes-group-version-kind") or ():
            key = (gvk.get("group", ""), gvk.get("version", ""), gvk.get("kind", ""))
            index.setdefault(key, name)
    return TypeChecker(definitions), index


def builtin_type_error(
    api_version: str, kind: str, obj: Any, *, unstructured: bool = False
) -> str | None:
    """The typed decoder's error for ``obj`` as the built-in ``kind`` of ``api_version``
    (see ``sampan.api.typecheck``), or None; a kind with no definition is never an error.
    One checker per process, over the definitions ``load_definitions`` loaded once: each
    kind is compiled on first use and cached. ``unstructured``: the map-to-struct
    converter's rules, as after a strategic merge patch."""
    checker, index = _builtin_types()
    group, _, version = api_version.rpartition("/")
    definition = index.get((group, version, kind))
    if definition is None:
        return None
    return checker.check(definition, obj, unstructured=unstructured)


def convert_schema(node: Any, *, top_level: bool = False) -> Any:
    """One JSON-Schema node of the package -> the OpenAPI v3 form kube-apiserver serves."""
    if isinstance(node, list):
        return [convert_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "type" and isinstance(value, list):
            types = [t for t in value if t != "null"]
            if len(types) == 1:
                out["type"] = types[0]
            elif types:
                out["type"] = types
        elif key == "$ref" and isinstance(value, str):
            target = value.removeprefix(_SOURCE_REF_PREFIX)
            target = target.rpartition("/")[2] if "/" in target else target
            out["$ref"] = REF_PREFIX_V3 + target
        elif key == "properties" and isinstance(value, dict):
            props = {}
            for prop, schema in value.items():
                converted = convert_schema(schema)
                if top_level and prop in _KIND_FIELDS and isinstance(converted, dict):
                    converted.pop("enum", None)
                props[prop] = converted
            out["properties"] = props
        else:
            out[key] = convert_schema(value)
    if "$ref" in out and len(out) > 1:
        # OpenAPI v3 ignores siblings of $ref: kube-apiserver wraps the reference in allOf.
        ref = out.pop("$ref")
        out = {"allOf": [{"$ref": ref}], **out}
    return out


def to_v2(node: Any) -> Any:
    """A v3 component schema -> the swagger 2.0 form (``#/definitions/`` references)."""
    if isinstance(node, list):
        return [to_v2(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "$ref" and isinstance(value, str) and value.startswith(REF_PREFIX_V3):
            out["$ref"] = REF_PREFIX_V2 + value[len(REF_PREFIX_V3) :]
        else:
            out[key] = to_v2(value)
    allof = out.get("allOf")
    if isinstance(allof, list) and len(allof) == 1 and "$ref" in allof[0]:
        # Swagger 2.0 clients expect the bare reference with its description beside it.
        out.pop("allOf")
        out = {"$ref": allof[0]["$ref"], **out}
    return out


class SchemaView:
    """A read-only cursor over a schema; ``resolve`` maps a definition name to its schema.

    Every accessor returns ``None`` when the schema says nothing (unknown field, untyped
    node): callers then fall back to the untyped behaviour (atomic lists, replace). Child
    views are memoized, so a view kept by its owner (``OpenAPI.schema_for``) makes repeated
    walks of the same kind cheap."""

    __slots__ = ("_children", "_node", "_resolve")

    def __init__(self, node: dict[str, Any], resolve: Any) -> None:
        self._resolve = resolve
        self._node = self._deref(node)
        self._children: dict[str, SchemaView | None] = {}

    def _deref(self, node: dict[str, Any]) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        seen = 0
        while isinstance(node, dict) and seen < 16:  # bounded: definitions may be recursive
            seen += 1
            ref = node.get("$ref")
            allof = node.get("allOf")
            if isinstance(ref, str):
                merged = {**{k: v for k, v in node.items() if k != "$ref"}, **merged}
                target = self._resolve(ref.rpartition("/")[2])
                if target is None:
                    break
                node = target
                continue
            if isinstance(allof, list) and len(allof) == 1 and isinstance(allof[0], dict):
                merged = {**{k: v for k, v in node.items() if k != "allOf"}, **merged}
                node = allof[0]
                continue
            break
        # Extensions written beside a reference (the field's own) win over the target's.
        return {**node, **merged} if merged else node

    @property
    def raw(self) -> dict[str, Any]:
        return self._node

    @property
    def type(self) -> str | None:
        value = self._node.get("type")
        if isinstance(value, str):
            return value
        if "properties" in self._node:
            return "object"
        if "items" in self._node:
            return "array"
        return None

    def field(self, name: str) -> SchemaView | None:
        try:
            return self._children[name]
        except KeyError:
            pass
        child = self._field(name)
        self._children[name] = child
        return child

    def _field(self, name: str) -> SchemaView | None:
        props = self._node.get("properties")
        if isinstance(props, dict):
            child = props.get(name)
            if isinstance(child, dict):
                return SchemaView(child, self._resolve)
        extra = self._node.get("additionalProperties")
        if isinstance(extra, dict):
            return SchemaView(extra, self._resolve)
        return None

    def has_field(self, name: str) -> bool:
        props = self._node.get("properties")
        return isinstance(props, dict) and name in props

    def items(self) -> SchemaView | None:
        key = "\x00items"  # cannot collide with a field name
        try:
            return self._children[key]
        except KeyError:
            pass
        child = self._node.get("items")
        view = SchemaView(child, self._resolve) if isinstance(child, dict) else None
        self._children[key] = view
        return view

    @property
    def is_map(self) -> bool:
        """A string-keyed map (additionalProperties) rather than a struct."""
        return "properties" not in self._node and isinstance(
            self._node.get("additionalProperties"), dict
        )

    @property
    def patch_strategies(self) -> tuple[str, ...]:
        value = self._node.get("x-kubernetes-patch-strategy")
        if not isinstance(value, str) or not value:
            return ()
        return tuple(s.strip() for s in value.split(","))

    @property
    def patch_merge_key(self) -> str | None:
        value = self._node.get("x-kubernetes-patch-merge-key")
        return value if isinstance(value, str) and value else None

    @property
    def list_type(self) -> str | None:
        value = self._node.get("x-kubernetes-list-type")
        return value if isinstance(value, str) else None

    @property
    def list_map_keys(self) -> tuple[str, ...]:
        value = self._node.get("x-kubernetes-list-map-keys")
        return tuple(value) if isinstance(value, list) else ()

    @property
    def map_type(self) -> str | None:
        value = self._node.get("x-kubernetes-map-type")
        return value if isinstance(value, str) else None

    @property
    def preserves_unknown(self) -> bool:
        return bool(self._node.get("x-kubernetes-preserve-unknown-fields"))
