"""Dynamic admission webhooks: MutatingAdmissionWebhook and ValidatingAdmissionWebhook.

Owns the in-memory view of the ``admissionregistration.k8s.io/v1`` Mutating- and
ValidatingWebhookConfigurations, the matching of a request against their webhooks, the
``AdmissionReview`` calls and the interpretation of the answers, as kube-apiserver 1.32 does.

* Configurations come from the API server's own watch cache (``WebhookSource``): the sorted
  webhook list is rebuilt only when the cache's generation moved, so a created, changed or
  deleted configuration takes effect with the next request after the cache saw it; requests
  in between read nothing. A cache that is reloading is bypassed (a consistent list), never
  read as "no configurations".
* Order: mutating webhooks run after the built-in mutating plugins, sorted by configuration
  name, then in the order of ``webhooks`` in it; a webhook with ``reinvocationPolicy:
  IfNeeded`` runs once more when a webhook after it changed the object. Validating webhooks
  run after the built-in validating plugins, all at once; the first refusal in webhook order
  is the answer.
* What a webhook sees: the new object defaulted (kube-apiserver defaults on decode, before
  admission) and converted to the version its rule matched (``matchPolicy: Equivalent`` also
  matches the other versions and groups over the same storage); for a DELETE, the object
  being deleted as ``oldObject``. Validating webhooks only see objects that passed the
  kind's validation (an invalid object is a 422 first, as upstream). Unlike upstream, the
  uid, creationTimestamp and generated name the store assigns at write time are not in the
  object yet.
* Calls go through one shared pool of keep-alive HTTPS connections (``webhooks_http``), with
  one SSL context per ``caBundle`` (the system roots when it is empty). A ``service`` reference is
  dialled at a ready address of the Service's EndpointSlices (else its Endpoints), verified as
  ``<service>.<namespace>.svc`` (kube-apiserver's ``--enable-aggregator-routing`` behaviour).
  Each call is bounded by the webhook's ``timeoutSeconds``; nothing blocks the loop.
* Failures: a webhook that cannot be called or answers nonsense fails the request with
  upstream's 500 ``Internal error occurred: failed calling webhook "<name>": ...`` under
  ``failurePolicy: Fail`` and is skipped under ``Ignore``; a refusal is the webhook's own
  ``Status`` (code at least 400) with ``admission webhook "<name>" denied the request: ...``.
* Configurations themselves (and the other admissionregistration kinds) are never sent to
  webhooks, so a bad webhook cannot lock its own repair out; neither are the review-style
  virtual resources (TokenReview, SubjectAccessReview, ...).

* ``matchConditions`` (CEL, ``sampan.apiserver.cel``): compiled once per configuration
  version with the variables ``object``, ``oldObject``, ``request`` (the AdmissionRequest
  without its objects) and ``authorizer`` (with ``authorizer.requestResource``); evaluated
  after rules and selectors matched, just before the call (for mutating webhooks, on the
  object as the webhooks before it left it). Any condition false skips the webhook; otherwise
  an evaluation error (or an expression that does not compile, stored by another server) is
  refused under ``failurePolicy: Fail`` with upstream's 403 (``<resource> "<name>" is
  forbidden: expression '...' resulted in error: ...``) and skips the webhook under
  ``Ignore``. Configurations are checked when written (``configuration_errors``: at most 64
  conditions, unique qualified names, expressions that compile; a 422 with field causes).

Invariants: a webhook whose conditions cannot be evaluated is never silently called nor
silently skipped under ``Fail``. A mutating webhook's patch is applied to a copy and only a
fully applied result replaces the content of ``attrs.obj`` (in place, so every handler
writes what the webhooks made of it).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import inspect
import json
import logging
import random
import ssl
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from sampan.api import fielderrors as fe
from sampan.api.errors import (
    BadRequest,
    Cause,
    Forbidden,
    InternalError,
    Invalid,
    StatusError,
    qualified_resource,
)
from sampan.api.labels import SelectorError, selector_from_label_selector
from sampan.apiserver import cel
from sampan.apiserver.admission.chain import AdmissionAttributes
from sampan.apiserver.admission.policy import authorizer_check, match_condition_errors
from sampan.apiserver.admission.webhooks_http import DialError, HTTPSPool, ProtocolError, TLSError
from sampan.apiserver.patch import apply_json_patch

__all__ = [
    "MutatingWebhooks",
    "ReviewError",
    "ValidatingWebhooks",
    "Webhook",
    "WebhookCaller",
    "WebhookSource",
    "compile_configurations",
    "configuration_errors",
]

log = logging.getLogger(__name__)

GROUP = "admissionregistration.k8s.io"
DEFAULT_TIMEOUT_S = 10
USER_AGENT = "kube-apiserver-admission"
KNOWN_REVIEW_VERSIONS = ("v1", "v1beta1")
CONDITION_VARIABLES = ("object", "oldObject", "request", "authorizer")
"""The CEL variables of a webhook's ``matchConditions`` (no params, unlike a policy's)."""
CONFIGURATION_KINDS = {
    "mutatingwebhookconfigurations": "MutatingWebhookConfiguration",
    "validatingwebhookconfigurations": "ValidatingWebhookConfiguration",
}

# Resources whose writes never go to webhooks (upstream's IsExemptAdmissionConfigurationResource
# and the review kinds, which are answers rather than stored objects).
_EXEMPT_GROUPS = {"authentication.k8s.io", "authorization.k8s.io"}
_EXEMPT_RESOURCES = {
    (GROUP, "mutatingwebhookconfigurations"),
    (GROUP, "validatingwebhookconfigurations"),
    (GROUP, "validatingadmissionpolicies"),
    (GROUP, "validatingadmissionpolicybindings"),
    (GROUP, "mutatingadmissionpolicies"),
    (GROUP, "mutatingadmissionpolicybindings"),
}

KindOf = Callable[[str, str, str], str | None]
"""(group, version, plural) -> Kind, or None when that version is not served."""
Equivalents = Callable[[str, str, str], Sequence[tuple[str, str, str]]]
"""(group, version, plural) -> the other (group, version, plural) over the same storage."""
Converter = Callable[[dict[str, Any], str, str, str], Any]
"""(object, group, version, plural) -> the object as that resource serves it (or an awaitable
of it: a CRD whose conversion strategy is ``Webhook``)."""


# --- configuration ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rule:
    operations: frozenset[str]
    groups: frozenset[str]
    versions: frozenset[str]
    resources: tuple[tuple[str, str], ...]  # (resource, subresource), "*" wildcards
    scope: str

    def matches(
        self, operation: str, group: str, version: str, resource: str, sub: str, namespaced: bool
    ) -> bool:
        if "*" not in self.operations and operation not in self.operations:
            return False
        if "*" not in self.groups and group not in self.groups:
            return False
        if "*" not in self.versions and version not in self.versions:
            return False
        if self.scope == "Cluster" and namespaced:
            return False
        if self.scope == "Namespaced" and not namespaced:
            return False
        return any((res in ("*", resource)) and (s in ("*", sub)) for res, s in self.resources)


@dataclass(slots=True)
class Webhook:
    """One webhook of one configuration, compiled for matching and calling."""

    name: str
    configuration: str
    mutating: bool
    rules: tuple[Rule, ...]
    failure_policy: str
    match_policy: str
    namespace_selector: Any  # a labels.Selector, or None for "everything"
    object_selector: Any
    side_effects: str
    timeout_s: int
    review_versions: tuple[str, ...]
    url: str | None
    service: dict[str, Any] | None
    ca_bundle: str
    reinvoke: bool = False
    conditions: tuple[Condition, ...] = ()
    invalid: str = ""
    """Why this webhook cannot be used (a selector that does not parse); calling it fails."""

    @property
    def ignore_failures(self) -> bool:
        return self.failure_policy == "Ignore"


@dataclass(frozen=True, slots=True)
class Condition:
    """One compiled ``matchConditions`` entry (``program`` None: ``error`` says why)."""

    name: str
    expression: str
    program: cel.Program | None
    error: str = ""


def _condition(raw: Any) -> Condition:
    raw = raw if isinstance(raw, dict) else {}
    expression = str(raw.get("expression") or "")
    try:
        program: cel.Program | None = cel.compile(expression, CONDITION_VARIABLES)
        error = ""
    except cel.CompileError as e:
        program, error = None, f"compilation error: {e}"
    return Condition(str(raw.get("name") or ""), expression, program, error)


def configuration_errors(obj: dict[str, Any]) -> list[Cause]:
    """The field errors of a webhook configuration that need CEL (its ``matchConditions``);
    the rest of its validation is the kind's strategy (``sampan.api.validation``)."""
    causes: list[Cause] = []
    webhooks = obj.get("webhooks")
    for i, raw in enumerate(webhooks if isinstance(webhooks, list) else ()):
        if isinstance(raw, dict) and raw.get("matchConditions") is not None:
            causes.extend(
                match_condition_errors(
                    raw.get("matchConditions"),
                    f"webhooks[{i}].matchConditions",
                    CONDITION_VARIABLES,
                )
            )
    return causes


