"""A kopf operator's admission webhooks, managed by kopf itself, served by kopf's own
``kopf.WebhookServer`` (with a serving certificate made here: kopf's self-signed generation
needs the ``certbuilder`` package, which Sampan does not ship), reject and mutate ConfigMaps
that kubectl creates.

kopf runs in-process (its own tasks on the test's loop) against the in-process API server: it
creates the Mutating- and ValidatingWebhookConfigurations ``auto.kopf.dev`` pointing at its
server, and the API server calls them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket

import pytest

from tests.apiserver.test_http_clients import KUBECTL, kubectl, ok
from tests.apiserver.webhook_server import make_pki

kopf = pytest.importorskip("kopf")
pytestmark = pytest.mark.skipif(not os.path.exists(KUBECTL), reason="kubectl is not installed")

READY_TIMEOUT_S = 20.0
POLL_ROUNDS = 200
POLL_S = 0.05


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_kopf_validate_and_mutate(harness, tmp_path):
    pki = harness.server.pki
    ca_path = tmp_path / "ca.crt"
    ca_path.write_bytes(pki.ca_pem)
    hook_pki = make_pki(tmp_path / "kopf-webhook", dns_names=("localhost",))
    registry = kopf.OperatorRegistry()

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
        settings.admission.server = kopf.WebhookServer(  # type: ignore[attr-defined]
            addr="127.0.0.1",
            host="127.0.0.1",
            port=free_port(),
            certfile=str(hook_pki.cert_path),
            pkeyfile=str(hook_pki.key_path),
            cadata=hook_pki.ca_pem,
        )
        settings.admission.managed = "auto.kopf.dev"  # type: ignore[attr-defined]

    @kopf.on.validate("configmaps", id="no-forbidden", registry=registry)
    def no_forbidden(body: dict, **_: object) -> None:
        if "forbidden" in (body.get("data") or {}):
            raise kopf.AdmissionError("the key 'forbidden' is forbidden", code=422)

    @kopf.on.mutate("configmaps", id="stamp", operations={"CREATE"}, registry=registry)
    def stamp(patch: object, **_: object) -> None:
        patch.metadata.setdefault("labels", {})["stamped-by"] = "kopf"  # type: ignore[attr-defined]

    stop = asyncio.Event()
    ready = asyncio.Event()
    operator = asyncio.create_task(
        kopf.operator(
            registry=registry, clusterwide=True, standalone=True, stop_flag=stop, ready_flag=ready
        ),
        name="kopf-operator",
    )
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            await ready.wait()
        # kopf writes its configurations once its server listens; poll until both act.
        for i in range(POLL_ROUNDS):
            code, out, err = await kubectl(
                harness, "create", "configmap", f"bad{i}", "--from-literal=forbidden=1"
            )
            if code != 0:
                break
            await asyncio.sleep(POLL_S)
        assert code != 0, out
        assert "denied the request: the key 'forbidden' is forbidden" in err
        assert "auto.kopf.dev" in err
        for i in range(POLL_ROUNDS):
            await ok(harness, "create", "configmap", f"good{i}", "--from-literal=k=v")
            got = json.loads(await ok(harness, "get", "configmap", f"good{i}", "-o", "json"))
            if (got["metadata"].get("labels") or {}).get("stamped-by") == "kopf":
                break
            await asyncio.sleep(POLL_S)
        assert got["metadata"]["labels"]["stamped-by"] == "kopf"
        configs = json.loads(
            await ok(harness, "get", "validatingwebhookconfigurations", "-o", "json")
        )
        assert [c["metadata"]["name"] for c in configs["items"]] == ["auto.kopf.dev"]
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            async with asyncio.timeout(READY_TIMEOUT_S):
                await operator
