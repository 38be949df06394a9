"""ValidatingAdmissionPolicy (``admissionregistration.k8s.io/v1``, GA in 1.30): CEL policies
bound to requests by ValidatingAdmissionPolicyBindings.

``ValidatingAdmissionPolicyPlugin(cached, get, kind_of)`` is a validating admission plugin. It
does two things:

* **Write-time checks** of policies and bindings (a 422 with field causes, as upstream's
  strategy validation): required fields, supported values, and every CEL expression
  (``validations[*].expression``/``messageExpression``, ``variables[*].expression``,
  ``matchConditions[*].expression``, ``auditAnnotations[*].valueExpression``) must compile
  (``spec.validations[0].expression: Invalid value: "...": compilation failed: ERROR: ...``).
* **Enforcement**: for every binding whose policy exists, when the request matches the policy's
  ``matchConstraints`` and the binding's ``matchResources`` (resourceRules with
  apiGroups/apiVersions/operations/resources incl. ``deployments/scale``, ``*/*``,
  resourceNames and scope; excludeResourceRules; namespaceSelector; objectSelector) and every
  ``matchConditions`` expression is true, the ``validations`` are evaluated with ``object``,
  ``oldObject``, ``request``, ``params``, ``namespaceObject``, ``variables`` and
  ``authorizer``. A failure
  (false, or an error under ``failurePolicy: Fail``) takes the binding's
  ``validationActions``: **Deny** refuses the request with upstream's error
  (``deployments.apps "web" is forbidden: ValidatingAdmissionPolicy 'P' with binding 'B'
  denied request: failed expression: object.spec.replicas <= 5``, reason from the validation,
  default Invalid -> 422), **Warn** adds a ``Warning`` header (``Validation failed for
  ValidatingAdmissionPolicy 'P' with binding 'B': ...``), **Audit** records the audit
  annotation ``validation.policy.admission.k8s.io/validation_failure`` (a JSON list of
  message, policy, binding, expressionIndex and validationActions; the request's first
  failure wins, as upstream's annotations are never overwritten). ``paramKind`` +
  ``paramRef`` (name, namespace, selector, parameterNotFoundAction) resolve params from the
  watch cache; a selector evaluates once per matching param.

Policies, bindings and params are read from the watch cache on each request; compiled
policies are cached per object resourceVersion, so a policy takes effect as soon as the cache
has it (well under a second) and costs one compile. ``PolicyDefaults`` applies the API
defaults on write; ``PolicyStatusController`` writes ``status.observedGeneration`` and
``status.typeChecking`` (each expression type-checked against the OpenAPI schema of every
kind the rules name, ``type_warnings``). The ``authorizer`` variable asks the API server's
authorizer (RBAC and Node) for the request's user or a named service account. Not supported:
``matchPolicy: Equivalent`` across versions (rules match the request's own version).
``auditAnnotations`` are evaluated for every request the policy matches (its matchConditions
included): a non-empty string value becomes the audit annotation ``<policy>/<key>``
(distinct values of several bindings or params joined with ``, ``, at most 10 KiB), null or
empty adds none, an error denies under ``failurePolicy: Fail``. Policies and bindings never
apply to requests for ValidatingAdmissionPolicies, their bindings and webhook configurations, so a
bad policy cannot lock administrators out.

Invariants: a request that matches no binding costs one dictionary lookup per binding and no
CEL evaluation; every evaluation is bounded by the CEL module's budget; a refusal raises a
``StatusError`` and nothing else is changed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sampan.api import fielderrors as fe
from sampan.api.errors import Cause, Invalid, StatusError, go_json, qualified_resource
from sampan.api.labels import SelectorError, selector_from_label_selector
from sampan.api.names import is_qualified_name
from sampan.apiserver import cel
from sampan.apiserver.admission.chain import AdmissionAttributes
from sampan.apiserver.audit import add_annotation
from sampan.apiserver.auth.rbac import Attributes, Decision
from sampan.apiserver.auth.user import UserInfo
from sampan.apiserver.crd.celrules import SchemaTypes, numeric_mismatch_only

__all__ = [
    "PolicyDefaults",
    "PolicyStatusController",
    "ValidatingAdmissionPolicyPlugin",
    "authorizer_check",
    "match_condition_errors",
    "type_warnings",
]

log = logging.getLogger(__name__)

GROUP = "admissionregistration.k8s.io"
POLICIES = "validatingadmissionpolicies"
BINDINGS = "validatingadmissionpolicybindings"
_EXEMPT = frozenset(
    {
        POLICIES,
        BINDINGS,
        "validatingwebhookconfigurations",
        "mutatingwebhookconfigurations",
    }
)
_VARIABLES = (
    "object",
    "oldObject",
    "request",
    "params",
    "namespaceObject",
    "variables",
    "authorizer",
)
_OPERATIONS = ("*", "CREATE", "UPDATE", "DELETE", "CONNECT")
_ACTIONS = ("Deny", "Warn", "Audit")
VALIDATION_FAILURE_ANNOTATION = "validation.policy.admission.k8s.io/validation_failure"
"""The audit annotation a failure under a binding with the ``Audit`` action records."""
MAX_AUDIT_ANNOTATION_VALUE = 10 * 1024
_REASON_CODES = {
    "Unauthorized": 401,
    "Forbidden": 403,
    "Invalid": 422,
    "RequestEntityTooLarge": 413,
}

Cached = Callable[[str, str, str], list[dict[str, Any]]]
Generation = Callable[[str, str], int]
KindOf = Callable[[str, str, str], tuple[str, bool] | None]
"""(group, version, plural) -> (kind, namespaced), or None when not served."""


# --- write-time checks ---------------------------------------------------------------------


def _compile_cause(
    path: str, expression: str, result: str = "bool", variables: Sequence[str] = _VARIABLES
) -> Cause | None:
    try:
        cel.compile(expression, variables, result=result)
    except cel.CompileError as err:
        detail = str(err)
        if not detail.startswith("cel expression"):
            detail = f"compilation failed: {detail}"
        return fe.invalid(path, expression, detail)
    return None


def _is_identifier(name: str) -> bool:
    return (
        bool(name)
        and (name[0].isalpha() or name[0] == "_")
        and all(c.isalnum() or c == "_" for c in name)
    )


def _rules_errors(rules: Any, path: str) -> list[Cause]:
    causes: list[Cause] = []
    for i, rule in enumerate(rules if isinstance(rules, list) else []):
        where = f"{path}[{i}]"
        if not isinstance(rule, dict):
            continue
        for key in ("apiGroups", "apiVersions", "operations", "resources"):
            if not rule.get(key):
                causes.append(fe.required(f"{where}.{key}"))
        for j, op in enumerate(rule.get("operations") or []):
            if op not in _OPERATIONS:
                causes.append(fe.not_supported(f"{where}.operations[{j}]", op, list(_OPERATIONS)))
        scope = rule.get("scope")
        if scope is not None and scope not in ("Cluster", "Namespaced", "*"):
            causes.append(fe.not_supported(f"{where}.scope", scope, ["Cluster", "Namespaced", "*"]))
    return causes


def _selector_errors(spec: Mapping[str, Any], path: str) -> list[Cause]:
    causes: list[Cause] = []
    for key in ("namespaceSelector", "objectSelector"):
        selector = spec.get(key)
        if selector is None:
            continue
        try:
            selector_from_label_selector(selector)
        except SelectorError as err:
            causes.append(fe.invalid(f"{path}.{key}", selector, str(err)))
    return causes


def policy_errors(policy: Mapping[str, Any]) -> list[Cause]:
    """The field errors of a ValidatingAdmissionPolicy (compile errors included)."""
    spec = policy.get("spec")
    if not isinstance(spec, dict):
        return [fe.required("spec")]
    causes: list[Cause] = []
    failure = spec.get("failurePolicy")
    if failure is not None and failure not in ("Fail", "Ignore"):
        causes.append(fe.not_supported("spec.failurePolicy", failure, ["Fail", "Ignore"]))
    constraints = spec.get("matchConstraints")
    if not isinstance(constraints, dict):
        causes.append(fe.required("spec.matchConstraints"))
    else:
        if not constraints.get("resourceRules"):
            causes.append(fe.required("spec.matchConstraints.resourceRules"))
        causes.extend(
            _rules_errors(constraints.get("resourceRules"), "spec.matchConstraints.resourceRules")
        )
        causes.extend(
            _rules_errors(
                constraints.get("excludeResourceRules"),
                "spec.matchConstraints.excludeResourceRules",
            )
        )
        causes.extend(_selector_errors(constraints, "spec.matchConstraints"))
    param_kind = spec.get("paramKind")
    if isinstance(param_kind, dict):
        if not param_kind.get("apiVersion"):
            causes.append(fe.required("spec.paramKind.apiVersion"))
        if not param_kind.get("kind"):
            causes.append(fe.required("spec.paramKind.kind"))
    validations = spec.get("validations") or []
    audits = spec.get("auditAnnotations") or []
    if not validations and not audits:
        causes.append(
            fe.required(
                "spec.validations", "validations or auditAnnotations must contain at least one item"
            )
        )
    seen_vars: set[str] = set()
    for i, variable in enumerate(spec.get("variables") or []):
        where = f"spec.variables[{i}]"
        name = str((variable or {}).get("name") or "")
        if not name:
            causes.append(fe.required(f"{where}.name"))
        elif not _is_identifier(name):
            causes.append(fe.invalid(f"{where}.name", name, "name is not a valid CEL identifier"))
        elif name in seen_vars:
            causes.append(fe.duplicate(f"{where}.name", name))
        seen_vars.add(name)
        expression = str((variable or {}).get("expression") or "")
        if not expression.strip():
            causes.append(fe.required(f"{where}.expression"))
        elif cause := _compile_cause(f"{where}.expression", expression, "any"):
            causes.append(cause)
    for i, validation in enumerate(validations):
        where = f"spec.validations[{i}]"
        validation = validation or {}
        expression = str(validation.get("expression") or "")
        if not expression.strip():
            causes.append(fe.required(f"{where}.expression"))
        elif cause := _compile_cause(f"{where}.expression", expression):
            causes.append(cause)
        message_expression = str(validation.get("messageExpression") or "")
        if message_expression.strip() and (
            cause := _compile_cause(f"{where}.messageExpression", message_expression, "string")
        ):
            causes.append(cause)
        reason = validation.get("reason")
        if reason is not None and reason not in _REASON_CODES:
            causes.append(fe.not_supported(f"{where}.reason", reason, list(_REASON_CODES)))
    for i, audit in enumerate(audits):
        where = f"spec.auditAnnotations[{i}]"
        expression = str((audit or {}).get("valueExpression") or "")
        if not (audit or {}).get("key"):
            causes.append(fe.required(f"{where}.key"))
        if not expression.strip():
            causes.append(fe.required(f"{where}.valueExpression"))
        elif cause := _compile_cause(f"{where}.valueExpression", expression, "any"):
            causes.append(cause)
    causes.extend(match_condition_errors(spec.get("matchConditions"), "spec.matchConditions"))
    return causes


MAX_MATCH_CONDITIONS = 64
"""Upstream's limit on ``matchConditions`` (policies and webhooks alike)."""


