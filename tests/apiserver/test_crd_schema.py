"""Unit tests of structural-schema pruning, defaulting and validation (sampan.apiserver.crd.schema)
and of the CRD model (served versions as ResourceInfo)."""

from __future__ import annotations

import copy

from sampan.apiserver.crd import schema as s
from sampan.apiserver.crd.model import accepted_names, served_versions
from sampan.apiserver.crd.scale import scale_of, set_replicas

SCHEMA = {
    "type": "object",
    "properties": {
        "spec": {
            "type": "object",
            "required": ["size"],
            "properties": {
                "size": {"type": "string", "enum": ["S", "M", "L"]},
                "count": {"type": "integer", "default": 3, "minimum": 0},
                "port": {"x-kubernetes-int-or-string": True},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                "template": {
                    "type": "object",
                    "x-kubernetes-embedded-resource": True,
                    "properties": {"spec": {"type": "object"}},
                },
                "items": {
                    "type": "array",
                    "x-kubernetes-list-type": "map",
                    "x-kubernetes-list-map-keys": ["name"],
                    "items": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {
                            "name": {"type": "string"},
                            "mode": {"type": "string", "default": "rw"},
                        },
                    },
                },
                "tags": {
                    "type": "array",
                    "x-kubernetes-list-type": "set",
                    "items": {"type": "string"},
                },
                "note": {"type": "string", "nullable": True, "maxLength": 5},
                "when": {"type": "string", "format": "date-time"},
                "choice": {
                    "type": "object",
                    "oneOf": [{"required": ["a"]}, {"required": ["b"]}],
                    "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
                },
            },
        },
    },
}


def test_prune_keeps_declared_fields_only():
    obj = {
        "apiVersion": "x/v1",
        "kind": "X",
        "metadata": {"name": "a", "whatever": 1},
        "top": 1,
        "spec": {
            "size": "S",
            "unknown": {"deep": 1},
            "labels": {"a": "b"},
            "free": {"any": {"thing": [1]}},
            "template": {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "p"},
                "spec": {},
                "junk": 1,
            },
            "items": [{"name": "a", "bad": 1}],
        },
    }
    pruned = s.prune(obj, SCHEMA)
    assert pruned == ["top", "spec.unknown", "spec.template.junk", "spec.items[0].bad"]
    assert obj["metadata"] == {"name": "a", "whatever": 1}  # ObjectMeta is not the schema's
    assert obj["spec"]["free"] == {"any": {"thing": [1]}}
    assert obj["spec"]["template"] == {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p"},
        "spec": {},
    }
    assert obj["spec"]["labels"] == {"a": "b"}


def test_object_without_properties_prunes_everything():
    obj = {"spec": {"a": 1}}
    assert s.prune(obj, {"type": "object", "properties": {"spec": {"type": "object"}}}) == [
        "spec.a"
    ]
    assert obj == {"spec": {}}


def test_defaults_fill_missing_and_non_nullable_nulls():
    obj = {"spec": {"size": "M", "count": None, "items": [{"name": "x"}], "note": None}}
    schema = copy.deepcopy(SCHEMA)
    s.apply_defaults(obj, schema)
    assert obj["spec"]["count"] == 3
    assert obj["spec"]["items"] == [{"name": "x", "mode": "rw"}]
    assert obj["spec"]["note"] is None  # nullable: kept
    assert schema == SCHEMA  # the schema is never mutated
    empty: dict = {}
    s.apply_defaults(
        empty, {"type": "object", "properties": {"spec": {"type": "object", "default": {"a": 1}}}}
    )
    assert empty == {"spec": {"a": 1}}


