"""The CEL module on its own: macros, the strings extension, optionals, Kubernetes' libraries,
compile errors as cel-go words them, evaluation errors, and the cost bound."""

from __future__ import annotations

import pytest

from sampan.apiserver import cel
from sampan.apiserver.crd import celrules
from sampan.apiserver.crd.celrules import RuleSet, escape_property

SELF = {
    "items": ["a", "bb"],
    "name": "Abc",
    "numbers": [1, 2, 3],
    "m": {"k": "v"},
    "replicas": 2,
}


@pytest.mark.parametrize(
    "expression",
    [
        "has(self.name) && !has(self.missing)",
        "self.items.all(i, i.size() < 5)",
        "self.items.exists(i, i == 'a')",
        "self.items.exists_one(i, i == 'a')",
        "self.items.map(i, i + 'x') == ['ax', 'bbx']",
        "self.items.filter(i, i.size() == 2) == ['bb']",
        "self.m.all(k, k == 'k')",
        "self.name.startsWith('A') && self.name.endsWith('c') && self.name.contains('b')",
        "self.name.matches('^A[a-z]+$')",
        "self.name.lowerAscii() == 'abc' && self.name.upperAscii() == 'ABC'",
        "'a,b'.split(',') == ['a', 'b'] && ['a', 'b'].join('-') == 'a-b'",
        "' x '.trim() == 'x' && 'abc'.substring(1) == 'bc' && 'abc'.indexOf('c') == 2",
        "'a-b'.replace('-', '_') == 'a_b'",
        "'%s=%d'.format(['x', 1]) == 'x=1'",
        "self.?missing.orValue('d') == 'd'",
        "timestamp('2024-01-01T00:00:00Z') + duration('1h') > timestamp('2024-01-01T00:00:00Z')",
        "self.numbers.isSorted() && self.numbers.sum() == 6",
        "self.numbers.min() == 1 && self.numbers.max() == 3",
        "'abc123def45'.find('[0-9]+') == '123'",
        "'abc123def45'.findAll('[0-9]+') == ['123', '45']",
        "'abc123def45'.findAll('[0-9]+', 1) == ['123']",
        "isURL('https://example.com:8443/p?q=1') && !isURL('not a url')",
        "url('https://example.com:8443/p').getScheme() == 'https'",
        "url('https://example.com:8443/p').getHostname() == 'example.com'",
        "url('https://example.com:8443/p').getPort() == '8443'",
        "url('https://example.com/p/q').getEscapedPath() == '/p/q'",
        "url('https://example.com/p?a=1&a=2').getQuery() == {'a': ['1', '2']}",
        "isQuantity('1Gi') && !isQuantity('1GB')",
        "quantity('1Gi').isGreaterThan(quantity('1Mi'))",
        "quantity('500m').compareTo(quantity('0.5')) == 0",
        "quantity('1.5').isInteger() == false && quantity('2k').asInteger() == 2000",
        "quantity('1').add(quantity('1')).asInteger() == 2",
        "quantity('3').sub(1).asInteger() == 2",
        "quantity('-1').sign() == -1 && quantity('250m').asApproximateFloat() == 0.25",
        "cel.bind(x, self.replicas * 2, x == 4)",
    ],
)
def test_supported_expressions(expression):
    assert cel.compile(expression, ["self"]).evaluate({"self": SELF}) is True


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("self.missing == 1", "no such key: missing"),
        ("self.replicas / 0 == 1", "divide by zero"),
        ("self.numbers.filter(n, n > 5).min() == 0", "min(list) called on empty list"),
        ("self.name + self.replicas == 'x'", "no such overload"),
    ],
)
def test_evaluation_errors(expression, message):
    program = cel.compile(expression, ["self"])
    with pytest.raises(cel.EvalError) as err:
        program.evaluate({"self": SELF})
    assert message in str(err.value)


def test_compile_errors_are_worded_as_cel_go():
    with pytest.raises(cel.CompileError) as err:
        cel.compile("self.replicas <", ["self"])
    assert str(err.value).startswith("ERROR: <input>:1:16: Syntax error:")
    assert str(err.value).endswith(" | self.replicas <\n | ...............^")
    with pytest.raises(cel.CompileError, match="undeclared reference to 'other"):
        cel.compile("other.x == 1", ["self"])
    with pytest.raises(cel.CompileError, match="found no matching overload for '_\\?_:_'"):
        cel.compile("true ? 1 : 'a'", ["self"])
    with pytest.raises(cel.CompileError, match="cel expression must evaluate to a bool"):
        cel.compile("1 + 1", ["self"])
    assert (
        cel.compile("'x' + self.name", ["self"], result="string").evaluate({"self": SELF}) == "xAbc"
    )


