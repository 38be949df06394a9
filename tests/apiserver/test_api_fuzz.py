"""What fuzzing the API found, one regression test each, and a small seeded fuzzer.

Every request a client can make must end in a response (never a dropped connection), never a
5xx for the client's own mistake, and every error must be a ``Status`` JSON:

* an unknown field whose name holds a control character is quoted in the ``Warning`` header
  (Go's strconv.Quote, as upstream's strict decoding error does), not written raw;
* JSON nested deeper than the bound (bodies, YAML bodies, every patch type) is a 400/422;
* a lone UTF-16 surrogate escape becomes U+FFFD, as Go's decoder does;
* errors of the HTTP layer (request line or headers too long, a malformed request) and a
  name holding ``%0A`` answer a Status.
"""

from __future__ import annotations

import asyncio
import json
import random

import pytest

from sampan.api.jsonwire import MAX_DEPTH, MAX_OBJECT_DEPTH, OBJECT_DEPTH_ERROR

CONFIGMAPS = "/api/v1/namespaces/default/configmaps"


async def test_unknown_field_with_control_characters_is_quoted_in_the_warning(harness):
    body = {"metadata": {"name": "ctl"}, "bogus\nfield": 1, "tab\tand\x01": 2}
    async with harness.session.post(CONFIGMAPS, json=body) as response:
        assert response.status == 201
        warnings = response.headers.getall("Warning", [])
    assert '299 - "unknown field \\"bogus\\\\nfield\\""' in warnings
    assert '299 - "unknown field \\"tab\\\\tand\\\\x01\\""' in warnings
    status, err = await harness.request(
        "POST",
        CONFIGMAPS,
        {"metadata": {"name": "ctl2"}, "a\r\nb": 1},
        params={"fieldValidation": "Strict"},
    )
    assert status == 400
    assert err["message"] == (
        'ConfigMap in version "v1" cannot be handled as a ConfigMap: strict decoding error: '
        'unknown field "a\\r\\nb"'
    )
    # The connection survived: the next request on the session works.
    status, _ = await harness.request("GET", f"{CONFIGMAPS}/ctl")
    assert status == 200


def deep(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


async def test_deeply_nested_json_is_a_client_error_everywhere(harness):
    status, _ = await harness.request("POST", CONFIGMAPS, {"metadata": {"name": "d"}})
    assert status == 201
    for depth in (MAX_DEPTH + 5, 10_000, 100_000):
        nested = deep(depth)
        body = ('{"metadata":{"name":"deep"},"x":' + nested + "}").encode()
        status, err = await harness.request("POST", CONFIGMAPS, body)
        assert status == 400, err
        assert err["reason"] == "BadRequest"
        assert f"exceeded max depth of {MAX_DEPTH}" in err["message"]
        yaml_body = ("metadata: {name: deep}\nx: " + "[" * depth + "]" * depth).encode()
        status, err = await harness.request(
            "POST", CONFIGMAPS, yaml_body, content_type="application/yaml"
        )
        assert status == 400, err
        for content_type, patch in (
            ("application/merge-patch+json", '{"data":' + nested + "}"),
            ("application/strategic-merge-patch+json", '{"data":' + nested + "}"),
            ("application/json-patch+json", '[{"op":"add","path":"/x","value":' + nested + "}]"),
            (
                "application/apply-patch+yaml",
                '{"apiVersion":"v1","kind":"ConfigMap","x":' + nested + "}",
            ),
        ):
            status, err = await harness.request(
                "PATCH",
                f"{CONFIGMAPS}/d",
                patch.encode(),
                content_type=content_type,
                params={"fieldManager": "t"},
            )
            assert status == 400, (content_type, depth, err)
            assert err["kind"] == "Status"


async def test_depth_grown_by_patches_is_bounded_and_stored_objects_round_trip(harness):
    """Each patch is under the bound but their sum is not: the patched object is refused
    (422). An object at the deepest content allowed reads back as a body the server takes
    again, although its managedFields mirror that content a few levels deeper."""
    revisions = "/apis/apps/v1/namespaces/default/controllerrevisions"
    content = MAX_OBJECT_DEPTH - 1  # the object itself is one more level
    body = {"metadata": {"name": "deep"}, "revision": 1, "data": json.loads(deep(content - 1))}
    status, created = await harness.request("POST", revisions, body)
    assert status == 201, created
    status, current = await harness.request("GET", f"{revisions}/deep")
    current["revision"] = 2
    status, updated = await harness.request("PUT", f"{revisions}/deep", current)
    assert status == 200, updated
    half = MAX_OBJECT_DEPTH // 2
    patch = [{"op": "replace", "path": "/data", "value": json.loads(deep(half))}]
    status, _ = await harness.request(
        "PATCH", f"{revisions}/deep", patch, content_type="application/json-patch+json"
    )
    assert status == 200
    deeper = [{"op": "add", "path": "/data" + "/a" * half, "value": json.loads(deep(half))}]
    status, err = await harness.request(
        "PATCH", f"{revisions}/deep", deeper, content_type="application/json-patch+json"
    )
    assert status == 422, err
    assert err["details"]["causes"][0]["message"].endswith(OBJECT_DEPTH_ERROR)


async def test_lone_surrogates_become_replacement_characters(harness):
    body = (
        b'{"metadata":{"name":"sur","labels":{"x":"a"}},'
        b'"data":{"k":"\\ud800 and \\udc00 and \\ud83d\\ude00"}}'
    )
    status, created = await harness.request("POST", CONFIGMAPS, body)
    assert status == 201, created
    assert created["data"]["k"] == "\ufffd and \ufffd and \U0001f600"
    status, got = await harness.request("GET", f"{CONFIGMAPS}/sur")
    assert got["data"]["k"] == "\ufffd and \ufffd and \U0001f600"
    status, patched = await harness.request(
        "PATCH",
        f"{CONFIGMAPS}/sur",
        b'{"data":{"k2":"\\udfff\\ud800"}}',
        content_type="application/merge-patch+json",
    )
    assert status == 200, patched
    assert patched["data"]["k2"] == "\ufffd\ufffd"
    status, got = await harness.request(
        "POST",
        CONFIGMAPS,
        b'metadata: {name: sur2}\ndata: {k: "\\ud800"}\n',
        content_type="application/yaml",
    )
    assert status == 201 and got["data"]["k"] == "\ufffd"
    status, err = await harness.request(
        "POST", CONFIGMAPS, b'{"metadata":{"name":"n"},"data":{"k":NaN}}'
    )
    assert status == 400 and err["reason"] == "BadRequest"


async def raw_exchange(harness, data: bytes) -> bytes:
    context = harness.ssl_context(client_cert=True)
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", harness.server.port, ssl=context, server_hostname="localhost"
    )
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()


