"""Dynamic admission webhooks against a real in-process API server and a real TLS webhook
server (tests/apiserver/webhook_server.py), reached by URL and through a Service whose manual
Endpoints point at 127.0.0.1: deny, mutate, warn, timeouts, unreachable servers, dry run,
selectors, invalid answers, configuration validation and prompt reconfiguration."""

from __future__ import annotations

import asyncio
import json
import os
import socket
from typing import Any

import pytest

from sampan.api.resources import builtin_registry, storage_key
from tests.apiserver.test_http_clients import KUBECTL, kubectl
from tests.apiserver.webhook_server import WebhookServer, make_pki

VWC = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations"
MWC = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"
CONFIGMAPS = "/api/v1/namespaces/default/configmaps"
POLL_ROUNDS = 200
POLL_S = 0.05


@pytest.fixture
async def hooks(tmp_path):
    server = WebhookServer(make_pki(tmp_path / "webhook-pki"))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def configmap(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if labels:
        meta["labels"] = labels
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"k": "v"}}


def webhook(
    name: str,
    client: dict[str, Any],
    *,
    resources: tuple[str, ...] = ("configmaps",),
    operations: tuple[str, ...] = ("CREATE",),
    **extra: Any,
) -> dict[str, Any]:
    hook: dict[str, Any] = {
        "name": name,
        "clientConfig": client,
        "rules": [
            {
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "operations": list(operations),
                "resources": list(resources),
            }
        ],
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
    }
    hook.update(extra)
    return hook


def url_client(hooks: WebhookServer, path: str) -> dict[str, Any]:
    return {"url": hooks.url(path), "caBundle": hooks.pki.ca_bundle}


def configuration(kind: str, name: str, *webhooks: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": kind,
        "metadata": {"name": name},
        "webhooks": list(webhooks),
    }


async def install(harness, kind: str, name: str, *webhooks: dict[str, Any]) -> None:
    path = VWC if kind == "ValidatingWebhookConfiguration" else MWC
    status, body = await harness.request("POST", path, configuration(kind, name, *webhooks))
    assert status == 201, body


async def until_status(harness, make, expected: int) -> tuple[int, Any]:
    """Create objects (fresh names) until the answer is ``expected``: configurations take
    effect once the watch cache saw them."""
    status, body = 0, None
    for i in range(POLL_ROUNDS):
        status, body = await harness.request("POST", CONFIGMAPS, make(i))
        if status == expected:
            return status, body
        await asyncio.sleep(POLL_S)
    raise AssertionError(f"never answered {expected}: last {status} {body}")


async def test_deny_by_url_then_configuration_deleted(harness, hooks):
    await install(
        harness,
        "ValidatingWebhookConfiguration",
        "deny",
        webhook("deny.example.com", url_client(hooks, "/deny")),
    )
    status, body = await until_status(harness, lambda i: configmap(f"d{i}"), 400)
    assert body["message"] == 'admission webhook "deny.example.com" denied the request: no thanks'
    assert body["status"] == "Failure"
    review = hooks.seen("/deny")[-1]
    assert review["apiVersion"] == "admission.k8s.io/v1"
    request = review["request"]
    assert request["operation"] == "CREATE"
    assert request["kind"] == {"group": "", "version": "v1", "kind": "ConfigMap"}
    assert request["resource"] == {"group": "", "version": "v1", "resource": "configmaps"}
    assert request["requestKind"] == request["kind"]
    assert request["namespace"] == "default"
    assert request["object"]["metadata"]["name"].startswith("d")
    assert request["oldObject"] is None
    assert request["dryRun"] is False
    assert request["options"]["kind"] == "CreateOptions"
    assert request["userInfo"]["username"]
    # Other resources and operations are not matched.
    status, body = await harness.request(
        "POST",
        "/api/v1/namespaces/default/secrets",
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}},
    )
    assert status == 201, body
    status, _ = await harness.request("DELETE", f"{VWC}/deny")
    assert status == 200
    await until_status(harness, lambda i: configmap(f"after{i}"), 201)


async def test_denial_keeps_the_webhook_code_and_reason(harness, hooks):
    await install(
        harness,
        "ValidatingWebhookConfiguration",
        "deny403",
        webhook("deny403.example.com", url_client(hooks, "/deny403")),
    )
    _, body = await until_status(harness, lambda i: configmap(f"f{i}"), 403)
    assert body["reason"] == "Forbidden"
    assert body["message"] == 'admission webhook "deny403.example.com" denied the request: not you'


