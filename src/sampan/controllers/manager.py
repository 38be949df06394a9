"""The controller manager: the supervisor component "controllers".

This module owns running the registered controllers under leader election:

* ``start(ctx)`` makes one ``Client`` and starts one root task, ``controllers-manager``, and
  returns at once (being a follower is a ready state).
* The root task competes for the Lease ``kube-system/kube-controller-manager`` (unless
  ``options.leader_elect`` is false). While leading — one *term* — it builds a new
  ``SharedInformerFactory`` and ``ControllerContext``, instantiates every enabled controller
  from the registry, starts the informers and runs each controller as a task named
  ``controller-<name>``. A term ends when the lease is lost or on ``stop()``: every controller
  task is cancelled and awaited, then the informers and the Event recorders are stopped. After
  a lost lease the manager competes again (a fresh term starts from fresh informers).
* ``stop()`` cancels the root task, which releases the lease (so a peer takes over at once),
  then closes the client.

A controller whose constructor raises ``ControllerDisabled`` is not run (its reason logged);
one whose constructor raises anything else is skipped for the term (logged); one whose ``run``
fails is logged and reported unhealthy until the next term. Nothing here touches objects: that
is the controllers' business.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

from sampan.client import Client, ClientConfig, LeaderElector, SharedInformerFactory, compact
from sampan.client.events import TYPE_NORMAL
from sampan.client.metrics import WorkQueueMetrics
from sampan.client.workqueue import Clock
from sampan.controllers.base import (
    Controller,
    ControllerContext,
    ControllerDisabled,
    ControllerManagerOptions,
)

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = [
    "COMPONENT_NAME",
    "LEASE_NAME",
    "LEASE_NAMESPACE",
    "USER_AGENT",
    "ControllerManager",
]

log = logging.getLogger(__name__)

COMPONENT_NAME = "controllers"
LEASE_NAMESPACE = "kube-system"
LEASE_NAME = "kube-controller-manager"
USER_AGENT = "sampan-controller-manager"
LEADER_ELECTION_SOURCE = "kube-controller-manager"
LEASE_REFERENCE = {
    "apiVersion": "coordination.k8s.io/v1",
    "kind": "Lease",
    "namespace": LEASE_NAMESPACE,
    "name": LEASE_NAME,
}
# Pause before competing again after a term ended with an error (not after a lost lease).
RETRY_AFTER_FAILURE_S = 2.0


class _FailureSink(Protocol):
    def fail(self, reason: str) -> None: ...


def default_identity() -> str:
    """``<hostname>_<uuid>``, as upstream's leader-election identity."""
    return f"{socket.gethostname()}_{uuid.uuid4()}"


