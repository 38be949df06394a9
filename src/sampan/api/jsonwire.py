"""Request JSON parsed the way kube-apiserver's Go decoder reads it, safely.

Owns turning client bytes (a body, a patch) into Python values with three guarantees the
standard library does not give:

* **Bounded nesting.** Nothing deeper than ``MAX_DEPTH`` arrays/objects is returned, so every
  recursive walk downstream (field validation, patches, deep copies, serialisation) stays far
  below Python's recursion limit. Go's decoder stops at 10,000 levels (``exceeded max
  depth``); Python's own parser gives up near 1,000 with a RecursionError, and the recursive
  code after it much earlier, so Sampan's bound is lower and answered the same way: a decode
  error (400), never a 500. ``check_depth`` bounds values built after parsing without
  recursion; ``check_object_depth`` bounds an object's own content a little lower, so the
  managed fields the server adds never take an object it stored over the request bound.
* **No lone surrogates.** ``"\\ud800"`` is valid JSON text but no valid Unicode; Go's decoder
  replaces each unpaired surrogate escape with U+FFFD, and so does this module (Python keeps
  it, and the first ``.encode()`` later fails).
* **Invalid UTF-8 becomes U+FFFD.** Go's decoder coerces each invalid byte inside a string
  to U+FFFD (outside strings it is a syntax error); Python's ``json.loads`` on bytes refuses
  some such bytes and decodes others (an encoded surrogate) into lone surrogates.
* **No NaN/Infinity.** Python accepts those literals; Go does not (``invalid character 'N'
  looking for beginning of value``).

``copy_json`` is ``copy.deepcopy`` for such values (dicts, lists, scalars) at a sixth of
its cost: the write path copies whole objects several times per request (admission,
patches, the store's compare-and-swap), and ``copy.deepcopy``'s generic dispatch and memo
dominated it. It encodes and decodes with orjson and keeps the result only when it equals
the original; anything that is not a JSON shape (a tuple, an object) is still handed to
``copy.deepcopy``.

``parse`` reads JSON that Sampan itself or a Kubernetes server wrote (stored values, watch
events, API answers) with orjson, and gives exactly ``json.loads``'s result: text orjson would
read differently (an integer too long for 64 bits, which orjson makes a float) or refuses
(NaN, lone surrogates, invalid UTF-8, deep nesting) goes to ``json.loads``, errors included.

``dumps`` writes compact JSON byte for byte as ``json.dumps(obj, separators=(",", ":"),
ensure_ascii=False).encode()`` does (the encoding of every stored and served object), with
orjson where the two agree: orjson writes the same escapes (control characters as ``\\uXXXX``
or their short forms, everything else including ``<>&``, U+2028/2029 and non-ASCII as UTF-8)
and the same shortest round-trip float text, except floats of magnitude 1e-9 to 1e-4 (orjson
``0.00001`` and ``1e-7`` where Python writes ``1e-05`` and ``1e-07``) and non-finite floats
(orjson ``null``, Python ``NaN``/``Infinity``). Output that may hold such a float (a
``0.0000`` run or a one-digit negative exponent, found on the bytes where a number can
stand, not inside a timestamp or UID; a ``null`` that does not read back as the value) and
everything orjson refuses (integers beyond 64 bits, non-string keys, subclasses of the JSON
types, lone surrogates, deep nesting) is encoded by ``json.dumps`` instead, errors included.
The bytes returned are an exact-size copy of orjson's (which keep their buffer's spare
capacity: 2.4x the memory for bytes kept, as the watch cache keeps them). The one
difference left is in values no JSON document yields: a plain ``Enum`` or a ``UUID``, which
``json.dumps`` refuses (TypeError), orjson writes as its value. ``dumps_go`` is the same with
Go's HTML and line separator escapes (``api.errors.go_json``).

``load_yaml`` gives YAML bodies the same bounds and makes their values JSON as the YAML-to-JSON
conversion upstream does (string keys; timestamps and ``yes``/``on`` stay strings).

The cost on an ordinary body is one ``json.loads`` plus two ``bytes.count`` calls: the exact
depth walk runs only when the body has more brackets than the bound, and the surrogate repair
only when the text contains a ``\\uD8xx``-``\\uDFxx`` escape.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any, TypeVar, cast

import orjson
import yaml

__all__ = [
    "MAX_DEPTH",
    "DecodeError",
    "check_depth",
    "check_object_depth",
    "copy_json",
    "dumps",
    "dumps_go",
    "fix_surrogates",
    "load_yaml",
    "loads",
    "parse",
]

MAX_DEPTH = 128
"""Deepest nesting of arrays and objects accepted in a request (Go: 10,000)."""
MAX_OBJECT_DEPTH = MAX_DEPTH - 8
"""Deepest nesting of an object's own content (all but ``metadata.managedFields``): the
managed fields the server adds mirror that content a few levels deeper, and an object read
back must still be a body the server accepts."""

DEPTH_ERROR = f"exceeded max depth of {MAX_DEPTH}"
OBJECT_DEPTH_ERROR = (
    f"exceeded max depth of {MAX_OBJECT_DEPTH} (not counting metadata.managedFields)"
)

_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE_ESCAPE_TEXT = re.compile(r"\\u[dD][89a-fA-F]|[\ud800-\udfff]")
_LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")


class DecodeError(ValueError):
    """The bytes are not JSON Go would accept; ``str()`` is the decoder's message."""


