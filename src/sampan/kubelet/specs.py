"""CRI request builders: a Pod dict -> ``PodSandboxConfig``; a container -> ``ContainerConfig``.

Pure functions (no I/O but the ``realpath`` of a ``subPath``) so that every rule is testable
on its own: hostname, DNS config by policy, port mappings, namespaces (PID per container unless
shareProcessNamespace), sysctls, cgroup parent, the labels and annotations the kubelet later
reads back to adopt what a previous run created (pod uid, container name, restart count,
container hash), resources (CPU shares/quota, memory limit, OOM score) and the security
context.

Security-relevant fields (host namespaces, privileged, capabilities, run-as user/group,
runAsNonRoot, fsGroup, supplemental groups, sysctls...) are read strictly through
``sampan.api.strictfields``, as PodSecurity admission reads them: a value of the wrong JSON
type (``"privileged": "true"``, ``"hostPID": 1``) raises ``FieldTypeError`` and the pod does not
start — it is never granted a privilege by truthiness nor silently denied a restriction.
``check_pod`` runs every such read up front; the builders repeat them on the fields they use.
``seccompProfile`` (container over pod) is passed to the runtime: RuntimeDefault, Localhost
(``<kubelet-dir>/seccomp/<localhostProfile>``), or Unconfined when unset, as upstream without
``--seccomp-default``; a ``subPath`` may not leave its volume. Both raise ``SpecError``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sampan.api.strictfields import (
    FieldTypeError,
    get_bool,
    get_int,
    get_int_list,
    get_list,
    get_obj,
    get_str,
    get_str_list,
    join_path,
)
from sampan.kubelet.podutil import (
    CFS_PERIOD_US,
    cpu_quota_us,
    cpu_shares,
    milli_cpu,
    quantity,
)
from sampan.kubelet.runtime import pb

__all__ = [
    "ANN_CONTAINER_HASH",
    "ANN_GRACE_PERIOD",
    "ANN_PRESTOP",
    "ANN_RESTART_COUNT",
    "ANN_TERMINATION_FILE",
    "ANN_TERMINATION_POLICY",
    "LABEL_CONTAINER_NAME",
    "LABEL_POD_NAME",
    "LABEL_POD_NAMESPACE",
    "LABEL_POD_UID",
    "ContainerSecurity",
    "DNSSettings",
    "FieldTypeError",
    "PodSecurity",
    "SpecError",
    "SubPathError",
    "check_pod",
    "container_config",
    "container_hash",
    "container_security",
    "dns_config",
    "parse_resolv_conf",
    "pod_hostname",
    "pod_security",
    "sandbox_config",
    "volume_mounts",
]

LABEL_POD_NAME = "io.kubernetes.pod.name"
LABEL_POD_NAMESPACE = "io.kubernetes.pod.namespace"
LABEL_POD_UID = "io.kubernetes.pod.uid"
LABEL_CONTAINER_NAME = "io.kubernetes.container.name"
ANN_RESTART_COUNT = "io.kubernetes.container.restartCount"
ANN_CONTAINER_HASH = "io.kubernetes.container.hash"
ANN_GRACE_PERIOD = "io.kubernetes.pod.terminationGracePeriod"
ANN_PRESTOP = "io.kubernetes.container.preStopHandler"
ANN_TERMINATION_FILE = "sampan.io/termination-message-file"
ANN_TERMINATION_POLICY = "io.kubernetes.container.terminationMessagePolicy"
MAX_HOSTNAME_CHARS = 63
MAX_DNS_SEARCH = 32
DEFAULT_NDOTS = 5
DEFAULT_TERMINATION_MESSAGE_PATH = "/dev/termination-log"

_MASKED_PATHS = (
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
)
_READONLY_PATHS = (
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
)
_PROTOCOLS = {"TCP": pb.Protocol.TCP, "UDP": pb.Protocol.UDP, "SCTP": pb.Protocol.SCTP}
_PROPAGATION = {
    "HostToContainer": pb.MountPropagation.PROPAGATION_HOST_TO_CONTAINER,
    "Bidirectional": pb.MountPropagation.PROPAGATION_BIDIRECTIONAL,
}


@dataclass(frozen=True)
class DNSSettings:
    cluster_dns: str
    cluster_domain: str
    host_servers: tuple[str, ...]
    host_searches: tuple[str, ...]
    host_options: tuple[str, ...]


class SpecError(ValueError):
    """A container that cannot be configured as its spec says (CreateContainerConfigError)."""


SECCOMP_UNCONFINED = "Unconfined"
SECCOMP_RUNTIME_DEFAULT = "RuntimeDefault"
SECCOMP_LOCALHOST = "Localhost"


@dataclass(frozen=True)
class PodSecurity:
    """The pod-level security settings, strictly typed (see the module docstring)."""

    host_network: bool
    host_pid: bool
    host_ipc: bool
    share_process_namespace: bool
    run_as_user: int | None
    run_as_group: int | None
    run_as_non_root: bool | None
    fs_group: int | None
    supplemental_groups: tuple[int, ...]
    sysctls: tuple[tuple[str, str], ...]

    @property
    def groups(self) -> list[int]:
        """CRI supplemental groups: fsGroup first, then supplementalGroups (as upstream)."""
        extra = [self.fs_group] if self.fs_group is not None else []
        return [*extra, *self.supplemental_groups]


@dataclass(frozen=True)
class ContainerSecurity:
    """One container's effective security settings (container over pod), strictly typed."""

    privileged: bool
    allow_privilege_escalation: bool | None
    read_only_root_filesystem: bool
    run_as_user: int | None
    run_as_group: int | None
    run_as_non_root: bool | None
    capabilities_add: tuple[str, ...]
    capabilities_drop: tuple[str, ...]
    proc_mount: str | None
    seccomp_type: str | None
    seccomp_localhost_profile: str | None


