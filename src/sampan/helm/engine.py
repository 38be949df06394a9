"""The Helm engine: one child process per Helm operation, and the async call that runs it.

Helm itself is the ``helm-python-sdk`` package (Helm v4's Go SDK behind a C ABI, loaded with
ctypes; no ``helm`` binary). This module owns the seam between the server and that library:

* ``run_engine(request)`` (server side) starts ``python -m sampan.helm.engine``, writes one
  JSON request to its stdin and reads one JSON answer from its stdout. The Go runtime never
  lives in the server process: a panic, a leak or a hang in Go ends one child, not the server
  (the child is killed when the request's deadline passes).
* ``main()`` (child side) performs the request with ``helm_python`` and answers
  ``{"ok": true, "release": {...}}`` or ``{"ok": false, "error": {"type", "message"}}``.

Requests (all carry ``kubeconfig``, the YAML text, passed through the pipe, never a file of
ours, never a log line):

* ``apply``: install the release, or upgrade it, per its history and ``failure_policy``
  (``reinstall``: a release that never deployed and failed is uninstalled and installed anew;
  ``abort``: it is left for an operator). Values are ``values_layers`` deep-merged in order,
  then ``set`` / ``set_string`` expressions applied as ``helm --set`` / ``--set-string``.
* ``uninstall``: remove the release (a missing release is success).
* ``pull``: fetch an ``oci://`` chart and answer it base64-encoded.

Invariant: the child writes exactly one JSON document to stdout; everything else goes to
stderr, which the parent keeps (bounded) for the error message.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Mapping
from typing import Any

__all__ = [
    "DEFAULT_OPERATION_TIMEOUT_S",
    "EngineError",
    "deep_merge",
    "run_engine",
]

DEFAULT_OPERATION_TIMEOUT_S = 300.0
"""Helm's own default ``--timeout`` (5m), also the child's deadline when none is given."""
CHILD_GRACE_S = 30.0
"""How long past the operation's timeout the child may take before it is killed."""
MAX_STDERR_BYTES = 4096

# Release states after which an upgrade cannot simply proceed (helm's pending-* and failed).
PENDING_STATES = frozenset({"pending-install", "pending-upgrade", "pending-rollback"})


class EngineError(Exception):
    """A Helm operation failed. ``kind`` is the library's error class name (``HelmRenderError``,
    ``HelmValuesError``, ``HelmReleaseError``, ...) or ``EngineCrashed`` / ``EngineTimeout``
    when the child died or overran."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` over ``base`` as Helm merges values files: maps merge key by key, anything
    else (lists, scalars, null) replaces."""
    merged = dict(base)
    for key, value in override.items():
        old = merged.get(key)
        if isinstance(old, Mapping) and isinstance(value, Mapping):
            merged[key] = deep_merge(old, value)
        else:
            merged[key] = value
    return merged


# --- server side --------------------------------------------------------------------------


async def run_engine(request: Mapping[str, Any], *, timeout_s: float | None = None) -> Any:
    """Run one request in a fresh child; return its ``release`` (or ``result``) or raise
    ``EngineError``."""
    deadline_s = (timeout_s or DEFAULT_OPERATION_TIMEOUT_S) + CHILD_GRACE_S
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sampan.helm.engine",
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


# --- child side ---------------------------------------------------------------------------


