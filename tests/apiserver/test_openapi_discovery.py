"""Aggregated discovery (apidiscovery.k8s.io/v2): served when asked for, consistent with the
legacy documents, and what the real kubectl uses (two discovery requests per command)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil

import pytest

from sampan.apiserver.discovery import AGGREGATED_V2, aggregated_media_type

KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"
KUBECTL_ACCEPT = (
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,"
    "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,"
    "application/json"
)


def test_media_type_negotiation():
    assert aggregated_media_type(KUBECTL_ACCEPT) == AGGREGATED_V2
    assert aggregated_media_type("application/json") is None
    assert aggregated_media_type("") is None
    v2beta1_only = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"
    assert aggregated_media_type(v2beta1_only) is None


async def get(harness, path: str, accept: str) -> tuple[int, str, dict]:
    assert harness.session is not None
    async with harness.session.get(path, headers={"Accept": accept}) as response:
        return (
            response.status,
            response.headers["Content-Type"],
            await response.json(content_type=None),
        )


async def test_aggregated_matches_legacy(harness):
    status, content_type, apis = await get(harness, "/apis", KUBECTL_ACCEPT)
    assert status == 200 and content_type == AGGREGATED_V2
    assert apis["kind"] == "APIGroupDiscoveryList"
    assert apis["apiVersion"] == "apidiscovery.k8s.io/v2"
    groups = {item["metadata"]["name"]: item for item in apis["items"]}
    _, _, legacy_groups = await get(harness, "/apis", "application/json")
    assert list(groups) == [g["name"] for g in legacy_groups["groups"]]
    for legacy_group in legacy_groups["groups"]:
        versions = groups[legacy_group["name"]]["versions"]
        assert versions[0]["version"] == legacy_group["preferredVersion"]["version"]
        for version in versions:
            gv = f"{legacy_group['name']}/{version['version']}"
            _, _, legacy = await get(harness, f"/apis/{gv}", "application/json")
            expected = {r["name"] for r in legacy["resources"] if "/" not in r["name"]}
            assert {r["resource"] for r in version["resources"]} == expected, gv
    apps = {r["resource"]: r for r in groups["apps"]["versions"][0]["resources"]}
    deployments = apps["deployments"]
    assert deployments["scope"] == "Namespaced" and deployments["shortNames"] == ["deploy"]
    assert deployments["responseKind"] == {"group": "apps", "version": "v1", "kind": "Deployment"}
    scale = next(s for s in deployments["subresources"] if s["subresource"] == "scale")
    assert scale["responseKind"] == {"group": "autoscaling", "version": "v1", "kind": "Scale"}

    status, content_type, core = await get(harness, "/api", KUBECTL_ACCEPT)
    assert status == 200 and content_type == AGGREGATED_V2
    (item,) = core["items"]
    (v1,) = item["versions"]
    pods = next(r for r in v1["resources"] if r["resource"] == "pods")
    assert pods["responseKind"]["kind"] == "Pod" and pods["scope"] == "Namespaced"
    namespaces = next(r for r in v1["resources"] if r["resource"] == "namespaces")
    assert namespaces["scope"] == "Cluster"
    # Without the aggregated media type, /api stays the legacy APIVersions.
    _, content_type, legacy_core = await get(harness, "/api", "application/json")
    assert legacy_core["kind"] == "APIVersions" and content_type.startswith("application/json")


async def test_aggregated_discovery_revalidates_with_etag(harness):
    """kube-apiserver's validators on aggregated discovery: an ETag (Vary: Accept,
    Cache-Control: public) and a 304 without a body when If-None-Match repeats it."""
    assert harness.session is not None
    for path in ("/api", "/apis"):
        async with harness.session.get(path, headers={"Accept": KUBECTL_ACCEPT}) as response:
            assert response.status == 200
            etag = response.headers["ETag"]
            assert response.headers["Vary"] == "Accept"
            assert response.headers["Cache-Control"] == "public"
            body = await response.read()
        assert etag == '"' + hashlib.sha512(body).hexdigest().upper() + '"'
        headers = {"Accept": KUBECTL_ACCEPT, "If-None-Match": etag}
        async with harness.session.get(path, headers=headers) as response:
            assert response.status == 304
            assert response.headers["ETag"] == etag
            assert await response.read() == b""
        headers["If-None-Match"] = '"0123"'
        async with harness.session.get(path, headers=headers) as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == AGGREGATED_V2
            assert await response.read() == body


@pytest.mark.skipif(not os.path.exists(KUBECTL), reason="kubectl is not installed")
async def test_kubectl_uses_aggregated_discovery(harness):
    env = dict(os.environ, KUBECONFIG=str(harness.kubeconfig), HOME=str(harness.data_dir))
    process = await asyncio.create_subprocess_exec(
        KUBECTL,
        "api-resources",
        "-v=6",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    assert "deployments" in out.decode() and "apps/v1" in out.decode()
    requests = [line for line in err.decode().splitlines() if " GET https://" in line]
    assert len(requests) == 2, requests  # /api and /apis, no per-group-version documents
