"""A key whose reconcile keeps hitting 409 Conflict backs off exponentially.

The controllers used to catch ``ConflictError`` inside ``reconcile`` and requeue the key
themselves; the base then saw a normal return and ``forget()`` reset the key's back-off, so
a key that conflicted again and again was retried every 5 ms forever. Now the base owns the
conflict path: each conflict is one more failure for that key's rate limiter.

The conflicts here come from beneath ``reconcile`` (the controller's status write), as they
do in a real cluster, so the test covers whatever a controller does with them.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from sampan.client import Client, ConflictError
from sampan.client.api import DEPLOYMENTS, REPLICASETS
from sampan.controllers.deployment import DeploymentController
from sampan.controllers.replicaset import ReplicaSetController

from .conftest import RunController, eventually

NS = "default"
CONFLICTS = 5


def _template(name: str) -> dict[str, Any]:
    return {
        "replicas": 1,
        "selector": {"matchLabels": {"app": name}},
        "template": {
            "metadata": {"labels": {"app": name}},
            "spec": {"containers": [{"name": "c", "image": "busybox:1"}]},
        },
    }


@pytest.mark.parametrize(
    ("cls", "resource"),
    [(DeploymentController, DEPLOYMENTS), (ReplicaSetController, REPLICASETS)],
    ids=["deployment", "replicaset"],
)
async def test_repeated_conflicts_back_off_exponentially(
    client: Client, run_controller: RunController, cls: type, resource: Any
) -> None:
    controller = await run_controller(cls, workers=1)
    name = f"conflicted-{resource.plural}"
    key = f"{NS}/{name}"

    real_update_status = controller.ctx.client.update_status
    requeues_seen: list[int] = []

    async def update_status(res: Any, body: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        if res == resource and body["metadata"]["name"] == name:
            requeues_seen.append(controller.queue.num_requeues(key))
            if len(requeues_seen) <= CONFLICTS:
                raise ConflictError(
                    {"code": 409, "reason": "Conflict", "message": "the object has been modified"}
                )
        return await real_update_status(res, body, **kwargs)

    delays: list[float] = []
    real_add_after = controller.queue.add_after

    def add_after(k: str, delay_s: float) -> None:
        if k == key:
            delays.append(delay_s)
        real_add_after(k, delay_s)

    controller.ctx.client.update_status = update_status
    controller.queue.add_after = add_after

    await client.create(
        resource, {"metadata": {"name": name, "namespace": NS}, "spec": _template(name)}
    )

    async def written() -> bool:
        obj = await client.get(resource, name, namespace=NS)
        return len(requeues_seen) > CONFLICTS and bool(obj.get("status"))

    await eventually(written)
    # Each conflict counted as one more failure of the key: 0, 1, 2, 3, 4 before the
    # conflicting writes, 5 before the one that went through.
    assert requeues_seen[: CONFLICTS + 1] == list(range(CONFLICTS + 1))
    backoff = delays[:CONFLICTS]
    assert len(backoff) == CONFLICTS
    for earlier, later in itertools.pairwise(backoff):
        assert later >= 2 * earlier * 0.999, backoff
    # and once it went through, the key's back-off is forgotten
    await eventually(lambda: _forgotten(controller, key))


async def _forgotten(controller: Any, key: str) -> bool:
    return controller.queue.num_requeues(key) == 0
