"""Container environment: env, envFrom, valueFrom, $(VAR) expansion, service links; and the
downward API values (fieldRef, resourceFieldRef) shared with downwardAPI volumes.

Pure functions over the pod, the container and a ``Sources`` lookup (ConfigMaps, Secrets,
Services from the kubelet's informers). A missing non-optional source raises ``ConfigError``
whose message is upstream's; the caller reports it as ``CreateContainerConfigError``.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from decimal import ROUND_CEILING, Decimal
from typing import Any, Protocol

from sampan.kubelet.podutil import quantity

__all__ = [
    "ConfigError",
    "Sources",
    "build_env",
    "expand",
    "expand_args",
    "field_ref_value",
    "resource_field_value",
    "service_env",
]


class ConfigError(Exception):
    """The container's configuration references something missing (CreateContainerConfigError)."""


class Sources(Protocol):
    def configmap(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    def secret(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    def services(self, namespace: str) -> list[dict[str, Any]]: ...


def expand(text: str, env: Mapping[str, str]) -> str:
    """Upstream's $(VAR) expansion: ``$(NAME)`` -> value if defined (else left as is),
    ``$$`` -> ``$``; anything else is copied."""
    out: list[str] = []
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "$" and i + 1 < n:
            nxt = text[i + 1]
            if nxt == "$":
                out.append("$")
                i += 2
                continue
            if nxt == "(":
                end = text.find(")", i + 2)
                if end != -1:
                    name = text[i + 2 : end]
                    if name in env:
                        out.append(env[name])
                    else:
                        out.append(text[i : end + 1])
                    i = end + 1
                    continue
        out.append(ch)
        i += 1
    return "".join(out)


def expand_args(items: list[str] | None, env: Mapping[str, str]) -> list[str]:
    return [expand(item, env) for item in items or []]


def field_ref_value(pod: Mapping[str, Any], path: str) -> str:
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    if path == "metadata.name":
        return str(meta.get("name", ""))
    if path == "metadata.namespace":
        return str(meta.get("namespace", ""))
    if path == "metadata.uid":
        return str(meta.get("uid", ""))
    if path == "spec.nodeName":
        return str(spec.get("nodeName", ""))
    if path == "spec.serviceAccountName":
        return str(spec.get("serviceAccountName", ""))
    if path == "status.podIP":
        return str(status.get("podIP", ""))
    if path == "status.podIPs":
        return ",".join(ip.get("ip", "") for ip in status.get("podIPs") or [])
    if path in ("status.hostIP",):
        return str(status.get("hostIP", ""))
    if path == "status.hostIPs":
        return ",".join(ip.get("ip", "") for ip in status.get("hostIPs") or [])
    for prefix, source in (("metadata.labels", "labels"), ("metadata.annotations", "annotations")):
        if path == prefix:
            values = meta.get(source) or {}
            return "\n".join(f'{k}="{_escape(values[k])}"' for k in sorted(values))
        if path.startswith(prefix + "['") and path.endswith("']"):
            return str((meta.get(source) or {}).get(path[len(prefix) + 2 : -2], ""))
    raise ConfigError(f'unsupported fieldRef "{path}"')


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def resource_field_value(
    pod: Mapping[str, Any],
    container_name: str,
    resource: str,
    divisor: Any,
    allocatable: Mapping[str, Decimal],
) -> str:
    spec = pod.get("spec") or {}
    candidates = [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]
    container = next(
        (c for c in candidates if c.get("name") == container_name),
        None,
    )
    if container is None:
        raise ConfigError(f"resourceFieldRef: no container {container_name!r}")
    kind, _, name = resource.partition(".")
    resources = container.get("resources") or {}
    value = quantity((resources.get(kind) or {}).get(name))
    if value is None:
        # Upstream: an unset limit reads as the node's allocatable; an unset request as 0.
        value = allocatable.get(name, Decimal(0)) if kind == "limits" else Decimal(0)
    div = quantity(divisor) or Decimal(1)
    if div == 0:
        div = Decimal(1)
    result = (value / div).to_integral_value(rounding=ROUND_CEILING)
    return str(int(result))


def service_env(services: list[dict[str, Any]]) -> dict[str, str]:
    """Docker-link style variables for each Service with a ClusterIP (enableServiceLinks)."""
    env: dict[str, str] = {}
    for svc in sorted(services, key=lambda s: (s.get("metadata") or {}).get("name", "")):
        spec = svc.get("spec") or {}
        ip = spec.get("clusterIP")
        if not ip or ip == "None":
            continue
        name = (svc.get("metadata") or {}).get("name", "").upper().replace("-", "_")
        ports = spec.get("ports") or []
        if not ports:
            continue
        env[f"{name}_SERVICE_HOST"] = ip
        env[f"{name}_SERVICE_PORT"] = str(ports[0].get("port"))
        for port in ports:
            if port.get("name"):
                pname = port["name"].upper().replace("-", "_")
                env[f"{name}_SERVICE_PORT_{pname}"] = str(port.get("port"))
        first = ports[0]
        proto = (first.get("protocol") or "TCP").lower()
        env[f"{name}_PORT"] = f"{proto}://{ip}:{first.get('port')}"
        for port in ports:
            proto_u = (port.get("protocol") or "TCP").upper()
            prefix = f"{name}_PORT_{port.get('port')}_{proto_u}"
            env[prefix] = f"{proto_u.lower()}://{ip}:{port.get('port')}"
            env[f"{prefix}_PROTO"] = proto_u.lower()
            env[f"{prefix}_PORT"] = str(port.get("port"))
            env[f"{prefix}_ADDR"] = ip
    return env


def _decoded(secret: Mapping[str, Any], key: str) -> str | None:
    data = secret.get("data") or {}
    if key in data:
        return base64.b64decode(data[key]).decode(errors="replace")
    string_data = secret.get("stringData") or {}
    return string_data.get(key)


def build_env(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    sources: Sources,
    allocatable: Mapping[str, Decimal],
    *,
    master_services: list[dict[str, Any]] | None = None,
) -> list[tuple[str, str]]:
    """The container's environment, in upstream's order and with its precedence."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    namespace = meta.get("namespace", "default")
    env: dict[str, str] = {}
    # Service links first (lowest precedence); the "kubernetes" service of default always.
    if spec.get("enableServiceLinks", True):
        env.update(service_env(sources.services(namespace)))
    if master_services:
        env.update(service_env(master_services))
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix") or ""
        if "configMapRef" in source:
            ref = source["configMapRef"] or {}
            cm = sources.configmap(namespace, ref.get("name", ""))
            if cm is None:
                if ref.get("optional"):
                    continue
                raise ConfigError(f'configmap "{ref.get("name", "")}" not found')
            for key, value in (cm.get("data") or {}).items():
                env[prefix + key] = value
        elif "secretRef" in source:
            ref = source["secretRef"] or {}
            secret = sources.secret(namespace, ref.get("name", ""))
            if secret is None:
                if ref.get("optional"):
                    continue
                raise ConfigError(f'secret "{ref.get("name", "")}" not found')
            for key in secret.get("data") or {}:
                env[prefix + key] = _decoded(secret, key) or ""
    for var in container.get("env") or []:
        name = var.get("name", "")
        if "valueFrom" not in var or var.get("valueFrom") is None:
            env[name] = expand(var.get("value") or "", env)
            continue
        value_from = var["valueFrom"]
        if "fieldRef" in value_from:
            env[name] = field_ref_value(pod, (value_from["fieldRef"] or {}).get("fieldPath", ""))
        elif "resourceFieldRef" in value_from:
            ref = value_from["resourceFieldRef"] or {}
            env[name] = resource_field_value(
                pod,
                ref.get("containerName") or container.get("name", ""),
                ref.get("resource", ""),
                ref.get("divisor"),
                allocatable,
            )
        elif "configMapKeyRef" in value_from:
            ref = value_from["configMapKeyRef"] or {}
            cm = sources.configmap(namespace, ref.get("name", ""))
            if cm is None:
                if ref.get("optional"):
                    continue
                raise ConfigError(f'configmap "{ref.get("name", "")}" not found')
            data = cm.get("data") or {}
            if ref.get("key") not in data:
                if ref.get("optional"):
                    continue
                raise ConfigError(
                    f"couldn't find key {ref.get('key')} in ConfigMap {namespace}/{ref.get('name')}"
                )
            env[name] = data[ref["key"]]
        elif "secretKeyRef" in value_from:
            ref = value_from["secretKeyRef"] or {}
            secret = sources.secret(namespace, ref.get("name", ""))
            if secret is None:
                if ref.get("optional"):
                    continue
                raise ConfigError(f'secret "{ref.get("name", "")}" not found')
            value = _decoded(secret, ref.get("key", ""))
            if value is None:
                if ref.get("optional"):
                    continue
                raise ConfigError(
                    f"couldn't find key {ref.get('key')} in Secret {namespace}/{ref.get('name')}"
                )
            env[name] = value
    return list(env.items())
