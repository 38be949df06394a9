"""``jsonwire.copy_json``: the write path's deep copy is a real deep copy of JSON values, and
RFC 7386 merge patches built on it leave their inputs untouched."""

from __future__ import annotations

import copy

from sampan.api.jsonwire import copy_json
from sampan.apiserver.patch import apply_merge_patch


def test_copy_json_equals_deepcopy_and_shares_nothing() -> None:
    shared = {"k": [1, 2.5, None, True, "s"]}
    value = {"a": shared, "b": [shared, [{"c": {}}]], "t": (1, [2])}
    copied = copy_json(value)
    assert copied == copy.deepcopy(value)
    assert type(copied["t"]) is tuple  # not a JSON shape: copied by copy.deepcopy
    copied["a"]["k"].append("x")
    copied["b"][1][0]["c"]["d"] = 1
    copied["t"][1].append(3)
    assert value == {
        "a": {"k": [1, 2.5, None, True, "s"]},
        "b": [{"k": [1, 2.5, None, True, "s"]}, [{"c": {}}]],
        "t": (1, [2]),
    }
    # JSON has no aliasing: a shared sub-object comes back as two independent copies.
    assert copied["b"][0]["k"] == [1, 2.5, None, True, "s"]


def test_merge_patch_copies_once_and_keeps_inputs() -> None:
    target = {"a": {"b": {"c": 1, "d": [1]}, "e": 2}, "f": "x", "g": 1}
    patch = {"a": {"b": {"c": None, "n": {"m": [3]}}, "e": {"z": None}}, "f": None, "h": [{}]}
    before_target, before_patch = copy.deepcopy(target), copy.deepcopy(patch)
    result = apply_merge_patch(target, patch)
    assert result == {"a": {"b": {"d": [1], "n": {"m": [3]}}, "e": {}}, "g": 1, "h": [{}]}
    assert list(result) == ["a", "g", "h"]  # replaced keys keep their place, new ones last
    assert target == before_target and patch == before_patch
    result["a"]["b"]["d"].append(2)
    result["a"]["b"]["n"]["m"].append(4)
    result["h"][0]["x"] = 1
    assert target == before_target and patch == before_patch
    assert apply_merge_patch("scalar", {"a": {"b": None}}) == {"a": {}}
    assert apply_merge_patch(target, [1]) == [1]
