"""Strategic merge patch (``application/strategic-merge-patch+json``), applied on the server.

Owns ``apply_strategic_merge_patch(original, patch, schema)``: a JSON merge patch whose lists
follow the patch metadata of the kind's OpenAPI schema (``openapi_data.SchemaView``):

* a list whose schema says ``x-kubernetes-patch-strategy: merge`` with a
  ``x-kubernetes-patch-merge-key`` merges item by item on that key (an item with
  ``$patch: delete`` removes the matching one; a ``{"$patch": "replace"}`` item makes the
  rest of the patch list the whole list); a merge list of scalars is a set union;
* every other list (no schema, or no merge strategy) is replaced, as in a merge patch;
* maps merge key by key; ``null`` deletes; ``$patch: replace`` replaces the map, ``$patch:
  delete`` removes it; ``$retainKeys: [...]`` keeps only those fields (``retainKeys``
  strategy, e.g. ``Deployment.spec.strategy`` and volumes);
* ``$deleteFromPrimitiveList/<field>: [...]`` removes values from a scalar list and
  ``$setElementOrder/<field>: [...]`` orders a merged list (kubectl's three-way patches send
  both; upstream's ``$setElementOrder`` keeps items the patch does not mention in place).

Invariants: pure (inputs are never mutated; the result shares nothing with the patch);
directives never reach the result; a malformed directive raises a StatusError before
anything is returned, worded as kube-apiserver's (values shown as Go's ``%v``, never
Python's repr). All are 400s: upstream answers an unknown ``$patch`` or a missing merge key
with a reasonless 500, which Sampan does not copy.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from sampan.api import jsonwire
from sampan.api.errors import BadRequest, StatusError
from sampan.api.typecheck import go_format_value
from sampan.apiserver.openapi_data import SchemaView

__all__ = ["apply_strategic_merge_patch", "decode_strategic_patch"]

PATCH_DIRECTIVE = "$patch"
RETAIN_KEYS = "$retainKeys"
DELETE_FROM_PRIMITIVE_LIST = "$deleteFromPrimitiveList/"
SET_ELEMENT_ORDER = "$setElementOrder/"
_MERGE = "merge"


def decode_strategic_patch(body: bytes) -> dict[str, Any]:
    try:
        patch = jsonwire.loads(body)
    except ValueError as exc:
        raise BadRequest(f"error decoding patch: {exc}") from exc
    if not isinstance(patch, dict):
        raise BadRequest(
            "error decoding patch: json: cannot unmarshal array into Go value of type "
            "map[string]interface {}"
        )
    return patch


def apply_strategic_merge_patch(
    original: dict[str, Any], patch: dict[str, Any], schema: SchemaView | None
) -> dict[str, Any]:
    result = _merge_map(copy.deepcopy(original), patch, schema)
    if result is None:
        raise BadRequest("a strategic merge patch may not delete the whole object")
    return result


def _unexpected(message: str) -> StatusError:
    """An error the merge library returns unwrapped. kube-apiserver answers it as any error
    that is not a Status (a 500 with no reason, the error's text); Sampan keeps the text but
    answers 400 BadRequest: the client's patch is at fault, and no input may cause a 5xx."""
    return BadRequest(message)


def _bad_patch_type(directive: Any, where: dict[str, Any]) -> StatusError:
    """An unknown ``$patch`` value, worded as upstream (Go's ``%s`` of the value, ``%v`` of
    the map that holds it)."""
    if isinstance(directive, str):
        shown = directive
    elif isinstance(directive, bool):
        shown = f"%!s(bool={go_format_value(directive)})"
    elif isinstance(directive, int | float):
        shown = f"%!s(float64={go_format_value(float(directive))})"
    else:
        shown = f"%!s({go_format_value(directive)})"
    return _unexpected(f"unknown patch type: {shown} in map: {go_format_value(where)}")


def _merge_map(
    original: dict[str, Any] | None, patch: dict[str, Any], schema: SchemaView | None
) -> dict[str, Any] | None:
    """``original`` is owned by the caller (already a copy); returns the merged map or None
    when the patch deletes it."""
    directive = patch.get(PATCH_DIRECTIVE)
    if directive is not None:
        if directive == "delete":
            return None
        if directive == "replace":
            return _strip({k: v for k, v in patch.items() if k != PATCH_DIRECTIVE}, schema)
        if directive != _MERGE:
            raise _bad_patch_type(directive, patch)
    result = original if isinstance(original, dict) else {}
    retain = patch.get(RETAIN_KEYS)
    orders: dict[str, list[Any]] = {}
    for key, value in patch.items():
        if key in (PATCH_DIRECTIVE, RETAIN_KEYS):
            continue
        if key.startswith(SET_ELEMENT_ORDER):
            if not isinstance(value, list):
                raise BadRequest("invalid patch format of setElementOrder list")
            orders[key[len(SET_ELEMENT_ORDER) :]] = value
            continue
        if key.startswith(DELETE_FROM_PRIMITIVE_LIST):
            field = key[len(DELETE_FROM_PRIMITIVE_LIST) :]
            if not isinstance(value, list):
                raise BadRequest("invalid patch format of primitive list")
            current = result.get(field)
            if isinstance(current, list):
                result[field] = [v for v in current if v not in value]
            continue
        child_schema = schema.field(key) if schema is not None else None
        if value is None:
            result.pop(key, None)
            continue
        if isinstance(value, dict):
            current = result.get(key)
            is_map_field = child_schema is None or child_schema.type in (None, "object")
            if is_map_field:
                merged = _merge_map(
                    copy.deepcopy(current) if isinstance(current, dict) else None,
                    value,
                    child_schema,
                )
                if merged is None:
                    result.pop(key, None)
                else:
                    result[key] = merged
                continue
        if isinstance(value, list):
            result[key] = _merge_list(result.get(key), value, child_schema)
            continue
        result[key] = copy.deepcopy(value)
    for field, order in orders.items():
        current = result.get(field)
        if isinstance(current, list):
            child_schema = schema.field(field) if schema is not None else None
            result[field] = _apply_order(current, order, child_schema)
    if retain is not None:
        if not isinstance(retain, list):
            raise BadRequest("invalid patch format of retainKeys")
        for key in list(result):
            if key not in retain:
                del result[key]
    return result


def _merge_list(original: Any, patch: list[Any], schema: SchemaView | None) -> list[Any]:
    current = copy.deepcopy(original) if isinstance(original, list) else []
    strategies = schema.patch_strategies if schema is not None else ()
    if _MERGE not in strategies:
        item_schema = schema.items() if schema is not None else None
        return [_strip(item, item_schema) for item in patch]
    item_schema = schema.items() if schema is not None else None
    merge_key = schema.patch_merge_key if schema is not None else None
    replace = [
        i
        for i, item in enumerate(patch)
        if isinstance(item, dict) and item.get(PATCH_DIRECTIVE) == "replace" and len(item) == 1
    ]
    if replace:
        rest = [item for i, item in enumerate(patch) if i not in replace]
        return [_strip(item, item_schema) for item in rest]
    if merge_key is None:
        # A merge list of scalars (finalizers-like): union, keeping the original order.
        for item in patch:
            if isinstance(item, dict) and PATCH_DIRECTIVE in item:
                raise BadRequest(f"cannot use {PATCH_DIRECTIVE} in a list without a merge key")
            if item not in current:
                current.append(copy.deepcopy(item))
        return current
    for item in patch:
        if not isinstance(item, dict):
            raise BadRequest(
                f"invalid list item {go_format_value(item)}: a list with merge key "
                f"{merge_key} holds maps"
            )
        directive = item.get(PATCH_DIRECTIVE)
        if merge_key not in item:
            raise _unexpected(
                f"map: {go_format_value(item)} does not contain declared merge key: {merge_key}"
            )
        key_value = item[merge_key]
        index = next(
            (
                i
                for i, existing in enumerate(current)
                if isinstance(existing, dict) and existing.get(merge_key) == key_value
            ),
            None,
        )
        if directive == "delete":
            current = [
                e for e in current if not (isinstance(e, dict) and e.get(merge_key) == key_value)
            ]
            continue
        if directive not in (None, _MERGE, "replace"):
            raise _bad_patch_type(directive, item)
        if directive == "replace":
            replacement = _strip(
                {k: v for k, v in item.items() if k != PATCH_DIRECTIVE}, item_schema
            )
            if index is None:
                current.append(replacement)
            else:
                current[index] = replacement
            continue
        if index is None:
            merged = _merge_map(None, item, item_schema)
            if merged is not None:
                current.append(merged)
        else:
            merged = _merge_map(current[index], item, item_schema)
            if merged is None:
                current.pop(index)
            else:
                current[index] = merged
    return current


def _apply_order(items: list[Any], order: list[Any], schema: SchemaView | None) -> list[Any]:
    """Reorder ``items`` so the ones named in ``order`` follow it; others keep their slot."""
    merge_key = schema.patch_merge_key if schema is not None else None

    def identity(item: Any) -> Any:
        if merge_key is not None and isinstance(item, dict):
            return json.dumps(item.get(merge_key), sort_keys=True)
        return json.dumps(item, sort_keys=True)

    rank = {identity(entry): i for i, entry in enumerate(order)}
    ordered = sorted(
        (item for item in items if identity(item) in rank), key=lambda x: rank[identity(x)]
    )
    queue = iter(ordered)
    # Items the order list names fill, in order, the slots such items held; the rest stay.
    return [next(queue) if identity(item) in rank else item for item in items]


def _strip(value: Any, schema: SchemaView | None) -> Any:
    """A patch value used as-is (replace): directives removed, nulls in maps dropped."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, child in value.items():
            if key.startswith("$"):
                continue
            if child is None:
                continue
            child_schema = schema.field(key) if schema is not None else None
            out[key] = _strip(child, child_schema)
        return out
    if isinstance(value, list):
        item_schema = schema.items() if schema is not None else None
        return [
            _strip(item, item_schema)
            for item in value
            if not (isinstance(item, dict) and item.get(PATCH_DIRECTIVE) == "delete")
        ]
    return copy.deepcopy(value)
