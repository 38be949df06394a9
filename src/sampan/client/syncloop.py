"""One lifecycle for the node components that keep something outside the API in step with
informers' caches: the service proxy (iptables), network policy (iptables and ipsets) and
ingress (nginx's configuration).

Such a component owns a :class:`Client`, a :class:`SharedInformerFactory` whose informers wake
one loop, and that loop's task, which syncs when woken and every ``resync_s`` anyway, at most
once per ``min_interval_s``. A subclass says which informers it reads
(:meth:`SyncLoop._add_informers`) and what a sync does (:meth:`SyncLoop._sync`).

Invariants:

* ``start`` returns only once the informers have synced and a first sync has succeeded. If
  either fails, everything ``start`` made is closed again and the error propagates: the node
  never runs with a half-started component.
* A failed sync is logged and retried, after ``error_pause_s``. If the loop itself ends with
  an exception (a bug), the component fails through the supervisor's context; it never dies
  silently.
* ``syncs_started`` counts syncs begun, ``sync_count`` finished ones (failed ones included),
  each counted once; ``last_sync_error`` is set before ``sync_count`` moves.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

from sampan.client.api import Client, ClientConfig
from sampan.client.informer import Informer, SharedInformerFactory

T = TypeVar("T")


class FailureSink(Protocol):
    """What a component reports a dead loop to (the supervisor's component context)."""

    def fail(self, reason: str) -> None: ...


class SyncLoop(abc.ABC):
    """Base of the informer-driven sync components; see the module docstring."""

    name = "sync"
    """The component's name (supervisor, task names)."""
    log_name = "sync"
    """How log lines and failure reasons name the component."""

    def __init__(
        self,
        client_config: ClientConfig,
        user_agent: str,
        *,
        resync_s: float,
        min_interval_s: float,
        error_pause_s: float = 0.0,
    ) -> None:
        self._client_config = client_config.with_user_agent(user_agent)
        self._log = logging.getLogger(type(self).__module__)  # the component's own logger
        self._resync_s = resync_s
        self._min_interval_s = min_interval_s
        self._error_pause_s = error_pause_s
        self._client: Client | None = None
        self._factory: SharedInformerFactory | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._wake = asyncio.Event()
        self._ctx: FailureSink | None = None
        self.syncs_started = 0
        self.sync_count = 0
        self.last_sync_error: str | None = None

    # --- what a subclass provides -----------------------------------------------------------

    @abc.abstractmethod
    def _add_informers(self, factory: SharedInformerFactory, client: Client) -> None:
        """Create the informers (and whatever else needs the client) before they start."""

    @abc.abstractmethod
    async def _sync(self) -> None:
        """Bring the outside state in line with the caches; raise on failure."""

    async def _prepare(self) -> None:  # noqa: B027 (optional hook, empty by default)
        """Runs first in ``start``, before the client exists (directories, worker threads)."""

    async def _first_sync(self) -> None:
        """The sync ``start`` waits for; a subclass may reword its error."""
        await self._run_sync()

    async def _before_stop(self) -> None:  # noqa: B027 (optional hook, empty by default)
        """Runs first in ``stop``, once the loop has ended (child processes, extra tasks)."""

    async def _release(self) -> None:  # noqa: B027 (optional hook, empty by default)
        """Closes what :meth:`_prepare` and :meth:`_add_informers` made beside the informers;
        runs while the client is still open, after a failed start too."""

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self, ctx: FailureSink | None = None) -> None:
        self._ctx = ctx
        try:
            await self._prepare()
            self._client = Client(self._client_config)
            self._factory = SharedInformerFactory(self._client)
            self._add_informers(self._factory, self._client)
            self._factory.start()
            await self._factory.wait_synced()
            await self._first_sync()
        except BaseException:
            await self._shutdown()
            raise
        self._task = asyncio.create_task(self._loop(), name=f"{self.name}-sync")
        self._task.add_done_callback(self._task_done)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            # A loop that died has been reported already (``_task_done``): stop still stops.
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self._before_stop()
        await self._shutdown()

    async def _shutdown(self) -> None:
        await self._release()
        if self._factory is not None:
            await self._factory.stop()
            self._factory = None
        if self._client is not None:
            await self._client.close()
            self._client = None
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def _open_worker(
        self,
        prefix: str,
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
    ) -> None:
        """One worker thread for blocking calls (``iptables-restore`` and the like), all run
        in order; ``initializer`` runs in it first (to enter the node's network namespace)."""
        self._executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=prefix, initializer=initializer, initargs=initargs
        )

    async def _blocking(self, func: Callable[..., T], *args: Any) -> T:
        """``func(*args)`` on the worker thread."""
        assert self._executor is not None, "_open_worker was not called"
        return await asyncio.get_running_loop().run_in_executor(self._executor, func, *args)

    def _wake_on_changes(self, informer: Informer) -> None:
        """Any add, update or delete in ``informer`` wakes the loop."""
        informer.add_event_handler(
            on_add=lambda _o: self.request_sync(),
            on_update=lambda _a, _b: self.request_sync(),
            on_delete=lambda _o: self.request_sync(),
        )

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self._log.error("%s: sync loop died", self.log_name, exc_info=exc)
            if self._ctx is not None:
                self._ctx.fail(f"{self.log_name} sync loop died: {exc}")

    # --- syncing ------------------------------------------------------------------------------

    def request_sync(self) -> None:
        """Wake the loop: a sync starts as soon as ``min_interval_s`` allows."""
        self._wake.set()

    async def _run_sync(self) -> None:
        self._wake.clear()
        self.syncs_started += 1
        try:
            await self._sync()
        except Exception as exc:
            self.last_sync_error = str(exc)  # before waiters wake
            raise
        else:
            self.last_sync_error = None
        finally:
            self.sync_count += 1

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        last_start = loop.time()
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._resync_s):
                    await self._wake.wait()
            # at least one yield: a sync failing at once must not starve the event loop
            await asyncio.sleep(max(0.0, last_start + self._min_interval_s - loop.time()))
            last_start = loop.time()
            try:
                await self._run_sync()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._log.error("%s: sync failed (retrying): %s", self.log_name, _describe(exc))
                self._log.debug("%s: the failed sync", self.log_name, exc_info=exc)
                if self._error_pause_s > 0:
                    await asyncio.sleep(self._error_pause_s)
                self.request_sync()


def _describe(exc: BaseException) -> str:
    """An error's text, with its type when the text alone would not say what went wrong."""
    text = str(exc)
    return (
        text if text and not isinstance(exc, (KeyError, TypeError, AttributeError)) else repr(exc)
    )
