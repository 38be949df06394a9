"""The audit policy: kube-apiserver's ``audit.k8s.io/v1`` ``Policy`` file and its evaluation.

* ``load_policy(path)`` reads a Policy (YAML or JSON) and validates it as kube-apiserver does
  (levels, stages, non-resource URL wildcards, group names, ``resourceNames`` needing
  resources, a rule with both resources and non-resource URLs, at least one rule). Every
  problem is an ``AuditPolicyError`` of one line naming the file and the field path. Unlike
  kube-apiserver, which warns and falls back to lenient decoding, an unknown field is an error
  too: a misspelt ``userGroup`` would otherwise silently widen a rule.
* ``Policy.evaluate(user, request_info)`` returns the ``RequestAuditConfig`` of the FIRST rule
  that matches (users, userGroups, verbs, then resources/namespaces or nonResourceURLs), or
  level None when no rule does, with the policy-wide ``omitStages`` joined to each rule's.

Matching follows upstream's checker: ``resources`` entries match ``resource``,
``resource/subresource``, ``*``, ``*/subresource`` and ``resource/*`` (the resource and all its
subresources); a ``group`` of ``*`` matches every group; ``namespaces: [""]`` matches
cluster-scoped resources; a non-resource URL ending in ``*`` matches by prefix.

Invariant: a loaded ``Policy`` is immutable and evaluating it never raises.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sampan.api import fielderrors as fe

__all__ = [
    "API_VERSION",
    "LEVELS",
    "STAGES",
    "AuditPolicyError",
    "GroupResources",
    "Policy",
    "PolicyRule",
    "RequestAuditConfig",
    "load_policy",
    "parse_policy",
]

API_VERSION = "audit.k8s.io/v1"
LEVEL_NONE = "None"
LEVEL_METADATA = "Metadata"
LEVEL_REQUEST = "Request"
LEVEL_REQUEST_RESPONSE = "RequestResponse"
LEVELS = (LEVEL_NONE, LEVEL_METADATA, LEVEL_REQUEST, LEVEL_REQUEST_RESPONSE)
LEVEL_ORDER = {level: index for index, level in enumerate(LEVELS)}
STAGE_REQUEST_RECEIVED = "RequestReceived"
STAGE_RESPONSE_STARTED = "ResponseStarted"
STAGE_RESPONSE_COMPLETE = "ResponseComplete"
STAGE_PANIC = "Panic"
STAGES = (STAGE_REQUEST_RECEIVED, STAGE_RESPONSE_STARTED, STAGE_RESPONSE_COMPLETE, STAGE_PANIC)

_POLICY_FIELDS = frozenset(
    {"apiVersion", "kind", "metadata", "rules", "omitStages", "omitManagedFields"}
)
_RULE_FIELDS = frozenset(
    {
        "level",
        "users",
        "userGroups",
        "verbs",
        "resources",
        "namespaces",
        "nonResourceURLs",
        "omitStages",
        "omitManagedFields",
    }
)
_GROUP_RESOURCE_FIELDS = frozenset({"group", "resources", "resourceNames"})
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


class AuditPolicyError(ValueError):
    """An unusable audit policy file (one line: file, field, reason)."""


@dataclass(frozen=True, slots=True)
class RequestAuditConfig:
    level: str
    omit_stages: frozenset[str] = frozenset()
    omit_managed_fields: bool = False


@dataclass(frozen=True, slots=True)
class GroupResources:
    group: str = ""
    resources: tuple[str, ...] = ()
    resource_names: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PolicyRule:
    level: str
    users: frozenset[str] = frozenset()
    user_groups: frozenset[str] = frozenset()
    verbs: frozenset[str] = frozenset()
    resources: tuple[GroupResources, ...] = ()
    namespaces: frozenset[str] = frozenset()
    non_resource_urls: tuple[str, ...] = ()
    omit_stages: frozenset[str] = frozenset()
    omit_managed_fields: bool | None = None

    def matches(self, user: Any, ri: Any) -> bool:
        if self.users and (user is None or user.name not in self.users):
            return False
        if self.user_groups and (
            user is None or not any(g in self.user_groups for g in user.groups)
        ):
            return False
        if self.verbs and ri.verb not in self.verbs:
            return False
        if self.namespaces or self.resources:
            return self._matches_resource(ri)
        if self.non_resource_urls:
            return not ri.is_resource_request and any(
                _path_matches(ri.path, spec) for spec in self.non_resource_urls
            )
        return True

    def _matches_resource(self, ri: Any) -> bool:
        if not ri.is_resource_request:
            return False
        if self.namespaces and ri.namespace not in self.namespaces:
            return False
        if not self.resources:
            return True
        resource, subresource = ri.resource, ri.subresource
        combined = f"{resource}/{subresource}" if subresource else resource
        for gr in self.resources:
            if gr.group != ri.api_group and gr.group != "*":
                continue
            if not gr.resources:
                return True
            if gr.resource_names and ri.name not in gr.resource_names:
                continue
            for res in gr.resources:
                if res == combined or res == "*":
                    return True
                if subresource and res.startswith("*/") and res[2:] == subresource:
                    return True
                if res.endswith("/*") and res[:-2] == resource:
                    return True
        return False


def _path_matches(path: str, spec: str) -> bool:
    if spec == "*" or spec == path:
        return True
    return spec.endswith("*") and path.startswith(spec.rstrip("*"))


@dataclass(frozen=True, slots=True)
class Policy:
    rules: tuple[PolicyRule, ...]
    omit_stages: frozenset[str] = frozenset()
    omit_managed_fields: bool = False
    path: str = ""

    def evaluate(self, user: Any, ri: Any) -> RequestAuditConfig:
        """The audit configuration of the first matching rule (level None if none does)."""
        for rule in self.rules:
            if rule.matches(user, ri):
                omit_managed = rule.omit_managed_fields
                return RequestAuditConfig(
                    rule.level,
                    self.omit_stages | rule.omit_stages,
                    self.omit_managed_fields if omit_managed is None else omit_managed,
                )
        return RequestAuditConfig(LEVEL_NONE, self.omit_stages, self.omit_managed_fields)


# --- loading -----------------------------------------------------------------------------


def load_policy(path: Path) -> Policy:
    """Read and validate a policy file; ``AuditPolicyError`` naming the file otherwise."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise AuditPolicyError(f"{path}: cannot read the audit policy: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise AuditPolicyError(f"{path}:{where}: malformed audit policy: {problem}") from None
    try:
        return parse_policy(data, str(path))
    except _Invalid as exc:
        raise AuditPolicyError(f"{path}: {exc}") from None


