"""CRI request builders: a Pod dict -> ``PodSandboxConfig``; a container -> ``ContainerConfig``.

Pure functions (no I/O) so that every rule is testable on its own: hostname, DNS config by
policy, port mappings, namespaces (PID per container unless shareProcessNamespace), sysctls,
cgroup parent, the labels and annotations the kubelet later reads back to adopt what a
previous run created (pod uid, container name, restart count, container hash), resources
(CPU shares/quota, memory limit, OOM score) and the security context.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    "DNSSettings",
    "container_config",
    "container_hash",
    "dns_config",
    "parse_resolv_conf",
    "pod_hostname",
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
    if spec.get("hostNetwork"):
        return ""
    name = spec.get("hostname") or (pod.get("metadata") or {}).get("name", "")
    return name[:MAX_HOSTNAME_CHARS].rstrip("-.")


def dns_config(pod: Mapping[str, Any], dns: DNSSettings) -> pb.DNSConfig:
    spec = pod.get("spec") or {}
    policy = spec.get("dnsPolicy") or "ClusterFirst"
    namespace = (pod.get("metadata") or {}).get("namespace", "default")
    if policy == "ClusterFirst" and spec.get("hostNetwork"):
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


def _namespace_options(spec: Mapping[str, Any]) -> pb.NamespaceOption:
    if spec.get("hostPID"):
        pid = pb.NamespaceMode.NODE
    elif spec.get("shareProcessNamespace"):
        pid = pb.NamespaceMode.POD
    else:
        pid = pb.NamespaceMode.CONTAINER
    return pb.NamespaceOption(
        network=pb.NamespaceMode.NODE if spec.get("hostNetwork") else pb.NamespaceMode.POD,
        pid=pid,
        ipc=pb.NamespaceMode.NODE if spec.get("hostIPC") else pb.NamespaceMode.POD,
    )


def _int64(value: Any) -> pb.Int64Value | None:
    return pb.Int64Value(value=int(value)) if isinstance(value, int) else None


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
    pod_sc = spec.get("securityContext") or {}
    privileged = any(
        (c.get("securityContext") or {}).get("privileged")
        for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
    )
    sysctls = {s.get("name", ""): str(s.get("value", "")) for s in pod_sc.get("sysctls") or []}
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
                namespace_options=_namespace_options(spec),
                run_as_user=_int64(pod_sc.get("runAsUser")),
                run_as_group=_int64(pod_sc.get("runAsGroup")),
                supplemental_groups=[int(g) for g in pod_sc.get("supplementalGroups") or []],
                privileged=bool(privileged),
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
) -> pb.ContainerConfig:
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    name = container.get("name", "")
    resources = container.get("resources") or {}
    requests = resources.get("requests") or {}
    limits = resources.get("limits") or {}
    cpu_request = milli_cpu(requests.get("cpu")) or milli_cpu(limits.get("cpu"))
    cpu_limit = milli_cpu(limits.get("cpu"))
    mem_limit = quantity(limits.get("memory"))
    mem_request = quantity(requests.get("memory")) or mem_limit
    sc = container.get("securityContext") or {}
    pod_sc = spec.get("securityContext") or {}
    run_as_user = sc.get("runAsUser", pod_sc.get("runAsUser"))
    run_as_group = sc.get("runAsGroup", pod_sc.get("runAsGroup"))
    caps = sc.get("capabilities") or {}
    privileged = bool(sc.get("privileged"))
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
                    add_capabilities=list(caps.get("add") or []),
                    drop_capabilities=list(caps.get("drop") or []),
                ),
                privileged=privileged,
                namespace_options=_namespace_options(spec),
                run_as_user=_int64(run_as_user),
                run_as_group=_int64(run_as_group),
                readonly_rootfs=bool(sc.get("readOnlyRootFilesystem")),
                supplemental_groups=[int(g) for g in pod_sc.get("supplementalGroups") or []],
                no_new_privs=sc.get("allowPrivilegeEscalation") is False,
                masked_paths=[] if privileged else list(_MASKED_PATHS),
                readonly_paths=[] if privileged else list(_READONLY_PATHS),
            ),
        ),
    )


def volume_mounts(
    container: Mapping[str, Any], volumes: Mapping[str, Any]
) -> tuple[list[pb.Mount], list[str]]:
    """CRI mounts for the container's volumeMounts; (mounts, names of missing volumes)."""
    mounts: list[pb.Mount] = []
    missing: list[str] = []
    for vm in container.get("volumeMounts") or []:
        volume = volumes.get(vm.get("name", ""))
        if volume is None:
            missing.append(vm.get("name", ""))
            continue
        host_path = volume.host_path
        sub_path = vm.get("subPath") or ""
        if sub_path:
            host_path = str(Path(host_path) / sub_path)
        mounts.append(
            pb.Mount(
                container_path=vm.get("mountPath", ""),
                host_path=host_path,
                readonly=bool(vm.get("readOnly")) or volume.read_only,
                propagation=_PROPAGATION.get(
                    vm.get("mountPropagation") or "", pb.MountPropagation.PROPAGATION_PRIVATE
                ),
            )
        )
    return mounts, missing
