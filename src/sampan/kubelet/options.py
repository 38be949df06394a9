"""The kubelet's configuration: ``KubeletOptions`` and the ``--kubelet-arg`` keys it accepts.

The options are what the user asked for (static), frozen once built. ``kubelet_args`` is the
parsed ``--kubelet-arg key=value`` dict; only keys in ``KUBELET_ARGS`` are accepted
(``parse_kubelet_args`` raises ``KubeletOptionsError`` for anything else, so a typo is an
error at start, not a silently ignored flag).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from sampan.api.quantity import QuantityError, parse_quantity
from sampan.kubelet.registries import Registries

__all__ = [
    "CONTROL_PLANE_ROLE_LABEL",
    "DEFAULT_CLUSTER_DNS",
    "DEFAULT_CLUSTER_DOMAIN",
    "DEFAULT_KUBELET_PORT",
    "DEFAULT_MAX_PODS",
    "KUBELET_ARGS",
    "KubeletArgs",
    "KubeletOptions",
    "KubeletOptionsError",
    "parse_kubelet_args",
    "parse_reserved",
    "parse_taint",
]

DEFAULT_CLUSTER_DNS = "10.43.0.10"
DEFAULT_CLUSTER_DOMAIN = "cluster.local"
DEFAULT_MAX_PODS = 110
DEFAULT_CGROUP_ROOT = "/kubepods"
DEFAULT_KUBELET_PORT = 10250
DEFAULT_KUBELET_ADDRESS = "0.0.0.0"
DEFAULT_NODE_STATUS_UPDATE_S = 10.0
DEFAULT_LEASE_DURATION_S = 40
DEFAULT_SYNC_FREQUENCY_S = 60.0
DEFAULT_POD_LOGS_DIR = Path("/var/log/pods")
DEFAULT_EVICTION_MEMORY_BYTES = 100 * 1024 * 1024
"""memory.available<100Mi, upstream's hard eviction threshold (MemoryPressure below it)."""
CONTROL_PLANE_ROLE_LABEL = "node-role.kubernetes.io/control-plane"

KUBELET_ARGS = frozenset(
    {
        "max-pods",
        "port",
        "address",
        "read-only-port",
        "healthz-port",
        "cgroup-root",
        "node-status-update-frequency",
        "sync-frequency",
        "pod-max-pids",
        "serialize-image-pulls",
        "image-pull-progress-deadline",
        "runtime-request-timeout",
        "root-dir",
        "pod-manifest-path",
        "cluster-dns",
        "cluster-domain",
        "resolv-conf",
        "kube-reserved",
        "system-reserved",
        "eviction-hard",
        "fail-swap-on",
        "container-log-max-size",
        "container-log-max-files",
        "protect-kernel-defaults",
        "v",
    }
)
"""``--kubelet-arg`` keys Sampan's kubelet accepts (upstream spellings, no dashes). Acted on:
max-pods, port (the kubelet API, 10250; the Node's ``daemonEndpoints`` reports it), address
(its bind address), cgroup-root, node-status-update-frequency, sync-frequency, pod-max-pids,
pod-manifest-path, cluster-dns, cluster-domain, resolv-conf, kube-reserved, system-reserved,
root-dir, container-log-max-size, container-log-max-files; protect-kernel-defaults is checked
by the supervisor before the agent starts (sampan.supervisor.profile). Accepted for
compatibility with K3s configurations: read-only-port and healthz-port only as 0 (Sampan's
kubelet opens neither listener; K3s also turns the read-only port off); not acted on yet:
serialize-image-pulls, image-pull-progress-deadline, runtime-request-timeout, eviction-hard,
fail-swap-on, v."""


class KubeletOptionsError(ValueError):
    """A kubelet option or ``--kubelet-arg`` is unknown or malformed."""