def status_of(raw: bytes) -> tuple[int, str, dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    code = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return code, headers.get("content-type", ""), json.loads(body)


@pytest.mark.parametrize(
    "request_bytes, code",
    [
        (b"GET /api/v1/" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET /api HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n", 431),
        (
            b"GET /api HTTP/1.1\r\nHost: x\r\n"
            + b"".join(b"X-%d: a\r\n" % i for i in range(300))
            + b"\r\n",
            431,
        ),
        (b"G@T /api HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET /api HTTP/9.9\r\nHost: x\r\n\r\n", 400),
        (
            b"POST /api/v1/namespaces/default/configmaps HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Encoding: gzip\r\n"
            b"Content-Length: 5\r\nConnection: close\r\n\r\nabcde",
            400,
        ),
        (
            b"POST /api/v1/namespaces/default/configmaps HTTP/1.1\r\nHost: x\r\n"
            b"Transfer-Encoding: chunked\r\n\r\nZZ\r\nabc\r\n0\r\n\r\n",
            400,
        ),
        (
            b"GET /api/v1/namespaces/default/configmaps/a%0Ab HTTP/1.1\r\n"
            b"Host: x\r\nConnection: close\r\n\r\n",
            404,
        ),
    ],
)
async def test_http_layer_errors_are_status_json(harness, request_bytes, code):
    status, content_type, body = status_of(await raw_exchange(harness, request_bytes))
    assert status == code
    assert content_type.startswith("application/json")
    assert body["kind"] == "Status" and body["status"] == "Failure" and body["code"] == code


# --- the fuzzer ----------------------------------------------------------------------------

KIND_PATHS = [
    ("/api/v1/namespaces/default/pods/f1/status", "v1", "Pod"),
    ("/apis/apps/v1/namespaces/default/deployments/f1/scale", "autoscaling/v1", "Scale"),
    ("/api/v1/namespaces/default/pods/f1/binding", "v1", "Binding"),
    ("/api/v1/namespaces/default/pods/f1/eviction", "policy/v1", "Eviction"),
    (
        "/api/v1/namespaces/default/serviceaccounts/default/token",
        "authentication.k8s.io/v1",
        "TokenRequest",
    ),
    (
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
    ),
    ("/api/v1/namespaces", "v1", "Namespace"),
    ("/api/v1/nodes", "v1", "Node"),
    (
        "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews",
        "authorization.k8s.io/v1",
        "SelfSubjectRulesReview",
    ),
    (
        "/apis/authorization.k8s.io/v1/subjectaccessreviews",
        "authorization.k8s.io/v1",
        "SubjectAccessReview",
    ),
    (
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        "authentication.k8s.io/v1",
        "SelfSubjectReview",
    ),
    ("/apis/networking.k8s.io/v1/namespaces/default/ingresses", "networking.k8s.io/v1", "Ingress"),
    ("/apis/policy/v1/namespaces/default/poddisruptionbudgets", "policy/v1", "PodDisruptionBudget"),
    ("/api/v1/namespaces/default/events", "v1", "Event"),
    ("/apis/coordination.k8s.io/v1/namespaces/default/leases", "coordination.k8s.io/v1", "Lease"),
    ("/api/v1/namespaces/default/configmaps", "v1", "ConfigMap"),
    ("/api/v1/namespaces/default/pods", "v1", "Pod"),
    ("/api/v1/namespaces/default/services", "v1", "Service"),
    ("/api/v1/namespaces/default/secrets", "v1", "Secret"),
    ("/apis/apps/v1/namespaces/default/deployments", "apps/v1", "Deployment"),
    (
        "/apis/rbac.authorization.k8s.io/v1/namespaces/default/roles",
        "rbac.authorization.k8s.io/v1",
        "Role",
    ),
    ("/apis/batch/v1/namespaces/default/cronjobs", "batch/v1", "CronJob"),
    (
        "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
        "authorization.k8s.io/v1",
        "SelfSubjectAccessReview",
    ),
    ("/apis/authentication.k8s.io/v1/tokenreviews", "authentication.k8s.io/v1", "TokenReview"),
]
FIELDS = [
    *"spec data rules metadata status replicas containers ports template selector labels".split(),
    *"annotations name image schedule jobTemplate type stringData binaryData resources".split(),
    *"limits targetPort resourceAttributes token verb target versions names group scope".split(),
    *"schema openAPIV3Schema properties audiences expirationSeconds boundObjectRef".split(),
    *"minAvailable maxUnavailable http paths backend holderIdentity renewTime eventTime".split(),
    *"involvedObject finalizers ownerReferences uid generateName namespace extra groups".split(),
    *"resourceVersion deletionTimestamp matchLabels matchExpressions env volumes".split(),
    "bogus\nfield",
    "\ud800",
    "",
]


def random_value(rng: random.Random, depth: int = 0):
    choice = rng.randrange(12 if depth < 4 else 8)
    if choice == 0:
        return None
    if choice == 1:
        return rng.choice([True, False])
    if choice == 2:
        return rng.choice([0, -1, 1, 2**31, 2**63, -(2**64), 7])
    if choice == 3:
        return rng.choice([0.5, 1e308, -0.0, 3.0])
    if choice in (4, 5):
        return rng.choice(
            ["", "x", "AAA", "100m", "2024-01-01T00:00:00Z", "\ud800", "a\nb", "é", "0x10"]
        )
    if choice in (6, 7):
        return rng.choice([[], {}, [None], {"a": None}, "null"])
    if choice in (8, 9):
        return {rng.choice(FIELDS): random_value(rng, depth + 1) for _ in range(rng.randrange(4))}
    return [random_value(rng, depth + 1) for _ in range(rng.randrange(3))]


def random_object(rng: random.Random, api_version: str, kind: str, name: str) -> dict:
    obj = {"apiVersion": api_version, "kind": kind, "metadata": {"name": name}}
    for _ in range(rng.randrange(1, 5)):
        obj[rng.choice(FIELDS)] = random_value(rng)
    if rng.random() < 0.3:
        obj["metadata"] = random_value(rng)
    return obj


def encode(obj) -> bytes:
    # ensure_ascii keeps lone surrogates as \ud800 escapes (as a fuzzer on the wire sends).
    return json.dumps(obj).encode()


async def test_seeded_fuzz_never_5xx_never_drops(harness):
    rng = random.Random(1332)
    methods = [
        "POST",
        "PUT",
        "PATCH-merge",
        "PATCH-strategic",
        "PATCH-json",
        "PATCH-apply",
        "DELETE",
    ]
    subresources = ("/status", "/scale", "/binding", "/eviction", "/token")
    sent = 0
    for round_ in range(600):
        path, api_version, kind = rng.choice(KIND_PATHS)
        name = f"f{rng.randrange(5)}"
        method = rng.choice(methods)
        obj = random_object(rng, api_version, kind, name)
        headers = {"Content-Type": "application/json"}
        url = path
        verb = method
        data = encode(obj)
        if method != "POST" and not path.endswith(subresources):
            url = f"{path}/{name}"
        if rng.random() < 0.1:
            data = encode(random_value(rng))  # not even an object
        if method.startswith("PATCH"):
            verb = "PATCH"
            flavour = method.partition("-")[2]
            headers["Content-Type"] = {
                "merge": "application/merge-patch+json",
                "strategic": "application/strategic-merge-patch+json",
                "json": "application/json-patch+json",
                "apply": "application/apply-patch+yaml",
            }[flavour]
            if flavour == "json":
                data = encode(
                    [
                        {
                            "op": rng.choice(["add", "replace", "remove", "test", "move"]),
                            "path": rng.choice(
                                ["/spec", "/data/x", "/metadata/labels", "/rules/0", "", "/x~1y"]
                            ),
                            "from": "/metadata",
                            "value": random_value(rng),
                        }
                    ]
                )
        params = {"fieldManager": "fuzz"}
        if rng.random() < 0.2:
            params["fieldValidation"] = rng.choice(["Strict", "Warn", "Ignore"])
        async with harness.session.request(
            verb, url, data=data, headers=headers, params=params
        ) as response:
            raw = await response.read()
            sent += 1
            assert response.status < 500, (round_, verb, url, data[:300], raw[:500])
            if response.status >= 400:
                body = json.loads(raw)
                assert body["kind"] == "Status", raw
    assert sent == 600


VALID = [
    (
        "/api/v1/namespaces/default/pods",
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "p", "labels": {"app": "p"}, "annotations": {"a": "b"}},
            "spec": {
                "containers": [
                    {
                        "name": "c",
                        "image": "busybox",
                        "command": ["sleep"],
                        "env": [{"name": "A", "value": "1"}],
                        "ports": [{"containerPort": 80, "protocol": "TCP"}],
                        "resources": {"limits": {"cpu": "1", "memory": "1Gi"}},
                        "livenessProbe": {"httpGet": {"path": "/", "port": 80}},
                        "securityContext": {"runAsUser": 1000, "privileged": False},
                    }
                ],
                "volumes": [{"name": "v", "emptyDir": {}}],
                "tolerations": [{"key": "k", "operator": "Exists", "tolerationSeconds": 5}],
                "nodeSelector": {"a": "b"},
                "terminationGracePeriodSeconds": 30,
            },
        },
    ),
    (
        "/apis/apps/v1/namespaces/default/deployments",
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "d"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "d"}},
                "strategy": {"rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1}},
                "template": {
                    "metadata": {"labels": {"app": "d"}},
                    "spec": {"containers": [{"name": "c", "image": "busybox"}]},
                },
            },
        },
    ),
    (
        "/api/v1/namespaces/default/services",
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "s"},
            "spec": {
                "selector": {"app": "d"},
                "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
                "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 10}},
            },
        },
    ),
    (
        "/apis/batch/v1/namespaces/default/cronjobs",
        {
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "metadata": {"name": "cj"},
            "spec": {
                "schedule": "*/5 * * * *",
                "jobTemplate": {
                    "spec": {
                        "backoffLimit": 2,
                        "template": {
                            "spec": {
                                "restartPolicy": "Never",
                                "containers": [{"name": "c", "image": "busybox"}],
                            }
                        },
                    }
                },
            },
        },
    ),
    (
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "crb"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "x",
            },
            "subjects": [{"kind": "User", "name": "jane"}],
        },
    ),
]


