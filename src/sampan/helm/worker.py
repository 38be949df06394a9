"""The Helm worker: the child process that performs one Helm operation with helm-python-sdk.

``python -m sampan.helm.worker`` reads JSON requests, one per line, on stdin and writes one
JSON answer line per request on stdout: ``{"ok": true, "result": {...}}`` or
``{"ok": false, "error": {"type", "message"}}`` (``type`` is the library's error class name);
it exits when stdin ends. It imports only the standard library and
``helm_python`` (which loads Helm's Go runtime), so it starts quickly; ``sampan.helm.engine``
is the server side.

Requests name the cluster with ``kubeconfig_path`` (a 0600 file of the server's) or
``kubeconfig`` (the YAML text, received over the pipe; the library keeps a private temporary
copy while the child lives); ``driver`` is Helm's release storage, ``secret`` by default or
``configmap``:

* ``apply``: install the release, or upgrade it, per its history and ``failure_policy``
  (``reinstall``: a release whose last revision is failed and that never deployed, or one left
  pending, is uninstalled and installed anew, or rolled back when it had deployed;
  ``abort``: it is left for an operator, as K3s). Values are ``values_layers`` deep-merged in
  order, then ``set`` / ``set_string`` expressions applied as ``helm --set`` /
  ``--set-string``. The chart's values schema is checked first, so values that fail it write
  nothing.
* ``uninstall``: remove the release (a missing release is success: ``{"release": null}``).
* ``pull``: fetch an ``oci://`` chart; the answer holds it base64-encoded.

Invariant: exactly one JSON line goes to stdout per request; anything else goes to stderr.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import tempfile
from collections.abc import Mapping
from typing import Any

__all__ = ["DEFAULT_OPERATION_TIMEOUT_S", "deep_merge", "main"]

DEFAULT_OPERATION_TIMEOUT_S = 300.0
"""Helm's own default ``--timeout`` (5m)."""

# Release states after which an upgrade cannot simply proceed (helm's pending-*).
PENDING_STATES = frozenset({"pending-install", "pending-upgrade", "pending-rollback"})


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


# (kubeconfig, namespace, storage driver) -> helm Config, most recently used last. A Config
# keeps its API discovery in memory, which a fresh one would fetch again for every operation.
_CONFIGS: dict[tuple[str, str, str], Any] = {}
MAX_CONFIGS = 16


def _config(helm: Any, request: Mapping[str, Any]) -> Any:
    path = str(request.get("kubeconfig_path") or "")
    text = "" if path else str(request["kubeconfig"])
    namespace = str(request["namespace"])
    driver = str(request.get("driver") or "secret")
    key = (path or text, namespace, driver)
    cfg = _CONFIGS.pop(key, None)
    if cfg is None:
        cfg = helm.Config(
            kubeconfig_path=path or None,
            kubeconfig_content=text or None,
            namespace=namespace,
            storage_driver=driver,
        )
    _CONFIGS[key] = cfg
    while len(_CONFIGS) > MAX_CONFIGS:
        _CONFIGS.pop(next(iter(_CONFIGS))).close()
    return cfg


def _perform(request: Mapping[str, Any]) -> Any:
    import helm_python as helm

    helm.disable_logging()
    action = request.get("action")
    if action == "pull":
        return _pull(helm, request)
    cfg = _config(helm, request)
    if action == "apply":
        return _apply(helm, cfg, request)
    if action == "uninstall":
        return _uninstall(helm, cfg, request)
    raise ValueError(f"unknown engine action {action!r}")


def answer(line: bytes) -> dict[str, Any]:
    """The answer to one request line (every failure becomes the answer)."""
    try:
        return {"ok": True, "result": _perform(json.loads(line))}
    except Exception as exc:
        return {"ok": False, "error": {"type": type(exc).__name__, "message": str(exc)}}


def main() -> int:
    """Child entry point: one JSON request per stdin line, one JSON answer per stdout line,
    until stdin ends."""
    for line in sys.stdin.buffer:
        if not line.strip():
            continue
        sys.stdout.write(json.dumps(answer(line)) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
