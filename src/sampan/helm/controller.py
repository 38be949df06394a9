"""The HelmChart controller ("helm-controller"): HelmChart objects -> Helm releases.

Owns, for every ``helm.cattle.io/v1 HelmChart`` (K3s's semantics):

* the Helm release named after the HelmChart, in ``spec.targetNamespace`` (default: the
  HelmChart's namespace), stored as Helm stores it (``sh.helm.release.v1.<name>.v<N>``
  Secrets, so a ``helm`` CLI sees and can roll back the same releases);
* the finalizer ``wrangler.cattle.io/on-helm-chart-remove``: deleting the HelmChart uninstalls
  the release, then the finalizer is removed (a release that is already gone finishes at once);
* the HelmChart's status: ``conditions`` (``Deployed``; ``Failed`` as K3s, with a reason
  saying what failed), ``releaseRevision``, ``releaseStatus``, ``chartVersion``,
  ``observedGeneration`` and ``configHash``; and Events from the source "helm-controller".

Values are, in this order (later wins, maps merged as Helm merges values files): ``spec.values``,
``spec.valuesContent``, ``spec.valuesSecrets``, then the HelmChartConfig of the same
name and namespace (``values``, ``valuesContent``, ``valuesSecrets``), then ``spec.set``
(``--set`` for integers, booleans and null, ``--set-string`` otherwise, as K3s).
``failurePolicy`` of the HelmChartConfig wins over the HelmChart's (default ``reinstall``).

Level-triggered: the inputs (spec, config, secrets' values) hash to ``configHash``; a chart
whose status already records that hash with a deployed release is left alone, so a restart
re-applies nothing. A failed apply records the failure (status + Warning event) without the
new hash and is retried with the work queue's backoff; Helm keeps the previous revision
running (an upgrade that fails leaves the last deployed revision in place and a ``failed``
record). Helm itself runs in a child process (``sampan.helm.engine``), reused while busy.

Invariants: never mutates informer objects; the kubeconfig handed to Helm is a path to the
server's 0600 credential file (or travels over the pipe) and never reaches a log or event;
status writes are compare-and-swap on resourceVersion.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sampan.api import times
from sampan.client import ClientConfig, ConflictError, NotFoundError
from sampan.client.api import CONFIGMAPS, SECRETS
from sampan.client.events import TYPE_NORMAL, TYPE_WARNING
from sampan.client.informer import object_key
from sampan.controllers.base import ControllerContext, QueueController, parse_duration_s
from sampan.helm.crd import FINALIZER, HELMCHARTCONFIGS, HELMCHARTS
from sampan.helm.engine import DEFAULT_OPERATION_TIMEOUT_S, EngineError, HelmEngine
from sampan.helm.source import (
    CA_BUNDLE_KEY,
    ChartSourceError,
    RepoAccess,
    describe_source,
    fetch_chart,
)

__all__ = ["CONTROLLER_NAME", "HelmChartController", "HelmOptions", "helm_controller_class"]

log = logging.getLogger(__name__)

CONTROLLER_NAME = "helm-controller"
ANNOTATION_UNMANAGED = "helmcharts.helm.cattle.io/unmanaged"
ANNOTATION_CHART_URL = "helm.cattle.io/chart-url"
DEFAULT_FAILURE_POLICY = "reinstall"
MAX_MESSAGE_CHARS = 1024
STATUS_WRITE_ATTEMPTS = 3

# Helm engine error class -> the reason shown in status and events.
_ENGINE_REASONS = {
    "HelmValuesError": "InvalidValues",
    "HelmRenderError": "RenderFailed",
    "HelmChartLoadError": "InvalidChart",
    "HelmChartInvalidError": "InvalidChart",
    "HelmRepoError": "RepoUnavailable",
    "HelmRegistryError": "RepoUnavailable",
    "HelmKubeError": "ApiUnavailable",
    "HelmReleaseError": "ReleaseFailed",
    "HelmStorageError": "ReleaseFailed",
    "EngineTimeout": "Timeout",
    "EngineCrashed": "EngineCrashed",
}
_COMMAS = re.compile(r"\\*,")

Obj = dict[str, Any]


class ApplyError(Exception):
    """An apply or removal failed; ``reason`` names what for status and events."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message[:MAX_MESSAGE_CHARS]


