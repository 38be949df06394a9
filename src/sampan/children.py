"""Supervised child processes (containerd under the kubelet, etcd under the server), one way.

``keep_running`` watches the current child; when it exits while the owner is not stopping,
it logs the exit code and respawns it after a back-off that doubles from ``start_s`` up to
``max_s``, and falls back to ``start_s`` once a child has run ``stable_s``. A respawn that
fails with one of the ``retry`` errors is logged and tried again after the next back-off;
any other error ends the watch with that error (a bug, for the task's done-callback).
``terminate`` ends a child: SIGTERM, then SIGKILL when it has not exited ``timeout_s`` later.

Invariants: never two children at once (a respawn happens only after ``wait()`` returned);
nothing is respawned once ``stopping()`` is true, checked after the exit and again after the
back-off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

__all__ = ["RestartBackoff", "keep_running", "terminate"]

log = logging.getLogger("sampan.children")


@dataclass(frozen=True)
class RestartBackoff:
    start_s: float = 1.0
    max_s: float = 30.0
    stable_s: float = 60.0
    """A child that ran this long before dying restarts with ``start_s`` again."""


async def keep_running(
    name: str,
    current: Callable[[], asyncio.subprocess.Process | None],
    respawn: Callable[[], Awaitable[None]],
    stopping: Callable[[], bool],
    *,
    retry: tuple[type[Exception], ...],
    backoff: RestartBackoff,
    on_exit: Callable[[], None] | None = None,
    on_restart: Callable[[], None] | None = None,
) -> None:
    """Respawn ``name``'s child whenever it exits; see the module docstring. ``respawn``
    starts a new child (and waits until it is ready); ``current`` returns the child to
    watch; ``on_exit`` runs when one exits, ``on_restart`` after a successful respawn."""
    backoff_s = backoff.start_s
    while True:
        proc = current()
        assert proc is not None, f"{name}: no child to watch"
        started = time.monotonic()
        returncode = await proc.wait()
        if stopping():
            return
        if on_exit is not None:
            on_exit()
        if time.monotonic() - started >= backoff.stable_s:
            backoff_s = backoff.start_s
        log.warning(
            "%s (pid %d) exited with code %d; restarting in %gs",
            name,
            proc.pid,
            returncode,
            backoff_s,
        )
        await asyncio.sleep(backoff_s)
        backoff_s = min(backoff_s * 2, backoff.max_s)
        if stopping():
            return
        try:
            await respawn()
        except retry as exc:
            log.error("%s restart failed: %s", name, exc)
            continue
        if on_restart is not None:
            on_restart()
        new = current()
        log.info("%s restarted (pid %s)", name, new.pid if new is not None else "?")


async def terminate(proc: asyncio.subprocess.Process, timeout_s: float, name: str) -> None:
    """SIGTERM ``proc``, SIGKILL it if it is still there ``timeout_s`` later; returns once it
    has exited (at once if it already had)."""
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), timeout_s)
    except TimeoutError:
        log.warning(
            "%s (pid %d) did not exit %gs after SIGTERM; killing it", name, proc.pid, timeout_s
        )
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
