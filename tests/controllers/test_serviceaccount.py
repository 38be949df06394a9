"""Default ServiceAccount and kube-root-ca.crt in every namespace, against a real API server."""

from __future__ import annotations

from sampan.client import Client, NotFoundError
from sampan.client.api import CONFIGMAPS, NAMESPACES, SERVICEACCOUNTS
from sampan.controllers.serviceaccount import (
    ROOT_CA_CONFIGMAP,
    ROOT_CA_KEY,
    RootCACertPublisher,
    ServiceAccountsController,
)

from .conftest import eventually


async def _exists(client: Client, resource, name: str, namespace: str) -> bool:
    try:
        await client.get(resource, name, namespace=namespace)
    except NotFoundError:
        return False
    return True


async def test_default_service_account_in_every_namespace(client: Client, run_controller) -> None:
    await run_controller(ServiceAccountsController)
    await client.create(NAMESPACES, {"metadata": {"name": "team"}})
    for namespace in ("default", "kube-system", "team"):
        await eventually(lambda ns=namespace: _exists(client, SERVICEACCOUNTS, "default", ns))
    await client.delete(SERVICEACCOUNTS, "default", namespace="team")
    await eventually(lambda: _exists(client, SERVICEACCOUNTS, "default", "team"))
    # Other service accounts are not the controller's business.
    await client.create(SERVICEACCOUNTS, {"metadata": {"name": "bot"}}, namespace="team")
    await client.delete(SERVICEACCOUNTS, "bot", namespace="team")
    assert not await _exists(client, SERVICEACCOUNTS, "bot", "team")


async def test_root_ca_configmap_published_and_restored(
    client: Client, run_controller, api_server
) -> None:
    await run_controller(RootCACertPublisher)
    await client.create(NAMESPACES, {"metadata": {"name": "team"}})
    ca_pem = api_server.client_config().ca_pem.decode()

    async def published() -> dict | None:
        try:
            cm = await client.get(CONFIGMAPS, ROOT_CA_CONFIGMAP, namespace="team")
        except NotFoundError:
            return None
        return cm if cm["data"] == {ROOT_CA_KEY: ca_pem} else None

    cm = await eventually(published)
    assert "kubernetes.io/description" in cm["metadata"]["annotations"]
    await eventually(lambda: _exists(client, CONFIGMAPS, ROOT_CA_CONFIGMAP, "kube-system"))

    cm["data"] = {ROOT_CA_KEY: "tampered"}
    await client.update(CONFIGMAPS, cm, namespace="team")
    await eventually(published)
    await client.delete(CONFIGMAPS, ROOT_CA_CONFIGMAP, namespace="team")
    await eventually(published)
