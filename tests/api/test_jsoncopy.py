"""``jsonwire.copy_json``: the write path's deep copy is a real deep copy of JSON values, and
RFC 7386 merge patches built on it leave their inputs untouched. ``jsonwire.parse`` (orjson)
reads exactly what ``json.loads`` reads, errors included."""

from __future__ import annotations

import copy
import enum
import json
import math
import uuid

import pytest

from sampan.api.jsonwire import copy_json, parse
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


def _nested(depth: int) -> list[object]:
    value: list[object] = [1]
    for _ in range(depth):
        value = [value]
    return value


class _Color(enum.Enum):
    RED = "red"


class _Name(str):
    pass


@pytest.mark.parametrize(
    "value",
    [
        {"a": [1, 2.5, -0.0, None, True, "é"], "b": {"c": {}}, "d": []},
        [{"lastProbeTime": None}, 18446744073709551615, -9223372036854775808],
        {"t": (1, [2])},  # orjson would write the tuple as an array
        {"n": math.nan, "i": [math.inf]},  # orjson would write null
        {"u": uuid.UUID(int=1), "e": _Color.RED},  # orjson would write their values
        {"big": 2**70},  # orjson refuses
        {1: "int key"},  # orjson refuses
        {"sub": _Name("x"), "b": True},  # orjson refuses subclasses (passthrough)
        {"lone": "\ud800"},  # orjson refuses a lone surrogate
        _nested(300),  # orjson refuses beyond 255 levels
    ],
)
def test_copy_json_is_deepcopy_whichever_way_it_copies(value: object) -> None:
    """The orjson round trip is kept only when it gives back exactly the original; every
    value it would change or refuses is walked instead (the types must match, not only
    compare equal)."""
    copied = copy_json(value)
    assert repr(copied) == repr(copy.deepcopy(value))
    assert copied is not value

    def shapes(v: object) -> object:
        if isinstance(v, dict):
            return (type(v), [(type(k), shapes(x)) for k, x in v.items()])
        if isinstance(v, (list, tuple)):
            return (type(v), [shapes(x) for x in v])
        return type(v)

    assert shapes(copied) == shapes(value)


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


@pytest.mark.parametrize(
    "data",
    [
        b'{"kind":"Pod","metadata":{"name":"p","labels":{"a":"\\u00e9\\n"}},"spec":{"n":[1,2.5e-7,-0.0,true,null]}}',
        b'{"big":123456789012345678901234567890,"max":18446744073709551615,"neg":-9223372036854775809}',
        b'{"lone":"\\ud800","pair":"\\ud83d\\ude00"}',
        b'{"a":1,"a":2}',
        b'{"huge":1e400}',
        b'{"nan":NaN}',
        b"[" * 600 + b"]" * 600,
        '{"text":"\u00e9"}'.encode(),
        # Long digit runs as numbers (every form a number token can take) and in strings.
        b"[12345678901234567890123,-12345678901234567890123, 12345678901234567890123]",
        b'{"f":0.12345678901234567890123,"g":-1.12345678901234567890123e5}',
        b'{"e":1e12345678901234567890,"h":-2.5E-12345678901234567890,"i":3e+12345678901234567890}',
        b'{"id":"containerd://8db253f4b4531d82b60139187712345678901234567890bed0e0763d"}',
        b'{"s":"12345678901234567890123","t":"a:12345678901234567890123","u":"x-1.5e12345678901234567890"}',
        b"12345678901234567890123",
    ],
)
def test_parse_reads_what_json_loads_reads(data: bytes) -> None:
    assert repr(parse(data)) == repr(json.loads(data))
    value = parse(data)
    if isinstance(value, dict) and "big" in value:
        assert type(value["big"]) is int  # never a float, as orjson alone would give
    if isinstance(value, dict) and "huge" in value:
        assert math.isinf(value["huge"])


@pytest.mark.parametrize("data", [b"", b"{", b'{"a":}', b"\xff", b"[1,]"])
def test_parse_fails_as_json_loads_does(data: bytes) -> None:
    with pytest.raises(ValueError) as expected:
        json.loads(data)
    with pytest.raises(ValueError) as got:
        parse(data)
    assert type(got.value) is type(expected.value)
    assert str(got.value) == str(expected.value)


def test_parse_reads_digit_runs_in_strings_with_orjson(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 64-hex container ID or digest holds a run of 19+ decimal digits now and then; inside a
    string it cannot be a number, so the text stays on orjson (a LIST of 20,000 pods has
    dozens such IDs, and one sent the whole body to ``json.loads``). A run that may be a
    number still goes there."""
    from sampan.api import jsonwire

    calls: list[bytes] = []
    real = json.loads

    def counting(data: bytes) -> object:
        calls.append(data)
        return real(data)

    monkeypatch.setattr(jsonwire.json, "loads", counting)
    in_strings = [
        b'{"containerID":"kwok://8db253f4b4531d82b601391877b9934683178770959359bed0e0763d"}',
        b'{"imageID":"sha256:12345678901234567890123456789abc","x":"v12345678901234567890"}',
        b'["9e12345678901234567890 is text", "a b-12345678901234567890"]',
    ]
    for data in in_strings:
        assert parse(data) == real(data)
    assert calls == []
    numbers = [
        b'{"n":12345678901234567890123}',
        b"[1,\n -12345678901234567890123]",
        b'{"f":7.12345678901234567890123}',
        b'{"e":1.5e-12345678901234567890}',
    ]
    for data in numbers:
        assert repr(parse(data)) == repr(real(data))
    assert calls == numbers
