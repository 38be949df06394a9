"""The API server over real TLS with a real SQLite datastore, spoken to with aiohttp."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

import pytest

from sampan.apiserver.auth.serviceaccount import TokenIssuer

CM_PATH = "/api/v1/namespaces/default/configmaps"


def configmap(name: str, data: dict[str, str] | None = None, **labels: str) -> dict:
    meta: dict = {"name": name}
    if labels:
        meta["labels"] = labels
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data or {}}


def pod(name: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]},
    }


async def test_discovery_documents(harness):
    status, api = await harness.request("GET", "/api")
    assert status == 200 and api["kind"] == "APIVersions" and api["versions"] == ["v1"]
    assert api["serverAddressByClientCIDRs"][0]["clientCIDR"] == "0.0.0.0/0"

    status, groups = await harness.request("GET", "/apis")
    assert status == 200 and groups["kind"] == "APIGroupList"
    names = [g["name"] for g in groups["groups"]]
    assert names[:2] == ["apiregistration.k8s.io", "apps"]
    assert "rbac.authorization.k8s.io" in names and "" not in names
    autoscaling = next(g for g in groups["groups"] if g["name"] == "autoscaling")
    assert autoscaling["preferredVersion"]["version"] == "v2"

    status, core = await harness.request("GET", "/api/v1")
    assert status == 200 and core["kind"] == "APIResourceList" and core["groupVersion"] == "v1"
    by_name = {r["name"]: r for r in core["resources"]}
    pods = by_name["pods"]
    assert pods["namespaced"] and pods["kind"] == "Pod" and "po" in pods["shortNames"]
    assert set(pods["verbs"]) >= {"create", "get", "list", "watch", "delete", "patch"}
    assert pods["storageVersionHash"]
    assert by_name["pods/status"]["verbs"] == ["get", "patch", "update"]
    assert "pods/binding" in by_name

    status, apps = await harness.request("GET", "/apis/apps/v1")
    scale = {r["name"]: r for r in apps["resources"]}["deployments/scale"]
    assert (scale["group"], scale["version"], scale["kind"]) == ("autoscaling", "v1", "Scale")

    status, group = await harness.request("GET", "/apis/apps")
    assert status == 200 and group["kind"] == "APIGroup" and group["name"] == "apps"
    status, _ = await harness.request("GET", "/apis/nope.example.com/v1")
    assert status == 404


async def test_version_and_health_without_credentials(harness):
    async with harness.anonymous_session() as anonymous:
        async with anonymous.get("/version") as response:
            assert response.status == 200
            version = await response.json()
        assert version["major"] == "1" and version["minor"] == "32"
        assert version["gitVersion"].startswith("v1.32.")
        async with anonymous.get("/readyz", params={"verbose": ""}) as response:
            text = await response.text()
            assert response.status == 200, text
        assert "[+]etcd ok" in text and text.strip().endswith("readyz check passed")
        async with anonymous.get("/healthz") as response:
            assert response.status == 200 and await response.text() == "ok"
        async with anonymous.get("/livez/etcd") as response:
            assert response.status == 200
        async with anonymous.get("/readyz", params={"verbose": "", "exclude": "etcd"}) as r:
            excluded = await r.text()
        assert "etcd" not in excluded and "[+]ping ok" in excluded
        async with anonymous.get("/readyz/nope") as response:
            assert response.status == 404
        async with anonymous.get("/api/v1/namespaces") as response:
            assert response.status == 401
            body = await response.json()
        assert body["kind"] == "Status" and body["reason"] == "Unauthorized"
    async with harness.anonymous_session({"Authorization": "Bearer not-a-token"}) as bad:
        async with bad.get("/api/v1/namespaces") as response:
            assert response.status == 401


async def test_service_account_without_roles_is_forbidden(harness):
    status, sa = await harness.request(
        "POST",
        "/api/v1/namespaces/default/serviceaccounts",
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "robot"}},
    )
    assert status == 201, sa
    issuer = TokenIssuer(harness.server.pki.sa_private_key_pem())
    token, _ = issuer.issue("default", "robot", sa["metadata"]["uid"])
    async with harness.anonymous_session({"Authorization": f"Bearer {token}"}) as robot:
        async with robot.get(CM_PATH) as response:
            assert response.status == 403
            body = await response.json()
        assert body["reason"] == "Forbidden"
        assert body["message"] == (
            'configmaps is forbidden: User "system:serviceaccount:default:robot" cannot list '
            'resource "configmaps" in API group "" in the namespace "default"'
        )
        # Discovery is open to every authenticated user (system:discovery).
        async with robot.get("/api/v1") as response:
            assert response.status == 200
        async with robot.post(
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            json={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
        ) as response:
            assert response.status == 201
            review = await response.json()
        user = review["status"]["userInfo"]
        assert user["username"] == "system:serviceaccount:default:robot"
        assert "system:serviceaccounts:default" in user["groups"]


async def test_crud_patch_and_conflict(harness):
    status, created = await harness.request("POST", CM_PATH, configmap("cm1", {"a": "1"}))
    assert status == 201, created
    rv1 = created["metadata"]["resourceVersion"]
    assert created["metadata"]["namespace"] == "default" and created["metadata"]["uid"]

    status, got = await harness.request("GET", f"{CM_PATH}/cm1")
    assert status == 200 and got["data"] == {"a": "1"}

    status, dup = await harness.request("POST", CM_PATH, configmap("cm1"))
    assert status == 409 and dup["reason"] == "AlreadyExists"
    assert dup["message"] == 'configmaps "cm1" already exists'

    update = dict(got, data={"a": "2"})
    status, updated = await harness.request("PUT", f"{CM_PATH}/cm1", update)
    assert status == 200 and updated["data"] == {"a": "2"}
    assert int(updated["metadata"]["resourceVersion"]) > int(rv1)

    stale = dict(got, data={"a": "3"})  # still carries rv1
    status, conflict = await harness.request("PUT", f"{CM_PATH}/cm1", stale)
    assert status == 409 and conflict["reason"] == "Conflict"
    assert "the object has been modified" in conflict["message"]

    status, merged = await harness.request(
        "PATCH",
        f"{CM_PATH}/cm1",
        {"data": {"b": "x"}, "metadata": {"labels": {"k": "v"}}},
        content_type="application/merge-patch+json",
    )
    assert status == 200 and merged["data"] == {"a": "2", "b": "x"}
    assert merged["metadata"]["labels"] == {"k": "v"}

    status, patched = await harness.request(
        "PATCH",
        f"{CM_PATH}/cm1",
        [{"op": "remove", "path": "/data/a"}, {"op": "add", "path": "/data/c", "value": "y"}],
        content_type="application/json-patch+json",
    )
    assert status == 200 and patched["data"] == {"b": "x", "c": "y"}

    status, failed = await harness.request(
        "PATCH",
        f"{CM_PATH}/cm1",
        [{"op": "test", "path": "/data/b", "value": "nope"}],
        content_type="application/json-patch+json",
    )
    assert status == 422, failed
    status, smp = await harness.request(
        "PATCH",
        f"{CM_PATH}/cm1",
        {"data": {}},
        content_type="application/yaml",  # strategic merge and apply are served since part 2
    )
    assert status == 415 and smp["reason"] == "UnsupportedMediaType"

    status, _dry = await harness.request("DELETE", f"{CM_PATH}/cm1", params={"dryRun": "All"})
    assert status == 200
    status, _ = await harness.request("GET", f"{CM_PATH}/cm1")
    assert status == 200
    status, deleted = await harness.request("DELETE", f"{CM_PATH}/cm1")
    assert status == 200, deleted
    status, gone = await harness.request("GET", f"{CM_PATH}/cm1")
    assert status == 404 and gone["message"] == 'configmaps "cm1" not found'


async def test_dry_run_create_writes_nothing(harness):
    status, obj = await harness.request("POST", CM_PATH, configmap("dry"), params={"dryRun": "All"})
    assert status == 201 and obj["metadata"]["name"] == "dry"
    status, _ = await harness.request("GET", f"{CM_PATH}/dry")
    assert status == 404
    status, bad = await harness.request(
        "POST", CM_PATH, configmap("dry"), params={"dryRun": "Sometimes"}
    )
    assert status == 400 and bad["kind"] == "Status"


async def test_list_pagination(harness):
    for i in range(7):
        status, _ = await harness.request("POST", CM_PATH, configmap(f"page-{i}", app="pager"))
        assert status == 201
    names: list[str] = []
    params = {"limit": "3", "labelSelector": "app=pager"}
    pages = 0
    rv = None
    while True:
        status, page = await harness.request("GET", CM_PATH, params=params)
        assert status == 200, page
        assert page["kind"] == "ConfigMapList" and page["apiVersion"] == "v1"
        pages += 1
        names += [item["metadata"]["name"] for item in page["items"]]
        rv = rv or page["metadata"]["resourceVersion"]
        token = page["metadata"].get("continue")
        if not token:
            break
        # remainingItemCount is only given for unfiltered lists (as upstream).
        assert "remainingItemCount" not in page["metadata"]
        params = {"limit": "3", "labelSelector": "app=pager", "continue": token}
    assert pages == 3
    assert names == [f"page-{i}" for i in range(7)]
    status, unfiltered = await harness.request("GET", CM_PATH, params={"limit": "2"})
    assert status == 200 and unfiltered["metadata"]["remainingItemCount"] >= 5
    status, bad = await harness.request("GET", CM_PATH, params={"continue": "garbage"})
    assert status == 400, bad
    status, bad = await harness.request("GET", CM_PATH, params={"labelSelector": "a in (b"})
    assert status == 400, bad


async def test_field_selector_on_pod_phase(harness):
    path = "/api/v1/namespaces/default/pods"
    for name in ("running", "pending"):
        status, created = await harness.request("POST", path, pod(name))
        assert status == 201, created
    status, current = await harness.request("GET", f"{path}/running/status")
    assert status == 200
    current["status"] = {"phase": "Running"}
    status, updated = await harness.request("PUT", f"{path}/running/status", current)
    assert status == 200 and updated["status"]["phase"] == "Running", updated
    status, listed = await harness.request(
        "GET", path, params={"fieldSelector": "status.phase=Running"}
    )
    assert status == 200
    assert [p["metadata"]["name"] for p in listed["items"]] == ["running"]
    status, listed = await harness.request(
        "GET", "/api/v1/pods", params={"fieldSelector": "status.phase!=Running"}
    )
    assert [p["metadata"]["name"] for p in listed["items"]] == ["pending"]
    status, bad = await harness.request("GET", path, params={"fieldSelector": "spec.nope=1"})
    assert status == 400 and "not supported" in bad["message"]


async def test_pod_binding_and_scale(harness):
    path = "/api/v1/namespaces/default/pods"
    status, _ = await harness.request("POST", path, pod("bindme"))
    assert status == 201
    binding = {
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": "bindme"},
        "target": {"apiVersion": "v1", "kind": "Node", "name": "node-a"},
    }
    status, result = await harness.request("POST", f"{path}/bindme/binding", binding)
    assert status == 201, result
    status, bound = await harness.request("GET", f"{path}/bindme")
    assert bound["spec"]["nodeName"] == "node-a"
    status, again = await harness.request("POST", f"{path}/bindme/binding", binding)
    assert status == 409 and "already assigned" in again["message"]

    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]},
            },
        },
    }
    dpath = "/apis/apps/v1/namespaces/default/deployments"
    status, created = await harness.request("POST", dpath, deployment)
    assert status == 201, created
    status, scale = await harness.request("GET", f"{dpath}/web/scale")
    assert status == 200 and scale["kind"] == "Scale"
    assert scale["spec"]["replicas"] == 2 and scale["status"]["selector"] == "app=web"
    status, scaled = await harness.request(
        "PATCH",
        f"{dpath}/web/scale",
        {"spec": {"replicas": 5}},
        content_type="application/merge-patch+json",
    )
    assert status == 200 and scaled["spec"]["replicas"] == 5, scaled
    status, got = await harness.request("GET", f"{dpath}/web")
    assert got["spec"]["replicas"] == 5


async def test_bad_inputs(harness):
    status, bad = await harness.request("POST", CM_PATH, b"{not json")
    assert status == 400 and bad["reason"] == "BadRequest"
    assert "json parse error" in bad["message"]
    status, bad = await harness.request(
        "POST", CM_PATH, b"kind: [", content_type="application/yaml"
    )
    assert status == 400
    status, created = await harness.request(
        "POST",
        CM_PATH,
        b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: from-yaml}\n",
        content_type="application/yaml",
    )
    assert status == 201, created
    big = configmap("big", {"blob": "x" * (3 * 1024 * 1024 + 10)})
    status, too_big = await harness.request("POST", CM_PATH, big)
    assert status == 413 and too_big["reason"] == "RequestEntityTooLarge"
    status, missing = await harness.request("GET", "/api/v1/namespaces/default/widgets")
    assert (
        status == 404 and missing["message"] == "the server could not find the requested resource"
    )
    status, missing = await harness.request("GET", "/apis/example.com/v1/things")
    assert status == 404
    status, not_allowed = await harness.request("PUT", CM_PATH, configmap("x"))
    assert status == 405 and not_allowed["reason"] == "MethodNotAllowed"
    status, not_allowed = await harness.request("POST", "/version", {})
    assert status == 405
    wrong_kind = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}}
    status, bad = await harness.request("POST", CM_PATH, wrong_kind)
    assert status == 400 and "ConfigMap" in bad["message"]
    wrong_version = {"apiVersion": "apps/v1", "kind": "ConfigMap", "metadata": {"name": "s"}}
    status, bad = await harness.request("POST", CM_PATH, wrong_version)
    assert status == 400
    assert bad["message"] == (
        "the API version in the data (apps/v1) does not match the expected API version (v1)"
    )
    wrong_ns = configmap("elsewhere")
    wrong_ns["metadata"]["namespace"] = "kube-system"
    status, bad = await harness.request("POST", CM_PATH, wrong_ns)
    assert status == 400 and bad["message"] == (
        "the namespace of the provided object does not match the namespace sent on the request"
    )
    status, invalid = await harness.request("POST", CM_PATH, configmap("Not_Valid"))
    assert status == 422 and invalid["reason"] == "Invalid", invalid
    assert invalid["details"]["causes"]
    # Nothing half-written: none of the rejected names exist.
    status, listed = await harness.request("GET", CM_PATH)
    names = {item["metadata"]["name"] for item in listed["items"]}
    assert names.isdisjoint({"big", "s", "elsewhere", "Not_Valid"})


JSON_PATCH = "application/json-patch+json"


async def test_json_patch_errors_answer_as_upstream(harness):
    """Reproducer: a JSON patch that did not apply answered the library's words (``testing
    value /data/a failed: test failed``). kube-apiserver answers its generic 422 for every
    such failure (the jsonpatch error is dropped, ``details`` empty), and a document that does
    not decode a 400 with Go's decoder error (strict decode first unless Ignore)."""
    status, _ = await harness.request("POST", CM_PATH, configmap("jp", {"a": "1"}))
    assert status == 201
    rejected = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "the server rejected our request due to an error in our request",
        "reason": "Invalid",
        "details": {},
        "code": 422,
    }
    for ops in (
        [{"op": "replace", "path": "/data/missing", "value": "x"}],
        [{"op": "remove", "path": "/data/missing"}],
        [{"op": "remove", "path": "/spec/x"}],
        [{"op": "test", "path": "/data/a", "value": "2"}],
        [{"op": "frobnicate", "path": "/data/a"}],
        [{"path": "/data/a"}],
        [{"op": "add", "path": "/data/b", "value": "2"}, {"op": "test", "path": "/x", "value": 1}],
    ):
        status, err = await harness.request("PATCH", f"{CM_PATH}/jp", ops, content_type=JSON_PATCH)
        assert (status, err) == (422, rejected), ops
    for body, params, message in (
        (
            {"op": "add"},
            None,
            "error decoding patch: json: cannot unmarshal object into Go value of type "
            "[]handlers.jsonPatchOp",
        ),
        (
            [1],
            {"fieldValidation": "Strict"},
            "error decoding patch: json: cannot unmarshal number into Go value of type "
            "handlers.jsonPatchOp",
        ),
        (
            [{"op": 5, "path": "/data/a"}],
            None,
            "error decoding patch: json: cannot unmarshal number into Go struct field "
            "jsonPatchOp.op of type string",
        ),
        (
            {"op": "add"},
            {"fieldValidation": "Ignore"},
            "json: cannot unmarshal object into Go value of type jsonpatch.Patch",
        ),
        (
            ["x"],
            {"fieldValidation": "Ignore"},
            "json: cannot unmarshal string into Go value of type jsonpatch.Operation",
        ),
    ):
        status, err = await harness.request(
            "PATCH", f"{CM_PATH}/jp", body, content_type=JSON_PATCH, params=params
        )
        assert (status, err["reason"], err["message"]) == (400, "BadRequest", message), body
    status, got = await harness.request("GET", f"{CM_PATH}/jp")
    assert got["data"] == {"a": "1"}  # nothing half-applied


