"""Schemathesis requests generated from Sampan's own served OpenAPI v3 documents.

For each representative kind (core: ConfigMap, Secret, Service, Pod, Namespace; apps:
Deployment; batch: Job; rbac: Role, RoleBinding; a CRD's Widget) every operation the served
document lists (list, create, read, replace, patch, delete) gets requests generated from its
schema, positive (bodies that match the schema) and negative (bodies and parameters that do
not). The generated case is then nudged towards the interesting paths half of the time: the
namespace and name of a seeded object, the right apiVersion/kind, sane ``dryRun`` and
``fieldValidation`` values; otherwise the server would answer most cases at the first check.

Every response must pass ``check_response``: no 5xx, no hang, every error a Status.
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import given
from hypothesis import strategies as st
from schemathesis import GenerationMode

from tests.fuzz.conftest import (
    CRD_GROUP,
    CRD_PLURAL,
    FUZZ_NAMESPACE,
    REQUEST_TIMEOUT_S,
    SEED_NAME,
    FuzzAPI,
    check_response,
    fuzz_settings,
)

pytestmark = pytest.mark.fuzz

# (served document, plural, apiVersion, kind)
KINDS = [
    ("api/v1", "configmaps", "v1", "ConfigMap"),
    ("api/v1", "secrets", "v1", "Secret"),
    ("api/v1", "services", "v1", "Service"),
    ("api/v1", "pods", "v1", "Pod"),
    ("api/v1", "namespaces", "v1", "Namespace"),
    ("apis/apps/v1", "deployments", "apps/v1", "Deployment"),
    ("apis/batch/v1", "jobs", "batch/v1", "Job"),
    ("apis/rbac.authorization.k8s.io/v1", "roles", "rbac.authorization.k8s.io/v1", "Role"),
    (
        "apis/rbac.authorization.k8s.io/v1",
        "rolebindings",
        "rbac.authorization.k8s.io/v1",
        "RoleBinding",
    ),
    (f"apis/{CRD_GROUP}/v1", CRD_PLURAL, f"{CRD_GROUP}/v1", "Widget"),
]
# Examples per kind and mode; the workload kinds' schemas are large, so their examples cost
# several times more to generate and to validate.
MAX_EXAMPLES = 30
MAX_EXAMPLES_LARGE = 10
LARGE_KINDS = frozenset({"pods", "deployments", "jobs"})
# Namespaces the fuzzer may name; it must never delete the one the seeds live in.
DISPOSABLE_NAMESPACES = ("fz-ns-a", "fz-ns-b")


def _is_kind_path(path: str, plural: str) -> bool:
    return path.endswith((f"/{plural}", f"/{plural}/{{name}}"))


# (server URL, group-version) -> its operations; one server per module.
_OPERATIONS: dict[tuple[str, str], list[Any]] = {}


def _operations(api: FuzzAPI, group_version: str, plural: str) -> list[Any]:
    key = (api.url, group_version)
    if key not in _OPERATIONS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            schema = schemathesis.openapi.from_dict(api.openapi_v3(group_version))
            _OPERATIONS[key] = [result.ok() for result in schema.get_all_operations()]
    return [op for op in _OPERATIONS[key] if _is_kind_path(op.path, plural)]


def _nudge(data: st.DataObject, case: Any, plural: str, api_version: str, kind: str) -> None:
    """Point half the cases at real objects with plausible envelopes."""
    params = case.path_parameters if case.path_parameters is not None else {}
    if "namespace" in params and data.draw(st.booleans(), label="real namespace"):
        params["namespace"] = FUZZ_NAMESPACE
    if "name" in params:
        if plural == "namespaces":
            params["name"] = data.draw(st.sampled_from(DISPOSABLE_NAMESPACES), label="ns name")
        elif data.draw(st.booleans(), label="real name"):
            params["name"] = data.draw(st.sampled_from([SEED_NAME, "fz-a"]), label="name")
    query = case.query if case.query is not None else {}
    if data.draw(st.booleans(), label="sane query"):
        for key, values in (
            ("dryRun", [None, "All"]),
            ("fieldValidation", [None, "Strict", "Warn", "Ignore"]),
            ("fieldManager", [None, "fuzz"]),
            ("pretty", [None, "true"]),
        ):
            value = data.draw(st.sampled_from(values), label=key)
            if value is None:
                query.pop(key, None)
            else:
                query[key] = value
        if case.media_type == "application/apply-patch+yaml":
            query["fieldManager"] = "fuzz"
    body = case.body
    if isinstance(body, dict) and case.method in ("POST", "PUT") and data.draw(st.booleans()):
        body["apiVersion"] = api_version
        body["kind"] = kind
        metadata = body.setdefault("metadata", {})
        if isinstance(metadata, dict):
            if case.method == "PUT":
                metadata["name"] = params.get("name")
            elif plural == "namespaces":
                metadata["name"] = data.draw(st.sampled_from(DISPOSABLE_NAMESPACES))
            else:
                metadata["name"] = data.draw(st.sampled_from(["fz-a", "fz-b", "fz-c"]))
            metadata.pop("resourceVersion", None)


def _call(api: FuzzAPI, case: Any) -> requests.Response:
    """Send ``case`` with the suite's own session, so the response is a plain ``requests``
    one and the timeout applies to every request. The body of a 2xx is not read: a
    generated ``watch`` is a stream that only ends at its timeout."""
    kwargs = case.as_transport_kwargs(base_url=api.url)
    kwargs["headers"].pop("Connection", None)
    try:
        response = api.session.request(**kwargs, timeout=REQUEST_TIMEOUT_S, stream=True)
        with response:
            if response.status_code >= 400:
                response.content  # noqa: B018 - the whole error body, for the checks
    except requests.Timeout as error:
        raise AssertionError(f"hang: {case.as_curl_command()}") from error
    except requests.ConnectionError as error:
        raise AssertionError(f"dropped connection: {case.as_curl_command()}") from error
    return response


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
@pytest.mark.parametrize(("group_version", "plural", "api_version", "kind"), KINDS)
def test_generated_requests_never_5xx(
    fuzz_api: FuzzAPI,
    mode: GenerationMode,
    group_version: str,
    plural: str,
    api_version: str,
    kind: str,
) -> None:
    operations = _operations(fuzz_api, group_version, plural)
    assert len(operations) >= 5, [op.label for op in operations]
    strategies = [op.as_strategy(generation_mode=mode) for op in operations]
    sent: list[int] = []

    @fuzz_settings(MAX_EXAMPLES_LARGE if plural in LARGE_KINDS else MAX_EXAMPLES)
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        case = data.draw(st.one_of(strategies), label="case")
        _nudge(data, case, plural, api_version, kind)
        response = _call(fuzz_api, case)
        sent.append(response.status_code)
        check_response(response, case.as_curl_command())

    fuzz_api.seed()
    run()
    # The run reached the server and some requests got past the first checks: positive
    # cases are accepted at times; negative ones (each has at least one invalid part) at
    # least get past the query parameters to a lookup or validation.
    if mode == GenerationMode.POSITIVE:
        assert any(code < 300 for code in sent), sent
    else:
        assert any(code in (404, 409, 422) for code in sent), sent
