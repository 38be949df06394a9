"""LimitRanger and ResourceQuota admission.

``LimitRanger`` (mutating, pods on create): for every LimitRange of the namespace, containers
without a limit or request get the ``Container`` item's ``default`` / ``defaultRequest`` (the
pod is annotated ``kubernetes.io/limit-ranger``), then ``min``/``max``/
``maxLimitRequestRatio`` of ``Container`` and ``Pod`` items are enforced (403 with upstream's
wording, e.g. ``maximum cpu usage per Container is 1, but limit is 2``).

``ResourceQuota`` (validating, creates of counted objects, and updates for what they add): the
object's usage (pods,
``requests.*``/``limits.*``, services and node ports, configmaps, secrets, PVCs and storage,
``count/<resource>.<group>``) is added to every matching quota's ``status.used`` with a
compare-and-swap on the quota's status, so concurrent creates can never pass a quota
together; going over a ``hard`` limit is refused (``exceeded quota: q, requested: pods=1,
used: pods=2, limited: pods=2``); a quota on compute resources requires every container to
state them (``failed quota: q: must specify ...``). Pod scopes (Terminating, NotTerminating,
BestEffort, NotBestEffort, PriorityClass scope selectors) are honoured.

``QuotaRecalculator`` keeps ``status.hard``/``status.used`` true between creates: it recomputes
every quota from the watch caches when a quota is created or changed, after deletes of counted
objects, and periodically (upstream's resource-quota controller does this; Sampan runs it in the
API server so usage is right without the controllers).

Invariant: a dry run reserves nothing; usage only ever counts objects that exist (recalculation)
or are being admitted (the CAS increment).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any

from sampan.api.errors import Forbidden, NotFound, StatusError
from sampan.api.quantity import BINARY_SI, DECIMAL_SI, format_canonical
from sampan.api.quantity import quantity_or_none as _q
from sampan.apiserver.admission.chain import AdmissionAttributes, forbidden
from sampan.tasks import cancel_and_wait

__all__ = [
    "DEFAULT_RECALCULATE_INTERVAL_S",
    "LIMIT_RANGER_ANNOTATION",
    "LimitRanger",
    "QuotaRecalculator",
    "ResourceQuota",
    "pod_usage",
]

log = logging.getLogger(__name__)

LIMIT_RANGER_ANNOTATION = "kubernetes.io/limit-ranger"
DEFAULT_RECALCULATE_INTERVAL_S = 30.0
QUOTA_CONFLICT_RETRIES = 10
RECALCULATE_SETTLE_S = 0.2
"""Pause after a poke so the write that asked for it reaches the watch cache first."""

Lister = Callable[[str, str, str], list[dict[str, Any]]]
"""(group, plural, namespace) -> cached objects (do not mutate)."""

_COMPUTE = ("cpu", "memory", "ephemeral-storage")
_SIMPLE_COUNTS = {
    ("", "services"): "services",
    ("", "configmaps"): "configmaps",
    ("", "secrets"): "secrets",
    ("", "persistentvolumeclaims"): "persistentvolumeclaims",
    ("", "replicationcontrollers"): "replicationcontrollers",
    ("", "resourcequotas"): "resourcequotas",
    ("", "pods"): "pods",
}


def _d(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _fmt(value: Decimal, hint: Any = None) -> str:
    """A quantity in Kubernetes' canonical form, binary when ``hint`` (the quantity this one
    is compared with) used a binary suffix (``0.4`` -> ``400m``, ``2048Ki`` -> ``2Mi``)."""
    binary = isinstance(hint, str) and hint.endswith("i")
    return format_canonical(value, BINARY_SI if binary else DECIMAL_SI)


def _containers(spec: dict[str, Any], key: str) -> list[dict[str, Any]]:
    items = spec.get(key)
    return [c for c in items if isinstance(c, dict)] if isinstance(items, list) else []


def _effective(container: dict[str, Any]) -> tuple[dict[str, Decimal], dict[str, Decimal]]:
    """(requests, limits) of a container, requests defaulted from limits as the API does."""
    resources = _d(container.get("resources"))
    limits = {
        k: v
        for k, v in ((k, _q(v)) for k, v in _d(resources.get("limits")).items())
        if v is not None
    }
    requests = {
        k: v
        for k, v in ((k, _q(v)) for k, v in _d(resources.get("requests")).items())
        if v is not None
    }
    for name, value in limits.items():
        requests.setdefault(name, value)
    return requests, limits


# --- LimitRanger ----------------------------------------------------------------------------


class LimitRanger:
    """See the module docstring."""

    name = "LimitRanger"
    mutating = True

    def __init__(self, list_cached: Lister) -> None:
        self._list = list_cached

    async def admit(self, attrs: AdmissionAttributes) -> None:
        if attrs.operation != "CREATE" or not attrs.is_resource("", "pods"):
            return
        pod = attrs.obj
        if not isinstance(pod, dict) or not isinstance(pod.get("spec"), dict):
            return
        ranges = self._list("", "limitranges", attrs.namespace)
        if not ranges:
            return
        items = [
            _d(item)
            for lr in ranges
            for item in (_d(lr.get("spec")).get("limits") or [])
            if isinstance(item, dict)
        ]
        self._default(pod, [i for i in items if i.get("type") == "Container"])
        errors = self._validate(pod["spec"], items)
        if errors:
            raise forbidden(attrs, errors[0] if len(errors) == 1 else "[" + ", ".join(errors) + "]")

    @staticmethod
    def _default(pod: dict[str, Any], items: list[dict[str, Any]]) -> None:
        default: dict[str, Any] = {}
        default_request: dict[str, Any] = {}
        for item in items:
            limits_default = dict(_d(item.get("default")))
            requests_default = dict(_d(item.get("defaultRequest")))
            # The LimitRange defaults as the API defaults them (max -> default -> request).
            for name, value in _d(item.get("max")).items():
                limits_default.setdefault(name, value)
            for name, value in limits_default.items():
                requests_default.setdefault(name, value)
            for name, value in _d(item.get("min")).items():
                requests_default.setdefault(name, value)
            for name, value in limits_default.items():
                default.setdefault(name, value)
            for name, value in requests_default.items():
                default_request.setdefault(name, value)
        if not default and not default_request:
            return
        notes: list[str] = []
        spec = pod["spec"]
        for key, label in (("initContainers", "init container"), ("containers", "container")):
            for container in _containers(spec, key):
                resources = container.get("resources")
                if not isinstance(resources, dict):
                    resources = container["resources"] = {}
                limits = resources.get("limits")
                limits = limits if isinstance(limits, dict) else {}
                requests = resources.get("requests")
                requests = requests if isinstance(requests, dict) else {}
                set_limits = [n for n in default if n not in limits]
                set_requests = [n for n in default_request if n not in requests and n not in limits]
                for name in set_limits:
                    limits[name] = default[name]
                for name in set_requests:
                    requests[name] = default_request[name]
                if limits:
                    resources["limits"] = limits
                if requests:
                    resources["requests"] = requests
                name = container.get("name", "")
                if set_requests:
                    notes.append(f"{', '.join(sorted(set_requests))} request for {label} {name}")
                if set_limits:
                    notes.append(f"{', '.join(sorted(set_limits))} limit for {label} {name}")
        if notes:
            meta = pod.setdefault("metadata", {})
            annotations = meta.get("annotations")
            if not isinstance(annotations, dict):
                annotations = meta["annotations"] = {}
            annotations[LIMIT_RANGER_ANNOTATION] = "LimitRanger plugin set: " + "; ".join(notes)

    @staticmethod
    def _validate(spec: dict[str, Any], items: list[dict[str, Any]]) -> list[str]:
        errors: list[str] = []
        containers = _containers(spec, "initContainers") + _containers(spec, "containers")
        for item in items:
            kind = item.get("type")
            if kind == "Container":
                for container in containers:
                    requests, limits = _effective(container)
                    errors.extend(_check_item(item, "Container", requests, limits))
            elif kind == "Pod":
                requests, limits = _pod_totals(spec)
                errors.extend(_check_item(item, "Pod", requests, limits))
        return errors


def _check_item(
    item: dict[str, Any], kind: str, requests: dict[str, Decimal], limits: dict[str, Decimal]
) -> list[str]:
    errors = []
    for name, raw in sorted(_d(item.get("min")).items()):
        bound = _q(raw)
        if bound is None:
            continue
        if name not in requests:
            errors.append(f"minimum {name} usage per {kind} is {raw}.  No request is specified")
        elif requests[name] < bound:
            errors.append(
                f"minimum {name} usage per {kind} is {raw}, but request is "
                f"{_fmt(requests[name], raw)}"
            )
    for name, raw in sorted(_d(item.get("max")).items()):
        bound = _q(raw)
        if bound is None:
            continue
        if name not in limits:
            errors.append(f"maximum {name} usage per {kind} is {raw}.  No limit is specified")
        elif limits[name] > bound:
            errors.append(
                f"maximum {name} usage per {kind} is {raw}, but limit is {_fmt(limits[name], raw)}"
            )
    for name, raw in sorted(_d(item.get("maxLimitRequestRatio")).items()):
        bound = _q(raw)
        if bound is None or name not in limits:
            continue
        request = requests.get(name)
        if not request:
            errors.append(
                f"{name} max limit to request ratio per {kind} is {raw}, but no request is "
                "specified or request is 0"
            )
            continue
        ratio = limits[name] / request
        if ratio > bound:
            errors.append(
                f"{name} max limit to request ratio per {kind} is {raw}, but provided ratio is "
                f"{ratio:.6f}"
            )
    return errors


def _pod_totals(spec: dict[str, Any]) -> tuple[dict[str, Decimal], dict[str, Decimal]]:
    """A pod's effective requests/limits: max(sum of containers, largest init container)."""
    requests: dict[str, Decimal] = {}
    limits: dict[str, Decimal] = {}
    for container in _containers(spec, "containers"):
        r, lim = _effective(container)
        for name, value in r.items():
            requests[name] = requests.get(name, Decimal(0)) + value
        for name, value in lim.items():
            limits[name] = limits.get(name, Decimal(0)) + value
    for container in _containers(spec, "initContainers"):
        r, lim = _effective(container)
        for name, value in r.items():
            requests[name] = max(requests.get(name, Decimal(0)), value)
        for name, value in lim.items():
            limits[name] = max(limits.get(name, Decimal(0)), value)
    overhead = {k: _q(v) for k, v in _d(spec.get("overhead")).items()}
    for name, value in overhead.items():
        if value is not None:
            if name in requests:
                requests[name] += value
            if name in limits:
                limits[name] += value
    return requests, limits