class _Invalid(Exception):
    pass


def parse_policy(data: Any, source: str = "") -> Policy:
    """A ``Policy`` from decoded YAML/JSON; raises ``AuditPolicyError`` (``source`` names it)."""
    try:
        return _parse(data, source)
    except _Invalid as exc:
        if source:
            raise AuditPolicyError(f"{source}: {exc}") from None
        raise AuditPolicyError(str(exc)) from None


def _parse(data: Any, source: str) -> Policy:
    if not isinstance(data, dict):
        raise _Invalid("an audit policy must be an object with apiVersion, kind and rules")
    api_version = data.get("apiVersion")
    kind = data.get("kind")
    if not api_version:
        raise _Invalid("apiVersion: Required value: the object's apiVersion is missing")
    if not kind:
        raise _Invalid("kind: Required value: the object's kind is missing")
    if api_version != API_VERSION or kind != "Policy":
        raise _Invalid(
            f'no kind "{kind}" is registered for version "{api_version}" '
            f'(expected apiVersion "{API_VERSION}", kind "Policy")'
        )
    _unknown(data, _POLICY_FIELDS, "")
    omit_stages = _stages(data.get("omitStages"), "omitStages")
    omit_managed = _bool(data.get("omitManagedFields"), "omitManagedFields")
    raw_rules = _list(data.get("rules"), "rules")
    rules = tuple(_rule(raw, f"rules[{index}]") for index, raw in enumerate(raw_rules))
    if not rules:
        raise _Invalid("loaded illegal policy with 0 rules")
    return Policy(rules, omit_stages, bool(omit_managed), source)


def _unknown(obj: Mapping[str, Any], allowed: frozenset[str], path: str) -> None:
    for key in obj:
        if key not in allowed:
            shown = f"{path}.{key}" if path else str(key)
            raise _Invalid(f'strict decoding error: unknown field "{shown}"')


