"""Label selectors: parsing, matching and canonical printing, as ``k8s.io/apimachinery/labels``.

Grammar (whitespace between tokens is ignored)::

    selector    := "" | requirement ("," requirement)*
    requirement := ["!"] key                      (exists / does not exist)
                 | key ("=" | "==" | "!=") value  (value may be empty)
                 | key ("in" | "notin") "(" [value ("," value)*] ")"
                 | key (">" | "<") integer

A ``Selector`` is an immutable, key-sorted tuple of ``Requirement``; ``str()`` gives the
canonical form upstream prints (``app=web,tier in (a,b),!legacy``). Parse errors raise
``SelectorError`` with upstream's message. ``Selector.nothing()`` (from a nil
``metav1.LabelSelector``) matches no object; the empty selector matches every object.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from sampan.api import fielderrors as fe
from sampan.api.names import is_qualified_name, is_valid_label_value

__all__ = [
    "Operator",
    "Requirement",
    "Selector",
    "SelectorError",
    "make_requirement",
    "parse_selector",
    "selector_from_label_selector",
    "selector_from_set",
]


class SelectorError(ValueError):
    """A label or field selector that does not parse or names an unsupported field."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Operator(enum.StrEnum):
    IN = "in"
    NOT_IN = "notin"
    EQUALS = "="
    DOUBLE_EQUALS = "=="
    NOT_EQUALS = "!="
    EXISTS = "exists"
    DOES_NOT_EXIST = "!"
    GREATER_THAN = "gt"
    LESS_THAN = "lt"


_BINARY_OPERATORS = "in, notin, =, ==, !=, gt, lt"


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    operator: Operator
    values: tuple[str, ...] = ()  # sorted, deduplicated

    def matches(self, labels: Mapping[str, str]) -> bool:
        op = self.operator
        has = self.key in labels
        if op in (Operator.EQUALS, Operator.DOUBLE_EQUALS, Operator.IN):
            return has and labels[self.key] in self.values
        if op in (Operator.NOT_EQUALS, Operator.NOT_IN):
            return not has or labels[self.key] not in self.values
        if op is Operator.EXISTS:
            return has
        if op is Operator.DOES_NOT_EXIST:
            return not has
        # gt / lt: both sides must be integers
        if not has or len(self.values) != 1:
            return False
        try:
            actual = int(labels[self.key])
            wanted = int(self.values[0])
        except ValueError:
            return False
        return actual > wanted if op is Operator.GREATER_THAN else actual < wanted

    def __str__(self) -> str:
        op = self.operator
        if op is Operator.EXISTS:
            return self.key
        if op is Operator.DOES_NOT_EXIST:
            return "!" + self.key
        if op in (Operator.IN, Operator.NOT_IN):
            return f"{self.key} {op.value} ({','.join(self.values)})"
        symbol = {Operator.GREATER_THAN: ">", Operator.LESS_THAN: "<"}.get(op, op.value)
        return f"{self.key}{symbol}{self.values[0] if self.values else ''}"


@dataclass(frozen=True, slots=True)
class Selector:
    requirements: tuple[Requirement, ...] = ()
    match_nothing: bool = False

    @classmethod
    def everything(cls) -> Selector:
        return cls()

    @classmethod
    def nothing(cls) -> Selector:
        return cls(match_nothing=True)

    @property
    def empty(self) -> bool:
        """True when the selector matches everything."""
        return not self.requirements and not self.match_nothing

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        if self.match_nothing:
            return False
        labels = labels or {}
        return all(r.matches(labels) for r in self.requirements)

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


def _validation_error(path: str, value: object, detail: str) -> str:
    return fe.error_string(fe.invalid(path, value, detail))


def make_requirement(
    key: str, operator: Operator, values: list[str] | tuple[str, ...], *, path: str = ""
) -> Requirement:
    """Build one requirement, validating as upstream's NewRequirement (raises SelectorError)."""
    errs: list[str] = []
    key_errs = is_qualified_name(key)
    if key_errs:
        errs.append(_validation_error(f"{path}.key" if path else "key", key, "; ".join(key_errs)))
    values_path = f"{path}.values" if path else "values"
    vals = list(values)
    if operator in (Operator.IN, Operator.NOT_IN):
        if not vals:
            errs.append(
                _validation_error(
                    values_path, vals, "for 'in', 'notin' operators, values set can't be empty"
                )
            )
    elif operator in (Operator.EQUALS, Operator.DOUBLE_EQUALS, Operator.NOT_EQUALS):
        if len(vals) != 1:
            errs.append(
                _validation_error(
                    values_path, vals, "exact-match compatibility requires one single value"
                )
            )
    elif operator in (Operator.EXISTS, Operator.DOES_NOT_EXIST):
        if vals:
            errs.append(
                _validation_error(
                    values_path, vals, "values set must be empty for exists and does not exist"
                )
            )
    else:
        if len(vals) != 1:
            errs.append(
                _validation_error(
                    values_path, vals, "for 'Gt', 'Lt' operators, exactly one value is required"
                )
            )
        for i, v in enumerate(vals):
            try:
                int(v)
            except ValueError:
                errs.append(
                    _validation_error(
                        f"{values_path}[{i}]",
                        v,
                        "for 'Gt', 'Lt' operators, the value must be an integer",
                    )
                )
    for i, v in enumerate(vals):
        v_errs = is_valid_label_value(v)
        if v_errs:
            errs.append(_validation_error(f"{values_path}[{i}][{key}]", v, "; ".join(v_errs)))
    if errs:
        raise SelectorError(errs[0] if len(errs) == 1 else "[" + ", ".join(errs) + "]")
    return Requirement(key=key, operator=operator, values=tuple(sorted(set(vals))))


