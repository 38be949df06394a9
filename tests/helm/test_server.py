"""``sampan server`` (control plane only) as a user runs it: a HelmChart manifest dropped into
``<data-dir>/server/manifests/`` that names a chart under ``<data-dir>/server/static/charts/``
is installed at start; ``/static/`` answers without credentials; kubectl shows the chart."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.helm.charts import demo_chart_files, package
from tests.supervisor.test_server_process import start_server, wait_for_log

pytestmark = pytest.mark.timeout(240)

MANIFEST = """\
apiVersion: helm.cattle.io/v1
kind: HelmChart
metadata:
  name: demo
  namespace: kube-system
spec:
  chart: https://%{KUBERNETES_API}%/static/charts/demo.tgz
  targetNamespace: demo
  createNamespace: true
  valuesContent: |
    greeting: from-manifests
"""
WAIT_S = 90.0


def kubectl(kubeconfig: Path, *args: str) -> str:
    done = subprocess.run(
        ["kubectl", *args],
        env=dict(os.environ, KUBECONFIG=str(kubeconfig)),
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    return done.stdout if done.returncode == 0 else ""


def test_manifest_helmchart_installs_at_start(tmp_path: Path) -> None:
    server_dir = tmp_path / "data" / "server"
    (server_dir / "static" / "charts").mkdir(parents=True)
    (server_dir / "manifests").mkdir(parents=True)
    archive = package(demo_chart_files())
    (server_dir / "static" / "charts" / "demo.tgz").write_bytes(archive)
    (server_dir / "manifests" / "demo.yaml").write_text(MANIFEST)
    proc, log_path = start_server(tmp_path, "--disable-agent")
    kubeconfig = tmp_path / "kubeconfig.yaml"
    try:
        wait_for_log(proc, log_path, "all components ready")
        deadline = time.monotonic() + WAIT_S
        revision = ""
        while time.monotonic() < deadline and revision != "1":
            revision = kubectl(
                kubeconfig,
                "get",
                "helmchart",
                "demo",
                "-n",
                "kube-system",
                "-o",
                "jsonpath={.status.releaseRevision}",
            )
            time.sleep(0.2)
        assert revision == "1", log_path.read_text()[-3000:]
        greeting = kubectl(
            kubeconfig, "get", "cm", "demo-demo", "-n", "demo", "-o", "jsonpath={.data.greeting}"
        )
        assert greeting == "from-manifests"
        table = kubectl(kubeconfig, "get", "hc", "-A")
        assert "REVISION" in table and "FAILED" in table
        assert "sh.helm.release.v1.demo.v1" in kubectl(kubeconfig, "get", "secrets", "-n", "demo")
        server = kubectl(
            kubeconfig, "config", "view", "-o", "jsonpath={.clusters[0].cluster.server}"
        )
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with urllib.request.urlopen(f"{server}/static/charts/demo.tgz", context=context) as reply:
            assert reply.read() == archive  # no credentials needed, as K3s
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "Traceback" not in log_path.read_text()
