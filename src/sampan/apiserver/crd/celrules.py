"""CEL validation rules of custom resources (``x-kubernetes-validations``), as kube-apiserver 1.32
applies them.

* ``compile_errors(schema, path)``: the write-time check of a CRD: every ``rule`` and
  ``messageExpression`` must compile (``...x-kubernetes-validations[0].rule: Invalid value:
  apiextensions.ValidationRule{...}: compilation failed: ERROR: <input>:1:6: ...``), first
  with ``dyn`` variables, then type-checked against protobuf messages built from the schema
  (``SchemaTypes``), so a misspelt field (``undefined field 'replicsa'``), a type mismatch
  or a non-bool rule is refused as upstream refuses it. Comparisons across numeric types are
  not reported (upstream's CEL allows them; cel-cpp's checker does not, its runtime does).
* ``RuleSet.for_schema(schema)``: the compiled rules of one version's schema, cached on the
  ``ServedVersion`` by the admission plugin; ``RuleSet.validate(obj, old)`` returns the field
  errors of an object (``old`` is the stored object on update, None on create).

Semantics: ``self`` is the value at the rule's schema node (objects as maps whose property
names are escaped as upstream escapes them: ``foo-bar`` -> ``foo__dash__bar``; at the root
only ``apiVersion``, ``kind``, ``metadata.name`` and ``metadata.generateName``; strings of
format ``date-time``/``date`` are timestamps and ``duration`` durations, numbers doubles, as
upstream declares them); null values are not validated; rules apply at any depth
(properties, additionalProperties, items).
Transition rules (using ``oldSelf``) run only on update where an old value is correlated: the
same property, the same map key, the same key of an ``x-kubernetes-list-type: map`` list, the
same value of a ``set`` list; ``optionalOldSelf: true`` rules always run, with ``oldSelf`` an
optional. Ratcheting (upstream's CRDValidationRatcheting, on by default in 1.32): a rule that
does not use ``oldSelf`` and fails on a value equal to its correlated old value is not an
error. Failures become field errors of ``reason`` (FieldValueInvalid by default, with the
schema type as the value: ``spec: Invalid value: "object": <message>``), at the rule's node
plus its ``fieldPath``; the message is ``messageExpression``'s result, else ``message``, else
``failed rule: <rule>``. The cost bound is the CEL module's: a rule that runs out of it is an
error and no further rules run; all the rules of one object share ``REQUEST_BUDGET_S`` of
evaluation time (many items each running a costly rule), past which the object is refused with
upstream's ``validation failed due to running out of cost budget, no further validation rules
will be run``.

Invariants: never mutates the objects or the schema; compiling never evaluates anything.
"""

from __future__ import annotations

import copy
import importlib
import itertools
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sampan.api import fielderrors as fe
from sampan.api.errors import Cause
from sampan.apiserver import cel


class _Lazy:
    """A module (or one of its attributes) imported on first use: protobuf costs a server
    ~35 ms to import, and only a CRD or policy with CEL rules needs it."""

    def __init__(self, module: str, attribute: str = "") -> None:
        self._module = module
        self._attribute = attribute
        self._target: Any = None

    def __getattr__(self, name: str) -> Any:
        target = self._target
        if target is None:
            target = importlib.import_module(self._module)
            if self._attribute:
                target = getattr(target, self._attribute)
            self._target = target
        return getattr(target, name)


descriptor_pb2: Any = _Lazy("google.protobuf.descriptor_pb2")
descriptor_pool: Any = _Lazy("google.protobuf.descriptor_pool")
duration_pb2: Any = _Lazy("google.protobuf.duration_pb2")
struct_pb2: Any = _Lazy("google.protobuf.struct_pb2")
timestamp_pb2: Any = _Lazy("google.protobuf.timestamp_pb2")

__all__ = [
    "REQUEST_BUDGET_S",
    "CustomResourceRules",
    "RuleSet",
    "SchemaTypes",
    "compile_errors",
    "escape_property",
    "numeric_mismatch_only",
]

REQUEST_BUDGET_S = 0.5
"""CEL time one object's validation may take in total (upstream: 10,000,000 cost units per
request); past it the remaining rules do not run and the object is refused."""

