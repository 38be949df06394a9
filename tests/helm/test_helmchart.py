"""Acceptance: a HelmChart installs, upgrades, is overridden by a HelmChartConfig and is
uninstalled, through the real API server and the real Helm engine (helm-python-sdk)."""

from __future__ import annotations

from typing import Any

import pytest

from sampan.client import Client, NotFoundError
from sampan.client.api import CONFIGMAPS, DEPLOYMENTS, EVENTS, SECRETS, SERVICES
from sampan.helm import FINALIZER, HELMCHARTCONFIGS, HELMCHARTS
from tests.helm.charts import ChartRepo
from tests.support.poll import eventually

pytestmark = pytest.mark.timeout(300)


def helmchart(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "helm.cattle.io/v1",
        "kind": "HelmChart",
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    }


async def status_of(client: Client, name: str) -> dict[str, Any]:
    chart = await client.get(HELMCHARTS, name, namespace="default")
    return chart.get("status") or {}


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c["type"] == kind), {})


async def at_revision(client: Client, name: str, revision: int) -> dict[str, Any] | None:
    status = await status_of(client, name)
    if (
        status.get("releaseRevision") == revision
        and condition(status, "Failed").get("status") == "False"
    ):
        return status
    return None


async def release_secrets(client: Client, name: str) -> list[str]:
    listed = await client.list(
        SECRETS, namespace="default", label_selector=f"owner=helm,name={name}"
    )
    return sorted(s["metadata"]["name"] for s in listed["items"])


async def test_install_upgrade_config_uninstall(
    client: Client, repo: ChartRepo, helm_controller
) -> None:
    await client.create(
        HELMCHARTS,
        helmchart("demo", chart="demo", repo=repo.url, valuesContent="greeting: hi\n"),
        namespace="default",
    )
    status = await eventually(lambda: at_revision(client, "demo", 1))
    assert status["releaseStatus"] == "deployed"
    assert status["chartVersion"] == "0.1.0"
    assert condition(status, "Deployed")["status"] == "True"
    chart = await client.get(HELMCHARTS, "demo", namespace="default")
    assert FINALIZER in chart["metadata"]["finalizers"]

    config_map = await client.get(CONFIGMAPS, "demo-demo", namespace="default")
    assert config_map["data"] == {"greeting": "hi", "revision": "1"}
    assert config_map["metadata"]["labels"]["helm.sh/chart"] == "demo-0.1.0"
    assert config_map["metadata"]["annotations"]["meta.helm.sh/release-name"] == "demo"
    deployment = await client.get(DEPLOYMENTS, "demo-demo", namespace="default")
    assert (
        deployment["spec"]["template"]["spec"]["containers"][0]["image"]
        == "registry.invalid/demo:1.0"
    )
    service = await client.get(SERVICES, "demo-demo", namespace="default")
    assert service["spec"]["ports"][0]["port"] == 80
    sub = await client.get(CONFIGMAPS, "demo-sub", namespace="default")
    assert sub["data"] == {"color": "blue"}  # the parent's values reach the subchart
    secrets = await release_secrets(client, "demo")
    assert secrets == ["sh.helm.release.v1.demo.v1"]
    secret = await client.get(SECRETS, secrets[0], namespace="default")
    assert secret["type"] == "helm.sh/release.v1"

    # Changing valuesContent upgrades to revision 2.
    await client.patch(
        HELMCHARTS, "demo", {"spec": {"valuesContent": "greeting: bonjour\n"}}, namespace="default"
    )
    await eventually(lambda: at_revision(client, "demo", 2))
    config_map = await client.get(CONFIGMAPS, "demo-demo", namespace="default")
    assert config_map["data"] == {"greeting": "bonjour", "revision": "2"}

    # A HelmChartConfig of the same name overrides a value (and set wins over both).
    await client.create(
        HELMCHARTCONFIGS,
        {
            "apiVersion": "helm.cattle.io/v1",
            "kind": "HelmChartConfig",
            "metadata": {"name": "demo", "namespace": "default"},
            "spec": {"valuesContent": "greeting: hola\nsub:\n  color: green\n"},
        },
        namespace="default",
    )
    await eventually(lambda: at_revision(client, "demo", 3))
    config_map = await client.get(CONFIGMAPS, "demo-demo", namespace="default")
    assert config_map["data"]["greeting"] == "hola"
    sub = await client.get(CONFIGMAPS, "demo-sub", namespace="default")
    assert sub["data"] == {"color": "green"}
    await client.patch(
        HELMCHARTS, "demo", {"spec": {"set": {"service.port": 8081}}}, namespace="default"
    )
    await eventually(lambda: at_revision(client, "demo", 4))
    service = await client.get(SERVICES, "demo-demo", namespace="default")
    assert service["spec"]["ports"][0]["port"] == 8081
    assert len(await release_secrets(client, "demo")) == 4

    async def normal_events() -> bool:  # recorded asynchronously
        events = await client.list(
            EVENTS, namespace="default", field_selector="involvedObject.name=demo"
        )
        reasons = {
            e["reason"] for e in events["items"] if e["involvedObject"]["kind"] == "HelmChart"
        }
        return {"ApplyChart", "Applied"} <= reasons

    await eventually(normal_events)

    # Deleting the HelmChart uninstalls the release and removes its Secrets.
    await client.delete(HELMCHARTS, "demo", namespace="default")

    async def gone() -> bool:
        try:
            await client.get(HELMCHARTS, "demo", namespace="default")
        except NotFoundError:
            return True
        return False

    await eventually(gone)
    assert await release_secrets(client, "demo") == []
    for resource, name in (
        (CONFIGMAPS, "demo-demo"),
        (CONFIGMAPS, "demo-sub"),
        (SERVICES, "demo-demo"),
    ):
        with pytest.raises(NotFoundError):
            await client.get(resource, name, namespace="default")