def match_condition_errors(
    conditions: Any, path: str, variables: Sequence[str] = _VARIABLES
) -> list[Cause]:
    """The field errors of a ``matchConditions`` list (a policy's or a webhook's, each with its
    own CEL variables): at most 64, each a unique qualified ``name`` and an ``expression``
    that compiles to a bool."""
    causes: list[Cause] = []
    if not isinstance(conditions, list):
        return causes
    if len(conditions) > MAX_MATCH_CONDITIONS:
        causes.append(fe.too_many(path, len(conditions), MAX_MATCH_CONDITIONS))
    names: set[str] = set()
    for i, condition in enumerate(conditions):
        where = f"{path}[{i}]"
        condition = condition if isinstance(condition, dict) else {}
        expression = str(condition.get("expression") or "").strip()
        if not expression:
            causes.append(fe.required(f"{where}.expression"))
        elif cause := _compile_cause(f"{where}.expression", expression, variables=variables):
            causes.append(cause)
        name = str(condition.get("name") or "")
        if not name:
            causes.append(fe.required(f"{where}.name"))
        else:
            causes.extend(fe.invalid(f"{where}.name", name, m) for m in is_qualified_name(name))
            if name in names:
                causes.append(fe.duplicate(f"{where}.name", name))
            names.add(name)
    return causes