def check_configuration_write(attrs: AdmissionAttributes) -> None:
    """Refuse (422) a create or update of a webhook configuration whose conditions are
    invalid."""
    kind = CONFIGURATION_KINDS.get(attrs.resource)
    if (
        attrs.group != GROUP
        or kind is None
        or attrs.subresource
        or attrs.operation not in ("CREATE", "UPDATE")
        or not isinstance(attrs.obj, dict)
    ):
        return
    causes = configuration_errors(attrs.obj)
    if causes:
        name = str((attrs.obj.get("metadata") or {}).get("name") or attrs.name)
        parts = [fe.error_string(c) for c in causes]
        summary = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
        raise Invalid(
            f'{kind}.{GROUP} "{name}" is invalid: {summary}',
            name=name,
            group=GROUP,
            kind=kind,
            causes=causes,
        )


def _rule(raw: dict[str, Any]) -> Rule:
    resources: list[tuple[str, str]] = []
    for entry in raw.get("resources") or ():
        res, _, sub = str(entry).partition("/")
        resources.append((res, sub))
    return Rule(
        operations=frozenset(str(o) for o in raw.get("operations") or ()),
        groups=frozenset(str(g) for g in raw.get("apiGroups") or ()),
        versions=frozenset(str(v) for v in raw.get("apiVersions") or ()),
        resources=tuple(resources),
        scope=str(raw.get("scope") or "*"),
    )


def _selector(raw: Any) -> Any:
    if not raw:
        return None
    selector = selector_from_label_selector(raw)
    return None if selector.empty else selector


