"""JSONPath templates in kubectl's dialect (client-go ``util/jsonpath``), over plain JSON values.

Kubernetes evaluates JSONPath in its own dialect, which no PyPI library implements: templates
mix literal text with ``{...}`` actions (``{.a}{"\\n"}``), ``{range .items[*]}...{end}``
loops, ``..`` recursive descent, ``*`` wildcards, unions ``[a,b]``, slices ``[0:2:1]``,
quoted keys ``['a']`` and filters ``[?(@.type == 'Ready')]`` with one comparison
(``==``, ``!=``, ``<``, ``>``, ``<=``, ``>=``; no ``&&``/``||``) or existence
(``[?(@.a)]``). This module was written from client-go's documented behaviour and its
observable results; error texts are client-go's (the server quotes some of them).

Public API::

    parse(template, name="") -> Template             # raises JSONPathError
    Template.find_results(data, *, allow_missing_keys=False) -> list[list[Any]]
    Template.execute(data, *, allow_missing_keys=False) -> str
    print_results(values) -> str                      # one result list as kubectl prints it

Invariants:

- Parsing and evaluation are pure: data is never mutated; a ``Template`` may be reused and
  shared (evaluation state lives in each call).
- Values are JSON as ``json.loads`` makes them: dict, list, str, int, float, bool, None.
  Comparisons follow Go's text/template rules: ints compare with ints, floats with floats,
  strings with strings (ordering too), bools only for equality; mixing kinds is an error.
- Printing: strings raw, numbers and bools as Go prints them, objects and arrays as Go's
  ``encoding/json`` compact form (keys sorted), results separated by one space.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

__all__ = [
    "JSONPathError",
    "Template",
    "go_float",
    "go_json",
    "go_text",
    "parse",
    "print_results",
]


class JSONPathError(ValueError):
    """A template that does not parse, or an evaluation error (client-go's wording)."""


# --- nodes -----------------------------------------------------------------------------------


@dataclass(slots=True)
class _List:
    nodes: list[Any] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Text:
    text: str


@dataclass(frozen=True, slots=True)
class _Field:
    name: str


@dataclass(frozen=True, slots=True)
class _Identifier:
    name: str


@dataclass(frozen=True, slots=True)
class _Param:
    value: int = 0
    known: bool = False
    derived: bool = False


@dataclass(frozen=True, slots=True)
class _Array:
    params: tuple[_Param, _Param, _Param]


@dataclass(frozen=True, slots=True)
class _Filter:
    left: _List
    right: _List
    operator: str


@dataclass(frozen=True, slots=True)
class _Const:
    value: Any  # int, float or bool


@dataclass(frozen=True, slots=True)
class _Wildcard:
    pass


@dataclass(frozen=True, slots=True)
class _Recursive:
    pass


@dataclass(frozen=True, slots=True)
class _Union:
    lists: tuple[_List, ...]


# --- parser ----------------------------------------------------------------------------------

_EOF = ""
_DICT_KEY = re.compile(r"'([^']*)'")
_SLICE = re.compile(r"(-?[0-9]*)(:-?[0-9]*)?(:-?[0-9]*)?")
_FILTER = re.compile(r"([^!<>=]+)([!<>=]+)(.+?)")
_TERMINATORS = frozenset(" \t\r\n.,[]$@{}")


def _is_alnum(char: str) -> bool:
    return char == "_" or char.isalpha() or char.isdigit()


def _rune(char: str) -> str:
    """Go's ``%#U``."""
    if char.isprintable():
        return f"U+{ord(char):04X} '{char}'"
    return f"U+{ord(char):04X}"


class _Parser:
    def __init__(self, text: str) -> None:
        self.input = text
        self.pos = 0
        self.start = 0
        self.root = _List()

    def next(self) -> str:
        if self.pos >= len(self.input):
            return _EOF
        char = self.input[self.pos]
        self.pos += 1
        return char

    def backup(self) -> None:
        self.pos -= 1

    def peek(self) -> str:
        return self.input[self.pos] if self.pos < len(self.input) else _EOF

    def consume(self) -> str:
        value = self.input[self.start : self.pos]
        self.start = self.pos
        return value

    def parse(self) -> _List:
        self._text()
        return self.root

    def _text(self) -> None:
        while True:
            if self.input.startswith("{", self.pos):
                if self.pos > self.start:
                    self.root.nodes.append(_Text(self.consume()))
                self.pos += 1
                self.consume()
                action = _List()
                self.root.nodes.append(action)
                self._inside(action)
                return
            if self.next() == _EOF:
                break
        if self.pos > self.start:
            self.root.nodes.append(_Text(self.consume()))

    def _inside(self, cur: _List) -> None:
        # An iterative loop over client-go's recursive descent: each branch either returns
        # (the action ended) or continues scanning the same action.
        while True:
            rest = self.input[self.pos :]
            if rest.startswith("}"):
                self.pos += 1
                self.consume()
                self._text()
                return
            if rest.startswith("[?("):
                self._filter(cur)
                continue
            if rest.startswith(".."):
                self._recursive(cur)
                continue
            char = self.next()
            if char == _EOF or char in "\r\n":
                raise JSONPathError("unclosed action")
            if char == " " or char in "@$":
                self.consume()
            elif char == "[":
                self._array(cur)
            elif char in "\"'":
                self._quote(cur, char)
            elif char == ".":
                self._field(cur)
            elif char in "+-" or char.isdigit():
                self.backup()
                self._number(cur)
            elif _is_alnum(char):
                self.backup()
                self._identifier(cur)
            else:
                raise JSONPathError(f"unrecognized character in action: {_rune(char)}")

    def _identifier(self, cur: _List) -> None:
        while True:
            char = self.next()
            if char == _EOF or char in _TERMINATORS:
                if char != _EOF:
                    self.backup()
                break
        value = self.consume()
        if value in ("true", "false"):
            cur.nodes.append(_Const(value == "true"))
        else:
            cur.nodes.append(_Identifier(value))

    def _recursive(self, cur: _List) -> None:
        if cur.nodes and isinstance(cur.nodes[-1], _Recursive):
            raise JSONPathError("invalid multiple recursive descent")
        self.pos += 2
        self.consume()
        cur.nodes.append(_Recursive())
        if _is_alnum(self.peek()) and self.peek() != _EOF:
            self._field(cur)

    def _number(self, cur: _List) -> None:
        if self.peek() in ("+", "-") and self.peek() != _EOF:
            self.next()
        while True:
            char = self.next()
            if char == _EOF:
                break
            if char != "." and not char.isdigit():
                self.backup()
                break
        value = self.consume()
        if re.fullmatch(r"[+-]?[0-9]+", value):
            cur.nodes.append(_Const(int(value)))
            return
        try:
            if not re.fullmatch(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)", value):
                raise ValueError(value)
            cur.nodes.append(_Const(float(value)))
        except ValueError:
            raise JSONPathError(f"cannot parse number {value}") from None

    def _array(self, cur: _List) -> None:
        while True:
            char = self.next()
            if char == _EOF or char == "\n":
                raise JSONPathError("unterminated array")
            if char == "]":
                break
        text = self.consume()[1:-1]
        if text == "*":
            text = ":"
        parts = text.split(",")
        if len(parts) > 1:
            cur.nodes.append(_Union(tuple(_action(f"[{p.strip(' ')}]") for p in parts)))
            return
        key = _DICT_KEY.fullmatch(text)
        if key is not None:
            cur.nodes.extend(_action(f".{key.group(1)}").nodes)
            return
        sliced = _SLICE.fullmatch(text)
        if sliced is None:
            raise JSONPathError(f"invalid array index {text}")
        groups = [g or "" for g in sliced.groups()]
        params: list[_Param] = []
        for i, raw in enumerate(groups):
            if raw:
                number = raw[1:] if i > 0 else raw
                if i > 0 and not number:
                    params.append(_Param())
                    continue
                try:
                    params.append(_Param(int(number), known=True))
                except ValueError:
                    raise JSONPathError(f"array index {number} is not a number") from None
            elif i == 1:
                params.append(_Param(params[0].value + 1, known=True, derived=True))
            else:
                params.append(_Param())
        cur.nodes.append(_Array((params[0], params[1], params[2])))

    def _filter(self, cur: _List) -> None:
        self.pos += 3
        self.consume()
        begin = end = False
        pair = ""
        while True:
            char = self.next()
            if char == _EOF or char == "\n":
                raise JSONPathError("unterminated filter")
            if char in "\"'":
                if not begin:
                    begin, pair = True, char
                    continue
                if self.input[self.pos - 2] != "\\" and char == pair:
                    end = True
            elif char == ")" and begin == end:
                break
        if self.next() != "]":
            raise JSONPathError("unclosed array expect ]")
        text = self.consume()[:-2]
        match = _FILTER.fullmatch(text)
        if match is None:
            cur.nodes.append(_Filter(_action(text), _List(), "exists"))
        else:
            cur.nodes.append(
                _Filter(_action(match.group(1)), _action(match.group(3)), match.group(2))
            )

    def _quote(self, cur: _List, quote: str) -> None:
        while True:
            char = self.next()
            if char == _EOF or char == "\n":
                raise JSONPathError("unterminated quoted string")
            if char == quote and self.input[self.pos - 2] != "\\":
                break
        value = self.consume()
        try:
            cur.nodes.append(_Text(_unquote(value)))
        except ValueError:
            raise JSONPathError(f"unquote string {value} error invalid syntax") from None

    def _field(self, cur: _List) -> None:
        self.consume()
        while True:
            char = self.next()
            if char == "\\":
                self.next()
            elif char == _EOF or char in _TERMINATORS:
                if char != _EOF:
                    self.backup()
                break
        value = self.consume()
        if value == "*":
            cur.nodes.append(_Wildcard())
        else:
            cur.nodes.append(_Field(value.replace("\\", "")))


def _action(text: str) -> _List:
    """An action's node list (client-go's ``parseAction``: parse ``{text}``)."""
    root = _Parser("{" + text + "}").parse()
    first = root.nodes[0] if root.nodes else None
    return first if isinstance(first, _List) else _List()


_SIMPLE_ESCAPES = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
}