def binding_errors(binding: Mapping[str, Any]) -> list[Cause]:
    """The field errors of a ValidatingAdmissionPolicyBinding."""
    spec = binding.get("spec")
    if not isinstance(spec, dict):
        return [fe.required("spec")]
    causes: list[Cause] = []
    if not spec.get("policyName"):
        causes.append(fe.required("spec.policyName"))
    actions = spec.get("validationActions")
    if not actions:
        causes.append(fe.required("spec.validationActions"))
    else:
        seen: set[str] = set()
        for i, action in enumerate(actions):
            if action not in _ACTIONS:
                causes.append(
                    fe.not_supported(f"spec.validationActions[{i}]", action, list(_ACTIONS))
                )
            elif action in seen:
                causes.append(fe.duplicate(f"spec.validationActions[{i}]", action))
            seen.add(action)
        if "Deny" in seen and "Warn" in seen:
            causes.append(
                fe.invalid(
                    "spec.validationActions",
                    list(actions),
                    "must not contain both Deny and Warn (repeating the same validation "
                    "failure information in the API response and headers serves no purpose)",
                )
            )
    param_ref = spec.get("paramRef")
    if isinstance(param_ref, dict):
        has_name = bool(param_ref.get("name"))
        has_selector = param_ref.get("selector") is not None
        if has_name and has_selector:
            causes.append(
                fe.forbidden("spec.paramRef.name", "name and selector are mutually exclusive")
            )
        if not has_name and not has_selector:
            causes.append(fe.required("spec.paramRef", "one of name or selector must be set"))
        action = param_ref.get("parameterNotFoundAction")
        if action is None:
            causes.append(fe.required("spec.paramRef.parameterNotFoundAction"))
        elif action not in ("Allow", "Deny"):
            causes.append(
                fe.not_supported("spec.paramRef.parameterNotFoundAction", action, ["Allow", "Deny"])
            )
    resources = spec.get("matchResources")
    if isinstance(resources, dict):
        path = "spec.matchResources"
        causes.extend(_rules_errors(resources.get("resourceRules"), f"{path}.resourceRules"))
        causes.extend(
            _rules_errors(resources.get("excludeResourceRules"), f"{path}.excludeResourceRules")
        )
        causes.extend(_selector_errors(resources, path))
    return causes


# --- defaults -----------------------------------------------------------------------------------


def _default_match(resources: dict[str, Any]) -> None:
    resources.setdefault("matchPolicy", "Equivalent")
    resources.setdefault("namespaceSelector", {})
    resources.setdefault("objectSelector", {})
    for key in ("resourceRules", "excludeResourceRules"):
        for rule in resources.get(key) or []:
            if isinstance(rule, dict):
                rule.setdefault("scope", "*")


class PolicyDefaults:
    """Upstream's defaults of ValidatingAdmissionPolicies and bindings (``failurePolicy:
    Fail``, ``matchPolicy: Equivalent``, empty selectors, rule ``scope: "*"``), applied on
    write as the API's defaulting does."""

    name = "ValidatingAdmissionPolicyDefaults"
    mutating = True

    async def admit(self, attrs: AdmissionAttributes) -> None:
        if (
            attrs.group != GROUP
            or attrs.subresource
            or attrs.operation
            not in (
                "CREATE",
                "UPDATE",
            )
        ):
            return
        spec = attrs.obj.get("spec") if isinstance(attrs.obj, dict) else None
        if not isinstance(spec, dict):
            return
        if attrs.resource == POLICIES:
            spec.setdefault("failurePolicy", "Fail")
            if isinstance(spec.get("matchConstraints"), dict):
                _default_match(spec["matchConstraints"])
        elif attrs.resource == BINDINGS and isinstance(spec.get("matchResources"), dict):
            _default_match(spec["matchResources"])


