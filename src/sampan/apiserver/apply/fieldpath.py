"""Field paths and field sets in the ``FieldsV1`` form of ``metadata.managedFields``.

Owns the representation the rest of ``apply`` computes with: a path is a tuple of element
strings exactly as FieldsV1 spells them (``f:<field>``, ``k:<json object of key fields>``,
``v:<json value>``, ``i:<index>``), a field set is a Python ``set`` of paths, and
``flatten(obj, schema)`` maps every owned path of an object to the value found there (a leaf
value, or ``ITEM`` for a list item's own membership). ``to_fields_v1``/``from_fields_v1``
convert a set to and from the nested JSON trie (``{".": {}}`` marks a member with children),
``path_string`` renders a path the way conflict messages do (``.spec.containers[name="a"]``).

List semantics come from the schema (``x-kubernetes-list-type`` / ``-list-map-keys``, else
the strategic-merge metadata, else atomic); ``x-kubernetes-map-type: atomic`` maps (label
selectors) are one leaf. A list-map item that omits a key field which has a default is
identified with that default (structured-merge-diff's rule): a Service port without
``protocol`` is the item ``k:{"port":80,"protocol":"TCP"}``, the same item the stored,
defaulted object holds. Invariant: the same object and schema always give the same set; the
JSON inside ``k:``/``v:`` elements is compact with sorted keys, so equal items compare equal.
"""

from __future__ import annotations

import json
from typing import Any

from sampan.apiserver.openapi_data import SchemaView

__all__ = [
    "ITEM",
    "Path",
    "flatten",
    "from_fields_v1",
    "item_key",
    "key_defaults",
    "list_semantics",
    "path_string",
    "to_fields_v1",
]

Path = tuple[str, ...]
ITEM = ("<list item>",)
"""The value flatten() records for a list item's own path (its presence, not its content)."""
_MEMBER = "."


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def list_semantics(schema: SchemaView | None) -> tuple[str, tuple[str, ...]]:
    """("map", keys) | ("set", ()) | ("atomic", ()) for a list field."""
    if schema is None:
        return "atomic", ()
    list_type = schema.list_type
    if list_type == "map":
        keys = schema.list_map_keys or ((schema.patch_merge_key,) if schema.patch_merge_key else ())
        return ("map", keys) if keys else ("atomic", ())
    if list_type in ("set", "atomic"):
        return list_type, ()
    if "merge" in schema.patch_strategies:
        key = schema.patch_merge_key
        return ("map", (key,)) if key else ("set", ())
    return "atomic", ()


# Defaults of list-map key fields that kube-apiserver's OpenAPI schema declares
# (``default: TCP`` on ContainerPort.protocol and ServicePort.protocol) but the definitions
# Sampan ships do not carry; keyed by the list's map keys. A schema's own default wins.
_BUILTIN_KEY_DEFAULTS: dict[tuple[str, ...], dict[str, Any]] = {
    ("containerPort", "protocol"): {"protocol": "TCP"},
    ("port", "protocol"): {"protocol": "TCP"},
}


def key_defaults(schema: SchemaView | None, keys: tuple[str, ...]) -> dict[str, Any]:
    """The defaults of a list-map's key fields (``schema`` is the list's schema)."""
    defaults = dict(_BUILTIN_KEY_DEFAULTS.get(keys, {}))
    item_schema = schema.items() if schema is not None else None
    if item_schema is not None:
        for key in keys:
            field = item_schema.field(key) if item_schema.has_field(key) else None
            if field is not None and field.raw.get("default") is not None:
                defaults[key] = field.raw["default"]
    return defaults


def item_key(
    item: Any, keys: tuple[str, ...], defaults: dict[str, Any] | None = None
) -> str | None:
    """The ``k:`` element of a list-map item: its key fields, a missing one taking its
    default (fields with neither are left out)."""
    if not isinstance(item, dict):
        return None
    values: dict[str, Any] = {}
    for key in keys:
        if item.get(key) is not None:
            values[key] = item[key]
        elif defaults and key in defaults:
            values[key] = defaults[key]
    return "k:" + _json(values)


def _is_atomic_map(schema: SchemaView | None) -> bool:
    return schema is not None and schema.map_type == "atomic"