def compile_configurations(objects: Iterable[dict[str, Any]], *, mutating: bool) -> list[Webhook]:
    """The webhooks of ``objects`` in kube-apiserver's order (configuration name, then
    position)."""
    out: list[Webhook] = []
    for config in sorted(objects, key=lambda o: str((o.get("metadata") or {}).get("name"))):
        config_name = str((config.get("metadata") or {}).get("name") or "")
        for raw in config.get("webhooks") or ():
            if not isinstance(raw, dict):
                continue
            client = raw.get("clientConfig") or {}
            hook = Webhook(
                name=str(raw.get("name") or ""),
                configuration=config_name,
                mutating=mutating,
                rules=tuple(_rule(r) for r in raw.get("rules") or () if isinstance(r, dict)),
                failure_policy=str(raw.get("failurePolicy") or "Fail"),
                match_policy=str(raw.get("matchPolicy") or "Equivalent"),
                namespace_selector=None,
                object_selector=None,
                side_effects=str(raw.get("sideEffects") or ""),
                timeout_s=int(raw.get("timeoutSeconds") or DEFAULT_TIMEOUT_S),
                review_versions=tuple(str(v) for v in raw.get("admissionReviewVersions") or ()),
                url=client.get("url") or None,
                service=client.get("service") or None,
                ca_bundle=str(client.get("caBundle") or ""),
                reinvoke=mutating and raw.get("reinvocationPolicy") == "IfNeeded",
            )
            conditions = raw.get("matchConditions")
            if isinstance(conditions, list):
                hook.conditions = tuple(_condition(c) for c in conditions)
            try:
                hook.namespace_selector = _selector(raw.get("namespaceSelector"))
                hook.object_selector = _selector(raw.get("objectSelector"))
            except (SelectorError, ValueError, TypeError) as e:
                hook.invalid = f"invalid label selector: {e}"
            out.append(hook)
    return out


class WebhookSource:
    """The compiled webhooks of one configuration kind, rebuilt when the watch cache moved.

    ``generation()`` is the cache's change counter (cheap, in memory); ``objects()`` lists the
    configurations consistently (from the watch cache when it is current, from the datastore
    while it (re)loads), so a cache that is loading never makes webhooks disappear."""

    def __init__(
        self,
        generation: Callable[[], int],
        objects: Callable[[], Awaitable[Iterable[dict[str, Any]]]],
        *,
        mutating: bool,
    ) -> None:
        self._generation = generation
        self._objects = objects
        self._mutating = mutating
        self._seen: int | None = None
        self._hooks: list[Webhook] = []
        self._lock = asyncio.Lock()

    async def webhooks(self) -> list[Webhook]:
        if self._generation() == self._seen:
            return self._hooks
        async with self._lock:
            generation = self._generation()
            if generation != self._seen:
                objects = await self._objects()
                self._hooks = compile_configurations(objects, mutating=self._mutating)
                self._seen = generation
        return self._hooks


# --- errors ---------------------------------------------------------------------------------


class ReviewError(Exception):
    """A review POST failed (Go's REST client wording); ``before_call``: no request was
    sent (the client could not be built)."""

    def __init__(self, message: str, *, before_call: bool = False) -> None:
        super().__init__(message)
        self.before_call = before_call


class CallError(Exception):
    """The webhook could not be called or answered something unusable (upstream's
    ErrCallingWebhook): subject to the failure policy."""

    def __init__(self, webhook: str, reason: str) -> None:
        super().__init__(f'failed calling webhook "{webhook}": {reason}')


def _internal(error: CallError) -> InternalError:
    return InternalError(f"Internal error occurred: {error}")


def denied(webhook: str, result: Any) -> StatusError:
    """A webhook's refusal as kube-apiserver reports it (its ``ToStatusErr``)."""
    status = result if isinstance(result, dict) else {}
    prefix = f'admission webhook "{webhook}" denied the request'
    message = str(status.get("message") or "")
    reason = str(status.get("reason") or "")
    if message:
        text = f"{prefix}: {message}"
    elif reason:
        text = f"{prefix}: {reason}"
    else:
        text = f"{prefix} without explanation"
    try:
        code = int(status.get("code") or 0)
    except (TypeError, ValueError):
        code = 0
    details = status.get("details") if isinstance(status.get("details"), dict) else {}
    causes = []
    for raw in details.get("causes") or ():
        if isinstance(raw, dict):
            causes.append(
                Cause(
                    str(raw.get("reason") or ""),
                    str(raw.get("message") or ""),
                    str(raw.get("field") or ""),
                )
            )
    return StatusError(
        text,
        name=str(details.get("name") or ""),
        group=str(details.get("group") or ""),
        kind=str(details.get("kind") or ""),
        causes=causes,
        reason=reason,
        code=max(code, 400),
    )


# --- calling --------------------------------------------------------------------------------

ObjectGetter = Callable[[AdmissionAttributes], Awaitable[dict[str, Any] | None]]
"""The stored object ``attrs`` names (None when it is gone)."""

Defaulter = Callable[[dict[str, Any]], dict[str, Any]]
"""A defaulted copy of an object (the kind's defaults as the API server fills them)."""

ServiceResolver = Callable[[str, str, int], Awaitable[tuple[str, int]]]
"""(namespace, name, port) -> (address, port) of a ready endpoint; raises LookupError with
upstream's message when there is none."""