# --- ResourceQuota --------------------------------------------------------------------------


def _terminal(pod: dict[str, Any]) -> bool:
    return _d(pod.get("status")).get("phase") in ("Succeeded", "Failed")


def pod_usage(pod: dict[str, Any]) -> dict[str, Decimal]:
    """What a pod counts against quotas."""
    usage: dict[str, Decimal] = {"pods": Decimal(1), "count/pods": Decimal(1)}
    requests, limits = _pod_totals(_d(pod.get("spec")))
    for name in _COMPUTE:
        if name in requests:
            usage[f"requests.{name}"] = requests[name]
            usage[name] = requests[name]
        if name in limits:
            usage[f"limits.{name}"] = limits[name]
    for name, value in requests.items():
        if "/" in name:  # extended resources: only requests are counted
            usage[f"requests.{name}"] = value
    return usage


def object_usage(group: str, plural: str, obj: dict[str, Any]) -> dict[str, Decimal]:
    """What any object counts against quotas (pods included)."""
    if (group, plural) == ("", "pods"):
        return {} if _terminal(obj) else pod_usage(obj)
    count_key = f"count/{plural}" + (f".{group}" if group else "")
    usage: dict[str, Decimal] = {count_key: Decimal(1)}
    simple = _SIMPLE_COUNTS.get((group, plural))
    if simple:
        usage[simple] = Decimal(1)
    spec = _d(obj.get("spec"))
    if (group, plural) == ("", "services"):
        node_ports = (
            sum(1 for p in spec.get("ports") or [] if isinstance(p, dict))
            if spec.get("type") in ("NodePort", "LoadBalancer")
            else 0
        )
        usage["services.nodeports"] = Decimal(node_ports)
        usage["services.loadbalancers"] = Decimal(1 if spec.get("type") == "LoadBalancer" else 0)
    if (group, plural) == ("", "persistentvolumeclaims"):
        storage = _q(_d(_d(spec.get("resources")).get("requests")).get("storage"))
        if storage is not None:
            usage["requests.storage"] = storage
            klass = spec.get("storageClassName")
            if klass:
                prefix = f"{klass}.storageclass.storage.k8s.io/"
                usage[prefix + "requests.storage"] = storage
                usage[prefix + "persistentvolumeclaims"] = Decimal(1)
    return usage


