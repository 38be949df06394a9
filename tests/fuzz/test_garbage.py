"""Garbage on the wire: random bytes as bodies, wrong content types, JSON nested 10,000 deep,
invalid UTF-8 in bodies, names and parameters, and nonsense query parameters
(``limit=-1``, ``resourceVersion=abc``, ``watch=maybe``, selector garbage, ...).

Each answer must be a response (never a dropped connection or a hang), never a 5xx, and an
error must be a Status with its HTTP code. Where kube-apiserver's exact answer matters to
clients, the test pins it (the status code and reason); the rest is left to the general
check.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.conftest import (
    CRD_GROUP,
    CRD_PLURAL,
    FUZZ_NAMESPACE,
    SEED_NAME,
    FuzzAPI,
    check_response,
    fuzz_settings,
)

pytestmark = pytest.mark.fuzz

NS = f"/namespaces/{FUZZ_NAMESPACE}"
COLLECTIONS = [
    f"/api/v1{NS}/configmaps",
    f"/api/v1{NS}/pods",
    "/api/v1/namespaces",
    f"/apis/apps/v1{NS}/deployments",
    f"/apis/batch/v1{NS}/jobs",
    f"/apis/rbac.authorization.k8s.io/v1{NS}/rolebindings",
    f"/apis/{CRD_GROUP}/v1{NS}/{CRD_PLURAL}",
]
ITEMS = [f"{c}/{SEED_NAME}" for c in COLLECTIONS if not c.endswith("/namespaces")]
CONTENT_TYPES = [
    "application/json",
    "application/yaml",
    "application/vnd.kubernetes.protobuf",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/json-patch+json",
    "application/apply-patch+yaml",
    "application/json; charset=latin1",
    "application/json; charset=utf-8; x=y",
    "text/plain",
    "application/xml",
    "multipart/form-data; boundary=x",
    "garbage",
    "application/",
    "/",
    ";;;",
    "",
]
MAX_EXAMPLES = 300


def send(api: FuzzAPI, method: str, path: str, **kwargs: Any) -> requests.Response:
    """One request; a hang or a dropped connection fails with the request in the message."""
    what = f"{method} {path} {kwargs.get('params')} {kwargs.get('headers')}"
    what += f" {kwargs.get('data', b'')[:300]!r}"
    try:
        response = api.request(method, path, stream=True, **kwargs)
    except requests.Timeout as error:
        raise AssertionError(f"hang: {what}") from error
    except requests.ConnectionError as error:
        raise AssertionError(f"dropped connection: {what}") from error
    with response:
        if response.status_code >= 400:
            response.content  # noqa: B018 - read the whole error body
            check_response(response, what)
    # A 2xx watch stream is closed here without reading it to its end.
    return response


@fuzz_settings(MAX_EXAMPLES)
@given(data=st.data())
def test_random_bodies_and_content_types(fuzz_api: FuzzAPI, data: st.DataObject) -> None:
    method = data.draw(st.sampled_from(["POST", "PUT", "PATCH"]), label="method")
    path = data.draw(st.sampled_from(COLLECTIONS if method == "POST" else ITEMS), label="path")
    if method == "PATCH" and data.draw(st.booleans()):
        path += "/status"
    body = data.draw(
        st.one_of(
            st.binary(max_size=300),
            # Almost JSON: a valid document with bytes flipped or cut.
            st.tuples(
                st.sampled_from(
                    [
                        b'{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"g"}}',
                        b'[{"op":"add","path":"/metadata/labels/a","value":"b"}]',
                        b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: g\n",
                        b'{"metadata":{"name":"\xff\xfe"},"data":{"\xc3\x28":"\xed\xa0\x80"}}',
                    ]
                ),
                st.integers(min_value=0, max_value=80),
                st.binary(max_size=4),
            ).map(lambda t: t[0][: t[1]] + t[2] + t[0][t[1] + len(t[2]) :]),
        ),
        label="body",
    )
    content_type = data.draw(st.sampled_from(CONTENT_TYPES), label="content type")
    headers = {"Content-Type": content_type} if content_type else {}
    params = {"fieldManager": "fuzz"} if data.draw(st.booleans()) else {}
    send(fuzz_api, method, path, data=body, headers=headers, params=params)


QUERY_NAMES = [
    "limit",
    "continue",
    "resourceVersion",
    "resourceVersionMatch",
    "watch",
    "allowWatchBookmarks",
    "sendInitialEvents",
    "timeoutSeconds",
    "fieldSelector",
    "labelSelector",
    "pretty",
    "dryRun",
    "fieldManager",
    "fieldValidation",
    "gracePeriodSeconds",
    "propagationPolicy",
    "orphanDependents",
    "force",
    "exact",
    "export",
    "bogus",
]
QUERY_VALUES = st.one_of(
    st.sampled_from(
        [
            "-1",
            "0",
            "abc",
            "maybe",
            "true",
            "1e3",
            "99999999999999999999999",
            "",
            "=",
            "a=",
            "=b",
            "a==b,c!=",
            "a in (",
            "a notin (b,,c)",
            "!",
            "metadata.name=",
            "spec.nodeName==x,,",
            "status.phase!=Running",
            "x.y.z=1",
            "a=b=c",
            "NotOlderThan",
            "Exact",
            "Foreground",
            "All",
            "Strict",
            "\u0000",
            "%ff",
            "a" * 64 + "=b",
        ]
    ),
    st.text(max_size=20),
    st.binary(max_size=10),
)


@fuzz_settings(MAX_EXAMPLES)
@given(data=st.data())
def test_random_query_parameters(fuzz_api: FuzzAPI, data: st.DataObject) -> None:
    method = data.draw(st.sampled_from(["GET", "GET", "DELETE", "GET-item"]), label="method")
    if method == "GET-item":
        method, path = "GET", data.draw(st.sampled_from(ITEMS), label="path")
    else:
        path = data.draw(st.sampled_from(COLLECTIONS), label="path")
    if method == "DELETE":
        # DELETE on a collection is deletecollection: keep it away from the seeds' namespace
        # objects that other fuzz tests need, by using dry run.
        path = data.draw(st.sampled_from(ITEMS), label="item")
    params = data.draw(
        st.dictionaries(st.sampled_from(QUERY_NAMES), QUERY_VALUES, min_size=1, max_size=4),
        label="query",
    )
    if method == "DELETE":
        params["dryRun"] = "All"
    if "watch" in params:
        # Any value but 0/false watches; a 2xx stream is closed unread, this bounds the rest.
        params.setdefault("timeoutSeconds", "1")
    send(fuzz_api, method, path, params=params)


# --- pinned answers, checked against kube-apiserver's ---------------------------------------

CONFIGMAPS = f"/api/v1{NS}/configmaps"


def deep_json(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/yaml",
        "application/merge-patch+json",
        "application/strategic-merge-patch+json",
        "application/json-patch+json",
        "application/apply-patch+yaml",
    ],
)
@pytest.mark.parametrize("path", ITEMS)
def test_json_nested_ten_thousand_deep_is_400(
    fuzz_api: FuzzAPI, path: str, content_type: str
) -> None:
    nested = deep_json(10_000)
    if content_type == "application/json-patch+json":
        body = b'[{"op":"add","path":"/x","value":' + nested + b"}]"
        method = "PATCH"
    elif content_type in ("application/json", "application/yaml"):
        body = b'{"metadata":{"name":"seed"},"x":' + nested + b"}"
        method = "PUT"
    else:
        body = b'{"metadata":{"name":"seed"},"x":' + nested + b"}"
        method = "PATCH"
    response = send(
        fuzz_api,
        method,
        path,
        data=body,
        headers={"Content-Type": content_type},
        params={"fieldManager": "fuzz"},
    )
    if content_type == "application/strategic-merge-patch+json" and CRD_GROUP in path:
        # Custom resources take no strategic merge patch: 415 before the body is read.
        assert response.status_code == 415, response.text
        return
    assert response.status_code == 400, response.text
    assert response.json()["reason"] == "BadRequest"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b'{"metadata":{"name":"u8-a"},"data":{"k":"\xff"}}', 201),
        (b'{"metadata":{"name":"u8-b"},"data":{"\xc3\x28":"v"}}', 422),
        (b'{"metadata":{"name":"\xed\xa0\x80"}}', 422),
        (b'{"metadata":{"name":"u8-c","labels":{"a":"\xf0\x28\x8c\xbc"}}}', 422),
        (b'{"metadata":{"name":"u8-d"},"data":\xff}', 400),
    ],
)
def test_invalid_utf8_in_a_json_body(fuzz_api: FuzzAPI, body: bytes, code: int) -> None:
    """kube-apiserver's decoder coerces invalid UTF-8 inside strings to U+FFFD (then the
    value is stored, or refused by validation: 422); outside a string it is a 400."""
    response = send(
        fuzz_api, "POST", CONFIGMAPS, data=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == code, response.text


@pytest.mark.parametrize(
    ("params", "code"),
    [
        # Upstream reads any boolean other than 0/false as true: a (bounded) watch.
        ({"watch": "maybe", "timeoutSeconds": "1"}, 200),
        ({"allowWatchBookmarks": "maybe"}, 200),
        ({"limit": "abc"}, 400),
        ({"limit": ""}, 400),  # present and empty is parsed, not "no limit"
        ({"timeoutSeconds": ""}, 400),
        ({"limit": "-1"}, 200),
        ({"timeoutSeconds": "abc"}, 400),
        ({"resourceVersion": "abc"}, 400),
        ({"resourceVersionMatch": "bogus", "resourceVersion": "0"}, 422),
        ({"resourceVersionMatch": "Exact"}, 422),
        # Empty terms are skipped, and an empty label value is a valid one.
        ({"fieldSelector": "metadata.name==a,,"}, 200),
        ({"fieldSelector": "no.such.field=1"}, 400),
        ({"labelSelector": "a in ("}, 400),
        ({"labelSelector": "a==b,c!="}, 200),
        ({"labelSelector": "!"}, 400),
        ({"continue": "garbage"}, 400),
    ],
)
def test_bad_list_query_parameters(fuzz_api: FuzzAPI, params: dict, code: int) -> None:
    response = send(fuzz_api, "GET", CONFIGMAPS, params=params)
    assert response.status_code == code, (params, response.text if code != 200 else "")


@pytest.mark.parametrize(
    ("accept", "code"),
    [
        ("text/html", 406),
        ("text/html,application/xhtml+xml,application/xml;q=0.9", 406),
        ("garbage", 406),
        (";;;,,,", 406),
        ("application/json;as=Nope;g=meta.k8s.io;v=v1", 406),
        ("text/html, */*;q=0.8", 200),
        ("application/yaml", 200),
        ("application/vnd.kubernetes.protobuf, application/json", 200),
    ],
)
def test_accept_headers(fuzz_api: FuzzAPI, accept: str, code: int) -> None:
    """An Accept with nothing a resource endpoint serves is a 406 NotAcceptable Status."""
    response = send(fuzz_api, "GET", CONFIGMAPS, headers={"Accept": accept})
    assert response.status_code == code, (accept, response.text if code != 200 else "")
    if code == 406:
        assert response.json()["reason"] == "NotAcceptable"


def test_a_name_with_invalid_utf8_is_a_status(fuzz_api: FuzzAPI) -> None:
    response = send(fuzz_api, "GET", f"{CONFIGMAPS}/%FF%FE")
    assert response.status_code == 404
    response = send(fuzz_api, "DELETE", f"{CONFIGMAPS}/%C3%28")
    assert response.status_code == 404
    response = send(fuzz_api, "GET", CONFIGMAPS, params={"labelSelector": b"a=\xff"})
    assert response.status_code == 400


def test_the_server_still_serves_after_the_garbage(fuzz_api: FuzzAPI) -> None:
    response = fuzz_api.request("GET", f"{CONFIGMAPS}/{SEED_NAME}")
    assert response.status_code in (200, 404), response.text
    body = json.dumps({"metadata": {"name": "after"}, "data": {"a": "b"}}).encode()
    response = fuzz_api.request(
        "POST", CONFIGMAPS, data=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code in (201, 409), response.text