@dataclass(frozen=True)
class HelmOptions:
    """Static configuration of the helm controller."""

    static_dir: Path = Path("/var/lib/sampan/server/static")
    """``<data-dir>/server/static``: what ``https://%{KUBERNETES_API}%/static/...`` names."""
    default_timeout_s: float = DEFAULT_OPERATION_TIMEOUT_S
    kubeconfig_path: Path | None = None
    """The controller's own kubeconfig file (0600), handed to Helm by path; None = the
    kubeconfig is made from the controller's client and sent over the pipe."""


def kubeconfig_text(config: ClientConfig) -> str:
    """A kubeconfig (YAML) for the same server and identity as ``config``."""
    cluster: Obj = {"server": config.server}
    if config.ca_pem:
        cluster["certificate-authority-data"] = base64.b64encode(config.ca_pem).decode()
    if config.insecure_skip_tls_verify:
        cluster["insecure-skip-tls-verify"] = True
    if config.tls_server_name:
        cluster["tls-server-name"] = config.tls_server_name
    user: Obj = {}
    if config.client_cert_pem and config.client_key_pem:
        user["client-certificate-data"] = base64.b64encode(config.client_cert_pem).decode()
        user["client-key-data"] = base64.b64encode(config.client_key_pem).decode()
    if config.token:
        user["token"] = config.token
    elif config.token_file is not None:
        user["tokenFile"] = str(config.token_file)
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "sampan", "cluster": cluster}],
        "users": [{"name": "helm-controller", "user": user}],
        "contexts": [
            {"name": "sampan", "context": {"cluster": "sampan", "user": "helm-controller"}}
        ],
        "current-context": "sampan",
    }
    return yaml.safe_dump(doc)


def set_expressions(values: dict[str, Any]) -> tuple[list[str], list[str]]:
    """``spec.set`` as K3s passes it to Helm: (``--set`` list, ``--set-string`` list)."""
    typed: list[str] = []
    strings: list[str] = []
    for key in sorted(values):
        value = values[key]
        if isinstance(value, bool):
            typed.append(f"{key}={str(value).lower()}")
        elif isinstance(value, int):
            typed.append(f"{key}={value}")
        elif value is None:
            typed.append(f"{key}=null")
        elif str(value).lower() in ("true", "false", "null"):
            typed.append(f"{key}={value}")
        else:
            escaped = _COMMAS.sub(
                lambda m: m.group(0) if len(m.group(0)) % 2 == 0 else "\\" + m.group(0), str(value)
            )
            strings.append(f"{key}={escaped}")
    return typed, strings


def _meta(obj: Any) -> Obj:
    return (obj or {}).get("metadata") or {}


def _now() -> str:
    return times.now()


def helm_controller_class(options: HelmOptions) -> type[HelmChartController]:
    """A controller class bound to ``options`` (the manager builds controllers from classes)."""

    class BoundHelmChartController(HelmChartController):
        pass

    BoundHelmChartController.options = options
    return BoundHelmChartController