async def test_bad_list_query_parameters_answer_as_upstream(harness):
    """Reproducers (fuzz): ``?timeoutSeconds=abc`` on a list was ignored (200), ``?limit=``
    read as no limit, ``?resourceVersionMatch=bogus`` a 400, ``?watch=maybe`` a list.
    kube-apiserver decodes
    every list option (Go's ParseInt: 400 with its error text), validates them as
    ``ListOptions`` (422), and reads any boolean other than 0/false as true."""
    for params, message in (
        ({"limit": "abc"}, 'strconv.ParseInt: parsing "abc": invalid syntax'),
        ({"timeoutSeconds": "abc"}, 'strconv.ParseInt: parsing "abc": invalid syntax'),
        ({"limit": "1_0"}, 'strconv.ParseInt: parsing "1_0": invalid syntax'),
        ({"limit": ""}, 'strconv.ParseInt: parsing "": invalid syntax'),
        ({"timeoutSeconds": ""}, 'strconv.ParseInt: parsing "": invalid syntax'),
        ({"limit": "9" * 20}, f'strconv.ParseInt: parsing "{"9" * 20}": value out of range'),
    ):
        status, err = await harness.request("GET", CM_PATH, params=params)
        assert (status, err["reason"], err["message"]) == (400, "BadRequest", message), params
    status, err = await harness.request(
        "GET", CM_PATH, params={"resourceVersion": "0", "resourceVersionMatch": "bogus"}
    )
    assert status == 422 and err["reason"] == "Invalid"
    message = 'Unsupported value: "bogus": supported values: "Exact", "NotOlderThan", ""'
    assert err["message"] == (
        f'ListOptions.meta.k8s.io "" is invalid: resourceVersionMatch: {message}'
    )
    assert err["details"] == {
        "group": "meta.k8s.io",
        "kind": "ListOptions",
        "causes": [
            {
                "reason": "FieldValueNotSupported",
                "message": message,
                "field": "resourceVersionMatch",
            }
        ],
    }
    status, err = await harness.request(
        "GET", CM_PATH, params={"resourceVersionMatch": "NotOlderThan"}
    )
    assert status == 422 and err["details"]["causes"][0]["reason"] == "FieldValueForbidden"
    status, _ = await harness.request("POST", CM_PATH, configmap("watched"))
    assert status == 201
    assert harness.session is not None
    for value in ("maybe", "", "True"):
        async with harness.session.get(
            CM_PATH, params={"watch": value, "timeoutSeconds": "1"}
        ) as response:
            assert response.status == 200
            line = await asyncio.wait_for(response.content.readline(), 10)
            assert json.loads(line)["type"] in ("ADDED", "BOOKMARK"), line
    for value in ("0", "false", "FALSE"):
        status, listed = await harness.request("GET", CM_PATH, params={"watch": value})
        assert status == 200 and listed["kind"] == "ConfigMapList"


