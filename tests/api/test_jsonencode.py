"""``jsonwire.dumps`` (orjson where it agrees) writes exactly the bytes ``json.dumps(...,
separators=(",", ":"), ensure_ascii=False).encode()`` writes, and fails where it fails;
``errors.go_json`` keeps Go's escapes. A large random corpus of JSON-shaped values (floats of
every magnitude, integers beyond 64 bits, unicode and escapes, lone surrogates, non-finite
floats, non-string keys, subclasses, deep nesting) is encoded both ways."""

from __future__ import annotations

import enum
import json
import random
import struct
import uuid
from typing import Any

import pytest

from sampan.api.errors import go_json
from sampan.api.jsonwire import dumps, dumps_go


def reference(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def outcome(encode: Any, value: Any) -> tuple[str, object]:
    try:
        return "ok", encode(value)
    except Exception as exc:  # the failure must be the same one
        return type(exc).__name__, str(exc)


_CHARS = (
    "azAZ09 -_./:@\"\\<>&'\x00\x01\x08\x09\x0a\x0c\x0d\x1f\x7f\x80\x9f\u00e9\u00ff\u0100"
    "\u2028\u2029\ufeff\uffff\u4e2d\U0001f600\U0010ffff"
)


def random_float(rng: random.Random) -> float:
    kind = rng.randrange(4)
    if kind == 0:  # any bit pattern (NaN and infinities included)
        return struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0]
    if kind == 1:  # every decimal magnitude, where the text's shape changes
        return rng.choice((1, -1)) * rng.random() * 10.0 ** rng.randint(-30, 30)
    if kind == 2:
        return float(rng.randint(-(10**18), 10**18))
    return rng.choice(
        (
            0.0,
            -0.0,
            0.1,
            1e21,
            1e22,
            1e16,
            1e15,
            1e-4,
            1e-5,
            1e-7,
            1e-9,
            1e-10,
            5e-324,
            1.7976931348623157e308,
            0.00001234,
            2.5e-7,
            1.0,
            100.0,
        )
    )


def random_int(rng: random.Random) -> int:
    bits = rng.choice((4, 31, 53, 63, 64, 65, 100, 300))
    return rng.choice((1, -1)) * rng.getrandbits(bits)


def random_text(rng: random.Random, *, surrogates: bool) -> str:
    chars = _CHARS + ("\ud800\udc00\udfff" if surrogates else "")
    text = "".join(rng.choice(chars) for _ in range(rng.randrange(12)))
    if rng.random() < 0.05:  # text that looks like the numbers the encoder checks for
        text += rng.choice(("0.00001", "1e-7", "null", "3e-4x", "NaN", "1e999"))
    return text


def random_value(rng: random.Random, depth: int, *, odd: bool) -> Any:
    roll = rng.random()
    if depth > 5 or roll < 0.45:
        scalar = rng.randrange(8)
        if scalar == 0:
            return None
        if scalar == 1:
            return rng.random() < 0.5
        if scalar in (2, 3):
            return random_text(rng, surrogates=odd)
        if scalar in (4, 5):
            return random_int(rng)
        return random_float(rng)
    if roll < 0.7:
        return [random_value(rng, depth + 1, odd=odd) for _ in range(rng.randrange(5))]
    out: dict[Any, Any] = {}
    for _ in range(rng.randrange(6)):
        key: Any = random_text(rng, surrogates=odd)
        if odd and rng.random() < 0.05:
            key = rng.choice((1, 2.5, True, None))
        out[key] = random_value(rng, depth + 1, odd=odd)
    return out


class Text(str):
    pass


class Number(int):
    pass


class Mapping(dict):  # type: ignore[type-arg]
    pass


class Plain(enum.Enum):
    A = 1


class Count(enum.IntEnum):
    ONE = 1


class Word(enum.StrEnum):
    A = "a<b"


def nest(depth: int) -> Any:
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("odd", [False, True])
def test_dumps_writes_what_json_dumps_writes(odd: bool) -> None:
    rng = random.Random(23 + odd)
    for _ in range(20_000):
        value = random_value(rng, 0, odd=odd)
        assert outcome(dumps, value) == outcome(reference, value), value
        assert outcome(go_json, value) == outcome(go_json_reference, value), value