class HelmChartController(QueueController):
    """Reconciles HelmCharts; see the module docstring."""

    name = CONTROLLER_NAME
    options: HelmOptions = HelmOptions()

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.client = ctx.client
        self.recorder = ctx.recorder(CONTROLLER_NAME)
        self.cluster: Obj = (
            {"kubeconfig_path": str(self.options.kubeconfig_path)}
            if self.options.kubeconfig_path is not None
            else {"kubeconfig": kubeconfig_text(ctx.client.config)}
        )
        self.engine = HelmEngine()
        # key -> (uid, configHash) last applied by this controller: the informer cache may not
        # hold our own status write yet when the key comes round again.
        self._applied: dict[str, tuple[str, str]] = {}
        self.charts = self.watch(ctx.informers.informer(HELMCHARTS))
        self.configs = self.watch(ctx.informers.informer(HELMCHARTCONFIGS))
        self.charts.add_event_handler(
            on_add=self._enqueue, on_update=self._chart_updated, on_delete=None
        )
        self.configs.add_event_handler(
            on_add=self._enqueue,
            on_update=lambda old, new: self._enqueue(new),
            on_delete=self._enqueue,
        )

    async def run(self, workers: int) -> None:
        try:
            await super().run(workers)
        finally:
            await self.engine.close()

    # -- events -------------------------------------------------------------------------------

    def _enqueue(self, obj: Obj) -> None:
        self.queue.add(object_key(obj))

    def _chart_updated(self, old: Obj, new: Obj) -> None:
        """Our own status writes do not enqueue (they would defeat the retry backoff)."""
        watched = ("generation", "deletionTimestamp", "finalizers", "annotations")
        old_meta, new_meta = _meta(old), _meta(new)
        if any(old_meta.get(k) != new_meta.get(k) for k in watched):
            self._enqueue(new)

    # -- reconcile ----------------------------------------------------------------------------

    async def reconcile(self, key: str) -> None:
        chart = self.charts.cache.get(key)
        if chart is None:
            self._applied.pop(key, None)
            return
        meta = _meta(chart)
        if ANNOTATION_UNMANAGED in (meta.get("annotations") or {}):
            return
        if meta.get("deletionTimestamp"):
            if FINALIZER in (meta.get("finalizers") or []):
                await self._remove(chart)
            return
        if FINALIZER not in (meta.get("finalizers") or []):
            chart = copy.deepcopy(chart)
            chart["metadata"]["finalizers"] = [*(meta.get("finalizers") or []), FINALIZER]
            chart = await self.client.update(HELMCHARTS, chart)
        spec = chart.get("spec") or {}
        if (spec.get("helmVersion") or "v3") != "v3":
            await self._failed(
                chart,
                ApplyError("UnsupportedVersion", "Only Helm v3 charts are supported"),
                event_message=f"Unsupported Helm version {spec.get('helmVersion')}: "
                "only v3 charts are supported",
                retry=False,
            )
            return
        try:
            request, config_hash = await self._inputs(chart)
        except ApplyError as exc:
            await self._failed(chart, exc)
            raise
        status = chart.get("status") or {}
        if status.get("configHash") == config_hash and status.get("releaseStatus") == "deployed":
            return
        if self._applied.get(key) == (meta.get("uid"), config_hash):
            return
        source = describe_source(
            spec, (meta.get("annotations") or {}).get(ANNOTATION_CHART_URL, "")
        )
        self.recorder.event(chart, TYPE_NORMAL, "ApplyChart", f"Applying HelmChart from {source}")
        try:
            request["chart"] = base64.b64encode(await self._fetch(chart, request)).decode()
            result = await self._run(request)
        except ApplyError as exc:
            self._applied.pop(key, None)
            await self._failed(chart, exc)
            raise
        self._applied[key] = (meta.get("uid"), config_hash)
        await self._deployed(chart, result, config_hash)

    async def _inputs(self, chart: Obj) -> tuple[Obj, str]:
        """The engine request for ``chart`` (without the archive) and the hash of its inputs."""
        meta = _meta(chart)
        namespace = meta.get("namespace") or "default"
        spec = chart.get("spec") or {}
        config = self.configs.cache.get(object_key(chart)) or {}
        config_spec = config.get("spec") or {}
        layers: list[Obj] = []
        for source, where in ((spec, "spec"), (config_spec, "HelmChartConfig spec")):
            if isinstance(source.get("values"), dict):
                layers.append(source["values"])
            if source.get("valuesContent"):
                layers.append(_yaml_values(source["valuesContent"], f"{where}.valuesContent"))
            for ref in source.get("valuesSecrets") or []:
                layers.extend(await self._secret_values(namespace, ref))
        typed, strings = set_expressions(spec.get("set") or {})
        try:
            timeout_s = (
                parse_duration_s(str(spec["timeout"]))
                if spec.get("timeout")
                else self.options.default_timeout_s
            )
        except ValueError as exc:
            raise ApplyError("InvalidSpec", f"spec.timeout: {exc}") from None
        request: Obj = {
            "action": "apply",
            "release": meta.get("name"),
            "namespace": spec.get("targetNamespace") or namespace,
            "create_namespace": bool(spec.get("createNamespace")),
            "driver": spec.get("driver") or "secret",
            "values_layers": layers,
            "set": typed,
            "set_string": strings,
            "timeout_s": max(1, int(timeout_s)),
            "failure_policy": config_spec.get("failurePolicy")
            or spec.get("failurePolicy")
            or DEFAULT_FAILURE_POLICY,
        }
        digest = hashlib.sha256(
            json.dumps({"spec": spec, "request": request}, sort_keys=True, default=str).encode()
        ).hexdigest()
        return request, f"SHA256={digest.upper()}"

    async def _secret_values(self, namespace: str, ref: Obj) -> list[Obj]:
        name = str(ref.get("name") or "")
        try:
            secret = await self.client.get(SECRETS, name, namespace=namespace)
        except NotFoundError:
            raise ApplyError(
                "InvalidValues", f'values Secret "{namespace}/{name}" not found'
            ) from None
        data = secret.get("data") or {}
        layers = []
        for key in ref.get("keys") or sorted(data):
            if key not in data:
                raise ApplyError("InvalidValues", f'values Secret "{name}" has no key "{key}"')
            try:
                text = base64.b64decode(data[key]).decode()
            except (binascii.Error, UnicodeDecodeError):
                raise ApplyError(
                    "InvalidValues", f'values Secret "{name}" key "{key}" is not text'
                ) from None
            layers.append(_yaml_values(text, f'Secret "{name}" key "{key}"'))
        return layers

    async def _access(self, chart: Obj) -> RepoAccess:
        spec = chart.get("spec") or {}
        namespace = _meta(chart).get("namespace") or "default"
        ca = str(spec.get("repoCA") or "")
        ca_ref = (spec.get("repoCAConfigMap") or {}).get("name")
        if ca_ref:
            try:
                config_map = await self.client.get(CONFIGMAPS, ca_ref, namespace=namespace)
            except NotFoundError:
                raise ApplyError("InvalidSpec", f'repoCAConfigMap "{ca_ref}" not found') from None
            ca += "\n" + str((config_map.get("data") or {}).get(CA_BUNDLE_KEY) or "")
        username = password = ""
        auth_ref = (spec.get("authSecret") or {}).get("name")
        if auth_ref:
            try:
                secret = await self.client.get(SECRETS, auth_ref, namespace=namespace)
            except NotFoundError:
                raise ApplyError("InvalidSpec", f'authSecret "{auth_ref}" not found') from None
            data = secret.get("data") or {}
            try:
                username = base64.b64decode(data.get("username") or "").decode()
                password = base64.b64decode(data.get("password") or "").decode()
            except (binascii.Error, UnicodeDecodeError):
                raise ApplyError("InvalidSpec", f'authSecret "{auth_ref}" is not text') from None
        return RepoAccess(
            ca_pem=ca,
            username=username,
            password=password,
            pass_credentials=bool(spec.get("authPassCredentials")),
            insecure_skip_tls_verify=bool(spec.get("insecureSkipTLSVerify")),
            plain_http=bool(spec.get("plainHTTP")),
        )

    async def _fetch(self, chart: Obj, request: Obj) -> bytes:
        access = await self._access(chart)

        async def pull_oci(ref: str, version: str, how: RepoAccess) -> bytes:
            result = await self._run(
                {
                    "action": "pull",
                    "chart_ref": ref,
                    "version": version,
                    "plain_http": how.plain_http,
                    "insecure_skip_tls_verify": how.insecure_skip_tls_verify,
                    "username": how.username,
                    "password": how.password,
                },
                timeout_s=request["timeout_s"],
            )
            return base64.b64decode(result["chart"])

        try:
            return await fetch_chart(
                chart.get("spec") or {},
                access,
                static_dir=self.options.static_dir,
                pull_oci=pull_oci,
            )
        except ChartSourceError as exc:
            raise ApplyError(exc.reason, exc.message) from None

    async def _run(self, request: Obj, *, timeout_s: float | None = None) -> Any:
        try:
            return await self.engine.run(
                {**request, **self.cluster},
                timeout_s=timeout_s or request.get("timeout_s"),
            )
        except EngineError as exc:
            raise ApplyError(_ENGINE_REASONS.get(exc.kind, "HelmFailed"), exc.message) from None

    # -- removal ------------------------------------------------------------------------------

    async def _remove(self, chart: Obj) -> None:
        meta = _meta(chart)
        spec = chart.get("spec") or {}
        namespace = spec.get("targetNamespace") or meta.get("namespace") or "default"
        self.recorder.event(
            chart,
            TYPE_NORMAL,
            "RemoveChart",
            f"Uninstalling release {namespace}/{meta.get('name')}",
        )
        try:
            result = await self._run(
                {
                    "action": "uninstall",
                    "release": meta.get("name"),
                    "namespace": namespace,
                    "driver": spec.get("driver") or "secret",
                },
                timeout_s=self.options.default_timeout_s,
            )
        except ApplyError as exc:
            self.recorder.event(chart, TYPE_WARNING, exc.reason, f"Uninstall failed: {exc.message}")
            raise
        if result.get("release") is None:
            message = f"Release {namespace}/{meta.get('name')} was already gone"
        else:
            message = f"Uninstalled release {namespace}/{meta.get('name')}"
        self.recorder.event(chart, TYPE_NORMAL, "RemoveChart", message + ", removing finalizer")
        finalizers = list(meta.get("finalizers") or [])
        patch = [
            {
                "op": "test",
                "path": "/metadata/resourceVersion",
                "value": meta.get("resourceVersion"),
            },
            {"op": "remove", "path": f"/metadata/finalizers/{finalizers.index(FINALIZER)}"},
        ]
        try:
            from sampan.client import PatchType

            await self.client.patch(
                HELMCHARTS,
                meta["name"],
                patch,
                namespace=meta.get("namespace"),
                patch_type=PatchType.JSON,
            )
        except NotFoundError:
            return

    # -- status -------------------------------------------------------------------------------

    async def _deployed(self, chart: Obj, result: Obj, config_hash: str) -> None:
        release = result.get("release") or {}
        revision = release.get("revision")
        verb = {"install": "Installed", "reinstall": "Reinstalled"}.get(
            result.get("action") or "", "Upgraded"
        )
        message = (
            f"{verb} release {release.get('namespace')}/{release.get('name')} revision {revision} "
            f"(chart {release.get('chart_name')}-{release.get('chart_version')})"
        )
        self.recorder.event(chart, TYPE_NORMAL, "Applied", message)
        log.info("helm: %s", message)
        status = {
            "releaseName": release.get("name"),
            "releaseNamespace": release.get("namespace"),
            "releaseRevision": revision,
            "releaseStatus": release.get("status"),
            "chartVersion": release.get("chart_version"),
            "observedGeneration": _meta(chart).get("generation"),
            "configHash": config_hash,
        }
        conditions = [
            _condition(chart, "Deployed", "True", "Applied", message),
            _condition(chart, "Failed", "False", "", ""),
        ]
        await self._write_status(chart, {**status, "conditions": conditions})

    async def _failed(
        self, chart: Obj, exc: ApplyError, *, event_message: str = "", retry: bool = True
    ) -> None:
        self.recorder.event(chart, TYPE_WARNING, exc.reason, event_message or exc.message)
        log.warning("helm: %s: %s: %s", object_key(chart), exc.reason, exc.message)
        status = dict(chart.get("status") or {})
        deployed = status.get("releaseStatus") == "deployed" and status.get("configHash")
        conditions = [
            _condition(
                chart,
                "Deployed",
                "True" if deployed else "False",
                "PreviousRevision" if deployed else exc.reason,
                "the previous revision keeps running" if deployed else exc.message,
            ),
            _condition(chart, "Failed", "True", exc.reason, exc.message),
        ]
        status["conditions"] = conditions
        try:
            await self._write_status(chart, status)
        except ConflictError:
            if not retry:
                raise

    async def _write_status(self, chart: Obj, status: Obj) -> None:
        """Write ``status``; on a conflict (the object changed meanwhile) write it over the
        fresh object, a few times (the status is ours alone)."""
        body = copy.deepcopy(chart)
        for _ in range(STATUS_WRITE_ATTEMPTS - 1):
            body["status"] = {k: v for k, v in status.items() if v is not None}
            try:
                await self.client.update_status(HELMCHARTS, body)
                return
            except ConflictError:
                meta = _meta(chart)
                body = await self.client.get(
                    HELMCHARTS, meta["name"], namespace=meta.get("namespace")
                )
                if _meta(body).get("uid") != meta.get("uid"):
                    return
        body["status"] = {k: v for k, v in status.items() if v is not None}
        await self.client.update_status(HELMCHARTS, body)


def _condition(chart: Obj, kind: str, status: str, reason: str, message: str) -> Obj:
    """A condition; its lastTransitionTime moves only when its status changes."""
    for old in (chart.get("status") or {}).get("conditions") or []:
        if (
            old.get("type") == kind
            and old.get("status") == status
            and old.get("lastTransitionTime")
        ):
            since = old["lastTransitionTime"]
            break
    else:
        since = _now()
    condition = {"type": kind, "status": status, "lastTransitionTime": since}
    if reason:
        condition["reason"] = reason
    if message:
        condition["message"] = message
    return condition


def _yaml_values(text: str, where: str) -> Obj:
    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ApplyError("InvalidValues", f"{where} is not valid YAML: {exc}") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ApplyError("InvalidValues", f"{where} must be a YAML mapping")
    return values