def _find_item(
    items: Any, item: dict[str, Any], keys: tuple[str, ...], defaults: dict[str, Any]
) -> Any:
    if not isinstance(items, list):
        return None
    present = json.loads(item_key(item, keys, defaults)[2:])  # type: ignore[index]
    for candidate in items:
        if isinstance(candidate, dict) and all(
            candidate.get(k, defaults.get(k)) == v for k, v in present.items()
        ):
            return candidate
    return None


def flatten(
    value: Any,
    schema: SchemaView | None,
    prefix: Path = (),
    out: dict[Path, Any] | None = None,
    *,
    ref: Any = None,
) -> dict[Path, Any]:
    """Every owned path under ``prefix`` -> its value (see the module docstring).

    ``ref`` is the same node in the object the value will become (defaults included): a
    list-map item missing a key field (a defaulted one, like a port's protocol) takes its
    full key from the matching item there, as the stored object will carry it."""
    if out is None:
        out = {}
    if isinstance(value, dict):
        if prefix and (not value or _is_atomic_map(schema)):
            out[prefix] = value
            return out
        for key, child in value.items():
            if child is None:
                continue
            child_schema = schema.field(key) if schema is not None else None
            child_ref = ref.get(key) if isinstance(ref, dict) else None
            flatten(child, child_schema, (*prefix, "f:" + key), out, ref=child_ref)
        return out
    if isinstance(value, list):
        kind, keys = list_semantics(schema)
        if kind == "atomic" or not value or not prefix:
            out[prefix] = value
            return out
        item_schema = schema.items() if schema is not None else None
        if kind == "set":
            for item in value:
                out[(*prefix, "v:" + _json(item))] = ITEM
            return out
        defaults = key_defaults(schema, keys)
        for item in value:
            element = item_key(item, keys, defaults)
            if element is None:
                out[prefix] = value  # not a list of maps after all: one leaf
                return out
            item_ref = _find_item(ref, item, keys, defaults) if ref is not None else None
            if isinstance(item_ref, dict):
                element = item_key(item_ref, keys, defaults) or element
            path = (*prefix, element)
            out[path] = ITEM
            for key, child in item.items():
                if child is None:
                    continue
                child_schema = item_schema.field(key) if item_schema is not None else None
                child_ref = item_ref.get(key) if isinstance(item_ref, dict) else None
                flatten(child, child_schema, (*path, "f:" + key), out, ref=child_ref)
        return out
    if prefix:
        out[prefix] = value
    return out


def to_fields_v1(paths: set[Path]) -> dict[str, Any]:
    """The ``fieldsV1`` tree of ``paths``: children in sorted order; a path that is itself a
    member and has children carries ``"."`` first; a member without children is ``{}``.

    One pass over the sorted paths: a path sorts before all its extensions, so a member's
    node is new when its path comes and can take ``"."`` first; members left without
    children are emptied at the end."""
    root: dict[str, Any] = {}
    members: list[dict[str, Any]] = []
    for path in sorted(paths):
        if not path:
            continue
        node = root
        for element in path[:-1]:
            child = node.get(element)
            if child is None:
                child = node[element] = {}
            node = child
        last = path[-1]
        if last not in node:
            leaf: dict[str, Any] = {_MEMBER: {}}
            node[last] = leaf
            members.append(leaf)
    for leaf in members:
        if len(leaf) == 1:
            leaf.clear()
    return root


def from_fields_v1(tree: Any, prefix: Path = (), out: set[Path] | None = None) -> set[Path]:
    if out is None:
        out = set()
    if not isinstance(tree, dict):
        return out
    for key, child in tree.items():
        if key == _MEMBER:
            if prefix:
                out.add(prefix)
            continue
        path = (*prefix, key)
        if not child:
            out.add(path)
        else:
            from_fields_v1(child, path, out)
    return out


def path_string(path: Path) -> str:
    parts: list[str] = []
    for element in path:
        kind, _, text = element.partition(":")
        if kind == "f":
            parts.append("." + text)
        elif kind == "k":
            try:
                keys = json.loads(text)
            except ValueError:
                parts.append(f"[{text}]")
                continue
            parts.append("[" + ",".join(f"{k}={_json(v)}" for k, v in keys.items()) + "]")
        elif kind == "v":
            parts.append(f"[={text}]")
        elif kind == "i":
            parts.append(f"[{text}]")
        else:
            parts.append(element)
    return "".join(parts)
