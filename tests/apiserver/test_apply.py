"""Server-side apply and managedFields: FieldsV1 round trips, ownership rules (pure unit
tests of apiserver.apply) and the HTTP path (apply creates, conflicts are 409 with causes,
force takes ownership, omitted fields are removed, updates take ownership)."""

from __future__ import annotations

import json

import pytest

from sampan.api.errors import BadRequest
from sampan.api.resources import builtin_registry
from sampan.apiserver.apply import (
    ApplyConflict,
    decode_apply_patch,
    from_fields_v1,
    path_string,
    read_entries,
    server_side_apply,
    to_fields_v1,
    track_update,
)
from sampan.apiserver.openapi import OpenAPI
from sampan.apiserver.openapi_data import load_definitions
from sampan.apiserver.patch import check_patch_type

APPLY = "application/apply-patch+yaml"
CM_PATH = "/api/v1/namespaces/default/configmaps"
DEPLOY_PATH = "/apis/apps/v1/namespaces/default/deployments"


@pytest.fixture(scope="module")
def openapi() -> OpenAPI:
    return OpenAPI(builtin_registry(), load_definitions())


def cm(data: dict[str, str], **metadata: object) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "c", **metadata},
        "data": data,
    }


def test_fields_v1_round_trip():
    tree = {
        "f:metadata": {"f:labels": {"f:a": {}}},
        "f:spec": {
            "f:containers": {'k:{"name":"x"}': {".": {}, "f:image": {}, "f:name": {}}},
            "f:finalizers": {'v:"z"': {}},
        },
    }
    paths = from_fields_v1(tree)
    assert ("f:spec", "f:containers", 'k:{"name":"x"}') in paths
    assert ("f:spec", "f:containers") not in paths
    assert to_fields_v1(paths) == tree
    assert (
        path_string(("f:spec", "f:containers", 'k:{"name":"x","port":80}', "f:image"))
        == '.spec.containers[name="x",port=80].image'
    )


def test_fields_v1_order_is_sorted_with_the_member_mark_first():
    paths = {
        ("f:spec", "f:z"),
        ("f:spec",),
        ("f:metadata", "f:labels", "f:b"),
        ("f:spec", "f:a", "f:x"),
        ("f:metadata", "f:labels", "f:a"),
        ("f:spec", "f:a"),
        ("f:metadata", "f:labels"),
    }
    # Order is part of the bytes clients see: keys sorted, "." before a member's children,
    # a member without children an empty object.
    assert json.dumps(to_fields_v1(paths), separators=(",", ":")) == (
        '{"f:metadata":{"f:labels":{".":{},"f:a":{},"f:b":{}}},'
        '"f:spec":{".":{},"f:a":{".":{},"f:x":{}},"f:z":{}}}'
    )
    assert to_fields_v1(set()) == {}


def test_apply_yaml_keeps_yaml_1_2_booleans():
    assert decode_apply_patch(b"data:\n  y: n\n  on: yes\n") == {"data": {"y": "n", "on": "yes"}}
    with pytest.raises(BadRequest):
        decode_apply_patch(b"- a list")


def test_conflict_force_and_shared_ownership(openapi):
    schema = openapi.schema_for("", "v1", "ConfigMap")
    first = server_side_apply(
        None, cm({"x": "1", "y": "2"}), manager="a", api_version="v1", schema=schema
    )
    # Same value from another manager: shared, no conflict.
    shared = server_side_apply(first, cm({"x": "1"}), manager="b", api_version="v1", schema=schema)
    owners = {e.manager: e.fields for e in read_entries(shared)}
    assert ("f:data", "f:x") in owners["a"] and ("f:data", "f:x") in owners["b"]
    with pytest.raises(ApplyConflict) as conflict:
        server_side_apply(shared, cm({"x": "9"}), manager="b", api_version="v1", schema=schema)
    assert conflict.value.code == 409
    assert conflict.value.message == 'Apply failed with 1 conflict: conflict with "a": .data.x'
    assert [(c.reason, c.field) for c in conflict.value.causes] == [
        ("FieldManagerConflict", ".data.x")
    ]
    forced = server_side_apply(
        shared, cm({"x": "9"}), manager="b", api_version="v1", schema=schema, force=True
    )
    assert forced["data"] == {"x": "9", "y": "2"}
    owners = {e.manager: e.fields for e in read_entries(forced)}
    assert ("f:data", "f:x") not in owners["a"] and ("f:data", "f:x") in owners["b"]


