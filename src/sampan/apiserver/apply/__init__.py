"""Server-side apply and managedFields (see ``managed`` for the semantics).

Public API: ``server_side_apply`` (an apply patch -> the new object, or ``ApplyConflict``),
``track_update`` (managedFields for create/update/non-apply patch), ``decode_apply_patch``
(the ``application/apply-patch+yaml`` body), ``FieldManager`` (what the resource handlers
call on every write), and the FieldsV1 helpers in ``fieldpath``.
"""

from __future__ import annotations

from typing import Any

import yaml

from sampan.api import jsonwire
from sampan.api.errors import BadRequest
from sampan.apiserver.apply.fieldpath import from_fields_v1, path_string, to_fields_v1
from sampan.apiserver.apply.managed import (
    APPLY,
    UPDATE,
    ApplyConflict,
    ManagedEntry,
    read_entries,
    server_side_apply,
    track_update,
)
from sampan.apiserver.apply.request import FieldManager

__all__ = [
    "APPLY",
    "UPDATE",
    "ApplyConflict",
    "FieldManager",
    "ManagedEntry",
    "decode_apply_patch",
    "from_fields_v1",
    "path_string",
    "read_entries",
    "server_side_apply",
    "to_fields_v1",
    "track_update",
]


def decode_apply_patch(body: bytes) -> dict[str, Any]:
    """The applied configuration: JSON, or YAML (kubectl sends JSON, both are accepted)."""
    try:
        value = jsonwire.loads(body)
    except jsonwire.DecodeError as exc:
        if str(exc) == jsonwire.DEPTH_ERROR:
            raise BadRequest(f"error decoding patch: {exc}") from exc
        try:
            value = jsonwire.load_yaml(body.decode("utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError, jsonwire.DecodeError) as exc2:
            raise BadRequest(f"error decoding YAML: {exc2}") from exc2
    if not isinstance(value, dict):
        raise BadRequest("error decoding patch: an apply patch must be an object")
    return value
