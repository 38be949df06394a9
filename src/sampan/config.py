"""Configuration: one table of options, resolved once into frozen dataclasses.

Every option is declared once in ``OPTIONS`` (its flag name, type, default, environment alias,
help group and which subcommands take it). From that table come the argparse flags (grouped as
K3s groups them), the accepted ``config.yaml`` keys and the environment variables, so the three
can never drift apart.

Precedence, lowest first::

    built-in defaults < /etc/sampan/config.yaml < /etc/sampan/config.yaml.d/*.yaml (name order)
                      < environment (SAMPAN_*) < command-line flags

In the YAML files a key may be written ``key+:`` to append to a list instead of replacing it.
Every problem a user can cause (unknown key, wrong type, unreadable or malformed file) raises
``ConfigError`` whose message is one line naming the key and the file; secrets (tokens, DSNs
with passwords) are held in ``Secret`` and never appear in ``repr``, logs or errors.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

__all__ = [
    "COMMANDS",
    "DEFAULT_CONFIG_FILE",
    "DEFAULT_DATA_DIR",
    "DEFAULT_KUBECONFIG",
    "OPTIONS",
    "Config",
    "ConfigError",
    "HostNames",
    "Option",
    "Secret",
    "check_server_files",
    "host_names",
    "load_config",
    "options_for",
]

DEFAULT_CONFIG_FILE = Path("/etc/sampan/config.yaml")
DEFAULT_DATA_DIR = Path("/var/lib/sampan")
DEFAULT_KUBECONFIG = Path("/etc/sampan/sampan.yaml")
DEFAULT_SNAPSHOT_SCHEDULE = "0 */12 * * *"
"""K3s's default snapshot schedule: every 12 hours."""
DEFAULT_SNAPSHOT_RETENTION = 5

Command = Literal["server", "agent"]
COMMANDS: tuple[Command, ...] = ("server", "agent")
SERVER: tuple[Command, ...] = ("server",)
BOTH: tuple[Command, ...] = ("server", "agent")


class ConfigError(Exception):
    """A configuration problem the user can fix; the message is one line."""


