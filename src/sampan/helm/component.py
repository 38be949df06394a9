"""The supervisor component "helm-controller": CRDs first, then the controller under a Lease.

``start(ctx)`` starts one root task, ``helm-controller-start``, and returns once the CRDs are
served (or after ``START_WAIT_S``, the task going on). The task

1. creates (or updates) the ``helmcharts`` and ``helmchartconfigs`` CustomResourceDefinitions
   and waits until the API serves them (retrying while the API is not ready);
2. starts a ``ControllerManager`` that runs only ``HelmChartController`` under its own Lease
   ``kube-system/helm-controller`` (one leader among servers, apart from
   kube-controller-manager's).

It runs with cluster-admin rights (as K3s's Helm jobs do): a chart may create any kind.
``--disable=helm-controller`` or ``--disable-helm-controller`` leaves the component out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from sampan.client import Client, ClientConfig, ClientError, crds
from sampan.controllers.base import ControllerManagerOptions
from sampan.controllers.manager import ControllerManager
from sampan.helm.controller import CONTROLLER_NAME, HelmOptions, helm_controller_class
from sampan.helm.crd import HELMCHARTCONFIGS, HELMCHARTS, helm_crds

__all__ = ["COMPONENT_NAME", "LEASE_NAME", "HelmControllerComponent", "ensure_crds"]

log = logging.getLogger(__name__)

COMPONENT_NAME = "helm-controller"
LEASE_NAME = "helm-controller"
USER_AGENT = "sampan-helm-controller"
CRD_RETRY_S = 2.0
START_WAIT_S = 30.0
"""How long ``start`` waits for the CRDs before returning anyway (the root task goes on)."""


async def ensure_crds(client: Client) -> None:
    """Create or update the two CRDs, then wait until both kinds are served."""
    await crds.ensure_crds(client, helm_crds(), (HELMCHARTS, HELMCHARTCONFIGS))


class HelmControllerComponent:
    """See the module docstring."""

    name = COMPONENT_NAME

    def __init__(
        self,
        client_config: ClientConfig,
        options: HelmOptions,
        manager_options: ControllerManagerOptions | None = None,
    ) -> None:
        self._client_config = client_config.with_user_agent(USER_AGENT)
        self._options = options
        self._manager_options = (manager_options or ControllerManagerOptions()).with_changes(
            controllers=("*",)
        )
        self._root: asyncio.Task[None] | None = None
        self._started = asyncio.Event()
        self.manager: ControllerManager | None = None

    async def wait_started(self) -> None:
        """Until the CRDs are served and the controller manager has started (``start`` waits
        on it, bounded; tests wait on it unbounded instead of sleeping)."""
        await self._started.wait()

    async def start(self, ctx: Any = None) -> None:
        if self._root is not None:
            raise RuntimeError("helm controller already started")
        self._root = asyncio.get_running_loop().create_task(
            self._run(ctx), name="helm-controller-start"
        )
        self._root.add_done_callback(lambda task: self._root_ended(task, ctx))
        # Wait (bounded) for the CRDs, so that components started after this one (the
        # manifests of <data-dir>/server/manifests) find the HelmChart kind served.
        waiter = asyncio.get_running_loop().create_task(
            self.wait_started(), name="helm-controller-wait-started"
        )
        try:
            await asyncio.wait(
                {self._root, waiter}, timeout=START_WAIT_S, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            waiter.cancel()

    @staticmethod
    def _root_ended(task: asyncio.Task[None], ctx: Any) -> None:
        if task.cancelled() or task.exception() is None:
            return
        log.error("helm-controller: start failed: %r", task.exception(), exc_info=task.exception())
        if ctx is not None:
            ctx.fail(f"helm controller failed to start: {task.exception()}")

    async def _run(self, ctx: Any) -> None:
        async with Client(self._client_config) as client:
            while True:
                try:
                    await ensure_crds(client)
                    break
                except (ClientError, OSError) as exc:  # API errors, transport errors
                    log.warning("helm-controller: cannot install its CRDs yet: %s", exc)
                    await asyncio.sleep(CRD_RETRY_S)
        manager = ControllerManager(
            self._client_config,
            self._manager_options,
            controllers={CONTROLLER_NAME: helm_controller_class(self._options)},
            lease_name=LEASE_NAME,
            user_agent=USER_AGENT,
        )
        self.manager = manager
        await manager.start(ctx)
        self._started.set()

    async def stop(self) -> None:
        root, self._root = self._root, None
        if root is not None and not root.done():
            root.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await root
        manager, self.manager = self.manager, None
        if manager is not None:
            await manager.stop()

    def health(self) -> dict[str, bool]:
        """Per running controller: healthy? (empty before the CRDs exist or as a follower)."""
        return self.manager.health() if self.manager is not None else {}
