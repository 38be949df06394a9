"""RBAC authorization: the ``rbac.authorization.k8s.io/v1`` semantics over plain dicts.

A request is allowed when some rule reachable from the user is a match:

* ClusterRoleBindings grant their ClusterRole's rules everywhere (and non-resource URLs);
* RoleBindings in the request's namespace grant their Role's — or ClusterRole's — rules in
  that namespace only;
* a binding applies to a user through a ``User`` subject (name), a ``Group`` subject (one of
  the user's groups) or a ``ServiceAccount`` subject (user
  ``system:serviceaccount:<ns>:<name>``; a RoleBinding's subject without a namespace means
  the binding's namespace);
* a rule matches when its verbs, apiGroups, resources ("*", "pods", "pods/log",
  "*/scale") and resourceNames (empty = any) all match, or for non-resource requests its
  nonResourceURLs ("*", exact, or a prefix ending in "*");
* members of ``system:masters`` are always allowed (upstream's privileged-group shortcut).

Invariant: ``authorize`` is synchronous and does no I/O. The rules reachable from a
(user, groups, namespace) are compiled once per ``RBACSource.generation()`` and cached, and
bindings are indexed by subject, so a check is a dict lookup plus a scan of that user's rules.
Missing roles are skipped (and reported as ``incomplete`` by ``rules_for``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sampan.api.labels import SelectorError, selector_from_label_selector
from sampan.apiserver.auth.user import (
    SYSTEM_MASTERS,
    UserInfo,
    service_account_username,
)

__all__ = [
    "Attributes",
    "Decision",
    "RBACAuthorizer",
    "RBACSource",
    "StaticRBACSource",
    "aggregate_cluster_role",
    "forbidden_message",
    "label_selector_matches",
]

ALL = "*"
# Rule-set cache entries kept before the cache is cleared wholesale (it is also cleared on
# every RBAC generation change); a few thousand distinct users per namespace is far beyond a
# Sampan cluster, and clearing is cheap: entries are rebuilt from the subject index.
RULE_CACHE_MAX_ENTRIES = 4096


@dataclass(frozen=True)
class Attributes:
    """What a request wants to do (authorizer.Attributes)."""

    user: UserInfo
    verb: str
    namespace: str = ""
    api_group: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""
    path: str = ""
    resource_request: bool = True
    field_selector: str = ""
    """The raw ``fieldSelector`` of a list/watch/deletecollection (the Node authorizer scopes
    a node's pod lists by ``spec.nodeName``); RBAC ignores it."""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""


class RBACSource(Protocol):
    """Current RBAC objects (as API JSON dicts), read synchronously from a cache."""

    def cluster_roles(self) -> Iterable[dict]: ...
    def cluster_role_bindings(self) -> Iterable[dict]: ...
    def roles(self, namespace: str) -> Iterable[dict]: ...
    def role_bindings(self, namespace: str) -> Iterable[dict]: ...
    def generation(self) -> int: ...


@dataclass
class StaticRBACSource:
    """An ``RBACSource`` over lists held in memory (tests, bootstrap checks). Call ``bump()``
    after mutating the lists."""

    cluster_role_list: list[dict] = field(default_factory=list)
    cluster_role_binding_list: list[dict] = field(default_factory=list)
    role_list: list[dict] = field(default_factory=list)
    role_binding_list: list[dict] = field(default_factory=list)
    _generation: int = 0

    def cluster_roles(self) -> Iterable[dict]:
        return self.cluster_role_list

    def cluster_role_bindings(self) -> Iterable[dict]:
        return self.cluster_role_binding_list

    def roles(self, namespace: str) -> Iterable[dict]:
        return [r for r in self.role_list if _namespace(r) == namespace]

    def role_bindings(self, namespace: str) -> Iterable[dict]:
        return [b for b in self.role_binding_list if _namespace(b) == namespace]

    def generation(self) -> int:
        return self._generation

    def bump(self) -> None:
        self._generation += 1


def _namespace(obj: Mapping[str, Any]) -> str:
    return obj.get("metadata", {}).get("namespace", "") or ""


def _obj_name(obj: Mapping[str, Any]) -> str:
    return obj.get("metadata", {}).get("name", "") or ""


# --- rule matching ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _CompiledRule:
    """One PolicyRule prepared for fast matching; ``None`` sets mean "*"."""

    verbs: frozenset[str] | None
    groups: frozenset[str] | None
    resources: frozenset[str] | None  # exact "pods", "pods/log"
    any_resource_with_sub: frozenset[str]  # subresources granted via "*/<sub>"
    names: frozenset[str]  # empty: any name
    urls: frozenset[str] | None  # exact non-resource URLs
    url_prefixes: tuple[str, ...]
    has_resources: bool
    has_urls: bool
    source: str
    raw: Mapping[str, Any]

    def allows_resource(self, attrs: Attributes) -> bool:
        if not self.has_resources:
            return False
        if self.verbs is not None and attrs.verb not in self.verbs:
            return False
        if self.groups is not None and attrs.api_group not in self.groups:
            return False
        if self.resources is not None:
            combined = (
                f"{attrs.resource}/{attrs.subresource}" if attrs.subresource else attrs.resource
            )
            if combined not in self.resources and not (
                attrs.subresource and attrs.subresource in self.any_resource_with_sub
            ):
                return False
        return not self.names or attrs.name in self.names

    def allows_path(self, attrs: Attributes) -> bool:
        if not self.has_urls:
            return False
        if self.verbs is not None and attrs.verb not in self.verbs:
            return False
        if self.urls is None or attrs.path in self.urls:
            return True
        return any(attrs.path.startswith(prefix) for prefix in self.url_prefixes)


def _strings(rule: Mapping[str, Any], key: str) -> list[str]:
    value = rule.get(key) or []
    return [v for v in value if isinstance(v, str)]


def _compile(rule: Mapping[str, Any], source: str) -> _CompiledRule:
    verbs = _strings(rule, "verbs")
    groups = _strings(rule, "apiGroups")
    resources = _strings(rule, "resources")
    urls = _strings(rule, "nonResourceURLs")
    exact = frozenset(r for r in resources if not r.startswith("*/"))
    star_sub = frozenset(r[2:] for r in resources if r.startswith("*/"))
    return _CompiledRule(
        verbs=None if ALL in verbs else frozenset(verbs),
        groups=None if ALL in groups else frozenset(groups),
        resources=None if ALL in exact else exact,
        any_resource_with_sub=star_sub,
        names=frozenset(_strings(rule, "resourceNames")),
        urls=None if ALL in urls else frozenset(u for u in urls if not u.endswith(ALL)),
        url_prefixes=tuple(u[:-1] for u in urls if u.endswith(ALL) and u != ALL),
        has_resources=bool(resources) and bool(verbs),
        has_urls=bool(urls) and bool(verbs),
        source=source,
        raw=rule,
    )


# --- indexes ------------------------------------------------------------------------------

_SubjectKey = tuple[str, str]  # ("User", name) or ("Group", name)


@dataclass(frozen=True, slots=True)
class _Grant:
    binding_kind: str
    binding_name: str
    role_kind: str
    role_name: str
    subject: str  # 'User "jane"' etc, for reasons


def _subject_keys(subject: Mapping[str, Any], binding_namespace: str) -> tuple[_SubjectKey, str]:
    kind = subject.get("kind", "")
    name = subject.get("name", "") or ""
    if kind == "User":
        return ("User", name), f'User "{name}"'
    if kind == "Group":
        return ("Group", name), f'Group "{name}"'
    if kind == "ServiceAccount":
        namespace = subject.get("namespace") or binding_namespace
        if not namespace or not name:
            return ("", ""), ""
        return (
            ("User", service_account_username(namespace, name)),
            f'ServiceAccount "{namespace}/{name}"',
        )
    return ("", ""), ""


def _index_bindings(
    bindings: Iterable[Mapping[str, Any]], binding_kind: str
) -> dict[_SubjectKey, list[_Grant]]:
    index: dict[_SubjectKey, list[_Grant]] = {}
    for binding in bindings:
        role_ref = binding.get("roleRef") or {}
        binding_ns = _namespace(binding)
        for subject in binding.get("subjects") or []:
            key, shown = _subject_keys(subject, binding_ns)
            if not key[0]:
                continue
            index.setdefault(key, []).append(
                _Grant(
                    binding_kind=binding_kind,
                    binding_name=_obj_name(binding),
                    role_kind=role_ref.get("kind", ""),
                    role_name=role_ref.get("name", ""),
                    subject=shown,
                )
            )
    return index


@dataclass(frozen=True, slots=True)
class _RuleSet:
    rules: tuple[_CompiledRule, ...]
    incomplete: bool
    missing: tuple[str, ...]


@dataclass
class _NamespaceIndex:
    roles: dict[str, list[dict]]
    grants: dict[_SubjectKey, list[_Grant]]


class RBACAuthorizer:
    """Authorize requests against the RBAC objects of an ``RBACSource`` (module docstring)."""

    def __init__(self, source: RBACSource) -> None:
        self._source = source
        self._generation: int | None = None
        self._cluster_roles: dict[str, list[dict]] = {}
        self._cluster_grants: dict[_SubjectKey, list[_Grant]] = {}
        self._namespaces: dict[str, _NamespaceIndex] = {}
        # Keyed by grant (not just role) so each rule remembers which binding granted it.
        self._compiled_roles: dict[tuple[_Grant, str], tuple[_CompiledRule, ...]] = {}
        self._cache: dict[tuple[str, tuple[str, ...], str], _RuleSet] = {}

    # -- cache maintenance --

    def _refresh(self) -> None:
        generation = self._source.generation()
        if generation == self._generation:
            return
        self._generation = generation
        self._cluster_roles = {
            _obj_name(r): list(r.get("rules") or []) for r in self._source.cluster_roles()
        }
        self._cluster_grants = _index_bindings(
            self._source.cluster_role_bindings(), "ClusterRoleBinding"
        )
        self._namespaces.clear()
        self._compiled_roles.clear()
        self._cache.clear()

    def _namespace_index(self, namespace: str) -> _NamespaceIndex:
        index = self._namespaces.get(namespace)
        if index is None:
            index = _NamespaceIndex(
                roles={
                    _obj_name(r): list(r.get("rules") or []) for r in self._source.roles(namespace)
                },
                grants=_index_bindings(self._source.role_bindings(namespace), "RoleBinding"),
            )
            self._namespaces[namespace] = index
        return index

    def _role_rules(self, grant: _Grant, namespace: str) -> tuple[_CompiledRule, ...] | None:
        key = (grant, namespace)
        compiled = self._compiled_roles.get(key)
        if compiled is not None:
            return compiled
        if grant.role_kind == "ClusterRole":
            raw = self._cluster_roles.get(grant.role_name)
        elif grant.role_kind == "Role":
            raw = self._namespace_index(namespace).roles.get(grant.role_name)
        else:
            raw = None
        if raw is None:
            return None
        where = f' in "{namespace}"' if grant.binding_kind == "RoleBinding" else ""
        source = (
            f'{grant.binding_kind} "{grant.binding_name}"{where} of {grant.role_kind} '
            f'"{grant.role_name}" to {grant.subject}'
        )
        compiled = tuple(_compile(rule, source) for rule in raw)
        self._compiled_roles[key] = compiled
        return compiled

    def _collect(
        self,
        user: UserInfo,
        grants_index: Mapping[_SubjectKey, list[_Grant]],
        namespace: str,
    ) -> _RuleSet:
        keys: list[_SubjectKey] = [("User", user.name), *(("Group", g) for g in user.groups)]
        rules: list[_CompiledRule] = []
        missing: list[str] = []
        seen: set[tuple[str, str]] = set()
        for key in keys:
            for grant in grants_index.get(key, ()):
                role_key = (grant.role_kind, grant.role_name)
                if role_key in seen:
                    continue
                seen.add(role_key)
                compiled = self._role_rules(grant, namespace)
                if compiled is None:
                    kind = "clusterrole" if grant.role_kind == "ClusterRole" else "role"
                    missing.append(
                        f'{kind}.rbac.authorization.k8s.io "{grant.role_name}" not found'
                    )
                    continue
                rules.extend(compiled)
        return _RuleSet(tuple(rules), bool(missing), tuple(missing))

    def _rule_set(self, user: UserInfo, namespace: str) -> _RuleSet:
        self._refresh()
        key = (user.name, user.groups, namespace)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        if len(self._cache) >= RULE_CACHE_MAX_ENTRIES:
            self._cache.clear()
        if namespace:
            cluster = self._rule_set(user, "")
            local = self._collect(user, self._namespace_index(namespace).grants, namespace)
            result = _RuleSet(
                cluster.rules + local.rules,
                cluster.incomplete or local.incomplete,
                cluster.missing + local.missing,
            )
        else:
            result = self._collect(user, self._cluster_grants, "")
        self._cache[key] = result
        return result

    # -- public API --

    def authorize(self, attrs: Attributes) -> Decision:
        if SYSTEM_MASTERS in attrs.user.groups:
            return Decision(True, "")
        namespace = attrs.namespace if attrs.resource_request else ""
        rule_set = self._rule_set(attrs.user, namespace)
        if attrs.resource_request:
            for rule in rule_set.rules:
                if rule.allows_resource(attrs):
                    return Decision(True, f"RBAC: allowed by {rule.source}")
        else:
            for rule in rule_set.rules:
                if rule.allows_path(attrs):
                    return Decision(True, f"RBAC: allowed by {rule.source}")
        return Decision(False, "")

    def resolved_rules(
        self, user: UserInfo, namespace: str
    ) -> tuple[list[Mapping[str, Any]], tuple[str, ...]]:
        """The PolicyRules ``user`` holds in ``namespace`` (cluster-wide ones included) as
        stored, and a not-found message per role a binding of theirs refers to that does not
        exist. For escalation checks: the very data ``authorize`` decides with."""
        rule_set = self._rule_set(user, namespace)
        return [rule.raw for rule in rule_set.rules], rule_set.missing

    def rules_for(self, user: UserInfo, namespace: str) -> tuple[list[dict], list[dict], bool]:
        """(resourceRules, nonResourceRules, incomplete) in SelfSubjectRulesReview shape."""
        rule_set = self._rule_set(user, namespace)
        resource_rules: list[dict] = []
        non_resource_rules: list[dict] = []
        for rule in rule_set.rules:
            raw = rule.raw
            if rule.has_resources:
                entry: dict[str, Any] = {
                    "verbs": _strings(raw, "verbs"),
                    "apiGroups": _strings(raw, "apiGroups"),
                    "resources": _strings(raw, "resources"),
                }
                names = _strings(raw, "resourceNames")
                if names:
                    entry["resourceNames"] = names
                if entry not in resource_rules:
                    resource_rules.append(entry)
            if rule.has_urls:
                url_entry = {
                    "verbs": _strings(raw, "verbs"),
                    "nonResourceURLs": _strings(raw, "nonResourceURLs"),
                }
                if url_entry not in non_resource_rules:
                    non_resource_rules.append(url_entry)
        return resource_rules, non_resource_rules, rule_set.incomplete


# --- messages -----------------------------------------------------------------------------


def forbidden_message(attrs: Attributes, reason: str = "") -> str:
    """The 403 Status message, worded as kube-apiserver words it."""
    user = attrs.user.name
    if not attrs.resource_request:
        detail = f'User "{user}" cannot {attrs.verb} path "{attrs.path}"'
    else:
        resource = f"{attrs.resource}/{attrs.subresource}" if attrs.subresource else attrs.resource
        detail = (
            f'User "{user}" cannot {attrs.verb} resource "{resource}" '
            f'in API group "{attrs.api_group}"'
        )
        if attrs.namespace:
            detail += f' in the namespace "{attrs.namespace}"'
        else:
            detail += " at the cluster scope"
    if reason:
        detail += f": {reason}"
    qualified = ""
    if attrs.resource_request and attrs.resource:
        qualified = f"{attrs.resource}.{attrs.api_group}" if attrs.api_group else attrs.resource
    if not qualified:
        return f"forbidden: {detail}"
    if not attrs.name:
        return f"{qualified} is forbidden: {detail}"
    return f'{qualified} "{attrs.name}" is forbidden: {detail}'


# --- aggregation --------------------------------------------------------------------------


def label_selector_matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """metav1.LabelSelector semantics (``sampan.api.labels``); an empty selector matches
    everything, an invalid one (unknown operator, bad key) matches nothing."""
    try:
        return selector_from_label_selector(selector).matches(labels)
    except SelectorError:
        return False


def aggregate_cluster_role(
    role: Mapping[str, Any], all_roles: Sequence[Mapping[str, Any]]
) -> list[dict]:
    """The rules an aggregated ClusterRole ends up with: for each clusterRoleSelector in
    order, the rules of every other matching ClusterRole (by name order), duplicates dropped.
    A role without ``aggregationRule`` keeps its own rules."""
    aggregation = role.get("aggregationRule")
    if not aggregation:
        return [dict(r) for r in role.get("rules") or []]
    own_name = _obj_name(role)
    ordered = sorted(all_roles, key=_obj_name)
    rules: list[dict] = []
    for selector in aggregation.get("clusterRoleSelectors") or []:
        for other in ordered:
            if _obj_name(other) == own_name:
                continue
            labels = other.get("metadata", {}).get("labels") or {}
            if not label_selector_matches(selector, labels):
                continue
            for rule in other.get("rules") or []:
                if rule not in rules:
                    rules.append(dict(rule))
    return rules