class Secret:
    """A string that must not leak: ``repr`` and ``str`` hide it; ``reveal()`` gives it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __repr__(self) -> str:
        return "Secret('********')" if self._value else "Secret('')"

    __str__ = __repr__


OptionType = Literal["str", "int", "bool", "list", "secret", "path", "mode", "cidr", "port"]


@dataclass(frozen=True)
class Option:
    """One user-facing option. ``name`` is the flag and YAML key (K3s spelling)."""

    name: str
    type: OptionType
    default: Any
    group: str
    help: str
    commands: tuple[Command, ...] = BOTH
    env: str | None = None
    short: str | None = None
    choices: tuple[str, ...] | None = None

    @property
    def attr(self) -> str:
        return self.name.replace("-", "_")


def _o(*args: Any, **kwargs: Any) -> Option:
    return Option(*args, **kwargs)


# The option table. Groups follow K3s's help categories.
OPTIONS: tuple[Option, ...] = (
    # -- general
    _o(
        "config",
        "path",
        DEFAULT_CONFIG_FILE,
        "general",
        "Load configuration from FILE",
        env="SAMPAN_CONFIG_FILE",
        short="c",
    ),
    _o(
        "data-dir",
        "path",
        DEFAULT_DATA_DIR,
        "general",
        "Folder to hold state",
        env="SAMPAN_DATA_DIR",
        short="d",
    ),
    _o("debug", "bool", False, "general", "Turn on debug logs", env="SAMPAN_DEBUG"),
    _o("v", "int", 0, "general", "Number for the log level verbosity"),
    _o(
        "token",
        "secret",
        "",
        "cluster",
        "Shared secret used to join a server or agent",
        env="SAMPAN_TOKEN",
        short="t",
    ),
    _o(
        "server",
        "str",
        "",
        "cluster",
        "Server to connect to (agent) or join (server)",
        env="SAMPAN_URL",
        short="s",
    ),
    _o(
        "cluster-name",
        "str",
        "",
        "cluster",
        "Short name (1-6 of a-z, 0-9; a letter first) that this cluster's interfaces, iptables "
        "chains and pod cgroups carry on the host, so that a second cluster can run beside the "
        "first; empty: the usual names (cni0, KUBE-*, /kubepods)",
        env="SAMPAN_CLUSTER_NAME",
    ),
    # -- listener (server)
    _o("bind-address", "str", "0.0.0.0", "listener", "sampan bind address", commands=SERVER),
    _o(
        "advertise-address",
        "str",
        "",
        "listener",
        "IPv4 address that the apiserver uses to advertise to members of the cluster "
        "(default: node-external-ip/node-ip)",
        commands=SERVER,
    ),
    _o("https-listen-port", "port", 6443, "listener", "HTTPS listen port", commands=SERVER),
    _o(
        "tls-san",
        "list",
        (),
        "listener",
        "Add additional hostnames or IPv4/IPv6 addresses as Subject Alternative Names on the "
        "server TLS cert",
        commands=SERVER,
    ),
    # -- client
    _o(
        "write-kubeconfig",
        "path",
        DEFAULT_KUBECONFIG,
        "client",
        "Write kubeconfig for admin client to this file",
        commands=SERVER,
        env="SAMPAN_KUBECONFIG_OUTPUT",
        short="o",
    ),
    _o(
        "write-kubeconfig-mode",
        "mode",
        "0600",
        "client",
        "Write kubeconfig with this mode",
        commands=SERVER,
        env="SAMPAN_KUBECONFIG_MODE",
    ),
    # -- networking
    _o(
        "cluster-cidr",
        "cidr",
        "10.42.0.0/16",
        "networking",
        "IPv4 network CIDRs to use for pod IPs",
        commands=SERVER,
    ),
    _o(
        "service-cidr",
        "cidr",
        "10.43.0.0/16",
        "networking",
        "IPv4 network CIDRs to use for service IPs",
        commands=SERVER,
    ),
    _o(
        "service-node-port-range",
        "str",
        "30000-32767",
        "networking",
        "Port range to reserve for services with NodePort visibility",
        commands=SERVER,
    ),
    _o(
        "cluster-dns",
        "str",
        "10.43.0.10",
        "networking",
        "IPv4 Cluster IP for coredns service",
        commands=SERVER,
    ),
    _o("cluster-domain", "str", "cluster.local", "networking", "Cluster Domain", commands=SERVER),
    _o(
        "flannel-backend",
        "str",
        "vxlan",
        "networking",
        "Backend: 'vxlan', 'host-gw' or 'none'",
        choices=("vxlan", "host-gw", "none"),
    ),
    _o(
        "cni",
        "str",
        "",
        "networking",
        "RKE2-style alias of flannel-backend: 'vxlan', 'host-gw' or 'none'",
        choices=("", "vxlan", "host-gw", "none"),
    ),
    _o("flannel-iface", "str", "", "networking", "Override default flannel interface"),
    _o(
        "node-local-dns-address",
        "str",
        "",
        "agent/networking",
        "Link-local IPv4 address of the node-local DNS server (default 169.254.20.10; with "
        "--cluster-name one derived from the name in 169.254.20.0/24)",
    ),
    # -- datastore
    _o(
        "datastore-endpoint",
        "secret",
        "",
        "database",
        "Specify sqlite (default), a postgres:// DSN, or etcd as https://HOST:2379 "
        "(several comma-separated; http:// without TLS)",
        commands=SERVER,
        env="SAMPAN_DATASTORE_ENDPOINT",
    ),
    _o(
        "datastore-cafile",
        "str",
        "",
        "database",
        "TLS Certificate Authority file used to secure datastore backend communication (etcd)",
        commands=SERVER,
        env="SAMPAN_DATASTORE_CAFILE",
    ),
    _o(
        "datastore-certfile",
        "str",
        "",
        "database",
        "TLS certification file used to secure datastore backend communication (etcd)",
        commands=SERVER,
        env="SAMPAN_DATASTORE_CERTFILE",
    ),
    _o(
        "datastore-keyfile",
        "str",
        "",
        "database",
        "TLS key file used to secure datastore backend communication (etcd)",
        commands=SERVER,
        env="SAMPAN_DATASTORE_KEYFILE",
    ),
    _o(
        "cluster-init",
        "bool",
        False,
        "cluster",
        "Initialize a new cluster using embedded etcd",
        commands=SERVER,
        env="SAMPAN_CLUSTER_INIT",
    ),
    _o(
        "etcd-client-port",
        "port",
        2379,
        "database",
        "Port of the embedded etcd's client listener (node IP and loopback)",
        commands=SERVER,
    ),
    _o(
        "etcd-peer-port",
        "port",
        2380,
        "database",
        "Port of the embedded etcd's peer listener (node IP and loopback); its metrics "
        "listener uses the next port",
        commands=SERVER,
    ),
    _o(
        "secrets-encryption",
        "bool",
        False,
        "database",
        "Enable secret encryption at rest (generates <data-dir>/server/cred/"
        "encryption-config.json with an aescbc key on the first start)",
        commands=SERVER,
    ),
    _o(
        "etcd-expose-metrics",
        "bool",
        False,
        "database",
        "Expose embedded etcd metrics to the node IP (default: loopback only)",
        commands=SERVER,
    ),
    # -- snapshots and restore (K3s's etcd-snapshot flags; SQLite and etcd)
    _o(
        "etcd-disable-snapshots",
        "bool",
        False,
        "database",
        "Disable automatic datastore snapshots",
        commands=SERVER,
    ),
    _o(
        "etcd-snapshot-schedule-cron",
        "str",
        DEFAULT_SNAPSHOT_SCHEDULE,
        "database",
        "Snapshot interval time in cron spec. eg. every 5 hours '0 */5 * * *'",
        commands=SERVER,
    ),
    _o(
        "etcd-snapshot-retention",
        "int",
        DEFAULT_SNAPSHOT_RETENTION,
        "database",
        "Number of snapshots to retain",
        commands=SERVER,
    ),
    _o(
        "etcd-snapshot-dir",
        "str",
        "",
        "database",
        "Directory to save snapshots (default: <data-dir>/server/db/snapshots)",
        commands=SERVER,
    ),
    _o(
        "etcd-snapshot-compress",
        "bool",
        False,
        "database",
        "Compress snapshots (zip)",
        commands=SERVER,
    ),
    _o(
        "cluster-reset",
        "bool",
        False,
        "cluster",
        "Forget all peers and become sole member of a new cluster; with "
        "--cluster-reset-restore-path, restore the datastore from a snapshot first, then exit",
        commands=SERVER,
        env="SAMPAN_CLUSTER_RESET",
    ),
    _o(
        "cluster-reset-restore-path",
        "str",
        "",
        "cluster",
        "Path to snapshot file to be restored",
        commands=SERVER,
    ),
    # -- agent load balancer
    _o(
        "lb-server-port",
        "port",
        0,
        "agent/networking",
        "Local port of the client load balancer the agent reaches the API servers through "
        "(default: the port of --server plus one, i.e. 6444 as in K3s; for a server, "
        "--https-listen-port plus one)",
        env="SAMPAN_LB_SERVER_PORT",
    ),
    # -- security (RKE2's flags)
    _o(
        "profile",
        "str",
        "",
        "security",
        "Validate system configuration against the selected benchmark (valid items: cis)",
        env="SAMPAN_CIS_PROFILE",
        choices=("", "cis"),
    ),
    _o(
        "protect-kernel-defaults",
        "bool",
        False,
        "agent/node",
        "Kernel tuning behavior. If set, error if kernel tunables are different than kubelet "
        "defaults.",
    ),
    _o(
        "audit-policy-file",
        "str",
        "",
        "security",
        "Path to the file that defines the audit policy configuration",
        commands=SERVER,
        env="SAMPAN_AUDIT_POLICY_FILE",
    ),
    _o(
        "pod-security-admission-config-file",
        "str",
        "",
        "security",
        "Path to the file that defines Pod Security Admission configuration",
        commands=SERVER,
        env="SAMPAN_POD_SECURITY_ADMISSION_CONFIG_FILE",
    ),
    # -- cluster tokens
    _o(
        "agent-token",
        "secret",
        "",
        "cluster",
        "Shared secret used to join agents to the cluster, but not servers",
        commands=SERVER,
        env="SAMPAN_AGENT_TOKEN",
    ),
    # -- components
    _o(
        "disable",
        "list",
        (),
        "components",
        "Do not deploy packaged components and delete any deployed components",
        commands=SERVER,
    ),
    _o("disable-scheduler", "bool", False, "components", "Disable the scheduler", commands=SERVER),
    _o(
        "disable-controller-manager",
        "bool",
        False,
        "components",
        "Disable the controller manager",
        commands=SERVER,
    ),
    _o(
        "disable-cloud-controller",
        "bool",
        False,
        "components",
        "Accepted for compatibility; Sampan has no cloud controller",
        commands=SERVER,
    ),
    _o("disable-agent", "bool", False, "components", "Do not run a local agent", commands=SERVER),
    _o(
        "disable-helm-controller",
        "bool",
        False,
        "components",
        "Disable the Helm controller (same as --disable=helm-controller)",
        commands=SERVER,
    ),
    _o(
        "manager",
        "bool",
        False,
        "components",
        "Run the Sampan manager (multi-cluster management API, users, cluster import)",
        commands=SERVER,
    ),
    _o(
        "manager-port",
        "port",
        8443,
        "components",
        "Port the manager serves HTTPS on (with --manager)",
        commands=SERVER,
    ),
    _o(
        "dashboard",
        "bool",
        False,
        "components",
        "Serve the single-cluster web dashboard (login with a service account token); with "
        "--manager the manager serves the UI at /dashboard/ instead",
        commands=SERVER,
    ),
    _o(
        "dashboard-port",
        "port",
        8443,
        "components",
        "Port the dashboard serves HTTPS on (with --dashboard)",
        commands=SERVER,
    ),
    # -- storage
    _o(
        "default-local-storage-path",
        "str",
        "",
        "storage",
        "Default local storage path for local provisioner storage class "
        "(default: <data-dir>/storage)",
    ),
    _o(
        "disable-network-policy",
        "bool",
        False,
        "components",
        "Disable the NetworkPolicy enforcement of the agent (removes its rules at start)",
    ),
    # -- flags passed to components
    _o(
        "kube-apiserver-arg",
        "list",
        (),
        "flags",
        "Customized flag for the API server",
        commands=SERVER,
    ),
    _o(
        "kube-scheduler-arg",
        "list",
        (),
        "flags",
        "Customized flag for the scheduler",
        commands=SERVER,
    ),
    _o(
        "kube-controller-manager-arg",
        "list",
        (),
        "flags",
        "Customized flag for the controller manager",
        commands=SERVER,
    ),
    _o("etcd-arg", "list", (), "flags", "Customized flag for the embedded etcd", commands=SERVER),
    _o("kubelet-arg", "list", (), "flags", "Customized flag for the kubelet"),
    _o("kube-proxy-arg", "list", (), "flags", "Customized flag for the proxy"),
    # -- agent
    _o("node-name", "str", "", "agent/node", "Node name", env="SAMPAN_NODE_NAME"),
    _o("node-ip", "list", (), "agent/networking", "IPv4 address to advertise for the node"),
    _o("node-label", "list", (), "agent/node", "Registering the node with labels"),
    _o("node-taint", "list", (), "agent/node", "Registering the node with taints"),
    _o(
        "container-runtime-endpoint",
        "str",
        "",
        "agent/runtime",
        "Use an existing CRI socket instead of the bundled containerd",
    ),
    _o(
        "private-registry",
        "str",
        "/etc/sampan/registries.yaml",
        "agent/runtime",
        "Private registry configuration file (mirrors, auth, TLS; read at agent start)",
    ),
    _o(
        "ingress-http-port",
        "port",
        80,
        "agent/networking",
        "Port the ingress controller's nginx serves HTTP on (on every node address)",
    ),
    _o(
        "ingress-https-port",
        "port",
        443,
        "agent/networking",
        "Port the ingress controller's nginx serves HTTPS on (on every node address)",
    ),
)

_BY_NAME: dict[str, Option] = {o.name: o for o in OPTIONS}


def options_for(command: Command) -> list[Option]:
    return [o for o in OPTIONS if command in o.commands]


@dataclass(frozen=True)
class Config:
    """The resolved configuration of one ``sampan server`` or ``sampan agent`` run.

    Static: what the user asked for. Runtime state (generated certificates, readiness) lives in
    the components, never here.
    """

    command: Command
    config: Path = DEFAULT_CONFIG_FILE
    data_dir: Path = DEFAULT_DATA_DIR
    debug: bool = False
    v: int = 0
    token: Secret = field(default_factory=lambda: Secret(""))
    server: str = ""
    cluster_name: str = ""
    bind_address: str = "0.0.0.0"
    advertise_address: str = ""
    https_listen_port: int = 6443
    tls_san: tuple[str, ...] = ()
    write_kubeconfig: Path = DEFAULT_KUBECONFIG
    write_kubeconfig_mode: str = "0600"
    cluster_cidr: str = "10.42.0.0/16"
    service_cidr: str = "10.43.0.0/16"
    service_node_port_range: str = "30000-32767"
    cluster_dns: str = "10.43.0.10"
    cluster_domain: str = "cluster.local"
    flannel_backend: str = "vxlan"
    cni: str = ""
    flannel_iface: str = ""
    node_local_dns_address: str = ""
    datastore_endpoint: Secret = field(default_factory=lambda: Secret(""))
    datastore_cafile: str = ""
    datastore_certfile: str = ""
    datastore_keyfile: str = ""
    cluster_init: bool = False
    etcd_client_port: int = 2379
    etcd_peer_port: int = 2380
    secrets_encryption: bool = False
    etcd_expose_metrics: bool = False
    profile: str = ""
    protect_kernel_defaults: bool = False
    audit_policy_file: str = ""
    pod_security_admission_config_file: str = ""
    agent_token: Secret = field(default_factory=lambda: Secret(""))
    etcd_disable_snapshots: bool = False
    etcd_snapshot_schedule_cron: str = DEFAULT_SNAPSHOT_SCHEDULE
    etcd_snapshot_retention: int = DEFAULT_SNAPSHOT_RETENTION
    etcd_snapshot_dir: str = ""
    etcd_snapshot_compress: bool = False
    cluster_reset: bool = False
    cluster_reset_restore_path: str = ""
    lb_server_port: int = 0
    disable: tuple[str, ...] = ()
    disable_scheduler: bool = False
    disable_controller_manager: bool = False
    disable_cloud_controller: bool = False
    disable_agent: bool = False
    disable_helm_controller: bool = False
    manager: bool = False
    manager_port: int = 8443
    dashboard: bool = False
    dashboard_port: int = 8443
    default_local_storage_path: str = ""
    disable_network_policy: bool = False
    kube_apiserver_arg: tuple[str, ...] = ()
    kube_scheduler_arg: tuple[str, ...] = ()
    kube_controller_manager_arg: tuple[str, ...] = ()
    etcd_arg: tuple[str, ...] = ()
    kubelet_arg: tuple[str, ...] = ()
    kube_proxy_arg: tuple[str, ...] = ()
    node_name: str = ""
    node_ip: tuple[str, ...] = ()
    node_label: tuple[str, ...] = ()
    node_taint: tuple[str, ...] = ()
    container_runtime_endpoint: str = ""
    private_registry: str = "/etc/sampan/registries.yaml"
    ingress_http_port: int = 80
    ingress_https_port: int = 443
    sources: tuple[str, ...] = ()
    """The configuration files that were read, in order (for the log)."""

    @property
    def kubeconfig_mode(self) -> int:
        return int(self.write_kubeconfig_mode, 8)

    @property
    def local_storage_path(self) -> Path:
        """Where local-path volumes live: ``default-local-storage-path`` or
        ``<data-dir>/storage`` (K3s: /var/lib/rancher/k3s/storage)."""
        if self.default_local_storage_path:
            return Path(self.default_local_storage_path)
        return self.data_dir / "storage"

    @property
    def snapshot_dir(self) -> Path:
        """``etcd-snapshot-dir`` or ``<data-dir>/server/db/snapshots`` (K3s's place)."""
        if self.etcd_snapshot_dir:
            return Path(self.etcd_snapshot_dir)
        return self.data_dir / "server" / "db" / "snapshots"

    @property
    def network_backend(self) -> str:
        """``cni`` (RKE2 spelling) wins over ``flannel-backend`` when given."""
        return self.cni or self.flannel_backend

    @property
    def host_names(self) -> HostNames:
        """The names and numbers this cluster uses on the host (see ``HostNames``)."""
        return host_names(self.cluster_name, self.node_local_dns_address)

    def component_args(self, option: str) -> dict[str, str]:
        """``kube-scheduler-arg`` style lists as a dict (later entries win)."""
        values: tuple[str, ...] = getattr(self, option.replace("-", "_"))
        return dict(_split_component_arg(option, v) for v in values)


CLUSTER_NAME_MAX_CHARS = 6
"""Longest ``--cluster-name``: ``K<name>-SVC-<16-char hash>`` must fit iptables' 28-character
chain names, and ``sampan-<name>`` the kernel's 15-character interface names."""
_CLUSTER_NAME_RE = re.compile(rf"^[a-z][a-z0-9]{{0,{CLUSTER_NAME_MAX_CHARS - 1}}}$")
DEFAULT_NODE_LOCAL_DNS_ADDRESS = "169.254.20.10"
_DERIVED_DNS_NETWORK = ipaddress.IPv4Network("169.254.20.0/24")
_VNI_SPACE = 2**24


@dataclass(frozen=True)
class HostNames:
    """What one cluster owns on a host, where a second cluster on the same host must differ.

    The defaults are K3s's and flannel's own (``cni0``, ``KUBE-*`` chains, ``/kubepods``) and
    are what an unnamed cluster uses. With ``--cluster-name NAME`` every name carries ``NAME``
    (interfaces ``cni-NAME``, ``sampan-NAME``, ``sdns-NAME``; chains ``KNAME-*`` and
    ``SAMPAN-NAME-*``; cgroups ``/kubepods-NAME``) and the numbers are derived from it (VXLAN
    VNI; the node-local DNS address unless ``--node-local-dns-address`` is given). Names of two
    differently named clusters never collide: each chain prefix ends with ``-`` and ``NAME`` is
    lower-case, so no prefix is a prefix of another, nor of upstream's ``KUBE-``.

    Ports are not derived: ``--https-listen-port``, ``--kubelet-arg=port=N`` and
    ``--service-node-port-range`` are chosen by the user, as are the cluster and service CIDRs.
    """

    cluster_name: str = ""
    bridge: str = "cni0"
    vxlan_device: str = "sampan.1"
    vxlan_vni: int = 1
    dns_interface: str = "sampan-dns"
    dns_address: str = DEFAULT_NODE_LOCAL_DNS_ADDRESS
    proxy_chain_prefix: str = "KUBE-"
    network_chain_prefix: str = "SAMPAN-"
    cgroup_root: str = "/kubepods"


def host_names(cluster_name: str = "", dns_address: str = "") -> HostNames:
    """``HostNames`` for a cluster name ("" : the defaults); ConfigError for a bad name or
    address."""
    if cluster_name and not _CLUSTER_NAME_RE.match(cluster_name):
        raise ConfigError(
            f"cluster-name: {cluster_name!r} must be 1-{CLUSTER_NAME_MAX_CHARS} characters of "
            "a-z and 0-9, starting with a letter"
        )
    if dns_address:
        try:
            address = ipaddress.IPv4Address(dns_address)
        except ValueError:
            raise ConfigError(
                f"node-local-dns-address: {dns_address!r} is not an IPv4 address"
            ) from None
        if address.is_loopback or address.is_unspecified or address.is_multicast:
            raise ConfigError(
                f"node-local-dns-address: {dns_address} cannot hold a listening DNS server"
            )
    if not cluster_name:
        return HostNames(dns_address=dns_address or DEFAULT_NODE_LOCAL_DNS_ADDRESS)
    digest = zlib.crc32(cluster_name.encode())
    if not dns_address:
        # .11-.250: never the default .10, never the network or broadcast address
        dns_address = str(_DERIVED_DNS_NETWORK.network_address + 11 + digest % 240)
    return HostNames(
        cluster_name=cluster_name,
        bridge=f"cni-{cluster_name}",
        vxlan_device=f"sampan-{cluster_name}",
        vxlan_vni=2 + digest % (_VNI_SPACE - 2),
        dns_interface=f"sdns-{cluster_name}",
        dns_address=dns_address,
        proxy_chain_prefix=f"K{cluster_name}-",
        network_chain_prefix=f"SAMPAN-{cluster_name}-",
        cgroup_root=f"/kubepods-{cluster_name}",
    )


_CONFIG_FIELDS = {f.name for f in dataclasses.fields(Config)}
assert all(o.attr in _CONFIG_FIELDS for o in OPTIONS), "every option needs a Config field"


def _split_component_arg(option: str, value: str) -> tuple[str, str]:
    key, sep, val = value.partition("=")
    key = key.lstrip("-")
    if not sep or not key:
        raise ConfigError(f"{option}: {value!r} is not of the form key=value")
    return key, val


# -- coercion ---------------------------------------------------------------------------------

_MODE_RE = re.compile(r"^0?[0-7]{3}$")


def _coerce(opt: Option, value: Any, where: str) -> Any:
    """Turn a YAML/env/flag value into the option's type; ConfigError names key and source."""

    def bad(expected: str) -> ConfigError:
        shown = "<redacted>" if opt.type == "secret" else repr(value)
        return ConfigError(f"{where}: key {opt.name!r}: expected {expected}, got {shown}")

    t = opt.type
    if t == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise bad("a boolean (true or false)")
    if t in ("int", "port"):
        if isinstance(value, bool):
            raise bad("an integer")
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise bad("an integer") from None
        if t == "port" and not 0 <= number <= 65535:
            raise bad("a port number (0-65535)")
        return number
    if t == "list":
        items = value if isinstance(value, list) else [value]
        out = []
        for item in items:
            if isinstance(item, (dict, list)) or item is None:
                raise bad("a string or a list of strings")
            if isinstance(item, bool):
                item = str(item).lower()
            out.extend(str(item).split(",") if opt.name in _COMMA_LISTS else [str(item)])
        return tuple(s.strip() for s in out if str(s).strip())
    if isinstance(value, (dict, list)) or value is None or isinstance(value, bool):
        raise bad("a string")
    text = str(value)
    if t == "secret":
        return Secret(text)
    if t == "path":
        return Path(text)
    if t == "mode":
        if not _MODE_RE.match(text):
            raise bad('an octal file mode like "0600"')
        return text if len(text) == 4 else "0" + text
    if t == "cidr":
        try:
            ipaddress.ip_network(text, strict=True)
        except ValueError as exc:
            raise ConfigError(f"{where}: key {opt.name!r}: {exc}") from None
        return text
    if opt.choices is not None and text not in opt.choices:
        allowed = ", ".join(repr(c) for c in opt.choices if c)
        raise ConfigError(f"{where}: key {opt.name!r}: {text!r} is not one of {allowed}")
    return text


# Options whose values may be comma-separated (as K3s's StringSlice flags are).
_COMMA_LISTS = frozenset({"tls-san", "disable", "node-ip"})


# -- files ------------------------------------------------------------------------------------


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read configuration file: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}:{line}: malformed YAML: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of option names to values")
    return data