class WebhookCaller:
    """POSTs AdmissionReviews: one shared connection pool, SSL contexts cached per caBundle."""

    def __init__(self, resolve_service: ServiceResolver) -> None:
        self._resolve = resolve_service
        self._pool = HTTPSPool()
        self._ssl: dict[str, ssl.SSLContext] = {}

    def _ssl_context(self, ca_bundle: str) -> ssl.SSLContext:
        context = self._ssl.get(ca_bundle)
        if context is None:
            if ca_bundle:
                try:
                    pem = base64.b64decode(ca_bundle, validate=True).decode()
                except (binascii.Error, UnicodeDecodeError) as e:
                    raise ValueError(f"unable to decode caBundle: {e}") from e
                context = ssl.create_default_context(cadata=pem)
            else:
                context = ssl.create_default_context()
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            self._ssl[ca_bundle] = context
        return context

    async def close(self) -> None:
        self._pool.close()

    async def post(self, hook: Webhook, review: dict[str, Any]) -> dict[str, Any]:
        """The decoded answer, or ``CallError`` with upstream's wording."""
        client = {"url": hook.url, "service": hook.service, "caBundle": hook.ca_bundle}
        try:
            return await self.post_review(client, review, hook.timeout_s)
        except ReviewError as e:
            reason = str(e) if e.before_call else f"failed to call webhook: {e}"
            raise CallError(hook.name, reason) from e

    async def post_review(
        self, client: dict[str, Any], review: dict[str, Any], timeout_s: int
    ) -> dict[str, Any]:
        """POST ``review`` to a webhook ``clientConfig`` (``url``, or ``service`` resolved
        through its endpoints; ``caBundle``) within ``timeout_s``: the decoded JSON answer, or
        ``ReviewError`` worded as Go's REST client (``Post "<url>": ...``)."""
        timeout = timeout_s
        url = client.get("url") or None
        if url:
            shown = _with_timeout(url, timeout)
            parts = urlsplit(url)
            address = server_hostname = parts.hostname or ""
            try:
                port = parts.port or 443
            except ValueError as e:
                raise ReviewError(f"could not get REST client: {e}", before_call=True) from e
            host_header = parts.netloc.rpartition("@")[2]
            target = _with_timeout(parts.path or "/", timeout)
        else:
            service = client.get("service") or {}
            namespace = str(service.get("namespace") or "")
            name = str(service.get("name") or "")
            service_port = int(service.get("port") or 443)
            path = str(service.get("path") or "") or "/"
            server_hostname = f"{name}.{namespace}.svc"
            shown = _with_timeout(f"https://{server_hostname}:{service_port}{path}", timeout)
            try:
                address, port = await self._resolve(namespace, name, service_port)
            except LookupError as e:
                raise ReviewError(f'Post "{shown}": {e}') from e
            host_header = f"{server_hostname}:{service_port}"
            target = _with_timeout(path, timeout)
        ca_bundle = str(client.get("caBundle") or "")
        try:
            context = self._ssl_context(ca_bundle)
        except (ValueError, ssl.SSLError) as e:
            raise ReviewError(f"could not get REST client: {e}", before_call=True) from e
        body = json.dumps(review, separators=(",", ":")).encode()
        headers = (
            ("Host", host_header),
            ("Content-Type", "application/json"),
            ("Accept", "application/json, */*"),
            ("User-Agent", USER_AGENT),
        )
        try:
            async with asyncio.timeout(timeout):
                status, raw = await self._pool.post(
                    address, port, server_hostname, context, ca_bundle, target, headers, body
                )
        except TimeoutError as e:
            raise ReviewError(f'Post "{shown}": context deadline exceeded') from e
        except (DialError, TLSError, ProtocolError) as e:
            raise ReviewError(f'Post "{shown}": {e}') from e
        except OSError as e:
            raise ReviewError(f'Post "{shown}": {e}') from e
        if not 200 <= status < 300:
            raise ReviewError(_http_error(status, raw))
        try:
            answer = json.loads(raw)
        except ValueError as e:
            raise ReviewError(f"couldn't get version/kind; json parse error: {e}") from e
        if not isinstance(answer, dict):
            raise ReviewError(
                "couldn't get version/kind; json parse error: "
                "json: cannot unmarshal into Go value of type struct"
            )
        return answer


def _with_timeout(url: str, timeout_s: int) -> str:
    return f"{url}{'&' if '?' in url else '?'}timeout={timeout_s}s"


def _http_error(status: int, raw: bytes) -> str:
    try:
        decoded = json.loads(raw)
    except ValueError:
        decoded = None
    if isinstance(decoded, dict) and decoded.get("kind") == "Status" and decoded.get("message"):
        return str(decoded["message"])
    if raw.strip():
        text = raw.decode("utf-8", "replace").strip()
        return f'an error on the server ("{text[:256]}") has prevented the request from succeeding'
    return f"the server responded with the status code {status} but did not return more information"


# --- the request ----------------------------------------------------------------------------


@dataclass(slots=True)
class _Invocation:
    hook: Webhook
    group: str
    version: str
    resource: str
    subresource: str
    kind: str