# --- compiled policies ------------------------------------------------------------------------


@dataclass(slots=True)
class _Validation:
    expression: str
    program: cel.Program
    message: str
    message_program: cel.Program | None
    reason: str


@dataclass(slots=True)
class _Policy:
    name: str
    failure_policy: str
    constraints: dict[str, Any]
    param_kind: dict[str, Any] | None
    variables: list[tuple[str, cel.Program]]
    conditions: list[tuple[str, cel.Program]]
    validations: list[_Validation]
    audits: list[tuple[str, str, cel.Program]] = field(default_factory=list)
    """``auditAnnotations``: (key, valueExpression, program)."""
    broken: str = ""
    """Why the stored policy cannot be evaluated (it was written before a check existed)."""


@dataclass(slots=True)
class _Binding:
    name: str
    policy_name: str
    actions: tuple[str, ...]
    param_ref: dict[str, Any] | None
    match_resources: dict[str, Any] | None


@dataclass(slots=True)
class _State:
    generations: tuple[int, int] = (-1, -1)
    pairs: list[tuple[_Binding, _Policy]] = field(default_factory=list)
    compiled: dict[tuple[str, str], _Policy] = field(default_factory=dict)


def _compile_policy(obj: Mapping[str, Any]) -> _Policy:
    spec = obj.get("spec") or {}
    name = str((obj.get("metadata") or {}).get("name") or "")
    policy = _Policy(
        name=name,
        failure_policy=str(spec.get("failurePolicy") or "Fail"),
        constraints=dict(spec.get("matchConstraints") or {}),
        param_kind=spec.get("paramKind") if isinstance(spec.get("paramKind"), dict) else None,
        variables=[],
        conditions=[],
        validations=[],
    )
    try:
        for variable in spec.get("variables") or []:
            policy.variables.append(
                (
                    str(variable["name"]),
                    cel.compile(str(variable["expression"]), _VARIABLES, result="any"),
                )
            )
        for condition in spec.get("matchConditions") or []:
            policy.conditions.append(
                (str(condition["name"]), cel.compile(str(condition["expression"]), _VARIABLES))
            )
        for validation in spec.get("validations") or []:
            message_expression = str(validation.get("messageExpression") or "")
            policy.validations.append(
                _Validation(
                    expression=str(validation["expression"]),
                    program=cel.compile(str(validation["expression"]), _VARIABLES),
                    message=str(validation.get("message") or ""),
                    message_program=cel.compile(message_expression, _VARIABLES, result="string")
                    if message_expression.strip()
                    else None,
                    reason=str(validation.get("reason") or "Invalid"),
                )
            )
        for audit in spec.get("auditAnnotations") or []:
            expression = str(audit["valueExpression"])
            policy.audits.append(
                (str(audit["key"]), expression, cel.compile(expression, _VARIABLES, result="any"))
            )
    except (cel.CompileError, KeyError, TypeError) as err:
        policy.broken = f"compilation failed: {err}"
    return policy


def _binding(obj: Mapping[str, Any]) -> _Binding:
    spec = obj.get("spec") or {}
    return _Binding(
        name=str((obj.get("metadata") or {}).get("name") or ""),
        policy_name=str(spec.get("policyName") or ""),
        actions=tuple(spec.get("validationActions") or ()),
        param_ref=spec.get("paramRef") if isinstance(spec.get("paramRef"), dict) else None,
        match_resources=spec.get("matchResources")
        if isinstance(spec.get("matchResources"), dict)
        else None,
    )


def authorizer_check(
    authorize: Callable[[Attributes], Decision] | None, attrs: AdmissionAttributes
) -> cel.AuthorizerCheck:
    """The ``authorizer`` variable's checks: the request's user (or the service account
    ``serviceAccount(namespace, name)`` names) asked of the API server's authorizer."""

    def check(wanted: Mapping[str, Any]) -> tuple[bool, str]:
        if authorize is None or attrs.user is None:
            raise RuntimeError("no authorizer for this request")
        user = attrs.user
        account = wanted.get("serviceAccount")
        if account:
            namespace, name = account
            user = UserInfo(
                name=f"system:serviceaccount:{namespace}:{name}",
                groups=(
                    "system:serviceaccounts",
                    f"system:serviceaccounts:{namespace}",
                    "system:authenticated",
                ),
            )
        verb = str(wanted.get("verb") or "")
        if wanted.get("path"):
            question = Attributes(
                user=user, verb=verb, path=str(wanted["path"]), resource_request=False
            )
        else:
            question = Attributes(
                user=user,
                verb=verb,
                namespace=str(wanted.get("namespace") or ""),
                api_group=str(wanted.get("group") or ""),
                resource=str(wanted.get("resource") or ""),
                subresource=str(wanted.get("subresource") or ""),
                name=str(wanted.get("name") or ""),
            )
        decision = authorize(question)
        return decision.allowed, decision.reason

    return check


# --- matching ---------------------------------------------------------------------------------