@pytest.mark.parametrize(
    "value",
    [
        1e21,
        0.1,
        -0.0,
        1e-5,
        1e-7,
        9.87e-9,
        1e-10,
        1e16,
        1e15,
        5e-324,
        float("nan"),
        float("inf"),
        float("-inf"),
        [float("nan"), None],
        {"a": None},
        2**64,
        2**64 - 1,
        -(2**63),
        -(2**63) - 1,
        10**40,
        {"n": -(10**30)},
        "\ud800",
        {"\udfff": 1},
        "<a href='x'>&\u2028\u2029</a>",
        "\x00\x1f\x7f\u00e9",
        {1: "a", 2.5: "b", False: "c", None: "d"},
        (1, [2, (3,)]),
        Text("t"),
        {Text("k"): Number(3)},
        Mapping(a=1),
        Count.ONE,
        Word.A,
        [[[[[[]]]]]],
        nest(300),
        "0.00001 1e-7 null",
        {"null": "null"},
        [1e-5, -1e-5, 0.5, 1e-7],
        {"a": 1e-7, "b": [2e-6], "c": {"d": -3.5e-5}},
        {"renewTime": "2026-12-07T15:10:00.000012Z", "n": 1e-5},
        {"uid": "0d1f33e-4a9c-4e7b", "x": 7e-9},
        {"s": "a:1e-5,b", "t": "[0.00001]"},
    ],
)
def test_dumps_edge_cases(value: Any) -> None:
    assert outcome(dumps, value) == outcome(reference, value)
    assert outcome(go_json, value) == outcome(go_json_reference, value)


def test_enum_and_uuid_are_written_as_their_value() -> None:
    # The documented difference: json.dumps refuses these (no JSON document yields them).
    assert outcome(reference, Plain.A)[0] == "TypeError"
    assert dumps(Plain.A) == b"1"
    assert dumps({"u": uuid.UUID(int=2)}) == b'{"u":"00000000-0000-0000-0000-000000000002"}'


def test_circular_value_fails_as_json_dumps() -> None:
    loop: list[Any] = []
    loop.append(loop)
    assert outcome(dumps, loop) == outcome(reference, loop)


_GO = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def go_json_reference(value: Any) -> bytes:
    """What ``go_json`` wrote before orjson: ``json.dumps``, Go's escapes, U+FFFD for a lone
    surrogate."""
    import re

    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False).translate(
        str.maketrans(_GO)
    )
    try:
        return text.encode()
    except UnicodeEncodeError:
        return re.sub("[\ud800-\udfff]", "\ufffd", text).encode()


def test_dumps_go_escapes_html_and_line_separators() -> None:
    value = {"m": "a<b>&c\u2028\u2029\u00e9"}
    assert dumps_go(value) == b'{"m":"a\\u003cb\\u003e\\u0026c\\u2028\\u2029\xc3\xa9"}'
    assert dumps(value) == reference(value)


def test_timestamps_and_uids_like_float_text_take_the_fast_path(monkeypatch) -> None:
    """Text inside strings that looks like the floats orjson writes differently (a
    microsecond timestamp's ``00.0000``, a UID's ``3e-4a``) is not a reason to fall back to
    ``json.dumps``; a real such float is."""
    from sampan.api import jsonwire

    calls: list[Any] = []
    real = jsonwire._json_dumps
    monkeypatch.setattr(jsonwire, "_json_dumps", lambda v: calls.append(v) or real(v))
    lease = {
        "metadata": {"name": "n1", "uid": "5c0f93e-4b2d-4e1f-9a3e-7c1d2e3f4a5b"},
        "spec": {"renewTime": "2026-12-07T15:10:00.000012Z", "leaseDurationSeconds": 40},
    }
    assert dumps(lease) == reference(lease)
    assert calls == []
    with_float = {**lease, "ratio": 1e-5}
    assert dumps(with_float) == reference(with_float)
    assert calls == [with_float]