def test_omitted_fields_are_removed_unless_someone_else_owns_them(openapi):
    schema = openapi.schema_for("", "v1", "ConfigMap")
    obj = server_side_apply(
        None, cm({"x": "1", "y": "2", "z": "3"}), manager="a", api_version="v1", schema=schema
    )
    obj = server_side_apply(obj, cm({"z": "3"}), manager="b", api_version="v1", schema=schema)
    obj = server_side_apply(obj, cm({"x": "1"}), manager="a", api_version="v1", schema=schema)
    assert obj["data"] == {"x": "1", "z": "3"}


def test_list_map_items_merge_by_key_with_defaulted_keys(openapi):
    schema = openapi.schema_for("", "v1", "Service")
    live = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "s"},
        "spec": {"ports": [{"port": 80, "protocol": "TCP", "name": "http"}]},
    }
    applied = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "s"},
        "spec": {"ports": [{"port": 443, "name": "https"}]},
    }

    def default_protocol(obj: dict) -> dict:
        for port in obj.get("spec", {}).get("ports", []):
            port.setdefault("protocol", "TCP")
        return obj

    result = server_side_apply(
        live, applied, manager="a", api_version="v1", schema=schema, normalize=default_protocol
    )
    assert [p["port"] for p in result["spec"]["ports"]] == [80, 443]
    (entry,) = read_entries(result)
    assert ("f:spec", "f:ports", 'k:{"port":443,"protocol":"TCP"}') in entry.fields


def test_updates_take_ownership_and_removed_fields_leave_everyone(openapi):
    schema = openapi.schema_for("", "v1", "ConfigMap")
    obj = server_side_apply(
        None, cm({"x": "1", "y": "2"}), manager="a", api_version="v1", schema=schema
    )
    new = cm({"x": "changed"}, managedFields=obj["metadata"]["managedFields"])
    updated = track_update(obj, new, manager="editor", api_version="v1", schema=schema)
    owners = {e.manager: (e.operation, e.fields) for e in read_entries(updated)}
    assert owners["editor"] == ("Update", {("f:data", "f:x")})
    assert "a" not in owners  # x changed hands, y was removed: "a" owns nothing
    # An empty managedFields from the client resets ownership: the writer owns it all.
    reset = track_update(
        updated, cm({"x": "1"}, managedFields=[]), manager="r", api_version="v1", schema=schema
    )
    (entry,) = read_entries(reset)
    assert entry.manager == "r" and entry.fields == {("f:data", "f:x")}


def test_status_is_not_owned_through_the_main_resource(openapi):
    schema = openapi.schema_for("apps", "v1", "Deployment")
    obj = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "d"},
        "spec": {"replicas": 1},
        "status": {"replicas": 1},
    }
    tracked = track_update(
        None, obj, manager="m", api_version="apps/v1", schema=schema, has_status=True
    )
    (entry,) = read_entries(tracked)
    assert entry.fields == {("f:spec", "f:replicas")}
    status_tracked = track_update(
        None,
        obj,
        manager="m",
        api_version="apps/v1",
        schema=schema,
        has_status=True,
        subresource="status",
    )
    (entry,) = read_entries(status_tracked)
    assert entry.fields == {("f:status", "f:replicas")} and entry.subresource == "status"


