"""Audit logging through a real API server: policy matching, the Event lines, stages,
annotations, 401s, Secrets at Metadata, kubectl, and the policy file's errors."""

from __future__ import annotations

import asyncio
import json
import os
import re
import uuid
from pathlib import Path
from typing import Any

import pytest

from sampan.apiserver.audit import AuditOptions, AuditPolicyError, load_policy, new_audit_id
from tests.apiserver.conftest import ServerHarness
from tests.apiserver.test_http_clients import KUBECTL, ok

MICRO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def write_policy(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


METADATA_POLICY = """
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
"""


async def start(tmp_path: Path, policy: str, **audit: Any) -> ServerHarness:
    policy_file = write_policy(tmp_path / "policy.yaml", policy)
    options = AuditOptions(
        policy_file=policy_file, log_path=str(tmp_path / "logs" / "audit.log"), **audit
    )
    harness = ServerHarness(tmp_path, audit=options)
    await harness.start()
    return harness


async def events(harness: ServerHarness) -> list[dict[str, Any]]:
    """Every line written so far (the server stops first, so the writer has drained)."""
    await harness.stop()
    path = harness.data_dir / "logs" / "audit.log"
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
async def metadata_harness(tmp_path: Path):
    harness = await start(tmp_path, METADATA_POLICY)
    try:
        yield harness
    finally:
        await harness.stop()


async def test_metadata_one_line_per_request(metadata_harness):
    h = metadata_harness
    status, _ = await h.request(
        "POST",
        "/api/v1/namespaces/default/configmaps",
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}, "data": {"a": "b"}},
    )
    assert status == 201
    status, _ = await h.request("GET", "/api/v1/namespaces/default/configmaps/missing")
    assert status == 404
    lines = [e for e in await events(h) if e.get("objectRef", {}).get("resource") == "configmaps"]
    assert [e["stage"] for e in lines] == ["ResponseComplete", "ResponseComplete"]
    created, missing = lines
    assert list(created)[:5] == ["kind", "apiVersion", "level", "auditID", "stage"]
    assert created["kind"] == "Event" and created["apiVersion"] == "audit.k8s.io/v1"
    assert created["level"] == "Metadata"
    assert created["verb"] == "create"
    assert created["requestURI"] == "/api/v1/namespaces/default/configmaps"
    assert created["user"]["username"] == "system:admin"
    assert "system:masters" in created["user"]["groups"]
    assert created["sourceIPs"] == ["127.0.0.1"]
    assert created["objectRef"] == {
        "resource": "configmaps",
        "namespace": "default",
        "name": "cm",
        "apiVersion": "v1",
    }
    assert created["responseStatus"] == {"metadata": {}, "code": 201}
    assert "requestObject" not in created and "responseObject" not in created
    assert created["annotations"]["authorization.k8s.io/decision"] == "allow"
    assert "authorization.k8s.io/reason" in created["annotations"]
    assert MICRO_TIME.match(created["requestReceivedTimestamp"])
    assert MICRO_TIME.match(created["stageTimestamp"])
    assert created["stageTimestamp"] >= created["requestReceivedTimestamp"]
    assert UUID.match(created["auditID"])
    assert missing["verb"] == "get"
    assert missing["responseStatus"] == {
        "metadata": {},
        "status": "Failure",
        "message": 'configmaps "missing" not found',
        "reason": "NotFound",
        "details": {"name": "missing", "kind": "configmaps"},
        "code": 404,
    }
    assert missing["auditID"] != created["auditID"]


async def test_audit_id_header_is_the_event_id(metadata_harness):
    h = metadata_harness
    assert h.session is not None
    async with h.session.get("/api/v1/namespaces") as response:
        assert response.status == 200
        generated = response.headers["Audit-ID"]
    async with h.session.get("/version", headers={"Audit-ID": "mine-1"}) as response:
        assert response.headers["Audit-ID"] == "mine-1"
    by_uri = {e["requestURI"]: e for e in await events(h)}
    assert by_uri["/api/v1/namespaces"]["auditID"] == generated
    assert by_uri["/api/v1/namespaces"]["verb"] == "list"
    assert by_uri["/version"]["auditID"] == "mine-1"
    assert "objectRef" not in by_uri["/version"]
    assert uuid.UUID(generated).version == 4