def test_validation_messages():
    good = {
        "spec": {
            "size": "S",
            "port": "http",
            "tags": ["a"],
            "when": "2024-01-02T03:04:05Z",
            "choice": {"a": "1"},
        }
    }
    assert s.validate(good, SCHEMA) == []
    bad = {
        "spec": {
            "size": "XL",
            "count": -1,
            "port": 1.5,
            "tags": ["a", "a"],
            "note": "toolong",
            "items": [{"name": "a"}, {"name": "a"}],
            "labels": {"k": 1},
            "when": "yesterday",
            "choice": {"a": "1", "b": "2"},
        }
    }
    messages = {c.field: c.message for c in s.validate(bad, SCHEMA)}
    assert messages["spec.size"] == 'Unsupported value: "XL": supported values: "S", "M", "L"'
    assert (
        messages["spec.count"]
        == "Invalid value: -1: spec.count in body should be greater than or equal to 0"
    )
    assert messages["spec.port"].endswith(
        'spec.port in body must be of type integer,string: "number"'
    )
    assert messages["spec.tags[1]"] == 'Duplicate value: "a"'
    assert messages["spec.note"] == "Too long: may not be more than 5 bytes"
    assert messages["spec.items[1]"].startswith("Duplicate value")
    assert (
        messages["spec.labels[k]"]
        == 'Invalid value: "integer": spec.labels[k] in body must be of type string: "integer"'
    )
    assert "must be of type date-time" in messages["spec.when"]
    assert "oneOf" in messages["spec.choice"]
    missing = s.validate({"spec": {}}, SCHEMA)
    assert [(c.field, c.message) for c in missing] == [("spec.size", "Required value")]
    wrong_type = s.validate({"spec": "text"}, SCHEMA)
    assert (
        wrong_type[0].message
        == 'Invalid value: "string": spec in body must be of type object: "string"'
    )


def test_structural_errors():
    assert s.structural_errors(SCHEMA, "p") == []
    assert [c.field for c in s.structural_errors(None, "p")] == ["p"]
    untyped = {"type": "object", "properties": {"a": {"properties": {}}}}
    assert [(c.field, c.message) for c in s.structural_errors(untyped, "p")] == [
        ("p.properties[a].type", "Required value: must not be empty for specified object fields")
    ]
    both = {
        "type": "object",
        "properties": {
            "m": {
                "type": "object",
                "properties": {"x": {"type": "string"}},
                "additionalProperties": {"type": "string"},
            }
        },
    }
    assert [c.field for c in s.structural_errors(both, "p")] == [
        "p.properties[m].additionalProperties"
    ]
    array = {"type": "object", "properties": {"l": {"type": "array"}}}
    assert [c.field for c in s.structural_errors(array, "p")] == ["p.properties[l].items"]
    junctor = {
        "type": "object",
        "properties": {"a": {"type": "string", "anyOf": [{"type": "string"}]}},
    }
    assert [c.field for c in s.structural_errors(junctor, "p")] == ["p.properties[a].anyOf[0].type"]
    metadata = {
        "type": "object",
        "properties": {
            "metadata": {"type": "object", "properties": {"labels": {"type": "object"}}}
        },
    }
    assert [c.reason for c in s.structural_errors(metadata, "p")] == ["FieldValueForbidden"]


def test_served_versions_and_names():
    crd = {
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Cluster",
            "names": {"plural": "widgets", "kind": "Widget", "categories": ["all"]},
            "versions": [
                {"name": "v1alpha1", "served": True, "storage": False},
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.size",
                            "statusReplicasPath": ".status.size",
                        },
                    },
                },
                {"name": "v0", "served": False, "storage": False},
            ],
        },
    }
    versions = served_versions(crd)
    assert [v.info.version for v in versions] == ["v1alpha1", "v1"]
    v1 = versions[1].info
    assert not v1.namespaced and v1.singular == "widget" and v1.categories == ("all",)
    assert v1.storage_resource == "example.com/widgets"
    assert v1.storage_version == "example.com/v1" == versions[0].info.storage_version
    assert v1.has_status and [sub.name for sub in v1.subresources] == ["status", "scale"]
    assert not versions[0].info.has_status
    assert accepted_names(crd) == {
        "plural": "widgets",
        "singular": "widget",
        "kind": "Widget",
        "listKind": "WidgetList",
        "categories": ["all"],
    }
    paths = versions[1].scale
    assert paths is not None
    obj = {"metadata": {"name": "w"}, "spec": {"size": 2}, "status": {"size": 1}}
    assert scale_of(paths, obj)["spec"] == {"replicas": 2}
    assert scale_of(paths, obj)["status"] == {"replicas": 1}
    assert set_replicas(paths, {"metadata": {}}, 4) == {"metadata": {}, "spec": {"size": 4}}


