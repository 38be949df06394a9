"""kopf's smallest operator on the CronTab CRD reacts to create, update and delete.

kopf runs in-process (its own tasks on the test's loop) against the in-process API server with
the admin client certificate: it discovers the CRD's resource, watches it, patches its progress
annotations and its finalizer, and calls the handlers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

import pytest

from tests.apiserver.test_crd import CRD_NAME, CRDS, CRONTABS, crontab, crontab_crd

kopf = pytest.importorskip("kopf")

EVENT_TIMEOUT_S = 20.0
LAST_HANDLED = "kopf.zalando.org/last-handled-configuration"


async def next_event(queue: asyncio.Queue) -> tuple:
    async with asyncio.timeout(EVENT_TIMEOUT_S):
        return await queue.get()


async def test_kopf_operator_reacts_to_crontabs(harness, tmp_path):
    status, _ = await harness.request("POST", CRDS, crontab_crd())
    assert status == 201
    for _ in range(50):
        _, crd = await harness.request("GET", f"{CRDS}/{CRD_NAME}")
        if any(c["type"] == "Established" for c in (crd.get("status") or {}).get("conditions", [])):
            break
        await asyncio.sleep(0.1)

    pki = harness.server.pki
    ca_path = tmp_path / "ca.crt"
    ca_path.write_bytes(pki.ca_pem)
    registry = kopf.OperatorRegistry()
    seen: asyncio.Queue = asyncio.Queue()

    @kopf.on.login(registry=registry)
    def login(**_: object) -> object:
        return kopf.ConnectionInfo(
            server=harness.url,
            ca_path=str(ca_path),
            certificate_path=str(pki.admin_cert_path),
            private_key_path=str(pki.admin_key_path),
            default_namespace="default",
        )

    @kopf.on.startup(registry=registry)
    def configure(settings: object, **_: object) -> None:
        settings.posting.level = logging.ERROR  # type: ignore[attr-defined]
        settings.watching.server_timeout = 30  # type: ignore[attr-defined]

    @kopf.on.create("stable.example.com", "v1", "crontabs", registry=registry)
    def created(name: str, spec: dict, **_: object) -> None:
        seen.put_nowait(("create", name, spec.get("image")))

    @kopf.on.update("stable.example.com", "v1", "crontabs", registry=registry)
    def updated(name: str, new: dict, **_: object) -> None:
        seen.put_nowait(("update", name, new["spec"].get("image")))

    @kopf.on.delete("stable.example.com", "v1", "crontabs", registry=registry)
    def deleted(name: str, **_: object) -> None:
        seen.put_nowait(("delete", name, None))

    stop = asyncio.Event()
    ready = asyncio.Event()
    operator = asyncio.create_task(
        kopf.operator(
            registry=registry,
            clusterwide=True,
            standalone=True,
            stop_flag=stop,
            ready_flag=ready,
        ),
        name="kopf-operator",
    )
    try:
        async with asyncio.timeout(EVENT_TIMEOUT_S):
            await ready.wait()
        status, _ = await harness.request("POST", CRONTABS, crontab("op"))
        assert status == 201
        assert await next_event(seen) == ("create", "op", "my-cron-image")

        # kopf put its finalizer on the object (it has a delete handler) and recorded what it
        # handled; wait for that so the update below does not race kopf's own patches.
        for _ in range(50):
            _, obj = await harness.request("GET", f"{CRONTABS}/op")
            annotations = obj["metadata"].get("annotations") or {}
            if obj["metadata"].get("finalizers") and LAST_HANDLED in annotations:
                break
            await asyncio.sleep(0.1)
        assert obj["metadata"]["finalizers"]
        assert LAST_HANDLED in obj["metadata"]["annotations"]

        status, body = await harness.request(
            "PATCH",
            f"{CRONTABS}/op",
            {"spec": {"image": "new-image"}},
            content_type="application/merge-patch+json",
        )
        assert status == 200, json.dumps(body)
        assert await next_event(seen) == ("update", "op", "new-image")

        status, _ = await harness.request("DELETE", f"{CRONTABS}/op")
        assert status == 200
        assert await next_event(seen) == ("delete", "op", None)
        for _ in range(50):
            status, _ = await harness.request("GET", f"{CRONTABS}/op")
            if status == 404:
                break
            await asyncio.sleep(0.1)
        assert status == 404  # kopf released its finalizer
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            async with asyncio.timeout(EVENT_TIMEOUT_S):
                await operator