_RULE_VARS = ("self", "oldSelf")
_OPTIONAL_VARS = ("self", "__oldSelfValue", "__oldSelfPresent")
_OPTIONAL_WRAP = (
    "cel.bind(oldSelf, __oldSelfPresent ? optional.of(__oldSelfValue) : optional.none(), ({}))"
)
_RESERVED = frozenset(
    "true false null in as break const continue else for function if import let loop package "
    "namespace return var void while".split()
)
_REASONS = {
    None: fe.REASON_INVALID,
    "FieldValueInvalid": fe.REASON_INVALID,
    "FieldValueForbidden": fe.REASON_FORBIDDEN,
    "FieldValueRequired": fe.REASON_REQUIRED,
    "FieldValueDuplicate": fe.REASON_DUPLICATE,
}


def escape_property(name: str) -> str:
    """A property name as CEL sees it (upstream's escaping of names that are not identifiers)."""
    if name in _RESERVED:
        return f"__{name}__"
    out = name.replace("__", "__underscores__")
    for char, word in ((".", "__dot__"), ("-", "__dash__"), ("/", "__slash__")):
        out = out.replace(char, word)
    return out


def _go_quote(text: str) -> str:
    out = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{out}"'


def _rule_value(rule: Mapping[str, Any]) -> str:
    """The rule as Go's ``%#v`` prints upstream's internal ValidationRule (the value of a
    compile error)."""
    reason = rule.get("reason")
    reason_text = (
        f"(*apiextensions.FieldValueErrorReason)({_go_quote(str(reason))})"
        if reason
        else "(*apiextensions.FieldValueErrorReason)(nil)"
    )
    optional = rule.get("optionalOldSelf")
    optional_text = (
        f"(*bool)({str(bool(optional)).lower()})" if optional is not None else "(*bool)(nil)"
    )
    return (
        "apiextensions.ValidationRule{"
        f"Rule:{_go_quote(str(rule.get('rule') or ''))}, "
        f"Message:{_go_quote(str(rule.get('message') or ''))}, "
        f"MessageExpression:{_go_quote(str(rule.get('messageExpression') or ''))}, "
        f"Reason:{reason_text}, "
        f"FieldPath:{_go_quote(str(rule.get('fieldPath') or ''))}, "
        f"OptionalOldSelf:{optional_text}"
        "}"
    )


@dataclass(slots=True)
class _Rule:
    rule: str
    message: str
    reason: str | None
    field_path: str
    program: cel.Program
    message_program: cel.Program | None
    transition: bool
    optional_old_self: bool


def _compile_rule(rule: Mapping[str, Any]) -> tuple[_Rule | None, list[tuple[str, str]]]:
    """The compiled rule, or the (field, detail) compile errors."""
    text = str(rule.get("rule") or "")
    errors: list[tuple[str, str]] = []
    program: cel.Program | None = None
    if text.strip():
        try:
            program = cel.compile(text, _RULE_VARS)
        except cel.CompileError as err:
            detail = str(err)
            if not detail.startswith("cel expression"):
                detail = f"compilation failed: {detail}"
            errors.append(("rule", detail))
    message_program = None
    expression = str(rule.get("messageExpression") or "")
    if expression.strip():
        try:
            message_program = cel.compile(expression, _RULE_VARS, result="string")
        except cel.CompileError as err:
            detail = str(err)
            if detail.startswith("cel expression"):
                detail = "must evaluate to a string"
            else:
                detail = f"messageExpression compilation failed: {detail}"
            errors.append(("messageExpression", detail))
    if errors or program is None:
        return None, errors
    optional = bool(rule.get("optionalOldSelf"))
    transition = program.uses("oldSelf")
    if optional and transition:
        program = cel.compile(_OPTIONAL_WRAP.format(text), _OPTIONAL_VARS)
    return (
        _Rule(
            rule=text,
            message=str(rule.get("message") or ""),
            reason=rule.get("reason"),
            field_path=str(rule.get("fieldPath") or ""),
            program=program,
            message_program=message_program,
            transition=transition,
            optional_old_self=optional,
        ),
        [],
    )


# --- schema types for write-time type checks -------------------------------------------------

_FD: Any = _Lazy("google.protobuf.descriptor_pb2", "FieldDescriptorProto")
_PROTO_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# FieldDescriptorProto's type numbers (descriptor.proto: DOUBLE 1, INT64 3, BOOL 8, STRING 9),
# literal so that importing this module does not import protobuf.
_SCALARS = {
    "string": (9, cel.Type.STRING),
    "integer": (3, cel.Type.INT),
    "number": (1, cel.Type.DOUBLE),
    "boolean": (8, cel.Type.BOOL),
}
_packages = itertools.count()
_GO_DURATION = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS_NS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}


