"""Metrics on a whole single-node cluster (``sampan server`` as a user runs it): the kubelet's
Summary API through the API server's node proxy shows a busy pod's CPU, the API server's
``/metrics`` answers, the metrics-server add-on is served through API aggregation
(``kubectl top nodes|pods``), and the HPA controller reads the busy pod's CPU through it and
scales the Deployment up."""

from __future__ import annotations

import json

import pytest

from tests.e2e.test_single_node import Cluster, cluster  # noqa: F401 - fixture used by name

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
        "sh", "-c", "while :; do :; done",
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
