"""The Helm engine: one child process per Helm operation, and the async call that runs it.

Helm itself is the ``helm-python-sdk`` package (Helm v4's Go SDK behind a C ABI, loaded with
ctypes; no ``helm`` binary). This module owns the server side of that seam:
``run_engine(request)`` starts ``python -m sampan.helm.worker``, writes one JSON request to its
stdin and reads one JSON answer from its stdout (``sampan.helm.worker`` documents the
requests). The Go runtime never lives in the server process: a panic, a leak or a hang in Go
ends one child, not the server (the child is killed when the request's deadline passes, or
when the caller is cancelled).

Invariant: the request (which carries a kubeconfig) travels over the pipe only: it is never
written to a file of ours or to a log.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import Mapping
from typing import Any

from sampan.helm.worker import DEFAULT_OPERATION_TIMEOUT_S, deep_merge

__all__ = [
    "DEFAULT_OPERATION_TIMEOUT_S",
    "EngineError",
    "deep_merge",
    "run_engine",
]

CHILD_GRACE_S = 30.0
"""How long past the operation's timeout the child may take before it is killed."""
MAX_STDERR_BYTES = 4096


class EngineError(Exception):
    """A Helm operation failed. ``kind`` is the library's error class name (``HelmRenderError``,
    ``HelmValuesError``, ``HelmReleaseError``, ...) or ``EngineCrashed`` / ``EngineTimeout``
    when the child died or overran."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


async def run_engine(request: Mapping[str, Any], *, timeout_s: float | None = None) -> Any:
    """Run one request in a fresh child; return its ``release`` (or ``result``) or raise
    ``EngineError``."""
    deadline_s = (timeout_s or DEFAULT_OPERATION_TIMEOUT_S) + CHILD_GRACE_S
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sampan.helm.worker",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(deadline_s):
            stdout, stderr = await proc.communicate(json.dumps(request).encode())
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise EngineError(
            "EngineTimeout", f"helm did not finish within {deadline_s:.0f}s"
        ) from None
    except asyncio.CancelledError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await asyncio.shield(proc.wait())
        raise
    try:
        answer = json.loads(stdout.decode() or "null")
    except (UnicodeDecodeError, json.JSONDecodeError):
        answer = None
    if not isinstance(answer, dict):
        tail = stderr[-MAX_STDERR_BYTES:].decode(errors="replace").strip()
        raise EngineError(
            "EngineCrashed", f"helm engine exited with code {proc.returncode}: {tail}"
        )
    if not answer.get("ok"):
        error = answer.get("error") or {}
        raise EngineError(str(error.get("type") or "HelmError"), str(error.get("message") or ""))
    return answer.get("result")