def _camel(name: str) -> str:
    """protoc's name of a map field's entry message (``match_labels``/``matchLabels`` ->
    ``MatchLabels``); descriptors with another name are refused."""
    out = []
    upper = True
    for char in name:
        if char == "_":
            upper = True
        elif upper:
            out.append(char.upper())
            upper = False
        else:
            out.append(char)
    return "".join(out)


def _time_kind(schema: Mapping[str, Any]) -> str | None:
    """``Timestamp``/``Duration`` for strings that upstream's CEL sees as those types."""
    if schema.get("type") != "string":
        return None
    return {"date-time": "Timestamp", "date": "Timestamp", "duration": "Duration"}.get(
        str(schema.get("format") or "")
    )


def _timestamp(text: str) -> Any:
    try:
        if len(text) == 10:
            parsed = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
        else:
            parsed = datetime.fromisoformat(text)
            if parsed.tzinfo is None:
                return None
    except ValueError:
        return None
    value = timestamp_pb2.Timestamp()
    value.FromDatetime(parsed.astimezone(UTC).replace(tzinfo=None))
    return value


def _duration(text: str) -> Any:
    """A Go duration string (``1h30m``, ``-1.5s``, ``0``) as a protobuf Duration."""
    body = text[1:] if text[:1] in "+-" else text
    if body == "0":
        return duration_pb2.Duration()
    total_ns = 0
    position = 0
    for match in _GO_DURATION.finditer(body):
        if match.start() != position or match.group(1) in ("", "."):
            return None
        total_ns += int(float(match.group(1)) * _DURATION_UNITS_NS[match.group(2)])
        position = match.end()
    if position != len(body) or not body:
        return None
    value = duration_pb2.Duration()
    value.FromNanoseconds(-total_ns if text.startswith("-") else total_ns)
    return value