@dataclass(frozen=True)
class KubeletArgs:
    """The parsed ``--kubelet-arg`` values that change behaviour."""

    max_pods: int = DEFAULT_MAX_PODS
    port: int = DEFAULT_KUBELET_PORT
    address: str = DEFAULT_KUBELET_ADDRESS
    cgroup_root: str = DEFAULT_CGROUP_ROOT
    node_status_update_s: float = DEFAULT_NODE_STATUS_UPDATE_S
    sync_frequency_s: float = DEFAULT_SYNC_FREQUENCY_S
    pod_max_pids: int = -1
    pod_manifest_path: str = ""
    cluster_dns: str = ""
    cluster_domain: str = ""
    resolv_conf: str = ""
    kube_reserved: Mapping[str, Decimal] = field(default_factory=dict)
    system_reserved: Mapping[str, Decimal] = field(default_factory=dict)
    container_log_max_size_bytes: int = 10 * 1024 * 1024
    container_log_max_files: int = 5
    raw: Mapping[str, str] = field(default_factory=dict)


def _duration_s(key: str, text: str) -> float:
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    for suffix in ("ms", "s", "m", "h"):
        if text.endswith(suffix):
            try:
                return float(text[: -len(suffix)]) * units[suffix]
            except ValueError:
                break
    try:
        return float(text)
    except ValueError as exc:
        raise KubeletOptionsError(f"--kubelet-arg {key}={text}: not a duration") from exc


def _port(key: str, text: str, *, allow_zero: bool) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not (0 if allow_zero else 1) <= port <= 65535:
        raise KubeletOptionsError(f"--kubelet-arg {key}={text}: not a port number")
    return port


def parse_reserved(text: str) -> dict[str, Decimal]:
    """``cpu=200m,memory=256Mi`` -> {"cpu": 0.2, "memory": 268435456}."""
    result: dict[str, Decimal] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep or not name:
            raise KubeletOptionsError(f"reserved resources: {part!r} is not name=quantity")
        try:
            result[name.strip()] = parse_quantity(value.strip())
        except QuantityError as exc:
            raise KubeletOptionsError(f"reserved resources: {part!r}: {exc}") from exc
    return result


def parse_taint(text: str) -> dict[str, str]:
    """``key=value:Effect`` or ``key:Effect`` -> a Node taint dict."""
    spec, sep, effect = text.rpartition(":")
    if not sep or effect not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
        raise KubeletOptionsError(f"taint {text!r}: want key[=value]:NoSchedule|...")
    key, _, value = spec.partition("=")
    if not key:
        raise KubeletOptionsError(f"taint {text!r}: empty key")
    taint = {"key": key, "effect": effect}
    if value:
        taint["value"] = value
    return taint


def parse_kubelet_args(args: Mapping[str, str]) -> KubeletArgs:
    """Validate and convert the ``--kubelet-arg`` dict; unknown keys are an error."""
    unknown = sorted(set(args) - KUBELET_ARGS)
    if unknown:
        raise KubeletOptionsError(
            f"unsupported --kubelet-arg {', '.join(unknown)} (supported: "
            f"{', '.join(sorted(KUBELET_ARGS))})"
        )
    values: dict[str, object] = {}
    try:
        if "max-pods" in args:
            values["max_pods"] = int(args["max-pods"])
        if "pod-max-pids" in args:
            values["pod_max_pids"] = int(args["pod-max-pids"])
    except ValueError as exc:
        raise KubeletOptionsError(f"--kubelet-arg: {exc}") from exc
    if "port" in args:
        values["port"] = _port("port", args["port"], allow_zero=False)
    for key in ("read-only-port", "healthz-port"):
        if key in args and _port(key, args[key], allow_zero=True) != 0:
            raise KubeletOptionsError(
                f"--kubelet-arg {key}={args[key]}: Sampan's kubelet has no such listener; "
                "only 0 (off) is accepted"
            )
    if "address" in args:
        try:
            values["address"] = str(ipaddress.ip_address(args["address"]))
        except ValueError:
            raise KubeletOptionsError(
                f"--kubelet-arg address={args['address']}: not an IP address"
            ) from None
    if "cgroup-root" in args:
        root = args["cgroup-root"].rstrip("/") or "/"
        if not root.startswith("/"):
            raise KubeletOptionsError("--kubelet-arg cgroup-root must be an absolute path")
        values["cgroup_root"] = root if root != "/" else ""
    if "node-status-update-frequency" in args:
        values["node_status_update_s"] = _duration_s(
            "node-status-update-frequency", args["node-status-update-frequency"]
        )
    if "sync-frequency" in args:
        values["sync_frequency_s"] = _duration_s("sync-frequency", args["sync-frequency"])
    for key, attr in (
        ("pod-manifest-path", "pod_manifest_path"),
        ("cluster-dns", "cluster_dns"),
        ("cluster-domain", "cluster_domain"),
        ("resolv-conf", "resolv_conf"),
    ):
        if key in args:
            values[attr] = args[key]
    if "container-log-max-size" in args:
        try:
            values["container_log_max_size_bytes"] = int(
                parse_quantity(args["container-log-max-size"])
            )
        except QuantityError as exc:
            raise KubeletOptionsError(f"--kubelet-arg container-log-max-size: {exc}") from exc
    if "container-log-max-files" in args:
        try:
            values["container_log_max_files"] = int(args["container-log-max-files"])
        except ValueError as exc:
            raise KubeletOptionsError(f"--kubelet-arg container-log-max-files: {exc}") from exc
        if values["container_log_max_files"] < 2:
            raise KubeletOptionsError("--kubelet-arg container-log-max-files must be at least 2")
    if "kube-reserved" in args:
        values["kube_reserved"] = parse_reserved(args["kube-reserved"])
    if "system-reserved" in args:
        values["system_reserved"] = parse_reserved(args["system-reserved"])
    return KubeletArgs(raw=dict(args), **values)  # type: ignore[arg-type]


