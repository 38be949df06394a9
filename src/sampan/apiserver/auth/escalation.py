"""RBAC privilege-escalation prevention: nobody grants permissions they do not hold.

Owns the ``RBACEscalation`` admission plugin, the check kube-apiserver's RBAC "policybased"
storage makes on every create and update (PUT, every patch type, server-side apply, and the
creates a PUT or an apply can turn into) of the four RBAC kinds. It runs on the final object
(after the patch or apply was merged and the mutating plugins ran) and before validation,
which is where upstream's storage wrapper sits; the admission chain is the one place in
Sampan every such write passes with both the object and the request's user known.

* Role / ClusterRole: allowed for ``system:masters``; else for a user the authorizer allows
  ``escalate`` on that role (the request's namespace and URL name: a POST create has none,
  so ``escalate`` restricted by resourceNames does not cover it); else for an update that
  only touches the garbage collector's fields; else only if the user already holds every
  rule it grants (in the role's namespace, or cluster-wide for a ClusterRole). A ClusterRole
  whose new (or, on update, old) object has an aggregationRule additionally needs full
  authority (``*`` on everything and on every non-resource URL): "must have cluster-admin
  privileges to use the aggregationRule".
* RoleBinding / ClusterRoleBinding: allowed for ``system:masters``; else for an update that
  only touches the garbage collector's fields; else for a user the authorizer allows ``bind``
  on the referenced role (in the binding's namespace, or cluster-wide for a
  ClusterRoleBinding; resourceNames restrict which roles); else only if the user already
  holds every rule of the referenced role in the binding's scope. A referenced role that
  does not exist is 404 (``roles.rbac.authorization.k8s.io "x" not found``), as upstream.

"Holds" is upstream's ``Covers``: each requested rule is broken down into single (group,
resource, verb[, name]) and (URL, verb) rules, and each must be covered by one rule the user
holds: ``*`` verbs/groups/resources cover everything (a requested ``*`` needs an owned
``*``), ``*/sub`` covers every ``<resource>/sub``, owned resourceNames must include the
requested name (and a request without names needs an owner without names), an owned URL
ending in ``*`` covers that prefix. The uncovered rules are compacted (same group, resource
and name: verbs merged), printed as ``{APIGroups:["..."], Resources:["..."], Verbs:["..."]}``,
sorted, and refused with 403::

    roles.rbac.authorization.k8s.io "pwn" is forbidden: user "alice"
    (groups=["system:authenticated"]) is attempting to grant RBAC permissions not currently
    held:\\n{APIGroups:["*"], Resources:["*"], Verbs:["*"]}

followed by ``; resolution errors: [...]`` when some of the user's bindings refer to missing
roles. The user's rules come from the authorizer's own resolver (``resolve_rules``): the same
RBAC data that authorizes requests, never a second copy.

Deliberate difference: the garbage-collector exemption also ignores managedFields and the
resourceVersion, which Sampan's patch path recomputes for every write (they grant nothing).
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sampan.api.errors import (
    BadRequest,
    Forbidden,
    InternalError,
    NotFound,
    qualified_resource,
)
from sampan.apiserver.auth.rbac import Attributes, Decision
from sampan.apiserver.auth.user import SYSTEM_MASTERS, UserInfo

if TYPE_CHECKING:
    from sampan.apiserver.admission.chain import AdmissionAttributes

__all__ = [
    "AGGREGATION_RULE_FORBIDDEN",
    "FULL_AUTHORITY",
    "RBACEscalation",
    "compact_rules",
    "compact_string",
    "escalation_message",
    "is_only_mutating_gc_fields",
    "uncovered_rules",
]

RBAC_GROUP = "rbac.authorization.k8s.io"
ALL = "*"
ROLE_RESOURCES = frozenset({"roles", "clusterroles"})
BINDING_RESOURCES = frozenset({"rolebindings", "clusterrolebindings"})

FULL_AUTHORITY: tuple[dict[str, Any], ...] = (
    {"verbs": [ALL], "apiGroups": [ALL], "resources": [ALL]},
    {"verbs": [ALL], "nonResourceURLs": [ALL]},
)
"""What setting or changing an aggregationRule requires: it can gather any permission."""
AGGREGATION_RULE_FORBIDDEN = "must have cluster-admin privileges to use the aggregationRule"

Rule = Mapping[str, Any]
Authorize = Callable[[Attributes], Decision]
ResolveRules = Callable[[UserInfo, str], tuple[Sequence[Rule], Sequence[str]]]
"""(user, namespace) -> (the rules the user holds there, messages of missing roles)."""
GetObject = Callable[[str, str, str, str], Awaitable[dict[str, Any] | None]]
"""(group, plural, namespace, name) -> the stored object, or None."""


# --- covering (upstream's Covers / BreakdownRule / ruleCovers) -------------------------------


def _strings(rule: Mapping[str, Any], key: str) -> list[str]:
    value = rule.get(key)
    if not isinstance(value, list):
        return []
    return [v for v in value if isinstance(v, str)]


def _breakdown(rule: Rule) -> list[dict[str, Any]]:
    """One rule as single-verb, single-resource, single-name (or single-URL) rules."""
    verbs = _strings(rule, "verbs")
    names = _strings(rule, "resourceNames")
    atoms: list[dict[str, Any]] = []
    for group in _strings(rule, "apiGroups"):
        for resource in _strings(rule, "resources"):
            for verb in verbs:
                base = {"apiGroups": [group], "resources": [resource], "verbs": [verb]}
                if names:
                    atoms.extend({**base, "resourceNames": [name]} for name in names)
                else:
                    atoms.append(base)
    for url in _strings(rule, "nonResourceURLs"):
        atoms.extend({"nonResourceURLs": [url], "verbs": [verb]} for verb in verbs)
    return atoms


def _has_all(owned: Collection[str], wanted: Iterable[str]) -> bool:
    return all(value in owned for value in wanted)


@dataclass(frozen=True, slots=True)
class _Owned:
    """One rule the user holds, prepared once per check."""

    verbs: frozenset[str]
    groups: frozenset[str]
    resources: frozenset[str]
    urls: tuple[str, ...]
    names: frozenset[str]

    @classmethod
    def of(cls, rule: Rule) -> _Owned:
        return cls(
            frozenset(_strings(rule, "verbs")),
            frozenset(_strings(rule, "apiGroups")),
            frozenset(_strings(rule, "resources")),
            tuple(_strings(rule, "nonResourceURLs")),
            frozenset(_strings(rule, "resourceNames")),
        )

    def covers(self, atom: Mapping[str, list[str]]) -> bool:
        """upstream's ruleCovers for one broken-down rule."""
        wanted_names = atom.get("resourceNames", [])
        if self.names and not (wanted_names and _has_all(self.names, wanted_names)):
            return False
        return (
            (ALL in self.verbs or _has_all(self.verbs, atom["verbs"]))
            and (ALL in self.groups or _has_all(self.groups, atom.get("apiGroups", [])))
            and self._resources_covered(atom.get("resources", []))
            and all(
                any(_url_covered(o, w) for o in self.urls) for w in atom.get("nonResourceURLs", [])
            )
        )

    def _resources_covered(self, wanted: Sequence[str]) -> bool:
        if ALL in self.resources:
            return True
        for resource in wanted:
            if resource in self.resources:
                continue
            _, slash, sub = resource.partition("/")
            if not slash or f"*/{sub}" not in self.resources:
                return False
        return True