class SchemaTypes:
    """Protobuf messages mirroring a schema's objects, so that rules type-check against the
    schema as upstream's declarations make them (an object with properties is a message
    whose fields are the escaped property names; ``additionalProperties`` a map; arrays
    lists; int-or-string, preserve-unknown-fields and nullable values ``dyn``)."""

    def __init__(
        self,
        resolve: Any = None,
        *,
        time_types: bool = True,
    ) -> None:
        """``resolve(node) -> node`` follows ``$ref``s (OpenAPI definitions) and must return
        the same object for the same definition; ``time_types``: declare ``date-time`` and
        ``duration`` strings as timestamps and durations (CRD rules, whose values are
        converted) or as strings (policies, whose objects are plain JSON)."""
        self._resolve = resolve
        self._time_types = time_types
        self.package = f"sampan.crd{next(_packages)}"
        self._file = descriptor_pb2.FileDescriptorProto(
            name=f"{self.package}.proto",
            package=self.package,
            syntax="proto3",
            dependency=[
                "google/protobuf/struct.proto",
                "google/protobuf/timestamp.proto",
                "google/protobuf/duration.proto",
            ],
        )
        self._names = itertools.count()
        self._types: list[tuple[Mapping[str, Any], bool, Any]] = []

    def pool(self) -> Any:
        pool = descriptor_pool.DescriptorPool()
        for module in (struct_pb2, timestamp_pb2, duration_pb2):
            pool.AddSerializedFile(module.DESCRIPTOR.serialized_pb)
        pool.Add(self._file)
        return pool

    @staticmethod
    def _dyn(schema: Mapping[str, Any]) -> bool:
        return bool(
            schema.get("x-kubernetes-int-or-string")
            or schema.get("nullable")
            or schema.get("x-kubernetes-embedded-resource")
            or (schema.get("x-kubernetes-preserve-unknown-fields") and not schema.get("properties"))
            or not schema.get("type")
        )

    def _norm(self, schema: Mapping[str, Any]) -> Mapping[str, Any]:
        return self._resolve(schema) if self._resolve is not None else schema

    def _time(self, schema: Mapping[str, Any]) -> str | None:
        return _time_kind(schema) if self._time_types else None

    def cel_type(self, schema: Mapping[str, Any], *, root: bool = False) -> Any:
        """The CEL type of a value of ``schema``."""
        schema = self._norm(schema)
        if self._dyn(schema) and not root:
            return cel.Type.DYN
        kind = schema.get("type")
        time_kind = self._time(schema)
        if time_kind is not None:
            return cel.Type.TIMESTAMP if time_kind == "Timestamp" else cel.Type.DURATION
        if kind in _SCALARS:
            return _SCALARS[kind][1]
        if kind == "array":
            items = schema.get("items")
            return cel.Type.List(
                self.cel_type(items) if isinstance(items, Mapping) else cel.Type.DYN
            )
        if kind == "object" or root:
            if schema.get("properties") or root:
                return cel.Type(f"{self.package}.{self.message(schema, root=root)}")
            additional = schema.get("additionalProperties")
            if isinstance(additional, Mapping):
                return cel.Type.Map(cel.Type.STRING, self.cel_type(additional))
        return cel.Type.DYN

    def message(self, schema: Mapping[str, Any], *, root: bool = False) -> str:
        schema = self._norm(schema)
        for known, known_root, name in self._types:
            if known is schema and known_root == root:
                return name
        name = f"M{next(self._names)}"
        self._types.append((schema, root, name))
        message = self._file.message_type.add(name=name)
        number = itertools.count(1)
        properties = schema.get("properties") or {}
        if root:
            meta = self._file.message_type.add(name=f"{name}Meta")
            for key in ("name", "generateName"):
                meta.field.add(
                    name=key, number=next(number), type=_FD.TYPE_STRING, label=_FD.LABEL_OPTIONAL
                )
            for key in ("apiVersion", "kind"):
                message.field.add(
                    name=key, number=next(number), type=_FD.TYPE_STRING, label=_FD.LABEL_OPTIONAL
                )
            message.field.add(
                name="metadata",
                number=next(number),
                type=_FD.TYPE_MESSAGE,
                type_name=f".{self.package}.{name}Meta",
                label=_FD.LABEL_OPTIONAL,
            )
        for key, sub in properties.items():
            if root and key in ("apiVersion", "kind", "metadata"):
                continue
            field_name = escape_property(str(key))
            if not isinstance(sub, Mapping) or not _PROTO_NAME.match(field_name):
                continue
            self._add_field(message, field_name, next(number), sub)
        return name

    def _add_field(self, message: Any, name: str, number: int, schema: Mapping[str, Any]) -> None:
        schema = self._norm(schema)
        kind = schema.get("type")
        time_kind = self._time(schema)
        if self._dyn(schema):
            self._add_well_known(message, name, number, "Value")
        elif time_kind is not None:
            self._add_well_known(message, name, number, time_kind)
        elif kind in _SCALARS:
            message.field.add(
                name=name, number=number, type=_SCALARS[kind][0], label=_FD.LABEL_OPTIONAL
            )
        elif kind == "array":
            items = schema.get("items")
            element = self._element(items) if isinstance(items, Mapping) else None
            if element is None:
                self._add_well_known(message, name, number, "ListValue")
            else:
                message.field.add(name=name, number=number, label=_FD.LABEL_REPEATED, **element)
        elif kind == "object" and schema.get("properties"):
            message.field.add(
                name=name,
                number=number,
                type=_FD.TYPE_MESSAGE,
                type_name=f".{self.package}.{self.message(schema)}",
                label=_FD.LABEL_OPTIONAL,
            )
        elif kind == "object" and isinstance(schema.get("additionalProperties"), Mapping):
            element = self._element(schema["additionalProperties"])
            if element is None:
                self._add_well_known(message, name, number, "Struct")
                return
            entry = message.nested_type.add(name=f"{_camel(name)}Entry")
            entry.options.map_entry = True
            entry.field.add(name="key", number=1, type=_FD.TYPE_STRING, label=_FD.LABEL_OPTIONAL)
            entry.field.add(name="value", number=2, label=_FD.LABEL_OPTIONAL, **element)
            message.field.add(
                name=name,
                number=number,
                type=_FD.TYPE_MESSAGE,
                type_name=f".{self.package}.{message.name}.{entry.name}",
                label=_FD.LABEL_REPEATED,
            )
        else:
            self._add_well_known(message, name, number, "Struct" if kind == "object" else "Value")

    def _element(self, schema: Mapping[str, Any]) -> dict[str, Any] | None:
        """The proto type of a list item or map value (None: needs ``dyn``)."""
        schema = self._norm(schema)
        if self._dyn(schema):
            return None
        kind = schema.get("type")
        time_kind = self._time(schema)
        if time_kind is not None:
            return {"type": _FD.TYPE_MESSAGE, "type_name": f".google.protobuf.{time_kind}"}
        if kind in _SCALARS:
            return {"type": _SCALARS[kind][0]}
        if kind == "object" and schema.get("properties"):
            return {
                "type": _FD.TYPE_MESSAGE,
                "type_name": f".{self.package}.{self.message(schema)}",
            }
        return None

    @staticmethod
    def _add_well_known(message: Any, name: str, number: int, kind: str) -> None:
        message.field.add(
            name=name,
            number=number,
            type=_FD.TYPE_MESSAGE,
            type_name=f".google.protobuf.{kind}",
            label=_FD.LABEL_OPTIONAL,
        )


