"""Strict typed reads: unset is None/empty, the right type passes, anything else is an error
that names the field, the value and the expected type — never coerced."""

from __future__ import annotations

import pytest

from sampan.api.strictfields import (
    FieldTypeError,
    get_bool,
    get_int,
    get_int_list,
    get_list,
    get_obj,
    get_str,
    get_str_list,
    join_path,
)


def test_unset_and_null_are_unset() -> None:
    assert get_bool({}, "x") is None
    assert get_bool({"x": None}, "x") is None
    assert get_bool(None, "x") is None
    assert get_int({"x": None}, "x") is None
    assert get_str({}, "x") is None
    assert get_obj({"x": None}, "x") == {}
    assert get_list({}, "x") == []
    assert get_str_list({"x": None}, "x") == []


def test_right_types_pass() -> None:
    assert get_bool({"x": True}, "x") is True
    assert get_bool({"x": False}, "x") is False
    assert get_int({"x": 0}, "x") == 0
    assert get_int({"x": 1000}, "x") == 1000
    assert get_str({"x": "Default"}, "x") == "Default"
    assert get_obj({"x": {"a": 1}}, "x") == {"a": 1}
    assert get_str_list({"x": ["NET_ADMIN"]}, "x") == ["NET_ADMIN"]
    assert get_int_list({"x": [1, 2]}, "x") == [1, 2]


@pytest.mark.parametrize(
    ("read", "value", "message"),
    [
        (get_bool, "true", 'spec.x: Invalid value: "true": must be a boolean'),
        (get_bool, "false", 'spec.x: Invalid value: "false": must be a boolean'),
        (get_bool, 1, "spec.x: Invalid value: 1: must be a boolean"),
        (get_bool, 0, "spec.x: Invalid value: 0: must be a boolean"),
        (get_int, True, "spec.x: Invalid value: true: must be an integer"),
        (get_int, "0", 'spec.x: Invalid value: "0": must be an integer'),
        (get_int, 1.5, "spec.x: Invalid value: 1.5: must be an integer"),
        (get_str, 1, "spec.x: Invalid value: 1: must be a string"),
        (get_obj, "privileged", 'spec.x: Invalid value: "privileged": must be an object'),
        (get_list, "SYS_ADMIN", 'spec.x: Invalid value: "SYS_ADMIN": must be an array'),
    ],
)
def test_wrong_types_are_errors(read, value, message) -> None:
    with pytest.raises(FieldTypeError) as info:
        read({"x": value}, "x", "spec")
    assert str(info.value) == message
    assert info.value.path == "spec.x"
    assert info.value.value == value


def test_list_items_are_checked() -> None:
    with pytest.raises(FieldTypeError) as info:
        get_str_list({"add": ["NET_ADMIN", 7]}, "add", "c.capabilities")
    assert info.value.path == "c.capabilities.add[1]"
    with pytest.raises(FieldTypeError):
        get_int_list({"g": [1, True]}, "g")
    with pytest.raises(FieldTypeError):
        get_int_list({"g": ["1"]}, "g")


def test_join_path() -> None:
    assert join_path("", "spec") == "spec"
    assert join_path("spec", "containers") == "spec.containers"
    assert join_path("spec.containers", 2) == "spec.containers[2]"
