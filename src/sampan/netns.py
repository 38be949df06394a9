"""Entering a network namespace from a worker thread.

The data-plane components (pod network, service proxy, network policy) run their blocking
netlink and iptables work on a dedicated thread; in tests (and several clusters on one host)
that thread first enters a private network namespace with ``enter``, as the initializer of a
one-thread executor. ``setns`` changes only the calling thread, and the commands that thread
starts inherit the namespace.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

__all__ = ["enter"]

CLONE_NEWNET = 0x40000000


def enter(path: Path) -> None:
    """Move the calling thread into the network namespace at ``path`` (``/run/netns/NAME``)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns {path}: {os.strerror(err)}")
    finally:
        os.close(fd)