@dataclass(slots=True)
class _Context:
    """What every webhook of one admission needs, computed once."""

    attrs: AdmissionAttributes
    request_kind: str
    namespace_labels: dict[str, str] | None = None
    namespace_loaded: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class _Dispatcher:
    """Shared matching and calling for the two plugins."""

    def __init__(
        self,
        source: WebhookSource,
        caller: WebhookCaller,
        *,
        kind_of: KindOf,
        equivalents: Equivalents,
        namespace_labels: Callable[[str], Awaitable[dict[str, str] | None]],
        convert: Converter | None = None,
        get_object: ObjectGetter | None = None,
        default: Defaulter | None = None,
        authorize: Callable[[Any], Any] | None = None,
    ) -> None:
        self._authorize = authorize
        self._get_object = get_object
        self._default = default
        self.defaulted_key = f"webhooks-defaulted-{id(self)}"
        self._source = source
        self._caller = caller
        self._kind_of = kind_of
        self._equivalents = equivalents
        self._namespace_labels = namespace_labels
        self._convert = convert

    def _exempt(self, attrs: AdmissionAttributes) -> bool:
        return attrs.group in _EXEMPT_GROUPS or (attrs.group, attrs.resource) in _EXEMPT_RESOURCES

    def _match_rules(self, hook: Webhook, attrs: AdmissionAttributes) -> _Invocation | None:
        args = (
            attrs.operation,
            attrs.group,
            attrs.version,
            attrs.resource,
            attrs.subresource,
            attrs.namespaced,
        )
        if any(rule.matches(*args) for rule in hook.rules):
            kind = self._kind_of(attrs.group, attrs.version, attrs.resource) or ""
            return _Invocation(
                hook, attrs.group, attrs.version, attrs.resource, attrs.subresource, kind
            )
        if hook.match_policy != "Equivalent":
            return None
        # Another resource over the same storage: another version, or the same objects served
        # in another group (core/v1 and events.k8s.io/v1 events), as upstream's equivalent
        # resource mapper; the webhook gets the object converted to the version it asked for.
        for group, version, plural in self._equivalents(attrs.group, attrs.version, attrs.resource):
            if any(
                rule.matches(
                    attrs.operation, group, version, plural, attrs.subresource, attrs.namespaced
                )
                for rule in hook.rules
            ):
                kind = self._kind_of(group, version, plural) or ""
                return _Invocation(hook, group, version, plural, attrs.subresource, kind)
        return None
        # Another served version of the same resource (upstream also maps resources that
        # moved between groups; Sampan serves each resource in one group).
        for version in self._versions_of(attrs.group, attrs.resource):
            if version == attrs.version:
                continue
            if any(
                rule.matches(
                    attrs.operation,
                    attrs.group,
                    version,
                    attrs.resource,
                    attrs.subresource,
                    attrs.namespaced,
                )
                for rule in hook.rules
            ):
                kind = self._kind_of(attrs.group, version, attrs.resource) or ""
                return _Invocation(
                    hook, attrs.group, version, attrs.resource, attrs.subresource, kind
                )
        return None

    async def _match_namespace(self, hook: Webhook, ctx: _Context) -> bool:
        if hook.namespace_selector is None:
            return True
        attrs = ctx.attrs
        if attrs.group == "" and attrs.resource == "namespaces" and not attrs.subresource:
            source = attrs.obj if attrs.obj is not None else attrs.old_obj
            labels = ((source or {}).get("metadata") or {}).get("labels") or {}
            return bool(hook.namespace_selector.matches(labels))
        if not attrs.namespaced:
            return True  # cluster-scoped objects are not in a namespace
        if not ctx.namespace_loaded:
            ctx.namespace_labels = await self._namespace_labels(attrs.namespace)
            ctx.namespace_loaded = True
        if ctx.namespace_labels is None:
            raise InternalError(
                f'Internal error occurred: namespaces "{attrs.namespace}" not found'
            )
        return bool(hook.namespace_selector.matches(ctx.namespace_labels))

    @staticmethod
    def _match_object(hook: Webhook, attrs: AdmissionAttributes) -> bool:
        if hook.object_selector is None:
            return True
        for obj in (attrs.obj, attrs.old_obj):
            if obj is not None:
                labels = (obj.get("metadata") or {}).get("labels") or {}
                if hook.object_selector.matches(labels):
                    return True
        return False

    async def _load_deleted(self, attrs: AdmissionAttributes) -> None:
        """A DELETE's ``oldObject`` is the object being deleted (the handlers admit deletes
        by name only): read it once, for the first webhook whose rules match."""
        if (
            attrs.operation != "DELETE"
            or attrs.old_obj is not None
            or not attrs.name
            or self._get_object is None
            or attrs.extra.get("webhooks_old_loaded")
        ):
            return
        attrs.extra["webhooks_old_loaded"] = True
        attrs.old_obj = await self._get_object(attrs)

    async def matching(self, attrs: AdmissionAttributes) -> list[_Invocation]:
        if self._exempt(attrs):
            return []
        hooks = await self._source.webhooks()
        if not hooks:
            return []
        ctx = _Context(attrs, self._kind_of(attrs.group, attrs.version, attrs.resource) or "")
        out: list[_Invocation] = []
        for hook in hooks:
            invocation = self._match_rules(hook, attrs)
            if invocation is None:
                continue
            await self._load_deleted(attrs)
            if hook.invalid:
                out.append(invocation)  # fails when called, under its failure policy
                continue
            if not await self._match_namespace(hook, ctx):
                continue
            if not self._match_object(hook, attrs):
                continue
            out.append(invocation)
        return out

    async def conditions_match(self, inv: _Invocation, attrs: AdmissionAttributes) -> bool:
        """Whether ``inv``'s webhook is to be called after its ``matchConditions``: False when
        one is false (or, under ``Ignore``, when one cannot be evaluated); upstream's 403 when
        one cannot be evaluated under ``Fail`` and none is false."""
        hook = inv.hook
        if not hook.conditions:
            return True
        _, review = await self.review(inv, attrs, uid="")
        request = dict(review["request"])
        activation: dict[str, Any] = {
            "object": request.pop("object", None),
            "oldObject": request.pop("oldObject", None),
            "request": request,
        }
        request_resource = {
            "group": inv.group,
            "version": inv.version,
            "resource": inv.resource,
            "subresource": inv.subresource,
            "namespace": attrs.namespace,
            "name": attrs.name,
        }
        errors: list[str] = []
        with cel.authorizer_value(
            authorizer_check(self._authorize, attrs), request_resource
        ) as authorizer:
            activation["authorizer"] = authorizer
            for condition in hook.conditions:
                if condition.program is None:
                    errors.append(condition.error)
                    continue
                try:
                    result = condition.program.evaluate(activation)
                except cel.EvalError as e:
                    errors.append(f"expression '{condition.expression}' resulted in error: {e}")
                    continue
                if result is False:
                    return False
                if result is not True:
                    errors.append(
                        f"expression '{condition.expression}' resulted in error: no such overload"
                    )
        if not errors:
            return True
        if hook.ignore_failures:
            return False
        text = errors[0] if len(errors) == 1 else "[" + ", ".join(errors) + "]"
        log.warning("Failed evaluating match conditions, failing closed %s: %s", hook.name, text)
        resource = qualified_resource(attrs.resource, attrs.group)
        raise Forbidden(
            f'{resource} "{attrs.name}" is forbidden: {text}'
            if attrs.name
            else f"{resource} is forbidden: {text}",
            name=attrs.name,
            group=attrs.group,
            kind=attrs.resource,
        )

    async def outgoing(self, attrs: AdmissionAttributes, inv: _Invocation) -> dict[str, Any] | None:
        """The new object as the webhook sees it: defaulted (kube-apiserver defaults when it
        decodes a request, before admission; Sampan's store defaults again when it writes)
        and in the webhook's version."""
        obj = attrs.obj
        if obj is not None and self._default is not None:
            # Once per object and phase: within one plugin only webhook patches change the
            # object, and they drop this copy (``patched``).
            key = self.defaulted_key
            cached = attrs.extra.get(key)
            if cached is not None and cached[0] is obj:
                obj = cached[1]
            else:
                defaulted = self._default(obj)
                attrs.extra[key] = (obj, defaulted)
                obj = defaulted
        return await self._versioned(obj, inv)

    async def _versioned(
        self, obj: dict[str, Any] | None, inv: _Invocation
    ) -> dict[str, Any] | None:
        if obj is None:
            return None
        api_version = f"{inv.group}/{inv.version}" if inv.group else inv.version
        if obj.get("apiVersion") in (None, api_version) or self._convert is None:
            return obj
        return await self.convert(obj, inv.group, inv.version, inv.resource)

    async def convert(
        self, obj: dict[str, Any], group: str, version: str, plural: str
    ) -> dict[str, Any]:
        """``obj`` as ``group/version`` ``plural`` serves it (a converter may be async: a CRD
        conversion webhook)."""
        if self._convert is None:
            return obj
        result = self._convert(obj, group, version, plural)
        if inspect.isawaitable(result):
            result = await result
        return result

    async def review(
        self, inv: _Invocation, attrs: AdmissionAttributes, *, uid: str | None = None
    ) -> tuple[str, dict[str, Any]]:
        """(uid, AdmissionReview) in the first version the webhook accepts (``uid`` given:
        the request as match conditions see it, whatever versions the webhook accepts)."""
        hook = inv.hook
        version = next((v for v in hook.review_versions if v in KNOWN_REVIEW_VERSIONS), None)
        if version is None:
            if uid is not None:
                version = "v1"
            else:
                raise CallError(
                    hook.name,
                    "could not create admission objects: webhook does not accept known "
                    "AdmissionReview versions (v1, v1beta1)",
                )
        if uid is None:
            uid = str(uuid.uuid4())
        request_kind = self._kind_of(attrs.group, attrs.version, attrs.resource) or ""
        request: dict[str, Any] = {
            "uid": uid,
            "kind": {"group": inv.group, "version": inv.version, "kind": inv.kind},
            "resource": {"group": inv.group, "version": inv.version, "resource": inv.resource},
            "requestKind": {"group": attrs.group, "version": attrs.version, "kind": request_kind},
            "requestResource": {
                "group": attrs.group,
                "version": attrs.version,
                "resource": attrs.resource,
            },
            "name": attrs.name,
            "operation": attrs.operation,
            "userInfo": _user_info(attrs.user),
            "object": await self.outgoing(attrs, inv),
            "oldObject": await self._versioned(attrs.old_obj, inv),
            "dryRun": bool(attrs.dry_run),
            "options": _options(attrs),
        }
        if inv.subresource:
            request["subResource"] = inv.subresource
            request["requestSubResource"] = attrs.subresource
        if attrs.namespace:
            request["namespace"] = attrs.namespace
        if not attrs.name:
            request.pop("name")  # omitempty, as a create with generateName sends it
        review = {
            "kind": "AdmissionReview",
            "apiVersion": f"admission.k8s.io/{version}",
            "request": request,
        }
        return uid, review

    async def call(self, inv: _Invocation, attrs: AdmissionAttributes) -> dict[str, Any]:
        """The verified ``response`` of one call (``CallError``/``StatusError`` otherwise)."""
        hook = inv.hook
        if attrs.dry_run and hook.side_effects not in ("None", "NoneOnDryRun"):
            raise BadRequest(f'admission webhook "{hook.name}" does not support dry run')
        if hook.invalid:
            raise CallError(hook.name, hook.invalid)
        uid, review = await self.review(inv, attrs)
        answer = await self._caller.post(hook, review)
        return _verify(hook, uid, review["apiVersion"], answer)