def test_generated_audit_ids_are_distinct_version_4_uuids():
    ids = [new_audit_id() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    for text in ids[:1000]:
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122


async def test_secret_at_metadata_never_carries_data(metadata_harness):
    h = metadata_harness
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "s"},
        "stringData": {"password": "hunter2"},
    }
    status, _ = await h.request("POST", "/api/v1/namespaces/default/secrets", secret)
    assert status == 201
    status, got = await h.request("GET", "/api/v1/namespaces/default/secrets/s")
    assert status == 200 and got["data"]["password"]
    path = h.data_dir / "logs" / "audit.log"
    await events(h)
    text = path.read_text()
    assert "hunter2" not in text
    assert got["data"]["password"] not in text
    assert '"secrets"' in text
    assert oct(path.stat().st_mode & 0o777) == "0o600"


async def test_unauthenticated_request_is_audited(metadata_harness):
    h = metadata_harness
    async with h.anonymous_session({"Authorization": "Bearer not-a-token"}) as session:
        async with session.get("/api/v1/namespaces/default/pods") as response:
            assert response.status == 401
            audit_id = response.headers["Audit-ID"]
    (event,) = [e for e in await events(h) if e["auditID"] == audit_id]
    assert event["user"] == {}
    assert event["verb"] == "list"
    assert event["responseStatus"]["code"] == 401
    assert event["responseStatus"]["reason"] == "Unauthorized"
    assert "annotations" not in event


async def test_forbidden_is_annotated(tmp_path):
    h = await start(tmp_path, METADATA_POLICY)
    try:
        assert h.session is not None
        headers = {"Impersonate-User": "jane"}
        async with h.session.get("/api/v1/namespaces/default/secrets", headers=headers) as r:
            assert r.status == 403
            audit_id = r.headers["Audit-ID"]
        (event,) = [e for e in await events(h) if e["auditID"] == audit_id]
    finally:
        await h.stop()
    assert event["user"]["username"] == "system:admin"
    assert event["impersonatedUser"]["username"] == "jane"
    assert event["annotations"]["authorization.k8s.io/decision"] == "forbid"
    assert event["responseStatus"]["code"] == 403
    assert event["responseStatus"]["reason"] == "Forbidden"


RULES_POLICY = """
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: None
  nonResourceURLs: ["/healthz*", "/version"]
- level: RequestResponse
  resources:
  - group: ""
    resources: ["configmaps"]
    resourceNames: ["loud"]
- level: Request
  verbs: ["create", "patch"]
  namespaces: ["default"]
  resources:
  - group: ""
    resources: ["configmaps"]
- level: None
  resources:
  - group: ""
    resources: ["pods/log", "pods/status"]
- level: Metadata
  userGroups: ["system:masters"]
  omitManagedFields: true
"""


