"""Patch application: JSON Patch (RFC 6902), JSON Merge Patch (RFC 7386), strategic merge.

Owns: turning (current object, patch body, patch type) into the new object, purely, and the
list of patch types a resource accepts. Strategic merge patch (strategicpatch.py) needs the
kind's schema and is refused (415) for custom resources, as upstream; server-side apply
(``application/apply-patch+yaml``) is accepted here and applied by ``apiserver.apply``.

Invariants: the current object is never mutated (patches work on a deep copy); a patch that
cannot apply raises a StatusError (400 BadRequest for a malformed patch, with Go's decoder
words; 422 Invalid with kube-apiserver's generic message for a failed ``test`` operation, a
path that does not exist or an unknown op) and leaves nothing half-applied.
"""

from __future__ import annotations

from typing import Any

from sampan.api import jsonwire
from sampan.api.errors import BadRequest, Invalid, UnsupportedMediaType
from sampan.api.jsonwire import copy_json
from sampan.apiserver.openapi_data import SchemaView
from sampan.apiserver.strategicpatch import apply_strategic_merge_patch, decode_strategic_patch

__all__ = [
    "APPLY_PATCH",
    "JSON_PATCH",
    "MERGE_PATCH",
    "STRATEGIC_MERGE_PATCH",
    "SUPPORTED_PATCH_TYPES",
    "JSONPatchRejected",
    "apply_json_patch",
    "apply_merge_patch",
    "apply_patch",
    "check_patch_type",
]

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
SUPPORTED_PATCH_TYPES = (JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH, APPLY_PATCH)
CUSTOM_RESOURCE_PATCH_TYPES = (JSON_PATCH, MERGE_PATCH, APPLY_PATCH)
"""Custom resources have no Go types, hence no strategic-merge metadata (upstream: 415)."""


def check_patch_type(patch_type: str, *, custom: bool = False) -> None:
    """415 for a patch type the resource does not accept."""
    accepted = CUSTOM_RESOURCE_PATCH_TYPES if custom else SUPPORTED_PATCH_TYPES
    if patch_type not in accepted:
        raise UnsupportedMediaType(
            "the body of the request was in an unknown format - accepted media types include: "
            + ", ".join(accepted)
        )


def apply_patch(
    current: dict[str, Any],
    patch_body: bytes,
    patch_type: str,
    schema: SchemaView | None = None,
    *,
    field_validation: str = "",
) -> dict[str, Any]:
    """JSON, merge or strategic merge patch (``schema``: the kind's, for the latter;
    ``field_validation``: the request's directive, which picks the JSON patch decoder)."""
    if patch_type == STRATEGIC_MERGE_PATCH:
        return apply_strategic_merge_patch(current, decode_strategic_patch(patch_body), schema)
    if patch_type == JSON_PATCH:
        try:
            operations = jsonwire.loads(patch_body)
        except ValueError as exc:
            raise BadRequest(f"error decoding patch: {exc}") from exc
        return apply_json_patch(current, operations, strict=field_validation != "Ignore")
    if patch_type == MERGE_PATCH:
        try:
            patch = jsonwire.loads(patch_body)
        except ValueError as exc:
            raise BadRequest(f"error decoding patch: {exc}") from exc
        if not isinstance(patch, dict):
            raise BadRequest("error decoding patch: a merge patch must be a JSON object")
        result = apply_merge_patch(current, patch)
        assert isinstance(result, dict)
        return result
    # Apply patches need the field managers: the handlers send them to apiserver.apply.
    raise UnsupportedMediaType(
        "the body of the request was in an unknown format - accepted media types include: "
        + ", ".join((JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH))
    )


def apply_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge key by key, ``null`` deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy_json(patch)
    result = copy_json(target) if isinstance(target, dict) else {}
    _merge_into(result, patch)
    return result


def _merge_into(result: dict[str, Any], patch: dict[str, Any]) -> None:
    """Merge ``patch`` into ``result``, a copy the caller owns (each level copied once)."""
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            inner = result.get(key)
            if not isinstance(inner, dict):
                inner = {}
            result[key] = inner
            _merge_into(inner, value)
        else:
            result[key] = copy_json(value)


class _PatchFailure(Exception):
    pass


class JSONPatchRejected(Invalid):
    """A JSON patch that decodes but does not apply (a missing path, a failed ``test``, an
    unknown ``op``): kube-apiserver answers its generic 422 and drops the library's words,
    with an empty ``details``."""

    def __init__(self) -> None:
        super().__init__("the server rejected our request due to an error in our request")

    def details(self) -> dict[str, Any] | None:
        return {}