def _apply_file(
    values: dict[str, Any], path: Path, command: Command, *, ignore_other_commands: bool = True
) -> None:
    for raw_key, raw in _read_yaml(path).items():
        key = str(raw_key)
        append = key.endswith("+")
        name = key[:-1] if append else key
        opt = _BY_NAME.get(name)
        if opt is None or opt.name == "config":
            raise ConfigError(f"{path}: unknown key {key!r}")
        if command not in opt.commands:
            # config.yaml is shared by server and agent on one machine (as with K3s): a
            # server-only key in an agent's file is ignored, not an error.
            if ignore_other_commands:
                continue
            raise ConfigError(f"{path}: key {key!r} is not valid for 'sampan {command}'")
        value = _coerce(opt, raw, str(path))
        if append:
            if opt.type != "list":
                raise ConfigError(f"{path}: key {key!r}: '+' appends to lists only")
            value = tuple(values.get(opt.attr, opt.default)) + value
        values[opt.attr] = value


def _config_files(main: Path) -> list[Path]:
    files = [main] if main.exists() else []
    drop_in = main.with_name(main.name + ".d")
    if drop_in.is_dir():
        files += sorted(p for p in drop_in.iterdir() if p.suffix in (".yaml", ".yml"))
    return files


# -- resolution -------------------------------------------------------------------------------