def test_metadata_name_constraints():
    schema = {
        "type": "object",
        "properties": {
            "metadata": {
                "type": "object",
                "properties": {"name": {"type": "string", "maxLength": 5}},
            }
        },
    }
    assert s.validate({"metadata": {"name": "short"}}, schema) == []
    [cause] = s.validate({"metadata": {"name": "toolong"}}, schema)
    assert (cause.field, cause.message) == (
        "metadata.name",
        "Too long: may not be more than 5 bytes",
    )


def errors(schema: dict, **kwargs: bool) -> list[tuple[str, str]]:
    return [(c.field, c.message) for c in s.structural_errors(schema, "p", **kwargs)]


def obj(**properties: dict) -> dict:
    return {"type": "object", "properties": properties}


INT_OR_STRING = {
    "anyOf": [{"type": "integer"}, {"type": "string"}],
    "x-kubernetes-int-or-string": True,
}


def test_int_or_string_forms_written_by_controller_gen_are_structural():
    assert errors(obj(port=INT_OR_STRING)) == []
    all_of = {
        "allOf": [{"anyOf": [{"type": "integer"}, {"type": "string"}]}, {"pattern": "^[0-9]+%?$"}],
        "x-kubernetes-int-or-string": True,
    }
    assert errors(obj(port=all_of)) == []
    assert errors(obj(port={"x-kubernetes-int-or-string": True})) == []
    # Anything else typed inside a junctor is not structural.
    other = {
        "anyOf": [{"type": "integer"}, {"type": "boolean"}],
        "x-kubernetes-int-or-string": True,
    }
    assert errors(obj(port=other)) == [
        ("p.properties[port].anyOf[0].type", "Forbidden: must be empty to be structural"),
        ("p.properties[port].anyOf[1].type", "Forbidden: must be empty to be structural"),
    ]
    both = {"x-kubernetes-int-or-string": True, "x-kubernetes-preserve-unknown-fields": True}
    assert errors(obj(port=both)) == [
        (
            "p.properties[port].x-kubernetes-preserve-unknown-fields",
            "Invalid value: true: must be false if x-kubernetes-int-or-string is true",
        )
    ]


def test_value_validation_allows_only_value_constraints():
    junctor = {
        "type": "object",
        "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
        "oneOf": [
            {
                "required": ["a"],
                "properties": {"a": {"minLength": 1}},
                "description": "d",
                "default": {},
                "nullable": True,
                "additionalProperties": {"type": "string"},
                "x-kubernetes-list-type": "atomic",
            },
            {"not": {"required": ["b"], "x-kubernetes-preserve-unknown-fields": True}},
        ],
    }
    # The structural errors come first, sorted; the keyword checks follow.
    assert errors(obj(spec=junctor))[:6] == sorted(
        [
            (
                "p.properties[spec].oneOf[0].additionalProperties",
                "Forbidden: must be undefined to be structural",
            ),
            (
                "p.properties[spec].oneOf[0].default",
                "Forbidden: must be undefined to be structural",
            ),
            (
                "p.properties[spec].oneOf[0].description",
                "Forbidden: must be empty to be structural",
            ),
            ("p.properties[spec].oneOf[0].nullable", "Forbidden: must be false to be structural"),
            (
                "p.properties[spec].oneOf[0].x-kubernetes-list-type",
                "Forbidden: must be undefined to be structural",
            ),
            (
                "p.properties[spec].oneOf[1].not.x-kubernetes-preserve-unknown-fields",
                "Forbidden: must be false to be structural",
            ),
        ],
        key=lambda e: f"{e[0]}: {e[1]}",
    )
    nested_meta = obj(spec={"type": "object", "anyOf": [{"properties": {"metadata": {}}}]})
    assert (
        "p.properties[spec].anyOf[0].properties[metadata]",
        "Forbidden: must not be specified in a nested context",
    ) in errors(nested_meta)


