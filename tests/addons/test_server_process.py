"""The distribution pieces in a real ``sampan server`` process: a manifest dropped into
``<data-dir>/server/manifests`` is applied, ``sampan token create`` makes a token the join
endpoint accepts, ``sampan ctr`` reaches the node's containerd, and ``sampan check-config``
runs. One server for all of it (the e2e ``Cluster`` harness), to keep this quick."""

from __future__ import annotations

import base64
import json
import shutil
import ssl
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_single_node import KUBECTL, Cluster

pytestmark = pytest.mark.slow

MANIFEST = """\
apiVersion: v1
kind: ConfigMap
metadata: {name: from-manifest, namespace: default}
data: {hello: world}
"""


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    if KUBECTL is None:
        pytest.fail("kubectl is not installed")
    c = Cluster(Path(tempfile.mkdtemp(prefix="spad-", dir="/tmp")))
    manifests = c.data / "server" / "manifests"
    manifests.mkdir(parents=True)
    (manifests / "demo.yaml").write_text(MANIFEST)
    try:
        c.start()
        yield c
    finally:
        if c.proc is not None and c.proc.poll() is None:
            c.proc.terminate()
            try:
                c.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                c.proc.kill()
        c.sampan("killall", "--config", str(c.config), "--data-dir", str(c.data))
        shutil.rmtree(c.root, ignore_errors=True)


def _join_status(cluster: Cluster, token: str) -> int:
    secret = token.split("::", 1)[1].split(":", 1)[1]
    auth = base64.b64encode(f"node:{secret}".encode()).decode()
    body = json.dumps({"nodeName": "other", "nodePassword": "p" * 32, "nodeIPs": []}).encode()
    request = urllib.request.Request(
        f"https://127.0.0.1:{cluster.port}/v1-sampan/node",
        data=body,
        headers={"Authorization": f"Basic {auth}", "Content-Type": "application/json"},
        method="POST",
    )
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(request, context=context, timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_manifests_tokens_ctr_in_a_server(cluster: Cluster) -> None:
    def applied() -> str:
        out = cluster.kubectl("get", "configmap", "from-manifest", "-o", "json", check=False)
        return out and json.loads(out)["data"]["hello"]

    assert cluster.wait("the manifest applied", applied) == "world"
    addon = json.loads(
        cluster.kubectl("get", "addons.sampan.io", "demo", "-n", "kube-system", "-o", "json")
    )
    assert addon["spec"]["source"] == str(cluster.data / "server" / "manifests" / "demo.yaml")

    args = ("--config", str(cluster.config), "--data-dir", str(cluster.data))
    created = cluster.sampan("token", "create", *args, "--ttl", "1h")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token.startswith("K10") and "::node:" in token
    assert _join_status(cluster, token) == 200
    listed = cluster.sampan("token", "list", *args)
    assert token.rsplit(":", 1)[1] in listed.stdout

    def containerd_up() -> bool:
        out = cluster.sampan("ctr", "version")
        return out.returncode == 0

    env_data = {"SAMPAN_DATA_DIR": str(cluster.data)}
    cluster_env = cluster.env
    cluster.env = lambda: {**cluster_env(), **env_data}  # type: ignore[method-assign]
    cluster.wait("ctr reaches containerd", containerd_up)
    images = cluster.sampan("ctr", "images", "ls", "-q")
    assert "busybox" in images.stdout
    check = cluster.sampan("check-config", "--config", str(cluster.config))
    assert "containerd" in check.stdout
