"""CustomResourceDefinitions end to end: the real kubectl 1.32 against an in-process server.

The CronTab CRD of the acceptance steps (stable.example.com, schema with a pattern, bounds and
a default, status and scale subresources, printer columns): established and served; unknown
fields rejected by kubectl's default --validate=strict and pruned otherwise; defaults; schema
validation; kubectl get columns; status patches; scale; edit; deleting the CRD deletes its
objects. Plus cluster scope, several versions, name conflicts, restarts and bad schemas.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import shutil

import pytest
import yaml

KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"
GROUP = "stable.example.com"
CRD_NAME = f"crontabs.{GROUP}"
CRONTABS = f"/apis/{GROUP}/v1/namespaces/default/crontabs"
CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
CONCURRENT_PATCHES = 8

pytestmark = pytest.mark.skipif(not os.path.exists(KUBECTL), reason="kubectl is not installed")

CRONTAB_SCHEMA = {
    "type": "object",
    "properties": {
        "spec": {
            "type": "object",
            "properties": {
                "cronSpec": {
                    "type": "string",
                    "pattern": r"^(\d+|\*)(/\d+)?(\s+(\d+|\*)(/\d+)?){4}$",
                },
                "image": {"type": "string"},
                "replicas": {"type": "integer", "minimum": 1, "maximum": 10, "default": 1},
            },
        },
        "status": {
            "type": "object",
            "properties": {
                "replicas": {"type": "integer"},
                "labelSelector": {"type": "string"},
            },
        },
    },
}


def crontab_crd(*, scope: str = "Namespaced") -> dict:
    return copy.deepcopy(_crontab_crd(scope))


def _crontab_crd(scope: str) -> dict:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD_NAME},
        "spec": {
            "group": GROUP,
            "scope": scope,
            "names": {
                "plural": "crontabs",
                "singular": "crontab",
                "kind": "CronTab",
                "shortNames": ["ct"],
            },
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": CRONTAB_SCHEMA},
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.replicas",
                            "statusReplicasPath": ".status.replicas",
                            "labelSelectorPath": ".status.labelSelector",
                        },
                    },
                    "additionalPrinterColumns": [
                        {"name": "Spec", "type": "string", "jsonPath": ".spec.cronSpec"},
                        {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                }
            ],
        },
    }


def crontab(name: str, **spec: object) -> dict:
    return {
        "apiVersion": f"{GROUP}/v1",
        "kind": "CronTab",
        "metadata": {"name": name},
        "spec": {"cronSpec": "* * * * */5", "image": "my-cron-image", **spec},
    }


async def kubectl(harness, *args: str, stdin: bytes | None = None, env: dict | None = None):
    environment = dict(os.environ, KUBECONFIG=str(harness.kubeconfig), HOME=str(harness.data_dir))
    environment.update(env or {})
    process = await asyncio.create_subprocess_exec(
        KUBECTL,
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=environment,
    )
    out, err = await asyncio.wait_for(process.communicate(stdin), 60)
    return process.returncode or 0, out.decode(), err.decode()


async def ok(harness, *args: str, stdin: bytes | None = None, env: dict | None = None) -> str:
    code, out, err = await kubectl(harness, *args, stdin=stdin, env=env)
    assert code == 0, f"kubectl {' '.join(args)} failed ({code}): {err}\n{out}"
    return out


def dump(obj: dict) -> bytes:
    return yaml.safe_dump(obj).encode()


async def establish(harness, crd: dict) -> None:
    await ok(harness, "apply", "-f", "-", stdin=dump(crd))
    await ok(
        harness,
        "wait",
        "--for",
        "condition=established",
        f"crd/{crd['metadata']['name']}",
        "--timeout=10s",
    )


async def test_crontab_acceptance(harness):
    await establish(harness, crontab_crd())
    crd = json.loads(await ok(harness, "get", "crd", CRD_NAME, "-o", "json"))
    conditions = {c["type"]: c for c in crd["status"]["conditions"]}
    assert conditions["NamesAccepted"]["status"] == "True"
    assert conditions["Established"]["reason"] == "InitialNamesAccepted"
    assert crd["status"]["acceptedNames"]["listKind"] == "CronTabList"
    assert crd["status"]["storedVersions"] == ["v1"]
    assert crd["spec"]["names"]["listKind"] == "CronTabList"

    resources = await ok(harness, "api-resources", f"--api-group={GROUP}", "--no-headers")
    assert resources.split() == ["crontabs", "ct", f"{GROUP}/v1", "true", "CronTab"]

    # kubectl explain finds the CRD's schema in the OpenAPI documents.
    explained = await ok(harness, "explain", "crontab.spec.replicas")
    assert "KIND:       CronTab" in explained and "FIELD: replicas <integer>" in explained

    # An unknown field: kubectl's default --validate=strict makes it an error...
    unknown = crontab("my-cron", someRandomField=42)
    code, _, err = await kubectl(harness, "apply", "-f", "-", stdin=dump(unknown))
    assert code != 0
    assert 'strict decoding error: unknown field "spec.someRandomField"' in err
    # ...a warning with --validate=warn (pruned), and silence with --validate=false.
    code, _, err = await kubectl(
        harness, "create", "--validate=warn", "-f", "-", stdin=dump(unknown)
    )
    assert code == 0, err
    assert 'Warning: unknown field "spec.someRandomField"' in err
    stored = json.loads(await ok(harness, "get", "crontab", "my-cron", "-o", "json"))
    assert "someRandomField" not in stored["spec"]
    assert stored["spec"]["replicas"] == 1  # the schema's default
    assert stored["metadata"]["generation"] == 1
    code, _, err = await kubectl(
        harness, "create", "--validate=false", "-f", "-", stdin=dump(crontab("quiet", x=1))
    )
    assert code == 0 and "Warning" not in err, err

    # Printer columns (and the short name).
    table = await ok(harness, "get", "ct")
    lines = table.splitlines()
    assert lines[0].split() == ["NAME", "SPEC", "REPLICAS", "AGE"]
    assert lines[1].split()[:7] == ["my-cron", "*", "*", "*", "*", "*/5", "1"]

    # Schema validation: bounds and pattern, all causes reported.
    code, _, err = await kubectl(
        harness,
        "patch",
        "ct",
        "my-cron",
        "--type=merge",
        "-p",
        json.dumps({"spec": {"replicas": 20, "cronSpec": "bad"}}),
    )
    assert code != 0
    assert 'The CronTab "my-cron" is invalid' in err
    assert (
        "spec.replicas: Invalid value: 20: spec.replicas in body should be less than or equal to 10"
        in err
    )
    assert "spec.cronSpec in body should match" in err

    # The status subresource: a main update cannot touch status, a status patch can.
    await ok(
        harness,
        "patch",
        "ct",
        "my-cron",
        "--type=merge",
        "-p",
        json.dumps({"status": {"replicas": 5}}),
    )
    stored = json.loads(await ok(harness, "get", "ct", "my-cron", "-o", "json"))
    assert "status" not in stored
    await ok(
        harness,
        "patch",
        "ct",
        "my-cron",
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"replicas": 2, "labelSelector": "app=cron"}}),
    )
    stored = json.loads(await ok(harness, "get", "ct", "my-cron", "-o", "json"))
    assert stored["status"] == {"replicas": 2, "labelSelector": "app=cron"}
    assert stored["metadata"]["generation"] == 1  # status changes keep the generation

    # The scale subresource.
    assert "scaled" in await ok(harness, "scale", "ct", "my-cron", "--replicas=3")
    status, scale = await harness.request("GET", f"{CRONTABS}/my-cron/scale")
    assert status == 200
    assert scale["spec"] == {"replicas": 3}
    assert scale["status"] == {"replicas": 2, "selector": "app=cron"}
    stored = json.loads(await ok(harness, "get", "ct", "my-cron", "-o", "json"))
    assert stored["spec"]["replicas"] == 3 and stored["metadata"]["generation"] == 2

    # kubectl edit.
    await ok(
        harness, "edit", "ct", "my-cron", env={"EDITOR": "sed -i s/my-cron-image/other-image/"}
    )
    stored = json.loads(await ok(harness, "get", "ct", "my-cron", "-o", "json"))
    assert stored["spec"]["image"] == "other-image"

    # Deleting the CRD deletes its objects first, then itself.
    await ok(harness, "delete", "crd", CRD_NAME, "--timeout=20s")
    status, _ = await harness.request("GET", f"{CRDS}/{CRD_NAME}")
    assert status == 404
    status, _ = await harness.request("GET", CRONTABS)
    assert status == 404
    await establish(harness, crontab_crd())
    status, listed = await harness.request("GET", CRONTABS)
    assert status == 200 and listed["items"] == []


async def test_crd_terminating_waits_for_object_finalizers(harness):
    await establish(harness, crontab_crd())
    held = crontab("held")
    held["metadata"]["finalizers"] = ["example.com/hold"]
    status, _ = await harness.request("POST", CRONTABS, held)
    assert status == 201
    status, _ = await harness.request("DELETE", f"{CRDS}/{CRD_NAME}")
    assert status == 200
    # The CRD stays (Terminating) while an object of it is held by a finalizer.
    for _ in range(50):
        status, crd = await harness.request("GET", f"{CRDS}/{CRD_NAME}")
        conditions = {c["type"]: c for c in crd["status"].get("conditions", [])}
        if "Terminating" in conditions:
            break
        await asyncio.sleep(0.1)
    assert conditions["Terminating"]["reason"] == "InstanceDeletionInProgress"
    assert crd["metadata"]["deletionTimestamp"]
    status, err = await harness.request("POST", CRONTABS, crontab("late"))
    assert status == 405
    assert "terminating" in err["message"]
    for _ in range(50):  # the controller marks the object right after the condition
        status, obj = await harness.request("GET", f"{CRONTABS}/held")
        if obj["metadata"].get("deletionTimestamp"):
            break
        await asyncio.sleep(0.1)
    assert status == 200 and obj["metadata"]["deletionTimestamp"]
    status, _ = await harness.request(
        "PATCH",
        f"{CRONTABS}/held",
        {"metadata": {"finalizers": None}},
        content_type="application/merge-patch+json",
    )
    assert status == 200
    for _ in range(100):
        status, _ = await harness.request("GET", f"{CRDS}/{CRD_NAME}")
        if status == 404:
            break
        await asyncio.sleep(0.1)
    assert status == 404


async def test_cluster_scope_and_several_versions(harness):
    crd = crontab_crd(scope="Cluster")
    v1 = crd["spec"]["versions"][0]
    v1beta1 = json.loads(json.dumps(v1))
    v1beta1.update(name="v1beta1", storage=False, deprecated=True)
    v1beta1["additionalPrinterColumns"] = []
    crd["spec"]["versions"] = [v1beta1, v1]
    await establish(harness, crd)

    status, created = await harness.request(
        "POST",
        f"/apis/{GROUP}/v1beta1/crontabs",
        {**crontab("c1"), "apiVersion": f"{GROUP}/v1beta1"},
    )
    assert status == 201, created
    assert created["apiVersion"] == f"{GROUP}/v1beta1"
    assert "namespace" not in created["metadata"]
    status, as_v1 = await harness.request("GET", f"/apis/{GROUP}/v1/crontabs/c1")
    assert status == 200 and as_v1["apiVersion"] == f"{GROUP}/v1"
    # Stored in the storage version.
    _, kv = await harness.backend.get(f"/registry/{GROUP}/crontabs/c1")
    assert json.loads(kv.value)["apiVersion"] == f"{GROUP}/v1"
    # Discovery prefers v1; the v1beta1 table has only the default Age column.
    status, group = await harness.request("GET", f"/apis/{GROUP}")
    assert group["preferredVersion"]["version"] == "v1"
    assert [v["version"] for v in group["versions"]] == ["v1", "v1beta1"]
    code, table, err = await kubectl(harness, "get", f"crontabs.v1beta1.{GROUP}")
    assert code == 0, err
    assert table.splitlines()[0].split() == ["NAME", "AGE"]
    # Every request to a deprecated version is warned about.
    assert f"Warning: {GROUP}/v1beta1 CronTab is deprecated; use {GROUP}/v1 CronTab" in err
    table = await ok(harness, "get", "crontabs")
    assert table.splitlines()[0].split() == ["NAME", "SPEC", "REPLICAS", "AGE"]
    status, _ = await harness.request("GET", f"/apis/{GROUP}/v1/namespaces/default/crontabs")
    assert status == 404

    # Stop serving v1beta1: it leaves discovery; v1 keeps working.
    crd["spec"]["versions"][0]["served"] = False
    await ok(harness, "apply", "-f", "-", stdin=dump(crd))
    for _ in range(50):
        status, _ = await harness.request("GET", f"/apis/{GROUP}/v1beta1/crontabs")
        if status == 404:
            break
        await asyncio.sleep(0.1)
    assert status == 404
    status, _ = await harness.request("GET", f"/apis/{GROUP}/v1/crontabs/c1")
    assert status == 200
    # A version still listed in storedVersions cannot be removed.
    crd["spec"]["versions"][0]["storage"] = True
    crd["spec"]["versions"][1]["storage"] = False
    await ok(harness, "apply", "-f", "-", stdin=dump(crd))
    del crd["spec"]["versions"][1]
    code, _, err = await kubectl(harness, "apply", "-f", "-", stdin=dump(crd))
    assert code != 0
    assert 'status.storedVersions[0]: Invalid value: "v1": must appear in spec.versions' in err


async def test_names_conflict_and_restart(harness):
    await establish(harness, crontab_crd())
    clash = crontab_crd()
    clash["metadata"]["name"] = f"crontabz.{GROUP}"
    clash["spec"]["names"] = {"plural": "crontabz", "singular": "crontabz", "kind": "CronTab"}
    status, _ = await harness.request("POST", CRDS, clash)
    assert status == 201
    for _ in range(50):
        _, got = await harness.request("GET", f"{CRDS}/crontabz.{GROUP}")
        conditions = {c["type"]: c for c in (got.get("status") or {}).get("conditions", [])}
        if "NamesAccepted" in conditions:
            break
        await asyncio.sleep(0.1)
    assert conditions["NamesAccepted"]["status"] == "False"
    assert '"CronTab" is already in use' in conditions["NamesAccepted"]["message"]
    assert conditions["Established"]["status"] == "False"
    status, _ = await harness.request("GET", f"/apis/{GROUP}/v1/crontabz")
    assert status == 404

    status, _ = await harness.request("POST", CRONTABS, crontab("survivor"))
    assert status == 201
    await harness.restart()
    # Served again as soon as the restarted server is ready.
    status, got = await harness.request("GET", f"{CRONTABS}/survivor")
    assert status == 200 and got["spec"]["replicas"] == 1


async def test_structural_schema_required(harness):
    crd = crontab_crd()
    del crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["type"]
    code, _, err = await kubectl(harness, "apply", "-f", "-", stdin=dump(crd))
    assert code != 0
    assert (
        "spec.versions[0].schema.openAPIV3Schema.properties[spec].type: Required value: "
        "must not be empty for specified object fields"
    ) in err
    crd = crontab_crd()
    del crd["spec"]["versions"][0]["schema"]
    status, body = await harness.request("POST", CRDS, crd)
    assert status == 422
    assert (
        "spec.versions[0].schema.openAPIV3Schema: Required value: schemas are required"
        in (body["message"])
    )
    crd = crontab_crd()
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"][
        "replicas"
    ]["default"] = "three"
    status, body = await harness.request("POST", CRDS, crd)
    assert status == 422
    assert "properties[replicas].default" in body["message"]
    crd = crontab_crd()
    version = crd["spec"]["versions"][0]
    version["additionalPrinterColumns"][0]["jsonPath"] = "spec..x[?(@.a)]"
    version["subresources"]["scale"]["specReplicasPath"] = ".status.replicas"
    status, body = await harness.request("POST", CRDS, crd)
    assert status == 422
    fields = [c["field"] for c in body["details"]["causes"]]
    assert fields == [
        "spec.versions[0].additionalPrinterColumns[0].JSONPath",
        "spec.versions[0].subresources.scale.specReplicasPath",
    ]


async def test_preserve_unknown_fields_and_nested_defaults(harness):
    crd = crontab_crd()
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    schema["properties"]["spec"]["properties"]["extra"] = {
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
    }
    schema["properties"]["spec"]["properties"]["ports"] = {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {
                "port": {"type": "integer"},
                "protocol": {"type": "string", "default": "TCP"},
            },
        },
    }
    await establish(harness, crd)
    body = crontab("p", extra={"anything": {"goes": [1, 2]}}, ports=[{"port": 80, "junk": 1}])
    status, created = await harness.request(
        "POST", CRONTABS, body, params={"fieldValidation": "Ignore"}
    )
    assert status == 201, created
    assert created["spec"]["extra"] == {"anything": {"goes": [1, 2]}}
    assert created["spec"]["ports"] == [{"port": 80, "protocol": "TCP"}]
    # Strict names the pruned field with its list index.
    status, err = await harness.request(
        "POST",
        CRONTABS,
        crontab("q", ports=[{"port": 1, "junk": 1}]),
        params={"fieldValidation": "Strict"},
    )
    assert status == 400
    assert 'unknown field "spec.ports[0].junk"' in err["message"]


async def test_apply_configuration_is_pruned_and_patches_retry(harness):
    await establish(harness, crontab_crd())
    applied = crontab("ssa", someRandomField=42)
    status, body = await harness.request(
        "PATCH",
        f"{CRONTABS}/ssa",
        json.dumps(applied).encode(),
        content_type="application/apply-patch+yaml",
        params={"fieldManager": "tester", "fieldValidation": "Ignore"},
    )
    assert status == 201, body
    assert "someRandomField" not in body["spec"]
    [entry] = body["metadata"]["managedFields"]
    assert "f:someRandomField" not in entry["fieldsV1"]["f:spec"]
    assert "f:cronSpec" in entry["fieldsV1"]["f:spec"]

    # Merge patches without a resourceVersion never fail because another write came first.
    async def bump(i: int) -> int:
        status, body = await harness.request(
            "PATCH",
            f"{CRONTABS}/ssa",
            {"metadata": {"labels": {f"l{i}": "x"}}},
            content_type="application/merge-patch+json",
        )
        assert status == 200, body
        return status

    statuses = await asyncio.gather(*(bump(i) for i in range(CONCURRENT_PATCHES)))
    assert statuses == [200] * CONCURRENT_PATCHES
    _, final = await harness.request("GET", f"{CRONTABS}/ssa")
    assert len(final["metadata"]["labels"]) == CONCURRENT_PATCHES
    # A resourceVersion the client gives is still a precondition.
    status, _ = await harness.request(
        "PATCH",
        f"{CRONTABS}/ssa",
        {"metadata": {"resourceVersion": "1", "labels": {"late": "x"}}},
        content_type="application/merge-patch+json",
    )
    assert status == 409


async def test_one_file_with_a_crd_and_an_object_of_it(harness):
    """kubectl finds no OpenAPI v3 for the object's kind before the CRD exists, so it validates
    client-side from /openapi/v2 in protobuf: that must be served (it was a 406 and the apply
    failed on "content type"). kubectl then maps every object before it applies any, so the
    object of a kind created in the same run is reported as unmapped and the CRD is created,
    exactly as kubectl 1.32 does against kube-apiserver; the second apply creates the object."""
    both = dump(crontab_crd()) + b"---\n" + dump(crontab("together"))
    code, out, err = await kubectl(harness, "apply", "-f", "-", stdin=both)
    assert "content type" not in err and "error validating" not in err, err
    assert f"customresourcedefinition.apiextensions.k8s.io/{CRD_NAME} created" in out
    if code != 0:
        assert 'no matches for kind "CronTab" in version "stable.example.com/v1"' in err
        assert "ensure CRDs are installed first" in err
    await ok(harness, "wait", "--for", "condition=established", f"crd/{CRD_NAME}")
    out = await ok(harness, "apply", "-f", "-", stdin=both)
    assert f"customresourcedefinition.apiextensions.k8s.io/{CRD_NAME} unchanged" in out
    assert "crontab.stable.example.com/together" in out
    await ok(harness, "get", "crontab", "together")


async def test_conversion_stanza_validation(harness):
    """spec.conversion as kube-apiserver validates it (its internal field paths)."""

    async def refused(conversion: dict) -> list[str]:
        crd = crontab_crd()
        crd["spec"]["conversion"] = conversion
        status, body = await harness.request("POST", CRDS, crd)
        assert status == 422, body
        return [f"{c['field']}: {c['message']}" for c in body["details"]["causes"]]

    assert await refused({"strategy": "Webhook"}) == [
        "spec.conversion.webhookClientConfig: Required value: required when strategy is set "
        "to Webhook",
        "spec.conversion.conversionReviewVersions: Required value",
    ]
    causes = await refused(
        {
            "strategy": "Webhook",
            "webhook": {
                "clientConfig": {"url": "http://convert.example.com/?x=1"},
                "conversionReviewVersions": ["v2", "v2"],
            },
        }
    )
    assert causes == [
        "spec.conversion.webhookClientConfig.url: Invalid value: \"http\": 'https' is the only "
        "allowed URL scheme",
        'spec.conversion.webhookClientConfig.url: Invalid value: "x=1": query parameters are '
        "not permitted in the URL",
        'spec.conversion.conversionReviewVersions[1]: Invalid value: "v2": duplicate version',
        'spec.conversion.conversionReviewVersions: Invalid value: []string{"v2", "v2"}: must '
        "include at least one of v1, v1beta1",
    ], causes
    causes = await refused(
        {
            "strategy": "None",
            "webhook": {
                "clientConfig": {"url": "https://convert.example.com/"},
                "conversionReviewVersions": ["v1"],
            },
        }
    )
    assert causes == [
        "spec.conversion.webhookClientConfig: Forbidden: should not be set when strategy is "
        "not set to Webhook",
        "spec.conversion.conversionReviewVersions: Forbidden: should not be set when strategy "
        "is not set to Webhook",
    ]
    assert await refused({"strategy": "Magic"}) == [
        'spec.conversion.strategy: Unsupported value: "Magic": supported values: "None", "Webhook"'
    ]
    assert await refused(
        {"strategy": "Webhook", "webhook": {"clientConfig": {}, "conversionReviewVersions": ["v1"]}}
    ) == [
        "spec.conversion.webhookClientConfig: Required value: exactly one of url or service is "
        "required"
    ]


async def test_defaults_are_applied_on_read(harness):
    """kube-apiserver defaults objects read from storage with the storage version's schema: a
    ``.status`` default shows right after create (which drops the status), in get, list and
    watch; a default added to the CRD later shows on objects stored before it."""
    crd = crontab_crd()
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    status = schema["properties"]["status"]
    status["default"] = {"observedGeneration": -1}
    status["properties"]["observedGeneration"] = {"type": "integer", "format": "int64"}
    await establish(harness, crd)
    status_code, created = await harness.request("POST", CRONTABS, crontab("read-defaults"))
    assert status_code == 201, created
    assert created["status"] == {"observedGeneration": -1}
    _, got = await harness.request("GET", f"{CRONTABS}/read-defaults")
    assert got["status"] == {"observedGeneration": -1}
    _, listed = await harness.request("GET", CRONTABS)
    assert [item["status"] for item in listed["items"]] == [{"observedGeneration": -1}]
    async with harness.session.get(
        CRONTABS, params={"watch": "true", "resourceVersion": "0", "timeoutSeconds": "1"}
    ) as response:
        events = [json.loads(line) for line in (await response.read()).splitlines() if line]
    assert events[0]["type"] == "ADDED"
    assert events[0]["object"]["status"] == {"observedGeneration": -1}

    # A default the CRD gains later applies to the object stored without it.
    schema["properties"]["spec"]["properties"]["suspend"] = {"type": "boolean", "default": False}
    await ok(harness, "apply", "-f", "-", stdin=dump(crd))
    for _ in range(50):
        _, got = await harness.request("GET", f"{CRONTABS}/read-defaults")
        if "suspend" in got["spec"]:
            break
        await asyncio.sleep(0.1)
    assert got["spec"]["suspend"] is False
    out = await ok(harness, "get", "crontab", "read-defaults", "-o", "jsonpath={.status}")
    assert json.loads(out) == {"observedGeneration": -1}


async def test_unacceptable_accept_on_a_custom_resource_is_a_406(harness):
    """Custom resources list the same media types as built-in ones in their 406 (the CRD
    serializer serves protobuf for Table and PartialObjectMetadata)."""
    await establish(harness, crontab_crd())
    status, err = await harness.request("GET", CRONTABS, headers={"Accept": "text/html"})
    assert (status, err["reason"], err["message"]) == (
        406,
        "NotAcceptable",
        "only the following media types are accepted: "
        "application/json, application/yaml, application/vnd.kubernetes.protobuf",
    )
    status, listed = await harness.request("GET", CRONTABS, headers={"Accept": "*/*"})
    assert status == 200 and listed["kind"] == "CronTabList"