def _values(helm: Any, request: Mapping[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for layer in request.get("values_layers") or ():
        values = deep_merge(values, layer or {})
    for expression in request.get("set") or ():
        values = deep_merge(values, helm.parse_set_string(expression))
    for expression in request.get("set_string") or ():
        values = deep_merge(values, helm.parse_set_string_values(expression))
    return values


def _summary(release: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of a release the controller keeps (not the manifest)."""
    return {
        key: release.get(key)
        for key in ("name", "namespace", "revision", "status", "chart_name", "chart_version")
    }


def _apply(helm: Any, cfg: Any, request: Mapping[str, Any]) -> dict[str, Any]:
    name = request["release"]
    namespace = request["namespace"]
    timeout = int(request.get("timeout_s") or DEFAULT_OPERATION_TIMEOUT_S)
    chart = helm.Chart.load_archive(base64.b64decode(request["chart"]))
    values = _values(helm, request)
    # Schema and templates first: bad input fails here, before any write (no release record).
    chart.validate_schema(chart.merge_values(values))
    try:
        history = cfg.history(name)
    except helm.HelmNotFoundError:
        history = []
    action = "install"
    if history:
        latest = history[-1]
        status = latest.get("status") or ""
        ever_deployed = any(h.get("status") in ("deployed", "superseded") for h in history)
        if status in PENDING_STATES or (status == "failed" and not ever_deployed):
            if request.get("failure_policy") == "abort":
                raise helm.HelmReleaseError(
                    f"Release status is '{status}' and failure policy is 'abort', not "
                    "'reinstall'; waiting for operator intervention"
                )
            if status in PENDING_STATES and ever_deployed:
                cfg.rollback(name, timeout=timeout)
                action = "upgrade"
            else:
                cfg.uninstall(name, timeout=timeout, ignore_not_found=True)
                action = "reinstall"
        elif status == "uninstalled":
            action = "install"
        else:
            action = "upgrade"
    if action == "upgrade":
        release = cfg.upgrade(
            chart, name, values, namespace=namespace, timeout=timeout, max_history=10
        )
    else:
        release = cfg.install(
            chart,
            name,
            values,
            namespace=namespace,
            timeout=timeout,
            create_namespace=bool(request.get("create_namespace")),
        )
    return {"action": action, "release": _summary(release), "notes": release.get("notes")}


def _uninstall(helm: Any, cfg: Any, request: Mapping[str, Any]) -> dict[str, Any]:
    timeout = int(request.get("timeout_s") or DEFAULT_OPERATION_TIMEOUT_S)
    try:
        result = cfg.uninstall(request["release"], timeout=timeout, ignore_not_found=True)
    except helm.HelmNotFoundError:
        return {"release": None}
    release = (result or {}).get("release")
    return {"release": _summary(release) if release else None}


def _pull(helm: Any, request: Mapping[str, Any]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="sampan-helm-pull-") as tmp:
        helm.pull(
            request["chart_ref"],
            destination=tmp,
            version=request.get("version") or None,
            plain_http=bool(request.get("plain_http")),
            insecure_skip_tls_verify=bool(request.get("insecure_skip_tls_verify")),
            username=request.get("username") or None,
            password=request.get("password") or None,
        )
        archives = [f for f in os.listdir(tmp) if f.endswith(".tgz")]
        if len(archives) != 1:
            raise helm.HelmRepoError(f"pulling {request['chart_ref']} gave no chart archive")
        with open(os.path.join(tmp, archives[0]), "rb") as archive:
            return {"chart": base64.b64encode(archive.read()).decode()}


def _perform(request: Mapping[str, Any]) -> Any:
    import helm_python as helm

    helm.disable_logging()
    action = request.get("action")
    if action == "pull":
        return _pull(helm, request)
    with helm.Config(
        kubeconfig_content=request["kubeconfig"],
        namespace=request["namespace"],
        storage_driver="secret",
    ) as cfg:
        if action == "apply":
            return _apply(helm, cfg, request)
        if action == "uninstall":
            return _uninstall(helm, cfg, request)
    raise ValueError(f"unknown engine action {action!r}")


def main() -> int:
    """Child entry point: one request on stdin, one answer on stdout."""
    try:
        request = json.loads(sys.stdin.buffer.read())
        result = _perform(request)
        answer: dict[str, Any] = {"ok": True, "result": result}
    except Exception as exc:  # every failure becomes the answer; nothing is swallowed
        answer = {"ok": False, "error": {"type": type(exc).__name__, "message": str(exc)}}
    sys.stdout.write(json.dumps(answer))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