async def test_mutate_through_a_service_with_manual_endpoints(harness, hooks):
    status, body = await harness.request(
        "POST",
        "/api/v1/namespaces/default/services",
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "hooks"},
            "spec": {"ports": [{"name": "https", "port": 443, "targetPort": hooks.port}]},
        },
    )
    assert status == 201, body
    status, body = await harness.request(
        "POST",
        "/api/v1/namespaces/default/endpoints",
        {
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": {"name": "hooks"},
            "subsets": [
                {
                    "addresses": [{"ip": "127.0.0.1"}],
                    "ports": [{"name": "https", "port": hooks.port}],
                }
            ],
        },
    )
    assert status == 201, body
    client = {
        "service": {"namespace": "default", "name": "hooks", "path": "/mutate"},
        "caBundle": hooks.pki.ca_bundle,
    }
    await install(
        harness,
        "MutatingWebhookConfiguration",
        "label",
        webhook("label.example.com", client, operations=("CREATE", "UPDATE")),
    )
    for i in range(POLL_ROUNDS):
        status, body = await harness.request("POST", CONFIGMAPS, configmap(f"m{i}", {"a": "b"}))
        assert status == 201, body
        if body["metadata"]["labels"].get("webhook") == "seen":
            break
        await asyncio.sleep(POLL_S)
    assert body["metadata"]["labels"] == {"a": "b", "webhook": "seen"}
    name = body["metadata"]["name"]
    status, stored = await harness.request("GET", f"{CONFIGMAPS}/{name}")
    assert stored["metadata"]["labels"]["webhook"] == "seen"
    # An update is mutated too, and the webhook sees the old object.
    stored["metadata"]["labels"] = {"a": "c"}
    status, updated = await harness.request("PUT", f"{CONFIGMAPS}/{name}", stored)
    assert status == 200, updated
    assert updated["metadata"]["labels"] == {"a": "c", "webhook": "seen"}
    review = hooks.seen("/mutate")[-1]["request"]
    assert review["operation"] == "UPDATE"
    assert review["oldObject"]["metadata"]["labels"] == {"a": "b", "webhook": "seen"}
    assert review["options"]["kind"] == "UpdateOptions"


async def test_warnings_become_warning_headers(harness, hooks):
    await install(
        harness,
        "ValidatingWebhookConfiguration",
        "warn",
        webhook("warn.example.com", url_client(hooks, "/warn")),
    )
    assert harness.session is not None
    for i in range(POLL_ROUNDS):
        async with harness.session.post(CONFIGMAPS, json=configmap(f"w{i}")) as response:
            assert response.status == 201
            warnings = response.headers.getall("Warning", [])
        if warnings:
            break
        await asyncio.sleep(POLL_S)
    assert warnings == ['299 - "careful now"']


@pytest.mark.parametrize("policy", ["Fail", "Ignore"])
async def test_timeout(harness, hooks, policy):
    await install(
        harness,
        "ValidatingWebhookConfiguration",
        "slow",
        webhook(
            "slow.example.com",
            url_client(hooks, "/slow"),
            timeoutSeconds=1,
            failurePolicy=policy,
        ),
    )
    for i in range(POLL_ROUNDS):
        calls = len(hooks.seen("/slow"))
        status, body = await harness.request("POST", CONFIGMAPS, configmap(f"t{i}"))
        if len(hooks.seen("/slow")) > calls:
            break
        await asyncio.sleep(POLL_S)
    if policy == "Fail":
        assert status == 500, body
        assert body["reason"] == "InternalError"
        assert body["message"] == (
            'Internal error occurred: failed calling webhook "slow.example.com": failed to call '
            f'webhook: Post "{hooks.url("/slow")}?timeout=1s": context deadline exceeded'
        )
    else:
        assert status == 201, body


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("policy", ["Fail", "Ignore"])
async def test_unreachable(harness, hooks, policy):
    port = closed_port()
    client = {"url": f"https://127.0.0.1:{port}/x", "caBundle": hooks.pki.ca_bundle}
    await install(
        harness,
        "ValidatingWebhookConfiguration",
        "gone",
        webhook("gone.example.com", client, failurePolicy=policy),
    )
    if policy == "Fail":
        _, body = await until_status(harness, lambda i: configmap(f"u{i}"), 500)
        assert body["message"] == (
            'Internal error occurred: failed calling webhook "gone.example.com": failed to call '
            f'webhook: Post "https://127.0.0.1:{port}/x?timeout=10s": dial tcp 127.0.0.1:{port}: '
            "connect: connection refused"
        )
    else:
        # Ignore: every create succeeds, before and after the configuration is seen.
        for i in range(20):
            status, body = await harness.request("POST", CONFIGMAPS, configmap(f"u{i}"))
            assert status == 201, body


