"""``spec.chart: oci://...``: a chart pushed to a real OCI registry (Debian's
``docker-registry``, plain HTTP on 127.0.0.1) is pulled by the Helm engine and installed."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sampan.client import Client
from sampan.client.api import CONFIGMAPS
from sampan.helm import HELMCHARTS, HelmControllerComponent
from tests.helm.charts import demo_chart_files, package
from tests.helm.test_helmchart import at_revision, helmchart
from tests.support.poll import eventually

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.skipif(shutil.which("docker-registry") is None, reason="needs docker-registry"),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def oci_registry(tmp_path: Path) -> Iterator[str]:
    port = _free_port()
    config = {
        "version": 0.1,
        "log": {"level": "warn"},
        "storage": {"filesystem": {"rootdirectory": str(tmp_path / "registry")}},
        "http": {"addr": f"127.0.0.1:{port}"},
    }
    (tmp_path / "registry.yml").write_text(json.dumps(config))
    log = (tmp_path / "registry.log").open("wb")
    proc = subprocess.Popen(
        ["docker-registry", "serve", str(tmp_path / "registry.yml")],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        for _ in range(300):
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if proc.poll() is not None:
                pytest.fail((tmp_path / "registry.log").read_text())
            time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


async def test_oci_chart(
    client: Client, tmp_path: Path, oci_registry: str, helm_controller: HelmControllerComponent
) -> None:
    archive = tmp_path / "demo-0.1.0.tgz"
    archive.write_bytes(package(demo_chart_files()))

    def push() -> None:  # as `helm push demo-0.1.0.tgz oci://HOST/charts --plain-http`
        import helm_python as helm

        helm.push(archive, f"oci://{oci_registry}/charts", plain_http=True)

    await asyncio.to_thread(push)
    await client.create(
        HELMCHARTS,
        helmchart(
            "oci",
            chart=f"oci://{oci_registry}/charts/demo",
            version="0.1.0",
            plainHTTP=True,
            valuesContent="greeting: from-oci\n",
        ),
        namespace="default",
    )
    status = await eventually(lambda: at_revision(client, "oci", 1))
    assert status["chartVersion"] == "0.1.0"
    config_map = await client.get(CONFIGMAPS, "oci-demo", namespace="default")
    assert config_map["data"]["greeting"] == "from-oci"
