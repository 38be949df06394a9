"""Strategic merge patch against the real 1.32 schemas (pure unit tests of strategicpatch),
plus the HTTP path: SMP served for built-ins, 415 for custom resources."""

from __future__ import annotations

import pytest

from sampan.api.errors import BadRequest
from sampan.api.resources import builtin_registry
from sampan.apiserver.openapi import OpenAPI
from sampan.apiserver.openapi_data import load_definitions
from sampan.apiserver.strategicpatch import apply_strategic_merge_patch

SMP = "application/strategic-merge-patch+json"


@pytest.fixture(scope="module")
def openapi() -> OpenAPI:
    return OpenAPI(builtin_registry(), load_definitions())


def deployment(containers: list[dict], **spec: object) -> dict:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "d", "labels": {"a": "1", "b": "2"}, "finalizers": ["x", "y"]},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "d"}},
            "template": {"spec": {"containers": containers}},
            **spec,
        },
    }


def containers_of(obj: dict) -> list[dict]:
    return obj["spec"]["template"]["spec"]["containers"]


def test_containers_merge_by_name_and_ports_by_container_port(openapi):
    schema = openapi.schema_for("apps", "v1", "Deployment")
    original = deployment(
        [
            {"name": "a", "image": "a:1", "ports": [{"containerPort": 80}, {"containerPort": 443}]},
            {"name": "b", "image": "b:1", "args": ["x", "y"]},
        ]
    )
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {"name": "b", "image": "b:2", "args": ["z"]},
                        {"name": "c", "image": "c:1"},
                        {"name": "a", "ports": [{"containerPort": 443, "$patch": "delete"}]},
                    ]
                }
            }
        }
    }
    result = apply_strategic_merge_patch(original, patch, schema)
    containers = containers_of(result)
    assert [c["name"] for c in containers] == ["a", "b", "c"]
    assert containers[0] == {"name": "a", "image": "a:1", "ports": [{"containerPort": 80}]}
    # args has no merge strategy: replaced, like a JSON merge patch.
    assert containers[1] == {"name": "b", "image": "b:2", "args": ["z"]}
    assert containers[2] == {"name": "c", "image": "c:1"}
    # The original is untouched.
    assert containers_of(original)[1]["image"] == "b:1"


def test_set_element_order_and_delete_from_primitive_list(openapi):
    schema = openapi.schema_for("apps", "v1", "Deployment")
    original = deployment([{"name": "a", "image": "a"}, {"name": "b", "image": "b"}])
    patch = {
        "metadata": {"$deleteFromPrimitiveList/finalizers": ["x"], "labels": {"a": None}},
        "spec": {
            "template": {
                "spec": {
                    "$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
                    "containers": [{"name": "a", "image": "a2"}],
                }
            }
        },
    }
    result = apply_strategic_merge_patch(original, patch, schema)
    assert [c["name"] for c in containers_of(result)] == ["b", "a"]
    assert containers_of(result)[1]["image"] == "a2"
    assert result["metadata"]["finalizers"] == ["y"]
    assert result["metadata"]["labels"] == {"b": "2"}


