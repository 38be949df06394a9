"""Shared pieces of the fuzz suite: one API server per module on a thread of its own, a
``requests`` session holding the admin certificate, the served OpenAPI v3 documents, and the
check every response must pass.

The server (``tests/support/apiserver.py``'s harness: real SQLite, real TLS, real socket) runs
its event loop on a background thread because Schemathesis and Hypothesis drive synchronous
tests; each test talks to it over the socket only. The server is seeded with one object of
every fuzzed kind (named ``seed`` in namespace ``fuzz``) and a CustomResourceDefinition
(``widgets.fuzz.sampan.test``) so generated reads, updates, patches and deletes reach real
objects, not only 404s.

Budget: every fuzz test uses ``FUZZ_SETTINGS`` (derandomized, no example database, a fixed
``max_examples``), so a run is reproducible and the whole suite stays within a few minutes on
two cores.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, Phase, settings

from tests.support.apiserver import ApiServerHarness

# kube-apiserver sends up to 4096 characters of warnings per response; short ones (unknown
# fields under fieldValidation=Warn) make ~200 Warning headers, past http.client's 100.
MAX_RESPONSE_HEADERS = 1000
# A request that takes longer than this is a hang (connect, read) in seconds.
REQUEST_TIMEOUT_S = (5.0, 30.0)
SERVER_START_TIMEOUT_S = 120.0
FUZZ_NAMESPACE = "fuzz"
SEED_NAME = "seed"
CRD_GROUP = "fuzz.sampan.test"
CRD_PLURAL = "widgets"

FUZZ_SETTINGS = dict(
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=False,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)


def fuzz_settings(max_examples: int) -> settings:
    return settings(max_examples=max_examples, **FUZZ_SETTINGS)


WIDGET_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"{CRD_PLURAL}.{CRD_GROUP}"},
    "spec": {
        "group": CRD_GROUP,
        "scope": "Namespaced",
        "names": {"plural": CRD_PLURAL, "singular": "widget", "kind": "Widget"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["size"],
                                "properties": {
                                    "size": {"type": "integer", "minimum": 0, "maximum": 100},
                                    "color": {"type": "string", "enum": ["red", "blue"]},
                                    "tags": {
                                        "type": "array",
                                        "items": {"type": "string"},
                                        "x-kubernetes-list-type": "set",
                                    },
                                    "parts": {
                                        "type": "array",
                                        "x-kubernetes-list-type": "map",
                                        "x-kubernetes-list-map-keys": ["name"],
                                        "items": {
                                            "type": "object",
                                            "required": ["name"],
                                            "properties": {
                                                "name": {"type": "string"},
                                                "count": {"type": "integer"},
                                            },
                                        },
                                    },
                                    "extra": {
                                        "type": "object",
                                        "x-kubernetes-preserve-unknown-fields": True,
                                    },
                                },
                            },
                            "status": {
                                "type": "object",
                                "properties": {"ready": {"type": "boolean"}},
                            },
                        },
                    }
                },
            }
        ],
    },
}

POD_SPEC = {"containers": [{"name": "c", "image": "busybox:1.36", "command": ["sleep", "1"]}]}

# (collection path, apiVersion, kind, a valid body without metadata)
SEEDS: list[tuple[str, str, str, dict[str, Any]]] = [
    (f"/api/v1/namespaces/{FUZZ_NAMESPACE}/configmaps", "v1", "ConfigMap", {"data": {"a": "b"}}),
    (f"/api/v1/namespaces/{FUZZ_NAMESPACE}/secrets", "v1", "Secret", {"stringData": {"p": "q"}}),
    (
        f"/api/v1/namespaces/{FUZZ_NAMESPACE}/services",
        "v1",
        "Service",
        {"spec": {"selector": {"app": "a"}, "ports": [{"port": 80, "targetPort": 8080}]}},
    ),
    (f"/api/v1/namespaces/{FUZZ_NAMESPACE}/pods", "v1", "Pod", {"spec": POD_SPEC}),
    (
        f"/apis/apps/v1/namespaces/{FUZZ_NAMESPACE}/deployments",
        "apps/v1",
        "Deployment",
        {
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "a"}},
                "template": {"metadata": {"labels": {"app": "a"}}, "spec": POD_SPEC},
            }
        },
    ),
    (
        f"/apis/batch/v1/namespaces/{FUZZ_NAMESPACE}/jobs",
        "batch/v1",
        "Job",
        {"spec": {"template": {"spec": {**POD_SPEC, "restartPolicy": "Never"}}}},
    ),
    (
        f"/apis/rbac.authorization.k8s.io/v1/namespaces/{FUZZ_NAMESPACE}/roles",
        "rbac.authorization.k8s.io/v1",
        "Role",
        {"rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]},
    ),
    (
        f"/apis/rbac.authorization.k8s.io/v1/namespaces/{FUZZ_NAMESPACE}/rolebindings",
        "rbac.authorization.k8s.io/v1",
        "RoleBinding",
        {
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "seed"},
            "subjects": [
                {"kind": "User", "name": "alice", "apiGroup": "rbac.authorization.k8s.io"}
            ],
        },
    ),
    (
        f"/apis/{CRD_GROUP}/v1/namespaces/{FUZZ_NAMESPACE}/{CRD_PLURAL}",
        f"{CRD_GROUP}/v1",
        "Widget",
        {"spec": {"size": 3, "color": "red", "tags": ["x"], "parts": [{"name": "p", "count": 1}]}},
    ),
]


@dataclass
class FuzzAPI:
    """The running server as the fuzz tests see it: a URL and an authenticated session."""

    url: str
    session: requests.Session
    harness: ApiServerHarness
    loop: asyncio.AbstractEventLoop

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", REQUEST_TIMEOUT_S)
        return self.session.request(method, self.url + path, **kwargs)

    def json(self, method: str, path: str, body: Any = None, **kwargs: Any) -> requests.Response:
        if body is not None:
            kwargs["data"] = json.dumps(body).encode()
            kwargs.setdefault("headers", {})["Content-Type"] = "application/json"
        return self.request(method, path, **kwargs)

    def seed(self) -> None:
        """(Re)create every seed object; a fuzzed DELETE may have removed some."""
        for path, api_version, kind, body in SEEDS:
            obj = {"apiVersion": api_version, "kind": kind, "metadata": {"name": SEED_NAME}}
            response = self.json("POST", path, {**obj, **body})
            assert response.status_code in (201, 409), response.text

    def openapi_v3(self, group_version: str) -> dict[str, Any]:
        """The served document of ``group_version`` ("api/v1", "apis/apps/v1", ...)."""
        index = self.request("GET", "/openapi/v3")
        assert index.status_code == 200, index.text
        url = index.json()["paths"][group_version]["serverRelativeURL"]
        document = self.request("GET", url)
        assert document.status_code == 200, document.text
        return document.json()


def _serve(harness: ApiServerHarness, started: threading.Event, box: dict[str, Any]) -> None:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    box["loop"] = loop
    try:
        loop.run_until_complete(harness.start())
    except BaseException as error:  # reported to the fixture, which fails the test
        box["error"] = error
        started.set()
        loop.close()
        return
    started.set()
    try:
        loop.run_forever()
    finally:
        loop.run_until_complete(harness.stop())
        loop.close()


def _new_session(harness: ApiServerHarness) -> requests.Session:
    assert harness.server is not None
    pki = harness.server.pki
    ca_file = harness.data_dir / "fuzz-ca.pem"
    ca_file.write_bytes(pki.ca_pem)
    session = requests.Session()
    # The environment's CA bundle variables must not replace the cluster CA.
    session.trust_env = False
    session.verify = str(ca_file)
    session.cert = (str(pki.admin_cert_path), str(pki.admin_key_path))
    return session


def _wait_served(api: FuzzAPI, path: str) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while api.request("GET", path).status_code != 200:
        assert time.monotonic() < deadline, f"{path} never became served"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def fuzz_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzAPI]:
    harness = ApiServerHarness(Path(tmp_path_factory.mktemp("fuzz")))
    started = threading.Event()
    box: dict[str, Any] = {}
    thread = threading.Thread(
        target=_serve, args=(harness, started, box), name="fuzz-apiserver", daemon=True
    )
    thread.start()
    assert started.wait(SERVER_START_TIMEOUT_S), "the API server did not start"
    if "error" in box:
        raise box["error"]
    loop = box["loop"]
    saved_max_headers = http.client._MAXHEADERS
    http.client._MAXHEADERS = MAX_RESPONSE_HEADERS
    session = _new_session(harness)
    api = FuzzAPI(url=harness.url, session=session, harness=harness, loop=loop)
    try:
        response = api.json("POST", "/api/v1/namespaces", {"metadata": {"name": FUZZ_NAMESPACE}})
        assert response.status_code == 201, response.text
        # No controller manager here: the ServiceAccount admission of Pods looks this up.
        response = api.json(
            "POST",
            f"/api/v1/namespaces/{FUZZ_NAMESPACE}/serviceaccounts",
            {"metadata": {"name": "default"}},
        )
        assert response.status_code == 201, response.text
        response = api.json(
            "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", WIDGET_CRD
        )
        assert response.status_code == 201, response.text
        _wait_served(api, f"/apis/{CRD_GROUP}/v1/namespaces/{FUZZ_NAMESPACE}/{CRD_PLURAL}")
        api.seed()
        yield api
    finally:
        http.client._MAXHEADERS = saved_max_headers
        session.close()
        loop.call_soon_threadsafe(loop.stop)
        thread.join(SERVER_START_TIMEOUT_S)


# --- the check every response passes -------------------------------------------------------


def check_response(response: requests.Response, what: object = "") -> None:
    """No 5xx; every error a well-formed ``Status`` whose code is the HTTP code."""
    code = response.status_code
    context = f"{what}\n-> {code} {response.text[:800]}"
    assert code < 500, context
    if code < 400:
        return
    assert response.headers.get("Content-Type", "").startswith("application/json"), context
    body = response.json()
    assert isinstance(body, dict), context
    assert body.get("kind") == "Status", context
    assert body.get("apiVersion") == "v1", context
    assert body.get("status") == "Failure", context
    assert body.get("code") == code, context
    assert isinstance(body.get("reason"), str) and body["reason"], context
    assert isinstance(body.get("message"), str) and body["message"], context
    details = body.get("details")
    if details is not None:
        assert isinstance(details, dict), context
        causes = details.get("causes")
        if causes is not None:
            assert isinstance(causes, list) and causes, context
            for cause in causes:
                assert isinstance(cause, dict) and cause, context
                for key in ("reason", "message", "field"):
                    assert isinstance(cause.get(key, ""), str), context