_NUMERIC_MISMATCH = re.compile(
    r"found no matching overload for '_(?:<|<=|>|>=|==|!=)_' applied to "
    r"'\((?:int|uint|double), (?:int|uint|double)\)'"
)


def numeric_mismatch_only(detail: str) -> bool:
    """Whether the errors are not to be reported: every error is a comparison across numeric
    types, which kube-apiserver's CEL accepts (cross-type numeric comparisons) and cel-cpp's
    checker does not (its runtime compares them as upstream does), or the checker could not
    use the generated messages (a schema the descriptors cannot mirror)."""
    if "'sampan.crd" in detail:
        return True
    errors = [line for line in detail.split("\n") if line.startswith("ERROR:")]
    return bool(errors) and all(_NUMERIC_MISMATCH.search(line) for line in errors)


def _type_errors(
    schema: Mapping[str, Any], rules: list[Any], root: bool
) -> dict[tuple[int, str], str]:
    """Write-time type errors of a node's rules: {(rule index, field): detail}."""
    types = SchemaTypes()
    try:
        self_type = types.cel_type(schema, root=root)
        env = cel.TypedEnv(types.pool(), {"self": self_type, "oldSelf": self_type})
        optional_env = cel.TypedEnv(types.pool(), {"self": self_type, "oldSelf": cel.Type.DYN})
    except Exception:  # a schema the descriptors cannot mirror: the dyn checks stand alone
        return {}
    errors: dict[tuple[int, str], str] = {}
    for i, rule in enumerate(rules):
        if not isinstance(rule, Mapping):
            continue
        check_env = optional_env if rule.get("optionalOldSelf") else env
        text = str(rule.get("rule") or "")
        if text.strip():
            try:
                check_env.check(text)
            except cel.CompileError as err:
                detail = str(err)
                if numeric_mismatch_only(detail):
                    continue
                errors[(i, "rule")] = (
                    detail
                    if detail.startswith("cel expression")
                    else f"compilation failed: {detail}"
                )
        expression = str(rule.get("messageExpression") or "")
        if expression.strip():
            try:
                check_env.check(expression, result="string")
            except cel.CompileError as err:
                detail = str(err)
                if numeric_mismatch_only(detail):
                    continue
                errors[(i, "messageExpression")] = (
                    "must evaluate to a string"
                    if detail.startswith("cel expression")
                    else f"messageExpression compilation failed: {detail}"
                )
    return errors


def _children(schema: Mapping[str, Any], path: str) -> list[tuple[Mapping[str, Any], str]]:
    out: list[tuple[Mapping[str, Any], str]] = []
    properties = schema.get("properties")
    if isinstance(properties, Mapping):
        for name, sub in properties.items():
            if isinstance(sub, Mapping):
                out.append((sub, f"{path}.properties[{name}]"))
    for key in ("additionalProperties", "items"):
        sub = schema.get(key)
        if isinstance(sub, Mapping):
            out.append((sub, f"{path}.{key}"))
    return out