def _user_info(user: Any) -> dict[str, Any]:
    if user is None:
        return {}
    if hasattr(user, "to_dict"):
        return dict(user.to_dict())
    return {"username": str(getattr(user, "name", "") or "")}


def _options(attrs: AdmissionAttributes) -> dict[str, Any] | None:
    kind = {"CREATE": "CreateOptions", "UPDATE": "UpdateOptions", "DELETE": "DeleteOptions"}.get(
        attrs.operation
    )
    if kind is None:
        return None
    options: dict[str, Any] = {"kind": kind, "apiVersion": "meta.k8s.io/v1"}
    if attrs.dry_run:
        options["dryRun"] = ["All"]
    extra = attrs.extra.get("options")
    if isinstance(extra, dict):
        options.update(extra)
    return options


def _verify(hook: Webhook, uid: str, api_version: str, answer: dict[str, Any]) -> dict[str, Any]:
    def invalid(reason: str) -> CallError:
        return CallError(hook.name, f"received invalid webhook response: {reason}")

    response = answer.get("response")
    if not isinstance(response, dict):
        raise invalid("webhook response was absent")
    if api_version == "admission.k8s.io/v1":
        got_uid = str(response.get("uid") or "")
        if got_uid != uid:
            raise invalid(f'expected response.uid="{uid}", got "{got_uid}"')
        got_gvk = f"{answer.get('apiVersion') or ''}, Kind={answer.get('kind') or ''}"
        if (answer.get("apiVersion"), answer.get("kind")) != (api_version, "AdmissionReview"):
            raise invalid(
                f"expected webhook response of admission.k8s.io/v1, "
                f"Kind=AdmissionReview, got {got_gvk}"
            )
        patch, patch_type = response.get("patch"), response.get("patchType")
        if hook.mutating:
            if patch and patch_type is None:
                raise invalid("webhook returned response.patch but not response.patchType")
            if not patch and patch_type is not None:
                raise invalid("webhook returned response.patchType but not response.patch")
            if patch_type is not None and patch_type != "JSONPatch":
                raise invalid(f'webhook returned invalid response.patchType of "{patch_type}"')
        else:
            if patch:
                raise invalid("validating webhook may not return response.patch")
            if patch_type is not None:
                raise invalid("validating webhook may not return response.patchType")
    elif not hook.mutating:
        response = {k: v for k, v in response.items() if k not in ("patch", "patchType")}
    return response


