"""Installing a component's own CustomResourceDefinitions (the helm controller's, the
manager's): create each, or update it when its spec differs from the one the component
ships, then wait until the API serves every kind (a LIST answers instead of 404).

Invariant: a CRD already stored with the same spec is left untouched (no write at every start)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from sampan.client.api import AlreadyExistsError, Client, NotFoundError, Resource

__all__ = ["CRDS", "ensure_crds"]

CRDS = Resource(
    "apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", False
)
POLL_S = 0.1


async def ensure_crds(
    client: Client, crds: Iterable[dict[str, Any]], served: Iterable[Resource]
) -> None:
    """Create or update ``crds``, then wait until each of ``served`` answers a LIST."""
    for crd in crds:
        try:
            await client.create(CRDS, crd)
        except AlreadyExistsError:
            current = await client.get(CRDS, crd["metadata"]["name"])
            if current.get("spec") != crd["spec"]:
                metadata = {
                    **crd["metadata"],
                    "resourceVersion": current["metadata"]["resourceVersion"],
                }
                await client.update(CRDS, {**crd, "metadata": metadata})
    for resource in served:
        while True:
            try:
                await client.list(resource, limit=1)
                break
            except NotFoundError:
                await asyncio.sleep(POLL_S)
