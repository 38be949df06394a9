"""Server-side apply and managedFields (see ``managed`` for the semantics).

Public API: ``server_side_apply`` (an apply patch -> the new object, or ``ApplyConflict``),
``track_update`` (managedFields for create/update/non-apply patch), ``decode_apply_patch``
(the ``application/apply-patch+yaml`` body), ``FieldManager`` (what the resource handlers
call on every write), and the FieldsV1 helpers in ``fieldpath``.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from sampan.api import jsonwire
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
from sampan.apiserver.errors import BadRequest

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


class _Yaml12Loader(yaml.SafeLoader):
    """YAML with YAML 1.2 booleans: ``y``, ``yes``, ``on``... stay strings (as in the Go
    YAML library kube-apiserver uses); only true/false are booleans."""


_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


def decode_apply_patch(body: bytes) -> dict[str, Any]:
    """The applied configuration: JSON, or YAML (kubectl sends JSON, both are accepted)."""
    try:
        value = jsonwire.loads(body)
    except jsonwire.DecodeError as exc:
        if str(exc) == jsonwire.DEPTH_ERROR:
            raise BadRequest(f"error decoding patch: {exc}") from exc
        try:
            text = body.decode("utf-8")
            value = jsonwire.after_yaml(yaml.load(text, Loader=_Yaml12Loader), text)
        except (yaml.YAMLError, UnicodeDecodeError, jsonwire.DecodeError) as exc2:
            raise BadRequest(f"error decoding YAML: {exc2}") from exc2
        except RecursionError as exc2:
            raise BadRequest(f"error decoding YAML: {jsonwire.DEPTH_ERROR}") from exc2
    if not isinstance(value, dict):
        raise BadRequest("error decoding patch: an apply patch must be an object")
    return value