def _unquote(quoted: str) -> str:
    """Go's ``strconv.Unquote``, also for single-quoted strings (client-go's UnquoteExtend)."""
    if len(quoted) < 2 or quoted[0] != quoted[-1] or quoted[0] not in "\"'":
        raise ValueError(quoted)
    quote, body = quoted[0], quoted[1:-1]
    out: list[str] = []
    i = 0
    while i < len(body):
        char = body[i]
        if char == quote:
            raise ValueError(quoted)
        if char != "\\":
            out.append(char)
            i += 1
            continue
        if i + 1 >= len(body):
            raise ValueError(quoted)
        esc = body[i + 1]
        i += 2
        if esc in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[esc])
        elif esc == quote:
            out.append(esc)
        elif esc in "xuU":
            width = {"x": 2, "u": 4, "U": 8}[esc]
            digits = body[i : i + width]
            if len(digits) != width or not re.fullmatch(r"[0-9a-fA-F]+", digits):
                raise ValueError(quoted)
            out.append(chr(int(digits, 16)))
            i += width
        elif esc in "01234567":
            digits = body[i - 1 : i + 2]
            if len(digits) != 3 or not re.fullmatch(r"[0-7]{3}", digits) or int(digits, 8) > 255:
                raise ValueError(quoted)
            out.append(chr(int(digits, 8)))
            i += 2
        else:
            raise ValueError(quoted)
    return "".join(out)