def _is_best_effort(pod: dict[str, Any]) -> bool:
    spec = _d(pod.get("spec"))
    for container in _containers(spec, "initContainers") + _containers(spec, "containers"):
        resources = _d(container.get("resources"))
        if _d(resources.get("requests")) or _d(resources.get("limits")):
            return False
    return True


def _scope_matches(scope: str, pod: dict[str, Any], selector: dict[str, Any] | None) -> bool:
    spec = _d(pod.get("spec"))
    if scope == "Terminating":
        return spec.get("activeDeadlineSeconds") is not None
    if scope == "NotTerminating":
        return spec.get("activeDeadlineSeconds") is None
    if scope == "BestEffort":
        return _is_best_effort(pod)
    if scope == "NotBestEffort":
        return not _is_best_effort(pod)
    if scope == "PriorityClass":
        value = spec.get("priorityClassName") or ""
        if selector is None:
            return bool(value)
        op = selector.get("operator")
        values = selector.get("values") or []
        if op == "In":
            return value in values
        if op == "NotIn":
            return value not in values
        if op == "Exists":
            return bool(value)
        if op == "DoesNotExist":
            return not value
    if scope == "CrossNamespacePodAffinity":
        return False
    return False


def quota_matches(quota: dict[str, Any], group: str, plural: str, obj: dict[str, Any]) -> bool:
    spec = _d(quota.get("spec"))
    scopes = [(s, None) for s in spec.get("scopes") or []]
    for expr in _d(spec.get("scopeSelector")).get("matchExpressions") or []:
        if isinstance(expr, dict):
            scopes.append((expr.get("scopeName"), expr))
    if not scopes:
        return True
    if (group, plural) != ("", "pods"):
        return False
    return all(_scope_matches(str(scope), obj, selector) for scope, selector in scopes)