async def test_namespace_lifecycle(harness):
    status, missing = await harness.request(
        "POST", "/api/v1/namespaces/ghost/configmaps", configmap("c")
    )
    assert status == 404 and missing["message"] == 'namespaces "ghost" not found'
    status, _ = await harness.request(
        "POST",
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "doomed"}},
    )
    assert status == 201
    status, terminating = await harness.request("DELETE", "/api/v1/namespaces/doomed")
    assert status == 200, terminating
    assert terminating["status"]["phase"] == "Terminating"
    status, refused = await harness.request(
        "POST", "/api/v1/namespaces/doomed/configmaps", configmap("c")
    )
    assert status == 403 and refused["message"] == (
        'configmaps "c" is forbidden: unable to create new content in namespace doomed '
        "because it is being terminated"
    )
    for name in ("default", "kube-system", "kube-public", "kube-node-lease"):
        status, immortal = await harness.request("DELETE", f"/api/v1/namespaces/{name}")
        assert status == 403
        assert immortal["message"] == (
            f'namespaces "{name}" is forbidden: this namespace may not be deleted'
        )


async def test_bootstrap_objects(harness):
    status, svc = await harness.request("GET", "/api/v1/namespaces/default/services/kubernetes")
    assert status == 200 and svc["spec"]["clusterIP"] == "10.43.0.1"
    assert svc["spec"]["ports"][0]["port"] == 443
    status, ep = await harness.request("GET", "/api/v1/namespaces/default/endpoints/kubernetes")
    assert ep["subsets"][0]["addresses"][0]["ip"] == "127.0.0.1"
    assert ep["subsets"][0]["ports"][0]["port"] == harness.server.port
    status, _role = await harness.request(
        "GET", "/apis/rbac.authorization.k8s.io/v1/clusterroles/cluster-admin"
    )
    assert status == 200
    status, namespaces = await harness.request("GET", "/api/v1/namespaces")
    names = {n["metadata"]["name"] for n in namespaces["items"]}
    assert names >= {"default", "kube-system", "kube-public", "kube-node-lease"}
    # The kube-system Role that metrics-server's (and every aggregated API's) manifests bind to.
    status, _role = await harness.request(
        "GET",
        "/apis/rbac.authorization.k8s.io/v1/namespaces/kube-system/roles/"
        "extension-apiserver-authentication-reader",
    )
    assert status == 200