def test_retain_keys_strategy_and_replace_directive(openapi):
    schema = openapi.schema_for("apps", "v1", "Deployment")
    original = deployment(
        [{"name": "a", "image": "a"}],
        strategy={"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}},
    )
    patch = {"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}
    result = apply_strategic_merge_patch(original, patch, schema)
    assert result["spec"]["strategy"] == {"type": "Recreate"}
    patch = {"spec": {"selector": {"$patch": "replace", "matchLabels": {"new": "1"}}}}
    result = apply_strategic_merge_patch(original, patch, schema)
    assert result["spec"]["selector"] == {"matchLabels": {"new": "1"}}
    patch = {
        "spec": {
            "template": {
                "spec": {"containers": [{"$patch": "replace"}, {"name": "z", "image": "z"}]}
            }
        }
    }
    result = apply_strategic_merge_patch(original, patch, schema)
    assert containers_of(result) == [{"name": "z", "image": "z"}]


def test_volumes_merge_and_retain_keys(openapi):
    schema = openapi.schema_for("", "v1", "Pod")
    original = {
        "spec": {
            "volumes": [
                {"name": "v", "emptyDir": {}},
                {"name": "w", "configMap": {"name": "c"}},
            ]
        }
    }
    patch = {
        "spec": {
            "volumes": [
                {"name": "v", "$retainKeys": ["name", "secret"], "secret": {"secretName": "s"}}
            ]
        }
    }
    result = apply_strategic_merge_patch(original, patch, schema)
    assert result["spec"]["volumes"] == [
        {"name": "v", "secret": {"secretName": "s"}},
        {"name": "w", "configMap": {"name": "c"}},
    ]


def test_malformed_directives_are_bad_requests(openapi):
    """Reproducer: the errors showed Python reprs (``{'image': 'no-name'}``). They read as
    upstream's merge library words them, values in Go's ``%v``."""
    schema = openapi.schema_for("apps", "v1", "Deployment")
    original = deployment([{"name": "a", "image": "a"}])

    def spec(template_spec: dict) -> dict:
        return {"spec": {"template": {"spec": template_spec}}}

    for patch, message in (
        (
            spec({"containers": [{"image": "no-name", "ports": [{"containerPort": 80}]}]}),
            "map: map[image:no-name ports:[map[containerPort:80]]] does not contain declared "
            "merge key: name",
        ),
        (
            spec({"containers": [{"$patch": "delete", "image": "x"}]}),
            "map: map[$patch:delete image:x] does not contain declared merge key: name",
        ),
        (
            {"spec": {"$patch": "explode", "replicas": 2}},
            "unknown patch type: explode in map: map[$patch:explode replicas:2]",
        ),
        (
            spec({"containers": [{"name": "a", "$patch": 7}]}),
            "unknown patch type: %!s(float64=7) in map: map[$patch:7 name:a]",
        ),
        ({"metadata": {"$deleteFromPrimitiveList/finalizers": "x"}}, None),
        ({"spec": {"$setElementOrder/x": {"a": 1}}}, None),
        ({"spec": {"strategy": {"$retainKeys": "type"}}}, None),
    ):
        with pytest.raises(BadRequest) as raised:
            apply_strategic_merge_patch(original, patch, schema)
        if message is not None:
            assert raised.value.message == message
        assert "{'" not in raised.value.message and "'}" not in raised.value.message
    for patch, message in (
        (
            {"metadata": {"$deleteFromPrimitiveList/finalizers": "x"}},
            "invalid patch format of primitive list",
        ),
        ({"spec": {"$setElementOrder/x": 1}}, "invalid patch format of setElementOrder list"),
        ({"spec": {"strategy": {"$retainKeys": "type"}}}, "invalid patch format of retainKeys"),
    ):
        with pytest.raises(BadRequest, match=f"^{message}$"):
            apply_strategic_merge_patch(original, patch, schema)


def test_without_schema_lists_are_replaced():
    result = apply_strategic_merge_patch(
        {"a": [1, 2], "m": {"x": 1}}, {"a": [3], "m": {"y": 2}}, None
    )
    assert result == {"a": [3], "m": {"x": 1, "y": 2}}


async def test_http_strategic_merge_patch(harness):
    path = "/apis/apps/v1/namespaces/default/deployments"
    body = deployment([{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}])
    body["spec"]["template"]["metadata"] = {"labels": {"app": "d"}}
    body["metadata"].pop("finalizers")
    status, created = await harness.request("POST", path, body)
    assert status == 201, created
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "b", "image": "b:2"}]}}}}
    status, patched = await harness.request(
        "PATCH", f"{path}/d", patch, content_type=SMP, params={"fieldManager": "tester"}
    )
    assert status == 200, patched
    assert [(c["name"], c["image"]) for c in containers_of(patched)] == [
        ("a", "a:1"),
        ("b", "b:2"),
    ]
    managers = {e["manager"]: e for e in patched["metadata"]["managedFields"]}
    assert set(managers) >= {"tester"}
    tester_fields = managers["tester"]["fieldsV1"]["f:spec"]["f:template"]["f:spec"]
    assert tester_fields == {"f:containers": {'k:{"name":"b"}': {"f:image": {}}}}
    status, error = await harness.request(
        "PATCH", f"{path}/d", patch, content_type=SMP, params={"force": "true"}
    )
    assert status == 422 and "non-apply" in error["message"]


async def test_http_strategic_merge_patch_errors_read_as_go(harness):
    path = "/apis/apps/v1/namespaces/default/deployments"
    body = deployment([{"name": "a", "image": "a:1"}])
    body["spec"]["template"]["metadata"] = {"labels": {"app": "d"}}
    body["metadata"].pop("finalizers")
    status, created = await harness.request("POST", path, body)
    assert status == 201, created
    patch = {"spec": {"template": {"spec": {"containers": [{"image": "b:2"}]}}}}
    status, error = await harness.request("PATCH", f"{path}/d", patch, content_type=SMP)
    assert (status, error["reason"], error["message"]) == (
        400,
        "BadRequest",
        "map: map[image:b:2] does not contain declared merge key: name",
    )
