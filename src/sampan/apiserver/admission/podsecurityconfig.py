"""The PodSecurity admission configuration: defaults and exemptions.

``load_admission_config(path)`` reads kube-apiserver's ``--admission-control-config-file``
format (RKE2's ``--pod-security-admission-config-file``): an ``AdmissionConfiguration``
(``apiserver.config.k8s.io/v1``, or the older ``v1alpha1`` / ``apiserver.k8s.io/v1alpha1``)
whose ``PodSecurity`` plugin entry carries a ``PodSecurityConfiguration``
(``pod-security.admission.config.k8s.io/v1``, ``v1beta1`` or ``v1alpha1``) inline under
``configuration`` or in the file named by ``path`` (relative to the first file). Entries of
other plugins are accepted and ignored (Sampan's other plugins take no configuration file).

``PodSecurityConfig``: the level and version each mode (enforce, audit, warn) gets in a
namespace without that mode's label (default ``privileged``/``latest``, upstream's), and the
exemptions: requests by these user names, pods of these runtime classes, and these namespaces
are never checked.

Every problem is a ``PodSecurityConfigError`` of one line naming the file and the field; the
API server does not start with it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sampan.api import fielderrors as fe

__all__ = [
    "DEFAULT_CONFIG",
    "PodSecurityConfig",
    "PodSecurityConfigError",
    "load_admission_config",
    "parse_pod_security_configuration",
]

ADMISSION_API_VERSIONS = (
    "apiserver.config.k8s.io/v1",
    "apiserver.config.k8s.io/v1alpha1",
    "apiserver.k8s.io/v1alpha1",
)
PSA_API_VERSIONS = (
    "pod-security.admission.config.k8s.io/v1",
    "pod-security.admission.config.k8s.io/v1beta1",
    "pod-security.admission.config.k8s.io/v1alpha1",
)
PLUGIN_NAME = "PodSecurity"
LEVELS = ("privileged", "baseline", "restricted")
MODES = ("enforce", "audit", "warn")
LATEST = "latest"
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_VERSION = re.compile(r"^v1\.(0|[1-9][0-9]*)$")


class PodSecurityConfigError(ValueError):
    """An unusable admission configuration file (one line: file, field, reason)."""


@dataclass(frozen=True)
class PodSecurityConfig:
    defaults: dict[str, tuple[str, str]] = field(
        default_factory=lambda: {mode: ("privileged", LATEST) for mode in MODES}
    )
    """mode -> (level, version) for namespaces without that mode's label."""
    exempt_usernames: frozenset[str] = frozenset()
    exempt_namespaces: frozenset[str] = frozenset()
    exempt_runtime_classes: frozenset[str] = frozenset()


DEFAULT_CONFIG = PodSecurityConfig()


class _Invalid(Exception):
    pass


def load_admission_config(path: Path) -> PodSecurityConfig:
    """The PodSecurity configuration an AdmissionConfiguration file gives (the defaults when
    it has no PodSecurity entry)."""
    data = _read(path, "admission configuration")
    try:
        return _admission(data, path)
    except _Invalid as exc:
        raise PodSecurityConfigError(f"{path}: {exc}") from None


