"""Names, label selectors and field selectors: grammar, matching and upstream messages."""

from __future__ import annotations

import pytest

from sampan.api.fields import check_supported, field_set, parse_field_selector
from sampan.api.labels import (
    SelectorError,
    parse_selector,
    selector_from_label_selector,
    selector_from_set,
)
from sampan.api.names import (
    is_dns1123_label,
    is_qualified_name,
    is_valid_label_value,
    validate_annotations,
    validate_generate_name,
    validate_name,
)
from sampan.api.resources import builtin_registry

REG = builtin_registry()
PODS = REG.by_resource("", "v1", "pods")
SERVICES = REG.by_resource("", "v1", "services")
NAMESPACES = REG.by_resource("", "v1", "namespaces")
ROLES = REG.by_resource("rbac.authorization.k8s.io", "v1", "roles")
CONFIGMAPS = REG.by_resource("", "v1", "configmaps")
EVENTS = REG.by_resource("", "v1", "events")
NODES = REG.by_resource("", "v1", "nodes")
JOBS = REG.by_resource("batch", "v1", "jobs")

SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used "
    "for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
DNS1035_MSG = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
    "alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or "
    "'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
)


# --- names ---------------------------------------------------------------------------------


def test_name_rules_per_resource() -> None:
    assert validate_name(PODS, "web.example-1") == []
    assert validate_name(PODS, "Web") == [SUBDOMAIN_MSG]
    assert validate_name(PODS, "a" * 254) == ["must be no more than 253 characters"]
    assert validate_name(SERVICES, "1web") == [DNS1035_MSG]
    assert validate_name(SERVICES, "web") == []
    assert validate_name(NAMESPACES, "kube.system") == ["must not contain dots"]
    assert validate_name(ROLES, "system:controller:foo") == []
    assert validate_name(ROLES, "a/b") == ["may not contain '/'"]
    assert validate_name(ROLES, "..") == ["may not be '..'"]


def test_generate_name_may_end_with_dash() -> None:
    assert validate_generate_name(PODS, "web-") == []
    assert validate_generate_name(PODS, "Web-") == [SUBDOMAIN_MSG]


def test_qualified_names_and_label_values() -> None:
    assert is_qualified_name("app.kubernetes.io/name") == []
    assert is_qualified_name("a/b/c")[0].startswith("a qualified name must consist of")
    assert is_qualified_name("/x") == ["prefix part must be non-empty"]
    assert is_valid_label_value("") == []
    assert is_valid_label_value("a_b.c-d") == []
    assert is_valid_label_value("-a") == [
        "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' "
        "or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or "
        "'my_value',  or '12345', regex used for validation is "
        "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
    ]
    assert is_dns1123_label("a" * 64) == ["must be no more than 63 characters"]


def test_annotations_total_size() -> None:
    assert validate_annotations({"a": "x" * 1000}) == []
    causes = validate_annotations({"a": "x" * (256 * 1024)})
    assert [(c.reason, c.field) for c in causes] == [("FieldValueTooLong", "metadata.annotations")]


# --- label selectors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("", ""),
        ("app=web", "app=web"),
        ("app = web , tier==front", "app=web,tier==front"),
        ("tier in (b, a),app!=x", "app!=x,tier in (a,b)"),
        ("env notin (prod)", "env notin (prod)"),
        ("!legacy,app", "app,!legacy"),
        ("x=", "x="),
        ("n>3,n<10", "n>3,n<10"),
        ("example.com/role in (db)", "example.com/role in (db)"),
    ],
)
def test_label_selector_canonical_form(text: str, canonical: str) -> None:
    assert str(parse_selector(text)) == canonical


@pytest.mark.parametrize(
    ("text", "labels", "expected"),
    [
        ("", {}, True),
        ("app=web", {"app": "web"}, True),
        ("app=web", {"app": "db"}, False),
        ("app!=web", {}, True),
        ("app in (a,b)", {"app": "b"}, True),
        ("app in (a,b)", {}, False),
        ("app notin (a,b)", {}, True),
        ("app notin (a,b)", {"app": "a"}, False),
        ("app", {"app": ""}, True),
        ("!app", {"app": ""}, False),
        ("n>3", {"n": "4"}, True),
        ("n>3", {"n": "x"}, False),
        ("n<3", {}, False),
        ("a=1,b=2", {"a": "1", "b": "2"}, True),
        ("a=1,b=2", {"a": "1"}, False),
    ],
)
def test_label_selector_matching(text: str, labels: dict[str, str], expected: bool) -> None:
    assert parse_selector(text).matches(labels) is expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a b", "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt"),
        ("a in b", "unable to parse requirement: found 'b' expected: '('"),
        ("a in (b", "unable to parse requirement: found '', expected: ',' or ')'"),
        ("a,", "found '', expected: identifier after ','"),
        (",a", "found ',', expected: !, identifier, or 'end of string'"),
        ("a=b c", "found 'c', expected: ',' or 'end of string'"),
        (
            "a>b",
            'unable to parse requirement: values[0]: Invalid value: "b": '
            "for 'Gt', 'Lt' operators, the value must be an integer",
        ),
    ],
)
def test_label_selector_errors(text: str, message: str) -> None:
    with pytest.raises(SelectorError) as info:
        parse_selector(text)
    assert info.value.message == message


def test_label_selector_bad_value_message() -> None:
    with pytest.raises(SelectorError) as info:
        parse_selector("app=a$")
    assert info.value.message.startswith(
        'unable to parse requirement: values[0][app]: Invalid value: "a$": a valid label must'
    )