async def test_table_output(harness):
    status, _ = await harness.request("POST", CM_PATH, configmap("tabled", {"a": "1"}))
    accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
    status, table = await harness.request("GET", CM_PATH, headers={"Accept": accept})
    assert status == 200 and table["kind"] == "Table"
    assert next(c["name"] for c in table["columnDefinitions"]) == "Name"
    row = next(r for r in table["rows"] if r["cells"][0] == "tabled")
    assert row["object"]["kind"] == "PartialObjectMetadata"


NOT_ACCEPTABLE = (
    "only the following media types are accepted: "
    "application/json, application/yaml, application/vnd.kubernetes.protobuf"
)


async def test_unacceptable_accept_is_a_406(harness):
    """Reproducer: ``Accept: text/html`` on a get/list answered JSON. kube-apiserver
    negotiates the answer's media type first (before looking the object up) and answers
    406 NotAcceptable when no range names one it serves; ``*/*`` and any range with one
    it serves still answer JSON."""
    for path in (CM_PATH, f"{CM_PATH}/absent"):
        for accept in ("text/html", "text/plain, image/*", "application/xml"):
            status, err = await harness.request("GET", path, headers={"Accept": accept})
            assert (status, err["reason"], err["message"], err["code"]) == (
                406,
                "NotAcceptable",
                NOT_ACCEPTABLE,
                406,
            ), (path, accept)
    bogus_table = "application/json;as=Table;v=v1;g=example.com"
    status, err = await harness.request("GET", CM_PATH, headers={"Accept": bogus_table})
    assert (status, err["message"]) == (406, NOT_ACCEPTABLE)
    for accept in ("text/html, */*;q=0.8", "application/*", f"{bogus_table}, application/json"):
        status, listed = await harness.request("GET", CM_PATH, headers={"Accept": accept})
        assert status == 200 and listed["kind"] == "ConfigMapList", accept