def _reject_constant(name: str) -> Any:
    raise DecodeError(f"invalid character {name[0]!r} looking for beginning of value")


def loads(data: bytes | str) -> Any:
    """Parse one JSON value with the guarantees in the module docstring (DecodeError)."""
    text = data
    if isinstance(data, bytes):
        try:
            text = data.decode()
        except UnicodeDecodeError:
            text = data.decode(errors="replace")
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except RecursionError as exc:
        raise DecodeError(DEPTH_ERROR) from exc
    except DecodeError:
        raise
    except (ValueError, UnicodeDecodeError) as exc:
        raise DecodeError(str(exc)) from exc
    if isinstance(value, (dict, list)):
        raw = data if isinstance(data, bytes) else data.encode("utf-8", "surrogatepass")
        if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH:
            check_depth(value)
        if _SURROGATE_ESCAPE.search(raw):
            value = fix_surrogates(value)
    elif isinstance(value, str):
        value = _LONE_SURROGATE.sub("\ufffd", value)
    return value


class _YamlLoader(yaml.SafeLoader):  # type: ignore[misc]  # PyYAML ships no type stubs
    """YAML as kube-apiserver's YAML-to-JSON step reads it: only true/false are booleans
    (``yes``/``on`` stay strings) and timestamps stay strings (the Go YAML library keeps a
    timestamp-looking scalar a string when decoding into an untyped value)."""