def test_cost_bound_stops_nested_comprehensions():
    program = cel.compile("self.all(x, self.all(y, self.all(z, true)))", ["self"])
    assert program.evaluate({"self": list(range(20))}) is True
    with pytest.raises(cel.CostExceeded, match="actual cost limit exceeded"):
        program.evaluate({"self": list(range(1000))})


def test_uses_detects_variables():
    assert cel.compile("self == oldSelf", ["self", "oldSelf"]).uses("oldSelf")
    assert not cel.compile("self.oldSelfish == 1", ["self", "oldSelf"]).uses("oldSelf")
    assert not cel.compile("'oldSelf' == self", ["self", "oldSelf"]).uses("oldSelf")


def test_property_names_are_escaped():
    assert escape_property("foo-bar") == "foo__dash__bar"
    assert escape_property("a.b/c") == "a__dot__b__slash__c"
    assert escape_property("x__y") == "x__underscores__y"
    assert escape_property("namespace") == "__namespace__"
    rules = RuleSet.for_schema(
        {
            "type": "object",
            "x-kubernetes-validations": [{"rule": "self.foo__dash__bar == 1"}],
            "properties": {"foo-bar": {"type": "integer"}},
        }
    )
    assert rules.validate({"foo-bar": 1}, None) == []
    [cause] = rules.validate({"foo-bar": 2}, None)
    assert (cause.field, cause.message) == (
        "<nil>",
        'Invalid value: "object": failed rule: self.foo__dash__bar == 1',
    )


def test_ratcheting_keeps_unchanged_values_valid():
    rules = RuleSet.for_schema(
        {
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "properties": {
                        "a": {
                            "type": "integer",
                            "x-kubernetes-validations": [{"rule": "self < 5"}],
                        },
                        "b": {"type": "integer"},
                    },
                }
            },
        }
    )
    old = {"spec": {"a": 10, "b": 1}}
    assert rules.validate({"spec": {"a": 10, "b": 2}}, old) == []
    [cause] = rules.validate({"spec": {"a": 11, "b": 2}}, old)
    assert cause.field == "spec.a"


def test_request_budget_stops_many_costly_rules():
    schema = {
        "type": "array",
        "items": {
            "type": "array",
            "items": {"type": "integer"},
            "x-kubernetes-validations": [{"rule": "self.all(x, self.all(y, x + y >= 0))"}],
        },
    }
    # small enough to fit the default (wall-clock) budget however loaded the machine is
    value = [list(range(20)) for _ in range(5)]
    assert RuleSet.for_schema(schema).validate(value, None) == []
    causes = RuleSet.for_schema(schema, budget_s=0.0).validate(value, None)
    assert [(c.field, c.message) for c in causes] == [
        (
            "[0]",
            'Invalid value: "array": validation failed due to running out of cost budget, '
            "no further validation rules will be run",
        )
    ]


def test_write_time_type_checks_against_the_schema():
    from sampan.apiserver.crd.celrules import compile_errors

    schema = {
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "properties": {
                    "replicas": {"type": "integer"},
                    "ratio": {"type": "number"},
                    "name": {"type": "string"},
                    "tags": {"type": "array", "items": {"type": "string"}},
                    "ports": {
                        "type": "array",
                        "items": {"type": "object", "properties": {"port": {"type": "integer"}}},
                    },
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                    "any": {"x-kubernetes-int-or-string": True},
                    "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                    "foo-bar": {"type": "integer"},
                },
                "x-kubernetes-validations": [
                    {"rule": "self.replicas > 1 && self.ratio > 0.5 && self.name != ''"},
                    {"rule": "self.tags.all(t, t.size() < 5) && self.ports.all(p, p.port > 0)"},
                    {"rule": "self.labels.all(k, self.labels[k] != '') && self.any != 1"},
                    {"rule": "self.free.x == 1 && self.foo__dash__bar == 2"},
                    {"rule": "self.replicsa > 1"},
                    {"rule": "self.replicas == 'x'"},
                    {"rule": "self.replicas"},
                    {"rule": "self == oldSelf"},
                    {"rule": "has(self.name)", "messageExpression": "self.replicas"},
                ],
            }
        },
        "x-kubernetes-validations": [{"rule": "self.metadata.name.startsWith('a')"}],
    }
    causes = compile_errors(schema, "s")
    found = {c.field: c.message.split(": ", 2)[-1] for c in causes}
    base = "s.properties[spec].x-kubernetes-validations"
    assert set(found) == {
        f"{base}[4].rule",
        f"{base}[5].rule",
        f"{base}[6].rule",
        f"{base}[8].messageExpression",
    }
    assert found[f"{base}[4].rule"].startswith(
        "compilation failed: ERROR: <input>:1:5: undefined field 'replicsa'\n"
    )
    assert (
        "found no matching overload for '_==_' applied to '(int, string)'"
        in found[f"{base}[5].rule"]
    )
    assert found[f"{base}[6].rule"] == "cel expression must evaluate to a bool"
    assert found[f"{base}[8].messageExpression"] == "must evaluate to a string"