async def test_watch_stream_raw(harness):
    _status, listed = await harness.request("GET", CM_PATH)
    rv = listed["metadata"]["resourceVersion"]
    assert harness.session is not None
    async with harness.session.get(
        CM_PATH, params={"watch": "1", "resourceVersion": rv, "timeoutSeconds": "30"}
    ) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("application/json")
        await harness.request("POST", CM_PATH, configmap("w1"))
        await harness.request(
            "PATCH",
            f"{CM_PATH}/w1",
            {"data": {"x": "1"}},
            content_type="application/merge-patch+json",
        )
        await harness.request("DELETE", f"{CM_PATH}/w1")
        events = []
        async with asyncio.timeout(10):
            while len(events) < 3:
                line = await response.content.readline()
                assert line, "stream ended early"
                events.append(json.loads(line))
    assert [e["type"] for e in events] == ["ADDED", "MODIFIED", "DELETED"]
    assert all(e["object"]["metadata"]["name"] == "w1" for e in events)


async def test_watch_streams_in_order_direct_and_batched(harness):
    """Several watchers of a burst of changes with large objects: the idle ones get them
    written by the fan-out, the one that reads nothing until the end (its connection backs
    up) through its queue in batches; every stream has every event once, in order."""
    _status, listed = await harness.request("GET", CM_PATH)
    rv = listed["metadata"]["resourceVersion"]
    assert harness.session is not None
    params = {"watch": "1", "resourceVersion": rv, "timeoutSeconds": "60"}
    big = "x" * 20_000
    count = 40
    async with contextlib.AsyncExitStack() as stack:
        streams = [
            await stack.enter_async_context(harness.session.get(CM_PATH, params=params))
            for _ in range(3)
        ]
        assert all(r.status == 200 for r in streams)
        await harness.request("POST", CM_PATH, configmap("burst"))
        for i in range(count):
            await harness.request(
                "PATCH",
                f"{CM_PATH}/burst",
                {"data": {"i": str(i), "big": big}},
                content_type="application/merge-patch+json",
            )
        for response in streams:
            events = []
            async with asyncio.timeout(30):
                while len(events) < count + 1:
                    line = await response.content.readline()
                    assert line, "stream ended early"
                    events.append(json.loads(line))
            assert [e["type"] for e in events] == ["ADDED"] + ["MODIFIED"] * count
            assert [e["object"]["data"].get("i") for e in events[1:]] == [
                str(i) for i in range(count)
            ]
            rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
            assert rvs == sorted(set(rvs))


