"""Bad input: each failure says which and why (status condition + Warning event), the previous
release keeps running, and deleting a HelmChart whose release never existed finishes. Also the
other chart sources: a static file under ``<data-dir>/server/static`` and ``chartContent``."""

from __future__ import annotations

import base64
import socket
import ssl
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yarl

from sampan.client import Client, NotFoundError
from sampan.client.api import CONFIGMAPS, DEPLOYMENTS, EVENTS, NAMESPACES
from sampan.helm import HELMCHARTS, HelmControllerComponent
from tests.helm.charts import ChartRepo, demo_chart_files, package
from tests.helm.test_helmchart import at_revision, condition, helmchart, release_secrets, status_of
from tests.support.apiserver import ApiServerHarness
from tests.support.poll import eventually

pytestmark = pytest.mark.timeout(300)


async def failed_with(client: Client, name: str, reason: str) -> dict[str, Any] | None:
    status = await status_of(client, name)
    failed = condition(status, "Failed")
    if failed.get("status") == "True" and failed.get("reason") == reason:
        return status
    return None


async def warned(client: Client, name: str, reason: str) -> bool:
    """Events are recorded asynchronously: wait for them with ``eventually``."""
    return reason in await warning_reasons(client, name)


async def warning_reasons(client: Client, name: str) -> set[str]:
    events = await client.list(
        EVENTS, namespace="default", field_selector=f"involvedObject.name={name}"
    )
    return {e["reason"] for e in events["items"] if e["type"] == "Warning"}


async def deleted(client: Client, name: str) -> bool:
    try:
        await client.get(HELMCHARTS, name, namespace="default")
    except NotFoundError:
        return True
    return False


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_failures_keep_the_previous_release(
    client: Client, repo: ChartRepo, helm_controller: HelmControllerComponent
) -> None:
    await client.create(
        HELMCHARTS,
        helmchart("demo", chart="demo", repo=repo.url, valuesContent="greeting: hi\n"),
        namespace="default",
    )
    await eventually(lambda: at_revision(client, "demo", 1))

    # Values that fail the chart's schema: nothing is written, revision 1 keeps running.
    await client.patch(
        HELMCHARTS,
        "demo",
        {"spec": {"valuesContent": "greeting: hi\nreplicaCount: -1\n"}},
        namespace="default",
    )
    status = await eventually(lambda: failed_with(client, "demo", "InvalidValues"))
    assert "replicaCount" in condition(status, "Failed")["message"]
    assert status["releaseRevision"] == 1
    assert condition(status, "Deployed")["status"] == "True"
    await eventually(lambda: warned(client, "demo", "InvalidValues"))
    assert await release_secrets(client, "demo") == ["sh.helm.release.v1.demo.v1"]

    # Manifests the API rejects (a Service port out of range): Helm records the failed
    # revision; the objects of revision 1 stay.
    await client.patch(
        HELMCHARTS,
        "demo",
        {"spec": {"valuesContent": "greeting: hi\nservice:\n  port: 999999\n"}},
        namespace="default",
    )
    status = await eventually(lambda: failed_with(client, "demo", "ReleaseFailed"))
    assert (
        "999999" in condition(status, "Failed")["message"]
        or "port" in condition(status, "Failed")["message"]
    )
    assert status["releaseRevision"] == 1
    assert await client.get(DEPLOYMENTS, "demo-demo", namespace="default")
    assert (await client.get(CONFIGMAPS, "demo-demo", namespace="default"))["data"][
        "greeting"
    ] == "hi"
    assert "sh.helm.release.v1.demo.v2" in await release_secrets(client, "demo")

    # Fixed values: the next upgrade deploys (each retry of the rejected upgrade recorded a
    # failed revision, as Helm does, so the number is past 2).
    await client.patch(
        HELMCHARTS, "demo", {"spec": {"valuesContent": "greeting: fixed\n"}}, namespace="default"
    )

    async def deployed_again() -> bool:
        status = await status_of(client, "demo")
        return (
            condition(status, "Failed").get("status") == "False" and status["releaseRevision"] > 2
        )

    await eventually(deployed_again)
    assert (await client.get(CONFIGMAPS, "demo-demo", namespace="default"))["data"][
        "greeting"
    ] == "fixed"

    # A chart the repository does not have; a repository that does not answer.
    await client.create(
        HELMCHARTS, helmchart("absent", chart="absent", repo=repo.url), namespace="default"
    )
    status = await eventually(lambda: failed_with(client, "absent", "ChartNotFound"))
    assert '"absent"' in condition(status, "Failed")["message"]
    await client.create(
        HELMCHARTS,
        helmchart("version", chart="demo", version="9.9.9", repo=repo.url),
        namespace="default",
    )
    await eventually(lambda: failed_with(client, "version", "ChartNotFound"))
    dead = f"http://127.0.0.1:{closed_port()}"
    await client.create(
        HELMCHARTS, helmchart("norepo", chart="demo", repo=dead), namespace="default"
    )
    status = await eventually(lambda: failed_with(client, "norepo", "RepoUnavailable"))
    assert dead in condition(status, "Failed")["message"]
    await eventually(lambda: warned(client, "norepo", "RepoUnavailable"))
    await client.create(HELMCHARTS, helmchart("nothing"), namespace="default")
    await eventually(lambda: failed_with(client, "nothing", "InvalidChartSource"))

    # Deleting HelmCharts whose release never existed finishes.
    for name in ("absent", "version", "norepo", "nothing"):
        await client.delete(HELMCHARTS, name, namespace="default")
    for name in ("absent", "version", "norepo", "nothing"):
        await eventually(lambda name=name: deleted(client, name))


