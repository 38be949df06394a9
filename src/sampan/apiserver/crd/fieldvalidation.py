"""Field validation (``?fieldValidation=Strict|Warn|Ignore``) of request bodies.

kube-apiserver decodes a body into its typed structs; a field the type does not declare is
*unknown*: ``Strict`` rejects the request (400 ``strict decoding error: unknown field
"spec.foo"``), ``Warn`` (the default) drops it and sends one ``Warning`` header per field,
``Ignore`` drops it silently. This module finds those fields for built-in kinds, against the
Kubernetes v1.32 definitions the API server serves (``sampan.apiserver.openapi``, loaded from
the ``kubernetes-validate`` package), and removes them. Custom resources get the same treatment
from their CRD's schema through pruning (see ``schema.prune``).

Rules of the walk (the typed decoder's view of the definitions): ``$ref`` is followed; an
object with ``properties`` knows exactly those keys; one with ``additionalProperties`` is a map;
one with neither (RawExtension, FieldsV1, JSON) takes anything; arrays walk their items.
A kind absent from the definitions is never checked.

Invariant: ``unknown_fields(..., drop=False)`` never mutates; with ``drop=True`` it removes
exactly what it reports.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sampan.api.errors import BadRequest
from sampan.api.typecheck import go_quote

__all__ = [
    "DEFAULT_DIRECTIVE",
    "DIRECTIVES",
    "OBJECT_META_DEFINITION",
    "BuiltinSchemas",
    "parse_directive",
    "strict_error",
    "unknown_field_warning",
]

DIRECTIVES = ("Strict", "Warn", "Ignore")
DEFAULT_DIRECTIVE = "Warn"
OBJECT_META_DEFINITION = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
MAX_RESOLVED_NODES = 50_000
"""Bound of the reference-resolution memo (the built-in definitions have far fewer nodes)."""

Schema = Mapping[str, Any]


def parse_directive(query: Mapping[str, str]) -> str:
    """The request's fieldValidation directive (case-sensitive, as upstream)."""
    value = query.get("fieldValidation", "")
    if not value:
        return DEFAULT_DIRECTIVE
    if value not in DIRECTIVES:
        raise BadRequest(
            f"fieldValidation parameter unsupported: {value}; supported values: "
            f'"Ignore", "Strict", "Warn"'
        )
    return value


def unknown_field_warning(path: str) -> str:
    """Upstream's strict-decoding text: the path quoted as Go's ``strconv.Quote`` does, so a
    field name with a control character reads ``"bogus\\nfield"`` (safe in a header)."""
    return f"unknown field {go_quote(path)}"


def strict_error(kind: str, version: str, paths: list[str]) -> BadRequest:
    """The 400 a Strict request with unknown fields gets."""
    detail = ", ".join(unknown_field_warning(p) for p in paths)
    return BadRequest(
        f'{kind} in version "{version}" cannot be handled as a {kind}: '
        f"strict decoding error: {detail}"
    )


class BuiltinSchemas:
    """Unknown-field detection over the served definitions (``OpenAPI.definition_name`` and
    ``OpenAPI.definition``: the built-in v1.32 ones, references as ``.../<name>``)."""

    def __init__(
        self,
        definition_name: Callable[[str, str, str], str | None],
        definition: Callable[[str], Mapping[str, Any] | None],
    ) -> None:
        self._definition_name = definition_name
        self._definition = definition
        self._resolved: dict[int, tuple[Schema, Schema]] = {}

    def schema_for(self, group: str, version: str, kind: str) -> Schema | None:
        name = self._definition_name(group, version, kind)
        return self._definition(name) if name else None

    def object_meta(self) -> Schema | None:
        return self._definition(OBJECT_META_DEFINITION)

    def _resolve(self, schema: Schema) -> Schema:
        """``schema`` with references followed; memoized per node (the node is kept alive in
        the memo, so its id cannot be reused by another node)."""
        memo = self._resolved.get(id(schema))
        if memo is not None and memo[0] is schema:
            return memo[1]
        node = schema
        for _ in range(16):  # bounded: definitions may be recursive
            ref = node.get("$ref")
            all_of = node.get("allOf")
            if isinstance(ref, str):
                target = self._definition(ref.rpartition("/")[2])
                if target is None:
                    node = {}
                    break
                node = target
            elif isinstance(all_of, list) and len(all_of) == 1 and isinstance(all_of[0], Mapping):
                node = all_of[0]
            else:
                break
        if len(self._resolved) < MAX_RESOLVED_NODES:
            self._resolved[id(schema)] = (schema, node)
        return node

    def unknown_fields(
        self, schema: Schema | None, obj: Any, *, drop: bool, path: str = ""
    ) -> list[str]:
        """Paths of the fields of ``obj`` that ``schema`` does not declare; with ``drop``
        they are removed from ``obj``."""
        if schema is None:
            return []
        found: list[str] = []
        self._walk(obj, schema, path, found, drop=drop)
        return found

    def _walk(self, value: Any, schema: Schema, path: str, found: list[str], *, drop: bool) -> None:
        schema = self._resolve(schema)
        if schema.get("x-kubernetes-preserve-unknown-fields"):
            return
        if isinstance(value, dict):
            properties = schema.get("properties")
            additional = schema.get("additionalProperties")
            if isinstance(properties, Mapping):
                for key in list(value):
                    child = f"{path}.{key}" if path else key
                    sub = properties.get(key)
                    if not isinstance(sub, Mapping):
                        found.append(child)
                        if drop:
                            del value[key]
                        continue
                    self._walk(value[key], sub, child, found, drop=drop)
            elif isinstance(additional, Mapping):
                for key, item in value.items():
                    self._walk(item, additional, f"{path}[{key}]", found, drop=drop)
        elif isinstance(value, list):
            items = schema.get("items")
            if isinstance(items, Mapping):
                for i, item in enumerate(value):
                    self._walk(item, items, f"{path}[{i}]", found, drop=drop)