async def test_watch_ends_on_server_stop(harness):
    assert harness.session is not None
    async with harness.session.get(CM_PATH, params={"watch": "1"}) as response:
        assert response.status == 200
        stopper = asyncio.create_task(harness.server.stop())
        async with asyncio.timeout(10):
            await response.read()  # the stream ends cleanly
        await stopper
    harness.server = None


async def test_openapi_v3_index_lists_field_validation(harness):
    status, index = await harness.request("GET", "/openapi/v3")
    assert status == 200 and "api/v1" in index["paths"] and "apis/apps/v1" in index["paths"]
    url = index["paths"]["api/v1"]["serverRelativeURL"]
    status, document = await harness.request("GET", url)
    assert status == 200
    item = document["paths"]["/api/v1/namespaces/{namespace}/configmaps/{name}"]
    assert item["patch"]["x-kubernetes-group-version-kind"]["kind"] == "ConfigMap"
    assert "fieldValidation" in {p["name"] for p in item["patch"]["parameters"]}
    status, _ = await harness.request("GET", "/openapi/v3/apis/nope/v1")
    assert status == 404


async def test_impersonation(harness):
    jane = {"Impersonate-User": "jane", "Impersonate-Group": "devs"}
    status, review = await harness.request(
        "POST",
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
        headers=jane,
    )
    assert status == 201
    assert review["status"]["userInfo"]["username"] == "jane"
    assert review["status"]["userInfo"]["groups"] == ["devs", "system:authenticated"]
    status, denied = await harness.request("GET", CM_PATH, headers=jane)
    assert status == 403 and 'User "jane" cannot list' in denied["message"]
    status, access = await harness.request(
        "POST",
        "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
        {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": {"verb": "list", "resource": "configmaps"}},
        },
    )
    assert status == 201 and access["status"]["allowed"] is True
    # A service account without roles may not impersonate anyone.
    status, sa = await harness.request(
        "POST",
        "/api/v1/namespaces/default/serviceaccounts",
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "imp"}},
    )
    token, _ = TokenIssuer(harness.server.pki.sa_private_key_pem()).issue(
        "default", "imp", sa["metadata"]["uid"]
    )
    headers = {"Authorization": f"Bearer {token}", "Impersonate-User": "system:admin"}
    async with harness.anonymous_session(headers) as robot:
        async with robot.get("/api/v1/namespaces") as response:
            assert response.status == 403
            body = await response.json()
    assert 'cannot impersonate resource "users"' in body["message"]