def _rule_matches(rule: Mapping[str, Any], attrs: AdmissionAttributes) -> bool:
    def has(key: str, value: str) -> bool:
        values = rule.get(key) or []
        return "*" in values or value in values

    if not has("apiGroups", attrs.group) or not has("apiVersions", attrs.version):
        return False
    if not has("operations", attrs.operation):
        return False
    scope = rule.get("scope") or "*"
    if scope == "Cluster" and attrs.namespaced:
        return False
    if scope == "Namespaced" and not attrs.namespaced:
        return False
    names = rule.get("resourceNames") or []
    if names and attrs.name not in names:
        return False
    for pattern in rule.get("resources") or []:
        resource, _, sub = str(pattern).partition("/")
        if pattern == "*/*":
            return True
        if resource not in ("*", attrs.resource):
            continue
        if not sub and not attrs.subresource:
            return True
        if sub and (sub == "*" or sub == attrs.subresource):
            return True
    return False


def _labels(obj: Any) -> dict[str, str]:
    metadata = obj.get("metadata") if isinstance(obj, dict) else None
    labels = metadata.get("labels") if isinstance(metadata, dict) else None
    return labels if isinstance(labels, dict) else {}


class _Denied(Exception):
    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason


# --- the plugin -----------------------------------------------------------------------------