# --- the two plugins ------------------------------------------------------------------------


def _warn_all(attrs: AdmissionAttributes, response: dict[str, Any]) -> None:
    warnings = response.get("warnings")
    for warning in warnings if isinstance(warnings, list) else ():
        if isinstance(warning, str) and warning:
            attrs.warn(warning)


class MutatingWebhooks:
    """MutatingAdmissionWebhook (see the module docstring)."""

    name = "MutatingAdmissionWebhook"
    mutating = True

    def __init__(
        self,
        dispatcher: _Dispatcher,
        prevalidate: Callable[[AdmissionAttributes], None] | None = None,
    ) -> None:
        self._dispatcher = dispatcher
        self._prevalidate = prevalidate

    async def admit(self, attrs: AdmissionAttributes) -> None:
        invocations = await self._dispatcher.matching(attrs)
        if not invocations:
            return
        if self._prevalidate is not None:
            # kube-apiserver validates the object before validating admission: an invalid
            # object is a 422 and no validating webhook sees it.
            self._prevalidate(attrs)
        changed_at: dict[str, int] = {}  # webhook name -> step of its last call
        last_change = -1
        step = 0
        for inv in invocations:
            # Conditions see the object as the webhooks before this one left it.
            if not await self._dispatcher.conditions_match(inv, attrs):
                continue
            if await self._call(inv, attrs):
                last_change = step
            changed_at[inv.hook.name] = step
            step += 1
        # Reinvocation: once, for IfNeeded webhooks that ran before the last change.
        again = [
            inv
            for inv in invocations
            if inv.hook.reinvoke and changed_at.get(inv.hook.name, step) < last_change
        ]
        for inv in again:
            if await self._dispatcher.conditions_match(inv, attrs):
                await self._call(inv, attrs)

    async def _call(self, inv: _Invocation, attrs: AdmissionAttributes) -> bool:
        """Whether the webhook changed the object."""
        hook = inv.hook
        try:
            response = await self._dispatcher.call(inv, attrs)
        except CallError as e:
            if hook.ignore_failures:
                log.warning("Failed calling webhook, failing open %s: %s", hook.name, e)
                return False
            log.warning("Failed calling webhook, failing closed %s: %s", hook.name, e)
            raise _internal(e) from None
        _warn_all(attrs, response)
        if not response.get("allowed"):
            raise denied(hook.name, response.get("status"))
        patch = response.get("patch")
        if not patch or attrs.obj is None:
            return False
        try:
            operations = json.loads(base64.b64decode(str(patch), validate=True))
        except (binascii.Error, ValueError) as e:
            raise InternalError(f"Internal error occurred: {e}") from None
        versioned = await self._dispatcher.outgoing(attrs, inv)
        try:
            patched = apply_json_patch(versioned or {}, operations)
        except StatusError as e:
            raise InternalError(f"Internal error occurred: {e.message}") from None
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
            raise InternalError(f"Internal error occurred: invalid JSON patch: {e}") from None
        if patched == versioned:
            return False
        if patched.get("apiVersion") != attrs.obj.get("apiVersion") and self._dispatcher._convert:
            # Back to the version admission holds the object in (the request's on create, the
            # storage version inside admitted_update).
            group, _, version = str(attrs.obj.get("apiVersion") or "").rpartition("/")
            patched = await self._dispatcher.convert(
                patched, group, version or attrs.version, attrs.resource
            )
        # In place: every handler keeps using the object it handed to admission.
        attrs.obj.clear()
        attrs.obj.update(patched)
        attrs.extra.pop(self._dispatcher.defaulted_key, None)
        return True