_YamlLoader.yaml_implicit_resolvers = {
    first: [
        (tag, regexp)
        for tag, regexp in resolvers
        if tag not in ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:timestamp")
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


def load_yaml(text: str) -> Any:
    """Parse one YAML document into JSON values, with the bounds of ``loads`` (DecodeError,
    or ``yaml.YAMLError`` for YAML syntax)."""
    try:
        value = yaml.load(text, Loader=_YamlLoader)  # a SafeLoader subclass
    except RecursionError as exc:
        raise DecodeError(DEPTH_ERROR) from exc
    if isinstance(value, (dict, list)):
        check_depth(value)
    value = _to_json(value)
    if _SURROGATE_ESCAPE_TEXT.search(text):
        value = fix_surrogates(value)
    return value


def _to_json(value: Any) -> Any:
    """YAML-only values made JSON, as the YAML-to-JSON conversion does: keys become strings,
    sets become maps of nulls, ``!!binary`` its bytes as text; non-finite floats and other
    objects cannot be JSON (DecodeError). Depth is already bounded."""
    if isinstance(value, dict):
        return {_key(k): _to_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_json(item) for item in value]
    if isinstance(value, (str, bool, int)) or value is None:
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise DecodeError(f"json: unsupported value: {value}")
        return value
    if isinstance(value, (set, frozenset)):
        return {_key(k): None for k in value}
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    raise DecodeError(f"json: unsupported type: {type(value).__name__}")


def _key(key: Any) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, bool):
        return "true" if key else "false"
    if key is None:
        return "null"
    if isinstance(key, (int, float)):
        return str(key)
    raise DecodeError(f"json: unsupported map key type: {type(key).__name__}")


def check_depth(value: Any, limit: int = MAX_DEPTH, *, message: str = DEPTH_ERROR) -> None:
    """DecodeError when ``value`` nests more than ``limit`` containers (iterative walk)."""
    _check_depth([(value, 1)], limit, message)


def check_object_depth(obj: dict[str, Any]) -> None:
    """DecodeError when an object's own content nests deeper than ``MAX_OBJECT_DEPTH``
    (``metadata.managedFields`` is not counted: see ``MAX_OBJECT_DEPTH``)."""
    stack: list[tuple[Any, int]] = []
    for key, child in obj.items():
        if key == "metadata" and isinstance(child, dict):
            stack.extend(
                (grandchild, 3)
                for name, grandchild in child.items()
                if name != "managedFields" and isinstance(grandchild, (dict, list))
            )
        elif isinstance(child, (dict, list)):
            stack.append((child, 2))
    _check_depth(stack, MAX_OBJECT_DEPTH, OBJECT_DEPTH_ERROR)


def _check_depth(stack: list[tuple[Any, int]], limit: int, message: str) -> None:
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            raise DecodeError(message)
        children = node.values() if isinstance(node, dict) else node
        for child in children:
            if isinstance(child, (dict, list)):
                stack.append((child, depth + 1))


_DIGITS_AS_ZERO = bytes(0x30 if 0x30 <= c <= 0x39 else 0x20 for c in range(256))
_LONG_DIGIT_RUN = b"0" * 19
"""19 digits in a row (after mapping digits to ``0``, everything else to a space): maybe an
integer beyond 64 bits, which orjson would read as a float. (A ``bytes.translate`` and a
substring search cost a fraction of a regular expression's scan.)"""
_DIGITS = frozenset(b"0123456789")
_PRECEDES_NUMBER = frozenset(b":,[ \t\r\n")
"""What a JSON number token may follow in text: a value separator, an array's start, whitespace."""


def _long_number(data: bytes, digits: bytes) -> bool:
    """Whether a run of 19 or more digits in ``data`` may be (part of) a number token rather
    than string text. A number's runs start right after its sign, its ``.`` or its exponent
    (``e``, ``E``, ``+``, ``-``), and walking back over those parts of the token must reach
    what a value follows (``_PRECEDES_NUMBER``, a ``:`` only after a key's closing quote) or the
    start. A run in a string (a 64-hex container ID or digest has one ~0.2 % of the time, and
    a whole LIST then went to ``json.loads``) almost never looks like that; text that does is
    read by ``json.loads``, which is never wrong, only slower."""
    pos = digits.find(_LONG_DIGIT_RUN)
    while pos != -1:
        i = pos - 1  # the leftmost match: data[i] is not a digit
        if i >= 0 and data[i] in b"+-":
            i -= 1
        if i >= 0 and data[i] in b"eE":
            i -= 1
            while i >= 0 and data[i] in _DIGITS:
                i -= 1
        if i >= 0 and data[i] == 0x2E:  # "."
            i -= 1
            while i >= 0 and data[i] in _DIGITS:
                i -= 1
        if i >= 0 and data[i] == 0x2D:  # "-"
            i -= 1
        if i < 0:
            return True
        if data[i] == 0x3A:  # ":" ends an object key only right after its closing quote
            i -= 1
            while i >= 0 and data[i] in b" \t\r\n":
                i -= 1
            if i >= 0 and data[i] == 0x22:
                return True
        elif data[i] in _PRECEDES_NUMBER:
            return True
        end = digits.find(b" ", pos)
        if end == -1:
            return False
        pos = digits.find(_LONG_DIGIT_RUN, end)
    return False


def parse(data: bytes) -> Any:
    """``json.loads(data)``, faster (see the module docstring)."""
    if type(data) is bytes and not _long_number(data, data.translate(_DIGITS_AS_ZERO)):
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
    return json.loads(data)


_T = TypeVar("_T")
_SCALARS = frozenset((str, int, float, bool, type(None)))


def copy_json(value: _T) -> _T:
    """A deep copy of a JSON value, equal to ``copy.deepcopy(value)``. Shared sub-objects
    come back as separate copies (JSON has no aliasing); other types go to
    ``copy.deepcopy``.

    A dict or list goes through orjson (encode, decode and compare: a third of the cost of
    the walk below for a pod) and is kept only when the copy equals the original. Everything
    orjson would change compares unequal (a tuple read back as a list, a NaN as null, a UUID
    or an ``Enum`` as its value), and everything it refuses raises (subclasses of the JSON
    types, integers beyond 64 bits, non-string keys, deep nesting): both take the walk."""
    kind = type(value)
    if kind is dict or kind is list:
        try:
            copied = orjson.loads(orjson.dumps(value, option=_ORJSON_OPTIONS))
        except orjson.JSONEncodeError:
            return cast(_T, _copy(value))
        if type(copied) is kind and copied == value:
            return copied
    return cast(_T, _copy(value))


def _copy(value: Any) -> Any:
    kind = type(value)
    if kind is dict:
        return {k: v if type(v) in _SCALARS else _copy(v) for k, v in value.items()}
    if kind is list:
        return [v if type(v) in _SCALARS else _copy(v) for v in value]
    if kind in _SCALARS:
        return value
    return copy.deepcopy(value)


def fix_surrogates(value: Any) -> Any:
    """``value`` with every unpaired surrogate (in keys and strings) replaced by U+FFFD."""
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {fix_surrogates(k): fix_surrogates(v) for k, v in value.items()}
    if isinstance(value, list):
        return [fix_surrogates(item) for item in value]
    return value


_ORJSON_OPTIONS = (
    orjson.OPT_PASSTHROUGH_SUBCLASS
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_DATETIME
)
"""Subclasses of str/int/dict/list, dataclasses and datetimes are not encoded by orjson (it
would write them differently from ``json.dumps`` or where ``json.dumps`` refuses): they make
it raise, and ``json.dumps`` answers."""

_NUMBER_SHAPE = bytes(
    0x30 if 0x30 <= c <= 0x39 else c if c in b".e-nul" else 0x20 for c in range(256)
)
"""Digits become ``0``; ``.``, ``e``, ``-`` and the letters of ``null`` stay; all else is a
space. In that shape one substring search finds each text where orjson may write a float
differently from ``json.dumps`` (a ``bytes.translate`` and three searches cost a fraction
of one regular-expression scan)."""

_SMALL_FLOAT = b"0.0000"
"""1e-5 <= |x| < 1e-4: orjson ``0.0000d``, Python ``d.de-05``."""
_SHORT_EXPONENT = b"0e-0"
"""1e-9 <= |x| < 1e-5: orjson ``de-7``, Python ``de-07`` (checked exactly on a match)."""
_SHORT_EXPONENT_EXACT = re.compile(rb"[0-9]e-[0-9](?![0-9])")
_NUMBER_BYTES = frozenset(b"0123456789.-+e")
_BEFORE_NUMBER = frozenset(b":,[")
_AFTER_NUMBER = frozenset(b",]}")


def _is_number(out: bytes, at: int) -> bool:
    """Whether byte ``at`` of ``out`` lies in a JSON number, not in a string: the run of
    number characters around it stands where compact JSON puts a value (after ``:``, ``,`` or
    ``[`` or at the start, and before ``,``, ``]``, ``}`` or the end). A string holding
    such a run between those characters counts as a number, which only costs a fallback;
    a real number always passes. Timestamps (``00:00:00.000012Z``) and UIDs (``...3e-4a...``)
    match the candidate patterns and fail here."""
    start = at
    while start > 0 and out[start - 1] in _NUMBER_BYTES:
        start -= 1
    if start > 0 and out[start - 1] not in _BEFORE_NUMBER:
        return False
    end, size = at, len(out)
    while end < size and out[end] in _NUMBER_BYTES:
        end += 1
    return end == size or out[end] in _AFTER_NUMBER


def _may_differ(out: bytes, shape: bytes) -> bool:
    """Whether ``out`` (orjson's) may hold a float ``json.dumps`` writes differently."""
    at = shape.find(_SMALL_FLOAT)
    while at >= 0:
        if _is_number(out, at):
            return True
        at = shape.find(_SMALL_FLOAT, at + 1)
    if _SHORT_EXPONENT in shape:
        for match in _SHORT_EXPONENT_EXACT.finditer(out):
            if _is_number(out, match.start()):
                return True
    return False


def _json_dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def dumps(value: Any) -> bytes:
    """``json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()``, faster
    (see the module docstring)."""
    try:
        out = orjson.dumps(value, option=_ORJSON_OPTIONS)
    except orjson.JSONEncodeError:
        return _json_dumps(value)
    shape = out.translate(_NUMBER_SHAPE)
    if (_SMALL_FLOAT in shape or _SHORT_EXPONENT in shape) and _may_differ(out, shape):
        return _json_dumps(value)
    if b"null" in shape and orjson.loads(out) != value:
        # A null that is not a None (a NaN or infinite float): json.dumps answers.
        return _json_dumps(value)
    # orjson's bytes keep the capacity of its growing buffer (up to twice their length, more
    # for small outputs); the watch cache keeps these bytes for every object and change, so
    # they are copied to their exact size (0.4 us for a pod, against 2.4x the memory).
    return bytes(memoryview(out))


_GO_ESCAPES = (
    (b"<", b"\\u003c"),
    (b">", b"\\u003e"),
    (b"&", b"\\u0026"),
    ("\u2028".encode(), b"\\u2028"),
    ("\u2029".encode(), b"\\u2029"),
)


def dumps_go(value: Any) -> bytes:
    """``dumps`` with ``<``, ``>``, ``&``, U+2028 and U+2029 escaped as Go's encoding/json
    writes them (they occur only inside strings, so replacing bytes never touches structure;
    UTF-8 continuation bytes never equal an ASCII byte, and U+2028/2029 are whole sequences)."""
    out = dumps(value)
    for raw, escaped in _GO_ESCAPES:
        if raw in out:
            out = out.replace(raw, escaped)
    return out