# --- lexer ---------------------------------------------------------------------------------


class _Tok(enum.Enum):
    IDENT = "identifier"
    END = "end of string"
    COMMA = ","
    OPEN = "("
    CLOSE = ")"
    NOT = "!"
    EQ = "="
    DEQ = "=="
    NEQ = "!="
    GT = ">"
    LT = "<"
    IN = "in"
    NOTIN = "notin"
    ERROR = "error"


_SPECIAL = "=!(),<>"
_SYMBOLS = {
    "!": _Tok.NOT,
    "!=": _Tok.NEQ,
    "=": _Tok.EQ,
    "==": _Tok.DEQ,
    "(": _Tok.OPEN,
    ")": _Tok.CLOSE,
    ",": _Tok.COMMA,
    ">": _Tok.GT,
    "<": _Tok.LT,
}
_KEYWORDS = {"in": _Tok.IN, "notin": _Tok.NOTIN}


def _lex(text: str) -> list[tuple[_Tok, str]]:
    tokens: list[tuple[_Tok, str]] = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i] in " \t\r\n":
            i += 1
        if i >= n:
            tokens.append((_Tok.END, ""))
            return tokens
        ch = text[i]
        if ch in _SPECIAL:
            buf = ""
            while i < n and text[i] in _SPECIAL and (buf + text[i]) in _SYMBOLS:
                buf += text[i]
                i += 1
            if not buf:
                tokens.append((_Tok.ERROR, f"error expected: keyword found '{ch}'"))
                i += 1
                continue
            tokens.append((_SYMBOLS[buf], buf))
            continue
        start = i
        while i < n and text[i] not in _SPECIAL and text[i] not in " \t\r\n":
            i += 1
        word = text[start:i]
        tokens.append((_KEYWORDS.get(word, _Tok.IDENT), word))


class _Parser:
    def __init__(self, text: str) -> None:
        self._tokens = _lex(text)
        self._pos = 0

    def _peek(self, values: bool = True) -> tuple[_Tok, str]:
        tok, lit = self._tokens[self._pos]
        if values and tok in (_Tok.IN, _Tok.NOTIN):
            tok = _Tok.IDENT
        return tok, lit

    def _next(self, values: bool = True) -> tuple[_Tok, str]:
        tok, lit = self._peek(values)
        if self._pos < len(self._tokens) - 1:
            self._pos += 1
        return tok, lit

    def parse(self) -> list[Requirement]:
        reqs: list[Requirement] = []
        while True:
            tok, lit = self._peek()
            if tok in (_Tok.IDENT, _Tok.NOT):
                try:
                    reqs.append(self._requirement())
                except SelectorError as err:
                    raise SelectorError(f"unable to parse requirement: {err.message}") from None
                tok, lit = self._next()
                if tok is _Tok.END:
                    return reqs
                if tok is _Tok.COMMA:
                    tok2, lit2 = self._peek()
                    if tok2 not in (_Tok.IDENT, _Tok.NOT):
                        raise SelectorError(f"found '{lit2}', expected: identifier after ','")
                    continue
                raise SelectorError(f"found '{lit}', expected: ',' or 'end of string'")
            if tok is _Tok.END:
                return reqs
            raise SelectorError(f"found '{lit}', expected: !, identifier, or 'end of string'")

    def _requirement(self) -> Requirement:
        operator: Operator | None = None
        tok, lit = self._next()
        if tok is _Tok.NOT:
            operator = Operator.DOES_NOT_EXIST
            tok, lit = self._next()
        if tok is not _Tok.IDENT:
            raise SelectorError(f"found '{lit}', expected: identifier")
        key = lit
        key_errs = is_qualified_name(key)
        if key_errs:
            raise SelectorError(_validation_error("<nil>", key, "; ".join(key_errs)))
        nxt, _ = self._peek()
        if nxt in (_Tok.END, _Tok.COMMA):
            return make_requirement(key, operator or Operator.EXISTS, [])
        if operator is Operator.DOES_NOT_EXIST:
            # "!key" followed by something else: upstream then reads an operator
            pass
        op_tok, op_lit = self._next(values=False)
        op_map = {
            _Tok.NOT: Operator.DOES_NOT_EXIST,
            _Tok.EQ: Operator.EQUALS,
            _Tok.DEQ: Operator.DOUBLE_EQUALS,
            _Tok.GT: Operator.GREATER_THAN,
            _Tok.LT: Operator.LESS_THAN,
            _Tok.IN: Operator.IN,
            _Tok.NEQ: Operator.NOT_EQUALS,
            _Tok.NOTIN: Operator.NOT_IN,
        }
        if op_tok not in op_map:
            raise SelectorError(f"found '{op_lit}', expected: {_BINARY_OPERATORS}")
        operator = op_map[op_tok]
        if operator in (Operator.IN, Operator.NOT_IN):
            values = self._values()
        elif operator is Operator.DOES_NOT_EXIST:
            values = []
        else:
            values = self._exact_value()
        return make_requirement(key, operator, values)

    def _values(self) -> list[str]:
        tok, lit = self._next()
        if tok is not _Tok.OPEN:
            raise SelectorError(f"found '{lit}' expected: '('")
        tok, lit = self._peek()
        if tok in (_Tok.IDENT, _Tok.COMMA):
            values = self._identifier_list()
            close, _ = self._next()
            if close is not _Tok.CLOSE:
                raise SelectorError(f"found '{lit}', expected: ')'")
            return values
        if tok is _Tok.CLOSE:
            self._next()
            return [""]
        raise SelectorError(f"found '{lit}', expected: ',', ')' or identifier")

    def _identifier_list(self) -> list[str]:
        values: list[str] = []
        while True:
            tok, lit = self._next()
            if tok is _Tok.IDENT:
                values.append(lit)
                tok2, lit2 = self._peek()
                if tok2 is _Tok.COMMA:
                    continue
                if tok2 is _Tok.CLOSE:
                    return values
                raise SelectorError(f"found '{lit2}', expected: ',' or ')'")
            if tok is _Tok.COMMA:
                if not values:
                    values.append("")
                tok2, _ = self._peek()
                if tok2 is _Tok.CLOSE:
                    values.append("")
                    return values
                if tok2 is _Tok.COMMA:
                    self._next()
                    values.append("")
                continue
            raise SelectorError(f"found '{lit}', expected: ',', or identifier")

    def _exact_value(self) -> list[str]:
        tok, _ = self._peek()
        if tok in (_Tok.END, _Tok.COMMA):
            return [""]
        tok, lit = self._next()
        if tok is _Tok.IDENT:
            return [lit]
        raise SelectorError(f"found '{lit}', expected: identifier")


