"""The supervisor: starts components in order behind readiness, stops them in reverse.

Invariants:

* a component's ``start()`` returns only when it is ready; the next one starts after it, so
  each component can rely on the readiness of everything started before it (datastore ready ->
  API server ready -> ...);
* a component that fails later calls ``ctx.fail(reason)``; the supervisor then shuts everything
  down and the process exits non-zero with that reason in the log. Nothing calls ``sys.exit``
  from inside a task, and ``CancelledError`` is never swallowed;
* SIGTERM and SIGINT request a clean shutdown; components stop in reverse order, each within
  its share of ``STOP_TIMEOUT_S``;
* every task the supervisor spawns is named and awaited before ``run`` returns;
* with a ``Notifier`` (``sampan.supervisor.notify``), systemd hears ``READY=1`` once every
  component is ready and ``STOPPING=1`` when the shutdown begins.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from sampan.supervisor.notify import Notifier

__all__ = ["STOP_TIMEOUT_S", "Component", "ComponentContext", "Supervisor"]

log = logging.getLogger("sampan.supervisor")

STOP_TIMEOUT_S = 10.0
"""All components together must stop within this time after SIGTERM."""


class ComponentContext:
    """What the supervisor hands each component: a way to report a fatal failure."""

    def __init__(self, supervisor: Supervisor, name: str) -> None:
        self._supervisor = supervisor
        self.name = name

    def fail(self, reason: str) -> None:
        self._supervisor.request_stop(f"{self.name} failed: {reason}", failed=True)


class Component(Protocol):
    name: str

    async def start(self, ctx: ComponentContext) -> None:
        """Start and return once ready; raise to abort the whole start."""

    async def stop(self) -> None:
        """Stop and release everything; must be idempotent."""


class Supervisor:
    def __init__(
        self,
        components: Sequence[Component],
        *,
        notifier: Notifier | None = None,
        on_ready: Callable[[], None] | None = None,
    ) -> None:
        """``on_ready``: called once every component has started (``sampan.supervisor.main``
        settles the garbage collector there)."""
        self._components = list(components)
        self._notifier = notifier or Notifier(None)
        self._on_ready = on_ready
        self._stop = asyncio.Event()
        self._reason = ""
        self._failed = False

    def request_stop(self, reason: str, *, failed: bool = False) -> None:
        if not self._stop.is_set():
            self._reason = reason
            self._failed = failed
            self._stop.set()

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop, f"received {sig.name}")

    def _remove_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)

    async def run(self, *, install_signals: bool = True) -> int:
        """Start everything, wait for a stop request, stop everything. Returns the exit code."""
        if install_signals:
            self._install_signals()
        started: list[Component] = []
        try:
            for component in self._components:
                if self._stop.is_set():
                    break
                t0 = time.monotonic()
                log.info("%s: starting", component.name)
                start = asyncio.create_task(
                    component.start(ComponentContext(self, component.name)),
                    name=f"start:{component.name}",
                )
                started.append(component)
                waiter = asyncio.create_task(self._stop.wait(), name="supervisor:stop-wait")
                try:
                    await asyncio.wait({start, waiter}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiter.cancel()
                if not start.done():
                    # A stop was requested while this component was starting.
                    start.cancel()
                    await asyncio.gather(start, return_exceptions=True)
                    break
                exc = start.exception()
                if exc is not None:
                    log.error("%s: failed to start: %s", component.name, exc)
                    log.debug("start failure", exc_info=exc)
                    self.request_stop(f"{component.name} failed to start: {exc}", failed=True)
                    break
                log.info("%s: ready (%.2fs)", component.name, time.monotonic() - t0)
            else:
                log.info("all components ready")
                self._notifier.ready("all components ready")
                if self._on_ready is not None:
                    self._on_ready()
            await self._stop.wait()
            log.info("stopping: %s", self._reason)
            self._notifier.stopping(f"stopping: {self._reason}")
        finally:
            await self._stop_all(started)
            if install_signals:
                self._remove_signals()
        if self._failed:
            log.error("stopped: %s", self._reason)
            return 1
        log.info("stopped")
        return 0

    async def _stop_all(self, started: list[Component]) -> None:
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for component in reversed(started):
            remaining = max(0.5, deadline - time.monotonic())
            try:
                await asyncio.wait_for(component.stop(), timeout=remaining)
                log.info("%s: stopped", component.name)
            except TimeoutError:
                log.error("%s: did not stop within %.1fs", component.name, remaining)
            except Exception as exc:  # report and go on stopping the others
                log.error("%s: error while stopping: %s", component.name, exc)