def test_completeness_of_root_junctors():
    schema = {
        "type": "object",
        "properties": {"spec": {"type": "object"}},
        "anyOf": [
            {"properties": {"spec": {"properties": {"x": {"minimum": 1}}}}},
            {"required": ["y"]},
        ],
    }
    assert errors(schema) == [
        (
            "p.properties[spec].properties[x]",
            "Required value: because it is defined in p.anyOf[0].properties[spec].properties[x]",
        )
    ]


def test_embedded_resources_and_preserve_unknown_fields_at_any_depth():
    embedded = {
        "type": "object",
        "x-kubernetes-embedded-resource": True,
        "x-kubernetes-preserve-unknown-fields": True,
    }
    deep = obj(
        spec=obj(
            template=embedded,
            raw={"x-kubernetes-preserve-unknown-fields": True},
            list={"type": "array", "items": {"x-kubernetes-preserve-unknown-fields": True}},
        )
    )
    assert errors(deep) == []
    bare = {"x-kubernetes-embedded-resource": True}
    assert errors(obj(t=bare)) == [
        (
            "p.properties[t].properties",
            "Required value: must not be empty if x-kubernetes-embedded-resource is true without "
            "x-kubernetes-preserve-unknown-fields",
        ),
        (
            "p.properties[t].type",
            "Required value: must be object if x-kubernetes-embedded-resource is true",
        ),
    ]
    kind = obj(
        t={
            "type": "object",
            "x-kubernetes-embedded-resource": True,
            "properties": {"kind": {"type": "integer"}},
        }
    )
    assert errors(kind) == [
        ("p.properties[t].properties[kind].type", 'Invalid value: "integer": must be string')
    ]


