"""Metrics on a whole single-node cluster (``sampan server`` as a user runs it): the kubelet's
Summary API through the API server's node proxy shows a busy pod's CPU, the API server's
``/metrics`` answers, the metrics-server add-on is served through API aggregation
(``kubectl top nodes|pods``), and the HPA controller reads the busy pod's CPU through it,
scales the Deployment up, and down once the load stops; and a real Prometheus scrapes every
component with the README's configuration."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.test_single_node import (  # noqa: F401 - fixture used by name
    Cluster,
    cluster,
    free_port,
)

pytestmark = pytest.mark.slow


def test_metrics_on_a_single_node(cluster: Cluster) -> None:  # noqa: F811
    def node_name() -> str:
        out = cluster.kubectl("get", "nodes", "-o", "json", check=False)
        try:
            nodes = json.loads(out)["items"]
        except (ValueError, KeyError):
            return ""
        ready = [
            n["metadata"]["name"]
            for n in nodes
            if any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in n.get("status", {}).get("conditions", [])
            )
        ]
        return ready[0] if ready else ""

    node = cluster.wait("the node to be Ready", node_name)
    cluster.kubectl(
        "create", "deployment", "hot", "--image=busybox:1.36", "--",
        "sh", "-c", "while [ ! -e /tmp/stop ]; do :; done; exec sleep 3600",
    )  # fmt: skip
    cluster.kubectl("set", "resources", "deployment", "hot", "--requests=cpu=100m")
    cluster.kubectl("rollout", "status", "deploy/hot", "--timeout=90s")

    def busy() -> int:
        raw = cluster.kubectl("get", "--raw", f"/api/v1/nodes/{node}/proxy/stats/summary")
        for pod in json.loads(raw)["pods"]:
            if pod["podRef"]["name"].startswith("hot-"):
                return int(pod["cpu"].get("usageNanoCores") or 0)
        return 0

    assert cluster.wait("the busy pod's usageNanoCores", busy) > 0
    resource = cluster.kubectl("get", "--raw", f"/api/v1/nodes/{node}/proxy/metrics/resource")
    assert 'container_cpu_usage_seconds_total{container="busybox"' in resource
    assert "apiserver_request_total{" in cluster.kubectl("get", "--raw", "/metrics")

    apiservice = json.loads(
        cluster.wait(
            "the metrics APIService",
            lambda: cluster.kubectl(
                "get", "apiservice", "v1beta1.metrics.k8s.io", "-o", "json", check=False
            ),
        )
    )
    assert apiservice["spec"]["service"]["name"] == "metrics-server"

    cluster.kubectl("autoscale", "deployment", "hot", "--cpu-percent=50", "--min=1", "--max=3")
    # A short scale-down stabilization window (upstream's default is 300 s).
    behavior = {"scaleDown": {"stabilizationWindowSeconds": 20}}
    cluster.kubectl(
        "patch", "hpa", "hot", "--type=merge", "-p", json.dumps({"spec": {"behavior": behavior}})
    )

    def hpa_condition() -> str:
        out = cluster.kubectl("get", "hpa", "hot", "-o", "json", check=False)
        try:
            conditions = json.loads(out).get("status", {}).get("conditions", [])
        except ValueError:
            return ""
        active = [c for c in conditions if c["type"] == "ScalingActive"]
        return active[0]["reason"] if active else ""

    # The first reads may come before metrics-server's first two scrapes (15 s apart):
    # FailedGetResourceMetric until then, as upstream.
    cluster.wait(
        "the HPA's ScalingActive condition to be ValidMetricFound",
        lambda: hpa_condition() == "ValidMetricFound",
        timeout_s=120,
    )
    assert "Deployment/hot" in cluster.kubectl("get", "hpa", "hot")

    def top(*args: str) -> str:
        out = cluster.kubectl("top", *args, check=False)
        return out if "NAME" in out else ""

    nodes = cluster.wait("kubectl top nodes", lambda: top("nodes"))
    assert node in nodes and "CPU(cores)" in nodes
    pods = cluster.wait(
        "kubectl top pods to list the busy pod",
        lambda: top("pods") if "hot-" in top("pods") else "",
    )
    assert "MEMORY(bytes)" in pods

    def replicas() -> int:
        out = cluster.kubectl("get", "deploy", "hot", "-o", "json", check=False)
        try:
            wanted = json.loads(out)["spec"]["replicas"]
        except (ValueError, KeyError):
            return 0
        return wanted if wanted > 1 else 0

    # One busy loop uses far more than 50% of its 100m request: the HPA scales up.
    assert cluster.wait("the HPA to scale the Deployment up", replicas) > 1

    # The load stops (every pod, including those the scale-up made): after the scale-down
    # stabilization window, shortened through spec.behavior, the HPA scales down to 1.
    cluster.kubectl("rollout", "status", "deploy/hot", "--timeout=120s")
    stopped: set[str] = set()

    def scaled_down() -> bool:
        names = cluster.kubectl(
            "get", "pods", "-l", "app=hot", "-o", "jsonpath={.items[*].metadata.name}",
            check=False,
        ).split()  # fmt: skip
        for name in names:
            if name not in stopped:
                cluster.kubectl("exec", name, "--", "touch", "/tmp/stop", check=False)
                stopped.add(name)
        out = cluster.kubectl("get", "deploy", "hot", "-o", "json", check=False)
        try:
            return json.loads(out)["spec"]["replicas"] == 1
        except (ValueError, KeyError):
            return False

    cluster.wait("the HPA to scale the Deployment down", scaled_down, timeout_s=180)
    rescales = cluster.kubectl(
        "get", "events", "--field-selector", "reason=SuccessfulRescale", "-o", "json"
    )
    messages = [e["message"] for e in json.loads(rescales)["items"]]
    assert any("New size: 1; reason: All metrics below target" in m for m in messages), messages


def _readme_scrape_config() -> str:
    """The Prometheus scrape configuration the README's Monitoring section shows."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme[readme.index("## Monitoring") :]
    block = section[section.index("  ```yaml\n") + len("  ```yaml\n") :]
    block = block[: block.index("  ```\n")]
    assert "job_name: sampan-apiserver" in block
    return "\n".join(line[2:] for line in block.splitlines()) + "\n"