def leaf_paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from leaf_paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from leaf_paths(child, (*prefix, index))


async def test_seeded_type_confusion_of_valid_objects(harness):
    """Valid objects with one value swapped for a value of another JSON type: each answer
    is a success or a 4xx Status, never a 5xx or a dropped connection."""
    rng = random.Random(2024)
    for round_ in range(400):
        path, valid = rng.choice(VALID)
        obj = json.loads(json.dumps(valid))
        obj["metadata"]["name"] = f"t{round_}"
        target = rng.choice(
            [p for p in leaf_paths(obj) if p and p[0] not in ("apiVersion", "kind")]
        )
        if target == ("metadata", "name"):
            continue
        node = obj
        for step in target[:-1]:
            node = node[step]
        node[target[-1]] = random_value(rng)
        async with harness.session.post(
            path, data=encode(obj), headers={"Content-Type": "application/json"}
        ) as response:
            raw = await response.read()
            assert response.status < 500, (round_, target, obj, raw[:500])
            if response.status >= 400:
                assert json.loads(raw)["kind"] == "Status"


async def test_create_with_an_unparsable_resource_version_is_not_a_500(harness):
    """Upstream refuses a numeric resourceVersion on create with a plain (500) error, but its
    versioner cannot read ``"AAA"``, so that check is skipped and the object is created."""
    body = {"metadata": {"name": "rv", "resourceVersion": "AAA"}}
    status, created = await harness.request("POST", CONFIGMAPS, body)
    assert status == 201, created
    assert created["metadata"]["resourceVersion"] != "AAA"


