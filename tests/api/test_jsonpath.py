"""kubectl's JSONPath dialect (sampan.api.jsonpath): the examples of the Kubernetes "JSONPath
Support" page, plus client-go's parse and evaluation errors."""

from __future__ import annotations

import pytest

from sampan.api import jsonpath
from sampan.api.jsonpath import JSONPathError

DOC = {
    "kind": "List",
    "items": [
        {
            "kind": "None",
            "metadata": {"name": "127.0.0.1", "labels": {"kubernetes.io/hostname": "127.0.0.1"}},
            "status": {
                "capacity": {"cpu": "4"},
                "addresses": [{"type": "LegacyHostIP", "address": "127.0.0.1"}],
            },
        },
        {
            "kind": "None",
            "metadata": {"name": "127.0.0.2"},
            "status": {
                "capacity": {"cpu": "8"},
                "addresses": [
                    {"type": "LegacyHostIP", "address": "127.0.0.2"},
                    {"type": "another", "address": "127.0.0.3"},
                ],
            },
        },
    ],
    "users": [
        {"name": "myself", "user": {}},
        {"name": "e2e", "user": {"username": "admin", "password": "secret"}},
    ],
}


def run(template: str, data: object = DOC, **kwargs: bool) -> str:
    return jsonpath.parse(template).execute(data, **kwargs)


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("kind is {.kind}", "kind is List"),
        ("{.kind}", "List"),
        ("{['kind']}", "List"),
        ("{..name}", "127.0.0.1 127.0.0.2 myself e2e"),
        ("{.items[*].metadata.name}", "127.0.0.1 127.0.0.2"),
        ("{.users[0].name}", "myself"),
        (
            "{.items[*]['metadata.name', 'status.capacity']}",
            '127.0.0.1 127.0.0.2 {"cpu":"4"} {"cpu":"8"}',
        ),
        ('{.users[?(@.name=="e2e")].user.password}', "secret"),
        (
            "{range .items[*]}[{.metadata.name}, {.status.capacity}] {end}",
            '[127.0.0.1, {"cpu":"4"}] [127.0.0.2, {"cpu":"8"}] ',
        ),
        ("{range .items[*]}{.metadata.name}{'\\t'}{end}", "127.0.0.1\t127.0.0.2\t"),
        ("{.items[0].metadata.labels.kubernetes\\.io/hostname}", "127.0.0.1"),
        ('{.items[*].metadata.name}{"\\n"}', "127.0.0.1 127.0.0.2\n"),
    ],
)
def test_documented_examples(template: str, expected: str) -> None:
    assert run(template) == expected


def test_at_is_the_whole_input() -> None:
    assert run("{@}", {"b": 1, "a": [True, None, 0.5]}) == '{"a":[true,null,0.5],"b":1}'


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{.a[0:2]}", "1 2"),
        ("{.a[1:]}", "2 3 4"),
        ("{.a[-1]}", "4"),
        ("{.a[-2:]}", "3 4"),
        ("{.a[::2]}", "1 3"),
        ("{.a[0:0]}", ""),
        ("{.a[1,3]}", "2 4"),
        ("{.n[?(@.v>1)].v}", "2 3"),
        ("{.n[?(@.v>=2)].v}", "2 3"),
        ("{.n[?(@.v<2)].v}", "1"),
        ("{.n[?(@.v<=2)].v}", "1 2"),
        ("{.n[?(@.v!=2)].v}", "1 3"),
        ("{.n[?(@.x)].v}", "3"),
        ("{.n[?(@.f==1.5)].v}", "2"),
        ("{.n[?(@.b==true)].v}", "1"),
        ("{.n[?(@.s<'m')].s}", "a"),
        ("{.n[?(@.v == @.w)].v}", "3"),
        ("{range .n[*]}{range .l[*]}{@}-{end};{end}", "1-2-;;;"),
        ("{.n[*].*}", "1 true a [1,2] 2 1.5 3 3 x"),
    ],
)
def test_slices_unions_filters_and_ranges(template: str, expected: str) -> None:
    data = {
        "a": [1, 2, 3, 4],
        "n": [
            {"v": 1, "b": True, "s": "a", "l": [1, 2]},
            {"v": 2, "f": 1.5},
            {"v": 3, "w": 3, "x": "x"},
        ],
    }
    assert run(template, data, allow_missing_keys=True) == expected


def test_results_per_action_and_missing_keys() -> None:
    template = jsonpath.parse("{.a}{.missing}x")
    assert template.find_results({"a": 1}, allow_missing_keys=True) == [[1], [], ["x"]]
    with pytest.raises(JSONPathError, match=r"^missing is not found$"):
        template.find_results({"a": 1})


def test_printing_like_go() -> None:
    data = {"f": [1.0, 1e6, 1.5e-7, 0.25], "m": {"z": "<&>", "a": None}}
    assert run("{.f[*]}", data) == "1 1e+06 1.5e-07 0.25"
    assert run("{.m}", data) == '{"a":null,"z":"\\u003c\\u0026\\u003e"}'
    assert run("{.m.a}", data) == "null"


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{.a", "unclosed action"),
        ("{.a[0}", "unterminated array"),
        ("{.a[abc]}", "invalid array index abc"),
        ("{.a[?(@.x=='y')}", "unclosed array expect ]"),
        ("{.a[?(@.x=='y'}", "unterminated filter"),
        ("{'abc}", "unterminated quoted string"),
        ("{..a..b}", ""),  # two descents apart are fine
        ("{.a ~}", "unrecognized character in action: U+007E '~'"),
        ("{{.a}}", "unrecognized character in action: U+007B '{'"),
        ("{.a.....b}", "invalid multiple recursive descent"),
        ("{1.2.3}", "cannot parse number 1.2.3"),
        ("{'\\q'}", "unquote string '\\q' error invalid syntax"),
    ],
)
def test_parse_errors(template: str, message: str) -> None:
    if not message:
        jsonpath.parse(template)
        return
    with pytest.raises(JSONPathError) as info:
        jsonpath.parse(template)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("template", "data", "message"),
    [
        ("{.a[5]}", {"a": [1]}, "array index out of bounds: index 5, length 1"),
        ("{.a[0]}", {"a": {"b": 1}}, "map[string]interface {} is not array or slice"),
        ("{.a[::0]}", {"a": [1]}, "step must be > 0"),
        ("{bogus}", {}, "unrecognized identifier bogus"),
        ("{end}", {}, "not in range, nothing to end"),
        ("{.a[?(@.v=='1')]}", {"a": [{"v": 1}]}, "incompatible types for comparison"),
        ("{.a[?(@.v<true)]}", {"a": [{"v": False}]}, "invalid type for comparison"),
        ("{.a[?(@.v=1)]}", {"a": [{"v": 1}]}, "unrecognized filter operator ="),
    ],
)
def test_evaluation_errors(template: str, data: object, message: str) -> None:
    with pytest.raises(JSONPathError) as info:
        jsonpath.parse(template).find_results(data, allow_missing_keys=True)
    assert str(info.value) == message


def test_template_is_reusable() -> None:
    template = jsonpath.parse("{range .a[*]}{.n}{end}")
    assert template.execute({"a": [{"n": 1}, {"n": 2}]}) == "12"
    assert template.execute({"a": [{"n": 3}]}) == "3"