async def test_unknown_authority_and_invalid_answers_fail_closed(harness, hooks, tmp_path):
    other = make_pki(tmp_path / "other-ca")
    await install(
        harness,
        "ValidatingWebhookConfiguration",
        "wrongca",
        webhook("wrongca.example.com", {"url": hooks.url("/allow"), "caBundle": other.ca_bundle}),
    )
    _, body = await until_status(harness, lambda i: configmap(f"c{i}"), 500)
    assert "x509: certificate signed by unknown authority" in body["message"]
    await harness.request("DELETE", f"{VWC}/wrongca")
    await until_status(harness, lambda i: configmap(f"c2-{i}"), 201)

    await install(
        harness,
        "ValidatingWebhookConfiguration",
        "baduid",
        webhook("baduid.example.com", url_client(hooks, "/baduid")),
    )
    _, body = await until_status(harness, lambda i: configmap(f"b{i}"), 500)
    assert body["message"].startswith(
        'Internal error occurred: failed calling webhook "baduid.example.com": received invalid '
        'webhook response: expected response.uid="'
    )
    assert body["message"].endswith('got "not-the-uid"')
    await harness.request("DELETE", f"{VWC}/baduid")
    await until_status(harness, lambda i: configmap(f"b2-{i}"), 201)

    await install(
        harness,
        "ValidatingWebhookConfiguration",
        "garbage",
        webhook("garbage.example.com", url_client(hooks, "/garbage")),
    )
    _, body = await until_status(harness, lambda i: configmap(f"g{i}"), 500)
    assert body["message"].startswith(
        'Internal error occurred: failed calling webhook "garbage.example.com": failed to call '
        "webhook: "
    )


async def test_selectors(harness, hooks):
    status, _ = await harness.request(
        "POST",
        "/api/v1/namespaces",
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": "guarded", "labels": {"guard": "on"}},
        },
    )
    assert status == 201
    await install(
        harness,
        "ValidatingWebhookConfiguration",
        "select",
        webhook(
            "select.example.com",
            url_client(hooks, "/deny"),
            namespaceSelector={"matchLabels": {"guard": "on"}},
            objectSelector={"matchExpressions": [{"key": "free", "operator": "DoesNotExist"}]},
        ),
    )
    guarded = "/api/v1/namespaces/guarded/configmaps"
    for i in range(POLL_ROUNDS):
        status, body = await harness.request("POST", guarded, configmap(f"s{i}"))
        if status == 400:
            break
        await asyncio.sleep(POLL_S)
    assert status == 400, body
    # The object selector lets labelled objects through; other namespaces are not matched.
    status, body = await harness.request("POST", guarded, configmap("free", {"free": "yes"}))
    assert status == 201, body
    status, body = await harness.request("POST", CONFIGMAPS, configmap("elsewhere"))
    assert status == 201, body


async def test_webhook_configurations_are_not_sent_to_webhooks(harness, hooks):
    await install(
        harness,
        "ValidatingWebhookConfiguration",
        "everything",
        webhook(
            "everything.example.com",
            url_client(hooks, "/deny"),
            rules=[
                {
                    "apiGroups": ["*"],
                    "apiVersions": ["*"],
                    "operations": ["*"],
                    "resources": ["*/*"],
                }
            ],
        ),
    )
    await until_status(harness, lambda i: configmap(f"e{i}"), 400)
    # The configuration itself can still be repaired and removed.
    status, body = await harness.request("DELETE", f"{VWC}/everything")
    assert status == 200, body
    await until_status(harness, lambda i: configmap(f"e2-{i}"), 201)