def load_config(
    command: Command,
    flags: Mapping[str, Any],
    env: Mapping[str, str] | None = None,
    *,
    default_config_file: Path = DEFAULT_CONFIG_FILE,
) -> Config:
    """Resolve defaults < config files < environment < flags into a ``Config``.

    ``flags`` holds only what was given on the command line, keyed by option attribute name
    (argparse with ``default=SUPPRESS`` gives exactly that); values are raw strings or lists.
    """
    env = os.environ if env is None else env
    values: dict[str, Any] = {
        o.attr: Secret(o.default) if o.type == "secret" else o.default for o in options_for(command)
    }

    # Which config file: flag > env > default. A file named explicitly must exist.
    explicit: str | None = None
    if "config" in flags:
        explicit = str(flags["config"])
        config_source = "--config"
    elif env.get("SAMPAN_CONFIG_FILE"):
        explicit = env["SAMPAN_CONFIG_FILE"]
        config_source = "SAMPAN_CONFIG_FILE"
    config_path = Path(explicit) if explicit else default_config_file
    if explicit and not config_path.exists():
        raise ConfigError(f"{config_path}: configuration file not found ({config_source})")
    files = _config_files(config_path)
    for path in files:
        _apply_file(values, path, command)
    values["config"] = config_path

    for opt in options_for(command):
        if opt.env and opt.env in env and opt.name != "config":
            values[opt.attr] = _coerce(opt, env[opt.env], f"environment variable {opt.env}")

    for attr, raw in flags.items():
        opt = _BY_NAME.get(attr.replace("_", "-"))
        if opt is None or command not in opt.commands:
            continue
        if opt.name == "config":
            continue
        values[opt.attr] = _coerce(opt, raw, f"flag --{opt.name}")

    _check(command, values)
    return Config(command=command, sources=tuple(str(p) for p in files), **values)


