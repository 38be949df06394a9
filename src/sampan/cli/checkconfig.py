"""``sampan check-config``: print what this host has and lacks for Sampan, with fixes.

Each line is ``pass``, ``FAIL`` (required: the exit code is 1) or ``warn`` (optional), then what
was found and, when something is missing, how to fix it. The checks live in
``sampan.cli.hostcheck``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

from sampan.cli.hostcheck import Check, Host, run_checks
from sampan.config import ConfigError, load_config

__all__ = ["add_checkconfig_parser", "format_checks", "run_checkconfig"]

EXIT_OK = 0
EXIT_FAILED = 1
NAME_WIDTH = 52


def add_checkconfig_parser(sub: Any) -> None:
    text = "Check this host's kernel, cgroups, binaries and ports for Sampan"
    cmd = sub.add_parser("check-config", help=text, description=text)
    cmd.add_argument("--config", "-c", default=argparse.SUPPRESS, help="configuration file")


def format_checks(checks: list[Check]) -> str:
    lines: list[str] = []
    category = None
    for check in checks:
        if check.category != category:
            category = check.category
            lines.append(f"{category}:")
        status = "pass" if check.ok else ("FAIL" if check.required else "warn")
        line = f"  {check.name:<{NAME_WIDTH}} {status}  {check.detail}"
        if check.fix:
            line += f"  (fix: {check.fix})"
        lines.append(line.rstrip())
    failed = sum(1 for c in checks if not c.ok and c.required)
    warned = sum(1 for c in checks if not c.ok and not c.required)
    lines.append("")
    if failed:
        lines.append(f"check-config: {failed} required item(s) missing, {warned} optional")
    else:
        lines.append(f"check-config: this host can run Sampan ({warned} optional item(s) missing)")
    return "\n".join(lines)


def run_checkconfig(ns: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    flags = {"config": ns.config} if hasattr(ns, "config") else {}
    ports = (6443, 10250)
    try:
        config = load_config("server", flags)
        kubelet_port = config.component_args("kubelet-arg").get("port", "10250")
        ports = (config.https_listen_port, int(kubelet_port) if kubelet_port.isdigit() else 10250)
    except ConfigError as exc:
        print(f"sampan check-config: {exc} (checking the default ports)", file=sys.stderr)
    checks = run_checks(Host(ports=ports))
    print(format_checks(checks), file=out)
    return EXIT_FAILED if any(not c.ok and c.required for c in checks) else EXIT_OK