@pytest.mark.skipif(not os.path.exists(KUBECTL), reason="kubectl is not installed")
async def test_dry_run_and_side_effects(harness, hooks):
    await install(
        harness,
        "ValidatingWebhookConfiguration",
        "dry",
        webhook("dry.example.com", url_client(hooks, "/allow"), sideEffects="None"),
    )
    await until_status(harness, lambda i: configmap(f"r{i}"), 201)
    before = len(hooks.seen("/allow"))
    code, out, err = await kubectl(
        harness, "create", "configmap", "dry", "--from-literal=k=v", "--dry-run=server"
    )
    assert code == 0, err
    assert "configmap/dry created (server dry run)" in out
    reviews = hooks.seen("/allow")[before:]
    assert reviews and reviews[-1]["request"]["dryRun"] is True
    assert reviews[-1]["request"]["options"]["dryRun"] == ["All"]

    # sideEffects Some can no longer be written through v1; such configurations still exist
    # in datastores written by older servers: put one there directly.
    info = builtin_registry().by_resource(
        "admissionregistration.k8s.io", "v1", "validatingwebhookconfigurations"
    )
    legacy = configuration(
        "ValidatingWebhookConfiguration",
        "legacy",
        webhook("some.example.com", url_client(hooks, "/allow"), sideEffects="Some"),
    )
    legacy["webhooks"][0].update(
        failurePolicy="Fail",
        matchPolicy="Equivalent",
        namespaceSelector={},
        objectSelector={},
        timeoutSeconds=10,
    )
    legacy["metadata"].update(
        uid="6f0c9b8e-0000-4000-8000-000000000001", creationTimestamp="2026-01-01T00:00:00Z"
    )
    await harness.backend.create(storage_key(info, None, "legacy"), json.dumps(legacy).encode())
    for _ in range(POLL_ROUNDS):
        code, out, err = await kubectl(
            harness, "create", "configmap", "dry2", "--from-literal=k=v", "--dry-run=server"
        )
        if code != 0:
            break
        await asyncio.sleep(POLL_S)
    assert code != 0
    assert 'admission webhook "some.example.com" does not support dry run' in err
    # Without dry run, the webhook is called as usual.
    status, body = await harness.request("POST", CONFIGMAPS, configmap("real"))
    assert status == 201, body


async def test_configuration_validation(harness, hooks):
    good = webhook("v.example.com", url_client(hooks, "/allow"))

    async def refused(kind: str, *webhooks: dict[str, Any]) -> str:
        path = VWC if kind == "ValidatingWebhookConfiguration" else MWC
        status, body = await harness.request("POST", path, configuration(kind, "bad", *webhooks))
        assert status == 422, body
        return body["message"]

    message = await refused(
        "ValidatingWebhookConfiguration",
        {**good, "matchConditions": [{"name": "x", "expression": "imnotafield == null"}]},
    )
    assert message.startswith(
        'ValidatingWebhookConfiguration.admissionregistration.k8s.io "bad" is invalid: '
        'webhooks[0].matchConditions[0].expression: Invalid value: "imnotafield == null": '
        "compilation failed: ERROR: <input>:1:1: undeclared reference to 'imnotafield'"
    ), message
    message = await refused(
        "MutatingWebhookConfiguration",
        {
            **good,
            "matchConditions": [
                {"name": "a", "expression": "1 + 'a'"},
                {"name": "a", "expression": "true"},
                {"name": " bad", "expression": ""},
                {"expression": "true"},
            ],
        },
    )
    assert message.startswith(
        'MutatingWebhookConfiguration.admissionregistration.k8s.io "bad" is invalid: ['
    ), message
    for part in (
        "webhooks[0].matchConditions[0].expression: Invalid value: \"1 + 'a'\": "
        "compilation failed: ",
        'webhooks[0].matchConditions[1].name: Duplicate value: "a"',
        "webhooks[0].matchConditions[2].expression: Required value",
        'webhooks[0].matchConditions[2].name: Invalid value: " bad": ',
        "webhooks[0].matchConditions[3].name: Required value",
    ):
        assert part in message, (part, message)
    many = [{"name": f"c{i}", "expression": "true"} for i in range(65)]
    message = await refused("ValidatingWebhookConfiguration", {**good, "matchConditions": many})
    assert "webhooks[0].matchConditions: Too many: 65: must have at most 64 items" in message
    status, body = await harness.request(
        "POST",
        VWC + "?dryRun=All",
        configuration(
            "ValidatingWebhookConfiguration",
            "sixty-four",
            {**good, "matchConditions": many[:64]},
        ),
    )
    assert status == 201, body
    message = await refused(
        "ValidatingWebhookConfiguration", {**good, "clientConfig": {"url": "http://x.example/"}}
    )
    assert 'webhooks[0].clientConfig.url: Invalid value: "http": ' in message
    assert "'https' is the only allowed URL scheme" in message
    message = await refused(
        "ValidatingWebhookConfiguration",
        {**good, "clientConfig": {"url": "https://u:p@x.example/?a=b"}},
    )
    assert "user information is not permitted in the URL" in message
    assert "query parameters are not permitted in the URL" in message
    message = await refused("ValidatingWebhookConfiguration", {**good, "name": "short.name"})
    assert "should be a domain with at least three segments separated by dots" in message
    message = await refused("ValidatingWebhookConfiguration", {**good, "timeoutSeconds": 31})
    assert "the timeout value must be between 1 and 30 seconds" in message
    message = await refused(
        "ValidatingWebhookConfiguration", {**good, "admissionReviewVersions": ["v2"]}
    )
    assert "must include at least one of v1, v1beta1" in message
    no_side_effects = dict(good)
    del no_side_effects["sideEffects"]
    message = await refused("ValidatingWebhookConfiguration", no_side_effects)
    assert "webhooks[0].sideEffects: Required value" in message
    message = await refused(
        "ValidatingWebhookConfiguration",
        {**good, "clientConfig": {"service": {"name": "x"}}},
    )
    assert "webhooks[0].clientConfig.service.namespace: Required value" in message
    message = await refused(
        "MutatingWebhookConfiguration", {**good, "reinvocationPolicy": "Always"}
    )
    assert 'webhooks[0].reinvocationPolicy: Unsupported value: "Always"' in message
    bad_rule = {
        **good,
        "rules": [
            {
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "operations": ["PATCH"],
                "resources": ["pods"],
            }
        ],
    }
    message = await refused("ValidatingWebhookConfiguration", bad_rule)
    assert 'webhooks[0].rules[0].operations[0]: Unsupported value: "PATCH"' in message


