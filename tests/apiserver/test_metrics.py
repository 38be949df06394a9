"""``/metrics`` on the API server: Prometheus text with kube-apiserver's names and labels,
authenticated and authorized as the non-resource URL ``/metrics``."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.apiserver.conftest import ServerHarness

pytestmark = pytest.mark.asyncio


async def test_metrics_counts_requests(harness: ServerHarness) -> None:
    status, _ = await harness.request("GET", "/api/v1/namespaces/default/pods")
    assert status == 200
    status, _ = await harness.request("GET", "/api/v1/namespaces/default/pods/missing")
    assert status == 404
    status, text = await harness.request("GET", "/metrics")
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(text)}
    samples = families["apiserver_request"].samples
    lists = [
        s
        for s in samples
        if s.name == "apiserver_request_total"
        and s.labels["verb"] == "LIST"
        and s.labels["resource"] == "pods"
    ]
    assert lists and lists[0].labels["scope"] == "namespace" and lists[0].labels["code"] == "200"
    assert lists[0].labels["version"] == "v1" and lists[0].labels["component"] == "apiserver"
    gets = [
        s
        for s in samples
        if s.name == "apiserver_request_total"
        and s.labels["verb"] == "GET"
        and s.labels["resource"] == "pods"
    ]
    assert gets[0].labels["code"] == "404" and gets[0].labels["scope"] == "resource"
    buckets = [
        s
        for s in families["apiserver_request_duration_seconds"].samples
        if s.name == "apiserver_request_duration_seconds_bucket"
        and s.labels["verb"] == "LIST"
        and s.labels["resource"] == "pods"
    ]
    assert [b.labels["le"] for b in buckets][:3] == ["0.005", "0.025", "0.05"]
    assert buckets[-1].labels["le"] == "+Inf" and buckets[-1].value >= 1
    assert "apiserver_current_inflight_requests" in families
    stored = {s.labels["resource"]: s.value for s in families["apiserver_storage_objects"].samples}
    assert stored["namespaces"] >= 4  # default, kube-system, kube-public, kube-node-lease
    assert stored["clusterroles.rbac.authorization.k8s.io"] > 10


def _watch_cache_bytes(text: str) -> dict[str, float]:
    families = {f.name: f for f in text_string_to_metric_families(text)}
    return {s.labels["resource"]: s.value for s in families["apiserver_watch_cache_bytes"].samples}


async def test_watch_cache_bytes_follow_creates_and_deletes(harness: ServerHarness) -> None:
    """``apiserver_watch_cache_bytes`` covers at least the served JSON of the cached objects,
    grows with a create and comes back when the object is gone."""
    _, text = await harness.request("GET", "/metrics")
    before = _watch_cache_bytes(text).get("configmaps", 0.0)
    body = {"metadata": {"name": "sized"}, "data": {"blob": "x" * 50_000}}
    status, _ = await harness.request("POST", "/api/v1/namespaces/default/configmaps", body)
    assert status == 201
    # A consistent GET is served once the watch cache holds the create.
    status, _ = await harness.request("GET", "/api/v1/namespaces/default/configmaps/sized")
    assert status == 200
    _, text = await harness.request("GET", "/metrics")
    grown = _watch_cache_bytes(text)["configmaps"]
    assert 50_000 < grown - before < 60_000
    status, _ = await harness.request("DELETE", "/api/v1/namespaces/default/configmaps/sized")
    assert status == 200
    status, _ = await harness.request("GET", "/api/v1/namespaces/default/configmaps/sized")
    assert status == 404
    _, text = await harness.request("GET", "/metrics")
    assert _watch_cache_bytes(text).get("configmaps", 0.0) == before


async def test_metrics_needs_the_rbac_rule(harness: ServerHarness) -> None:
    async with harness.anonymous_session() as session, session.get("/metrics") as response:
        anonymous_status = response.status
    assert anonymous_status == 401
    status, body = await harness.request("GET", "/metrics", headers={"Impersonate-User": "alice"})
    assert status == 403
    assert body["message"] == ('forbidden: User "alice" cannot get path "/metrics"')
    status, _ = await harness.request(
        "GET",
        "/metrics",
        headers={"Impersonate-User": "prometheus", "Impersonate-Group": "system:monitoring"},
    )
    assert status == 200
