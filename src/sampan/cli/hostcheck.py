"""What ``sampan check-config`` checks on this host: kernel features, cgroups, iptables, the
binaries Sampan runs, and the ports it listens on.

Each check is a small function returning a ``Check`` (name, whether it passed, whether it is
required, what was found, and the fix: usually which Debian package to install or which
module to load). Nothing here changes the host: files are read, ``iptables --version`` is run,
and a port is bound for an instant to see whether it is free. Paths are parameters (``Host``)
so tests can point them at a fake tree.

Kernel features are judged by evidence at run time first (a module in ``/sys/module``, a
filesystem in ``/proc/filesystems``, a sysctl that exists), then by the kernel configuration
(``/proc/config.gz`` or ``/boot/config-<release>``: ``=y`` built in, ``=m`` a module to load).
"""

from __future__ import annotations

import errno
import gzip
import os
import platform
import shutil
import socket
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Check", "Host", "run_checks"]

IPTABLES_TIMEOUT_S = 5.0
CNI_PLUGINS = ("bridge", "host-local", "portmap", "loopback")
CGROUP_CONTROLLERS_REQUIRED = ("cpu", "memory", "pids")


@dataclass(frozen=True)
class Check:
    category: str
    name: str
    ok: bool
    required: bool = True
    detail: str = ""
    fix: str = ""


