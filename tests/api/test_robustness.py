"""The strategy never raises on malformed input: every field of representative objects is
replaced in turn by values of the wrong JSON type, and defaulting, preparation and validation
must still return (invalid input is reported as causes, not as a crash)."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
from test_client_schema import CASES  # sibling module (rootdir-less test dir)

from sampan.api import strategy
from sampan.api.fields import field_set
from sampan.api.resources import builtin_registry

REG = builtin_registry()
WRONG_VALUES: tuple[Any, ...] = ("x", -1, [], {}, None, True, [1], {"a": 1})


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield (*prefix, key)
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield (*prefix, index)
            yield from _paths(item, (*prefix, index))


def _replaced(obj: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    cursor: Any = out
    for key in path[:-1]:
        cursor = cursor[key]
    cursor[path[-1]] = value
    return out


@pytest.mark.parametrize(("group", "version", "plural", "model", "body"), CASES, ids=lambda v: v)
def test_malformed_fields_never_raise(
    group: str, version: str, plural: str, model: str, body: dict[str, Any]
) -> None:
    info = REG.by_resource(group, version, plural)
    base: dict[str, Any] = {
        "apiVersion": info.api_version,
        "kind": info.kind,
        "metadata": {"name": "x", "uid": "u", **({"namespace": "d"} if info.namespaced else {})},
        **copy.deepcopy(body),
    }
    strategy.default(info, base)
    strategy.prepare_for_create(info, base)
    for path in list(_paths(base)):
        if path[0] in ("apiVersion", "kind") or path[:2] == ("metadata", "name"):
            continue
        for wrong in WRONG_VALUES:
            obj = _replaced(base, path, copy.deepcopy(wrong))
            strategy.default(info, obj)
            strategy.prepare_for_create(info, obj)
            strategy.validate(info, obj)
            new = _replaced(base, path, copy.deepcopy(wrong))
            strategy.prepare_for_update(info, new, base)
            strategy.validate_update(info, new, base)
            strategy.prepare_for_status_update(info, new, base)
            strategy.validate_status_update(info, new, base)
            field_set(info, obj)