def _url_covered(owned: str, wanted: str) -> bool:
    return owned == wanted or (owned.endswith(ALL) and wanted.startswith(owned.rstrip(ALL)))


def uncovered_rules(owner_rules: Sequence[Rule], requested_rules: Iterable[Rule]) -> list[dict]:
    """The single-permission rules of ``requested_rules`` no rule of ``owner_rules`` covers
    (empty when the owner holds everything), in breakdown order."""
    owned = [_Owned.of(rule) for rule in owner_rules if isinstance(rule, Mapping)]
    return [
        atom
        for rule in requested_rules
        if isinstance(rule, Mapping)
        for atom in _breakdown(rule)
        if not any(owner.covers(atom) for owner in owned)
    ]


# --- the message (upstream's CompactRules / CompactString) ------------------------------------


def compact_rules(rules: Sequence[Rule]) -> list[dict[str, Any]]:
    """Merge the verbs of rules that name one group, one resource and at most one name and
    nothing else (the shape ``uncovered_rules`` produces); other rules are kept as they are."""
    compacted: list[dict[str, Any]] = []
    simple: dict[tuple[str, str, str | None], dict[str, Any]] = {}
    for rule in rules:
        groups, resources = _strings(rule, "apiGroups"), _strings(rule, "resources")
        names = _strings(rule, "resourceNames")
        is_simple = (
            len(groups) == 1
            and len(resources) == 1
            and len(names) <= 1
            and not rule.get("nonResourceURLs")
            and set(rule) <= {"apiGroups", "resources", "verbs", "resourceNames"}
        )
        if not is_simple:
            compacted.append(dict(rule))
            continue
        key = (groups[0], resources[0], names[0] if names else None)
        existing = simple.get(key)
        if existing is None:
            simple[key] = copy.deepcopy(dict(rule))
        else:
            existing["verbs"] = [*_strings(existing, "verbs"), *_strings(rule, "verbs")]
    return [*compacted, *simple.values()]