def _check(command: Command, values: Mapping[str, Any]) -> None:
    """Cross-field checks that no single option can make."""
    for opt_name in (
        "kube-apiserver-arg",
        "kube-scheduler-arg",
        "kube-controller-manager-arg",
        "etcd-arg",
        "kubelet-arg",
        "kube-proxy-arg",
    ):
        for item in values.get(opt_name.replace("-", "_"), ()):
            _split_component_arg(opt_name, item)
    host_names(values.get("cluster_name", ""), values.get("node_local_dns_address", ""))
    if values.get("cluster_name") and Path(values["data_dir"]).resolve() == DEFAULT_DATA_DIR:
        raise ConfigError(
            f"cluster-name {values['cluster_name']}: give the cluster its own --data-dir "
            f"({DEFAULT_DATA_DIR} belongs to the unnamed cluster on this host)"
        )
    ports = values.get("service_node_port_range")
    if ports is not None:
        lo, sep, hi = str(ports).partition("-")
        if not (sep and lo.isdigit() and hi.isdigit() and 0 < int(lo) <= int(hi) <= 65535):
            raise ConfigError(
                f"service-node-port-range: {ports!r} is not a port range like 30000-32767"
            )
    for ip in values.get("node_ip", ()):
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise ConfigError(f"node-ip: {ip!r} is not an IP address") from None
    if values.get("cluster_init") and values.get("datastore_endpoint"):
        raise ConfigError(
            "cluster-init: --cluster-init runs an embedded etcd and cannot be used with "
            "--datastore-endpoint"
        )
    if values.get("etcd_client_port") and values.get("etcd_client_port") == values.get(
        "etcd_peer_port"
    ):
        raise ConfigError("etcd-client-port and etcd-peer-port must differ")
    if values.get("manager") and values.get("manager_port", 8443) == values.get(
        "https_listen_port", 6443
    ):
        raise ConfigError("manager-port must differ from https-listen-port")
    if (
        values.get("dashboard")
        and not values.get("manager")
        and values.get("dashboard_port", 8443) == values.get("https_listen_port", 6443)
    ):
        raise ConfigError("dashboard-port must differ from https-listen-port")
    if command == "agent":
        if not values.get("server"):
            raise ConfigError(
                "sampan agent needs --server https://HOST:6443 (or SAMPAN_URL, or 'server' in "
                "config.yaml)"
            )
        if not values.get("token"):
            raise ConfigError(
                "sampan agent needs --token (or SAMPAN_TOKEN, or 'token' in config.yaml)"
            )


def check_server_files(config: Config) -> None:
    """A named cluster's server must not write the unnamed cluster's admin kubeconfig."""
    if config.cluster_name and config.write_kubeconfig == DEFAULT_KUBECONFIG:
        raise ConfigError(
            f"cluster-name {config.cluster_name}: give the cluster its own --write-kubeconfig "
            f"({DEFAULT_KUBECONFIG} belongs to the unnamed cluster on this host)"
        )


def describe(config: Config, *, skip: Iterable[str] = ()) -> Sequence[str]:
    """``key=value`` lines for the debug log; secrets stay hidden."""
    lines = []
    for opt in options_for(config.command):
        if opt.attr in skip:
            continue
        lines.append(f"{opt.name}={getattr(config, opt.attr)!r}")
    return lines