def test_label_selector_object() -> None:
    sel = selector_from_label_selector(
        {
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["a", "b"]},
                {"key": "legacy", "operator": "DoesNotExist"},
            ],
        }
    )
    assert str(sel) == "app=web,!legacy,tier in (a,b)"
    assert sel.matches({"app": "web", "tier": "a"})
    assert not sel.matches({"app": "web", "tier": "a", "legacy": "1"})
    assert selector_from_label_selector({}).empty
    assert selector_from_label_selector({}).matches({"any": "thing"})
    nothing = selector_from_label_selector(None)
    assert not nothing.empty and not nothing.matches({})
    with pytest.raises(SelectorError) as info:
        selector_from_label_selector({"matchExpressions": [{"key": "a", "operator": "Near"}]})
    assert info.value.message == '"Near" is not a valid label selector operator'
    with pytest.raises(SelectorError):
        selector_from_label_selector({"matchExpressions": [{"key": "a", "operator": "In"}]})
    assert str(selector_from_set({"b": "2", "a": "1"})) == "a=1,b=2"


# --- field selectors -----------------------------------------------------------------------


def test_field_selector_parse_and_match() -> None:
    sel = parse_field_selector("status.phase!=Running,spec.nodeName=n1")
    assert str(sel) == "spec.nodeName=n1,status.phase!=Running"
    fields = field_set(
        PODS,
        {
            "metadata": {"name": "p", "namespace": "d"},
            "spec": {"nodeName": "n1"},
            "status": {"phase": "Pending", "podIPs": [{"ip": "10.42.0.5"}]},
        },
    )
    assert sel.matches(fields)
    assert fields["status.podIP"] == "10.42.0.5"
    assert fields["spec.hostNetwork"] == "false"
    assert not parse_field_selector("metadata.name=q").matches(fields)
    assert parse_field_selector("").empty


def test_field_selector_escapes() -> None:
    sel = parse_field_selector(r"metadata.name=a\,b\=c\\d")
    assert sel.requirements[0].value == "a,b=c\\d"
    assert str(sel) == r"metadata.name=a\,b\=c\\d"
    assert parse_field_selector("a==b").requirements[0].operator == "="


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("foo", "invalid selector: 'foo'; can't understand 'foo'"),
        ("a=b=c", "invalid field selector: unescaped character in value: ="),
        (r"a=\x", r"invalid field selector: invalid escape sequence: \x"),
        ("a=b\\", "invalid field selector: invalid escape sequence: \\"),
    ],
)
def test_field_selector_errors(text: str, message: str) -> None:
    with pytest.raises(SelectorError) as info:
        parse_field_selector(text)
    assert info.value.message == message


def test_supported_fields_and_messages() -> None:
    check_supported(PODS, parse_field_selector("spec.nodeName=n1"))
    with pytest.raises(SelectorError) as info:
        check_supported(CONFIGMAPS, parse_field_selector("spec.nodeName=n1"))
    assert '"metadata.name", "metadata.namespace"' in info.value.message
    with pytest.raises(SelectorError) as info:
        check_supported(PODS, parse_field_selector("foo=bar"))
    assert info.value.message == "field label not supported: foo"
    with pytest.raises(SelectorError) as info:
        check_supported(CONFIGMAPS, parse_field_selector("data.x=1"))
    assert info.value.message == (
        '"data.x" is not a known field selector: only "metadata.name", "metadata.namespace"'
    )
    with pytest.raises(SelectorError) as info:
        check_supported(JOBS, parse_field_selector("status.active=1"))
    assert info.value.message == 'field label "status.active" not supported for batchv1.Job'
    with pytest.raises(SelectorError):
        check_supported(NODES, parse_field_selector("metadata.namespace=x"))
    legacy = check_supported(PODS, parse_field_selector("spec.host=n1"))
    assert str(legacy) == "spec.nodeName=n1"


def test_event_and_node_field_sets() -> None:
    event = {
        "metadata": {"name": "e", "namespace": "d"},
        "involvedObject": {"kind": "Pod", "name": "p", "namespace": "d", "uid": "u"},
        "reason": "Started",
        "reportingComponent": "kubelet",
        "type": "Normal",
    }
    fields = field_set(EVENTS, event)
    assert fields["involvedObject.kind"] == "Pod"
    assert fields["source"] == "kubelet"  # falls back to reportingComponent
    assert parse_field_selector("involvedObject.name=p,type=Normal").matches(fields)
    node_fields = field_set(NODES, {"metadata": {"name": "n"}, "spec": {"unschedulable": True}})
    assert node_fields == {"metadata.name": "n", "spec.unschedulable": "true"}


def test_events_k8s_io_field_labels_map_to_core_fields() -> None:
    new_events = REG.by_resource("events.k8s.io", "v1", "events")
    sel = check_supported(
        new_events, parse_field_selector("regarding.name=p,reportingController=k")
    )
    assert str(sel) == "involvedObject.name=p,reportingComponent=k"
    with pytest.raises(SelectorError) as info:
        check_supported(new_events, parse_field_selector("involvedObject.name=p"))
    assert info.value.message == "field label not supported: involvedObject.name"
    shaped = {
        "metadata": {"name": "e", "namespace": "d"},
        "regarding": {"kind": "Pod", "name": "p"},
        "reportingController": "k",
    }
    assert sel.matches(field_set(new_events, shaped))
    assert sel.matches(
        field_set(EVENTS, {"involvedObject": {"name": "p"}, "reportingComponent": "k"})
    )