async def test_invalid_objects_are_refused_before_validating_webhooks(harness, hooks):
    await install(
        harness,
        "ValidatingWebhookConfiguration",
        "deny",
        webhook("deny.example.com", url_client(hooks, "/deny")),
    )
    await until_status(harness, lambda i: configmap(f"i{i}"), 400)
    calls = len(hooks.seen("/deny"))
    bad = configmap("bad")
    bad["data"] = {"not a key!": "v"}
    status, body = await harness.request("POST", CONFIGMAPS, bad)
    assert status == 422, body
    assert "data[not a key!]" in body["message"] or "not a key!" in body["message"]
    assert len(hooks.seen("/deny")) == calls


async def test_mutating_order_and_reinvocation(harness, hooks):
    # "a-observe" sorts before "b-mutate": it runs first, then again after the mutation.
    await install(
        harness,
        "MutatingWebhookConfiguration",
        "b-mutate",
        webhook("mutate.example.com", url_client(hooks, "/mutate")),
    )
    await install(
        harness,
        "MutatingWebhookConfiguration",
        "a-observe",
        webhook(
            "observe.example.com",
            url_client(hooks, "/observe"),
            reinvocationPolicy="IfNeeded",
            admissionReviewVersions=["v1beta1"],
        ),
    )
    for i in range(POLL_ROUNDS):
        before = len(hooks.seen("/observe"))
        status, body = await harness.request("POST", CONFIGMAPS, configmap(f"o{i}"))
        assert status == 201, body
        if body["metadata"].get("labels") and len(hooks.seen("/observe")) - before == 2:
            break
        await asyncio.sleep(POLL_S)
    first, second = hooks.seen("/observe")[-2:]
    assert first["apiVersion"] == "admission.k8s.io/v1beta1"
    assert "labels" not in first["request"]["object"]["metadata"]
    assert second["request"]["object"]["metadata"]["labels"] == {"webhook": "seen"}


async def test_delete_sends_the_old_object(harness, hooks):
    status, _ = await harness.request("POST", CONFIGMAPS, configmap("keep", {"keep": "yes"}))
    assert status == 201
    status, _ = await harness.request("POST", CONFIGMAPS, configmap("drop"))
    assert status == 201
    await install(
        harness,
        "ValidatingWebhookConfiguration",
        "keep",
        webhook(
            "keep.example.com",
            url_client(hooks, "/deny"),
            operations=("DELETE",),
            objectSelector={"matchLabels": {"keep": "yes"}},
        ),
    )
    for _ in range(POLL_ROUNDS):
        status, body = await harness.request("DELETE", f"{CONFIGMAPS}/keep")
        if status == 400:
            break
        await asyncio.sleep(POLL_S)
    assert status == 400, body
    assert body["message"] == 'admission webhook "keep.example.com" denied the request: no thanks'
    request = hooks.seen("/deny")[-1]["request"]
    assert request["operation"] == "DELETE"
    assert request["name"] == "keep"
    assert request["object"] is None
    assert request["oldObject"]["metadata"]["labels"] == {"keep": "yes"}
    assert request["options"]["kind"] == "DeleteOptions"
    status, body = await harness.request("DELETE", f"{CONFIGMAPS}/drop")
    assert status == 200, body


