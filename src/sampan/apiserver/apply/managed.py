"""Server-side apply and ``metadata.managedFields`` bookkeeping.

Owns two operations over an object in its request version (pure functions; the caller stores
the result):

* ``track_update(old, new, ...)`` — a create, update or non-apply patch by ``manager``: the
  fields whose value the write set or changed become the manager's (an ``Update`` entry, one
  per manager/apiVersion/subresource), and leave every other manager; fields the write
  removed leave every manager. Writes never conflict.
* ``server_side_apply(live, applied, ...)`` — an ``application/apply-patch+yaml`` request:
  the applied configuration is merged into the live object by the schema's list semantics
  (maps by their keys, sets by value, everything else replaced); fields the manager applied
  last time and omits now are removed unless another manager owns them; a field another
  manager owns whose value the apply would change is a conflict (409 listing each field and
  manager) unless ``force``, which takes the field over. The manager's ``Apply`` entry then
  holds exactly the applied fields, shared with managers that hold the same values.

Not tracked, as upstream: ``apiVersion``, ``kind`` and the system metadata (name, namespace,
uid, resourceVersion, generation, creationTimestamp, managedFields...); ``status`` on the
main resource of a kind with a status subresource, and everything but ``status`` on that
subresource. Invariants: entries with no fields are dropped; a client-supplied
``managedFields`` that differs from the stored one replaces it (``[]`` resets ownership).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sampan.api import times
from sampan.api.errors import BadRequest, Cause, Conflict
from sampan.api.jsonwire import copy_json
from sampan.apiserver.apply.fieldpath import (
    Path,
    flatten,
    from_fields_v1,
    item_key,
    key_defaults,
    list_semantics,
    path_string,
    to_fields_v1,
)
from sampan.apiserver.openapi_data import SchemaView

__all__ = [
    "APPLY",
    "UPDATE",
    "ApplyConflict",
    "ManagedEntry",
    "field_set",
    "read_entries",
    "server_side_apply",
    "track_update",
]

APPLY = "Apply"
_MISSING = object()
UPDATE = "Update"
FIELDS_TYPE = "FieldsV1"
_STRIPPED_TOP = ("f:apiVersion", "f:kind")
_STRIPPED_META = frozenset(
    {
        "f:name",
        "f:namespace",
        "f:uid",
        "f:resourceVersion",
        "f:generation",
        "f:creationTimestamp",
        "f:managedFields",
        "f:selfLink",
        "f:deletionTimestamp",
        "f:deletionGracePeriodSeconds",
    }
)


class ApplyConflict(Conflict):
    """409 for server-side apply: each cause names a field and the manager owning it;
    ``paths`` holds the conflicting field paths."""

    paths: frozenset[Path] = frozenset()


@dataclass
class ManagedEntry:
    manager: str
    operation: str
    api_version: str
    subresource: str
    time: str
    fields: set[Path]
    stored: tuple[frozenset[Path], dict[str, Any]] | None = field(
        default=None, compare=False, repr=False
    )
    """The fields as read from a stored object and their ``fieldsV1`` as stored (written by
    ``to_json``, so canonical): ``to_json`` reuses it while the fields are unchanged instead
    of rebuilding the same tree."""

    @property
    def key(self) -> tuple[str, str, str]:
        # Update entries are per manager and subresource (the apiVersion is replaced on
        # each write); Apply entries are per manager and subresource too.
        return (self.manager, self.operation, self.subresource)

    def to_json(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "manager": self.manager,
            "operation": self.operation,
            "apiVersion": self.api_version,
        }
        if self.time:
            entry["time"] = self.time
        entry["fieldsType"] = FIELDS_TYPE
        if self.stored is not None and self.stored[0] == self.fields:
            entry["fieldsV1"] = copy_json(self.stored[1])
        else:
            entry["fieldsV1"] = to_fields_v1(self.fields)
        if self.subresource:
            entry["subresource"] = self.subresource
        return entry


def _now() -> str:
    return times.now()


def read_entries(obj: dict[str, Any] | None, *, stored: bool = False) -> list[ManagedEntry]:
    """The entries of ``obj``'s managedFields; ``stored``: ``obj`` was read from storage, so
    its ``fieldsV1`` trees are canonical and may be reused while unchanged."""
    if not isinstance(obj, dict):
        return []
    raw = (obj.get("metadata") or {}).get("managedFields")
    if not isinstance(raw, list):
        return []
    entries = []
    for item in raw:
        if not isinstance(item, dict):
            continue
        raw = item.get("fieldsV1") or {}
        fields = from_fields_v1(raw)
        entries.append(
            ManagedEntry(
                manager=str(item.get("manager") or ""),
                operation=str(item.get("operation") or UPDATE),
                api_version=str(item.get("apiVersion") or ""),
                subresource=str(item.get("subresource") or ""),
                time=str(item.get("time") or ""),
                fields=fields,
                stored=(frozenset(fields), raw) if stored and isinstance(raw, dict) else None,
            )
        )
    return entries


def _write_entries(obj: dict[str, Any], entries: list[ManagedEntry]) -> None:
    metadata = obj.setdefault("metadata", {})
    kept = [e.to_json() for e in entries if e.fields]
    if kept:
        metadata["managedFields"] = kept
    else:
        metadata.pop("managedFields", None)


Normalize = Callable[[dict[str, Any]], dict[str, Any]]
"""Returns a defaulted copy of an object (the API server's defaulting for the kind); it must
not modify its argument."""


def _same(obj: dict[str, Any]) -> dict[str, Any]:
    return obj


def _tracked(
    obj: Any, schema: SchemaView | None, *, subresource: str, has_status: bool, ref: Any = None
) -> dict[Path, Any]:
    """The owned paths of ``obj`` that managedFields tracks for this (sub)resource."""
    if not isinstance(obj, dict):
        return {}
    if has_status:
        # Only one side of ``status`` is tracked: flatten just that side (the same paths).
        if subresource == "status":
            status = obj.get("status")
            if status is None:
                return {}
            flat = flatten(
                status,
                schema.field("status") if schema is not None else None,
                ("f:status",),
                ref=ref.get("status") if isinstance(ref, dict) else None,
            )
        else:
            obj = {k: v for k, v in obj.items() if k != "status"}
            flat = flatten(obj, schema, ref=ref)
    else:
        flat = flatten(obj, schema, ref=ref)
    out: dict[Path, Any] = {}
    for path, value in flat.items():
        if not path or path[0] in _STRIPPED_TOP:
            continue
        if path[0] == "f:metadata" and (len(path) < 2 or path[1] in _STRIPPED_META):
            continue
        if has_status:
            is_status = path[0] == "f:status"
            if (subresource == "status") != is_status:
                continue
        out[path] = value
    return out


def field_set(
    obj: dict[str, Any], schema: SchemaView | None, *, subresource: str = "", has_status: bool
) -> set[Path]:
    """The tracked field paths of an object (e.g. a last-applied configuration)."""
    return set(_tracked(obj, schema, subresource=subresource, has_status=has_status))


def _client_reset(old: dict[str, Any] | None, new: dict[str, Any]) -> list[ManagedEntry] | None:
    """The client's own managedFields when it changed them, else None (keep the stored)."""
    new_meta = new.get("metadata") or {}
    if "managedFields" not in new_meta:
        return None
    old_raw = ((old or {}).get("metadata") or {}).get("managedFields")
    if new_meta.get("managedFields") == old_raw:
        return None
    return read_entries(new)


def track_update(
    old: dict[str, Any] | None,
    new: dict[str, Any],
    *,
    manager: str,
    api_version: str,
    schema: SchemaView | None,
    subresource: str = "",
    has_status: bool = False,
    normalize: Normalize = _same,
) -> dict[str, Any]:
    """``new`` with managedFields updated for a non-apply write by ``manager`` (a shallow
    copy with its own metadata: ``new`` itself is not modified).

    Ownership is computed on ``normalize(new)`` (defaults applied), as the stored object
    will read; the returned object is ``new`` itself plus managedFields."""
    result = {**new, "metadata": dict(new.get("metadata") or {})}
    reset = _client_reset(old, new)
    entries = reset if reset is not None else read_entries(old, stored=True)
    if reset is None and old is not None and _without_managed(old) == _without_managed(new):
        _write_entries(result, entries)  # an identical write: nobody's ownership changes
        return result
    if reset is not None and not reset:
        # An emptied managedFields: ownership starts over with this write owning it all.
        old = None
    before = _tracked(old, schema, subresource=subresource, has_status=has_status)
    after = _tracked(
        normalize(_without_managed(result)),
        schema,
        subresource=subresource,
        has_status=has_status,
    )
    changed = {p for p, v in after.items() if p not in before or before[p] != v}
    removed = before.keys() - after.keys()
    if not changed and not removed and reset is None:
        _write_entries(result, entries)
        return result
    mine: ManagedEntry | None = None
    for entry in entries:
        if (
            entry.manager == manager
            and entry.operation == UPDATE
            and (entry.subresource == subresource)
        ):
            mine = entry
            continue
        entry.fields -= changed
        entry.fields -= removed
    if mine is None:
        mine = ManagedEntry(manager, UPDATE, api_version, subresource, _now(), set())
        entries.append(mine)
    if changed:
        mine.time = _now()
    mine.api_version = api_version
    mine.fields = (mine.fields | changed) - removed
    _write_entries(result, entries)
    return result


def _merge(live: Any, applied: Any, schema: SchemaView | None) -> Any:
    if isinstance(applied, dict):
        if not isinstance(live, dict) or (schema is not None and schema.map_type == "atomic"):
            return _without_nulls(applied)
        out = copy_json(live)
        for key, value in applied.items():
            if value is None:
                continue
            child_schema = schema.field(key) if schema is not None else None
            out[key] = _merge(live.get(key), value, child_schema)
        return out
    if isinstance(applied, list) and isinstance(live, list):
        kind, keys = list_semantics(schema)
        if kind == "set":
            out_list = copy_json(live)
            for item in applied:
                if item not in out_list:
                    out_list.append(copy_json(item))
            return out_list
        if kind == "map":
            item_schema = schema.items() if schema is not None else None
            out_list = copy_json(live)
            defaults = key_defaults(schema, keys)
            index = {item_key(item, keys, defaults): i for i, item in enumerate(out_list)}
            for item in applied:
                element = item_key(item, keys, defaults)
                if element is None:
                    return _without_nulls(applied)
                if element in index:
                    position = index[element]
                    out_list[position] = _merge(out_list[position], item, item_schema)
                else:
                    index[element] = len(out_list)
                    out_list.append(_without_nulls(item))
            return out_list
    return _without_nulls(applied)


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def _remove_path(obj: Any, path: Path) -> None:
    """Remove what ``path`` names from ``obj`` (in place); a missing path is a no-op."""
    node = obj
    for depth, element in enumerate(path):
        last = depth == len(path) - 1
        kind, _, text = element.partition(":")
        if kind == "f":
            if not isinstance(node, dict) or text not in node:
                return
            if last:
                del node[text]
                return
            node = node[text]
        elif kind in ("k", "v"):
            if not isinstance(node, list):
                return
            if kind == "k":
                keys = json.loads(text)
                position = next(
                    (
                        i
                        for i, item in enumerate(node)
                        if isinstance(item, dict) and all(item.get(k) == v for k, v in keys.items())
                    ),
                    None,
                )
            else:
                value = json.loads(text)
                position = next((i for i, item in enumerate(node) if item == value), None)
            if position is None:
                return
            if last:
                node.pop(position)
                return
            node = node[position]
        else:
            return


def _manager_label(entry: ManagedEntry) -> str:
    label = json.dumps(entry.manager)
    if entry.subresource:
        label += f" with subresource {json.dumps(entry.subresource)}"
    if entry.operation == UPDATE:
        label += f" using {entry.api_version}"
    return label


def _conflict_error(conflicts: list[tuple[ManagedEntry, Path]]) -> ApplyConflict:
    causes = [
        Cause(
            "FieldManagerConflict",
            f"conflict with {_manager_label(entry)}",
            path_string(path),
        )
        for entry, path in conflicts
    ]
    if len(conflicts) == 1:
        entry, path = conflicts[0]
        message = (
            f"Apply failed with 1 conflict: conflict with {_manager_label(entry)}: "
            f"{path_string(path)}"
        )
    else:
        by_manager: dict[str, list[str]] = {}
        for entry, path in conflicts:
            by_manager.setdefault(_manager_label(entry), []).append(path_string(path))
        lines: list[str] = []
        for label in sorted(by_manager):
            lines.append(f"conflicts with {label}:")
            lines.extend(f"- {p}" for p in by_manager[label])
        message = f"Apply failed with {len(conflicts)} conflicts: " + "\n".join(lines)
    error = ApplyConflict(message, causes=causes)
    error.paths = frozenset(path for _, path in conflicts)
    return error


def server_side_apply(
    live: dict[str, Any] | None,
    applied: dict[str, Any],
    *,
    manager: str,
    api_version: str,
    schema: SchemaView | None,
    force: bool = False,
    subresource: str = "",
    has_status: bool = False,
    normalize: Normalize = _same,
) -> dict[str, Any]:
    """The object after ``manager`` applies ``applied`` to ``live`` (None: a create)."""
    if not manager:
        raise BadRequest(
            'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: '
            "is required for apply patch"
        )
    base = copy_json(live) if isinstance(live, dict) else {}
    entries = read_entries(base)
    merged = normalize(_merge(base, applied, schema))
    applied_flat = _tracked(
        applied, schema, subresource=subresource, has_status=has_status, ref=merged
    )
    live_flat = _tracked(base, schema, subresource=subresource, has_status=has_status)
    mine: ManagedEntry | None = None
    others: list[ManagedEntry] = []
    for entry in entries:
        if (
            entry.manager == manager
            and entry.operation == APPLY
            and (entry.subresource == subresource)
        ):
            mine = entry
        else:
            others.append(entry)
    conflicts: list[tuple[ManagedEntry, Path]] = []
    for entry in others:
        # Managers are identities (name, operation, subresource): the same name through an
        # Update (``kubectl scale``) conflicts with its Apply, as upstream.
        for path in sorted(entry.fields & applied_flat.keys()):
            if live_flat.get(path, _MISSING) != applied_flat[path]:
                conflicts.append((entry, path))
    if conflicts and not force:
        raise _conflict_error(conflicts)
    for entry, path in conflicts:
        entry.fields.discard(path)
    result = _merge(base, applied, schema)
    if mine is not None:
        owned_by_others = set().union(*(e.fields for e in others)) if others else set()
        # Shortest paths first: a list item goes whole (its key fields with it) before its
        # fields are visited; removing a field below what is already gone is a no-op.
        for path in sorted(mine.fields - applied_flat.keys(), key=len):
            if path in owned_by_others or any(p[: len(path)] == path for p in owned_by_others):
                continue
            _remove_path(result, path)
    if mine is None:
        mine = ManagedEntry(manager, APPLY, api_version, subresource, "", set())
        entries.append(mine)
    unchanged = (
        not conflicts
        and mine.fields == set(applied_flat)
        and mine.api_version == api_version
        and _without_managed(result) == _without_managed(base)
    )
    if unchanged:
        # A no-op apply keeps the entry's time, so the object (and its resourceVersion) stays
        # as it was and the store skips the write.
        return base
    mine.api_version = api_version
    mine.time = _now()
    mine.fields = set(applied_flat)
    # Keep only the entries still present (forced conflicts emptied some of the others).
    _write_entries(result, [e for e in entries if e is mine or e in others])
    return result


def _without_managed(obj: dict[str, Any]) -> dict[str, Any]:
    metadata = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "managedFields"}
    return {**obj, "metadata": metadata}