def test_list_and_map_types():
    keyed = {
        "type": "array",
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["port", "protocol"],
        "items": obj(port={"type": "integer"}, protocol={"type": "string", "default": "TCP"}),
    }
    keyed["items"]["required"] = ["port"]
    assert errors(obj(ports=keyed)) == []
    no_default = {**keyed, "items": obj(port={"type": "integer"}, protocol={"type": "string"})}
    assert errors(obj(ports=no_default)) == [
        (
            "p.properties[ports].items.properties[port].default",
            "Required value: this property is in x-kubernetes-list-map-keys, so it must have a "
            "default or be a required property",
        ),
        (
            "p.properties[ports].items.properties[protocol].default",
            "Required value: this property is in x-kubernetes-list-map-keys, so it must have a "
            "default or be a required property",
        ),
    ]
    wrong = obj(
        a={"type": "string", "x-kubernetes-list-type": "set"},
        b={"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "bag"},
        c={"type": "array", "items": {"type": "string"}, "x-kubernetes-list-map-keys": ["k"]},
        d={"type": "object", "x-kubernetes-map-type": "granular"},
        e={"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "object"}},
    )
    assert errors(wrong) == [
        (
            "p.properties[a].type",
            'Invalid value: "string": must be array if x-kubernetes-list-type is specified',
        ),
        (
            "p.properties[b].x-kubernetes-list-type",
            'Unsupported value: "bag": supported values: "atomic", "set", "map"',
        ),
        (
            "p.properties[c].x-kubernetes-list-type",
            "Required value: must be map if x-kubernetes-list-map-keys is non-empty",
        ),
        (
            "p.properties[e].items.x-kubernetes-map-type",
            "Invalid value: null: must be atomic as item of a list with x-kubernetes-list-type=set",
        ),
    ]


def test_defaults_must_validate_and_be_pruned():
    schema = obj(
        spec=obj(
            n={"type": "integer", "default": "x"},
            o={**obj(a={"type": "string"}), "default": {"a": "1", "b": 2}},
            ok={**obj(a={"type": "string", "default": "z"}), "default": {}},
        )
    )
    assert errors(schema) == [
        (
            "p.properties[spec].properties[n].default",
            'Invalid value: "string": p.properties[spec].properties[n].default in body must be of '
            "type "
            'integer: "string"',
        ),
        (
            "p.properties[spec].properties[o].default",
            'Invalid value: {"a":"1","b":2}: must not have unknown fields',
        ),
    ]
    top = obj(metadata={"type": "object", "default": {}})
    assert errors(top) == [
        ("p.properties[metadata].default", "Forbidden: must not be set in top-level metadata")
    ]


def test_root_rules():
    assert errors({"type": "object", "nullable": True}) == [
        ("p.nullable", "Forbidden: nullable cannot be true at the root")
    ]
    assert errors({"type": "object", "additionalProperties": {"type": "string"}}) == [
        ("p.additionalProperties", "Forbidden: must not be used at the root")
    ]
    assert errors({"type": "string"}) == [
        ("p.type", 'Invalid value: "string": must be object at the root')
    ]
    with_status = {
        "type": "object",
        "properties": {"status": {"type": "object"}},
        "anyOf": [{"required": ["status"]}],
    }
    found = errors(with_status, status_enabled=True)
    assert found[0][0] == "p" and found[0][1].endswith(
        "fields are allowed at the root of the schema if the status subresource is enabled"
    )
    assert errors(with_status) == []
    meta = obj(
        metadata={"type": "object", "properties": {"name": {"type": "string", "maxLength": 8}}}
    )
    assert errors(meta) == []


def test_patterns_are_go_regular_expressions():
    days = "^((?i)sun|mon|tues|wednes|thurs|fri|satur)day$"
    assert errors(obj(day={"type": "string", "pattern": days})) == []
    assert errors(obj(x={"type": "string", "pattern": "(?<=a)b"})) == [
        (
            "p.properties[x].pattern",
            'Invalid value: "(?<=a)b": must be a valid regular expression, but isn\'t: error '
            "parsing regexp: invalid named capture: `(?<=a)b`",
        )
    ]
    assert errors(obj(x={"type": "string", "anyOf": [{"pattern": "a("}]})) == [
        (
            "p.properties[x].anyOf[0].pattern",
            'Invalid value: "a(": must be a valid regular expression, but isn\'t: error parsing '
            "regexp: missing closing ): `a(`",
        )
    ]
    schema = obj(day={"type": "string", "pattern": days})
    assert s.validate({"day": "SUNday"}, schema) == []
    assert s.validate({"day": "Tuesday"}, schema) == []
    assert [c.message for c in s.validate({"day": "someday"}, schema)] == [
        f"Invalid value: \"someday\": day in body should match '{days}'"
    ]


def test_keyword_checks():
    schema = obj(
        a={"type": "null"},
        b={"$ref": "#/x", "type": "string"},
        c={"type": "array", "items": {"type": "string"}, "uniqueItems": True},
        d={
            "type": "object",
            "properties": {"x": {"type": "string"}},
            "additionalProperties": False,
        },
        e={"type": "string", "x-kubernetes-preserve-unknown-fields": False},
    )
    found = errors(schema)
    assert (
        "p.properties[a].type",
        "Forbidden: type cannot be set to null, use nullable as an alternative",
    ) in found
    assert ("p.properties[b].$ref", "Forbidden: $ref is not supported") in found
    assert (
        "p.properties[c].uniqueItems",
        "Forbidden: uniqueItems cannot be set to true since "
        "the runtime complexity becomes quadratic",
    ) in found
    assert (
        "p.properties[d].additionalProperties",
        "Forbidden: additionalProperties and properties are mutual exclusive",
    ) in found
    assert (
        "p.properties[e].x-kubernetes-preserve-unknown-fields",
        "Invalid value: false: must be true or undefined",
    ) in found


def test_embedded_resources_need_type_meta():
    schema = obj(
        spec=obj(
            template={
                "type": "object",
                "x-kubernetes-embedded-resource": True,
                "x-kubernetes-preserve-unknown-fields": True,
            }
        )
    )
    assert s.validate({"spec": {"template": {"apiVersion": "v1", "kind": "Pod"}}}, schema) == []
    found = [
        (c.field, c.message)
        for c in s.validate(
            {"spec": {"template": {"apiVersion": "a/b/c", "metadata": {"labels": {"x": "-"}}}}},
            schema,
        )
    ]
    assert ("spec.template.kind", "Required value: must not be empty") in found
    assert (
        "spec.template.apiVersion",
        'Invalid value: "a/b/c": unexpected GroupVersion string: a/b/c',
    ) in found
    assert any(f == "spec.template.metadata.labels" for f, _ in found)