def _render(resources: dict[str, Decimal], hints: dict[str, Any]) -> str:
    return ",".join(f"{k}={_fmt(v, hints.get(k))}" for k, v in sorted(resources.items()))


def _required_missing(hard: dict[str, Any], pod: dict[str, Any]) -> list[str]:
    """``limits.cpu for: c`` entries for compute resources a quota tracks but a container
    does not state."""
    tracked = set(hard)
    spec = _d(pod.get("spec"))
    missing: dict[str, list[str]] = {}
    for container in _containers(spec, "initContainers") + _containers(spec, "containers"):
        requests, limits = _effective(container)
        for name in _COMPUTE:
            if {name, f"requests.{name}"} & tracked and name not in requests:
                missing.setdefault(f"requests.{name}", []).append(container.get("name", ""))
            if f"limits.{name}" in tracked and name not in limits:
                missing.setdefault(f"limits.{name}", []).append(container.get("name", ""))
    return [f"{key} for: {','.join(names)}" for key, names in sorted(missing.items())]


def compute_usage(
    quota: dict[str, Any], objects: Callable[[str, str], Iterable[dict[str, Any]]]
) -> dict[str, Decimal]:
    """A quota's ``used`` recomputed from the objects that exist now."""
    hard = _d(_d(quota.get("spec")).get("hard"))
    used = {name: Decimal(0) for name in hard}
    for group, plural in _kinds_for(hard):
        for obj in objects(group, plural):
            if not quota_matches(quota, group, plural, obj):
                continue
            for name, value in object_usage(group, plural, obj).items():
                if name in used:
                    used[name] += value
    return used