async def test_events_served_in_both_versions(harness):
    event = {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {"name": "ev1"},
        "eventTime": "2026-01-01T00:00:00.000000Z",
        "reportingController": "sampan.io/test",
        "reportingInstance": "test-1",
        "action": "Testing",
        "reason": "Tested",
        "type": "Normal",
        "note": "hello",
        "regarding": {"kind": "Pod", "namespace": "default", "name": "p"},
    }
    status, created = await harness.request(
        "POST", "/apis/events.k8s.io/v1/namespaces/default/events", event
    )
    assert status == 201, created
    assert created["apiVersion"] == "events.k8s.io/v1" and created["note"] == "hello"
    status, core = await harness.request("GET", "/api/v1/namespaces/default/events/ev1")
    assert status == 200 and core["apiVersion"] == "v1" and core["message"] == "hello"
    assert core["involvedObject"]["name"] == "p"
    status, listed = await harness.request("GET", "/apis/events.k8s.io/v1/events")
    assert listed["kind"] == "EventList" and listed["apiVersion"] == "events.k8s.io/v1"
    assert [e["note"] for e in listed["items"]] == ["hello"]


async def _read_events(response, count: int) -> list[dict]:
    events = []
    async with asyncio.timeout(10):
        while len(events) < count:
            line = await response.content.readline()
            assert line, "stream ended early"
            events.append(json.loads(line))
    return events


async def test_watch_list_bookmark_table_and_expired(harness):
    await harness.request("POST", CM_PATH, configmap("wl", {"a": "1"}))
    params = {
        "watch": "1",
        "allowWatchBookmarks": "true",
        "sendInitialEvents": "true",
        "resourceVersionMatch": "NotOlderThan",
        "labelSelector": "",
        "fieldSelector": "metadata.name=wl",
    }
    assert harness.session is not None
    async with harness.session.get(CM_PATH, params=params) as response:
        added, bookmark = await _read_events(response, 2)
    assert added["type"] == "ADDED" and added["object"]["metadata"]["name"] == "wl"
    assert bookmark["type"] == "BOOKMARK"
    annotations = bookmark["object"]["metadata"]["annotations"]
    assert annotations == {"k8s.io/initial-events-end": "true"}

    accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
    async with harness.session.get(CM_PATH, params=params, headers={"Accept": accept}) as response:
        added, bookmark = await _read_events(response, 2)
    assert added["object"]["kind"] == "Table"
    assert added["object"]["columnDefinitions"]
    assert added["object"]["rows"][0]["cells"][0] == "wl"
    assert bookmark["object"]["kind"] == "Table" and not bookmark["object"]["rows"]
    assert bookmark["object"]["metadata"]["annotations"] == annotations

    # After a restart the watch cache's history starts at the current revision: RV 1 is
    # too old, and the stream says so with an ERROR event (as kube-apiserver does).
    await harness.restart()
    assert harness.session is not None
    async with harness.session.get(
        CM_PATH, params={"watch": "1", "resourceVersion": "1"}
    ) as response:
        (expired,) = await _read_events(response, 1)
    assert expired["type"] == "ERROR"
    assert expired["object"]["code"] == 410 and expired["object"]["reason"] == "Expired"


async def test_computed_kinds(harness):
    status, rules = await harness.request(
        "POST",
        "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews",
        {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectRulesReview",
            "spec": {"namespace": "default"},
        },
    )
    assert status == 201, rules
    assert any("*" in r["verbs"] for r in rules["status"]["resourceRules"])

    status, sa = await harness.request(
        "POST",
        "/api/v1/namespaces/default/serviceaccounts",
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "reviewed"}},
    )
    token, _ = TokenIssuer(harness.server.pki.sa_private_key_pem()).issue(
        "default", "reviewed", sa["metadata"]["uid"]
    )
    review = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview"}
    status, good = await harness.request(
        "POST", "/apis/authentication.k8s.io/v1/tokenreviews", {**review, "spec": {"token": token}}
    )
    assert status == 201 and good["status"]["authenticated"] is True
    assert good["status"]["user"]["username"] == "system:serviceaccount:default:reviewed"
    status, bad = await harness.request(
        "POST", "/apis/authentication.k8s.io/v1/tokenreviews", {**review, "spec": {"token": "x"}}
    )
    assert status == 201 and bad["status"]["authenticated"] is False

    status, statuses = await harness.request("GET", "/api/v1/componentstatuses")
    assert status == 200 and statuses["kind"] == "ComponentStatusList"
    assert statuses["items"][0]["conditions"][0]["status"] == "True"

    pods = "/api/v1/namespaces/default/pods"
    status, _ = await harness.request("POST", pods, pod("legacy"))
    assert status == 201
    binding = {
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": "legacy"},
        "target": {"kind": "Node", "name": "node-b"},
    }
    status, _ = await harness.request("POST", "/api/v1/namespaces/default/bindings", binding)
    assert status == 201
    status, bound = await harness.request("GET", f"{pods}/legacy")
    assert bound["spec"]["nodeName"] == "node-b"
    conditions = {c["type"]: c["status"] for c in bound["status"]["conditions"]}
    assert conditions["PodScheduled"] == "True"