async def test_first_matching_rule_wins(tmp_path):
    h = await start(tmp_path, RULES_POLICY)
    try:
        cm = {"apiVersion": "v1", "kind": "ConfigMap", "data": {"k": "v"}}
        for name in ("quiet", "loud"):
            body = {**cm, "metadata": {"name": name}}
            status, _ = await h.request("POST", "/api/v1/namespaces/default/configmaps", body)
            assert status == 201
        status, _ = await h.request("GET", "/api/v1/namespaces/default/configmaps/loud")
        assert status == 200
        status, _ = await h.request("GET", "/api/v1/namespaces/default/configmaps/quiet")
        assert status == 200
        status, _ = await h.request(
            "PATCH",
            "/api/v1/namespaces/default/configmaps/quiet",
            {"data": {"k": "w"}},
            content_type="application/merge-patch+json",
        )
        assert status == 200
        for path in ("/healthz", "/healthz/ping", "/version", "/api/v1/namespaces/default/pods"):
            status, _ = await h.request("GET", path)
            assert status == 200, path
        status, _ = await h.request("GET", "/api/v1/namespaces/default/pods/p/log")
        assert status == 404
        got = await events(h)
    finally:
        await h.stop()
    uris = [e["requestURI"] for e in got]
    assert not any(u.startswith("/healthz") or u == "/version" for u in uris)
    assert "/api/v1/namespaces/default/pods/p/log" not in uris
    by = {(e["verb"], e["objectRef"].get("name", "")): e for e in got if "objectRef" in e}
    # resourceNames: only "loud" is RequestResponse; create has the name in the body only,
    # so it falls through to the Request rule, as upstream.
    create_loud = by[("create", "loud")]
    assert create_loud["level"] == "Request"
    assert create_loud["requestObject"]["metadata"]["name"] == "loud"
    assert "responseObject" not in create_loud
    get_loud = by[("get", "loud")]
    assert get_loud["level"] == "RequestResponse"
    assert get_loud["responseObject"]["data"] == {"k": "v"}
    assert "managedFields" in get_loud["responseObject"]["metadata"]
    assert by[("get", "quiet")]["level"] == "Metadata"  # verbs: get is not create/patch
    patch = by[("patch", "quiet")]
    assert patch["level"] == "Request"
    assert patch["requestObject"] == {"data": {"k": "w"}}
    assert by[("list", "")]["level"] == "Metadata"


async def test_omit_managed_fields_and_stages(tmp_path):
    policy = """
apiVersion: audit.k8s.io/v1
kind: Policy
omitManagedFields: true
rules:
- level: RequestResponse
  resources: [{group: "", resources: ["configmaps"]}]
"""
    h = await start(tmp_path, policy)
    try:
        body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}
        status, _ = await h.request("POST", "/api/v1/namespaces/default/configmaps", body)
        assert status == 201
        got = await events(h)
    finally:
        await h.stop()
    assert [e["stage"] for e in got] == ["RequestReceived", "ResponseComplete"]
    received, complete = got
    assert received["stageTimestamp"] == received["requestReceivedTimestamp"]
    assert "responseStatus" not in received and "requestObject" not in received
    assert complete["responseObject"]["metadata"]["name"] == "c"
    assert "managedFields" not in complete["responseObject"]["metadata"]
    assert complete["objectRef"]["name"] == "c"


async def test_watch_has_response_started(tmp_path):
    h = await start(tmp_path, METADATA_POLICY)
    try:
        assert h.session is not None
        params = {"watch": "1", "timeoutSeconds": "1"}
        async with h.session.get("/api/v1/namespaces/default/configmaps", params=params) as r:
            assert r.status == 200
            await r.read()
        got = [e for e in await events(h) if e["verb"] == "watch"]
    finally:
        await h.stop()
    assert [e["stage"] for e in got] == ["ResponseStarted", "ResponseComplete"]
    assert got[0]["auditID"] == got[1]["auditID"]
    assert got[0]["requestURI"] == "/api/v1/namespaces/default/configmaps?watch=1&timeoutSeconds=1"
    assert got[0]["responseStatus"]["code"] == 200


def test_rotation_by_size(tmp_path):
    from sampan.apiserver.audit import RotatingFile

    now = [1_796_000_000.0]
    out = RotatingFile(tmp_path / "audit.log", max_size_mb=1, max_backups=2, clock=lambda: now[0])
    line = b"x" * 1023 + b"\n"
    for _ in range(4):
        for _ in range(1024):
            out.write(line)
        now[0] += 1.5
    out.write(line)
    out.close()
    backups = out.backups()
    assert len(backups) == 2  # the oldest of three was removed
    names = sorted(p.name for _, p in backups)
    assert all(re.match(r"^audit-\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d\.\d{3}\.log$", n) for n in names)
    assert all(p.stat().st_size == 1024 * 1024 for _, p in backups)
    assert (tmp_path / "audit.log").stat().st_size == 1024
    assert oct((tmp_path / "audit.log").stat().st_mode & 0o777) == "0o600"