def _spec_of(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    return get_obj(pod, "spec")


def pod_security(pod: Mapping[str, Any]) -> PodSecurity:
    """Raises ``FieldTypeError`` for a field of the wrong type."""
    spec = _spec_of(pod)
    sc = get_obj(spec, "securityContext", "spec")
    sc_path = "spec.securityContext"
    sysctls: list[tuple[str, str]] = []
    for index, item in enumerate(get_list(sc, "sysctls", sc_path)):
        item_path = join_path(join_path(sc_path, "sysctls"), index)
        if not isinstance(item, dict):
            raise FieldTypeError(item_path, item, "an object")
        name = get_str(item, "name", item_path) or ""
        sysctls.append((name, get_str(item, "value", item_path) or ""))
    get_bool(spec, "hostUsers", "spec")  # user namespaces are not supported; typed all the same
    return PodSecurity(
        host_network=bool(get_bool(spec, "hostNetwork", "spec")),
        host_pid=bool(get_bool(spec, "hostPID", "spec")),
        host_ipc=bool(get_bool(spec, "hostIPC", "spec")),
        share_process_namespace=bool(get_bool(spec, "shareProcessNamespace", "spec")),
        run_as_user=get_int(sc, "runAsUser", sc_path),
        run_as_group=get_int(sc, "runAsGroup", sc_path),
        run_as_non_root=get_bool(sc, "runAsNonRoot", sc_path),
        fs_group=get_int(sc, "fsGroup", sc_path),
        supplemental_groups=tuple(get_int_list(sc, "supplementalGroups", sc_path)),
        sysctls=tuple(sysctls),
    )


_CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")


def _container_path(pod: Mapping[str, Any], container: Mapping[str, Any]) -> str:
    spec = _spec_of(pod)
    for key in _CONTAINER_LISTS:
        items = spec.get(key)
        if isinstance(items, list):
            for index, item in enumerate(items):
                if item is container:
                    return f"spec.{key}[{index}]"
    return f"spec.containers[{container.get('name', '')}]"


def container_security(
    pod: Mapping[str, Any], container: Mapping[str, Any], path: str | None = None
) -> ContainerSecurity:
    """The container's settings with the pod's as fallback; raises ``FieldTypeError``."""
    path = path or _container_path(pod, container)
    pod_sc = pod_security(pod)
    sc_path = join_path(path, "securityContext")
    sc = get_obj(container, "securityContext", path)
    caps_path = join_path(sc_path, "capabilities")
    caps = get_obj(sc, "capabilities", sc_path)
    run_as_user = get_int(sc, "runAsUser", sc_path)
    run_as_group = get_int(sc, "runAsGroup", sc_path)
    run_as_non_root = get_bool(sc, "runAsNonRoot", sc_path)
    for key in ("seLinuxOptions", "appArmorProfile", "windowsOptions"):
        get_obj(sc, key, sc_path)
    seccomp = get_obj(sc, "seccompProfile", sc_path)
    seccomp_path = join_path(sc_path, "seccompProfile")
    if not seccomp:
        pod_context = get_obj(_spec_of(pod), "securityContext", "spec")
        seccomp_path = "spec.securityContext.seccompProfile"
        seccomp = get_obj(pod_context, "seccompProfile", "spec.securityContext")
    return ContainerSecurity(
        privileged=bool(get_bool(sc, "privileged", sc_path)),
        allow_privilege_escalation=get_bool(sc, "allowPrivilegeEscalation", sc_path),
        read_only_root_filesystem=bool(get_bool(sc, "readOnlyRootFilesystem", sc_path)),
        run_as_user=run_as_user if run_as_user is not None else pod_sc.run_as_user,
        run_as_group=run_as_group if run_as_group is not None else pod_sc.run_as_group,
        run_as_non_root=run_as_non_root if run_as_non_root is not None else pod_sc.run_as_non_root,
        capabilities_add=tuple(get_str_list(caps, "add", caps_path)),
        capabilities_drop=tuple(get_str_list(caps, "drop", caps_path)),
        proc_mount=get_str(sc, "procMount", sc_path),
        seccomp_type=get_str(seccomp, "type", seccomp_path),
        seccomp_localhost_profile=get_str(seccomp, "localhostProfile", seccomp_path),
    )


def _seccomp(security: ContainerSecurity, seccomp_root: Path | None) -> pb.SecurityProfile:
    """The CRI seccomp profile: unset is Unconfined (upstream's default without
    ``--seccomp-default``); Localhost profiles live under ``<kubelet-dir>/seccomp``."""
    kind = security.seccomp_type
    if kind in (None, SECCOMP_UNCONFINED):
        return pb.SecurityProfile(profile_type=pb.SecurityProfile.ProfileType.Unconfined)
    if kind == SECCOMP_RUNTIME_DEFAULT:
        return pb.SecurityProfile(profile_type=pb.SecurityProfile.ProfileType.RuntimeDefault)
    if kind == SECCOMP_LOCALHOST:
        name = security.seccomp_localhost_profile or ""
        if not name or name.startswith("/") or ".." in Path(name).parts or seccomp_root is None:
            raise SpecError(f"invalid seccomp Localhost profile {name!r}")
        return pb.SecurityProfile(
            profile_type=pb.SecurityProfile.ProfileType.Localhost,
            localhost_ref=str(seccomp_root / name),
        )
    raise SpecError(f"unsupported seccomp profile type {kind!r}")


def _all_containers(pod: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    spec = _spec_of(pod)
    out: list[tuple[str, Mapping[str, Any]]] = []
    for key in _CONTAINER_LISTS:
        for index, item in enumerate(get_list(spec, key, "spec")):
            item_path = f"spec.{key}[{index}]"
            if not isinstance(item, dict):
                raise FieldTypeError(item_path, item, "an object")
            out.append((item_path, item))
    return out


def check_pod(pod: Mapping[str, Any]) -> None:
    """Read every security-relevant field of ``pod`` strictly: ``FieldTypeError`` on the
    first one of the wrong type (the kubelet then refuses to start the pod)."""
    pod_security(pod)
    spec = _spec_of(pod)
    # Limits the kubelet enforces (and quota scopes count): never ignored for their type.
    get_int(spec, "activeDeadlineSeconds", "spec")
    get_int(spec, "terminationGracePeriodSeconds", "spec")
    for path, container in _all_containers(pod):
        container_security(pod, container, path)
        for index, mount in enumerate(get_list(container, "volumeMounts", path)):
            mount_path = join_path(join_path(path, "volumeMounts"), index)
            if not isinstance(mount, dict):
                raise FieldTypeError(mount_path, mount, "an object")
            get_bool(mount, "readOnly", mount_path)
            get_str(mount, "subPath", mount_path)


def parse_resolv_conf(text: str) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    servers: list[str] = []
    searches: list[str] = []
    options: list[str] = []
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if fields[0] == "nameserver" and len(fields) > 1:
            servers.append(fields[1])
        elif fields[0] in ("search", "domain"):
            searches = fields[1:]
        elif fields[0] == "options":
            options.extend(fields[1:])
    return tuple(servers), tuple(searches), tuple(options)


def pod_hostname(pod: Mapping[str, Any]) -> str:
    spec = pod.get("spec") or {}
    if get_bool(spec, "hostNetwork", "spec"):
        return ""
    name = spec.get("hostname") or (pod.get("metadata") or {}).get("name", "")
    return name[:MAX_HOSTNAME_CHARS].rstrip("-.")


def dns_config(pod: Mapping[str, Any], dns: DNSSettings) -> pb.DNSConfig:
    spec = pod.get("spec") or {}
    policy = spec.get("dnsPolicy") or "ClusterFirst"
    namespace = (pod.get("metadata") or {}).get("namespace", "default")
    if policy == "ClusterFirst" and get_bool(spec, "hostNetwork", "spec"):
        policy = "Default"
    if policy == "ClusterFirstWithHostNet":
        policy = "ClusterFirst"
    servers: list[str] = []
    searches: list[str] = []
    options: list[str] = []
    if policy == "ClusterFirst" and dns.cluster_dns:
        domain = dns.cluster_domain
        servers = [dns.cluster_dns]
        searches = [f"{namespace}.svc.{domain}", f"svc.{domain}", domain, *dns.host_searches]
        options = [f"ndots:{DEFAULT_NDOTS}"]
    elif policy in ("Default", "ClusterFirst"):
        servers = list(dns.host_servers)
        searches = list(dns.host_searches)
        options = list(dns.host_options)
    extra = spec.get("dnsConfig") or {}
    servers.extend(extra.get("nameservers") or [])
    searches.extend(extra.get("searches") or [])
    merged: dict[str, str] = {}
    for opt in options:
        key, _, value = opt.partition(":")
        merged[key] = opt
    for opt in extra.get("options") or []:
        name = opt.get("name", "")
        value = opt.get("value")
        merged[name] = f"{name}:{value}" if value not in (None, "") else name
    deduped: list[str] = []
    for search in searches:
        if search not in deduped:
            deduped.append(search)
    return pb.DNSConfig(
        servers=servers[:3], searches=deduped[:MAX_DNS_SEARCH], options=list(merged.values())
    )


def _namespace_options(settings: PodSecurity, target_id: str = "") -> pb.NamespaceOption:
    """The pod's namespaces; ``target_id`` (an ephemeral container's target) replaces a
    container-private PID namespace with that container's (upstream: mode TARGET)."""
    if settings.host_pid:
        pid = pb.NamespaceMode.NODE
    elif settings.share_process_namespace:
        pid = pb.NamespaceMode.POD
    elif target_id:
        pid = pb.NamespaceMode.TARGET
    else:
        pid = pb.NamespaceMode.CONTAINER
    return pb.NamespaceOption(
        network=pb.NamespaceMode.NODE if settings.host_network else pb.NamespaceMode.POD,
        pid=pid,
        ipc=pb.NamespaceMode.NODE if settings.host_ipc else pb.NamespaceMode.POD,
        target_id=target_id if pid == pb.NamespaceMode.TARGET else "",
    )


def _int64(value: int | None) -> pb.Int64Value | None:
    return pb.Int64Value(value=value) if value is not None else None


def sandbox_config(
    pod: Mapping[str, Any],
    *,
    attempt: int,
    log_directory: Path,
    cgroup_parent: str,
    dns: DNSSettings,
    grace_period_s: int,
) -> pb.PodSandboxConfig:
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    labels = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
    labels.update(
        {
            LABEL_POD_NAME: meta.get("name", ""),
            LABEL_POD_NAMESPACE: meta.get("namespace", ""),
            LABEL_POD_UID: meta.get("uid", ""),
        }
    )
    annotations = {str(k): str(v) for k, v in (meta.get("annotations") or {}).items()}
    annotations[ANN_GRACE_PERIOD] = str(grace_period_s)
    ports = []
    for container in spec.get("containers") or []:
        for port in container.get("ports") or []:
            if not port.get("hostPort"):
                continue
            ports.append(
                pb.PortMapping(
                    protocol=_PROTOCOLS.get(port.get("protocol") or "TCP", pb.Protocol.TCP),
                    container_port=int(port.get("containerPort") or 0),
                    host_port=int(port["hostPort"]),
                    host_ip=port.get("hostIP") or "",
                )
            )
    settings = pod_security(pod)
    privileged = any(
        container_security(pod, c, path).privileged for path, c in _all_containers(pod)
    )
    sysctls = dict(settings.sysctls)
    return pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(
            name=meta.get("name", ""),
            uid=meta.get("uid", ""),
            namespace=meta.get("namespace", ""),
            attempt=attempt,
        ),
        hostname=pod_hostname(pod),
        log_directory=str(log_directory),
        dns_config=dns_config(pod, dns),
        port_mappings=ports,
        labels=labels,
        annotations=annotations,
        linux=pb.LinuxPodSandboxConfig(
            cgroup_parent=cgroup_parent,
            sysctls=sysctls,
            security_context=pb.LinuxSandboxSecurityContext(
                namespace_options=_namespace_options(settings),
                run_as_user=_int64(settings.run_as_user),
                run_as_group=_int64(settings.run_as_group),
                supplemental_groups=settings.groups,
                privileged=privileged,
            ),
        ),
    )


def container_hash(container: Mapping[str, Any]) -> str:
    """A digest of the container's spec: a change (a new image) means a restart."""
    text = json.dumps(container, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def oom_score_adj(qos: str, memory_request_bytes: int, memory_capacity_bytes: int) -> int:
    if qos == "Guaranteed":
        return -997
    if qos == "BestEffort":
        return 1000
    if memory_capacity_bytes <= 0:
        return 999
    score = 1000 - (1000 * memory_request_bytes) // memory_capacity_bytes
    return max(2, min(999, score))


def container_config(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    *,
    attempt: int,
    env: Sequence[tuple[str, str]],
    command: Sequence[str],
    args: Sequence[str],
    mounts: Sequence[pb.Mount],
    qos: str,
    memory_capacity_bytes: int,
    termination_file: str,
    image: str,
    grace_period_s: int,
    seccomp_root: Path | None = None,
    target_id: str = "",
) -> pb.ContainerConfig:
    meta = pod.get("metadata") or {}
    name = container.get("name", "")
    resources = container.get("resources") or {}
    requests = resources.get("requests") or {}
    limits = resources.get("limits") or {}
    cpu_request = milli_cpu(requests.get("cpu")) or milli_cpu(limits.get("cpu"))
    cpu_limit = milli_cpu(limits.get("cpu"))
    mem_limit = quantity(limits.get("memory"))
    mem_request = quantity(requests.get("memory")) or mem_limit
    settings = pod_security(pod)
    security = container_security(pod, container)
    privileged = security.privileged
    seccomp = _seccomp(security, seccomp_root)
    annotations = {
        ANN_RESTART_COUNT: str(attempt),
        ANN_CONTAINER_HASH: container_hash(container),
        ANN_GRACE_PERIOD: str(grace_period_s),
        ANN_TERMINATION_FILE: termination_file,
        ANN_TERMINATION_POLICY: container.get("terminationMessagePolicy") or "File",
    }
    pre_stop = (container.get("lifecycle") or {}).get("preStop")
    if pre_stop:
        annotations[ANN_PRESTOP] = json.dumps(pre_stop, sort_keys=True)
    return pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name=name, attempt=attempt),
        image=pb.ImageSpec(image=image),
        command=list(command),
        args=list(args),
        working_dir=container.get("workingDir") or "",
        envs=[pb.KeyValue(key=k, value=v) for k, v in env],
        mounts=list(mounts),
        labels={
            LABEL_CONTAINER_NAME: name,
            LABEL_POD_NAME: meta.get("name", ""),
            LABEL_POD_NAMESPACE: meta.get("namespace", ""),
            LABEL_POD_UID: meta.get("uid", ""),
        },
        annotations=annotations,
        log_path=f"{name}/{attempt}.log",
        stdin=bool(container.get("stdin")),
        stdin_once=bool(container.get("stdinOnce")),
        tty=bool(container.get("tty")),
        linux=pb.LinuxContainerConfig(
            resources=pb.LinuxContainerResources(
                cpu_period=CFS_PERIOD_US if cpu_limit else 0,
                cpu_quota=cpu_quota_us(cpu_limit),
                cpu_shares=cpu_shares(cpu_request),
                memory_limit_in_bytes=int(mem_limit) if mem_limit else 0,
                oom_score_adj=oom_score_adj(
                    qos, int(mem_request) if mem_request else 0, memory_capacity_bytes
                ),
            ),
            security_context=pb.LinuxContainerSecurityContext(
                capabilities=pb.Capability(
                    add_capabilities=list(security.capabilities_add),
                    drop_capabilities=list(security.capabilities_drop),
                ),
                privileged=privileged,
                namespace_options=_namespace_options(settings, target_id),
                run_as_user=_int64(security.run_as_user),
                run_as_group=_int64(security.run_as_group),
                readonly_rootfs=security.read_only_root_filesystem,
                supplemental_groups=settings.groups,
                no_new_privs=security.allow_privilege_escalation is False,
                seccomp=seccomp,
                masked_paths=[] if privileged else list(_MASKED_PATHS),
                readonly_paths=[] if privileged else list(_READONLY_PATHS),
            ),
        ),
    )


