"""Typed decoding of built-in kinds: does a JSON object fit the Go structs kube-apiserver
decodes it into?

kube-apiserver unmarshals every body of a built-in kind into its typed struct; a value of the
wrong JSON type (``"data": {"a": 1}`` in a ConfigMap, ``"rules": "AAA"`` in a Role,
``replicas: 2147483648``) fails there with a 400 such as ``ConfigMap in version "v1" cannot be
handled as a ConfigMap: json: cannot unmarshal number into Go struct field ConfigMap.data of
type string``. Sampan keeps objects as dicts, so this module answers the same question from
the OpenAPI definitions (``openapi_data.load_definitions``): ``TypeChecker(definitions)``
compiles one checker per definition on first use (memoized: later checks of the kind only
walk the object) and ``check(name, obj)`` returns the decoder's error message or ``None``.

What the walk reproduces of Go's ``encoding/json`` (the sigs.k8s.io/json fork):

* the JSON types of string, bool, int32/int64 (range-checked; ``1.0`` is not an integer),
  float64, array, map and struct fields; ``null`` anywhere is the zero value and accepted;
* the types with their own unmarshalers: IntOrString (string or int32), Quantity (string or
  number that parses as a quantity), ``metav1.Time`` (an RFC 3339 string), ``MicroTime``
  (RFC 3339; any fraction is accepted), ``[]byte`` (standard base64), and the free-form
  RawExtension / FieldsV1 / JSON values (anything);
* the message: ``json: cannot unmarshal <what> into Go struct field <Struct>.<path> of type
  <gotype>``, where Struct is the innermost struct and path joins the struct field names from
  the root (map keys and list indexes are not part of it), the first error in document order
  unless a custom unmarshaler failed (that error ends the decode and wins, as in Go);
* ``null`` as a list element or map value decodes to the element type's zero value, so the
  checker writes that value in (``{"a": null}`` in ConfigMap data becomes ``{"a": ""}``, a
  ``null`` container becomes ``{}``); nil slices, maps, ``[]byte`` and times stay ``null``.

After a strategic merge patch upstream converts the patched map with its unstructured
converter instead of the JSON decoder; ``check(..., unstructured=True)`` follows that
converter: an integral float fits an integer (and is written back as an int), the first
error ends the walk, and it reads as the converter words it (``unrecognized type: int32``,
``cannot restore slice from string``). ``go_format_value`` prints a value as Go's ``%+v``.

Go type names are derived from the definition names (``io.k8s.api.core.v1.PodSpec`` ->
``v1.PodSpec``); named string types (``v1.Protocol``) are published as plain strings, so they
read ``string`` here. Unknown fields are not this module's concern (field validation owns
them). Invariants: ``check`` changes nothing but those ``null`` elements; the shared
definitions are never mutated.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Callable, Mapping
from typing import Any

from sampan.api.quantity import QUANTITY_FORMAT_ERROR, QuantityError, parse_quantity

__all__ = [
    "TypeChecker",
    "go_format_value",
    "go_quote",
]

_INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
_QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
_TIME = "io.k8s.apimachinery.pkg.apis.meta.v1.Time"
_MICRO_TIME = "io.k8s.apimachinery.pkg.apis.meta.v1.MicroTime"
_FREE_FORM = frozenset(
    {
        "io.k8s.apimachinery.pkg.runtime.RawExtension",
        "io.k8s.apimachinery.pkg.apis.meta.v1.FieldsV1",
        "io.k8s.apimachinery.pkg.apis.meta.v1.Patch",
    }
)
_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)
_MAX_DEPTH = 512  # recursion guard for values built after decoding (bodies are bounded earlier)


class _Fatal(Exception):
    """A custom unmarshaler failed: Go stops decoding and reports this error."""


class _State:
    __slots__ = ("error", "stack", "unstructured")

    def __init__(self, *, unstructured: bool = False) -> None:
        self.error: str | None = None  # the first saved (non-fatal) error
        self.stack: list[str] = []  # struct field names from the root
        self.unstructured = unstructured  # the map-to-struct converter's rules and words


Check = Callable[[Any, "_State", str, int], None]
"""A compiled checker: (value, state, innermost struct name, depth)."""


def go_quote(text: str) -> str:
    """Go's ``strconv.Quote``: double quotes, with control and non-printable characters
    escaped (``\\n``, ``\\x01``, ``\\u2028``); printable Unicode is kept."""
    out = ['"']
    for ch in text:
        if ch == '"' or ch == "\\":
            out.append("\\" + ch)
        elif ch.isprintable():
            out.append(ch)
        elif ch in _GO_ESCAPES:
            out.append(_GO_ESCAPES[ch])
        else:
            code = ord(ch)
            if code < 0x80:
                out.append(f"\\x{code:02x}")
            elif code < 0x10000:
                out.append(f"\\u{code:04x}")
            else:
                out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


def go_format_value(value: Any) -> str:
    """Go's ``%+v`` of a decoded JSON value: ``map[a:1 b:[x y]]`` (keys sorted), ``<nil>``,
    strings bare, floats in ``%g`` form (``1.5``, ``1e+06``)."""
    if isinstance(value, dict):
        inner = " ".join(f"{k}:{go_format_value(value[k])}" for k in sorted(value))
        return f"map[{inner}]"
    if isinstance(value, list):
        return "[" + " ".join(go_format_value(item) for item in value) + "]"
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _go_float(value)
    return str(value)


def _go_float(value: float) -> str:
    """strconv.FormatFloat(v, 'g', -1, 64): shortest digits, exponent form when the
    exponent is < -4 or >= 6 (Go's rule for the shortest %g)."""
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "-0" if str(value).startswith("-") else "0"
    sign = "-" if value < 0 else ""
    digits_repr = repr(abs(value))
    if "e" in digits_repr:
        base, _, exp_part = digits_repr.partition("e")
        digits = base.replace(".", "").lstrip("0") or "0"
        exponent = int(exp_part) + (len(base.partition(".")[0]) - 1)
    else:
        whole, _, frac = digits_repr.partition(".")
        frac = frac.rstrip("0")
        all_digits = (whole + frac).lstrip("0")
        exponent = len(whole) - 1 if whole != "0" else -(len(frac) - len(frac.lstrip("0")) + 1)
        digits = all_digits.rstrip("0") or "0"
    if exponent < -4 or exponent >= 6:
        head = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{head}e{'-' if exponent < 0 else '+'}{abs(exponent):02d}"
    if exponent < 0:
        return f"{sign}0.{'0' * (-exponent - 1)}{digits}"
    whole_len = exponent + 1
    if len(digits) <= whole_len:
        return sign + digits + "0" * (whole_len - len(digits))
    return f"{sign}{digits[:whole_len]}.{digits[whole_len:]}"


_GO_ESCAPES = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
}


