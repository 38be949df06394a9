"""Shared by the UI tests and ``bench.ui``: a dashboard on an in-process API server.

``dashboard_on(harness)`` starts ``DashboardComponent`` (port 0) in front of the harness's API
server; ``service_account_token(client, name, admin=...)`` makes a service account (bound to
``cluster-admin`` when ``admin``) and answers a TokenRequest token for it.
"""

from __future__ import annotations

from typing import Any

from sampan.client import Client
from sampan.ui.component import DashboardComponent, DashboardOptions

__all__ = ["dashboard_on", "service_account_token"]


async def dashboard_on(harness: Any) -> DashboardComponent:
    component = DashboardComponent(
        DashboardOptions(api_url=harness.url, bind_address="127.0.0.1", port=0),
        harness.server.pki,
    )
    await component.start()
    return component


async def service_account_token(client: Client, name: str, *, admin: bool) -> str:
    ns = "kube-system"
    await client.request(
        "POST",
        f"/api/v1/namespaces/{ns}/serviceaccounts",
        body={"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}},
    )
    if admin:
        await client.request(
            "POST",
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
            body={
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": f"{name}-admin"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "cluster-admin",
                },
                "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": ns}],
            },
        )
    answer = await client.request(
        "POST",
        f"/api/v1/namespaces/{ns}/serviceaccounts/{name}/token",
        body={
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": 3600},
        },
    )
    return str(answer["status"]["token"])