class ValidatingAdmissionPolicyPlugin:
    """See the module docstring."""

    name = "ValidatingAdmissionPolicy"
    mutating = False

    def __init__(
        self,
        cached: Cached,
        generation: Generation,
        get: Callable[[str, str, str, str], Any],
        kind_of: KindOf,
        resource_of_kind: Callable[[str, str], tuple[str, bool] | None],
        authorize: Callable[[Attributes], Decision] | None = None,
    ) -> None:
        self._authorize = authorize
        self._cached = cached
        self._generation = generation
        self._get = get
        self._kind_of = kind_of
        self._resource_of_kind = resource_of_kind
        self._state = _State()

    async def admit(self, attrs: AdmissionAttributes) -> None:
        if attrs.group == GROUP and attrs.resource in _EXEMPT:
            if attrs.operation in ("CREATE", "UPDATE") and not attrs.subresource:
                self._check_write(attrs)
            return
        pairs = self._pairs()
        if not pairs:
            return
        if attrs.operation == "DELETE" and attrs.old_obj is None and attrs.name:
            # oldObject of a delete is the object being deleted (the handler admits by name).
            attrs.old_obj = await self._get(
                attrs.group, attrs.resource, attrs.namespace, attrs.name
            )
        context: dict[str, Any] | None = None
        for binding, policy in pairs:
            if not self._matches(policy.constraints, attrs, required=True):
                continue
            if binding.match_resources is not None and not self._matches(
                binding.match_resources, attrs, required=False
            ):
                continue
            if context is None:
                context = await self._context(attrs)
            await self._evaluate(binding, policy, attrs, context)

    # --- writes of policies and bindings ------------------------------------------------------

    def _check_write(self, attrs: AdmissionAttributes) -> None:
        obj = attrs.obj
        if not isinstance(obj, dict):
            return
        if attrs.resource == POLICIES:
            causes, kind = policy_errors(obj), "ValidatingAdmissionPolicy"
        elif attrs.resource == BINDINGS:
            causes, kind = binding_errors(obj), "ValidatingAdmissionPolicyBinding"
        else:
            return
        if causes:
            name = str((obj.get("metadata") or {}).get("name") or attrs.name)
            parts = [fe.error_string(c) for c in causes]
            summary = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
            raise Invalid(
                f'{kind}.{GROUP} "{name}" is invalid: {summary}',
                name=name,
                group=GROUP,
                kind=kind,
                causes=causes,
            )

    # --- state ----------------------------------------------------------------------------

    def _pairs(self) -> list[tuple[_Binding, _Policy]]:
        generations = (self._generation(GROUP, POLICIES), self._generation(GROUP, BINDINGS))
        state = self._state
        if generations == state.generations:
            return state.pairs
        policies: dict[str, _Policy] = {}
        compiled: dict[tuple[str, str], _Policy] = {}
        for obj in self._cached(GROUP, POLICIES, ""):
            meta = obj.get("metadata") or {}
            key = (str(meta.get("name") or ""), str(meta.get("resourceVersion") or ""))
            policy = state.compiled.get(key) or _compile_policy(obj)
            compiled[key] = policy
            policies[key[0]] = policy
        pairs: list[tuple[_Binding, _Policy]] = []
        for obj in self._cached(GROUP, BINDINGS, ""):
            binding = _binding(obj)
            policy = policies.get(binding.policy_name)
            if policy is not None:
                pairs.append((binding, policy))
        pairs.sort(key=lambda pair: (pair[1].name, pair[0].name))
        self._state = _State(generations, pairs, compiled)
        return pairs

    # --- matching -----------------------------------------------------------------------------

    def _matches(
        self, constraints: Mapping[str, Any], attrs: AdmissionAttributes, *, required: bool
    ) -> bool:
        rules = constraints.get("resourceRules")
        if rules or required:
            if not any(_rule_matches(rule, attrs) for rule in rules or []):
                return False
        if any(
            _rule_matches(rule, attrs) for rule in constraints.get("excludeResourceRules") or []
        ):
            return False
        object_selector = constraints.get("objectSelector")
        if object_selector:
            try:
                selector = selector_from_label_selector(object_selector)
            except SelectorError:
                return False
            if not (
                selector.matches(_labels(attrs.obj)) or selector.matches(_labels(attrs.old_obj))
            ):
                return False
        namespace_selector = constraints.get("namespaceSelector")
        if namespace_selector:
            try:
                selector = selector_from_label_selector(namespace_selector)
            except SelectorError:
                return False
            if attrs.group == "" and attrs.resource == "namespaces":
                labels = _labels(attrs.obj) or _labels(attrs.old_obj)
            elif attrs.namespaced:
                labels = _labels(self._namespace_cached(attrs.namespace))
            else:
                return True
            if not selector.matches(labels):
                return False
        return True

    def _namespace_cached(self, name: str) -> dict[str, Any] | None:
        for ns in self._cached("", "namespaces", ""):
            if (ns.get("metadata") or {}).get("name") == name:
                return ns
        return None

    # --- evaluation ---------------------------------------------------------------------------

    async def _context(self, attrs: AdmissionAttributes) -> dict[str, Any]:
        found = self._kind_of(attrs.group, attrs.version, attrs.resource)
        kind = found[0] if found else ""
        user = attrs.user
        user_info: dict[str, Any] = {}
        if user is not None:
            user_info = {
                "username": getattr(user, "name", ""),
                "uid": getattr(user, "uid", ""),
                "groups": list(getattr(user, "groups", ()) or ()),
                "extra": {k: list(v) for k, v in (getattr(user, "extra", {}) or {}).items()},
            }
        gvk = {"group": attrs.group, "version": attrs.version, "kind": kind}
        gvr = {"group": attrs.group, "version": attrs.version, "resource": attrs.resource}
        request = {
            "kind": gvk,
            "resource": gvr,
            "subResource": attrs.subresource,
            "requestKind": gvk,
            "requestResource": gvr,
            "requestSubResource": attrs.subresource,
            "name": attrs.name,
            "namespace": attrs.namespace,
            "operation": attrs.operation,
            "userInfo": user_info,
            "dryRun": attrs.dry_run,
        }
        namespace_object = None
        if attrs.namespaced and attrs.namespace:
            namespace_object = self._namespace_cached(attrs.namespace)
        return {
            "object": attrs.obj,
            "oldObject": attrs.old_obj,
            "request": request,
            "namespaceObject": namespace_object,
        }

    def _params(self, binding: _Binding, policy: _Policy, attrs: AdmissionAttributes) -> list[Any]:
        """The params to evaluate with ([None] without paramKind); raises _Denied."""
        if policy.param_kind is None:
            return [None]
        ref = binding.param_ref
        if ref is None:
            raise _Denied(
                f"failed to configure binding: policy '{policy.name}' requires a paramRef",
                "Invalid",
            )
        api_version = str(policy.param_kind.get("apiVersion") or "")
        group, _, _version = api_version.rpartition("/")
        found = self._resource_of_kind(api_version, str(policy.param_kind.get("kind") or ""))
        if found is None:
            raise _Denied(
                f"failed to configure policy: failed to find resource referenced by paramKind: "
                f"'{api_version}, Kind={policy.param_kind.get('kind')}'",
                "Invalid",
            )
        plural, namespaced = found
        namespace = ""
        if namespaced:
            namespace = str(ref.get("namespace") or attrs.namespace or "")
        candidates = self._cached(group, plural, namespace) if (not namespaced or namespace) else []
        params: list[Any] = []
        if ref.get("name"):
            params = [c for c in candidates if (c.get("metadata") or {}).get("name") == ref["name"]]
        elif ref.get("selector") is not None:
            try:
                selector = selector_from_label_selector(ref.get("selector"))
            except SelectorError:
                selector = None
            if selector is not None:
                params = [c for c in candidates if selector.matches(_labels(c))]
        if not params:
            if ref.get("parameterNotFoundAction") == "Allow":
                return []
            raise _Denied(
                "failed to configure binding: no params found for policy binding with `Deny` "
                "parameterNotFoundAction",
                "Invalid",
            )
        return params

    async def _evaluate(
        self,
        binding: _Binding,
        policy: _Policy,
        attrs: AdmissionAttributes,
        context: dict[str, Any],
    ) -> None:
        try:
            if policy.broken:
                raise _Denied(policy.broken, "Invalid")
            params_list = self._params(binding, policy, attrs)
        except _Denied as denied:
            if policy.failure_policy == "Fail":
                self._act(binding, policy, attrs, denied.message, denied.reason, 0)
            return
        request_resource = {
            "group": attrs.group,
            "version": attrs.version,
            "resource": attrs.resource,
            "subresource": attrs.subresource,
            "namespace": attrs.namespace,
            "name": attrs.name,
        }
        annotations: dict[str, list[str]] = {}
        try:
            with cel.authorizer_value(self._checker(attrs), request_resource) as authorizer:
                for params in params_list:
                    activation = dict(context)
                    activation["params"] = params
                    activation["authorizer"] = authorizer
                    failures, values = self._run(policy, activation)
                    for key, value in values:
                        if value not in annotations.setdefault(key, []):
                            annotations[key].append(value)
                    for message, reason, index in failures:
                        self._act(binding, policy, attrs, message, reason, index)
        finally:
            # published even when the request is denied, as upstream records them
            for key, values in annotations.items():
                add_annotation(f"{policy.name}/{key}", ", ".join(values))

    def _checker(self, attrs: AdmissionAttributes) -> cel.AuthorizerCheck:
        return authorizer_check(self._authorize, attrs)

    def _run(
        self, policy: _Policy, activation: dict[str, Any]
    ) -> tuple[list[tuple[str, str, int]], list[tuple[str, str]]]:
        """The (message, reason, expression index) of every failing validation, in order, and
        the (key, value) of every audit annotation that evaluated to a non-empty string (none
        when a matchCondition excludes the request)."""
        variables: dict[str, Any] = {}
        errors: dict[str, str] = {}
        activation["variables"] = variables
        for name, program in policy.variables:
            try:
                variables[name] = program.evaluate(activation)
            except cel.EvalError as err:
                errors[name] = str(err)
        fail = policy.failure_policy == "Fail"
        for name, program in policy.conditions:
            try:
                if program.evaluate(activation) is not True:
                    return [], []
            except cel.EvalError as err:
                if fail:
                    return [
                        (f"failed to evaluate matchCondition '{name}': {err}", "Invalid", 0)
                    ], []
                return [], []
        failures: list[tuple[str, str, int]] = []
        for index, validation in enumerate(policy.validations):
            try:
                ok = validation.program.evaluate(activation)
            except cel.EvalError as err:
                message = str(err)
                for name, error in errors.items():
                    if f"variables.{name}" in validation.expression:
                        message = f'composited variable "{name}" fails to evaluate: {error}'
                if fail:
                    failures.append(
                        (
                            f"expression '{validation.expression}' resulted in error: {message}",
                            validation.reason,
                            index,
                        )
                    )
                continue
            if ok is not True:
                failures.append((self._message(validation, activation), validation.reason, index))
        values: list[tuple[str, str]] = []
        for key, expression, program in policy.audits:
            try:
                value = program.evaluate(activation)
            except cel.EvalError as err:
                if fail:
                    failures.append(
                        (f"expression '{expression}' resulted in error: {err}", "Invalid", 0)
                    )
                continue
            if isinstance(value, str) and value.strip():
                values.append((key, value.strip()[:MAX_AUDIT_ANNOTATION_VALUE]))
        return failures, values

    @staticmethod
    def _message(validation: _Validation, activation: dict[str, Any]) -> str:
        if validation.message_program is not None:
            try:
                text = validation.message_program.evaluate(activation)
            except cel.EvalError:
                text = ""
            if isinstance(text, str) and text.strip() and "\n" not in text:
                return text.strip()
        if validation.message:
            return validation.message
        return f"failed expression: {validation.expression.strip()}"

    def _act(
        self,
        binding: _Binding,
        policy: _Policy,
        attrs: AdmissionAttributes,
        message: str,
        reason: str,
        index: int,
    ) -> None:
        if "Warn" in binding.actions:
            attrs.warn(
                f"Validation failed for ValidatingAdmissionPolicy '{policy.name}' with binding "
                f"'{binding.name}': {message}"
            )
        if "Audit" in binding.actions:
            failure = {
                "message": message,
                "policy": policy.name,
                "binding": binding.name,
                "expressionIndex": index,
                "validationActions": list(binding.actions),
            }
            # first failure wins, as upstream's admission annotations are never overwritten
            add_annotation(VALIDATION_FAILURE_ANNOTATION, go_json([failure]).decode())
        if "Deny" in binding.actions:
            text = (
                f"ValidatingAdmissionPolicy '{policy.name}' with binding '{binding.name}' "
                f"denied request: {message}"
            )
            resource = qualified_resource(attrs.resource, attrs.group)
            full = (
                f'{resource} "{attrs.name}" is forbidden: {text}'
                if attrs.name
                else f"{resource} is forbidden: {text}"
            )
            raise StatusError(
                full,
                name=attrs.name,
                group=attrs.group,
                kind=attrs.resource,
                causes=[Cause("", text, "")],
                reason=reason,
                code=_REASON_CODES.get(reason, 422),
            )