def _json_kind(value: Any) -> str:
    """The JSON type as Go's decoder names it in UnmarshalTypeError."""
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, list):
        return "array"
    return "object"


def _number_text(value: int | float) -> str:
    """The literal as Go saw it (Python keeps no text: floats print in their shortest form)."""
    return repr(value) if isinstance(value, float) else str(value)


def _save(state: _State, what: str, struct: str, gotype: str) -> None:
    if state.error is not None:
        return
    state.error = _type_error(what, state, struct, gotype)


def _mismatch(state: _State, value: Any, struct: str, gotype: str, kind: str) -> None:
    """``value`` cannot go where a Go ``gotype`` (of reflect kind ``kind``) is."""
    if state.unstructured:
        raise _Fatal(_converter_error(value, kind))
    _save(state, _json_kind(value), struct, gotype)


def _go_kind(value: Any) -> str:
    """The Go kind of a decoded JSON value in an unstructured map."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int64"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, str):
        return "string"
    return "slice" if isinstance(value, list) else "map"


def _converter_error(value: Any, kind: str) -> str:
    """runtime.DefaultUnstructuredConverter's words for a value that does not convert."""
    source = _go_kind(value)
    if kind in ("map", "slice"):
        return f"cannot restore {kind} from {source}"
    if kind == "struct":
        return f"cannot restore struct from: {source}"
    if (source, kind) in (("int64", "string"), ("float64", "int32"), ("float64", "int64")):
        return f"cannot convert {source} to {kind}"
    return f"unrecognized type: {kind}"