def hpa(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "minReplicas": 1,
            "maxReplicas": 3,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 70},
                    },
                }
            ],
        },
    }


@pytest.mark.parametrize("policy", ["Equivalent", "Exact"])
async def test_match_policy(harness, hooks, policy):
    rule = {
        "apiGroups": ["autoscaling"],
        "apiVersions": ["v1"],
        "operations": ["CREATE"],
        "resources": ["horizontalpodautoscalers"],
    }
    await install(
        harness,
        "ValidatingWebhookConfiguration",
        "hpa",
        webhook("hpa.example.com", url_client(hooks, "/deny"), rules=[rule], matchPolicy=policy),
    )
    # The configuration is in effect once a v1 create is refused.
    v1_path = "/apis/autoscaling/v1/namespaces/default/horizontalpodautoscalers"
    for i in range(POLL_ROUNDS):
        v1 = hpa(f"v1-{i}")
        v1["apiVersion"] = "autoscaling/v1"
        v1["spec"] = {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "maxReplicas": 3,
        }
        status, body = await harness.request("POST", v1_path, v1)
        if status == 400:
            break
        await asyncio.sleep(POLL_S)
    assert status == 400, body
    status, body = await harness.request(
        "POST", "/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers", hpa("v2")
    )
    if policy == "Exact":
        assert status == 201, body
        return
    assert status == 400, body
    request = hooks.seen("/deny")[-1]["request"]
    assert request["kind"] == {
        "group": "autoscaling",
        "version": "v1",
        "kind": "HorizontalPodAutoscaler",
    }
    assert request["requestKind"]["version"] == "v2"
    assert request["requestResource"]["version"] == "v2"
    assert request["object"]["apiVersion"] == "autoscaling/v1"
    assert request["object"]["spec"]["targetCPUUtilizationPercentage"] == 70


async def test_configurations_apply_from_the_first_request_after_a_restart(harness, hooks):
    await install(
        harness,
        "ValidatingWebhookConfiguration",
        "deny",
        webhook("deny.example.com", url_client(hooks, "/deny")),
    )
    await until_status(harness, lambda i: configmap(f"p{i}"), 400)
    await harness.restart()
    status, body = await harness.request("POST", CONFIGMAPS, configmap("first"))
    assert status == 400, body


async def test_webhooks_see_defaulted_objects(harness, hooks):
    await install(
        harness,
        "MutatingWebhookConfiguration",
        "pods",
        webhook("pods.example.com", url_client(hooks, "/mutate"), resources=("pods",)),
    )
    pods = "/api/v1/namespaces/default/pods"
    for i in range(POLL_ROUNDS):
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"p{i}"},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
        }
        status, body = await harness.request("POST", pods, pod)
        assert status == 201, body
        if (body["metadata"].get("labels") or {}).get("webhook") == "seen":
            break
        await asyncio.sleep(POLL_S)
    assert body["metadata"]["labels"] == {"webhook": "seen"}
    sent = hooks.seen("/mutate")[-1]["request"]["object"]
    assert sent["spec"]["restartPolicy"] == "Always"
    assert sent["spec"]["containers"][0]["terminationMessagePath"] == "/dev/termination-log"


async def test_mutation_of_a_create_on_update(harness, hooks):
    await install(
        harness,
        "MutatingWebhookConfiguration",
        "endpoints",
        webhook("ep.example.com", url_client(hooks, "/mutate"), resources=("endpoints",)),
    )
    path = "/api/v1/namespaces/default/endpoints"
    for i in range(POLL_ROUNDS):
        endpoints = {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": f"ep{i}"}}
        status, body = await harness.request("PUT", f"{path}/ep{i}", endpoints)
        assert status == 201, body
        if (body["metadata"].get("labels") or {}).get("webhook") == "seen":
            break
        await asyncio.sleep(POLL_S)
    assert body["metadata"]["labels"] == {"webhook": "seen"}
    status, stored = await harness.request("GET", f"{path}/{body['metadata']['name']}")
    assert stored["metadata"]["labels"] == {"webhook": "seen"}


async def test_service_through_an_endpointslice(harness, hooks):
    status, body = await harness.request(
        "POST",
        "/api/v1/namespaces/default/services",
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "hooks"},
            "spec": {"ports": [{"port": 8443, "targetPort": hooks.port}]},
        },
    )
    assert status == 201, body
    status, body = await harness.request(
        "POST",
        "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices",
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {"name": "hooks-1", "labels": {"kubernetes.io/service-name": "hooks"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}],
            "ports": [{"port": hooks.port, "protocol": "TCP"}],
        },
    )
    assert status == 201, body
    client = {
        "service": {"namespace": "default", "name": "hooks", "port": 8443, "path": "/deny"},
        "caBundle": hooks.pki.ca_bundle,
    }
    await install(
        harness, "ValidatingWebhookConfiguration", "svc", webhook("svc.example.com", client)
    )
    _, body = await until_status(harness, lambda i: configmap(f"es{i}"), 400)
    assert body["message"] == 'admission webhook "svc.example.com" denied the request: no thanks'
    # The webhook's Service without endpoints: the call fails (Fail policy).
    status, _ = await harness.request(
        "DELETE", "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/hooks-1"
    )
    assert status == 200
    _, body = await until_status(harness, lambda i: configmap(f"es2-{i}"), 500)
    assert body["message"] == (
        'Internal error occurred: failed calling webhook "svc.example.com": failed to call '
        'webhook: Post "https://hooks.default.svc:8443/deny?timeout=10s": no endpoints '
        'available for service "hooks"'
    )