async def test_yaml_bodies_become_json_values(harness):
    """YAML-only values become JSON as upstream's YAML-to-JSON step makes them: a number key
    is a string, a timestamp or ``yes`` stays a string, ``.inf`` cannot be JSON (400)."""
    body = (
        b"metadata: {name: yml, creationTimestamp: 2024-01-01T00:00:00Z}\n"
        b"data: {1: yes, d: 2024-01-01}\n"
    )
    status, created = await harness.request(
        "POST", CONFIGMAPS, body, content_type="application/yaml"
    )
    assert status == 201, created
    assert created["data"] == {"1": "yes", "d": "2024-01-01"}
    status, err = await harness.request(
        "POST",
        CONFIGMAPS,
        b"metadata: {name: inf}\ndata: {a: .inf}\n",
        content_type="application/yaml",
    )
    assert status == 400 and err["reason"] == "BadRequest", err


def test_http_layer_error_mapping():
    """What the HTTP-layer hook answers for errors that real requests reach rarely: an
    exception that escaped the dispatcher is a 500 InternalError Status."""
    from aiohttp.http_exceptions import BadHttpMessage

    from sampan.apiserver.httperrors import status_for_http_error

    internal = status_for_http_error(500, RuntimeError("boom"))
    assert (internal.code, internal.reason) == (500, "InternalError")
    assert "boom" not in internal.message  # no internals leak to the client
    bad = status_for_http_error(400, BadHttpMessage("Invalid thing:\n  details"))
    assert (bad.code, bad.reason) == (400, "BadRequest")
    assert bad.message == "malformed HTTP request: Invalid thing"