async def test_static_and_inline_charts(
    client: Client, tmp_path: Path, helm_controller: HelmControllerComponent
) -> None:
    archive = package(demo_chart_files("0.3.0"))
    (tmp_path / "static" / "charts" / "demo.tgz").write_bytes(archive)
    await client.create(
        HELMCHARTS,
        helmchart("static", chart="https://%{KUBERNETES_API}%/static/charts/demo.tgz"),
        namespace="default",
    )
    status = await eventually(lambda: at_revision(client, "static", 1))
    assert status["chartVersion"] == "0.3.0"
    assert await client.get(CONFIGMAPS, "static-demo", namespace="default")

    await client.create(
        HELMCHARTS,
        helmchart(
            "inline",
            chartContent=base64.b64encode(archive).decode(),
            targetNamespace="inline-ns",
            createNamespace=True,
            set={"greeting": "a,b", "replicaCount": 2},
        ),
        namespace="default",
    )
    status = await eventually(lambda: at_revision(client, "inline", 1))
    assert status["releaseNamespace"] == "inline-ns"
    assert await client.get(NAMESPACES, "inline-ns")
    config_map = await client.get(CONFIGMAPS, "inline-demo", namespace="inline-ns")
    assert config_map["data"]["greeting"] == "a,b"  # --set-string, comma escaped as K3s
    deployment = await client.get(DEPLOYMENTS, "inline-demo", namespace="inline-ns")
    assert deployment["spec"]["replicas"] == 2  # --set: an integer

    await client.delete(HELMCHARTS, "inline", namespace="default")
    await eventually(lambda: deleted(client, "inline"))
    with pytest.raises(NotFoundError):
        await client.get(CONFIGMAPS, "inline-demo", namespace="inline-ns")


async def test_static_files_are_served_without_authentication(tmp_path: Path) -> None:
    static = tmp_path / "static"
    (static / "charts").mkdir(parents=True)
    (static / "charts" / "demo.tgz").write_bytes(b"archive bytes")
    (tmp_path / "secret.txt").write_text("not for you")
    harness = ApiServerHarness(tmp_path / "data", static_dir=static)
    (tmp_path / "data").mkdir()
    await harness.start()
    try:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        async with aiohttp.ClientSession() as session:
            async with session.get(
                f"{harness.url}/static/charts/demo.tgz", ssl=context
            ) as response:
                assert response.status == 200
                assert await response.read() == b"archive bytes"
            for path in (
                "/static/charts/",
                "/static/charts/missing.tgz",
                "/static/..%2Fsecret.txt",
                "/static/%2E%2E/secret.txt",
            ):
                url = yarl.URL(f"{harness.url}{path}", encoded=True)  # sent as written
                async with session.get(url, ssl=context) as response:
                    assert response.status == 404, path
            async with session.post(
                f"{harness.url}/static/charts/demo.tgz", ssl=context
            ) as response:
                assert response.status == 405
            async with session.get(f"{harness.url}/api/v1/namespaces", ssl=context) as response:
                assert response.status == 401  # the rest of the API still needs credentials
    finally:
        await harness.stop()


async def test_failure_policy_abort_and_reinstall(
    client: Client, repo: ChartRepo, helm_controller: HelmControllerComponent
) -> None:
    rejected = "service:\n  port: 999999\n"  # the API refuses the Service: the install fails
    await client.create(
        HELMCHARTS,
        helmchart(
            "abort", chart="demo", repo=repo.url, valuesContent=rejected, failurePolicy="abort"
        ),
        namespace="default",
    )

    async def aborted() -> dict[str, Any] | None:
        status = await failed_with(client, "abort", "ReleaseFailed")
        if status and "failure policy is 'abort'" in condition(status, "Failed")["message"]:
            return status
        return None

    status = await eventually(aborted)
    assert "waiting for operator intervention" in condition(status, "Failed")["message"]
    assert await release_secrets(client, "abort") == ["sh.helm.release.v1.abort.v1"]

    # With reinstall (the default), the failed release is uninstalled and installed anew: once
    # the values are fixed it deploys as revision 1.
    await client.patch(
        HELMCHARTS,
        "abort",
        {"spec": {"failurePolicy": "reinstall", "valuesContent": "greeting: ok\n"}},
        namespace="default",
    )
    await eventually(lambda: at_revision(client, "abort", 1))
    assert await release_secrets(client, "abort") == ["sh.helm.release.v1.abort.v1"]
    assert (await client.get(CONFIGMAPS, "abort-demo", namespace="default"))["data"][
        "greeting"
    ] == "ok"
