"""Validation of ``apiregistration.k8s.io/v1`` APIService objects, worded as kube-aggregator
1.32 words it.

Rules: the name must be ``<spec.version>.<spec.group>`` (and a valid path segment); only
``v1`` may have an empty group; the group is a DNS-1123 subdomain and the version a DNS-1035
label; ``groupPriorityMinimum`` in (0, 20000] and ``versionPriority`` in (0, 1000]; a local
APIService (no ``spec.service``) has neither ``caBundle`` nor ``insecureSkipTLSVerify``; a
service reference names a namespace, a name and a valid port; ``insecureSkipTLSVerify`` and
``caBundle`` exclude each other; a status condition's status is True, False or Unknown.
``spec.service.port`` defaults to 443 (``default_apiservice``).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from sampan.api import fielderrors as fe
from sampan.api.errors import Cause
from sampan.api.names import (
    is_dns1035_label,
    is_dns1123_subdomain,
    is_valid_path_segment_name,
)

__all__ = [
    "DEFAULT_SERVICE_PORT",
    "apiservice_name",
    "default_apiservice",
    "validate_apiservice",
    "validate_apiservice_status",
]

DEFAULT_SERVICE_PORT = 443
MAX_GROUP_PRIORITY = 20000
MAX_VERSION_PRIORITY = 1000


def apiservice_name(group: str, version: str) -> str:
    """The one name an APIService for ``group``/``version`` may have (``v1.`` for core)."""
    return f"{version}.{group}"


def default_apiservice(obj: dict[str, Any]) -> None:
    """Upstream's defaulting: ``spec.service.port`` 443 when a service is named."""
    spec = obj.get("spec")
    if isinstance(spec, dict) and isinstance(spec.get("service"), dict):
        spec["service"].setdefault("port", DEFAULT_SERVICE_PORT)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _ca_bundle_size(value: Any) -> int:
    if not isinstance(value, str):
        return 0
    try:
        return len(base64.b64decode(value, validate=True))
    except (binascii.Error, ValueError):
        return len(value)


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def validate_apiservice(info: Any, obj: dict[str, Any]) -> list[Cause]:
    causes: list[Cause] = []
    meta = _mapping(obj.get("metadata"))
    spec = _mapping(obj.get("spec"))
    group = str(spec.get("group") or "")
    version = str(spec.get("version") or "")
    name = str(meta.get("name") or "")
    required_name = apiservice_name(group, version)
    # A name that is not a path segment is reported by the generic name check alone.
    if name and not is_valid_path_segment_name(name) and name != required_name:
        causes.append(
            fe.invalid(
                "metadata.name", name, f'must be `spec.version+"."+spec.group`: "{required_name}"'
            )
        )
    if not group and version != "v1":
        causes.append(
            fe.required(
                "spec.group", "only v1 may have an empty group and it better be legacy kube"
            )
        )
    if group:
        causes.extend(fe.invalid("spec.group", group, m) for m in is_dns1123_subdomain(group))
    causes.extend(fe.invalid("spec.version", version, m) for m in is_dns1035_label(version))
    group_priority = _int(spec.get("groupPriorityMinimum"))
    if not 0 < group_priority <= MAX_GROUP_PRIORITY:
        causes.append(
            fe.invalid(
                "spec.groupPriorityMinimum",
                group_priority,
                "must be positive and less than 20000",
            )
        )
    version_priority = _int(spec.get("versionPriority"))
    if not 0 < version_priority <= MAX_VERSION_PRIORITY:
        causes.append(
            fe.invalid(
                "spec.versionPriority", version_priority, "must be positive and less than 1000"
            )
        )
    insecure = spec.get("insecureSkipTLSVerify") is True
    ca_size = _ca_bundle_size(spec.get("caBundle"))
    service = spec.get("service")
    if not isinstance(service, dict):
        if ca_size:
            causes.append(
                fe.invalid(
                    "spec.caBundle", f"{ca_size} bytes", "local APIServices may not have a caBundle"
                )
            )
        if insecure:
            causes.append(
                fe.invalid(
                    "spec.insecureSkipTLSVerify",
                    True,
                    "local APIServices may not have insecureSkipTLSVerify",
                )
            )
        return causes
    if not service.get("namespace"):
        causes.append(fe.required("spec.service.namespace"))
    if not service.get("name"):
        causes.append(fe.required("spec.service.name"))
    port = _int(service.get("port", DEFAULT_SERVICE_PORT))
    if not 1 <= port <= 65535:
        causes.append(
            fe.invalid(
                "spec.service.port",
                port,
                "port is not valid: must be between 1 and 65535, inclusive",
            )
        )
    if insecure and ca_size:
        causes.append(
            fe.invalid("spec.insecureSkipTLSVerify", True, "may not be true if caBundle is present")
        )
    return causes


def validate_apiservice_status(info: Any, new: dict[str, Any], old: dict[str, Any]) -> list[Cause]:
    """Each condition's status is True, False or Unknown."""
    causes: list[Cause] = []
    status = _mapping(new.get("status"))
    conditions = status.get("conditions")
    if not isinstance(conditions, list):
        conditions = []
    for i, condition in enumerate(conditions):
        value = condition.get("status") if isinstance(condition, dict) else None
        if value not in ("True", "False", "Unknown"):
            causes.append(
                fe.not_supported(
                    f"status.conditions[{i}].status", value, ["True", "False", "Unknown"]
                )
            )
    return causes