async def test_invalid_utf8_echoed_in_an_error_is_written_as_replacement_characters(harness):
    """Reproducer (fuzz): ``Impersonate-User: \\xed\\xa0\\x80`` made the 403's message hold
    lone surrogates and its encoding a 500. Go's encoder writes each invalid byte as U+FFFD."""
    raw = await raw_exchange(
        harness,
        b"GET /api/v1/namespaces HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Impersonate-User: \xed\xa0\x80\r\n\r\n",
    )
    code, _, body = status_of(raw)
    assert code == 403, body
    assert body["reason"] == "Forbidden"
    assert body["message"].startswith('namespaces is forbidden: User "\ufffd\ufffd\ufffd" cannot')


async def test_invalid_utf8_in_json_strings_becomes_replacement_characters(harness):
    """Reproducer (fuzz): ``{"metadata":{"name":"\\xed\\xa0\\x80"}}`` decoded (surrogatepass)
    into a lone surrogate and its 422 became a 500; ``"\\xff"`` was a 400. Go's decoder
    coerces every invalid byte in a string to U+FFFD, so kube-apiserver stores those."""
    body = b'{"metadata":{"name":"u8"},"data":{"k":"a\xffb","k2":"\xc3\x28\xf0\x28\x8c\xbc"}}'
    status, created = await harness.request("POST", CONFIGMAPS, body)
    assert status == 201, created["message"]
    assert created["data"] == {"k": "a\ufffdb", "k2": "\ufffd(\ufffd(\ufffd\ufffd"}
    status, err = await harness.request("POST", CONFIGMAPS, b'{"metadata":{"name":"\xed\xa0\x80"}}')
    assert status == 422, err
    assert err["details"]["name"] == "\ufffd\ufffd\ufffd"
    status, patched = await harness.request(
        "PATCH",
        f"{CONFIGMAPS}/u8",
        b'{"data":{"k":"\xfe"}}',
        content_type="application/merge-patch+json",
    )
    assert status == 200, patched
    assert patched["data"]["k"] == "\ufffd"
    # Outside a string it is still a syntax error.
    status, err = await harness.request("POST", CONFIGMAPS, b'{"metadata":\xff}')
    assert status == 400 and err["reason"] == "BadRequest"