async def test_resource_names_rule_allows_a_list_pinned_to_that_name(harness):
    rbac = "/apis/rbac.authorization.k8s.io/v1/namespaces/default"
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "one-cm"},
        "rules": [
            {
                "apiGroups": [""],
                "resources": ["configmaps"],
                "resourceNames": ["allowed"],
                "verbs": ["get", "list", "watch"],
            }
        ],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "one-cm"},
        "subjects": [{"kind": "ServiceAccount", "name": "narrow", "namespace": "default"}],
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "one-cm"},
    }
    for path, body in ((f"{rbac}/roles", role), (f"{rbac}/rolebindings", binding)):
        status, created = await harness.request("POST", path, body)
        assert status == 201, created
    status, sa = await harness.request(
        "POST",
        "/api/v1/namespaces/default/serviceaccounts",
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "narrow"}},
    )
    await harness.request("POST", CM_PATH, configmap("allowed"))
    token, _ = TokenIssuer(harness.server.pki.sa_private_key_pem()).issue(
        "default", "narrow", sa["metadata"]["uid"]
    )
    async with harness.anonymous_session({"Authorization": f"Bearer {token}"}) as narrow:
        async with asyncio.timeout(10):
            while True:  # the RBAC cache follows the writes above
                async with narrow.get(f"{CM_PATH}/allowed") as response:
                    if response.status == 200:
                        break
                await asyncio.sleep(0.05)
        async with narrow.get(CM_PATH, params={"fieldSelector": "metadata.name=allowed"}) as r:
            assert r.status == 200
            assert [i["metadata"]["name"] for i in (await r.json())["items"]] == ["allowed"]
        async with narrow.get(CM_PATH) as response:
            assert response.status == 403
        async with narrow.get(f"{CM_PATH}/other") as response:
            assert response.status == 403


async def test_put_creates_only_where_upstream_allows_it(harness):
    endpoints = {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": "put-created"},
        "subsets": [{"addresses": [{"ip": "10.0.0.9"}], "ports": [{"port": 80}]}],
    }
    path = "/api/v1/namespaces/default/endpoints/put-created"
    status, created = await harness.request("PUT", path, endpoints)
    assert status == 201, created
    status, updated = await harness.request("PUT", path, created)
    assert status == 200 and updated["metadata"]["uid"] == created["metadata"]["uid"]
    status, missing = await harness.request(
        "PUT", f"{CM_PATH}/put-missing", configmap("put-missing")
    )
    assert status == 404 and missing["reason"] == "NotFound"


async def test_start_fails_cleanly_when_the_port_is_taken(tmp_path):
    from sampan.apiserver import APIServer, APIServerOptions
    from sampan.datastore import open_backend

    backend = open_backend("", tmp_path)
    await backend.start()
    try:
        first = APIServer(
            APIServerOptions(
                tls_dir=tmp_path / "tls", hostname="localhost", bind_address="127.0.0.1", port=0
            ),
            backend,
        )
        await first.start()
        # A second server on the same port cannot listen: start fails and leaves nothing.
        second = APIServer(
            APIServerOptions(
                tls_dir=tmp_path / "tls",
                hostname="localhost",
                bind_address="127.0.0.1",
                port=first.port,
            ),
            backend,
        )
        tasks_before = len(asyncio.all_tasks())
        with pytest.raises(OSError):
            await second.start()
        assert not second.ready.is_set()
        assert len(asyncio.all_tasks()) <= tasks_before  # its storage stopped again
        await first.stop()
    finally:
        await backend.close()


async def test_client_gone_mid_body_is_no_internal_error(harness, caplog):
    """Reproducer: a client that closes its connection in the middle of a request body
    (Content-Length larger than what it sent) was logged as an internal error with a
    traceback. kube-apiserver logs nothing for it: at most a debug line here, no error, no
    500, and the server keeps serving."""
    from urllib.parse import urlsplit

    url = urlsplit(harness.url)
    for method, path in (("POST", CM_PATH), ("PUT", f"{CM_PATH}/half"), ("PATCH", f"{CM_PATH}/h")):
        with caplog.at_level("DEBUG"):
            _, writer = await asyncio.open_connection(
                url.hostname, url.port, ssl=harness.ssl_context(client_cert=True)
            )
            head = (
                f"{method} {path} HTTP/1.1\r\nHost: {url.netloc}\r\n"
                "Content-Type: application/merge-patch+json\r\nContent-Length: 1000\r\n\r\n"
            )
            writer.write(head.encode() + b'{"metadata": {"na')
            await writer.drain()
            writer.close()
            await writer.wait_closed()
            # The server has handled the abandoned request once a new one is answered.
            for _ in range(50):
                if any(r.name.startswith("sampan") for r in caplog.records):
                    break
                status, _ = await harness.request("GET", "/version")
                assert status == 200
                await asyncio.sleep(0.02)
    loud = [
        r
        for r in caplog.records
        if r.levelno > logging.INFO or (r.name.startswith("sampan") and r.levelno > logging.DEBUG)
    ]
    assert not loud, [r.getMessage() for r in loud]
    assert not any(r.exc_info for r in caplog.records if r.name.startswith("sampan"))
