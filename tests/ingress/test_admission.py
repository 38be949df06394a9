"""DefaultIngressClass admission against an in-process API server."""

from __future__ import annotations

from typing import Any

from sampan.client import Client
from sampan.client.api import INGRESSCLASSES, INGRESSES
from tests.support.apiserver import api_server, client  # noqa: F401


def klass(name: str, default: bool) -> dict[str, Any]:
    annotations = {"ingressclass.kubernetes.io/is-default-class": "true"} if default else {}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "IngressClass",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"controller": f"example.com/{name}"},
    }


def ingress(name: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": name, "annotations": extra.pop("annotations", {})},
        "spec": {
            "defaultBackend": {"service": {"name": "s", "port": {"number": 80}}},
            **extra,
        },
    }
    return body


async def test_new_ingresses_get_the_default_class(client: Client) -> None:  # noqa: F811
    created = await client.create(INGRESSES, ingress("before"), namespace="default")
    assert "ingressClassName" not in created["spec"]  # no default class yet
    await client.create(INGRESSCLASSES, klass("other", False))
    await client.create(INGRESSCLASSES, klass("main", True))
    created = await client.create(INGRESSES, ingress("a"), namespace="default")
    assert created["spec"]["ingressClassName"] == "main"
    created = await client.create(
        INGRESSES, ingress("b", ingressClassName="other"), namespace="default"
    )
    assert created["spec"]["ingressClassName"] == "other"
    created = await client.create(
        INGRESSES,
        ingress("c", annotations={"kubernetes.io/ingress.class": "legacy"}),
        namespace="default",
    )
    assert "ingressClassName" not in created["spec"]
    # an update does not default
    before = await client.get(INGRESSES, "before", namespace="default")
    before["metadata"]["labels"] = {"x": "y"}
    updated = await client.update(INGRESSES, before, namespace="default")
    assert "ingressClassName" not in updated["spec"]