class ControllerManager:
    """Run the registered controllers while holding the controller-manager Lease."""

    name = COMPONENT_NAME

    def __init__(
        self,
        client_config: ClientConfig,
        options: ControllerManagerOptions | None = None,
        *,
        controllers: Mapping[str, type[Controller]] | None = None,
        clock: Clock | None = None,
        lease_name: str = LEASE_NAME,
        user_agent: str = USER_AGENT,
        metrics_registry: CollectorRegistry | None = None,
    ) -> None:
        """``controllers`` defaults to ``registry.CONTROLLERS`` (tests pass a subset).
        ``lease_name``: another set of controllers (the helm controller) runs under its own
        Lease in kube-system, so it elects its leader apart from kube-controller-manager.
        ``metrics_registry`` gets the work queues' ``workqueue_*`` series (the supervisor
        passes the registry the API server serves on ``/metrics``)."""
        self.client_config = client_config.with_user_agent(user_agent)
        self.lease_name = lease_name
        self.options = options or ControllerManagerOptions()
        self.identity = self.options.identity or default_identity()
        self._controllers = controllers
        self._clock = clock
        self._queue_metrics = (
            WorkQueueMetrics.of(metrics_registry) if metrics_registry is not None else None
        )
        self._client: Client | None = None
        self._root: asyncio.Task[None] | None = None
        self._elector: LeaderElector | None = None
        self._running: dict[str, Controller] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._leading = False
        self.terms = 0
        """How many terms have started (tests use it to see a takeover)."""

    # -- component interface -----------------------------------------------------------------

    async def start(self, ctx: _FailureSink | None = None) -> None:
        if self._root is not None:
            raise RuntimeError("controller manager already started")
        self._client = Client(self.client_config)
        self._root = asyncio.get_running_loop().create_task(self._run(), name="controllers-manager")
        self._root.add_done_callback(lambda task: self._root_ended(task, ctx))

    async def stop(self) -> None:
        root, self._root = self._root, None
        if root is not None:
            root.cancel()
            try:
                await root
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise
            except Exception:
                pass  # already logged by _root_ended
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    # -- state -------------------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        return self._leading

    def health(self) -> dict[str, bool]:
        """Per running controller: healthy? Empty while not leading (a follower is fine)."""
        result: dict[str, bool] = {}
        for name, controller in self._running.items():
            task = self._tasks.get(name)
            alive = task is not None and not task.done()
            try:
                result[name] = alive and bool(controller.healthy())
            except Exception:
                log.exception("controllers: %s.healthy() failed", name)
                result[name] = False
        return result

    def controller(self, name: str) -> Controller | None:
        """The running instance of ``name`` in the current term (None when not leading)."""
        return self._running.get(name)

    # -- the root task -----------------------------------------------------------------------

    def _root_ended(self, task: asyncio.Task[None], ctx: _FailureSink | None) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            return
        log.error("controllers: manager failed: %r", exc, exc_info=exc)
        if ctx is not None:
            ctx.fail(f"controller manager failed: {exc}")

    async def _run(self) -> None:
        assert self._client is not None
        if not self.options.leader_elect:
            await self._lead()
            return
        while True:
            self._elector = LeaderElector(
                self._client,
                LEASE_NAMESPACE,
                self.lease_name,
                self.identity,
                self._lead,
                self._stopped_leading,
                lease_duration_s=self.options.lease_duration_s,
                renew_deadline_s=self.options.renew_deadline_s,
                retry_period_s=self.options.retry_period_s,
                on_new_leader=self._new_leader,
            )
            try:
                await self._elector.run()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("controllers: term ended with an error; competing again")
                await asyncio.sleep(RETRY_AFTER_FAILURE_S)

    def _new_leader(self, identity: str) -> None:
        if identity != self.identity:
            log.info("controllers: %s is the leader", identity)

    def _stopped_leading(self) -> None:
        log.info("controllers: %s stopped leading", self.identity)

    async def _lead(self) -> None:
        """One term: build, run until cancelled, tear down."""
        assert self._client is not None
        from sampan.controllers.registry import CONTROLLERS

        registry = self._controllers if self._controllers is not None else CONTROLLERS
        self.terms += 1
        factory = SharedInformerFactory(self._client, transform=compact)
        context = ControllerContext(
            self._client, factory, self.options, self._clock, self._queue_metrics
        )
        self._leading = True
        log.info(
            "controllers (%s): term %d started by %s", self.lease_name, self.terms, self.identity
        )
        if self.options.leader_elect:
            context.recorder(LEADER_ELECTION_SOURCE).event(
                {**LEASE_REFERENCE, "name": self.lease_name},
                TYPE_NORMAL,
                "LeaderElection",
                f"{self.identity} became leader",
            )
        try:
            for name, cls in registry.items():
                if not self.options.enabled(name):
                    log.info("controllers: %s disabled", name)
                    continue
                try:
                    self._running[name] = cls(context)
                except ControllerDisabled as why:
                    log.info("controllers: %s disabled: %s", name, why)
                except Exception:
                    log.exception("controllers: could not build %s; skipped this term", name)
            factory.start()
            loop = asyncio.get_running_loop()
            for name, controller in self._running.items():
                task = loop.create_task(
                    controller.run(self.options.workers(name)), name=f"controller-{name}"
                )
                task.add_done_callback(_log_controller_end)
                self._tasks[name] = task
            log.info("controllers: running %s", ", ".join(sorted(self._running)) or "none")
            await asyncio.Event().wait()  # until cancelled: the term ends
        finally:
            await asyncio.shield(self._end_term(factory, context))

    async def _end_term(self, factory: SharedInformerFactory, context: ControllerContext) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        self._tasks.clear()
        self._running.clear()
        self._leading = False
        try:
            await factory.stop()
        except Exception:
            log.exception("controllers: stopping informers failed")
        try:
            await context.aclose()
        except Exception:
            log.exception("controllers: stopping event recorders failed")
        log.info("controllers (%s): term %d ended", self.lease_name, self.terms)


def _log_controller_end(task: asyncio.Task[None]) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.error("controllers: %s failed: %r", task.get_name(), exc, exc_info=exc)
    else:
        log.warning("controllers: %s returned before its term ended", task.get_name())
