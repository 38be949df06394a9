"""OpenAPI v2/v3 documents built from the 1.32 definitions, CRD schema registration, and
``kubectl explain`` (real kubectl) for a built-in kind and a registered custom kind."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil

import pytest
import yaml

from sampan.api.resources import ResourceInfo, builtin_registry
from sampan.apiserver.openapi import OpenAPI, crd_definition_name
from sampan.apiserver.openapi_data import REF_PREFIX_V3, load_definitions

KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"
CRONTAB_SCHEMA = {
    "type": "object",
    "properties": {
        "spec": {
            "type": "object",
            "description": "The CronTab's desired state.",
            "properties": {
                "cronSpec": {"type": "string", "description": "When to run, in cron format."},
                "replicas": {"type": "integer", "default": 1},
            },
        }
    },
}


def crontab_info() -> ResourceInfo:
    return ResourceInfo(
        group="stable.example.com",
        version="v1",
        kind="CronTab",
        plural="crontabs",
        singular="crontab",
        namespaced=True,
        verbs=("create", "delete", "get", "list", "patch", "update", "watch"),
        short_names=("ct",),
    )


def refs(node: object, found: set[str]) -> set[str]:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            found.add(ref)
        for value in node.values():
            refs(value, found)
    elif isinstance(node, list):
        for value in node:
            refs(value, found)
    return found


async def test_v3_index_and_group_version_documents(harness):
    status, index = await harness.request("GET", "/openapi/v3")
    assert status == 200
    url = index["paths"]["apis/apps/v1"]["serverRelativeURL"]
    assert url.startswith("/openapi/v3/apis/apps/v1?hash=")
    status, document = await harness.request("GET", url)
    assert status == 200
    schemas = document["components"]["schemas"]
    deployment = schemas["io.k8s.api.apps.v1.Deployment"]
    assert deployment["x-kubernetes-group-version-kind"] == [
        {"group": "apps", "kind": "Deployment", "version": "v1"}
    ]
    assert deployment["properties"]["apiVersion"]["type"] == "string"
    assert "enum" not in deployment["properties"]["kind"]
    containers = schemas["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"]
    assert containers["x-kubernetes-patch-merge-key"] == "name"
    # IntOrString and Quantity are published as oneOf without a type (Go's OpenAPIV3OneOfTypes).
    int_or_string = schemas["io.k8s.apimachinery.pkg.util.intstr.IntOrString"]
    assert int_or_string["format"] == "int-or-string" and "type" not in int_or_string
    assert int_or_string["oneOf"] == [{"type": "integer"}, {"type": "string"}]
    quantity = schemas["io.k8s.apimachinery.pkg.api.resource.Quantity"]
    assert quantity["oneOf"] == [{"type": "string"}, {"type": "number"}]
    # Every reference resolves inside the document.
    for ref in refs(document, set()):
        assert ref.startswith(REF_PREFIX_V3) and ref[len(REF_PREFIX_V3) :] in schemas, ref
    item = document["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]
    assert {p["name"] for p in item["patch"]["parameters"]} >= {"fieldValidation", "fieldManager"}
    # Path parameters are declared (as upstream, once per path), and each operation lists
    # its own query parameters: a generator such as Schemathesis needs both.
    assert [(p["name"], p["in"], p.get("required")) for p in item["parameters"]] == [
        ("name", "path", True),
        ("namespace", "path", True),
        ("pretty", "query", None),
    ]
    assert item["get"]["parameters"] == []
    collection = document["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments"]
    listed = {p["name"]: p["schema"]["type"] for p in collection["get"]["parameters"]}
    assert listed["limit"] == "integer" and listed["watch"] == "boolean"
    assert {"labelSelector", "fieldSelector", "resourceVersion", "continue"} <= set(listed)
    deleted = {p["name"] for p in item["delete"]["parameters"]}
    assert {"gracePeriodSeconds", "propagationPolicy", "dryRun"} <= deleted
    status, core = await harness.request("GET", index["paths"]["api/v1"]["serverRelativeURL"])
    assert status == 200 and "io.k8s.api.core.v1.Pod" in core["components"]["schemas"]
    status, _ = await harness.request("GET", "/openapi/v3/apis/nope.example.com/v1")
    assert status == 404


async def test_v3_group_version_documents_hold_only_reachable_schemas(harness):
    """As kube-apiserver, a group-version's document carries the schemas its paths reference
    and what those reference, nothing else: kubectl 1.32 parses the whole document of an
    object's group-version two to three times per object it applies (bench/README.md,
    "bench.apply"), so an unreferenced schema is paid for on every object."""
    status, index = await harness.request("GET", "/openapi/v3")
    assert status == 200
    for gv_path in ("api/v1", "apis/apps/v1"):
        status, document = await harness.request(
            "GET", index["paths"][gv_path]["serverRelativeURL"]
        )
        assert status == 200
        schemas = document["components"]["schemas"]
        reachable: set[str] = set()
        todo = [r[len(REF_PREFIX_V3) :] for r in refs(document["paths"], set())]
        while todo:
            name = todo.pop()
            if name not in reachable:
                reachable.add(name)
                todo.extend(r[len(REF_PREFIX_V3) :] for r in refs(schemas[name], set()))
        assert set(schemas) == reachable, gv_path
    assert "io.k8s.api.batch.v1.JobSpec" not in schemas  # apps/v1 holds no other group's kinds
    assert "io.k8s.api.core.v1.PodSpec" in schemas  # but what its kinds reference


def _fields(message: bytes) -> list[tuple[int, int | bytes]]:
    """A raw protobuf wire reader for the test: (field number, varint or bytes) pairs."""
    out, i = [], 0
    while i < len(message):
        key, i = _read_varint(message, i)
        field, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, i = _read_varint(message, i)
        elif wire_type == 1:
            value, i = message[i : i + 8], i + 8
        elif wire_type == 2:
            length, i = _read_varint(message, i)
            value, i = message[i : i + length], i + length
        else:
            raise AssertionError(f"unexpected wire type {wire_type}")
        out.append((field, value))
    assert i == len(message)
    return out


def _read_varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, i


def _named(message: bytes, field: int) -> dict[str, bytes]:
    pairs = (dict(_fields(entry)) for f, entry in _fields(message) if f == field)
    return {pair[1].decode(): pair.get(2, b"") for pair in pairs}


async def test_v2_json_and_protobuf(harness):
    status, document = await harness.request(
        "GET", "/openapi/v2", headers={"Accept": "application/json"}
    )
    assert status == 200 and document["swagger"] == "2.0"
    definitions = document["definitions"]
    assert "io.k8s.api.apps.v1.Deployment" in definitions
    # Swagger 2.0 has no oneOf: there both are strings.
    int_or_string = definitions["io.k8s.apimachinery.pkg.util.intstr.IntOrString"]
    assert int_or_string["type"] == "string" and int_or_string["format"] == "int-or-string"
    assert definitions["io.k8s.apimachinery.pkg.api.resource.Quantity"]["type"] == "string"
    for ref in refs(document, set()):
        assert ref.startswith("#/definitions/") and ref[len("#/definitions/") :] in definitions

    media_type = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"
    async with harness.session.get("/openapi/v2", headers={"Accept": media_type}) as response:
        assert response.status == 200
        ct = response.headers["Content-Type"]
        assert ct == "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
        body = await response.read()
    top = dict(_fields(body))
    assert top[1] == b"2.0"
    assert dict(_fields(top[2]))[1] == b"Kubernetes"  # info.title
    schemas = _named(top[9], 1)  # definitions: NamedSchema(name, Schema)
    assert set(schemas) == set(definitions)
    deployment = dict(_fields(schemas["io.k8s.api.apps.v1.Deployment"]))
    assert dict(_fields(deployment[22]))[1] == b"object"  # type
    properties = _named(deployment[25], 1)
    assert set(properties) == set(definitions["io.k8s.api.apps.v1.Deployment"]["properties"])
    spec_ref = dict(_fields(properties["spec"]))[1]
    assert spec_ref == b"#/definitions/io.k8s.api.apps.v1.DeploymentSpec"
    # x-kubernetes-group-version-kind travels as a vendor extension holding YAML (here JSON).
    extensions = {
        k: dict(_fields(v))[2]
        for k, v in _named(schemas["io.k8s.api.apps.v1.Deployment"], 31).items()
    }
    gvk = yaml.safe_load(extensions["x-kubernetes-group-version-kind"])
    assert gvk == [{"group": "apps", "kind": "Deployment", "version": "v1"}]
    paths = _named(top[8], 2)
    assert set(paths) == set(document["paths"])

    status, _ = await harness.request("GET", "/openapi/v2", headers={"Accept": "text/html"})
    assert status == 406


def test_crd_registration_changes_documents_and_lookup():
    registry = builtin_registry()
    openapi = OpenAPI(registry, load_definitions())
    assert openapi.schema_for("stable.example.com", "v1", "CronTab") is None
    registry.add(crontab_info())
    before = openapi.v3_index()["paths"]["apis/stable.example.com/v1"]["serverRelativeURL"]
    openapi.add_crd("stable.example.com", "v1", "CronTab", CRONTAB_SCHEMA)
    after = openapi.v3_index()["paths"]["apis/stable.example.com/v1"]["serverRelativeURL"]
    assert before != after
    schema = openapi.schema_for("stable.example.com", "v1", "CronTab")
    assert schema is not None and openapi.is_custom("stable.example.com", "v1", "CronTab")
    spec = schema.field("spec")
    assert spec is not None and spec.field("cronSpec").type == "string"
    metadata = schema.field("metadata")
    assert metadata is not None and metadata.field("labels") is not None  # ObjectMeta resolved
    name = crd_definition_name("stable.example.com", "v1", "CronTab")
    assert name == "com.example.stable.v1.CronTab"
    document = _served_v3(openapi, "apis/stable.example.com/v1")
    assert name in document["components"]["schemas"]
    assert name + "List" in document["components"]["schemas"]
    openapi.remove_crd("stable.example.com", "v1", "CronTab")
    assert openapi.schema_for("stable.example.com", "v1", "CronTab") is None
    assert not openapi.is_custom("stable.example.com", "v1", "CronTab")


async def kubectl(harness, *args: str) -> tuple[int, str, str]:
    env = dict(os.environ, KUBECONFIG=str(harness.kubeconfig), HOME=str(harness.data_dir))
    process = await asyncio.create_subprocess_exec(
        KUBECTL,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, out.decode(), err.decode()


@pytest.mark.skipif(not os.path.exists(KUBECTL), reason="kubectl is not installed")
async def test_kubectl_explain_builtin_and_custom(harness):
    code, out, err = await kubectl(harness, "explain", "deployment.spec.strategy")
    assert code == 0, err
    assert "FIELD: strategy <DeploymentStrategy>" in out
    assert "rollingUpdate\t<RollingUpdateDeployment>" in out
    # Types whose JSON is a string or a number are named, as kubectl shows them upstream.
    code, out, err = await kubectl(harness, "explain", "pod.spec.containers.resources")
    assert code == 0, err
    assert "limits\t<map[string]Quantity>" in out
    code, out, err = await kubectl(harness, "explain", "pod.spec.containers.readinessProbe.httpGet")
    assert code == 0, err
    assert "port\t<IntOrString> -required-" in out
    harness.server.registry.add(crontab_info())
    harness.server.openapi.add_crd("stable.example.com", "v1", "CronTab", CRONTAB_SCHEMA)
    code, out, err = await kubectl(harness, "explain", "crontab.spec.cronSpec")
    assert code == 0, err
    assert "When to run, in cron format." in out
    assert "stable.example.com" in out


async def test_v3_patch_media_types_and_caching(harness):
    status, index = await harness.request("GET", "/openapi/v3")
    assert status == 200
    url = index["paths"]["apis/apps/v1"]["serverRelativeURL"]
    assert harness.session is not None
    async with harness.session.get(url) as response:
        assert response.status == 200
        assert response.headers["Cache-Control"] == "public, immutable"
        etag = response.headers["ETag"]
        document = await response.json()
    assert etag == '"' + url.rpartition("=")[2] + '"'
    item = document["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]
    # kubectl computes client-side strategic merge patches only when this lists SMP.
    assert "application/strategic-merge-patch+json" in item["patch"]["requestBody"]["content"]
    stale = "/openapi/v3/apis/apps/v1?hash=0123"
    async with harness.session.get(stale, allow_redirects=False) as response:
        assert response.status == 301
        assert response.headers["Location"] == url


async def test_v3_conditional_requests_answer_304(harness):
    """kubectl's HTTP cache revalidates with If-None-Match; a match is a 304 without body,
    keeping the ETag and caching headers, as kube-apiserver's ServeContent answers."""
    assert harness.session is not None
    async with harness.session.get("/openapi/v3") as response:
        assert response.status == 200
        assert response.headers["Cache-Control"] == "no-cache, private"
        index_etag = response.headers["ETag"]
        index = await response.json()
    async with harness.session.get(
        "/openapi/v3", headers={"If-None-Match": index_etag}
    ) as response:
        assert response.status == 304
        assert response.headers["ETag"] == index_etag
        assert await response.read() == b""
    url = index["paths"]["api/v1"]["serverRelativeURL"]
    async with harness.session.get(url) as response:
        etag = response.headers["ETag"]
        assert response.headers["Vary"] == "Accept"
        assert response.headers["Expires"].endswith(" UTC")
    for path in (url, "/openapi/v3/api/v1"):
        for header in (etag, f"W/{etag}", f'"other", {etag}', "*"):
            async with harness.session.get(path, headers={"If-None-Match": header}) as response:
                assert response.status == 304, (path, header)
                assert response.headers["ETag"] == etag
                assert "Content-Type" not in response.headers
                assert await response.read() == b""
    async with harness.session.get(url, headers={"If-None-Match": '"stale"'}) as response:
        assert response.status == 200
        assert response.headers["Cache-Control"] == "public, immutable"
        assert (await response.json())["openapi"].startswith("3.")
    async with harness.session.get("/openapi/v3/api/v1") as response:
        assert response.status == 200
        assert response.headers["Cache-Control"] == "no-cache, private"
        assert response.headers["ETag"] == etag