# --- type checking (status.typeChecking) -----------------------------------------------------

STATUS_INTERVAL_S = 0.2
"""How often the status controller looks for policies whose generation it has not checked."""

Definition = Callable[[str], Any]
"""OpenAPI definition name -> schema (built-in kinds and CRDs)."""
DefinitionName = Callable[[str, str, str], str | None]
"""(group, version, kind) -> OpenAPI definition name."""


def _resolver(definition: Definition) -> Callable[[Mapping[str, Any]], Mapping[str, Any]]:
    """Follows ``$ref`` (and ``allOf: [{$ref}]``) to the definition; int-or-string becomes
    ``dyn``; an object without ``type`` but with properties is an object. Returns one object
    per definition, so recursive definitions end."""
    normalized: dict[int, Mapping[str, Any]] = {}

    def resolve(node: Mapping[str, Any]) -> Mapping[str, Any]:
        for _ in range(32):
            ref = node.get("$ref")
            all_of = node.get("allOf")
            if ref is None and isinstance(all_of, list) and len(all_of) == 1:
                ref = all_of[0].get("$ref") if isinstance(all_of[0], Mapping) else None
            if not isinstance(ref, str):
                break
            target = definition(ref.rsplit("/", 1)[-1])
            if not isinstance(target, Mapping):
                return {}
            node = target
        key = id(node)
        if key not in normalized:
            out = node
            if node.get("format") == "int-or-string":
                out = {"x-kubernetes-int-or-string": True}
            elif not node.get("type") and node.get("properties"):
                out = {**node, "type": "object"}
            normalized[key] = out
        return normalized[key]

    return resolve


