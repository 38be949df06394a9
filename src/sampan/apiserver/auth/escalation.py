"""RBAC privilege-escalation prevention: nobody grants permissions they do not hold.

Creating or updating a Role/ClusterRole, or a RoleBinding/ClusterRoleBinding, is allowed
(after ordinary RBAC authorization of the write itself) only if

* the user is in ``system:masters``, or
* for roles: the user may ``escalate`` that role, or already holds every permission in it;
* for bindings: the user may ``bind`` the referenced role, or already holds every permission
  in it (in the binding's namespace, or cluster-wide for a ClusterRoleBinding).

"Holds" compares rules atom by atom: a requested rule is split into single (verb, group,
resource, name) or (verb, URL) permissions and each must be covered by one of the user's
rules, where ``*`` covers only what it literally stands for (a requested ``*`` needs an owned
``*``), ``*/scale`` covers every ``<resource>/scale``, an owned rule without resourceNames
covers every name, and an owned URL ending in ``*`` covers that prefix.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sampan.apiserver.auth.rbac import Attributes, RBACAuthorizer
from sampan.apiserver.auth.user import SYSTEM_MASTERS, UserInfo

__all__ = [
    "check_binding_grant",
    "check_role_grant",
    "escalation_message",
    "uncovered_rules",
]

RBAC_GROUP = "rbac.authorization.k8s.io"
ALL = "*"


def _strings(rule: Mapping[str, Any], key: str) -> list[str]:
    return [v for v in rule.get(key) or [] if isinstance(v, str)]


def _covers_value(owned: Sequence[str], wanted: str) -> bool:
    return ALL in owned or wanted in owned


def _covers_resource(owned: Sequence[str], wanted: str) -> bool:
    if ALL in owned or wanted in owned:
        return True
    _, slash, sub = wanted.partition("/")
    return bool(slash) and f"*/{sub}" in owned


def _covers_url(owned: Sequence[str], wanted: str) -> bool:
    for url in owned:
        if url == ALL or url == wanted:
            return True
        if url.endswith(ALL) and wanted.startswith(url.rstrip(ALL)):
            return True
    return False


def _resource_atom_covered(
    owner: Sequence[Mapping[str, Any]], verb: str, group: str, resource: str, name: str
) -> bool:
    for rule in owner:
        names = _strings(rule, "resourceNames")
        if (
            _covers_value(_strings(rule, "verbs"), verb)
            and _covers_value(_strings(rule, "apiGroups"), group)
            and _covers_resource(_strings(rule, "resources"), resource)
            and (not names or (name and name in names))
        ):
            return True
    return False


def _url_atom_covered(owner: Sequence[Mapping[str, Any]], verb: str, url: str) -> bool:
    return any(
        _covers_value(_strings(rule, "verbs"), verb)
        and _covers_url(_strings(rule, "nonResourceURLs"), url)
        for rule in owner
    )


def uncovered_rules(
    owner_rules: Sequence[Mapping[str, Any]], requested_rules: Iterable[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """The single-permission rules of ``requested_rules`` that ``owner_rules`` do not cover
    (empty when everything is covered), in request order without duplicates."""
    missing: list[dict[str, Any]] = []

    def add(rule: dict[str, Any]) -> None:
        if rule not in missing:
            missing.append(rule)

    for rule in requested_rules:
        verbs = _strings(rule, "verbs")
        for verb in verbs:
            for group in _strings(rule, "apiGroups"):
                for resource in _strings(rule, "resources"):
                    for name in _strings(rule, "resourceNames") or [""]:
                        if not _resource_atom_covered(owner_rules, verb, group, resource, name):
                            atom: dict[str, Any] = {
                                "apiGroups": [group],
                                "resources": [resource],
                                "verbs": [verb],
                            }
                            if name:
                                atom["resourceNames"] = [name]
                            add(atom)
            for url in _strings(rule, "nonResourceURLs"):
                if not _url_atom_covered(owner_rules, verb, url):
                    add({"nonResourceURLs": [url], "verbs": [verb]})
    return missing


def _quoted(values: Sequence[str]) -> str:
    return "[" + " ".join(f'"{v}"' for v in values) + "]"


def _describe(rule: Mapping[str, Any]) -> str:
    parts = []
    for key, label in (
        ("apiGroups", "APIGroups"),
        ("resources", "Resources"),
        ("resourceNames", "ResourceNames"),
        ("nonResourceURLs", "NonResourceURLs"),
        ("verbs", "Verbs"),
    ):
        if rule.get(key):
            parts.append(f"{label}:{_quoted(rule[key])}")
    return "{" + ", ".join(parts) + "}"


def escalation_message(user: UserInfo, missing: Sequence[Mapping[str, Any]]) -> str:
    """The reason text of the 403 (the HTTP layer prefixes ``<resource> "<name>" is
    forbidden: ``)."""
    groups = _quoted(user.groups)
    lines = "\n".join(_describe(rule) for rule in missing)
    return (
        f'user "{user.name}" (groups={groups}) is attempting to grant RBAC permissions '
        f"not currently held:\n{lines}"
    )


def _owner_rules(authorizer: RBACAuthorizer, user: UserInfo, namespace: str) -> list[dict]:
    resource_rules, non_resource_rules, _ = authorizer.rules_for(user, namespace)
    return [*resource_rules, *non_resource_rules]


def check_role_grant(
    authorizer: RBACAuthorizer,
    user: UserInfo,
    *,
    kind: str,
    name: str,
    namespace: str,
    rules: Sequence[Mapping[str, Any]],
) -> list[dict[str, Any]]:
    """Permissions a Role (``namespace`` set) or ClusterRole write would grant that ``user``
    may not grant; empty means allowed."""
    if SYSTEM_MASTERS in user.groups:
        return []
    resource = "roles" if kind == "Role" else "clusterroles"
    escalate = Attributes(
        user=user,
        verb="escalate",
        namespace=namespace,
        api_group=RBAC_GROUP,
        resource=resource,
        name=name,
    )
    if authorizer.authorize(escalate).allowed:
        return []
    return uncovered_rules(_owner_rules(authorizer, user, namespace), rules)


def check_binding_grant(
    authorizer: RBACAuthorizer,
    user: UserInfo,
    *,
    role_ref: Mapping[str, Any],
    namespace: str,
    role_rules: Sequence[Mapping[str, Any]] | None,
) -> list[dict[str, Any]]:
    """Permissions a RoleBinding (``namespace`` set) or ClusterRoleBinding would grant that
    ``user`` may not grant; empty means allowed. ``role_rules`` are the referenced role's
    rules, or None if it does not exist (then only ``bind`` permission allows the write)."""
    if SYSTEM_MASTERS in user.groups:
        return []
    role_kind = role_ref.get("kind", "")
    bind = Attributes(
        user=user,
        verb="bind",
        namespace=namespace,
        api_group=RBAC_GROUP,
        resource="roles" if role_kind == "Role" else "clusterroles",
        name=role_ref.get("name", ""),
    )
    if authorizer.authorize(bind).allowed:
        return []
    if role_rules is None:
        return [{"apiGroups": [RBAC_GROUP], "resources": [bind.resource], "verbs": ["bind"]}]
    return uncovered_rules(_owner_rules(authorizer, user, namespace), role_rules)