class ValidatingWebhooks:
    """ValidatingAdmissionWebhook (see the module docstring)."""

    name = "ValidatingAdmissionWebhook"
    mutating = False

    def __init__(
        self,
        dispatcher: _Dispatcher,
        prevalidate: Callable[[AdmissionAttributes], None] | None = None,
    ) -> None:
        self._dispatcher = dispatcher
        self._prevalidate = prevalidate

    async def admit(self, attrs: AdmissionAttributes) -> None:
        check_configuration_write(attrs)
        invocations = await self._dispatcher.matching(attrs)
        if not invocations:
            return
        if self._prevalidate is not None:
            # kube-apiserver validates the object before validating admission: an invalid
            # object is a 422 and no validating webhook sees it.
            self._prevalidate(attrs)
        invocations = [
            inv for inv in invocations if await self._dispatcher.conditions_match(inv, attrs)
        ]
        results = await asyncio.gather(
            *(self._call(inv, attrs) for inv in invocations), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _call(self, inv: _Invocation, attrs: AdmissionAttributes) -> None:
        hook = inv.hook
        try:
            response = await self._dispatcher.call(inv, attrs)
        except CallError as e:
            if hook.ignore_failures:
                log.warning("Failed calling webhook, failing open %s: %s", hook.name, e)
                return
            log.warning("Failed calling webhook, failing closed %s: %s", hook.name, e)
            raise _internal(e) from None
        _warn_all(attrs, response)
        if not response.get("allowed"):
            raise denied(hook.name, response.get("status"))


def build(
    mutating: WebhookSource,
    validating: WebhookSource,
    caller: WebhookCaller,
    *,
    kind_of: KindOf,
    equivalents: Equivalents,
    namespace_labels: Callable[[str], Awaitable[dict[str, str] | None]],
    convert: Converter | None = None,
    prevalidate: Callable[[AdmissionAttributes], None] | None = None,
    get_object: ObjectGetter | None = None,
    default: Defaulter | None = None,
    authorize: Callable[[Any], Any] | None = None,
) -> tuple[MutatingWebhooks, ValidatingWebhooks]:
    """The two plugins over their sources and one shared caller (``authorize`` answers the
    ``authorizer`` of match conditions)."""
    common = dict(
        authorize=authorize,
        kind_of=kind_of,
        equivalents=equivalents,
        namespace_labels=namespace_labels,
        convert=convert,
        get_object=get_object,
        default=default,
    )
    return (
        MutatingWebhooks(_Dispatcher(mutating, caller, **common)),  # type: ignore[arg-type]
        ValidatingWebhooks(_Dispatcher(validating, caller, **common), prevalidate),  # type: ignore[arg-type]
    )


def pick_endpoint(
    service: dict[str, Any],
    slices: Sequence[dict[str, Any]],
    endpoints: dict[str, Any] | None,
    port: int,
) -> tuple[str, int]:
    """A ready address and target port of ``service`` for its ``port`` (LookupError with
    upstream's proxy wording when there is none)."""
    meta = service.get("metadata") or {}
    name = meta.get("name", "")
    ports = (service.get("spec") or {}).get("ports") or []
    svc_port = next((p for p in ports if int(p.get("port") or 0) == port), None)
    if svc_port is None:
        raise LookupError(f'no service port {port} found for service "{name}"')
    port_name = str(svc_port.get("name") or "")
    candidates: list[tuple[str, int]] = []
    for piece in slices:
        slice_port = next(
            (p for p in piece.get("ports") or () if str(p.get("name") or "") == port_name), None
        )
        if slice_port is None or not slice_port.get("port"):
            continue
        for endpoint in piece.get("endpoints") or ():
            if (endpoint.get("conditions") or {}).get("ready") is False:
                continue
            for address in endpoint.get("addresses") or ():
                candidates.append((str(address), int(slice_port["port"])))
    if not candidates and endpoints is not None:
        for subset in endpoints.get("subsets") or ():
            subset_ports = subset.get("ports") or []
            ep_port = next((p for p in subset_ports if str(p.get("name") or "") == port_name), None)
            if ep_port is None and len(subset_ports) == 1 and not port_name:
                ep_port = subset_ports[0]
            if ep_port is None:
                continue
            for address in subset.get("addresses") or ():
                if address.get("ip"):
                    candidates.append((str(address["ip"]), int(ep_port.get("port") or 0)))
    if not candidates:
        raise LookupError(f'no endpoints available for service "{name}"')
    return random.choice(candidates)