def test_rotation_by_age(tmp_path):
    from sampan.apiserver.audit import RotatingFile, backup_name

    day = 24 * 3600.0
    now = 1_796_000_000.0
    path = tmp_path / "audit.log"
    old = backup_name(path, now - 40 * day)
    recent = backup_name(path, now - 2 * day)
    assert old.name == "audit-2026-10-21T00-53-20.000.log"
    old.write_bytes(b"old\n")
    recent.write_bytes(b"recent\n")
    out = RotatingFile(path, max_size_mb=1, max_age_days=30, clock=lambda: now)
    out.write(b"x\n")
    out.rotate()
    out.close()
    assert not old.exists()
    assert recent.exists()
    assert len(out.backups()) == 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Loud\n",
            'rules[0].level: Unsupported value: "Loud": supported values: "None", "Metadata", '
            '"Request", "RequestResponse"',
        ),
        (
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: None\n  userGroup: [a]\n",
            'strict decoding error: unknown field "rules[0].userGroup"',
        ),
        (
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: []\n",
            "loaded illegal policy with 0 rules",
        ),
        (
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [Done]\nrules:\n"
            "- level: None\n",
            'omitStages[0]: Invalid value: "Done": allowed stages are RequestReceived,'
            "ResponseStarted,ResponseComplete,Panic",
        ),
        (
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: None\n"
            "  nonResourceURLs: ['/a*b']\n",
            'rules[0].nonResourceURLs[0]: Invalid value: "/a*b": non-resource URL wildcards '
            "'*' must be the final character of the rule",
        ),
        (
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: None\n"
            "  nonResourceURLs: ['/a']\n  namespaces: [x]\n",
            "rules cannot apply to both regular resources and non-resource URLs",
        ),
        (
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: None\n"
            "  resources: [{group: '', resourceNames: [x]}]\n",
            "using resourceNames requires at least one resource",
        ),
        (
            "apiVersion: audit.k8s.io/v1beta1\nkind: Policy\nrules:\n- level: None\n",
            'no kind "Policy" is registered for version "audit.k8s.io/v1beta1"',
        ),
    ],
)
def test_bad_policy_is_one_line_naming_file_and_field(tmp_path, text, message):
    path = write_policy(tmp_path / "p.yaml", text)
    with pytest.raises(AuditPolicyError) as caught:
        load_policy(path)
    error = str(caught.value)
    assert "\n" not in error
    assert error.startswith(f"{path}: ")
    assert message in error


async def test_bad_policy_stops_the_start(tmp_path):
    path = write_policy(tmp_path / "p.yaml", "apiVersion: audit.k8s.io/v1\nkind: Policy\n")
    harness = ServerHarness(
        tmp_path, audit=AuditOptions(policy_file=path, log_path=str(tmp_path / "a.log"))
    )
    with pytest.raises(AuditPolicyError, match="0 rules"):
        await harness.start()
    await harness.stop()


@pytest.mark.skipif(not os.path.exists(KUBECTL), reason="kubectl is not installed")
async def test_kubectl_is_audited(tmp_path):
    h = await start(tmp_path, METADATA_POLICY)
    try:
        await ok(h, "create", "secret", "generic", "s", "--from-literal=p=hunter2")
        out = await ok(h, "get", "secret", "s", "-o", "jsonpath={.data.p}")
        assert out.strip()
        await ok(h, "delete", "secret", "s")
        got = await events(h)
    finally:
        await h.stop()
    text = json.dumps(got)
    assert "hunter2" not in text and out.strip() not in text
    secrets = [e for e in got if e.get("objectRef", {}).get("resource") == "secrets"]
    calls = [(e["verb"], e["responseStatus"]["code"]) for e in secrets]
    assert calls[:3] == [("create", 201), ("get", 200), ("delete", 200)]
    assert set(calls[3:]) <= {("get", 404)}  # kubectl delete waits for the object to go
    for event in secrets:
        assert event["user"]["username"] == "system:admin"
        assert event["userAgent"].startswith("kubectl")
        assert event["objectRef"]["name"] == "s"
        assert event["stage"] == "ResponseComplete"
    assert all(e["stage"] == "ResponseComplete" for e in got)