def _type_error(what: str, state: _State, struct: str, gotype: str) -> str:
    if (struct or state.stack) and not state.unstructured:
        return (
            f"json: cannot unmarshal {what} into Go struct field "
            f"{struct}.{'.'.join(state.stack)} of type {gotype}"
        )
    return f"json: cannot unmarshal {what} into Go value of type {gotype}"


# --- leaf checkers -----------------------------------------------------------------------


def _any(value: Any, state: _State, struct: str, depth: int) -> None:
    return None


def _string(value: Any, state: _State, struct: str, depth: int) -> None:
    if value is not None and not isinstance(value, str):
        _mismatch(state, value, struct, "string", "string")


def _bool(value: Any, state: _State, struct: str, depth: int) -> None:
    if value is not None and not isinstance(value, bool):
        _mismatch(state, value, struct, "bool", "bool")


def _number(value: Any, state: _State, struct: str, depth: int) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        _mismatch(state, value, struct, "float64", "float64")
    elif isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        _save(state, f"number {_number_text(value)}", struct, "float64")


_INTEGER_CHECKS: set[Check] = set()
"""The integer checkers: after a strategic merge patch an integral float found there is
written back as the int the converter makes of it."""


def _integer(bits: int) -> Check:
    low, high = _INT32 if bits == 32 else _INT64
    gotype = f"int{bits}"

    def check(value: Any, state: _State, struct: str, depth: int) -> None:
        if value is None:
            return
        if type(value) is int:
            if not low <= value <= high:
                _save(state, f"number {value}", struct, gotype)
        elif isinstance(value, float):
            if state.unstructured and value.is_integer() and low <= value <= high:
                return  # the converter takes an integral float for an integer
            if state.unstructured:
                raise _Fatal(_converter_error(value, gotype))
            _save(state, f"number {_number_text(value)}", struct, gotype)
        else:
            _mismatch(state, value, struct, gotype, gotype)

    _INTEGER_CHECKS.add(check)
    return check


def _bytes(value: Any, state: _State, struct: str, depth: int) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        _mismatch(state, value, struct, "[]uint8", "slice")
        return
    problem = _base64_error(value)
    if problem is not None and state.error is None:
        state.error = problem  # a CorruptInputError: saved without a field context


def _int_or_string(value: Any, state: _State, struct: str, depth: int) -> None:
    if value is None or isinstance(value, str):
        return
    if type(value) is int and _INT32[0] <= value <= _INT32[1]:
        return
    what = (
        f"number {_number_text(value)}"
        if isinstance(value, (int, float)) and not isinstance(value, bool)
        else _json_kind(value)
    )
    raise _Fatal(_type_error(what, state, struct, "int32"))


def _quantity(value: Any, state: _State, struct: str, depth: int) -> None:
    if value is None:
        return
    try:
        if isinstance(value, (dict, list, bool)):
            raise QuantityError("")
        parse_quantity(value)
    except QuantityError:
        raise _Fatal(QUANTITY_FORMAT_ERROR) from None


def _time(micro: bool) -> Check:
    def check(value: Any, state: _State, struct: str, depth: int) -> None:
        if value is None:
            return
        if not isinstance(value, str):
            raise _Fatal(_type_error(_json_kind(value), state, struct, "string"))
        problem = rfc3339_error(value, micro=micro)
        if problem is not None:
            raise _Fatal(problem)

    return check


# --- base64 (encoding/base64.StdEncoding) ---------------------------------------------------

_B64_ALPHABET = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")