def _kinds_for(hard: dict[str, Any]) -> set[tuple[str, str]]:
    kinds: set[tuple[str, str]] = set()
    for name in hard:
        if name.startswith("count/"):
            plural, _, group = name[len("count/") :].partition(".")
            kinds.add((group, plural))
        elif name in ("services", "services.nodeports", "services.loadbalancers"):
            kinds.add(("", "services"))
        elif name in ("configmaps", "secrets", "replicationcontrollers", "resourcequotas"):
            kinds.add(("", name))
        elif name in ("persistentvolumeclaims", "requests.storage") or "storageclass" in name:
            kinds.add(("", "persistentvolumeclaims"))
        else:
            kinds.add(("", "pods"))
    return kinds


def _status_for(quota: dict[str, Any], used: dict[str, Decimal]) -> dict[str, Any]:
    hard = dict(_d(_d(quota.get("spec")).get("hard")))
    return {"hard": hard, "used": {k: _fmt(v, hard.get(k)) for k, v in sorted(used.items())}}


class ResourceQuota:
    """See the module docstring."""

    name = "ResourceQuota"
    mutating = False

    def __init__(self, quotas: Any, list_cached: Lister, recalculator: QuotaRecalculator) -> None:
        self._quotas = quotas  # the resourcequotas ResourceStore
        self._list = list_cached
        self._recalculator = recalculator

    async def admit(self, attrs: AdmissionAttributes) -> None:
        if not attrs.namespaced or not attrs.namespace or attrs.subresource:
            return
        if attrs.operation == "DELETE":
            if self._list("", "resourcequotas", attrs.namespace):
                attrs.on_success(self._recalculator.poke)
            return
        if attrs.is_resource("", "resourcequotas"):
            attrs.on_success(self._recalculator.poke)
            return
        if attrs.operation not in ("CREATE", "UPDATE") or not isinstance(attrs.obj, dict):
            return
        quotas = self._list("", "resourcequotas", attrs.namespace)
        if not quotas:
            return
        delta = object_usage(attrs.group, attrs.resource, attrs.obj)
        if attrs.operation == "UPDATE":
            if not isinstance(attrs.old_obj, dict):
                return
            # An update is charged only for what it adds (a Service becoming NodePort).
            before = object_usage(attrs.group, attrs.resource, attrs.old_obj)
            delta = {k: v - before.get(k, Decimal(0)) for k, v in delta.items()}
            delta = {k: v for k, v in delta.items() if v > 0}
            if not delta:
                return
        for quota in sorted(quotas, key=lambda q: q["metadata"]["name"]):
            hard = _d(_d(quota.get("spec")).get("hard"))
            if not hard or not quota_matches(quota, attrs.group, attrs.resource, attrs.obj):
                continue
            if attrs.operation == "CREATE" and attrs.is_resource("", "pods"):
                missing = _required_missing(hard, attrs.obj)
                if missing:
                    raise forbidden(
                        attrs,
                        f"failed quota: {quota['metadata']['name']}: must specify "
                        + "; ".join(missing),
                    )
            charged = {k: v for k, v in delta.items() if k in hard}
            if not charged:
                continue
            await self._charge(attrs, quota["metadata"]["name"], charged)

    async def _charge(
        self, attrs: AdmissionAttributes, quota_name: str, charged: dict[str, Decimal]
    ) -> None:
        def take(current: dict[str, Any]) -> dict[str, Any]:
            hard = _d(_d(current.get("spec")).get("hard"))
            status = _d(current.get("status"))
            recorded = _d(status.get("used"))
            if set(hard) - set(recorded):
                used = compute_usage(current, self._objects(attrs.namespace))
            else:
                used = {k: _q(v) or Decimal(0) for k, v in recorded.items() if k in hard}
            failed = {}
            for name, value in charged.items():
                limit = _q(hard.get(name))
                if limit is not None and used.get(name, Decimal(0)) + value > limit:
                    failed[name] = value
            if failed:
                raise forbidden(
                    attrs,
                    f"exceeded quota: {quota_name}, requested: {_render(failed, hard)}, "
                    f"used: {_render({k: used.get(k, Decimal(0)) for k in failed}, hard)}, "
                    f"limited: {_render({k: _q(hard[k]) or Decimal(0) for k in failed}, hard)}",
                )
            for name, value in charged.items():
                used[name] = used.get(name, Decimal(0)) + value
            current["status"] = _status_for(current, used)
            return current

        for _attempt in range(QUOTA_CONFLICT_RETRIES):
            try:
                await self._quotas.guaranteed_update(
                    attrs.namespace, quota_name, take, subresource="status", dry_run=attrs.dry_run
                )
            except NotFound:
                return  # deleted meanwhile: nothing to charge
            except Forbidden:
                raise
            except StatusError as exc:
                if exc.code == 409:
                    continue
                raise
            if not attrs.dry_run:
                # Uncharge a create that then fails (the recalculation counts what exists).
                attrs.on_failure(self._recalculator.poke)
            return
        raise forbidden(attrs, f"status unknown for quota: {quota_name}")

    def _objects(self, namespace: str) -> Callable[[str, str], Iterable[dict[str, Any]]]:
        return lambda group, plural: self._list(group, plural, namespace)