async def test_stored_match_conditions_that_do_not_compile_fail_closed(harness, hooks):
    """A configuration written by another server with a condition this server cannot compile
    is refused under Fail (as an evaluation error), never silently skipped."""
    info = builtin_registry().by_resource(
        "admissionregistration.k8s.io", "v1", "validatingwebhookconfigurations"
    )
    stored = configuration(
        "ValidatingWebhookConfiguration",
        "cel",
        webhook(
            "cel.example.com",
            url_client(hooks, "/allow"),
            matchConditions=[{"name": "broken", "expression": "nosuchvariable"}],
        ),
    )
    stored["webhooks"][0].update(failurePolicy="Fail", timeoutSeconds=10)
    stored["metadata"].update(
        uid="6f0c9b8e-0000-4000-8000-000000000002", creationTimestamp="2026-01-01T00:00:00Z"
    )
    await harness.backend.create(storage_key(info, None, "cel"), json.dumps(stored).encode())
    _, body = await until_status(harness, lambda i: configmap(f"cel{i}"), 403)
    assert body["reason"] == "Forbidden"
    assert body["message"].startswith('configmaps "cel')
    assert " is forbidden: compilation error: " in body["message"]
    assert hooks.seen("/allow") == []


async def test_match_conditions(harness, hooks):
    """Called only when every condition is true; a false one skips the webhook; an error
    refuses under Fail (403, upstream's wording) and skips under Ignore; conditions see
    object, oldObject, request and the authorizer."""
    await install(
        harness,
        "ValidatingWebhookConfiguration",
        "conditions",
        webhook(
            "prefix.example.com",
            url_client(hooks, "/deny"),
            operations=("CREATE", "UPDATE"),
            matchConditions=[
                {"name": "deny-prefix", "expression": 'object.metadata.name.startsWith("deny-")'},
                {"name": "is-create", "expression": 'request.operation == "CREATE"'},
                {"name": "no-old", "expression": "oldObject == null"},
                {
                    "name": "authorized",
                    "expression": "authorizer.requestResource.check('create').allowed()",
                },
            ],
        ),
    )
    status, body = await until_status(harness, lambda i: configmap(f"deny-{i}"), 400)
    assert body["message"] == 'admission webhook "prefix.example.com" denied the request: no thanks'
    calls = len(hooks.seen("/deny"))
    request = hooks.seen("/deny")[-1]["request"]
    assert request["object"]["metadata"]["name"].startswith("deny-")
    # A false condition: the webhook is not called.
    status, body = await harness.request("POST", CONFIGMAPS, configmap("allowed"))
    assert status == 201, body
    assert len(hooks.seen("/deny")) == calls
    # Deleting the configuration lets "deny-" objects through again.
    await harness.request("DELETE", f"{VWC}/conditions")
    await until_status(harness, lambda i: configmap(f"deny-stored{i}"), 201)

    # An erroring condition: Fail refuses, without calling; Ignore skips.
    for policy in ("Fail", "Ignore"):
        name = f"errors-{policy.lower()}"
        await install(
            harness,
            "ValidatingWebhookConfiguration",
            name,
            webhook(
                f"{name}.example.com",
                url_client(hooks, "/deny"),
                failurePolicy=policy,
                matchConditions=[
                    {"name": "true", "expression": "true"},
                    {"name": "label", "expression": "object.metadata.labels.team == 'a'"},
                ],
            ),
        )
        if policy == "Fail":
            status, body = await until_status(harness, lambda i: configmap(f"e{i}"), 403)
            assert body["reason"] == "Forbidden"
            assert body["code"] == 403
            name_created = body["details"]["name"]
            assert body["message"] == (
                f'configmaps "{name_created}" is forbidden: expression '
                "'object.metadata.labels.team == 'a'' resulted in error: no such key: labels"
            ), body
            assert len(hooks.seen("/deny")) == calls
            # A false condition wins over an error.
            status, body = await harness.request(
                "POST", CONFIGMAPS, configmap("labelled", {"team": "b"})
            )
            assert status == 201, body
            await harness.request("DELETE", f"{VWC}/{name}")
        else:
            # Give the configuration time to be seen: a matching object is denied.
            status, body = await until_status(
                harness, lambda i: configmap(f"team{i}", {"team": "a"}), 400
            )
            status, body = await harness.request("POST", CONFIGMAPS, configmap("nolabels"))
            assert status == 201, body