def _go_quote(text: str) -> str:
    """A string as Go's ``%q`` writes it."""
    escapes = {'"': '\\"', "\\": "\\\\", "\a": "\\a", "\b": "\\b", "\f": "\\f"}
    escapes.update({"\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"})
    out = []
    for ch in text:
        if ch in escapes:
            out.append(escapes[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        elif not ch.isprintable():
            out.append(f"\\u{ord(ch):04x}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _go_quote_list(values: Sequence[str]) -> str:
    """A []string as Go's ``%q`` writes it: ``["a" "b"]``."""
    return "[" + " ".join(_go_quote(v) for v in values) + "]"


def compact_string(rule: Rule) -> str:
    """``{APIGroups:["apps"], Resources:["deployments"], Verbs:["get" "list"]}``."""
    parts = [
        f"{label}:{_go_quote_list(_strings(rule, key))}"
        for key, label in (
            ("apiGroups", "APIGroups"),
            ("resources", "Resources"),
            ("nonResourceURLs", "NonResourceURLs"),
            ("resourceNames", "ResourceNames"),
            ("verbs", "Verbs"),
        )
        if _strings(rule, key)
    ]
    return "{" + ", ".join(parts) + "}"


def _aggregate_error(messages: Sequence[str]) -> str:
    """apimachinery's aggregate error text: one message alone, several (deduplicated) in
    brackets, joined by ", "."""
    unique = list(dict.fromkeys(messages))
    return unique[0] if len(unique) == 1 else "[" + ", ".join(unique) + "]"


def escalation_message(
    user: UserInfo, missing: Sequence[Rule], resolution_errors: Sequence[str] = ()
) -> str:
    """The reason of the 403 (after ``<resource> "<name>" is forbidden: ``)."""
    lines = sorted({compact_string(rule) for rule in compact_rules(missing)})
    message = (
        f"user {_go_quote(user.name)} (groups={_go_quote_list(user.groups)}) is attempting to "
        f"grant RBAC permissions not currently held:\n" + "\n".join(lines)
    )
    if resolution_errors:
        message += f"; resolution errors: [{_aggregate_error(resolution_errors)}]"
    return message


# --- the garbage collector's writes ------------------------------------------------------------

_GC_FIELDS = ("ownerReferences", "finalizers", "selfLink")
# Recomputed by the server on every write (see the module docstring).
_BOOKKEEPING_FIELDS = ("managedFields", "resourceVersion")


def _semantic(value: Any) -> Any:
    """``value`` with empty lists/maps and nulls dropped, so that absent, null and empty
    compare equal (apimachinery's semantic equality)."""
    if isinstance(value, dict):
        out = {k: _semantic(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v not in (None, [], {})}
    if isinstance(value, list):
        return [_semantic(v) for v in value]
    return value


def is_only_mutating_gc_fields(new: Mapping[str, Any], old: Mapping[str, Any] | None) -> bool:
    """Whether ``new`` differs from ``old`` only in ownerReferences and finalizers."""
    if old is None:
        return False
    new_copy = copy.deepcopy(dict(new))
    old_copy = copy.deepcopy(dict(old))
    new_meta = new_copy.setdefault("metadata", {})
    old_meta = old_copy.setdefault("metadata", {})
    if not isinstance(new_meta, dict) or not isinstance(old_meta, dict):
        return False
    for key in _GC_FIELDS + _BOOKKEEPING_FIELDS:
        new_meta.pop(key, None)
        old_meta.pop(key, None)
    return _semantic(new_copy) == _semantic(old_copy)


# --- the admission plugin ------------------------------------------------------------------------


def _has_aggregation_rule(obj: Mapping[str, Any] | None) -> bool:
    rule = (obj or {}).get("aggregationRule")
    return isinstance(rule, dict) and bool(rule.get("clusterRoleSelectors"))


class RBACEscalation:
    """Refuses Role/ClusterRole/RoleBinding/ClusterRoleBinding writes that would grant more
    than the writer holds (module docstring). Validating; runs right after
    NamespaceLifecycle, before every other validating plugin, as upstream's storage check
    runs before validating admission."""

    name = "RBACEscalation"
    mutating = False

    def __init__(
        self, authorize: Authorize, resolve_rules: ResolveRules, get_object: GetObject
    ) -> None:
        self._authorize = authorize
        self._resolve_rules = resolve_rules
        self._get_object = get_object

    async def admit(self, attrs: AdmissionAttributes) -> None:
        if (
            attrs.group != RBAC_GROUP
            or attrs.subresource
            or attrs.operation not in ("CREATE", "UPDATE")
            or attrs.obj is None
        ):
            return
        user: UserInfo | None = attrs.user
        if user is None:  # every API request has one; a write without one grants nothing
            raise _forbidden(attrs, "no user on context")
        if SYSTEM_MASTERS in user.groups:
            return
        if attrs.resource in ROLE_RESOURCES:
            self._check_role(attrs, user)
        elif attrs.resource in BINDING_RESOURCES:
            await self._check_binding(attrs, user)

    # -- roles --

    def _check_role(self, attrs: AdmissionAttributes, user: UserInfo) -> None:
        obj = attrs.obj or {}
        request_name = attrs.name if attrs.request_name is None else attrs.request_name
        escalate = Attributes(
            user=user,
            verb="escalate",
            namespace=attrs.namespace,
            api_group=attrs.group,
            resource=attrs.resource,
            name=request_name,
        )
        if self._authorize(escalate).allowed:
            return
        if attrs.operation == "UPDATE" and is_only_mutating_gc_fields(obj, attrs.old_obj):
            return
        rules = obj.get("rules")
        self._confirm_no_escalation(attrs, user, rules if isinstance(rules, list) else [])
        if attrs.resource == "clusterroles" and (
            _has_aggregation_rule(obj)
            or (attrs.operation == "UPDATE" and _has_aggregation_rule(attrs.old_obj))
        ):
            owned, _ = self._resolve_rules(user, "")
            if uncovered_rules(owned, FULL_AUTHORITY):
                raise _forbidden(attrs, AGGREGATION_RULE_FORBIDDEN)

    # -- bindings --

    async def _check_binding(self, attrs: AdmissionAttributes, user: UserInfo) -> None:
        obj = attrs.obj or {}
        if attrs.operation == "UPDATE" and is_only_mutating_gc_fields(obj, attrs.old_obj):
            return
        role_ref = obj.get("roleRef")
        ref: Mapping[str, Any] = role_ref if isinstance(role_ref, dict) else {}
        kind, name = str(ref.get("kind") or ""), str(ref.get("name") or "")
        if kind in ("Role", "ClusterRole"):
            bind = Attributes(
                user=user,
                verb="bind",
                namespace=attrs.namespace,
                api_group=str(ref.get("apiGroup") or ""),
                resource="roles" if kind == "Role" else "clusterroles",
                name=name,
            )
            if self._authorize(bind).allowed:
                return
        rules = await self._role_ref_rules(kind, name, attrs.namespace)
        self._confirm_no_escalation(attrs, user, rules)

    async def _role_ref_rules(self, kind: str, name: str, namespace: str) -> list[Rule]:
        """The rules of the role a binding refers to (upstream's GetRoleReferenceRules)."""
        if kind == "Role":
            if not namespace:
                raise BadRequest("Namespace parameter required.")
            plural = "roles"
        elif kind == "ClusterRole":
            plural, namespace = "clusterroles", ""
        else:
            raise InternalError(
                f"Internal error occurred: unsupported role reference kind: {_go_quote(kind)}"
            )
        role = await self._get_object(RBAC_GROUP, plural, namespace, name) if name else None
        if role is None:
            raise NotFound.for_object(plural, RBAC_GROUP, name)
        rules = role.get("rules")
        return [r for r in rules if isinstance(r, Mapping)] if isinstance(rules, list) else []

    # -- shared --

    def _confirm_no_escalation(
        self, attrs: AdmissionAttributes, user: UserInfo, rules: Sequence[Rule]
    ) -> None:
        owned, missing_roles = self._resolve_rules(user, attrs.namespace)
        missing = uncovered_rules(owned, [r for r in rules if isinstance(r, Mapping)])
        if missing:
            errors = [_registry_not_found(message) for message in missing_roles]
            raise _forbidden(attrs, escalation_message(user, missing, errors))


def _registry_not_found(message: str) -> str:
    """The authorizer words a missing role as its listers do (``role.rbac...``); upstream's
    escalation check reads roles through the registry, whose errors name the resource
    (``roles.rbac...``)."""
    for singular, plural in (("clusterrole.", "clusterroles."), ("role.", "roles.")):
        if message.startswith(singular):
            return plural + message[len(singular) :]
    return message


def _forbidden(attrs: AdmissionAttributes, reason: str) -> Forbidden:
    resource = qualified_resource(attrs.resource, attrs.group)
    if attrs.name:
        message = f"{resource} {_go_quote(attrs.name)} is forbidden: {reason}"
    else:
        message = f"{resource} is forbidden: {reason}"
    return Forbidden(message, name=attrs.name, group=attrs.group, kind=attrs.resource)
