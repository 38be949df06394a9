"""The Helm engine: Helm operations run in a child process, and the async calls that use it.

Helm itself is the ``helm-python-sdk`` package (Helm v4's Go SDK behind a C ABI, loaded with
ctypes; no ``helm`` binary). This module owns the server side of that seam. ``HelmEngine``
keeps one child, ``python -m sampan.helm.worker`` (see there for the requests), and sends it
one JSON request line at a time (an ``asyncio.Lock`` serialises them), reading one answer line
back. The Go runtime never lives in the server process: a panic, a leak or a hang in Go ends
the child, not the server. The child is

* started on the first request (loading Helm costs about 0.4 s and 85 MB here: paid once per
  burst of work, not per operation);
* killed when a request overruns its deadline or its caller is cancelled, and replaced by a
  fresh one on the next request;
* stopped after ``idle_exit_s`` without requests, so an idle server holds no Helm memory.

``run_engine(request)`` is the one-shot form (a fresh child for one request).

Invariant: requests (which carry a kubeconfig) travel over the pipe only: never written to a
file of ours or to a log. The child's stderr is drained continuously and only its last
``MAX_STDERR_BYTES`` are kept, for the message when it dies.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import sys
from collections.abc import Mapping
from typing import Any

from sampan.helm.worker import DEFAULT_OPERATION_TIMEOUT_S, deep_merge

__all__ = [
    "DEFAULT_OPERATION_TIMEOUT_S",
    "EngineError",
    "HelmEngine",
    "deep_merge",
    "run_engine",
]

log = logging.getLogger(__name__)

CHILD_GRACE_S = 30.0
"""How long past the operation's timeout the child may take before it is killed."""
IDLE_EXIT_S = 60.0
MAX_STDERR_BYTES = 4096
MAX_ANSWER_BYTES = 256 * 1024 * 1024
"""An answer line may carry a pulled chart archive (base64)."""


class EngineError(Exception):
    """A Helm operation failed. ``kind`` is the library's error class name (``HelmRenderError``,
    ``HelmValuesError``, ``HelmReleaseError``, ...) or ``EngineCrashed`` / ``EngineTimeout``
    when the child died or overran."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


class HelmEngine:
    """One Helm child process, reused while busy; see the module docstring."""

    def __init__(self, *, idle_exit_s: float = IDLE_EXIT_S) -> None:
        self.idle_exit_s = idle_exit_s
        self._lock = asyncio.Lock()
        self._proc: asyncio.subprocess.Process | None = None
        self._stderr: collections.deque[bytes] = collections.deque()
        self._stderr_task: asyncio.Task[None] | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._retiring: asyncio.Task[None] | None = None
        self.started = 0
        """How many children were started (tests and the benchmark read it)."""

    async def __aenter__(self) -> HelmEngine:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def run(self, request: Mapping[str, Any], *, timeout_s: float | None = None) -> Any:
        """Perform ``request``; return the worker's ``result`` or raise ``EngineError``."""
        deadline_s = (timeout_s or DEFAULT_OPERATION_TIMEOUT_S) + CHILD_GRACE_S
        async with self._lock:
            if self._idle is not None:
                self._idle.cancel()
                self._idle = None
            proc = await self._child()
            assert proc.stdin is not None and proc.stdout is not None
            try:
                async with asyncio.timeout(deadline_s):
                    proc.stdin.write(json.dumps(request).encode() + b"\n")
                    await proc.stdin.drain()
                    line = await proc.stdout.readline()
            except TimeoutError:
                await self._kill()
                raise EngineError(
                    "EngineTimeout", f"helm did not finish within {deadline_s:.0f}s"
                ) from None
            except asyncio.CancelledError:
                await asyncio.shield(self._kill())
                raise
            except (OSError, ValueError) as exc:  # a broken pipe; an over-long line
                await self._kill()
                raise EngineError("EngineCrashed", f"helm engine failed: {exc}") from None
            if not line:
                code = await proc.wait()
                tail = self._stderr_tail()
                await self._kill()
                raise EngineError(
                    "EngineCrashed", f"helm engine exited with code {code}: {tail}".rstrip(": ")
                )
            self._idle = asyncio.get_running_loop().call_later(self.idle_exit_s, self._retire)
        try:
            answer = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError):
            answer = None
        if not isinstance(answer, dict):
            raise EngineError("EngineCrashed", "helm engine answered something that is not JSON")
        if not answer.get("ok"):
            error = answer.get("error") or {}
            raise EngineError(
                str(error.get("type") or "HelmError"), str(error.get("message") or "")
            )
        return answer.get("result")

    async def close(self) -> None:
        """Stop the child (idempotent)."""
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        await self._kill()

    async def _child(self) -> asyncio.subprocess.Process:
        if self._proc is not None and self._proc.returncode is None:
            return self._proc
        await self._kill()
        self._stderr.clear()
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "sampan.helm.worker",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=MAX_ANSWER_BYTES,
        )
        self.started += 1
        self._stderr_task = asyncio.get_running_loop().create_task(
            self._drain_stderr(self._proc), name="helm-engine-stderr"
        )
        return self._proc

    async def _drain_stderr(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stderr is not None
        kept = 0
        while chunk := await proc.stderr.read(MAX_STDERR_BYTES):
            self._stderr.append(chunk)
            kept += len(chunk)
            while kept > MAX_STDERR_BYTES and len(self._stderr) > 1:
                kept -= len(self._stderr.popleft())

    def _stderr_tail(self) -> str:
        return b"".join(self._stderr)[-MAX_STDERR_BYTES:].decode(errors="replace").strip()

    def _retire(self) -> None:
        """Idle: stop the child (under the lock, so never during a request)."""
        self._idle = None
        self._retiring = asyncio.get_running_loop().create_task(
            self._retire_now(), name="helm-engine-retire"
        )

    async def _retire_now(self) -> None:
        async with self._lock:
            if self._idle is None:  # no request came in meanwhile
                await self._kill()

    async def _kill(self) -> None:
        proc, self._proc = self._proc, None
        task, self._stderr_task = self._stderr_task, None
        if proc is not None:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            await proc.wait()
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def run_engine(request: Mapping[str, Any], *, timeout_s: float | None = None) -> Any:
    """Perform one request in a fresh child (see ``HelmEngine.run``)."""
    async with HelmEngine() as engine:
        return await engine.run(request, timeout_s=timeout_s)