def compile_errors(schema: Any, path: str, *, root: bool = True) -> list[Cause]:
    """Compile errors of every rule in ``schema`` (rooted at field path ``path``): syntax and
    functions first, then types against the schema (misspelt fields, mismatched overloads)."""
    causes: list[Cause] = []
    if not isinstance(schema, Mapping):
        return causes
    rules = schema.get("x-kubernetes-validations")
    rules = rules if isinstance(rules, list) else []
    typed: dict[tuple[int, str], str] | None = None
    for i, rule in enumerate(rules):
        if not isinstance(rule, Mapping):
            continue
        _, errors = _compile_rule(rule)
        if not errors:
            if typed is None:
                typed = _type_errors(schema, rules, root)
            errors = [
                (name, typed[(i, name)])
                for name in ("rule", "messageExpression")
                if (i, name) in typed
            ]
        for name, detail in errors:
            where = f"{path}.x-kubernetes-validations[{i}].{name}"
            causes.append(
                Cause(fe.REASON_INVALID, f"Invalid value: {_rule_value(rule)}: {detail}", where)
            )
    for sub, sub_path in _children(schema, path):
        causes.extend(compile_errors(sub, sub_path, root=False))
    return causes


@dataclass(slots=True)
class _Node:
    """A schema node with its compiled rules and its children that carry rules."""

    schema: Mapping[str, Any]
    rules: list[_Rule] = field(default_factory=list)
    properties: dict[str, _Node] = field(default_factory=dict)
    additional: _Node | None = None
    items: _Node | None = None

    def empty(self) -> bool:
        return not (self.rules or self.properties or self.additional or self.items)


def _build(schema: Mapping[str, Any]) -> _Node:
    node = _Node(schema)
    rules = schema.get("x-kubernetes-validations")
    for rule in rules if isinstance(rules, list) else []:
        if isinstance(rule, Mapping):
            compiled, _ = _compile_rule(rule)
            if compiled is not None:
                node.rules.append(compiled)
    properties = schema.get("properties")
    if isinstance(properties, Mapping):
        for name, sub in properties.items():
            if isinstance(sub, Mapping):
                child = _build(sub)
                if not child.empty():
                    node.properties[name] = child
    for key in ("additionalProperties", "items"):
        sub = schema.get(key)
        if isinstance(sub, Mapping):
            child = _build(sub)
            if not child.empty():
                setattr(node, "additional" if key == "additionalProperties" else "items", child)
    return node


def _view(value: Any, schema: Mapping[str, Any] | None, *, root: bool = False) -> Any:
    """The value as CEL sees it: property names escaped; at the root only type and name meta."""
    if isinstance(value, dict):
        properties = schema.get("properties") if schema is not None else None
        additional = schema.get("additionalProperties") if schema is not None else None
        out: dict[str, Any] = {}
        for key, item in value.items():
            if root and key == "metadata":
                meta = item if isinstance(item, dict) else {}
                out["metadata"] = {k: meta[k] for k in ("name", "generateName") if k in meta}
                continue
            if isinstance(properties, Mapping) and properties:
                sub = properties.get(key)
                out[escape_property(key)] = _view(item, sub if isinstance(sub, Mapping) else None)
            else:
                out[key] = _view(item, additional if isinstance(additional, Mapping) else None)
        return out
    if isinstance(value, list):
        items = schema.get("items") if schema is not None else None
        return [_view(item, items if isinstance(items, Mapping) else None) for item in value]
    if schema is None:
        return value
    if isinstance(value, int) and not isinstance(value, bool) and schema.get("type") == "number":
        return float(value)  # a JSON 2 in a number field is the double 2.0, as declared
    if isinstance(value, str):
        time_kind = _time_kind(schema)
        if time_kind is not None:
            converted = _timestamp(value) if time_kind == "Timestamp" else _duration(value)
            return value if converted is None else converted
    return value


def _schema_type(schema: Mapping[str, Any]) -> str:
    return str(schema.get("type") or "")


def _join(path: str, child: str) -> str:
    return f"{path}.{child}" if path else child


def _normalized_field_path(field_path: str) -> str:
    """``.spec.foo`` / ``['a.b']`` -> a field path suffix (``spec.foo``, ``a.b``)."""
    out: list[str] = []
    i = 0
    while i < len(field_path):
        char = field_path[i]
        if char == ".":
            j = i + 1
            while j < len(field_path) and field_path[j] not in ".[":
                j += 1
            out.append(field_path[i + 1 : j])
            i = j
        elif char == "[" and field_path[i + 1 : i + 2] == "'":
            end = field_path.find("']", i + 2)
            if end < 0:
                break
            out.append(field_path[i + 2 : end])
            i = end + 2
        else:
            break
    return ".".join(out)