def _go_json_kind(value: Any) -> str:
    """The JSON kind as Go's json.UnmarshalTypeError names it."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return {dict: "object", list: "array", str: "string"}.get(type(value), "null")


def _check_decodes(operations: Any, *, strict: bool) -> list[Any]:
    """The patch as kube-apiserver decodes it, or its 400: with fieldValidation Strict/Warn
    (the default) a strict decode into its operation struct comes first ("error decoding
    patch: ..."); with Ignore only the jsonpatch library's decode, whose error is the
    message."""
    if operations is None:
        return []
    if strict:
        into, element = "[]handlers.jsonPatchOp", "handlers.jsonPatchOp"
    else:
        into, element = "jsonpatch.Patch", "jsonpatch.Operation"
    prefix = "error decoding patch: " if strict else ""
    if not isinstance(operations, list):
        kind = _go_json_kind(operations)
        raise BadRequest(f"{prefix}json: cannot unmarshal {kind} into Go value of type {into}")
    for operation in operations:
        if operation is not None and not isinstance(operation, dict):
            kind = _go_json_kind(operation)
            raise BadRequest(
                f"{prefix}json: cannot unmarshal {kind} into Go value of type {element}"
            )
        if not strict or operation is None:
            continue
        for key in ("op", "path", "from"):
            value = operation.get(key)
            if value is not None and not isinstance(value, str):
                raise BadRequest(
                    f"{prefix}json: cannot unmarshal {_go_json_kind(value)} into Go struct "
                    f"field jsonPatchOp.{key} of type string"
                )
    return operations


def apply_json_patch(
    current: dict[str, Any], operations: Any, *, strict: bool = True
) -> dict[str, Any]:
    operations = _check_decodes(operations, strict=strict)
    doc: Any = copy_json(current)
    for operation in operations:
        try:
            if not isinstance(operation, dict) or not isinstance(operation.get("op"), str):
                raise _PatchFailure("Unexpected kind: unknown")
            doc = _apply_operation(doc, operation)
        except _PatchFailure as exc:
            raise JSONPatchRejected() from exc
    if not isinstance(doc, dict):
        raise Invalid("the patch replaced the whole object with a non-object value")
    return doc


def _pointer(path: Any) -> list[str]:
    if not isinstance(path, str):
        raise _PatchFailure(f"invalid path: {path!r}")
    if path == "":
        return []
    if not path.startswith("/"):
        raise _PatchFailure(f'JSON pointer must start with "/": {path}')
    return [t.replace("~1", "/").replace("~0", "~") for t in path[1:].split("/")]


def _parent(doc: Any, tokens: list[str], path: str) -> tuple[Any, str]:
    node = doc
    for token in tokens[:-1]:
        node = _child(node, token, path)
    return node, tokens[-1]


def _child(node: Any, token: str, path: str) -> Any:
    if isinstance(node, dict):
        if token not in node:
            raise _PatchFailure(f"doc is missing path: {path}: missing value")
        return node[token]
    if isinstance(node, list):
        index = _index(node, token, path, allow_end=False)
        return node[index]
    raise _PatchFailure(f"doc is missing path: {path}: missing value")


def _index(node: list[Any], token: str, path: str, *, allow_end: bool) -> int:
    if token == "-" and allow_end:
        return len(node)
    if not token.isdigit() or (len(token) > 1 and token.startswith("0")):
        raise _PatchFailure(f"invalid array index {token!r} in path {path}")
    index = int(token)
    limit = len(node) if allow_end else len(node) - 1
    if index > limit:
        raise _PatchFailure(f"unable to access invalid index: {index}: invalid index referenced")
    return index


def _get(doc: Any, path: str) -> Any:
    node = doc
    for token in _pointer(path):
        node = _child(node, token, path)
    return node


def _add(doc: Any, path: str, value: Any) -> Any:
    tokens = _pointer(path)
    if not tokens:
        return copy_json(value)
    parent, last = _parent(doc, tokens, path)
    if isinstance(parent, dict):
        parent[last] = copy_json(value)
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, path, allow_end=True), copy_json(value))
    else:
        raise _PatchFailure(f"doc is missing path: {path}: missing value")
    return doc


def _remove(doc: Any, path: str) -> tuple[Any, Any]:
    tokens = _pointer(path)
    if not tokens:
        raise _PatchFailure("unable to remove the whole document")
    parent, last = _parent(doc, tokens, path)
    if isinstance(parent, dict):
        if last not in parent:
            raise _PatchFailure(f"Unable to remove nonexistent key: {last}: missing value")
        return doc, parent.pop(last)
    if isinstance(parent, list):
        return doc, parent.pop(_index(parent, last, path, allow_end=False))
    raise _PatchFailure(f"doc is missing path: {path}: missing value")


def _apply_operation(doc: Any, operation: dict[str, Any]) -> Any:
    op = operation["op"]
    path = operation.get("path")
    if op == "add":
        _require_value(operation)
        return _add(doc, path, operation["value"])
    if op == "remove":
        return _remove(doc, path)[0]
    if op == "replace":
        _require_value(operation)
        tokens = _pointer(path)
        if not tokens:
            return copy_json(operation["value"])
        _get(doc, path)  # must exist
        doc, _ = _remove(doc, path)
        return _add(doc, path, operation["value"])
    if op == "move":
        from_path = operation.get("from")
        if (
            isinstance(from_path, str)
            and isinstance(path, str)
            and path.startswith(from_path + "/")
        ):
            raise _PatchFailure(f"cannot move {from_path} into its own child {path}")
        doc, value = _remove(doc, from_path)
        return _add(doc, path, value)
    if op == "copy":
        return _add(doc, path, _get(doc, operation.get("from")))
    if op == "test":
        _require_value(operation)
        if _get(doc, path) != operation["value"]:
            raise _PatchFailure(f"testing value {path} failed: test failed")
        return doc
    raise _PatchFailure(f"Unexpected kind: {op}")


def _require_value(operation: dict[str, Any]) -> None:
    if "value" not in operation:
        raise _PatchFailure(f"missing value for {operation['op']} operation")