class QuotaRecalculator:
    """Recomputes every quota's status from the caches (see the module docstring)."""

    def __init__(
        self,
        quotas: Any,
        list_cached: Lister,
        *,
        interval_s: float = DEFAULT_RECALCULATE_INTERVAL_S,
    ) -> None:
        self._quotas = quotas
        self._list = list_cached
        self.interval_s = interval_s
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def poke(self) -> None:
        """Ask for a recalculation soon (after the write that asked is visible)."""
        self._wake.set()

    async def run_once(self) -> None:
        for quota in list(self._quotas.cached_objects(None)):
            meta = quota.get("metadata") or {}
            namespace = meta.get("namespace", "")
            used = compute_usage(quota, lambda g, p, ns=namespace: self._list(g, p, ns))
            wanted = _status_for(quota, used)
            if _d(quota.get("status")) == wanted:
                continue

            def write(current: dict[str, Any], wanted: dict[str, Any] = wanted) -> dict[str, Any]:
                current["status"] = wanted
                return current

            try:
                await self._quotas.guaranteed_update(
                    namespace, meta.get("name", ""), write, subresource="status"
                )
            except NotFound:
                continue
            except StatusError as exc:
                log.warning("quota %s/%s status not updated: %s", namespace, meta.get("name"), exc)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="resource-quota-recalculator")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def _loop(self) -> None:
        while True:
            try:
                async with asyncio.timeout(self.interval_s):
                    await self._wake.wait()
                await asyncio.sleep(RECALCULATE_SETTLE_S)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("resource quota recalculation failed")