# --- evaluation ------------------------------------------------------------------------------


def _go_type(value: Any) -> str:
    if isinstance(value, dict):
        return "map[string]interface {}"
    if isinstance(value, list):
        return "[]interface {}"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int64"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, str):
        return "string"
    return "interface {}"


def _children(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return list(value.values())
    if isinstance(value, list):
        return list(value)
    if isinstance(value, str):
        return list(value.encode())  # Go indexes a string's bytes
    return []


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    raise JSONPathError("invalid type for comparison")


def _less(left: Any, right: Any) -> bool:
    kind = _kind(left)
    if kind != _kind(right):
        raise JSONPathError("incompatible types for comparison")
    if kind == "bool":
        raise JSONPathError("invalid type for comparison")
    return bool(left < right)


def _equal(left: Any, right: Any) -> bool:
    if _kind(left) != _kind(right):
        raise JSONPathError("incompatible types for comparison")
    return bool(left == right)


def _compare(operator: str, left: Any, right: Any) -> bool:
    if operator == "==":
        return _equal(left, right)
    if operator == "!=":
        return not _equal(left, right)
    if operator == "<":
        return _less(left, right)
    if operator == "<=":
        return _less(left, right) or _equal(left, right)
    if operator == ">":
        return not (_less(left, right) or _equal(left, right))
    if operator == ">=":
        return not _less(left, right)
    raise JSONPathError(f"unrecognized filter operator {operator}")


@dataclass(slots=True)
class _State:
    allow_missing: bool
    begin_range: int = 0
    in_range: int = 0
    end_range: int = 0
    last_end: int = -1


class Template:
    """A parsed template (see the module docstring)."""

    __slots__ = ("_nodes", "name", "text")

    def __init__(self, text: str, nodes: list[Any], name: str = "") -> None:
        self.text = text
        self.name = name
        self._nodes = nodes

    def find_results(self, data: Any, *, allow_missing_keys: bool = False) -> list[list[Any]]:
        """One result list per top-level node (text or action), ranges unrolled."""
        return self._find(0, data, _State(allow_missing_keys))

    def execute(self, data: Any, *, allow_missing_keys: bool = False) -> str:
        """The template's output for ``data`` (kubectl ``-o jsonpath=...``)."""
        return "".join(
            print_results(r) for r in self.find_results(data, allow_missing_keys=allow_missing_keys)
        )

    def _find(self, start: int, data: Any, state: _State) -> list[list[Any]]:
        nodes = self._nodes
        full: list[list[Any]] = []
        i = start
        while i < len(nodes):
            results = self._walk([data], nodes[i], state)
            if state.end_range > 0 and state.end_range <= state.in_range:
                state.end_range -= 1
                state.last_end = i
                break
            if state.begin_range > 0:
                state.begin_range -= 1
                state.in_range += 1
                if results:
                    for value in results:
                        full.extend(self._find(i + 1, value, state))
                else:
                    self._find(i + 1, None, state)
                state.in_range -= 1
                for k in range(i + 1, len(nodes)):
                    if k == state.last_end:
                        i = k
                        break
                i += 1
                continue
            full.append(results)
            i += 1
        return full

    def _walk(self, values: list[Any], node: Any, state: _State) -> list[Any]:
        if isinstance(node, _List):
            return self._eval_list(values, node, state)
        if isinstance(node, _Text):
            return [node.text]
        if isinstance(node, _Field):
            return self._eval_field(values, node, state)
        if isinstance(node, _Array):
            return _eval_array(values, node)
        if isinstance(node, _Filter):
            return self._eval_filter(values, node, state)
        if isinstance(node, _Const):
            return [node.value for _ in values]
        if isinstance(node, _Wildcard):
            return [child for value in values if value is not None for child in _children(value)]
        if isinstance(node, _Recursive):
            return _eval_recursive(values)
        if isinstance(node, _Union):
            out: list[Any] = []
            for sub in node.lists:
                out.extend(self._eval_list(values, sub, state))
            return out
        if isinstance(node, _Identifier):
            if node.name == "range":
                state.begin_range += 1
                return values
            if node.name == "end":
                if state.in_range > 0:
                    state.end_range += 1
                    return []
                raise JSONPathError("not in range, nothing to end")
            raise JSONPathError(f"unrecognized identifier {node.name}")
        raise JSONPathError(f"unexpected Node {node!r}")

    def _eval_list(self, values: list[Any], node: _List, state: _State) -> list[Any]:
        for sub in node.nodes:
            values = self._walk(values, sub, state)
        return values

    def _eval_field(self, values: list[Any], node: _Field, state: _State) -> list[Any]:
        if not values:
            return []
        out = [v[node.name] for v in values if isinstance(v, dict) and node.name in v]
        if not out and not state.allow_missing:
            raise JSONPathError(f"{node.name} is not found")
        return out

    def _eval_filter(self, values: list[Any], node: _Filter, state: _State) -> list[Any]:
        out: list[Any] = []
        for value in values:
            if not isinstance(value, list):
                shown = "<nil>" if value is None else go_text(value)
                raise JSONPathError(f"{shown} is not array or slice and cannot be filtered")
            for item in value:
                if node.operator == "exists":
                    try:
                        lefts = self._eval_list([item], node.left, state)
                    except JSONPathError:
                        lefts = []
                    if lefts:
                        out.append(item)
                    continue
                lefts = self._eval_list([item], node.left, state)
                if not lefts:
                    continue
                if len(lefts) > 1:
                    raise JSONPathError("can only compare one element at a time")
                rights = self._eval_list([item], node.right, state)
                if not rights:
                    continue
                if len(rights) > 1:
                    raise JSONPathError("can only compare one element at a time")
                if _compare(node.operator, lefts[0], rights[0]):
                    out.append(item)
        return out


def _eval_array(values: list[Any], node: _Array) -> list[Any]:
    out: list[Any] = []
    for value in values:
        if value is None:
            continue
        if not isinstance(value, list):
            raise JSONPathError(f"{_go_type(value)} is not array or slice")
        length = len(value)
        first, second, step_param = node.params
        start = first.value if first.known else 0
        if start < 0:
            start += length
        stop = second.value if second.known else length
        if stop < 0 or (stop == 0 and second.derived):
            stop += length
        if stop == start:
            return out
        if start >= length or start < 0:
            raise JSONPathError(f"array index out of bounds: index {start}, length {length}")
        if stop > length or stop < 0:
            raise JSONPathError(f"array index out of bounds: index {stop - 1}, length {length}")
        if start > stop:
            raise JSONPathError(f"starting index {start} is greater than ending index {stop}")
        step = 1
        if step_param.known:
            if step_param.value <= 0:
                raise JSONPathError("step must be > 0")
            step = step_param.value
        out.extend(value[start:stop:step])
    return out


def _eval_recursive(values: list[Any]) -> list[Any]:
    out: list[Any] = []
    for value in values:
        if value is None:
            continue
        children = _children(value)
        if children:
            out.append(value)
            out.extend(_eval_recursive(children))
    return out


# --- printing --------------------------------------------------------------------------------


#: Go prints a float64 with %v in exponent form from this decimal exponent up.
_GO_FLOAT_EXPONENT_THRESHOLD = 6
#: encoding/json writes a float64 in exponent form below/at or above these magnitudes.
_JSON_FLOAT_SMALL = 1e-6
_JSON_FLOAT_LARGE = 1e21


def _float_digits(value: float) -> tuple[str, str, int]:
    """(sign, shortest significant digits, digits before the point) of a finite nonzero float."""
    sign, digit_tuple, exponent = Decimal(repr(value)).as_tuple()
    digits = "".join(str(d) for d in digit_tuple)
    stripped = digits.rstrip("0")
    exponent = int(exponent) + len(digits) - len(stripped)
    return ("-" if sign else ""), stripped, len(stripped) + exponent


def _fixed_notation(sign: str, digits: str, point: int) -> str:
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return f"{sign}{digits}{'0' * (point - len(digits))}"
    return f"{sign}{digits[:point]}.{digits[point:]}"


def _exponent_notation(sign: str, digits: str, point: int, min_exp_digits: int) -> str:
    exponent = point - 1
    mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    exp_sign = "-" if exponent < 0 else "+"
    return f"{sign}{mantissa}e{exp_sign}{abs(exponent):0{min_exp_digits}d}"


def go_float(value: float) -> str:
    """Go's ``%v`` for a float64 (strconv 'g', shortest digits, exponent form when the
    decimal exponent is < -4 or >= 6): 3.0 -> "3", 0.25 -> "0.25", 1e6 -> "1e+06"."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "0"
    sign, digits, point = _float_digits(value)
    if point - 1 < -4 or point - 1 >= _GO_FLOAT_EXPONENT_THRESHOLD:
        return _exponent_notation(sign, digits, point, 2)
    return _fixed_notation(sign, digits, point)


def _json_float(value: float) -> str:
    """encoding/json's float64: fixed notation unless |v| < 1e-6 or >= 1e21 ("1e-7")."""
    if not math.isfinite(value) or value == 0:
        return "0"  # Go refuses NaN/Inf; JSON input cannot carry them anyway
    sign, digits, point = _float_digits(value)
    if abs(value) < _JSON_FLOAT_SMALL or abs(value) >= _JSON_FLOAT_LARGE:
        return _exponent_notation(sign, digits, point, 1)
    return _fixed_notation(sign, digits, point)


_JSON_HTML_ESCAPES = str.maketrans(
    {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)


def go_json(value: Any) -> str:
    """Compact ``json.Marshal`` output: sorted keys, HTML-safe escapes, Go float format."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _json_float(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False).translate(_JSON_HTML_ESCAPES)
    if isinstance(value, Mapping):
        items = (f"{go_json(str(k))}:{go_json(value[k])}" for k in sorted(value, key=str))
        return "{" + ",".join(items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(go_json(v) for v in value) + "]"
    return go_json(str(value))


def go_text(value: Any) -> str:
    """One value as client-go's ``PrintResults`` writes it."""
    if isinstance(value, dict | list):
        return go_json(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return go_float(value)
    return str(value)


def print_results(values: Sequence[Any]) -> str:
    """A result list as kubectl prints it: values separated by one space."""
    return " ".join(go_text(v) for v in values)


def parse(template: str, name: str = "") -> Template:
    """Parse a kubectl JSONPath template (``{.items[*].metadata.name}``, text outside braces
    is literal). Raises JSONPathError with client-go's message."""
    return Template(template, _Parser(template).parse().nodes, name)