def _base64_error(text: str) -> str | None:
    """Go's ``illegal base64 data at input byte N`` for a string StdEncoding refuses."""
    stripped = text.replace("\r", "").replace("\n", "")
    try:
        binascii.a2b_base64(stripped.encode("ascii"), strict_mode=True)
        if len(stripped) % 4 == 0:
            return None
    except (binascii.Error, UnicodeEncodeError):
        pass
    # Find the offending position the way the Go decoder meets it: quantum by quantum.
    raw = text.encode("utf-8")
    index = 0
    count = 0  # alphabet characters in the current quantum
    quantum_start = 0
    while index < len(raw):
        byte = raw[index]
        if byte in (0x0A, 0x0D):
            index += 1
            continue
        if count == 0:
            quantum_start = index
        if byte in _B64_ALPHABET:
            count = (count + 1) % 4
            index += 1
            continue
        if byte == ord("=") and count >= 2:
            # Padding: the rest must be '=' to complete the quantum, then nothing more.
            needed = 4 - count
            rest = raw[index:].replace(b"\r", b"").replace(b"\n", b"")
            if rest[:needed] == b"=" * needed and len(rest) == needed:
                return None
            return f"illegal base64 data at input byte {index}"
        return f"illegal base64 data at input byte {index}"
    if count:
        return f"illegal base64 data at input byte {quantum_start}"
    return None


# --- RFC 3339 (time.Parse with time.RFC3339) -----------------------------------------------

_RFC3339_LAYOUT = "2006-01-02T15:04:05Z07:00"
_RFC3339_MICRO_LAYOUT = "2006-01-02T15:04:05.000000Z07:00"
_DIGITS = re.compile(r"[0-9]+")


def _days_in(month: int, year: int) -> int:
    if month == 2:
        leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
        return 29 if leap else 28
    return 30 if month in (4, 6, 9, 11) else 31


def rfc3339_error(value: str, *, micro: bool = False) -> str | None:
    """Go's ``time.Parse`` error for a string that is not RFC 3339, or None."""
    layout = _RFC3339_MICRO_LAYOUT if micro else _RFC3339_LAYOUT
    head = f"parsing time {go_quote(value)}"

    def cannot(rest: str, element: str) -> str:
        return f"{head} as {go_quote(layout)}: cannot parse {go_quote(rest)} as {go_quote(element)}"

    rest = value
    if len(rest) < 4 or not rest[:4].isdigit() or not rest[:4].isascii():
        return cannot(rest, "2006")
    year = int(rest[:4])
    rest = rest[4:]
    fields: list[int] = []
    for separator, element, low, high, name in (
        ("-", "01", 1, 12, "month"),
        ("-", "02", 0, 31, "day"),
        ("T", "15", 0, 23, "hour"),
        (":", "04", 0, 59, "minute"),
        (":", "05", 0, 59, "second"),
    ):
        if not rest.startswith(separator):
            return cannot(rest, separator)
        rest = rest[1:]
        if len(rest) < 2 or not (rest[:2].isdigit() and rest[:2].isascii()):
            return cannot(rest, element)
        number = int(rest[:2])
        if not low <= number <= high:
            return f"{head}: {name} out of range"
        fields.append(number)
        rest = rest[2:]
    if len(rest) >= 2 and rest[0] in ".," and rest[1].isdigit():
        match = _DIGITS.match(rest, 1)
        assert match is not None
        rest = rest[match.end() :]
    if rest.startswith("Z"):
        rest = rest[1:]
    elif (
        len(rest) >= 6
        and rest[0] in "+-"
        and rest[3] == ":"
        and rest[1:3].isdigit()
        and rest[4:6].isdigit()
    ):
        if int(rest[1:3]) > 24:
            return f"{head}: time zone offset hour out of range"
        if int(rest[4:6]) > 60:
            return f"{head}: time zone offset minute out of range"
        rest = rest[6:]
    else:
        return cannot(rest, "Z07:00")
    if rest:
        return f"{head}: extra text: {go_quote(rest)}"
    month, day = fields[0], fields[1]
    if day < 1 or day > _days_in(month, year):
        return f"{head}: day out of range"
    return None