def _list(value: Any, path: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _Invalid(fe.error_string(fe.invalid(path, value, "must be a list")))
    return value


def _strings(value: Any, path: str) -> tuple[str, ...]:
    items = _list(value, path)
    for index, item in enumerate(items):
        if not isinstance(item, str):
            raise _Invalid(
                fe.error_string(fe.invalid(f"{path}[{index}]", item, "must be a string"))
            )
    return tuple(items)


def _bool(value: Any, path: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise _Invalid(fe.error_string(fe.invalid(path, value, "must be a boolean")))


def _stages(value: Any, path: str) -> frozenset[str]:
    stages = _strings(value, path)
    for index, stage in enumerate(stages):
        if stage not in STAGES:
            raise _Invalid(
                fe.error_string(
                    fe.invalid(f"{path}[{index}]", stage, "allowed stages are " + ",".join(STAGES))
                )
            )
    return frozenset(stages)


def _rule(raw: Any, path: str) -> PolicyRule:
    if not isinstance(raw, dict):
        raise _Invalid(fe.error_string(fe.invalid(path, raw, "must be an object")))
    _unknown(raw, _RULE_FIELDS, path)
    level = raw.get("level")
    if level is None or level == "":
        raise _Invalid(fe.error_string(fe.required(f"{path}.level")))
    if level not in LEVELS:
        raise _Invalid(fe.error_string(fe.not_supported(f"{path}.level", level, LEVELS)))
    urls = _strings(raw.get("nonResourceURLs"), f"{path}.nonResourceURLs")
    for index, url in enumerate(urls):
        if url == "*":
            continue
        where = f"{path}.nonResourceURLs[{index}]"
        if not url.startswith("/"):
            raise _Invalid(
                fe.error_string(
                    fe.invalid(where, url, "non-resource URL rules must begin with a '/' character")
                )
            )
        if "*" in url[:-1]:
            raise _Invalid(
                fe.error_string(
                    fe.invalid(
                        where,
                        url,
                        "non-resource URL wildcards '*' must be the final character of the rule",
                    )
                )
            )
    resources = tuple(
        _group_resources(item, f"{path}.resources[{index}]")
        for index, item in enumerate(_list(raw.get("resources"), f"{path}.resources"))
    )
    namespaces = _strings(raw.get("namespaces"), f"{path}.namespaces")
    omit_stages = _stages(raw.get("omitStages"), f"{path}.omitStages")
    if urls and (resources or namespaces):
        raise _Invalid(
            fe.error_string(
                fe.invalid(
                    f"{path}.nonResourceURLs",
                    list(urls),
                    "rules cannot apply to both regular resources and non-resource URLs",
                )
            )
        )
    return PolicyRule(
        level=level,
        users=frozenset(_strings(raw.get("users"), f"{path}.users")),
        user_groups=frozenset(_strings(raw.get("userGroups"), f"{path}.userGroups")),
        verbs=frozenset(_strings(raw.get("verbs"), f"{path}.verbs")),
        resources=resources,
        namespaces=frozenset(namespaces),
        non_resource_urls=urls,
        omit_stages=omit_stages,
        omit_managed_fields=_bool(raw.get("omitManagedFields"), f"{path}.omitManagedFields"),
    )


def _group_resources(raw: Any, path: str) -> GroupResources:
    if not isinstance(raw, dict):
        raise _Invalid(fe.error_string(fe.invalid(path, raw, "must be an object")))
    _unknown(raw, _GROUP_RESOURCE_FIELDS, path)
    group = raw.get("group") or ""
    if not isinstance(group, str):
        raise _Invalid(fe.error_string(fe.invalid(f"{path}.group", group, "must be a string")))
    if group and group != "*" and (len(group) > 253 or not _DNS_SUBDOMAIN.match(group)):
        raise _Invalid(
            fe.error_string(
                fe.invalid(
                    f"{path}.group",
                    group,
                    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                    "characters, '-' or '.', and must start and end with an alphanumeric "
                    "character",
                )
            )
        )
    resources = _strings(raw.get("resources"), f"{path}.resources")
    names = _strings(raw.get("resourceNames"), f"{path}.resourceNames")
    if names and not resources:
        raise _Invalid(
            fe.error_string(
                fe.invalid(
                    f"{path}.resourceNames",
                    list(names),
                    "using resourceNames requires at least one resource",
                )
            )
        )
    return GroupResources(group, resources, names)


def levels_at_least(level: str, floor: str) -> bool:
    """Whether ``level`` records at least what ``floor`` records."""
    return LEVEL_ORDER.get(level, 0) >= LEVEL_ORDER[floor]
