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
from sampan.version import __version__
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
        ("Secret", "sampan-cluster-agent-token"),
        ("Secret", "sampan-cluster-agent-credentials"),
        ("Deployment", "sampan-cluster-agent"),
    ]
    binding = documents[2]
    assert binding["roleRef"]["name"] == "cluster-admin"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "sampan-cluster-agent", "namespace": "sampan-system"}
    ]
    sa_token = documents[3]
    assert sa_token["type"] == "kubernetes.io/service-account-token"
    assert sa_token["metadata"]["annotations"] == {
        "kubernetes.io/service-account.name": "sampan-cluster-agent"
    }
    status, ca = await http.call("GET", "/cacerts")
    secret = {k: base64.b64decode(v).decode() for k, v in documents[4]["data"].items()}
    assert secret == {
        "SAMPAN_MANAGER_URL": http.base,
        "SAMPAN_CA_CHECKSUM": hashlib.sha256(ca.encode()).hexdigest(),
        "SAMPAN_CLUSTER_NAME": cluster,
        "SAMPAN_TOKEN": token,
    }
    pod = documents[5]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "sampan-cluster-agent"
    assert pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    assert container["image"] == f"docker.io/sampan/cluster-agent:{__version__}"
    assert container["command"] == ["/usr/bin/python3", "-m", "sampan.manager.tunnel"]
    assert container["envFrom"] == [{"secretRef": {"name": "sampan-cluster-agent-credentials"}}]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env == {
        "SAMPAN_ALLOWED_TARGETS": "$(KUBERNETES_SERVICE_HOST):$(KUBERNETES_SERVICE_PORT)",
        "SAMPAN_SERVICEACCOUNT_DIR": "/var/run/secrets/sampan.io/serviceaccount",
    }
    (volume,) = pod["volumes"]
    assert volume["secret"]["secretName"] == "sampan-cluster-agent-token"
    assert container["volumeMounts"][0]["mountPath"] == env["SAMPAN_SERVICEACCOUNT_DIR"]
    assert token not in yaml.safe_dump(documents[5])  # the token only in the Secret
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
    assert (
        deployment["spec"]["template"]["spec"]["containers"][0]["envFrom"] == (container["envFrom"])
    )


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
