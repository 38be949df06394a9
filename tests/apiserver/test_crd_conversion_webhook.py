"""CRD conversion webhooks against a real in-process API server, the real kubectl and a real
TLS conversion server written here: CronTab v1 (storage, ``spec.cronSpec``) and v2
(``spec.schedule``) converted by ``ConversionReview`` v1 on create, get, list, watch and
patch; upstream's messages when the webhook is unreachable or answers nonsense."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import shutil
import ssl
from typing import Any

import pytest
from aiohttp import web

from tests.apiserver.test_http_clients import kubectl
from tests.apiserver.webhook_server import WebhookServer, make_pki

KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"
GROUP = "stable.example.com"
CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
V1 = f"/apis/{GROUP}/v1/namespaces/default/crontabs"
V2 = f"/apis/{GROUP}/v2/namespaces/default/crontabs"
POLL_ROUNDS = 200
POLL_S = 0.05

pytestmark = pytest.mark.skipif(not os.path.exists(KUBECTL), reason="kubectl is not installed")


def _convert(obj: dict[str, Any], desired: str) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    spec = out.setdefault("spec", {})
    for v1_field, v2_field in (("cronSpec", "schedule"), ("replicas", "count")):
        if desired.endswith("/v2") and v1_field in spec:
            spec[v2_field] = spec.pop(v1_field)
        elif desired.endswith("/v1") and v2_field in spec:
            spec[v1_field] = spec.pop(v2_field)
    out["apiVersion"] = desired
    return out


class ConversionServer:
    """Serves ``/convert`` (cronSpec <-> schedule), ``/fail`` (result Failure with a
    message) and ``/wrongkind`` (answers objects of another kind); keeps every review."""

    def __init__(self, pki: Any) -> None:
        self.pki = pki
        self.reviews: list[dict[str, Any]] = []
        self.port = 0
        self._runner: web.AppRunner | None = None

    def url(self, path: str) -> str:
        return f"https://127.0.0.1:{self.port}{path}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{behaviour}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.pki.cert_path, self.pki.key_path)
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=context)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.Response:
        review = await request.json()
        self.reviews.append(review)
        req = review["request"]
        response: dict[str, Any] = {"uid": req["uid"], "result": {"status": "Success"}}
        behaviour = request.match_info["behaviour"]
        if behaviour == "fail":
            response["result"] = {"status": "Failure", "message": "cannot convert that"}
        else:
            converted = [_convert(o, req["desiredAPIVersion"]) for o in req["objects"]]
            if behaviour == "wrongkind":
                for obj in converted:
                    obj["kind"] = "Other"
            response["convertedObjects"] = converted
        return web.json_response(
            {"apiVersion": review["apiVersion"], "kind": "ConversionReview", "response": response}
        )


@pytest.fixture
async def converter(tmp_path):
    server = ConversionServer(make_pki(tmp_path / "conversion-pki"))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def crd(client: dict[str, Any]) -> dict[str, Any]:
    def version(name: str, field: str, storage: bool, replicas: str) -> dict[str, Any]:
        return {
            "name": name,
            "served": True,
            "storage": storage,
            "subresources": {
                "scale": {
                    "specReplicasPath": f".spec.{replicas}",
                    "statusReplicasPath": ".status.replicas",
                }
            },
            "schema": {
                "openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {
                            "type": "object",
                            "properties": {
                                field: {"type": "string"},
                                "image": {"type": "string"},
                                replicas: {"type": "integer"},
                            },
                        },
                        "status": {
                            "type": "object",
                            "properties": {"replicas": {"type": "integer"}},
                        },
                    },
                }
            },
        }

    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"crontabs.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {"plural": "crontabs", "singular": "crontab", "kind": "CronTab"},
            "versions": [
                version("v1", "cronSpec", True, "replicas"),
                version("v2", "schedule", False, "count"),
            ],
            "conversion": {
                "strategy": "Webhook",
                "webhook": {"clientConfig": client, "conversionReviewVersions": ["v1"]},
            },
        },
    }


async def install(harness, client: dict[str, Any]) -> None:
    status, body = await harness.request("POST", CRDS, crd(client))
    assert status == 201, body
    for _ in range(POLL_ROUNDS):  # served once the CRD controller registered it
        status, _ = await harness.request("GET", V2)
        if status != 404:
            return
        await asyncio.sleep(POLL_S)
    raise AssertionError("the CRD was never served")


def crontab_v2(name: str, schedule: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/v2",
        "kind": "CronTab",
        "metadata": {"name": name, "labels": {"app": "cron"}},
        "spec": {"schedule": schedule, "image": "busybox"},
    }


async def first_watch_event(harness, path: str) -> dict[str, Any]:
    assert harness.session is not None
    async with harness.session.get(
        path, params={"watch": "1", "resourceVersion": "0", "timeoutSeconds": "5"}
    ) as response:
        assert response.status == 200
        line = await response.content.readline()
    return json.loads(line)


async def test_served_in_both_versions_through_the_webhook(harness, converter):
    await install(harness, {"url": converter.url("/convert"), "caBundle": converter.pki.ca_bundle})
    # Create in v2: stored in v1 (converted), answered in v2.
    status, body = await harness.request("POST", V2, crontab_v2("nightly", "0 3 * * *"))
    assert status == 201, body
    assert body["apiVersion"] == f"{GROUP}/v2"
    assert body["spec"] == {"schedule": "0 3 * * *", "image": "busybox"}
    review = converter.reviews[0]
    assert review["apiVersion"] == "apiextensions.k8s.io/v1"
    assert review["kind"] == "ConversionReview"
    assert review["request"]["desiredAPIVersion"] == f"{GROUP}/v1"
    assert review["request"]["objects"][0]["spec"]["schedule"] == "0 3 * * *"
    assert review["request"]["uid"]

    # Read in v1 (the storage version: no call) and in v2.
    calls = len(converter.reviews)
    status, stored = await harness.request("GET", f"{V1}/nightly")
    assert status == 200
    assert stored["spec"] == {"cronSpec": "0 3 * * *", "image": "busybox"}
    assert len(converter.reviews) == calls
    status, got = await harness.request("GET", f"{V2}/nightly")
    assert status == 200
    assert got["apiVersion"] == f"{GROUP}/v2"
    assert got["spec"] == {"schedule": "0 3 * * *", "image": "busybox"}
    assert got["metadata"]["uid"] == stored["metadata"]["uid"]
    assert got["metadata"]["resourceVersion"] == stored["metadata"]["resourceVersion"]

    # kubectl in both versions, get and list.
    code, out, err = await kubectl(harness, "get", f"crontabs.v2.{GROUP}", "nightly", "-o", "json")
    assert code == 0, err
    assert json.loads(out)["spec"]["schedule"] == "0 3 * * *"
    code, out, err = await kubectl(harness, "get", f"crontabs.v1.{GROUP}", "nightly", "-o", "json")
    assert code == 0, err
    assert json.loads(out)["spec"]["cronSpec"] == "0 3 * * *"
    status, body = await harness.request(
        "POST",
        V1,
        {
            "apiVersion": f"{GROUP}/v1",
            "kind": "CronTab",
            "metadata": {"name": "hourly"},
            "spec": {"cronSpec": "0 * * * *"},
        },
    )
    assert status == 201, body
    code, out, err = await kubectl(harness, "get", f"crontabs.v2.{GROUP}", "-o", "json")
    assert code == 0, err
    items = {i["metadata"]["name"]: i for i in json.loads(out)["items"]}
    assert {n: i["spec"].get("schedule") for n, i in items.items()} == {
        "hourly": "0 * * * *",
        "nightly": "0 3 * * *",
    }
    assert {i["apiVersion"] for i in items.values()} == {f"{GROUP}/v2"}
    code, out, err = await kubectl(harness, "get", f"crontabs.v1.{GROUP}", "-o", "json")
    assert code == 0, err
    assert sorted(i["spec"]["cronSpec"] for i in json.loads(out)["items"]) == [
        "0 * * * *",
        "0 3 * * *",
    ]
    code, out, err = await kubectl(harness, "get", f"crontabs.v2.{GROUP}")
    assert code == 0, err
    assert "nightly" in out and "hourly" in out

    # Watch in both versions.
    event = await first_watch_event(harness, V2)
    assert event["type"] == "ADDED"
    assert event["object"]["apiVersion"] == f"{GROUP}/v2"
    assert "schedule" in event["object"]["spec"]
    event = await first_watch_event(harness, V1)
    assert event["object"]["apiVersion"] == f"{GROUP}/v1"
    assert "cronSpec" in event["object"]["spec"]
    code, out, err = await kubectl(
        harness, "get", f"crontabs.v2.{GROUP}", "-w", "--request-timeout=2s", "-o", "json"
    )
    watched = [json.loads(doc) for doc in out.replace("}\n{", "}\0{").split("\0") if doc.strip()]
    assert {o["metadata"]["name"] for o in watched} == {"nightly", "hourly"}, (out, err)
    assert {o["spec"]["schedule"] for o in watched} == {"0 3 * * *", "0 * * * *"}
    # Initial events then the bookmark that ends them, in v2.
    assert harness.session is not None
    async with harness.session.get(
        V2,
        params={
            "watch": "1",
            "sendInitialEvents": "true",
            "resourceVersionMatch": "NotOlderThan",
            "allowWatchBookmarks": "true",
            "timeoutSeconds": "5",
        },
    ) as response:
        assert response.status == 200
        events = []
        while not events or events[-1]["type"] != "BOOKMARK":
            line = await response.content.readline()
            assert line, events
            events.append(json.loads(line))
    assert [e["type"] for e in events] == ["ADDED", "ADDED", "BOOKMARK"]
    assert {e["object"]["apiVersion"] for e in events} == {f"{GROUP}/v2"}
    assert {e["object"]["spec"]["schedule"] for e in events[:2]} == {"0 3 * * *", "0 * * * *"}

    # Patch and update in v2 reach the stored v1 object.
    status, body = await harness.request(
        "PATCH",
        f"{V2}/nightly",
        {"spec": {"schedule": "30 3 * * *"}},
        content_type="application/merge-patch+json",
    )
    assert status == 200, body
    assert body["spec"]["schedule"] == "30 3 * * *"
    status, stored = await harness.request("GET", f"{V1}/nightly")
    assert stored["spec"] == {"cronSpec": "30 3 * * *", "image": "busybox"}
    status, current = await harness.request("GET", f"{V2}/nightly")
    current["spec"]["schedule"] = "45 3 * * *"
    status, body = await harness.request("PUT", f"{V2}/nightly", current)
    assert status == 200, body
    assert body["spec"]["schedule"] == "45 3 * * *"
    status, stored = await harness.request("GET", f"{V1}/nightly")
    assert stored["spec"]["cronSpec"] == "45 3 * * *"
    code, out, err = await kubectl(
        harness, "label", f"crontabs.v2.{GROUP}", "nightly", "tier=batch"
    )
    assert code == 0, err
    status, stored = await harness.request("GET", f"{V1}/nightly")
    assert stored["metadata"]["labels"] == {"app": "cron", "tier": "batch"}

    # The scale subresource of v2 reads and writes v2's replicas path.
    status, body = await harness.request(
        "PATCH",
        f"{V2}/nightly",
        {"spec": {"count": 2}},
        content_type="application/merge-patch+json",
    )
    assert status == 200, body
    status, scale = await harness.request("GET", f"{V2}/nightly/scale")
    assert status == 200, scale
    assert scale["spec"]["replicas"] == 2
    code, out, err = await kubectl(
        harness, "scale", f"crontabs.v2.{GROUP}", "nightly", "--replicas=5"
    )
    assert code == 0, err
    status, stored = await harness.request("GET", f"{V1}/nightly")
    assert stored["spec"]["replicas"] == 5
    assert "count" not in stored["spec"]
    status, scale = await harness.request("GET", f"{V1}/nightly/scale")
    assert scale["spec"]["replicas"] == 5

    # The webhook goes away: reads in v2 fail at once with upstream's message, v1 still works.
    await converter.stop()
    status, body = await harness.request("GET", f"{V2}/nightly")
    assert status == 500, body
    assert body["message"].startswith(
        f"conversion webhook for {GROUP}/v1, Kind=CronTab failed: Post "
        f'"https://127.0.0.1:{converter.port}/convert?timeout=30s": '
    ), body
    code, _, err = await kubectl(harness, "get", f"crontabs.v2.{GROUP}")
    assert code != 0
    assert f"Error from server: conversion webhook for {GROUP}/v1, Kind=CronTab failed" in err
    status, body = await harness.request("GET", f"{V1}/nightly")
    assert status == 200, body
    status, body = await harness.request("POST", V2, crontab_v2("refused", "1 * * * *"))
    assert status == 500, body
    assert body["message"].startswith(f"conversion webhook for {GROUP}/v2, Kind=CronTab failed")
    status, _ = await harness.request("GET", f"{V1}/refused")
    assert status == 404  # nothing half-written


async def test_bad_answers(harness, converter):
    await install(harness, {"url": converter.url("/fail"), "caBundle": converter.pki.ca_bundle})
    status, body = await harness.request("POST", V2, crontab_v2("x", "0 3 * * *"))
    assert status == 500, body
    assert body["message"] == (
        f"conversion webhook for {GROUP}/v2, Kind=CronTab failed: cannot convert that"
    )
    status, body = await harness.request(
        "PATCH",
        CRDS + f"/crontabs.{GROUP}",
        {
            "spec": {
                "conversion": {"webhook": {"clientConfig": {"url": converter.url("/wrongkind")}}}
            }
        },
        content_type="application/merge-patch+json",
    )
    assert status == 200, body
    for _ in range(POLL_ROUNDS):
        status, body = await harness.request("POST", V2, crontab_v2("y", "0 3 * * *"))
        if "invalid kind" in str(body):
            break
        await asyncio.sleep(POLL_S)
    assert status == 500, body
    assert body["message"] == (
        f"conversion webhook for {GROUP}/v2, Kind=CronTab returned invalid converted object "
        "at index 0: invalid kind (expected CronTab, received Other)"
    )


async def test_through_a_service_in_v1beta1_reviews(harness, converter):
    """``clientConfig.service`` resolved through the Service's endpoints and verified as
    ``<service>.<namespace>.svc``; a CRD that only speaks v1beta1 reviews gets them."""
    status, body = await harness.request(
        "POST",
        "/api/v1/namespaces/default/services",
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "hooks"},
            "spec": {"ports": [{"name": "https", "port": 443, "targetPort": converter.port}]},
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
                    "ports": [{"name": "https", "port": converter.port}],
                }
            ],
        },
    )
    assert status == 201, body
    definition = crd(
        {
            "service": {"namespace": "default", "name": "hooks", "path": "/convert"},
            "caBundle": converter.pki.ca_bundle,
        }
    )
    definition["spec"]["conversion"]["webhook"]["conversionReviewVersions"] = ["v1beta1"]
    status, body = await harness.request("POST", CRDS, definition)
    assert status == 201, body
    for _ in range(POLL_ROUNDS):
        status, body = await harness.request("POST", V2, crontab_v2("svc", "5 * * * *"))
        if status != 404:
            break
        await asyncio.sleep(POLL_S)
    assert status == 201, body
    assert converter.reviews[-1]["apiVersion"] == "apiextensions.k8s.io/v1beta1"
    status, body = await harness.request("GET", V2)
    assert status == 200, body
    assert [i["spec"]["schedule"] for i in body["items"]] == ["5 * * * *"]
    assert body["apiVersion"] == f"{GROUP}/v2"
    event = await first_watch_event(harness, V2)
    assert event["object"]["spec"]["schedule"] == "5 * * * *"
    status, body = await harness.request("DELETE", f"{V2}/svc")
    assert status == 200, body


async def test_admission_webhooks_see_equivalent_versions_converted(harness, converter, tmp_path):
    """An admission webhook registered for v1 (``matchPolicy: Equivalent``) gets a v2 write
    converted by the CRD's conversion webhook, as kube-apiserver sends it."""
    hooks = WebhookServer(make_pki(tmp_path / "admission-pki"))
    await hooks.start()
    try:
        await install(
            harness, {"url": converter.url("/convert"), "caBundle": converter.pki.ca_bundle}
        )
        status, body = await harness.request(
            "POST",
            "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations",
            {
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "ValidatingWebhookConfiguration",
                "metadata": {"name": "crontabs"},
                "webhooks": [
                    {
                        "name": "crontabs.example.com",
                        "clientConfig": {
                            "url": hooks.url("/allow"),
                            "caBundle": hooks.pki.ca_bundle,
                        },
                        "rules": [
                            {
                                "apiGroups": [GROUP],
                                "apiVersions": ["v1"],
                                "operations": ["CREATE"],
                                "resources": ["crontabs"],
                            }
                        ],
                        "sideEffects": "None",
                        "admissionReviewVersions": ["v1"],
                    }
                ],
            },
        )
        assert status == 201, body
        for i in range(POLL_ROUNDS):
            status, body = await harness.request("POST", V2, crontab_v2(f"a{i}", "7 * * * *"))
            assert status == 201, body
            if hooks.seen("/allow"):
                break
            await asyncio.sleep(POLL_S)
        request = hooks.seen("/allow")[-1]["request"]
        assert request["kind"] == {"group": GROUP, "version": "v1", "kind": "CronTab"}
        assert request["requestKind"]["version"] == "v2"
        assert request["object"]["apiVersion"] == f"{GROUP}/v1"
        assert request["object"]["spec"]["cronSpec"] == "7 * * * *"
        assert "schedule" not in request["object"]["spec"]
    finally:
        await hooks.stop()