def test_date_time_and_duration_fields_are_timestamps_and_durations():
    from sampan.apiserver.crd.celrules import compile_errors

    schema = {
        "type": "object",
        "properties": {
            "start": {"type": "string", "format": "date-time"},
            "end": {"type": "string", "format": "date-time"},
            "timeout": {"type": "string", "format": "duration"},
            "count": {"type": "integer"},
        },
        "x-kubernetes-validations": [
            {"rule": "self.end - self.start <= self.timeout"},
            {"rule": "self.count < 2.5"},
        ],
    }
    assert compile_errors(schema, "s", root=False) == []
    rules = RuleSet.for_schema(schema)
    good = {
        "start": "2024-01-01T00:00:00Z",
        "end": "2024-01-01T00:30:00Z",
        "timeout": "1h",
        "count": 2,
    }
    assert rules.validate(good, None) == []
    [cause] = rules.validate({**good, "timeout": "10m", "count": 1}, None)
    assert (
        cause.message
        == 'Invalid value: "object": failed rule: self.end - self.start <= self.timeout'
    )


def test_authorizer_library():
    asked = []

    def check(wanted):
        asked.append(dict(wanted))
        if wanted.get("path") == "/boom":
            raise RuntimeError("authorizer down")
        return wanted.get("verb") == "get", "because"

    variables = ["authorizer", "self"]
    with cel.authorizer_value(check, {"group": "apps", "resource": "deployments"}) as authz:
        activation = {"authorizer": authz, "self": {}}

        def run(expression, result="any"):
            return cel.compile(expression, variables, result=result).evaluate(activation)

        assert run(
            "authorizer.group('').resource('pods').namespace('ns').name('p').check('get').allowed()"
        )
        assert asked[-1] == {
            "group": "",
            "resource": "pods",
            "namespace": "ns",
            "name": "p",
            "verb": "get",
        }
        assert not run("authorizer.requestResource.check('delete').allowed()")
        assert asked[-1]["resource"] == "deployments"
        assert run("authorizer.requestResource.check('delete').reason()") == "because"
        assert run(
            "authorizer.serviceAccount('ns', 'sa').group('').resource('pods')"
            ".check('get').allowed()"
        )
        assert asked[-1]["serviceAccount"] == ["ns", "sa"]
        assert run("authorizer.path('/boom').check('get').errored()")
        assert run("authorizer.path('/boom').check('get').error()") == "authorizer down"
    with pytest.raises(cel.EvalError, match="outside of its request"):
        cel.compile("authorizer.path('/x').check('get').allowed()", variables).evaluate(
            {"authorizer": authz, "self": {}}
        )


def test_celrules_type_numbers_are_protobufs_and_import_it_lazily() -> None:
    """``celrules`` spells FieldDescriptorProto's type numbers as literals so that importing it
    (every server start) does not import protobuf; they must be protobuf's own numbers."""
    import subprocess
    import sys

    from google.protobuf import descriptor_pb2

    fd = descriptor_pb2.FieldDescriptorProto
    assert {kind: number for kind, (number, _) in celrules._SCALARS.items()} == {
        "string": fd.TYPE_STRING,
        "integer": fd.TYPE_INT64,
        "number": fd.TYPE_DOUBLE,
        "boolean": fd.TYPE_BOOL,
    }
    probe = (
        "import sys, sampan.apiserver.server; "
        "print(sorted(m for m in sys.modules if m.startswith('google.protobuf')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