async def test_v2_conditional_requests_answer_304(harness):
    assert harness.session is not None
    protobuf = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
    async with harness.session.get(
        "/openapi/v2", headers={"Accept": "application/json"}
    ) as response:
        assert response.status == 200
        etag = response.headers["ETag"]
        assert response.headers["Vary"] == "Accept"
        body = await response.read()
    assert etag == '"' + hashlib.sha512(body).hexdigest().upper() + '"'
    async with harness.session.get("/openapi/v2", headers={"Accept": protobuf}) as response:
        assert response.status == 200
        assert response.headers["ETag"] == etag  # the JSON form's hash for both encodings
        assert len(await response.read()) > 0
    for accept in ("application/json", protobuf):
        headers = {"Accept": accept, "If-None-Match": etag}
        async with harness.session.get("/openapi/v2", headers=headers) as response:
            assert response.status == 304
            assert response.headers["ETag"] == etag
            assert await response.read() == b""
    headers = {"Accept": "application/json", "If-None-Match": '"0123"'}
    async with harness.session.get("/openapi/v2", headers=headers) as response:
        assert response.status == 200
        assert (await response.json())["swagger"] == "2.0"


def test_custom_kinds_do_not_offer_strategic_merge_patch():
    registry = builtin_registry()
    registry.add(crontab_info())
    openapi = OpenAPI(registry, load_definitions())
    openapi.add_crd("stable.example.com", "v1", "CronTab", CRONTAB_SCHEMA)
    document = _served_v3(openapi, "apis/stable.example.com/v1")
    item = document["paths"]["/apis/stable.example.com/v1/namespaces/{namespace}/crontabs/{name}"]
    media_types = set(item["patch"]["requestBody"]["content"])
    assert "application/strategic-merge-patch+json" not in media_types
    assert "application/apply-patch+yaml" in media_types


def _served_v3(openapi: OpenAPI, gv_path: str) -> dict:
    """The group-version document as ``GET /openapi/v3/<gv_path>`` serves it."""
    served = openapi.v3_response(f"/openapi/v3/{gv_path}", None)
    assert served is not None and served.status == 200
    return json.loads(served.body)
