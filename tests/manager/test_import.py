"""Import: creating a Cluster yields Rancher's registration commands; the import URL serves a
manifest kubectl applies (``kubectl apply -f -`` against the test's real API server);
a wrong token is 404, an expired one 401."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import shutil
from datetime import UTC, datetime, timedelta

import pytest
import yaml

from sampan.client import Client, Resource
from sampan.manager.crds import CLUSTERS, REGISTRATION_TOKENS
from tests.manager.conftest import ManagerHTTP

DEPLOYMENTS = Resource("apps", "v1", "deployments", "Deployment", True)


async def _create(http: ManagerHTTP, admin_token: str) -> dict:
    status, body = await http.call(
        "POST",
        "/v3/clusters",
        token=admin_token,
        json={"name": "edge-1", "description": "the edge"},
    )
    assert status == 201, body
    return body


async def test_create_cluster_gives_registration_commands(
    http: ManagerHTTP, admin_token: str, client: Client
) -> None:
    created = await _create(http, admin_token)
    cluster = created["id"]
    assert cluster.startswith("c-") and created["name"] == "edge-1"
    stored = await client.get(CLUSTERS, cluster)
    assert stored["spec"] == {"displayName": "edge-1", "description": "the edge", "internal": False}
    status, body = await http.call("GET", f"/v3/clusters/{cluster}", token=admin_token)
    assert status == 200
    registration = body["registration"]
    token = registration["token"]
    url = f"{http.base}/v3/import/{token}_{cluster}.yaml"
    assert registration["manifestUrl"] == url
    assert registration["command"] == f"kubectl apply -f {url}"
    assert registration["insecureCommand"] == f"curl --insecure -sfL {url} | kubectl apply -f -"
    status, ca = await http.call("GET", "/cacerts")
    assert registration["caChecksum"] == hashlib.sha256(ca.encode()).hexdigest()
    crt = await client.get(REGISTRATION_TOKENS, f"crt-{cluster}")
    assert crt["spec"]["clusterName"] == cluster
    assert crt["metadata"]["ownerReferences"][0]["name"] == cluster
    # A second cluster of the same name is refused.
    status, body = await http.call(
        "POST", "/v3/clusters", token=admin_token, json={"name": "edge-1"}
    )
    assert status == 409 and body["code"] == "NotUnique"
    status, body = await http.call("POST", "/v3/clusters", token=admin_token, json={})
    assert status == 422 and body["code"] == "MissingRequired"


async def test_import_manifest(
    http: ManagerHTTP, admin_token: str, api_server, client: Client
) -> None:
    created = await _create(http, admin_token)
    cluster, token = created["id"], created["registration"]["token"]
    # No authentication but the token in the path.
    status, text = await http.call("GET", f"/v3/import/{token}_{cluster}.yaml")
    assert status == 200
    documents = list(yaml.safe_load_all(text))
    kinds = [(d["kind"], d["metadata"]["name"]) for d in documents]
    assert kinds == [
        ("Namespace", "sampan-system"),
        ("ServiceAccount", "sampan-cluster-agent"),
        ("ClusterRoleBinding", "sampan-cluster-agent"),
        ("Secret", "sampan-cluster-agent-credentials"),
        ("Deployment", "sampan-cluster-agent"),
    ]
    binding = documents[2]
    assert binding["roleRef"]["name"] == "cluster-admin"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "sampan-cluster-agent", "namespace": "sampan-system"}
    ]
    secret = documents[3]
    assert base64.b64decode(secret["data"]["token"]).decode() == token
    pod = documents[4]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "sampan-cluster-agent"
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["SAMPAN_MANAGER_URL"]["value"] == http.base
    assert env["SAMPAN_CLUSTER"]["value"] == cluster
    status, ca = await http.call("GET", "/cacerts")
    assert env["SAMPAN_CA_CHECKSUM"]["value"] == hashlib.sha256(ca.encode()).hexdigest()
    assert env["SAMPAN_TOKEN"] == {
        "name": "SAMPAN_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "sampan-cluster-agent-credentials", "key": "token"}},
    }
    assert token not in yaml.safe_dump(documents[4])  # the token only in the Secret
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    process = await asyncio.create_subprocess_exec(
        kubectl,
        "--kubeconfig",
        str(api_server.kubeconfig),
        "apply",
        "-f",
        "-",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate(text.encode())
    assert process.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    assert "namespace/sampan-system created" in lines
    assert "deployment.apps/sampan-cluster-agent created" in lines
    # Applied to this (the test's) cluster: every object is there, as written.
    deployment = await client.get(DEPLOYMENTS, "sampan-cluster-agent", namespace="sampan-system")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"] == http.base


async def test_import_wrong_or_expired_token(
    http: ManagerHTTP, admin_token: str, client: Client
) -> None:
    created = await _create(http, admin_token)
    cluster, token = created["id"], created["registration"]["token"]
    for path in (
        f"/v3/import/{'x' * 54}_{cluster}.yaml",
        f"/v3/import/{token}_c-other.yaml",
        f"/v3/import/{token}_local.yaml",
        f"/v3/import/{token}.yaml",
        f"/v3/import/{token}_{cluster}.json",
    ):
        status, body = await http.call("GET", path)
        assert status == 404 and body["code"] == "NotFound", path
    past = (datetime.now(UTC) - timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    await client.patch(REGISTRATION_TOKENS, f"crt-{cluster}", {"spec": {"expiresAt": past}})
    status, body = await http.call("GET", f"/v3/import/{token}_{cluster}.yaml")
    assert status == 401 and body["code"] == "Unauthorized"


async def test_delete_cluster_removes_token_and_bindings(
    http: ManagerHTTP, admin_token: str, client: Client
) -> None:
    created = await _create(http, admin_token)
    cluster, token = created["id"], created["registration"]["token"]
    status, _ = await http.call("DELETE", f"/v3/clusters/{cluster}", token=admin_token)
    assert status == 200
    assert (await http.call("GET", f"/v3/clusters/{cluster}", token=admin_token))[0] == 404
    assert (await http.call("GET", f"/v3/import/{token}_{cluster}.yaml"))[0] == 404
    assert not (await client.list(REGISTRATION_TOKENS))["items"]