def _build(reqs: list[Requirement]) -> Selector:
    # Upstream sorts by key (stable), keeping every requirement.
    return Selector(requirements=tuple(sorted(reqs, key=lambda r: r.key)))


def parse_selector(text: str) -> Selector:
    """Parse a ``labelSelector`` query string; raises ``SelectorError``."""
    if not text.strip():
        return Selector.everything()
    return _build(_Parser(text).parse())


def selector_from_set(labels: Mapping[str, str]) -> Selector:
    """``key=value`` for every pair (e.g. a Service's or ReplicationController's selector)."""
    return _build([make_requirement(k, Operator.EQUALS, [v]) for k, v in labels.items()])


_INVALID_LABEL_SELECTOR = "invalid label selector"

_EXPRESSION_OPERATORS = {
    "In": Operator.IN,
    "NotIn": Operator.NOT_IN,
    "Exists": Operator.EXISTS,
    "DoesNotExist": Operator.DOES_NOT_EXIST,
}


def selector_from_label_selector(obj: Mapping[str, object] | None) -> Selector:
    """Convert a ``metav1.LabelSelector`` dict. ``None`` matches nothing; ``{}`` everything.
    Anything that is not a well-formed LabelSelector raises ``SelectorError``."""
    if obj is None:
        return Selector.nothing()
    if not isinstance(obj, Mapping):
        raise SelectorError(_INVALID_LABEL_SELECTOR)
    match_labels = obj.get("matchLabels") or {}
    expressions = obj.get("matchExpressions") or []
    if not isinstance(match_labels, Mapping) or not isinstance(expressions, list):
        raise SelectorError(_INVALID_LABEL_SELECTOR)
    reqs = []
    for key, value in match_labels.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise SelectorError(_INVALID_LABEL_SELECTOR)
        reqs.append(make_requirement(key, Operator.EQUALS, [value]))
    for expr in expressions:
        if not isinstance(expr, Mapping):
            raise SelectorError(_INVALID_LABEL_SELECTOR)
        op_name = expr.get("operator", "")
        if not isinstance(op_name, str) or op_name not in _EXPRESSION_OPERATORS:
            raise SelectorError(f'"{op_name}" is not a valid label selector operator')
        key = expr.get("key", "")
        values = expr.get("values") or []
        if (
            not isinstance(key, str)
            or not isinstance(values, list)
            or not all(isinstance(v, str) for v in values)
        ):
            raise SelectorError(_INVALID_LABEL_SELECTOR)
        reqs.append(make_requirement(key, _EXPRESSION_OPERATORS[op_name], values))
    return _build(reqs)