class _Stop(Exception):
    """The cost budget ran out: no further rules run."""


class RuleSet:
    """The compiled rules of one schema (see the module docstring)."""

    def __init__(self, root: _Node | None, *, budget_s: float = REQUEST_BUDGET_S) -> None:
        self._root = root
        self._budget_s = budget_s
        self._deadline = 0.0

    @classmethod
    def for_schema(
        cls, schema: Mapping[str, Any] | None, *, budget_s: float = REQUEST_BUDGET_S
    ) -> RuleSet:
        if not isinstance(schema, Mapping):
            return cls(None, budget_s=budget_s)
        root = _build(schema)
        return cls(None if root.empty() else root, budget_s=budget_s)

    @property
    def empty(self) -> bool:
        return self._root is None

    def validate(self, obj: Mapping[str, Any], old: Mapping[str, Any] | None) -> list[Cause]:
        if self._root is None:
            return []
        causes: list[Cause] = []
        self._deadline = time.perf_counter() + self._budget_s
        try:
            self._walk(self._root, obj, old, "", causes, root=True)
        except _Stop:
            pass
        return causes

    def _walk(
        self,
        node: _Node,
        value: Any,
        old: Any,
        path: str,
        causes: list[Cause],
        *,
        root: bool = False,
    ) -> None:
        if value is None:
            return
        if node.rules:
            self._run_rules(node, value, old, path, causes, root=root)
        if isinstance(value, dict):
            old_map = old if isinstance(old, dict) else None
            for key, item in value.items():
                child = node.properties.get(key) if node.properties else None
                where = _join(path, key)
                if child is None and node.additional is not None and not node.properties:
                    child = node.additional
                    where = f"{path}[{key}]"
                if child is not None:
                    old_item = old_map.get(key) if old_map is not None else None
                    self._walk(child, item, old_item, where, causes)
        elif isinstance(value, list) and node.items is not None:
            correlate = _correlator(node.schema, old)
            for i, item in enumerate(value):
                self._walk(node.items, item, correlate(item), f"{path}[{i}]", causes)

    def _run_rules(
        self, node: _Node, value: Any, old: Any, path: str, causes: list[Cause], *, root: bool
    ) -> None:
        schema = node.schema
        this = _view(value, schema, root=root)
        that = _view(old, schema, root=root) if old is not None else None
        shown_path = path or "<nil>"
        for rule in node.rules:
            if rule.transition and old is None and not rule.optional_old_self:
                continue
            if rule.optional_old_self and rule.transition:
                activation = {
                    "self": this,
                    "__oldSelfValue": that,
                    "__oldSelfPresent": old is not None,
                }
            else:
                activation = {"self": this, "oldSelf": that}
            if time.perf_counter() > self._deadline:
                causes.append(
                    fe.invalid(
                        shown_path,
                        _schema_type(schema),
                        "validation failed due to running out of cost budget, no further "
                        "validation rules will be run",
                    )
                )
                raise _Stop()
            try:
                ok = rule.program.evaluate(activation)
            except cel.CostExceeded as err:
                causes.append(
                    fe.invalid(
                        shown_path,
                        _schema_type(schema),
                        f"'{err}': no further validation rules will be run due to call cost "
                        f"exceeds limit for rule: {_rule_text(rule)}",
                    )
                )
                raise _Stop() from err
            except cel.EvalError as err:
                causes.append(
                    fe.invalid(
                        shown_path,
                        _schema_type(schema),
                        f"{err} evaluating rule: {_rule_text(rule)}",
                    )
                )
                continue
            if ok is True:
                continue
            if not rule.transition and old is not None and old == value:
                continue  # ratcheting: an unchanged value keeps passing
            where = path
            if rule.field_path:
                where = _join(path, _normalized_field_path(rule.field_path))
            causes.append(self._failure(rule, activation, where or "<nil>", _schema_type(schema)))

    @staticmethod
    def _failure(rule: _Rule, activation: dict[str, Any], path: str, type_name: str) -> Cause:
        detail = ""
        if rule.message_program is not None:
            try:
                text = rule.message_program.evaluate(
                    {"self": activation.get("self"), "oldSelf": activation.get("oldSelf")}
                )
            except cel.EvalError:
                text = ""
            if isinstance(text, str) and text.strip() and "\n" not in text.strip():
                detail = text.strip()
        if not detail:
            detail = (
                rule.message.strip() if rule.message.strip() else f"failed rule: {_rule_text(rule)}"
            )
        reason = _REASONS.get(rule.reason, fe.REASON_INVALID)
        if reason == fe.REASON_FORBIDDEN:
            return fe.forbidden(path, detail)
        if reason == fe.REASON_REQUIRED:
            return fe.required(path, detail)
        if reason == fe.REASON_DUPLICATE:
            return fe.duplicate(path, type_name)
        return fe.invalid(path, type_name, detail)