class SubPathError(SpecError):
    """A ``subPath`` that would leave its volume."""


def _sub_path(volume_path: str, sub_path: str) -> str:
    """``volume_path/sub_path``, refused when it is absolute, has a ``..`` component, or
    resolves (through symlinks a container may have planted) outside the volume."""
    if sub_path.startswith("/") or ".." in Path(sub_path).parts:
        raise SubPathError(f"subPath {sub_path!r} must be a relative path without '..'")
    joined = Path(volume_path) / sub_path
    base = os.path.realpath(volume_path)
    resolved = os.path.realpath(joined)
    if resolved != base and not resolved.startswith(base.rstrip("/") + "/"):
        raise SubPathError(f"subPath {sub_path!r} resolves outside its volume")
    return resolved


def volume_mounts(
    container: Mapping[str, Any], volumes: Mapping[str, Any]
) -> tuple[list[pb.Mount], list[str]]:
    """CRI mounts for the container's volumeMounts; (mounts, names of missing volumes).
    Raises ``FieldTypeError`` or ``SubPathError`` for a mount that must not be made."""
    mounts: list[pb.Mount] = []
    missing: list[str] = []
    for index, vm in enumerate(get_list(container, "volumeMounts", "container")):
        vm_path = f"volumeMounts[{index}]"
        if not isinstance(vm, dict):
            raise FieldTypeError(vm_path, vm, "an object")
        volume = volumes.get(vm.get("name", ""))
        if volume is None:
            missing.append(vm.get("name", ""))
            continue
        host_path = volume.host_path
        sub_path = get_str(vm, "subPath", vm_path) or ""
        if sub_path:
            host_path = _sub_path(host_path, sub_path)
        mounts.append(
            pb.Mount(
                container_path=vm.get("mountPath", ""),
                host_path=host_path,
                readonly=bool(get_bool(vm, "readOnly", vm_path)) or volume.read_only,
                propagation=_PROPAGATION.get(
                    vm.get("mountPropagation") or "", pb.MountPropagation.PROPAGATION_PRIVATE
                ),
            )
        )
    return mounts, missing