def _query(port: int, promql: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.loads(response.read())
    except (OSError, ValueError):
        return []
    return body["data"]["result"] if body.get("status") == "success" else []


def test_prometheus_scrapes_the_cluster(cluster: Cluster, tmp_path: Path) -> None:  # noqa: F811
    """Debian's Prometheus, as a private instance (own port, data dir and config), with the
    README's scrape configuration and the admin client certificate: the API server (with the
    controllers' and scheduler's series), every kubelet (with the proxy's) and cAdvisor are
    up, and PromQL answers ``sum by (verb) (apiserver_request_total)``."""
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        pytest.fail("prometheus is not installed (scripts/install.sh installs it)")
    ready = 'jsonpath={.items[*].status.conditions[?(@.type=="Ready")].status}'
    cluster.wait(
        "the node to be Ready",
        lambda: "True" in cluster.kubectl("get", "nodes", "-o", ready, check=False),
    )
    cluster.kubectl("run", "sleeper", "--image=busybox:1.36", "--", "sleep", "3600")
    cluster.kubectl("wait", "pod/sleeper", "--for=condition=Ready", "--timeout=90s")

    kubeconfig = yaml.safe_load(cluster.kubeconfig.read_text())
    for name, data in (
        ("ca.crt", kubeconfig["clusters"][0]["cluster"]["certificate-authority-data"]),
        ("admin.crt", kubeconfig["users"][0]["user"]["client-certificate-data"]),
        ("admin.key", kubeconfig["users"][0]["user"]["client-key-data"]),
    ):
        (tmp_path / name).write_bytes(base64.b64decode(data))
    (tmp_path / "admin.key").chmod(0o600)
    internal_ip = 'jsonpath={.items[0].status.addresses[?(@.type=="InternalIP")].address}'
    node_ip = cluster.kubectl("get", "nodes", "-o", internal_ip).split()[0]
    scrape = (
        _readme_scrape_config()
        .replace("127.0.0.1:6443", f"127.0.0.1:{cluster.port}")
        .replace("/var/lib/sampan/", f"{cluster.data}/")
        .replace("192.168.1.10:", f"{node_ip}:")
    )
    config = tmp_path / "prometheus.yml"
    config.write_text("global: {scrape_interval: 1s, scrape_timeout: 1s}\n" + scrape)
    port = free_port()
    log = (tmp_path / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [
            prometheus,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:

        def query(promql: str) -> list[dict[str, Any]]:
            assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()[-3000:]
            return _query(port, promql)

        for job in ("sampan-apiserver", "sampan-kubelet", "sampan-cadvisor"):
            cluster.wait(f"the {job} target to be up", lambda j=job: query(f'up{{job="{j}"}} == 1'))
        verbs = cluster.wait(
            "apiserver_request_total by verb",
            lambda: (
                lambda r: r if {"GET", "LIST"} <= {s["metric"].get("verb") for s in r} else None
            )(query("sum by (verb) (apiserver_request_total)")),
        )
        assert all(float(s["value"][1]) > 0 for s in verbs)
        # The scheduler's and the controllers' series come with the API server's.
        pending = query('scheduler_pending_pods{job="sampan-apiserver"}')
        assert {s["metric"]["queue"] for s in pending} == {
            "active", "backoff", "unschedulable", "gated",
        }  # fmt: skip
        assert cluster.wait(
            "the scheduler's attempts",
            lambda: query('scheduler_schedule_attempts_total{result="scheduled"} > 0'),
        )
        assert query('workqueue_adds_total{job="sampan-apiserver",name="deployment"}')
        # The node's: kubelet, proxy (and cAdvisor's container series).
        assert cluster.wait(
            "the sleeper's pod start", lambda: query("kubelet_pod_start_duration_seconds_count > 0")
        )
        assert query('kubelet_running_pods{job="sampan-kubelet"} > 0')
        assert query("kubeproxy_sync_proxy_rules_last_timestamp_seconds > 0")
        # The node's DNS server, named as CoreDNS's.
        cluster.kubectl(
            "exec", "sleeper", "--", "nslookup", "kubernetes.default.svc.cluster.local",
            check=False,
        )  # fmt: skip
        assert cluster.wait(
            "CoreDNS-named DNS series",
            lambda: query('coredns_dns_responses_total{job="sampan-kubelet",rcode="NOERROR"} > 0'),
        )
        assert query('container_cpu_usage_seconds_total{job="sampan-cadvisor",pod="sleeper"}')
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