@dataclass(frozen=True)
class Host:
    """Where to look (the real host by default)."""

    root: Path = Path("/")
    cni_bin_dir: Path = Path("/usr/lib/cni")
    ports: Sequence[int] = (6443, 10250)
    path: str | None = None
    """PATH for binaries (the process's PATH plus the sbin directories by default)."""
    kernel_release: str = field(default_factory=platform.release)

    def at(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    def which(self, binary: str) -> str | None:
        search = self.path
        if search is None:
            extra = ["/usr/local/sbin", "/usr/sbin", "/sbin"]
            search = os.pathsep.join([os.environ.get("PATH", ""), *extra])
        return shutil.which(binary, path=search)


# -- kernel ---------------------------------------------------------------------------------


def _kernel_config(host: Host) -> dict[str, str] | None:
    """CONFIG_X -> y/m/value, or None when the configuration cannot be read."""
    text: str | None = None
    proc = host.at("/proc/config.gz")
    boot = host.at(f"/boot/config-{host.kernel_release}")
    try:
        text = gzip.decompress(proc.read_bytes()).decode(errors="replace")
    except (OSError, EOFError):
        try:
            text = boot.read_text(errors="replace")
        except OSError:
            return None
    config: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.startswith("CONFIG_"):
            config[key] = value.strip()
    return config


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


@dataclass(frozen=True)
class _Feature:
    name: str
    evidence: Callable[[Host], bool]
    configs: tuple[str, ...]
    module: str
    required: bool = True


def _module_loaded(name: str) -> Callable[[Host], bool]:
    return lambda host: host.at(f"/sys/module/{name}").exists()


def _exists(path: str) -> Callable[[Host], bool]:
    return lambda host: host.at(path).exists()


def _any(*tests: Callable[[Host], bool]) -> Callable[[Host], bool]:
    return lambda host: any(test(host) for test in tests)


_FEATURES = (
    _Feature(
        "overlay filesystem",
        _any(
            lambda h: "overlay" in _read(h.at("/proc/filesystems")).split(),
            _module_loaded("overlay"),
        ),
        ("CONFIG_OVERLAY_FS",),
        "overlay",
    ),
    _Feature("bridge", _module_loaded("bridge"), ("CONFIG_BRIDGE",), "bridge"),
    _Feature(
        "br_netfilter (bridged traffic seen by iptables)",
        _exists("/proc/sys/net/bridge/bridge-nf-call-iptables"),
        ("CONFIG_BRIDGE_NETFILTER",),
        "br_netfilter",
    ),
    _Feature("veth", _module_loaded("veth"), ("CONFIG_VETH",), "veth"),
    _Feature(
        "vxlan (pod network between nodes)",
        _module_loaded("vxlan"),
        ("CONFIG_VXLAN",),
        "vxlan",
        required=False,
    ),
    _Feature(
        "netfilter: nf_tables or ip_tables",
        _any(
            _module_loaded("nf_tables"),
            _module_loaded("ip_tables"),
            _exists("/proc/net/ip_tables_names"),
        ),
        ("CONFIG_NF_TABLES", "CONFIG_IP_NF_IPTABLES"),
        "nf_tables",
    ),
    _Feature(
        "conntrack and NAT",
        _any(_module_loaded("nf_conntrack"), _exists("/proc/sys/net/netfilter/nf_conntrack_max")),
        ("CONFIG_NF_CONNTRACK",),
        "nf_conntrack",
    ),
    _Feature("network namespaces", _exists("/proc/self/ns/net"), ("CONFIG_NET_NS",), ""),
    _Feature("PID namespaces", _exists("/proc/self/ns/pid"), ("CONFIG_PID_NS",), ""),
    _Feature("IPC namespaces", _exists("/proc/self/ns/ipc"), ("CONFIG_IPC_NS",), ""),
    _Feature("UTS namespaces", _exists("/proc/self/ns/uts"), ("CONFIG_UTS_NS",), ""),
)


def kernel_checks(host: Host) -> list[Check]:
    config = _kernel_config(host)
    checks = []
    for feature in _FEATURES:
        if feature.evidence(host):
            checks.append(Check("kernel", feature.name, True, feature.required, "present"))
            continue
        values = {c: (config or {}).get(c, "") for c in feature.configs}
        if any(v == "y" for v in values.values()):
            checks.append(Check("kernel", feature.name, True, feature.required, "built in"))
            continue
        if feature.module and any(v == "m" for v in values.values()):
            detail = "available as a module, not loaded"
            fix = f"modprobe {feature.module} (and add it to /etc/modules-load.d/)"
            checks.append(Check("kernel", feature.name, True, feature.required, detail, fix))
            continue
        detail = "missing" if config is not None else "not found (kernel configuration unknown)"
        wanted = " or ".join(feature.configs)
        fix = f"a kernel with {wanted}"
        if feature.module:
            fix = f"modprobe {feature.module}; if that fails, {fix}"
        checks.append(Check("kernel", feature.name, False, feature.required, detail, fix))
    return checks


def cgroup_checks(host: Host) -> list[Check]:
    unified = host.at("/sys/fs/cgroup/cgroup.controllers")
    if unified.exists():
        enabled = set(_read(unified).split())
        version = "v2"
    else:
        enabled = set()
        for line in _read(host.at("/proc/cgroups")).splitlines():
            parts = line.split()
            if len(parts) == 4 and not line.startswith("#") and parts[3] == "1":
                enabled.add(parts[0])
        version = "v1"
    checks = [
        Check(
            "cgroups",
            f"cgroup {version} hierarchy",
            bool(enabled),
            True,
            "mounted" if enabled else "no controllers found",
            "" if enabled else "mount cgroup2 on /sys/fs/cgroup (or the v1 hierarchies)",
        )
    ]
    for controller in CGROUP_CONTROLLERS_REQUIRED:
        ok = controller in enabled
        checks.append(
            Check(
                "cgroups",
                f"{controller} controller",
                ok,
                True,
                "enabled" if ok else "not enabled",
                "" if ok else f"enable the {controller} cgroup controller (kernel command line)",
            )
        )
    return checks


# -- user space ------------------------------------------------------------------------------

_BINARIES = (
    ("containerd", "containerd", True),
    ("runc", "runc", True),
    ("ctr", "containerd", False),
    ("catatonit", "catatonit", True),
    ("ip", "iproute2", True),
    ("iptables", "iptables", True),
    ("iptables-restore", "iptables", True),
    ("iptables-save", "iptables", True),
    ("conntrack", "conntrack", False),
    ("ipset", "ipset", False),
    ("kubectl", "kubernetes-client", False),
)


def binary_checks(host: Host) -> list[Check]:
    checks = []
    for binary, package, required in _BINARIES:
        found = host.which(binary)
        checks.append(
            Check(
                "binaries",
                binary,
                found is not None,
                required,
                found or "not on PATH",
                "" if found else f"apt-get install {package}",
            )
        )
    missing = [p for p in CNI_PLUGINS if not os.access(host.cni_bin_dir / p, os.X_OK)]
    checks.append(
        Check(
            "binaries",
            f"CNI plugins ({', '.join(CNI_PLUGINS)})",
            not missing,
            True,
            f"in {host.cni_bin_dir}" if not missing else f"missing: {', '.join(missing)}",
            "" if not missing else "apt-get install containernetworking-plugins",
        )
    )
    return checks


def iptables_check(host: Host) -> Check:
    iptables = host.which("iptables")
    if iptables is None:
        return Check(
            "netfilter", "iptables backend", False, True, "no iptables", "apt-get install iptables"
        )
    try:
        out = subprocess.run(
            [iptables, "--version"],
            capture_output=True,
            text=True,
            timeout=IPTABLES_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Check("netfilter", "iptables backend", False, True, str(exc), "")
    version = out.stdout.strip()
    if "nf_tables" in version:
        return Check("netfilter", "iptables backend", True, True, f"nf_tables ({version})")
    if "legacy" in version:
        return Check("netfilter", "iptables backend", True, True, f"legacy ({version})")
    return Check(
        "netfilter",
        "iptables backend",
        out.returncode == 0,
        True,
        version or out.stderr.strip(),
        "apt-get install iptables",
    )


def port_checks(host: Host) -> list[Check]:
    checks = []
    for port in host.ports:
        free, detail = _port_free(port)
        checks.append(
            Check(
                "ports",
                f"TCP port {port}",
                free,
                True,
                detail,
                "" if free else "stop what listens there (sampan killall?) or choose another port",
            )
        )
    return checks


def _port_free(port: int) -> tuple[bool, str]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False, "in use"
            return False, str(exc)
    return True, "free"


def run_checks(host: Host | None = None) -> list[Check]:
    """Every check, in the order they are printed. Blocking (files, a subprocess)."""
    host = host or Host()
    return [
        *kernel_checks(host),
        *cgroup_checks(host),
        iptables_check(host),
        *binary_checks(host),
        *port_checks(host),
    ]
