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
        == 'Invalid value: 1: spec.labels[k] in body must be of type string: "integer"'
    )
    assert "must be of type date-time" in messages["spec.when"]
    assert "oneOf" in messages["spec.choice"]
    missing = s.validate({"spec": {}}, SCHEMA)
    assert [(c.field, c.message) for c in missing] == [("spec.size", "Required value")]
    wrong_type = s.validate({"spec": "text"}, SCHEMA)
    assert (
        wrong_type[0].message
        == 'Invalid value: "text": spec in body must be of type object: "string"'
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