# --- compiled containers --------------------------------------------------------------------


Zero = Callable[[], Any]
"""A factory of the Go zero value an element decodes to from ``null``."""


def _keep() -> Any:
    return _KEEP


_KEEP: Any = object()
"""``null`` stays ``null`` (nil slices, maps, pointers and the free-form types)."""


class _Ref:
    """A late-bound checker for a definition (definitions may refer to themselves)."""

    __slots__ = ("check", "gotype", "zero")

    def __init__(self, gotype: str) -> None:
        self.gotype = gotype
        self.check: Check = _any
        self.zero: Zero = _keep

    def __call__(self, value: Any, state: _State, struct: str, depth: int) -> None:
        self.check(value, state, struct, depth)


def _go_type_name(definition: str) -> str:
    package, _, name = definition.rpartition(".")
    return f"{package.rpartition('.')[2]}.{name}"


def _array(item: Check, gotype: str, zero: Zero) -> Check:
    def check(value: Any, state: _State, struct: str, depth: int) -> None:
        if value is None:
            return
        if not isinstance(value, list):
            _mismatch(state, value, struct, gotype, "slice")
            return
        if depth > _MAX_DEPTH:
            raise _Fatal("exceeded max depth")
        for index, element in enumerate(value):
            if element is None:
                replacement = zero()
                if replacement is not _KEEP:
                    value[index] = replacement
                continue
            item(element, state, struct, depth + 1)
            if type(element) is float and state.unstructured and item in _INTEGER_CHECKS:
                value[index] = int(element)

    return check


def _map(item: Check, gotype: str, zero: Zero) -> Check:
    def check(value: Any, state: _State, struct: str, depth: int) -> None:
        if value is None:
            return
        if not isinstance(value, dict):
            _mismatch(state, value, struct, gotype, "map")
            return
        if depth > _MAX_DEPTH:
            raise _Fatal("exceeded max depth")
        for key, element in value.items():
            if element is None:
                replacement = zero()
                if replacement is not _KEEP:
                    value[key] = replacement  # same key: no resize while iterating
                continue
            item(element, state, struct, depth + 1)
            if type(element) is float and state.unstructured and item in _INTEGER_CHECKS:
                value[key] = int(element)

    return check


def _free_object(gotype: str) -> Check:
    def check(value: Any, state: _State, struct: str, depth: int) -> None:
        if value is not None and not isinstance(value, dict):
            kind = "map" if gotype.startswith("map[") else "struct"
            _mismatch(state, value, struct, gotype, kind)

    return check


def _struct(fields: dict[str, Check], gotype: str, name: str) -> Check:
    def check(value: Any, state: _State, struct: str, depth: int) -> None:
        if value is None:
            return
        if not isinstance(value, dict):
            _mismatch(state, value, struct, gotype, "struct")
            return
        if depth > _MAX_DEPTH:
            raise _Fatal("exceeded max depth")
        stack = state.stack
        for key, element in value.items():
            field = fields.get(key)
            if field is None or element is None:
                continue  # unknown fields: field validation's concern
            stack.append(key)
            field(element, state, name, depth + 1)
            stack.pop()
            if type(element) is float and state.unstructured and field in _INTEGER_CHECKS:
                value[key] = int(element)

    return check


def _zero_string() -> str:
    return ""


def _zero_int() -> int:
    return 0


def _zero_bool() -> bool:
    return False


def _zero_quantity() -> str:
    return "0"