def _gvks(spec: Mapping[str, Any], kind_of: KindOf) -> list[tuple[str, str, str]]:
    """The (group, version, kind) the policy's rules name exactly (wildcards and
    subresources are not checked, as upstream)."""
    out: list[tuple[str, str, str]] = []
    constraints = spec.get("matchConstraints") or {}
    for rule in constraints.get("resourceRules") or []:
        if not isinstance(rule, Mapping):
            continue
        for group in rule.get("apiGroups") or []:
            for version in rule.get("apiVersions") or []:
                for resource in rule.get("resources") or []:
                    if "*" in (group, version) or "*" in resource or "/" in resource:
                        continue
                    found = kind_of(group, version, resource)
                    if found is not None and (group, version, found[0]) not in out:
                        out.append((group, version, found[0]))
    return out


def type_warnings(
    policy: Mapping[str, Any],
    kind_of: KindOf,
    definition_name: DefinitionName,
    definition: Definition,
) -> list[dict[str, str]]:
    """``status.typeChecking.expressionWarnings`` of a policy: its expressions type-checked
    against the schema of every kind its rules name (``apps/v1, Kind=Deployment: ERROR:
    <input>:1:8: undefined field 'replicas'...``)."""
    spec = policy.get("spec") or {}
    resolve = _resolver(definition)
    envs: list[tuple[str, cel.TypedEnv]] = []
    for group, version, kind in _gvks(spec, kind_of):
        name = definition_name(group, version, kind)
        schema = definition(name) if name else None
        if not isinstance(schema, Mapping):
            continue
        types = SchemaTypes(resolve, time_types=False)
        try:
            object_type = types.cel_type(schema)
            env = cel.TypedEnv(
                types.pool(),
                {
                    "object": object_type,
                    "oldObject": object_type,
                    "request": cel.Type.DYN,
                    "params": cel.Type.DYN,
                    "namespaceObject": cel.Type.DYN,
                    "variables": cel.Type.DYN,
                    "authorizer": cel.Type.DYN,
                },
            )
        except Exception:  # a schema the descriptors cannot mirror: not checked
            log.debug("cannot type-check against %s/%s %s", group, version, kind, exc_info=True)
            continue
        envs.append((f"{group}/{version}, Kind={kind}", env))
    if not envs:
        return []
    checks: list[tuple[str, str, str]] = []
    for i, validation in enumerate(spec.get("validations") or []):
        if not isinstance(validation, Mapping):
            continue
        checks.append(
            (f"spec.validations[{i}].expression", str(validation.get("expression") or ""), "bool")
        )
        if str(validation.get("messageExpression") or "").strip():
            checks.append(
                (
                    f"spec.validations[{i}].messageExpression",
                    str(validation["messageExpression"]),
                    "string",
                )
            )
    for i, audit in enumerate(spec.get("auditAnnotations") or []):
        if isinstance(audit, Mapping) and str(audit.get("valueExpression") or "").strip():
            checks.append(
                (
                    f"spec.auditAnnotations[{i}].valueExpression",
                    str(audit["valueExpression"]),
                    "any",
                )
            )
    warnings: list[dict[str, str]] = []
    for field_ref, expression, result in checks:
        lines = []
        for label, env in envs:
            try:
                env.check(expression, result=result)
            except cel.CompileError as err:
                if not numeric_mismatch_only(str(err)):
                    lines.append(f"{label}: {err}")
        if lines:
            warnings.append({"fieldRef": field_ref, "warning": "\n".join(lines)})
    return warnings


class PolicyStatusController:
    """Writes ``status.observedGeneration`` and ``status.typeChecking`` of every
    ValidatingAdmissionPolicy whose generation it has not checked yet (upstream's policy
    status controller). Checks run in a worker thread; the loop wakes every
    ``STATUS_INTERVAL_S`` and does nothing while the policies' cache generation is unchanged."""

    def __init__(
        self,
        cached: Cached,
        generation: Generation,
        kind_of: KindOf,
        definition_name: DefinitionName,
        definition: Definition,
        write_status: Callable[[str, Callable[[dict[str, Any]], dict[str, Any]]], Awaitable[Any]],
        *,
        interval_s: float = STATUS_INTERVAL_S,
    ) -> None:
        self._cached = cached
        self._generation = generation
        self._kind_of = kind_of
        self._definition_name = definition_name
        self._definition = definition
        self._write_status = write_status
        self._interval_s = interval_s
        self._seen = -2
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="vap-status")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _loop(self) -> None:
        while True:
            generation = self._generation(GROUP, POLICIES)
            if generation != self._seen:
                try:
                    await self.sync()
                    self._seen = generation
                except Exception:
                    log.exception("ValidatingAdmissionPolicy status sync failed")
            await asyncio.sleep(self._interval_s)

    async def sync(self) -> None:
        for policy in self._cached(GROUP, POLICIES, ""):
            meta = policy.get("metadata") or {}
            generation = meta.get("generation")
            status = policy.get("status") or {}
            if generation is None or status.get("observedGeneration") == generation:
                continue
            warnings = await asyncio.to_thread(
                type_warnings, policy, self._kind_of, self._definition_name, self._definition
            )

            def write(
                current: dict[str, Any],
                generation: Any = generation,
                warnings: list[dict[str, str]] = warnings,
            ) -> dict[str, Any]:
                if (current.get("metadata") or {}).get("generation") != generation:
                    return current  # changed meanwhile: the next round checks the new one
                status = dict(current.get("status") or {})
                status["observedGeneration"] = generation
                status["typeChecking"] = {"expressionWarnings": warnings} if warnings else {}
                return {**current, "status": status}

            try:
                await self._write_status(str(meta.get("name") or ""), write)
            except StatusError as err:  # deleted meanwhile, or a conflict: next round
                log.debug("policy status of %s not written: %s", meta.get("name"), err)
