"""``sampan ctr ARGS`` and ``sampan crictl ARGS``: the system ``ctr``/``crictl`` pointed at the
agent's own containerd (``<data-dir>/agent/run/containerd/containerd.sock``, namespace
``k8s.io`` for ctr), as K3s's ``k3s ctr`` and ``k3s crictl`` do. Everything after the command
is passed on unchanged; the data dir comes from the configuration file and environment
(``SAMPAN_DATA_DIR``), not from flags (which belong to ctr)."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from sampan.config import ConfigError, load_config

__all__ = ["CONTAINERD_NAMESPACE", "containerd_socket", "passthrough_argv", "run_passthrough"]

CONTAINERD_NAMESPACE = "k8s.io"
EXIT_FAILED = 1
_PACKAGES = {"ctr": "containerd", "crictl": "cri-tools"}


def containerd_socket(data_dir: Path) -> Path:
    return data_dir / "agent" / "run" / "containerd" / "containerd.sock"


def passthrough_argv(tool: str, binary: str, socket: Path, args: Sequence[str]) -> list[str]:
    """The command line to exec: the socket (and namespace) first, unless the user gave them."""
    if tool == "ctr":
        argv = [binary]
        if not any(a in ("-a", "--address") or a.startswith("--address=") for a in args):
            argv += ["--address", str(socket)]
        if not any(a in ("-n", "--namespace") or a.startswith("--namespace=") for a in args):
            argv += ["--namespace", CONTAINERD_NAMESPACE]
        return [*argv, *args]
    argv = [binary]
    if not any(a in ("-r", "--runtime-endpoint") or a.startswith("--runtime-") for a in args):
        argv += ["--runtime-endpoint", f"unix://{socket}", "--image-endpoint", f"unix://{socket}"]
    return [*argv, *args]


def run_passthrough(tool: str, args: Sequence[str]) -> int:
    """Exec ``tool`` against this node's containerd; returns only on an error."""
    binary = shutil.which(tool)
    if binary is None:
        print(
            f"sampan {tool}: {tool} is not installed (apt-get install {_PACKAGES[tool]})",
            file=sys.stderr,
        )
        return EXIT_FAILED
    try:
        config = load_config("server", {})
    except ConfigError as exc:
        print(f"sampan {tool}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    socket = containerd_socket(config.data_dir)
    os.execv(binary, passthrough_argv(tool, binary, socket, args))
    return 0  # not reached