def test_custom_resources_refuse_strategic_merge_patch():
    check_patch_type(APPLY, custom=True)
    with pytest.raises(Exception) as refused:
        check_patch_type("application/strategic-merge-patch+json", custom=True)
    assert getattr(refused.value, "code", 0) == 415


async def test_http_apply_creates_conflicts_and_forces(harness):
    body = cm({"x": "1", "y": "2"})
    status, created = await harness.request(
        "PATCH", f"{CM_PATH}/c", body, content_type=APPLY, params={"fieldManager": "one"}
    )
    assert status == 201, created
    (entry,) = created["metadata"]["managedFields"]
    assert entry["manager"] == "one" and entry["operation"] == "Apply"
    assert entry["fieldsV1"] == {"f:data": {"f:x": {}, "f:y": {}}}

    status, again = await harness.request(
        "PATCH", f"{CM_PATH}/c", body, content_type=APPLY, params={"fieldManager": "one"}
    )
    assert (
        status == 200
        and again["metadata"]["resourceVersion"] == (created["metadata"]["resourceVersion"])
    )

    other = cm({"x": "2"})
    status, conflict = await harness.request(
        "PATCH", f"{CM_PATH}/c", other, content_type=APPLY, params={"fieldManager": "two"}
    )
    assert status == 409, conflict
    assert conflict["reason"] == "Conflict"
    assert conflict["details"]["causes"] == [
        {"reason": "FieldManagerConflict", "message": 'conflict with "one"', "field": ".data.x"}
    ]
    status, forced = await harness.request(
        "PATCH",
        f"{CM_PATH}/c",
        other,
        content_type=APPLY,
        params={"fieldManager": "two", "force": "true"},
    )
    assert status == 200, forced
    assert forced["data"] == {"x": "2", "y": "2"}

    status, missing_manager = await harness.request(
        "PATCH", f"{CM_PATH}/c", other, content_type=APPLY
    )
    assert status == 400 and "fieldManager" in missing_manager["message"]
    status, wrong_kind = await harness.request(
        "PATCH",
        f"{CM_PATH}/c",
        {**other, "kind": "Secret"},
        content_type=APPLY,
        params={"fieldManager": "two"},
    )
    assert status == 400, wrong_kind


async def test_http_create_and_update_record_managers(harness):
    status, created = await harness.request(
        "POST", CM_PATH, cm({"a": "1"}), params={"fieldManager": "creator"}
    )
    assert status == 201, created
    assert [(e["manager"], e["operation"]) for e in created["metadata"]["managedFields"]] == [
        ("creator", "Update")
    ]
    created["data"]["b"] = "2"
    status, updated = await harness.request(
        "PUT", f"{CM_PATH}/c", created, headers={"User-Agent": "updater/1.0 (linux)"}
    )
    assert status == 200, updated
    entries = {e["manager"]: e["fieldsV1"] for e in updated["metadata"]["managedFields"]}
    assert entries == {
        "creator": {"f:data": {"f:a": {}}},
        "updater": {"f:data": {"f:b": {}}},
    }
    # A stale resourceVersion is still a conflict through the tracking update path.
    status, stale = await harness.request("PUT", f"{CM_PATH}/c", created)
    assert status == 409, stale


