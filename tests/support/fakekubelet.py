"""A fake kubelet for controller tests: pods become Running and Ready with no containers.

``mark_running(client, pod)`` plays the scheduler and the kubelet for one pod: it binds an
unbound pod (to ``node-1`` unless told), then writes ``phase: Running`` and a True ``Ready``
condition through the status subresource.

``FakeKubelet(client, namespace)`` is an async context manager running a loop (every 50 ms)
over the namespace's pods: it finishes graceful deletions (delete with grace 0, as the
kubelet does once containers stop) and marks every pod that is not Running, except those
named in ``held`` or labelled ``hold: "yes"``, and none while ``paused``. ``started`` lists
the pods in the order they were marked. Errors (a pod deleted meanwhile, a conflict) are
retried on the next pass.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from sampan.client import Client
from sampan.client.api import PODS
from sampan.controllers.podcontrol import format_time, wall_now

__all__ = ["FakeKubelet", "mark_running"]

POLL_INTERVAL_S = 0.05


async def mark_running(
    client: Client, pod: dict[str, Any], node: str = "node-1", *, now: str | None = None
) -> None:
    """Bind ``pod`` to ``node`` if unbound, then Running + Ready (transition time ``now``)."""
    name = pod["metadata"]["name"]
    namespace = pod["metadata"]["namespace"]
    if not pod["spec"].get("nodeName"):
        await client.create_subresource(
            PODS,
            name,
            "binding",
            {
                "apiVersion": "v1",
                "kind": "Binding",
                "metadata": {"name": name, "namespace": namespace},
                "target": {"apiVersion": "v1", "kind": "Node", "name": node},
            },
            namespace=namespace,
        )
    stamp = now or format_time(wall_now())
    await client.patch(
        PODS,
        name,
        {
            "status": {
                "phase": "Running",
                "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": stamp}],
            }
        },
        namespace=namespace,
        subresource="status",
    )


class FakeKubelet:
    """See the module docstring. ``node_for(pod)`` picks the node an unbound pod is bound to."""

    def __init__(
        self,
        client: Client,
        namespace: str,
        *,
        node_for: Callable[[dict[str, Any]], str] | None = None,
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.node_for = node_for or (lambda _pod: "node-1")
        self.held: set[str] = set()
        self.paused = False
        self.started: list[str] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> FakeKubelet:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="test-fake-kubelet")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def _holds(self, pod: dict[str, Any]) -> bool:
        labels = pod["metadata"].get("labels") or {}
        return pod["metadata"]["name"] in self.held or labels.get("hold") == "yes"

    async def _loop(self) -> None:
        while True:
            if not self.paused:
                await self._pass()
            await asyncio.sleep(POLL_INTERVAL_S)

    async def _pass(self) -> None:
        for pod in (await self.client.list(PODS, namespace=self.namespace))["items"]:
            name = pod["metadata"]["name"]
            if pod["metadata"].get("deletionTimestamp"):
                with contextlib.suppress(Exception):
                    await self.client.delete(PODS, name, namespace=self.namespace, grace_period_s=0)
                continue
            if self._holds(pod) or (pod.get("status") or {}).get("phase") == "Running":
                continue
            with contextlib.suppress(Exception):
                await mark_running(self.client, pod, self.node_for(pod))
                self.started.append(name)