async def test_mutating_match_conditions_see_earlier_mutations(harness, hooks):
    """A mutating webhook's conditions see the object as the webhooks before it left it."""
    await install(
        harness,
        "MutatingWebhookConfiguration",
        "a-mutate",
        webhook("mutate.example.com", url_client(hooks, "/mutate")),
    )
    await install(
        harness,
        "MutatingWebhookConfiguration",
        "b-after",
        webhook(
            "after.example.com",
            url_client(hooks, "/warn"),
            matchConditions=[
                {
                    "name": "seen",
                    "expression": "has(object.metadata.labels) && "
                    "object.metadata.labels.webhook == 'seen'",
                }
            ],
        ),
    )
    for i in range(POLL_ROUNDS):
        status, body = await harness.request("POST", CONFIGMAPS, configmap(f"m{i}"))
        assert status == 201, body
        if hooks.seen("/warn"):
            break
        await asyncio.sleep(POLL_S)
    assert hooks.seen("/warn"), "the second webhook was never called"
    assert hooks.seen("/warn")[-1]["request"]["object"]["metadata"]["labels"] == {"webhook": "seen"}


async def test_a_slow_webhook_does_not_hold_other_requests(harness, hooks):
    await install(
        harness,
        "ValidatingWebhookConfiguration",
        "gate",
        webhook("gate.example.com", url_client(hooks, "/gate"), timeoutSeconds=30),
    )
    held = asyncio.create_task(harness.request("POST", CONFIGMAPS, configmap("held0")))
    # Creates until one is held at the webhook (the configuration is in effect).
    for i in range(POLL_ROUNDS):
        if hooks.seen("/gate"):
            break
        if held.done():
            assert held.result()[0] == 201
            held = asyncio.create_task(harness.request("POST", CONFIGMAPS, configmap(f"held{i}")))
        await asyncio.sleep(POLL_S)
    assert hooks.seen("/gate")
    # While that create waits for the webhook, other requests are served.
    status, _ = await harness.request("GET", "/api/v1/namespaces/default")
    assert status == 200
    status, _ = await harness.request(
        "POST",
        "/api/v1/namespaces/default/secrets",
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "meanwhile"}},
    )
    assert status == 201
    assert not held.done()
    hooks.gate.set()
    status, body = await held
    assert status == 201, body


async def test_update_through_another_group_is_validated_in_its_storage_version(harness, hooks):
    """events.k8s.io/v1 Events are stored as core/v1 Events: the object admission holds
    during an update is a core Event, and must be validated as one."""
    event = {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {"name": "e1"},
        "eventTime": "2026-01-01T00:00:00.000000Z",
        "reportingController": "example.com/ctl",
        "reportingInstance": "ctl-1",
        "action": "Test",
        "reason": "Testing",
        "type": "Normal",
        "regarding": {"kind": "Pod", "name": "p", "namespace": "default"},
        "note": "first",
    }
    path = "/apis/events.k8s.io/v1/namespaces/default/events"
    status, body = await harness.request("POST", path, event)
    assert status == 201, body
    await install(
        harness,
        "ValidatingWebhookConfiguration",
        "events",
        webhook(
            "events.example.com",
            url_client(hooks, "/allow"),
            operations=("UPDATE",),
            resources=("events",),
        ),
    )
    for i in range(POLL_ROUNDS):
        calls = len(hooks.seen("/allow"))
        status, body = await harness.request(
            "PATCH",
            f"{path}/e1",
            {"note": f"update {i}"},
            content_type="application/merge-patch+json",
        )
        assert status == 200, body
        if len(hooks.seen("/allow")) > calls:
            break
        await asyncio.sleep(POLL_S)
    assert hooks.seen("/allow")