def _rule_text(rule: _Rule) -> str:
    return rule.message.strip() if rule.message.strip() else rule.rule.strip()


def _correlator(schema: Mapping[str, Any], old: Any) -> Any:
    """For a list: new item -> its old item (map lists by their keys, sets by value)."""
    if not isinstance(old, list):
        return lambda item: None
    list_type = schema.get("x-kubernetes-list-type")
    if list_type == "map":
        keys = [str(k) for k in schema.get("x-kubernetes-list-map-keys") or []]

        def key_of(item: Any) -> Any:
            if not isinstance(item, dict):
                return None
            return tuple(repr(item.get(k)) for k in keys)

        by_key = {key_of(item): item for item in old if isinstance(item, dict)}
        return lambda item: by_key.get(key_of(item))
    if list_type == "set":
        return lambda item: item if item in old else None
    return lambda item: None


class CustomResourceRules:
    """Validating admission step that applies the CEL rules of a custom resource's schema.

    Upstream evaluates these rules in the custom resource strategy's validation, after mutating
    admission and before validating admission; placed first among the validating plugins, this
    step runs at the same point. ``custom`` returns the ``CustomResources`` (None until the
    API server built it); ``get(group, plural, namespace, name)`` reads the stored object (for
    writes of the scale subresource); the compiled rules are cached on each
    ``ServedVersion``."""

    name = "CustomResourceValidationRules"
    mutating = False

    def __init__(self, custom: Any, get: Any = None) -> None:
        self._custom = custom
        self._get = get

    async def admit(self, attrs: Any) -> None:
        obj = attrs.obj
        custom = self._custom()
        if custom is None or not isinstance(obj, dict):
            return
        if attrs.operation not in ("CREATE", "UPDATE"):
            return
        if attrs.subresource == "scale":
            await self._admit_scale(attrs, custom)
            return
        group, _, version = str(obj.get("apiVersion") or "").rpartition("/")
        served = custom.version_for(group, version, attrs.resource)
        old = attrs.old_obj if attrs.operation == "UPDATE" else None
        self._validate(served, obj, old, attrs.name)

    async def _admit_scale(self, attrs: Any, custom: Any) -> None:
        """A write of the scale subresource changes the custom resource's replicas: its rules
        judge the custom resource as it will be stored (upstream validates it the same way)."""
        if self._get is None:
            return
        if custom.version_for(attrs.group, attrs.version, attrs.resource) is None:
            return  # not a custom resource
        current = await self._get(attrs.group, attrs.resource, attrs.namespace, attrs.name)
        if not isinstance(current, dict):
            return
        group, _, version = str(current.get("apiVersion") or "").rpartition("/")
        served = custom.version_for(group, version, attrs.resource)
        replicas = (attrs.obj.get("spec") or {}).get("replicas")
        if served is None or served.scale is None:
            return
        if not isinstance(replicas, int) or isinstance(replicas, bool):
            return  # the handler refuses it
        from sampan.apiserver.crd.scale import set_replicas

        updated = set_replicas(served.scale, copy.deepcopy(current), replicas)
        self._validate(served, updated, current, attrs.name)

    @staticmethod
    def _validate(served: Any, obj: dict[str, Any], old: Any, name: str) -> None:
        if served is None or served.schema is None:
            return
        rules = served.extra.get("cel_rules")
        if rules is None:
            rules = RuleSet.for_schema(served.schema)
            served.extra["cel_rules"] = rules
        if rules.empty:
            return
        causes = rules.validate(obj, old)
        if causes:
            from sampan.apiserver.crd.support import invalid_error

            info = served.info
            name = str((obj.get("metadata") or {}).get("name") or name)
            raise invalid_error(f"{info.kind}.{info.group}", info.kind, info.group, name, causes)