def _read(path: Path, what: str) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PodSecurityConfigError(f"{path}: cannot read the {what}: {exc.strerror}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise PodSecurityConfigError(f"{path}:{where}: malformed {what}: {problem}") from None


def _type_meta(data: Any, kind: str, versions: tuple[str, ...], prefix: str) -> None:
    if not isinstance(data, dict):
        raise _Invalid(f"{prefix or 'the file'}: must be an object (a {kind})")
    api_version, got_kind = data.get("apiVersion"), data.get("kind")
    where = f"{prefix}." if prefix else ""
    if not api_version:
        raise _Invalid(fe.error_string(fe.required(f"{where}apiVersion")))
    if got_kind != kind or api_version not in versions:
        raise _Invalid(
            f'{where}kind: no kind "{got_kind}" is registered for version "{api_version}" '
            f"(expected kind {kind}, apiVersion one of {', '.join(versions)})"
        )


def _admission(data: Any, path: Path) -> PodSecurityConfig:
    _type_meta(data, "AdmissionConfiguration", ADMISSION_API_VERSIONS, "")
    _unknown(data, {"apiVersion", "kind", "plugins"}, "")
    plugins = data.get("plugins") or []
    if not isinstance(plugins, list):
        raise _Invalid(fe.error_string(fe.invalid("plugins", plugins, "must be a list")))
    found: PodSecurityConfig | None = None
    for index, entry in enumerate(plugins):
        where = f"plugins[{index}]"
        if not isinstance(entry, dict):
            raise _Invalid(fe.error_string(fe.invalid(where, entry, "must be an object")))
        _unknown(entry, {"name", "path", "configuration"}, where)
        if entry.get("name") != PLUGIN_NAME:
            continue
        if found is not None:
            raise _Invalid(fe.error_string(fe.duplicate(f"{where}.name", PLUGIN_NAME)))
        configuration = entry.get("configuration")
        if configuration is None and entry.get("path"):
            referenced = Path(str(entry["path"]))
            if not referenced.is_absolute():
                referenced = path.parent / referenced
            found = _pod_security_file(referenced)
            continue
        if configuration is None:
            found = DEFAULT_CONFIG
            continue
        found = _pod_security(configuration, f"{where}.configuration")
    return found or DEFAULT_CONFIG


def _pod_security_file(path: Path) -> PodSecurityConfig:
    data = _read(path, "PodSecurity configuration")
    try:
        return _pod_security(data, "")
    except _Invalid as exc:
        raise PodSecurityConfigError(f"{path}: {exc}") from None


def parse_pod_security_configuration(data: Any) -> PodSecurityConfig:
    """A ``PodSecurityConfiguration`` object (decoded) -> ``PodSecurityConfig``."""
    try:
        return _pod_security(data, "")
    except _Invalid as exc:
        raise PodSecurityConfigError(str(exc)) from None


def _unknown(obj: dict[str, Any], allowed: set[str], path: str) -> None:
    for key in obj:
        if key not in allowed:
            shown = f"{path}.{key}" if path else str(key)
            raise _Invalid(f'strict decoding error: unknown field "{shown}"')


def _pod_security(data: Any, prefix: str) -> PodSecurityConfig:
    _type_meta(data, "PodSecurityConfiguration", PSA_API_VERSIONS, prefix)
    where = f"{prefix}." if prefix else ""
    _unknown(data, {"apiVersion", "kind", "defaults", "exemptions"}, prefix)
    defaults_raw = data.get("defaults") or {}
    if not isinstance(defaults_raw, dict):
        raise _Invalid(fe.error_string(fe.invalid(f"{where}defaults", defaults_raw, "")))
    allowed = {m for mode in MODES for m in (mode, f"{mode}-version")}
    _unknown(defaults_raw, allowed, f"{where}defaults")
    defaults: dict[str, tuple[str, str]] = {}
    for mode in MODES:
        level = defaults_raw.get(mode) or "privileged"
        version = defaults_raw.get(f"{mode}-version") or LATEST
        if level not in LEVELS:
            raise _Invalid(
                fe.error_string(fe.not_supported(f"{where}defaults.{mode}", level, LEVELS))
            )
        if not isinstance(version, str) or not (version == LATEST or _VERSION.match(version)):
            raise _Invalid(
                fe.error_string(
                    fe.invalid(
                        f"{where}defaults.{mode}-version", version, 'must be "latest" or "v1.x"'
                    )
                )
            )
        defaults[mode] = (level, version)
    exemptions = data.get("exemptions") or {}
    if not isinstance(exemptions, dict):
        raise _Invalid(fe.error_string(fe.invalid(f"{where}exemptions", exemptions, "")))
    _unknown(exemptions, {"usernames", "namespaces", "runtimeClasses"}, f"{where}exemptions")
    usernames = _names(exemptions, "usernames", where, None)
    namespaces = _names(exemptions, "namespaces", where, _DNS_LABEL)
    runtime_classes = _names(exemptions, "runtimeClasses", where, _DNS_SUBDOMAIN)
    return PodSecurityConfig(
        defaults=defaults,
        exempt_usernames=frozenset(usernames),
        exempt_namespaces=frozenset(namespaces),
        exempt_runtime_classes=frozenset(runtime_classes),
    )


def _names(exemptions: dict[str, Any], key: str, where: str, pattern: Any) -> list[str]:
    path = f"{where}exemptions.{key}"
    values = exemptions.get(key) or []
    if not isinstance(values, list):
        raise _Invalid(fe.error_string(fe.invalid(path, values, "must be a list")))
    seen: set[str] = set()
    for index, value in enumerate(values):
        item = f"{path}[{index}]"
        if not isinstance(value, str) or not value:
            raise _Invalid(fe.error_string(fe.invalid(item, value, "must be a non-empty string")))
        if pattern is not None and not pattern.match(value):
            raise _Invalid(
                fe.error_string(
                    fe.invalid(item, value, "must be a valid name (lower case alphanumerics, '-')")
                )
            )
        if value in seen:
            raise _Invalid(fe.error_string(fe.duplicate(item, value)))
        seen.add(value)
    return values