class TypeChecker:
    """Compiled per-definition checkers over one set of definitions (see module doc)."""

    def __init__(self, definitions: Mapping[str, Mapping[str, Any]]) -> None:
        self._definitions = definitions
        self._compiled: dict[str, _Ref] = {}

    def check(self, definition: str, obj: Any, *, unstructured: bool = False) -> str | None:
        """The Go decoder's error for ``obj`` as the definition's struct, or None when it
        decodes; an unknown definition is never an error. A ``null`` element of a list or
        map becomes the element's zero value in place (``""``, ``0``, ``false``, ``{}``), as
        decoding into the typed struct makes it.

        ``unstructured``: judge as upstream's map-to-struct converter does after a strategic
        merge patch (an integral float fits an integer; the first error ends the walk and
        reads ``unrecognized type: int32``, ``cannot restore slice from string``...); such
        an integral float is written back as the int the converter makes of it."""
        if definition not in self._definitions:
            return None
        checker = self._ref(definition)
        state = _State(unstructured=unstructured)
        try:
            checker(obj, state, "", 0)
        except _Fatal as exc:
            return str(exc)
        return state.error

    # --- compilation ----------------------------------------------------------------------

    def _ref(self, name: str) -> _Ref:
        ref = self._compiled.get(name)
        if ref is not None:
            return ref
        ref = _Ref(_go_type_name(name))
        self._compiled[name] = ref  # before compiling: recursive definitions find it
        ref.check, ref.gotype, ref.zero = self._compile_definition(name)
        return ref

    def _compile_definition(self, name: str) -> tuple[Check, str, Zero]:
        gotype = _go_type_name(name)
        if name == _INT_OR_STRING:
            return _int_or_string, "intstr.IntOrString", _zero_int
        if name == _QUANTITY:
            return _quantity, "resource.Quantity", _zero_quantity
        if name in (_TIME, _MICRO_TIME):
            return _time(micro=name == _MICRO_TIME), gotype, _keep  # zero Time is null
        if name in _FREE_FORM:
            return _any, gotype, _keep
        schema = self._definitions[name]
        props = schema.get("properties")
        if isinstance(props, Mapping):
            fields = {key: self._compile(child)[0] for key, child in props.items()}
            return _struct(fields, gotype, gotype.rpartition(".")[2]), gotype, dict
        return self._compile(schema, gotype=gotype)

    def _compile(self, node: Any, gotype: str | None = None) -> tuple[Check, str, Zero]:
        """The checker of one schema node, its Go type name and its zero value."""
        if not isinstance(node, Mapping):
            return _any, "interface {}", _keep
        ref = node.get("$ref")
        allof = node.get("allOf")
        if ref is None and isinstance(allof, list) and len(allof) == 1:
            inner = allof[0]
            ref = inner.get("$ref") if isinstance(inner, Mapping) else None
        if isinstance(ref, str):
            target = ref.rpartition("/")[2]
            if target not in self._definitions:
                return _any, "interface {}", _keep
            compiled = self._ref(target)
            return compiled, compiled.gotype, lambda: compiled.zero()
        kind = node.get("type")
        fmt = node.get("format")
        if kind == "string":
            if fmt == "byte":
                return _bytes, "[]uint8", _keep  # a nil []byte encodes as null
            if fmt == "int-or-string":
                return _int_or_string, "intstr.IntOrString", _zero_int
            return _string, "string", _zero_string
        if kind == "integer":
            bits = 32 if fmt == "int32" else 64
            return _integer(bits), f"int{bits}", _zero_int
        if kind == "boolean":
            return _bool, "bool", _zero_bool
        if kind == "number":
            return _number, "float64", _zero_int
        if kind == "array" or (kind is None and "items" in node):
            item, item_type, item_zero = self._compile(node.get("items"))
            array_type = f"[]{item_type}"
            return _array(item, array_type, item_zero), array_type, _keep
        if kind == "object" or (kind is None and "additionalProperties" in node):
            extra = node.get("additionalProperties")
            if isinstance(extra, Mapping):
                value, value_type, value_zero = self._compile(extra)
                map_type = f"map[string]{value_type}"
                return _map(value, map_type, value_zero), map_type, _keep
            name = gotype or "map[string]interface {}"
            return _free_object(name), name, _keep
        return _any, gotype or "interface {}", _keep
