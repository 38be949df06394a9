"""Typed decoding of built-in kinds, over HTTP against the in-process API server.

kube-apiserver decodes every body of a built-in kind into its Go struct, so a value of the
wrong JSON type is refused before admission: 400 ``<Kind> in version "<v>" cannot be handled
as a <Kind>: json: cannot unmarshal ...`` on create and update, 422 on ``patch`` for
JSON/merge/strategic patches (the patched object does not decode), 400 for server-side apply.
Valid objects of many kinds still go through, ``null`` is the zero value, and free-form parts
(RawExtension, a CRD's schema defaults) take anything.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil

import pytest
import yaml

from sampan.api.typecheck import TypeChecker, rfc3339_error
from sampan.apiserver.openapi_data import load_definitions

KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"
CONFIGMAPS = "/api/v1/namespaces/default/configmaps"
DEPLOYMENTS = "/apis/apps/v1/namespaces/default/deployments"
PODS = "/api/v1/namespaces/default/pods"


def deployment(name: str, replicas: object = 1) -> dict:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]},
            },
        },
    }


def pod(name: str, **container: object) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "busybox", **container}]},
    }


def assert_bad_request(status: int, body: dict, message: str) -> None:
    assert status == 400, body
    assert body["kind"] == "Status"
    assert body["reason"] == "BadRequest"
    assert body["code"] == 400
    assert body["message"] == message


async def test_wrong_types_refused_on_create_with_upstream_wording(harness):
    status, body = await harness.request(
        "POST", CONFIGMAPS, {"metadata": {"name": "n"}, "data": {"a": 1}}
    )
    assert_bad_request(
        status,
        body,
        'ConfigMap in version "v1" cannot be handled as a ConfigMap: json: cannot unmarshal '
        "number into Go struct field ConfigMap.data of type string",
    )
    status, body = await harness.request(
        "POST",
        "/apis/rbac.authorization.k8s.io/v1/namespaces/default/roles",
        {"metadata": {"name": "r"}, "rules": "AAA"},
    )
    assert_bad_request(
        status,
        body,
        'Role in version "v1" cannot be handled as a Role: json: cannot unmarshal string into '
        "Go struct field Role.rules of type []v1.PolicyRule",
    )
    status, body = await harness.request("POST", DEPLOYMENTS, deployment("big", 2147483648))
    assert_bad_request(
        status,
        body,
        'Deployment in version "v1" cannot be handled as a Deployment: json: cannot unmarshal '
        "number 2147483648 into Go struct field DeploymentSpec.spec.replicas of type int32",
    )
    status, body = await harness.request("POST", DEPLOYMENTS, deployment("float", 1.5))
    assert (
        status == 400
        and "number 1.5 into Go struct field DeploymentSpec.spec.replicas" in (body["message"])
    )
    status, body = await harness.request("POST", PODS, pod("img", image=5))
    assert_bad_request(
        status,
        body,
        'Pod in version "v1" cannot be handled as a Pod: json: cannot unmarshal number into Go '
        "struct field Container.spec.containers.image of type string",
    )
    status, body = await harness.request(
        "POST", PODS, pod("qty", resources={"limits": {"cpu": "lots"}})
    )
    assert_bad_request(
        status,
        body,
        'Pod in version "v1" cannot be handled as a Pod: quantities must match the regular '
        "expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
    )
    status, body = await harness.request(
        "POST",
        "/api/v1/namespaces/default/secrets",
        {"metadata": {"name": "s"}, "data": {"k": "!!"}},
    )
    assert_bad_request(
        status,
        body,
        'Secret in version "v1" cannot be handled as a Secret: illegal base64 data at input byte 0',
    )
    status, body = await harness.request(
        "POST", CONFIGMAPS, {"metadata": {"name": "t", "creationTimestamp": "yesterday"}}
    )
    assert_bad_request(
        status,
        body,
        'ConfigMap in version "v1" cannot be handled as a ConfigMap: parsing time "yesterday" '
        'as "2006-01-02T15:04:05Z07:00": cannot parse "yesterday" as "2006"',
    )
    status, body = await harness.request("POST", CONFIGMAPS, {"metadata": "x"})
    assert_bad_request(
        status,
        body,
        'ConfigMap in version "v1" cannot be handled as a ConfigMap: json: cannot unmarshal '
        "string into Go struct field ConfigMap.metadata of type v1.ObjectMeta",
    )
    service = {
        "metadata": {"name": "svc"},
        "spec": {"ports": [{"port": 80, "targetPort": 2147483648}]},
    }
    status, body = await harness.request("POST", "/api/v1/namespaces/default/services", service)
    assert status == 400
    assert body["message"].endswith(
        "json: cannot unmarshal number 2147483648 into Go struct field "
        "ServicePort.spec.ports.targetPort of type int32"
    )
    # Nothing was stored.
    status, listed = await harness.request("GET", CONFIGMAPS)
    assert [i["metadata"]["name"] for i in listed["items"]] == []


async def test_valid_objects_of_many_kinds_still_accepted(harness):
    creates = [
        (
            CONFIGMAPS,
            {
                "metadata": {"name": "c", "labels": None},
                "data": {"a": "1"},
                "binaryData": {"b": "AAEC"},
            },
        ),
        (DEPLOYMENTS, deployment("web")),
        (
            PODS,
            pod(
                "p",
                ports=[{"containerPort": 80, "protocol": "TCP"}],
                resources={"requests": {"cpu": 0.5, "memory": "64Mi"}},
            ),
        ),
        (
            "/api/v1/namespaces/default/services",
            {"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80, "targetPort": "http"}]}},
        ),
        (
            "/api/v1/namespaces/default/secrets",
            {
                "metadata": {"name": "s"},
                "data": {"k": "dmFsdWU=", "e": ""},
                "stringData": {"x": "y"},
            },
        ),
        (
            "/apis/rbac.authorization.k8s.io/v1/namespaces/default/roles",
            {
                "metadata": {"name": "r"},
                "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}],
            },
        ),
        (
            "/apis/apps/v1/namespaces/default/controllerrevisions",
            {
                "metadata": {"name": "cr"},
                "revision": 1,
                "data": {"anything": [1, "two", {"three": None}]},
            },
        ),
        (
            "/apis/coordination.k8s.io/v1/namespaces/default/leases",
            {
                "metadata": {"name": "l"},
                "spec": {
                    "holderIdentity": "me",
                    "renewTime": "2024-01-01T00:00:00.123456Z",
                    "leaseDurationSeconds": 15,
                },
            },
        ),
        (
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
            {
                "metadata": {"name": "widgets.example.com"},
                "spec": {
                    "group": "example.com",
                    "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                    "scope": "Namespaced",
                    "versions": [
                        {
                            "name": "v1",
                            "served": True,
                            "storage": True,
                            "schema": {
                                "openAPIV3Schema": {
                                    "type": "object",
                                    "properties": {
                                        "spec": {
                                            "type": "object",
                                            "properties": {
                                                "size": {"type": "integer", "default": 3},
                                                "tags": {
                                                    "type": "array",
                                                    "items": {"type": "string"},
                                                },
                                                "extra": {
                                                    "type": "object",
                                                    "additionalProperties": True,
                                                    "x-kubernetes-preserve-unknown-fields": True,
                                                },
                                            },
                                        },
                                    },
                                }
                            },
                        }
                    ],
                },
            },
        ),
    ]
    for path, obj in creates:
        status, body = await harness.request("POST", path, obj)
        assert status == 201, (path, body)


async def test_update_and_every_patch_type_check_the_result(harness):
    status, _ = await harness.request("POST", DEPLOYMENTS, deployment("web"))
    assert status == 201
    status, current = await harness.request("GET", f"{DEPLOYMENTS}/web")
    current["spec"]["replicas"] = "three"
    status, body = await harness.request("PUT", f"{DEPLOYMENTS}/web", current)
    assert_bad_request(
        status,
        body,
        'Deployment in version "v1" cannot be handled as a Deployment: json: cannot unmarshal '
        "string into Go struct field DeploymentSpec.spec.replicas of type int32",
    )
    decoder = (
        "json: cannot unmarshal string into Go struct field DeploymentSpec.spec.replicas of "
        "type int32"
    )
    for content_type, patch in (
        ("application/merge-patch+json", {"spec": {"replicas": "three"}}),
        (
            "application/json-patch+json",
            [{"op": "replace", "path": "/spec/replicas", "value": "three"}],
        ),
    ):
        status, body = await harness.request(
            "PATCH", f"{DEPLOYMENTS}/web", patch, content_type=content_type
        )
        assert status == 422, (content_type, body)
        assert body["reason"] == "Invalid"
        cause = body["details"]["causes"][0]
        assert cause["field"] == "patch"
        assert cause["reason"] == "FieldValueInvalid"
        assert cause["message"].endswith(decoder)
        assert body["message"].startswith(' "" is invalid: patch: Invalid value: ')
    # A strategic merge patch result goes through upstream's map-to-struct converter: its
    # words, and the patch printed as Go's %+v.
    strategic = {"spec": {"replicas": "three", "minReadySeconds": 1.0}}
    status, body = await harness.request(
        "PATCH",
        f"{DEPLOYMENTS}/web",
        strategic,
        content_type="application/strategic-merge-patch+json",
    )
    assert status == 422, body
    assert body["message"] == (
        ' "" is invalid: patch: Invalid value: "map[spec:map[minReadySeconds:1 '
        'replicas:three]]": unrecognized type: int32'
    )
    status, body = await harness.request(
        "PATCH",
        f"{DEPLOYMENTS}/web",
        {"spec": {"replicas": 3.0, "revisionHistoryLimit": 5}},
        content_type="application/strategic-merge-patch+json",
    )
    assert status == 200, body  # the converter takes an integral float for an int32
    apply = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {"replicas": "three"},
    }
    status, body = await harness.request(
        "PATCH",
        f"{DEPLOYMENTS}/web",
        apply,
        content_type="application/apply-patch+yaml",
        params={"fieldManager": "test", "force": "true"},
    )
    assert_bad_request(
        status, body, f'Deployment in version "v1" cannot be handled as a Deployment: {decoder}'
    )
    # The object is unchanged, and a well-typed patch still works.
    status, body = await harness.request(
        "PATCH",
        f"{DEPLOYMENTS}/web",
        {"spec": {"replicas": 2}},
        content_type="application/merge-patch+json",
    )
    assert status == 200 and body["spec"]["replicas"] == 2
    status, body = await harness.request(
        "PUT",
        f"{DEPLOYMENTS}/web/scale",
        {
            "apiVersion": "autoscaling/v1",
            "kind": "Scale",
            "metadata": {"name": "web"},
            "spec": {"replicas": "x"},
        },
    )
    assert_bad_request(
        status,
        body,
        'Scale in version "v1" cannot be handled as a Scale: json: cannot unmarshal string '
        "into Go struct field ScaleSpec.spec.replicas of type int32",
    )


@pytest.mark.parametrize(
    "path, kind, spec_type",
    [
        (
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            "SelfSubjectAccessReview",
            "v1.SelfSubjectAccessReviewSpec",
        ),
        (
            "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            "SubjectAccessReview",
            "v1.SubjectAccessReviewSpec",
        ),
        (
            "/apis/authorization.k8s.io/v1/namespaces/default/localsubjectaccessreviews",
            "LocalSubjectAccessReview",
            "v1.SubjectAccessReviewSpec",
        ),
        (
            "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews",
            "SelfSubjectRulesReview",
            "v1.SelfSubjectRulesReviewSpec",
        ),
        ("/apis/authentication.k8s.io/v1/tokenreviews", "TokenReview", "v1.TokenReviewSpec"),
    ],
)
async def test_review_kinds_with_a_string_spec_are_400_not_500(harness, path, kind, spec_type):
    status, body = await harness.request("POST", path, {"spec": "x"})
    assert_bad_request(
        status,
        body,
        f'{kind} in version "v1" cannot be handled as a {kind}: json: cannot unmarshal string '
        f"into Go struct field {kind}.spec of type {spec_type}",
    )
    status, body = await harness.request(
        "POST", path, {"spec": {"resourceAttributes": {"verb": 5}, "token": 5, "namespace": 5}}
    )
    assert status == 400, body


async def test_computed_subresources_decode_their_bodies_typed(harness):
    status, _ = await harness.request("POST", PODS, pod("ev"))
    assert status == 201
    status, body = await harness.request(
        "POST", f"{PODS}/ev/eviction", {"metadata": {"name": "ev"}, "deleteOptions": "x"}
    )
    assert_bad_request(
        status,
        body,
        'Eviction in version "v1" cannot be handled as a Eviction: json: cannot unmarshal '
        "string into Go struct field Eviction.deleteOptions of type v1.DeleteOptions",
    )
    status, body = await harness.request(
        "POST", "/api/v1/namespaces/default/serviceaccounts/default/token", {"spec": "x"}
    )
    assert_bad_request(
        status,
        body,
        'TokenRequest in version "v1" cannot be handled as a TokenRequest: json: cannot '
        "unmarshal string into Go struct field TokenRequest.spec of type v1.TokenRequestSpec",
    )
    status, body = await harness.request(
        "DELETE", f"{PODS}/ev", {"kind": "DeleteOptions", "gracePeriodSeconds": "soon"}
    )
    assert status == 400, body
    assert body["message"].endswith(
        "json: cannot unmarshal string into Go struct field DeleteOptions.gracePeriodSeconds "
        "of type int64"
    )


async def test_null_elements_decode_to_zero_values(harness):
    """Go decodes ``null`` in a list or map to the element's zero value: what is stored (and
    what typed clients read back) has ``""``/``{}`` there, and nothing downstream sees a
    ``None`` where a value belongs."""
    status, created = await harness.request(
        "POST",
        CONFIGMAPS,
        {"metadata": {"name": "nulls", "labels": {"a": None}}, "data": {"k": None}},
    )
    assert status == 201, created
    assert created["data"] == {"k": ""}
    assert created["metadata"]["labels"] == {"a": ""}
    review = {
        "spec": {
            "user": "jane",
            "groups": [None],
            "extra": {"scopes": None},
            "resourceAttributes": {"verb": None, "resource": "pods", "namespace": None},
        }
    }
    status, body = await harness.request(
        "POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", review
    )
    assert status == 201, body
    assert body["status"]["allowed"] is False


def test_checker_units_and_cost():
    """Details the HTTP tests do not reach, and the hot-path cost (printed, not asserted)."""
    checker = TypeChecker(load_definitions())
    pod_name = "io.k8s.api.core.v1.Pod"
    assert checker.check(pod_name, {"spec": None, "metadata": {"labels": None}}) is None
    assert checker.check(pod_name, {"spec": {"containers": [None]}}) is None
    assert checker.check(pod_name, {"spec": {"activeDeadlineSeconds": 2**63}}).endswith(
        "number 9223372036854775808 into Go struct field PodSpec.spec.activeDeadlineSeconds "
        "of type int64"
    )
    assert checker.check(pod_name, {"spec": {"hostNetwork": "yes"}}).endswith("of type bool")
    assert "Go struct field ContainerPort.spec.containers.ports.containerPort of type int32" in (
        checker.check(pod_name, {"spec": {"containers": [{"ports": [{"containerPort": True}]}]}})
    )
    # The first error in document order wins, unless a custom unmarshaler failed.
    first = checker.check(pod_name, {"spec": {"hostname": 1, "hostNetwork": "x"}})
    assert first.endswith("PodSpec.spec.hostname of type string")
    assert rfc3339_error("2024-02-30T00:00:00Z").endswith("day out of range")
    assert rfc3339_error("2024-01-01T00:00:00+01:00") is None
    assert rfc3339_error("2024-01-01 00:00:00Z").endswith('cannot parse " 00:00:00Z" as "T"')
    assert rfc3339_error("2024-01-01T00:00:00Zjunk").endswith('extra text: "junk"')
    secret = "io.k8s.api.core.v1.Secret"
    assert checker.check(secret, {"data": {"a": "YWJj", "b": "YQ==", "c": "YWI=\n"}}) is None
    assert checker.check(secret, {"data": {"a": "YWJjZ"}}) == "illegal base64 data at input byte 4"
    assert checker.check(secret, {"data": {"a": "YW*j"}}) == "illegal base64 data at input byte 2"

    # After a strategic merge patch: the map-to-struct converter's rules and words.
    def converted(obj):
        return checker.check(pod_name, obj, unstructured=True)

    assert converted({"spec": "x"}) == "cannot restore struct from: string"
    assert converted({"spec": {"containers": "x"}}) == "cannot restore slice from string"
    assert converted({"spec": {"nodeSelector": [1]}}) == "cannot restore map from slice"
    assert converted({"spec": {"hostname": 5}}) == "cannot convert int64 to string"
    assert converted({"spec": {"hostname": 1.5}}) == "unrecognized type: string"
    assert converted({"spec": {"hostNetwork": "yes"}}) == "unrecognized type: bool"
    assert converted({"spec": {"priority": 1.5}}) == "cannot convert float64 to int32"
    integral = {"spec": {"priority": 7.0, "containers": [{"ports": [{"containerPort": 80.0}]}]}}
    assert converted(integral) is None
    assert integral["spec"]["priority"] == 7 and type(integral["spec"]["priority"]) is int
    assert type(integral["spec"]["containers"][0]["ports"][0]["containerPort"]) is int

    import timeit

    obj = json.loads(
        json.dumps(
            pod("cost", ports=[{"containerPort": 80}], resources={"requests": {"cpu": "100m"}})
        )
    )
    runs = 2000
    seconds = timeit.timeit(lambda: checker.check(pod_name, obj), number=runs)
    print(f"typed check of a pod: {seconds / runs * 1e6:.1f} us")


@pytest.mark.skipif(not os.path.exists(KUBECTL), reason="kubectl is not installed")
async def test_kubectl_sees_upstreams_decode_errors(harness):
    """kubectl 1.32 as a user runs it: create and apply (client-side: a strategic merge
    patch after the first apply) of manifests with a wrong type."""
    bad = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: kc}\ndata: {a: 1}\n"
    code, _, err = await kubectl(harness, "create", "-f", "-", stdin=bad.encode())
    assert code == 1
    assert (
        'ConfigMap in version "v1" cannot be handled as a ConfigMap: json: cannot unmarshal '
        "number into Go struct field ConfigMap.data of type string"
    ) in err
    good = yaml.safe_dump(deployment("kd")).encode()
    code, _, err = await kubectl(harness, "apply", "-f", "-", stdin=good)
    assert code == 0, err
    manifest = deployment("kd", "two")
    code, _, err = await kubectl(
        harness, "apply", "-f", "-", stdin=yaml.safe_dump(manifest).encode()
    )
    assert code == 1
    # kubectl's client-side apply sends a strategic merge patch: the converter's words.
    assert "The request is invalid: patch: Invalid value: " in err
    assert "spec:map[replicas:two]" in err and err.rstrip().endswith("unrecognized type: int32")
    code, _, err = await kubectl(
        harness, "apply", "--server-side", "-f", "-", stdin=yaml.safe_dump(manifest).encode()
    )
    assert code == 1
    assert "DeploymentSpec.spec.replicas of type int32" in err


async def kubectl(harness, *args: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    env = dict(os.environ, KUBECONFIG=str(harness.kubeconfig), HOME=str(harness.data_dir))
    process = await asyncio.create_subprocess_exec(
        KUBECTL,
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await process.communicate(stdin)
    return process.returncode or 0, out.decode(), err.decode()