def test_crd_list_types_drive_apply_merging():
    registry = builtin_registry()
    openapi = OpenAPI(registry, load_definitions())
    schema = {
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "properties": {
                    "tags": {
                        "type": "array",
                        "x-kubernetes-list-type": "set",
                        "items": {"type": "string"},
                    },
                    "hosts": {
                        "type": "array",
                        "x-kubernetes-list-type": "map",
                        "x-kubernetes-list-map-keys": ["name"],
                        "items": {
                            "type": "object",
                            "properties": {"name": {"type": "string"}, "ip": {"type": "string"}},
                        },
                    },
                    "args": {"type": "array", "items": {"type": "string"}},
                },
            }
        },
    }
    openapi.add_crd("stable.example.com", "v1", "CronTab", schema)
    view = openapi.schema_for("stable.example.com", "v1", "CronTab")

    def crontab(spec: dict) -> dict:
        return {
            "apiVersion": "stable.example.com/v1",
            "kind": "CronTab",
            "metadata": {"name": "ct"},
            "spec": spec,
        }

    first = crontab({"tags": ["a"], "hosts": [{"name": "h1", "ip": "1"}], "args": ["x"]})
    obj = server_side_apply(
        None, first, manager="one", api_version="stable.example.com/v1", schema=view
    )
    second = crontab({"tags": ["b"], "hosts": [{"name": "h2", "ip": "2"}]})
    obj = server_side_apply(
        obj, second, manager="two", api_version="stable.example.com/v1", schema=view
    )
    assert obj["spec"]["tags"] == ["a", "b"]
    assert [h["name"] for h in obj["spec"]["hosts"]] == ["h1", "h2"]
    with pytest.raises(ApplyConflict):
        # args has no list type: atomic, owned by "one" as a whole.
        server_side_apply(
            obj,
            crontab({"args": ["y"]}),
            manager="two",
            api_version="stable.example.com/v1",
            schema=view,
        )


async def test_http_scale_then_apply_conflicts_with_the_scale_manager(harness):
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "d"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "d"}},
            "template": {
                "metadata": {"labels": {"app": "d"}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]},
            },
        },
    }
    params = {"fieldManager": "deployer"}
    status, created = await harness.request(
        "PATCH", f"{DEPLOY_PATH}/d", deployment, content_type=APPLY, params=params
    )
    assert status == 201, created
    status, scaled = await harness.request(
        "PATCH",
        f"{DEPLOY_PATH}/d/scale",
        {"spec": {"replicas": 3}},
        content_type="application/merge-patch+json",
        params={"fieldManager": "scaler"},
    )
    assert status == 200, scaled
    status, conflict = await harness.request(
        "PATCH", f"{DEPLOY_PATH}/d", deployment, content_type=APPLY, params=params
    )
    assert status == 409, conflict
    assert conflict["message"] == (
        'Apply failed with 1 conflict: conflict with "scaler" with subresource "scale" '
        "using apps/v1: .spec.replicas"
    )


async def test_wrong_or_missing_type_is_upstreams_invalid_object_type(harness):
    """Reproducer (fuzz): an apply configuration without apiVersion/kind answered
    ``invalid object type: , Kind=`` and a mismatched one a message of Sampan's own.
    kube-apiserver's version check writes the Go GroupVersionKind: ``group/version, Kind=``.
    A non-string apiVersion or kind reads as empty there (the check runs on the decoded
    map, before any typed decoding): it answered the typed decoder's error."""
    for body, shown in (
        ({"metadata": {"name": "t"}}, "/, Kind="),
        ({"apiVersion": "v1", "metadata": {"name": "t"}}, "/v1, Kind="),
        ({"apiVersion": "apps/v1", "kind": "ConfigMap"}, "apps/v1, Kind=ConfigMap"),
        ({"apiVersion": "a/b/c", "kind": "ConfigMap"}, "/, Kind="),
        ({"apiVersion": 5, "metadata": {"name": "t"}}, "/, Kind="),
        ({"apiVersion": ["v1"], "kind": "ConfigMap"}, "/, Kind=ConfigMap"),
        ({"apiVersion": None, "kind": {"k": 1}}, "/, Kind="),
        ({"apiVersion": True, "kind": "ConfigMap"}, "/, Kind=ConfigMap"),
    ):
        status, err = await harness.request(
            "PATCH", f"{CM_PATH}/t", body, content_type=APPLY, params={"fieldManager": "m"}
        )
        assert (status, err["reason"]) == (400, "BadRequest"), err
        assert err["message"] == f"invalid object type: {shown}"
