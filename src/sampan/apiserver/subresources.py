"""Computed subresources, served as REST handlers: ``serviceaccounts/token`` (TokenRequest,
``kubectl create token``) and ``pods/eviction`` (the Eviction API that ``kubectl drain`` uses,
respecting PodDisruptionBudgets).

TokenRequest: the account must exist; ``expirationSeconds`` defaults to 3600 and must lie in
[600 s, 2^32 s]; audiences default to the API server's; a ``boundObjectRef`` (Pod, Secret or
Node) must exist (and match its uid when given), and a pod-bound token also names the pod's
node. The response is the TokenRequest with ``status.token`` and ``status.expirationTimestamp``.

Eviction, as upstream's eviction REST: a pod that is already terminal, pending or being
deleted is deleted without looking at budgets; otherwise the (single) PodDisruptionBudget
selecting it must allow a disruption: the budget's ``status.disruptionsAllowed`` is decremented
and the pod recorded in ``status.disruptedPods`` (compare-and-swap), then the pod is deleted.
No budget allowance -> 429 with the ``DisruptionBudget`` cause; more than one budget -> 500.
Unhealthy (not Ready) pods follow ``unhealthyPodEvictionPolicy`` (IfHealthyBudget default).

Invariant: neither writes anything when it refuses; both answer 201 on success.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from sampan.api import fielderrors as fe
from sampan.api import times
from sampan.api.errors import (
    BadRequest,
    Cause,
    Forbidden,
    InternalError,
    Invalid,
    NotFound,
    StatusError,
    TooManyRequests,
)
from sampan.api.labels import SelectorError, selector_from_label_selector
from sampan.apiserver.admission.chain import AdmissionAttributes, AdmissionChain
from sampan.apiserver.negotiation import decode_object, media_type_of, read_body
from sampan.apiserver.openapi_data import builtin_type_error
from sampan.apiserver.responses import json_response, status_success

__all__ = [
    "DEFAULT_TOKEN_REQUEST_EXPIRATION_S",
    "MAX_TOKEN_REQUEST_EXPIRATION_S",
    "MIN_TOKEN_REQUEST_EXPIRATION_S",
    "EvictionHandler",
    "TokenRequestHandler",
]

log = logging.getLogger(__name__)

DEFAULT_TOKEN_REQUEST_EXPIRATION_S = 3600
MIN_TOKEN_REQUEST_EXPIRATION_S = 600
MAX_TOKEN_REQUEST_EXPIRATION_S = 1 << 32
MAX_BODY_BYTES = 1 << 20
EVICTION_CONFLICT_RETRIES = 5
POLICY_GROUP = "policy"

_API_VERSIONS = {"TokenRequest": "authentication.k8s.io/v1", "Eviction": "policy/v1"}
"""The version a body without ``apiVersion`` is decoded as."""

Getter = Callable[[str, str, str, str], Awaitable[dict[str, Any] | None]]


async def _read(request: web.Request, kind: str) -> dict[str, Any]:
    body = await read_body(request, MAX_BODY_BYTES)
    if not body.strip():
        return {"kind": kind, "metadata": {}}
    obj = decode_object(body, media_type_of(request), kind)
    # Typed decoding, as for every built-in kind (a string deleteOptions is a 400).
    api_version = obj.get("apiVersion") if isinstance(obj.get("apiVersion"), str) else ""
    error = builtin_type_error(api_version or _API_VERSIONS[kind], kind, obj)
    if error is not None:
        version = (api_version or _API_VERSIONS[kind]).rpartition("/")[2]
        raise BadRequest(f'{kind} in version "{version}" cannot be handled as a {kind}: {error}')
    if not isinstance(obj.get("metadata"), dict):
        obj["metadata"] = {}
    return obj


def _dry_run(request: web.Request) -> bool:
    values = request.query.getall("dryRun", [])
    for value in values:
        if value != "All":
            raise BadRequest(f'Invalid dryRun value: {value!r}: supported values: "All"')
    return bool(values)


def _now() -> str:
    return times.now()


class TokenRequestHandler:
    """``POST .../serviceaccounts/<name>/token`` (see the module docstring)."""

    def __init__(
        self,
        issuer: Any,
        get: Getter,
        chain: AdmissionChain,
        api_audiences: tuple[str, ...],
    ) -> None:
        self._issuer = issuer
        self._get = get
        self._chain = chain
        self._audiences = api_audiences

    async def __call__(
        self, request: web.Request, ri: Any, info: Any, namespace: str | None, user: Any
    ) -> web.StreamResponse:
        namespace = namespace or ""
        name = ri.path_name
        token_request = await _read(request, "TokenRequest")
        dry_run = _dry_run(request)
        account = await self._get("", "serviceaccounts", namespace, name)
        if account is None:
            raise NotFound.for_object("serviceaccounts", "", name)
        spec = token_request.get("spec")
        if not isinstance(spec, dict):
            spec = token_request["spec"] = {}
        expiration = spec.get("expirationSeconds")
        if expiration is None:
            expiration = spec["expirationSeconds"] = DEFAULT_TOKEN_REQUEST_EXPIRATION_S
        causes: list[Cause] = []
        if not isinstance(expiration, int) or expiration < MIN_TOKEN_REQUEST_EXPIRATION_S:
            causes.append(
                fe.invalid(
                    "spec.expirationSeconds",
                    expiration,
                    "may not specify a duration less than 10 minutes",
                )
            )
        elif expiration > MAX_TOKEN_REQUEST_EXPIRATION_S:
            causes.append(
                fe.invalid(
                    "spec.expirationSeconds",
                    expiration,
                    "may not specify a duration larger than 2^32 seconds",
                )
            )
        if causes:
            raise Invalid(
                fe.invalid_message("TokenRequest.authentication.k8s.io", name, causes),
                name=name,
                group="authentication.k8s.io",
                kind="TokenRequest",
                causes=causes,
            )
        audiences = [str(a) for a in spec.get("audiences") or []] or list(self._audiences)
        spec["audiences"] = audiences
        attrs = AdmissionAttributes(
            operation="CREATE",
            group="",
            version="v1",
            resource="serviceaccounts",
            subresource="token",
            namespace=namespace,
            name=name,
            namespaced=True,
            obj=token_request,
            dry_run=dry_run,
            user=user,
        )
        await self._chain.admit(attrs)  # before the bound object is looked up, as upstream
        await self._chain.finish(attrs, ok=True)
        bound, node = await self._bound_object(namespace, name, spec.get("boundObjectRef"))
        sa_meta = account.get("metadata") or {}
        token, expires = self._issuer.issue(
            namespace,
            name,
            sa_meta.get("uid", ""),
            expiration_s=expiration,
            audiences=audiences,
            bound_object=bound,
            node=node,
        )
        meta = token_request["metadata"]
        meta["name"] = name
        meta["namespace"] = namespace
        meta["creationTimestamp"] = _now()
        token_request["apiVersion"] = "authentication.k8s.io/v1"
        token_request["kind"] = "TokenRequest"
        token_request["status"] = {
            "token": "" if dry_run else token,
            "expirationTimestamp": times.rfc3339(expires),
        }
        return json_response(token_request, 201)

    async def _bound_object(
        self, namespace: str, sa_name: str, ref: Any
    ) -> tuple[dict[str, str] | None, dict[str, str] | None]:
        if not ref:
            return None, None
        if not isinstance(ref, dict):
            raise BadRequest("spec.boundObjectRef must be an object")
        kind = ref.get("kind") or ""
        plural = {"Pod": "pods", "Secret": "secrets", "Node": "nodes"}.get(kind)
        if plural is None:
            raise BadRequest(f"cannot bind token to object of type {kind}")
        if (ref.get("apiVersion") or "v1") != "v1":
            raise BadRequest(f"cannot bind token to object with apiVersion {ref.get('apiVersion')}")
        obj_name = ref.get("name") or ""
        obj = await self._get("", plural, "" if kind == "Node" else namespace, obj_name)
        uid = (obj or {}).get("metadata", {}).get("uid", "")
        if obj is None or (ref.get("uid") and ref["uid"] != uid):
            raise Forbidden(
                f'serviceaccounts "{sa_name}" is forbidden: the API object referenced could '
                f"not be found (or its UID did not match): {kind} {obj_name}"
            )
        bound = {"kind": kind, "name": obj_name, "uid": uid}
        node: dict[str, str] | None = None
        if kind == "Pod":
            node_name = (obj.get("spec") or {}).get("nodeName") or ""
            if node_name:
                node_obj = await self._get("", "nodes", "", node_name)
                node = {
                    "name": node_name,
                    "uid": ((node_obj or {}).get("metadata") or {}).get("uid", ""),
                }
        return bound, node


def _pod_ready(pod: dict[str, Any]) -> bool:
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if isinstance(condition, dict) and condition.get("type") == "Ready":
            return condition.get("status") == "True"
    return False


class EvictionHandler:
    """``POST .../pods/<name>/eviction`` (see the module docstring)."""

    def __init__(self, storage: Any, registry: Any, chain: AdmissionChain, delete_options: Any):
        self._pods = storage.for_resource(registry.by_resource("", "v1", "pods"))
        self._pdbs = storage.for_resource(
            registry.by_resource(POLICY_GROUP, "v1", "poddisruptionbudgets")
        )
        self._chain = chain
        self._delete_options = delete_options

    async def __call__(
        self, request: web.Request, ri: Any, info: Any, namespace: str | None, user: Any
    ) -> web.StreamResponse:
        namespace = namespace or ""
        name = ri.path_name
        eviction = await _read(request, "Eviction")
        eviction_name = (eviction.get("metadata") or {}).get("name")
        if eviction_name and eviction_name != name:
            raise BadRequest(
                f"name in URL does not match name in Eviction object: {name} != {eviction_name}"
            )
        dry_run = _dry_run(request)
        options = self._options(eviction.get("deleteOptions") or {}, dry_run)
        attrs = AdmissionAttributes(
            operation="CREATE",
            group="",
            version="v1",
            resource="pods",
            subresource="eviction",
            namespace=namespace,
            name=name,
            namespaced=True,
            obj=eviction,
            dry_run=dry_run,
            user=user,
        )
        await self._chain.admit(attrs)
        await self._chain.finish(attrs, ok=True)
        pod = await self._pods.get(namespace, name)
        if not self._can_ignore_budget(pod):
            await self._check_budget(pod, namespace, name, dry_run)
        try:
            await self._pods.delete(namespace, name, options)
        except NotFound:
            pass  # gone meanwhile: the eviction's goal is met
        return json_response(status_success(201), 201)

    def _options(self, raw: dict[str, Any], dry_run: bool) -> Any:
        preconditions = raw.get("preconditions") or {}
        grace = raw.get("gracePeriodSeconds")
        return self._delete_options(
            grace_period_s=grace if isinstance(grace, int) else None,
            propagation_policy=raw.get("propagationPolicy"),
            precondition_uid=preconditions.get("uid"),
            precondition_rv=preconditions.get("resourceVersion"),
            dry_run=dry_run or bool(raw.get("dryRun")),
        )

    @staticmethod
    def _can_ignore_budget(pod: dict[str, Any]) -> bool:
        if (pod.get("metadata") or {}).get("deletionTimestamp"):
            return True
        phase = (pod.get("status") or {}).get("phase")
        return phase in ("Succeeded", "Failed", "Pending")

    def _matching_budgets(self, pod: dict[str, Any], namespace: str) -> list[dict[str, Any]]:
        labels = (pod.get("metadata") or {}).get("labels") or {}
        out = []
        for pdb in self._pdbs.cached_objects(namespace):
            selector_spec = (pdb.get("spec") or {}).get("selector")
            if selector_spec is None:
                continue
            try:
                selector = selector_from_label_selector(selector_spec)
            except SelectorError:
                continue
            if selector.matches(labels):
                out.append(pdb)
        return out

    async def _check_budget(
        self, pod: dict[str, Any], namespace: str, name: str, dry_run: bool
    ) -> None:
        budgets = self._matching_budgets(pod, namespace)
        if not budgets:
            return
        if len(budgets) > 1:
            raise InternalError(
                "This pod has more than one PodDisruptionBudget, which the eviction "
                "subresource does not support."
            )
        pdb_name = budgets[0]["metadata"]["name"]
        pdb_spec = budgets[0].get("spec") or {}
        if not _pod_ready(pod):
            policy = pdb_spec.get("unhealthyPodEvictionPolicy") or "IfHealthyBudget"
            status = budgets[0].get("status") or {}
            if policy == "AlwaysAllow":
                return
            if status.get("currentHealthy", 0) >= status.get("desiredHealthy", 0) > 0:
                return

        def take(current: dict[str, Any]) -> dict[str, Any]:
            meta = current.get("metadata") or {}
            status = current.setdefault("status", {})
            if status.get("observedGeneration", 0) < meta.get("generation", 0):
                raise _budget_error(
                    f"The disruption budget {pdb_name} is still being processed by the server."
                )
            allowed = status.get("disruptionsAllowed", 0)
            if allowed < 0:
                raise Forbidden("pdb disruptions allowed is negative")
            disrupted = status.get("disruptedPods") or {}
            if len(disrupted) > 2000:
                raise Forbidden(
                    "DisruptedPods map too big - too many evictions not confirmed by PDB controller"
                )
            if allowed == 0:
                raise _budget_error(
                    f"The disruption budget {pdb_name} needs "
                    f"{status.get('desiredHealthy', 0)} healthy pods and has "
                    f"{status.get('currentHealthy', 0)} currently"
                )
            status["disruptionsAllowed"] = allowed - 1
            status["disruptedPods"] = {**disrupted, name: _now()}
            return current

        for _attempt in range(EVICTION_CONFLICT_RETRIES):
            try:
                await self._pdbs.guaranteed_update(
                    namespace, pdb_name, take, subresource="status", dry_run=dry_run
                )
                return
            except StatusError as exc:
                if exc.code == 409:
                    continue
                raise
        raise TooManyRequests("Cannot evict pod as it would violate the pod's disruption budget.")


def _budget_error(detail: str) -> TooManyRequests:
    return TooManyRequests(
        "Cannot evict pod as it would violate the pod's disruption budget.",
        causes=[Cause("DisruptionBudget", detail, "")],
        retry_after_s=0,
    )