@dataclass(frozen=True, kw_only=True)
class KubeletOptions:
    """What the kubelet is asked to be. ``data_dir`` is the agent's data dir root; the kubelet
    keeps its state under ``<data_dir>/agent``.

    ``runtime_endpoint``: an existing CRI socket (no containerd started). ``pod_logs_dir``:
    where container logs go (``/var/log/pods`` as upstream unless set). ``crash_backoff_*``
    are upstream's constants; tests shorten them.
    """

    node_name: str
    data_dir: Path
    node_ips: tuple[str, ...] = ()
    node_external_ips: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    taints: tuple[str, ...] = ()
    kube_reserved: str = ""
    system_reserved: str = ""
    cluster_dns: str = DEFAULT_CLUSTER_DNS
    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN
    is_server: bool = False
    runtime_endpoint: str = ""
    kubelet_args: Mapping[str, str] = field(default_factory=dict)
    pod_logs_dir: Path = DEFAULT_POD_LOGS_DIR
    crash_backoff_initial_s: float = 10.0
    crash_backoff_max_s: float = 300.0
    image_poll_interval_s: float = 1.0
    static_pod_poll_interval_s: float = 5.0
    registries: Registries = field(default_factory=Registries)

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_dir", Path(self.data_dir).absolute())
        object.__setattr__(self, "args", parse_kubelet_args(self.kubelet_args))
        reserved_k = parse_reserved(self.kube_reserved)
        reserved_s = parse_reserved(self.system_reserved)
        for taint in self.taints:
            parse_taint(taint)
        object.__setattr__(self, "kube_reserved_q", {**reserved_k, **self.args.kube_reserved})
        object.__setattr__(self, "system_reserved_q", {**reserved_s, **self.args.system_reserved})

    args: KubeletArgs = field(init=False)
    kube_reserved_q: Mapping[str, Decimal] = field(init=False)
    system_reserved_q: Mapping[str, Decimal] = field(init=False)

    @property
    def agent_dir(self) -> Path:
        return self.data_dir / "agent"

    @property
    def kubelet_dir(self) -> Path:
        """Per-pod state (volumes, hosts files, termination logs): ``<agent>/kubelet``."""
        root = self.args.raw.get("root-dir")
        return Path(root) if root else self.agent_dir / "kubelet"

    @property
    def pod_manifests_dir(self) -> Path:
        path = self.args.pod_manifest_path
        return Path(path) if path else self.agent_dir / "pod-manifests"

    @property
    def effective_cluster_dns(self) -> str:
        return self.args.cluster_dns or self.cluster_dns

    @property
    def effective_cluster_domain(self) -> str:
        return self.args.cluster_domain or self.cluster_domain

    @property
    def cgroup_root(self) -> str:
        return self.args.cgroup_root