async def test_writer_keeps_up_with_many_requests(tmp_path):
    h = await start(tmp_path, METADATA_POLICY, queue_events=4)
    try:
        results = await asyncio.gather(*(h.request("GET", "/api/v1/namespaces") for _ in range(50)))
        assert all(status == 200 for status, _ in results)
        got = await events(h)
    finally:
        await h.stop()
    assert len([e for e in got if e["requestURI"] == "/api/v1/namespaces"]) == 50


async def test_internal_error_is_a_panic_event(tmp_path):
    h = await start(tmp_path, METADATA_POLICY)
    try:
        assert h.server is not None

        async def broken(*_args: Any, **_kwargs: Any) -> Any:
            raise RuntimeError("boom")

        h.server._rt.handler.handle = broken  # a bug in a handler, injected
        status, _ = await h.request("GET", "/api/v1/namespaces/default/configmaps")
        assert status == 500
        got = [e for e in await events(h) if e["verb"] == "list"]
    finally:
        await h.stop()
    assert [e["stage"] for e in got] == ["Panic"]
    assert got[0]["responseStatus"]["code"] == 500
    assert got[0]["responseStatus"]["reason"] == "InternalError"
    assert got[0]["responseStatus"]["message"] == "Internal error occurred: boom"


VAP = "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies"
VAPB = "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicybindings"


async def test_admission_policy_audit_action_and_audit_annotations_reach_the_log(tmp_path):
    """A ValidatingAdmissionPolicy bound with ``Audit`` records its failure, and its
    ``auditAnnotations`` their values, in the request's audit event (as kube-apiserver)."""
    h = await start(tmp_path, METADATA_POLICY)
    try:
        rules = [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                  "resources": ["configmaps"]}]  # fmt: skip
        status, body = await h.request("POST", VAP, {
            "metadata": {"name": "small"},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {"resourceRules": rules},
                "validations": [
                    {"expression": "true"},
                    {"expression": "size(object.data) <= 1", "message": "one key at most"},
                ],
                "auditAnnotations": [
                    {"key": "keys", "valueExpression": "string(size(object.data))"},
                    {"key": "never", "valueExpression": "null"},
                ],
            },
        })  # fmt: skip
        assert status == 201, body
        status, body = await h.request("POST", VAPB, {
            "metadata": {"name": "small-audit"},
            "spec": {"policyName": "small", "validationActions": ["Audit", "Warn"]},
        })  # fmt: skip
        assert status == 201, body
        assert h.session is not None
        path = "/api/v1/namespaces/default/configmaps"
        audit_id = ""
        for attempt in range(200):  # the policy takes effect once the watch cache has it
            data = {"a": "1", "b": "2", "c": "3"}
            cm = {"metadata": {"name": f"big-{attempt}"}, "data": data}
            async with h.session.post(path, json=cm) as r:
                assert r.status == 201, await r.text()
                if "one key at most" in r.headers.get("Warning", ""):
                    audit_id = r.headers["Audit-ID"]
                    break
            await asyncio.sleep(0.05)
        assert audit_id, "the policy never took effect"
        (event,) = [e for e in await events(h) if e["auditID"] == audit_id]
    finally:
        await h.stop()
    annotations = event["annotations"]
    assert json.loads(annotations["validation.policy.admission.k8s.io/validation_failure"]) == [
        {
            "message": "one key at most",
            "policy": "small",
            "binding": "small-audit",
            "expressionIndex": 1,
            "validationActions": ["Audit", "Warn"],
        }
    ]
    assert annotations["small/keys"] == "3"
    assert "small/never" not in annotations
