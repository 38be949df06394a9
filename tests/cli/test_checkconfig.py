"""``sampan check-config`` over a fake host tree, and ``sampan ctr``'s command line."""

from __future__ import annotations

import gzip
import socket
import stat
from pathlib import Path

from sampan.cli.checkconfig import format_checks
from sampan.cli.ctr import passthrough_argv
from sampan.cli.hostcheck import CNI_PLUGINS, Host, run_checks


def _write(path: Path, text: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _executable(path: Path) -> None:
    _write(path, "#!/bin/sh\necho 'iptables v1.8.9 (nf_tables)'\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def _fake_host(tmp_path: Path, *, binaries: tuple[str, ...], ports: tuple[int, ...]) -> Host:
    root = tmp_path / "root"
    _write(root / "proc/filesystems", "nodev\tproc\nnodev\tcgroup\n")  # no overlay
    (root / "proc").mkdir(exist_ok=True)
    config = "CONFIG_OVERLAY_FS=m\nCONFIG_BRIDGE=y\nCONFIG_VETH=y\nCONFIG_NF_TABLES=y\n"
    config += "CONFIG_NF_CONNTRACK=y\nCONFIG_NET_NS=y\nCONFIG_PID_NS=y\nCONFIG_IPC_NS=y\n"
    config += "CONFIG_UTS_NS=y\n# CONFIG_VXLAN is not set\n"
    (root / "proc/config.gz").write_bytes(gzip.compress(config.encode()))
    _write(root / "sys/fs/cgroup/cgroup.controllers", "cpuset cpu io memory\n")  # no pids
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for binary in binaries:
        _executable(bin_dir / binary)
    cni = tmp_path / "cni"
    for plugin in CNI_PLUGINS[:-1]:  # loopback missing
        _executable(cni / plugin)
    return Host(root=root, cni_bin_dir=cni, ports=ports, path=str(bin_dir), kernel_release="x")


def test_each_missing_item_fails_with_its_fix(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        used = busy.getsockname()[1]
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            free = probe.getsockname()[1]
        host = _fake_host(tmp_path, binaries=("containerd", "iptables", "ip"), ports=(used, free))
        checks = {c.name: c for c in run_checks(host)}
    overlay = checks["overlay filesystem"]
    assert overlay.ok and "modprobe overlay" in overlay.fix  # a module to load
    assert checks["bridge"].ok and checks["bridge"].detail == "built in"
    br = checks["br_netfilter (bridged traffic seen by iptables)"]
    assert not br.ok and br.required and "CONFIG_BRIDGE_NETFILTER" in br.fix
    vxlan = checks["vxlan (pod network between nodes)"]
    assert not vxlan.ok and not vxlan.required
    assert checks["cgroup v2 hierarchy"].ok
    assert checks["memory controller"].ok
    assert not checks["pids controller"].ok
    assert checks["iptables backend"].ok and "nf_tables" in checks["iptables backend"].detail
    assert checks["containerd"].ok
    assert not checks["runc"].ok and checks["runc"].fix == "apt-get install runc"
    assert not checks["catatonit"].ok
    assert not checks["conntrack"].ok and not checks["conntrack"].required
    cni = next(c for name, c in checks.items() if name.startswith("CNI plugins"))
    assert not cni.ok and "loopback" in cni.detail
    assert cni.fix == "apt-get install containernetworking-plugins"
    assert not checks[f"TCP port {used}"].ok
    assert checks[f"TCP port {free}"].ok
    text = format_checks(list(checks.values()))
    assert "FAIL" in text and "warn" in text
    assert "required item(s) missing" in text.splitlines()[-1]


def test_a_complete_host_passes(tmp_path: Path) -> None:
    host = _fake_host(
        tmp_path,
        binaries=(
            "containerd",
            "runc",
            "ctr",
            "catatonit",
            "ip",
            "iptables",
            "iptables-restore",
            "iptables-save",
            "conntrack",
            "kubectl",
        ),
        ports=(),
    )
    _executable(host.cni_bin_dir / "loopback")
    _write(host.root / "proc/sys/net/bridge/bridge-nf-call-iptables", "1\n")
    _write(host.root / "sys/fs/cgroup/cgroup.controllers", "cpu memory pids\n")
    checks = run_checks(host)
    assert [c.name for c in checks if not c.ok and c.required] == []
    assert "this host can run Sampan" in format_checks(checks)


def test_ctr_gets_the_agent_socket_and_namespace() -> None:
    sock = Path("/d/agent/run/containerd/containerd.sock")
    assert passthrough_argv("ctr", "/usr/bin/ctr", sock, ["images", "ls"]) == [
        "/usr/bin/ctr",
        "--address",
        str(sock),
        "--namespace",
        "k8s.io",
        "images",
        "ls",
    ]
    mine = passthrough_argv("ctr", "ctr", sock, ["-n", "default", "c", "ls"])
    assert mine == ["ctr", "--address", str(sock), "-n", "default", "c", "ls"]
    crictl = passthrough_argv("crictl", "crictl", sock, ["ps"])
    assert crictl[1:3] == ["--runtime-endpoint", f"unix://{sock}"]
    assert crictl[-1] == "ps"
