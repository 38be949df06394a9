"""A second "machine" on this host for whole-node tests: a network namespace joined to the host
by a veth pair.

``VethNamespace(name, host_if, ns_if, host_ip, ns_ip)``: ``plug()`` creates the namespace and
the pair, puts ``host_ip/prefix`` on the host end and ``ns_ip/prefix`` on the other, with the
namespace's default route via ``host_ip``, so a process inside reaches every address of the
host (its main interface's included) and the host reaches ``ns_ip``. ``unplug()`` removes both
and is safe to call after a partial ``plug()``. ``prefix`` runs a command inside: ``nsenter
--net`` only, not ``ip netns exec``, which would also remount ``/sys`` and hide the cgroup
hierarchies a kubelet needs. Interface names must fit in 15 characters (make them unique per
test process, e.g. with the pid).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

__all__ = ["VethNamespace", "ip", "veth_namespace"]


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@dataclass(frozen=True)
class VethNamespace:
    name: str
    host_if: str
    ns_if: str
    host_ip: str
    ns_ip: str
    prefix_len: int = 30
    extra_host_addresses: Sequence[str] = ()
    """More addresses (``/32``) on the host end, e.g. one a server's certificate lacks."""

    @property
    def prefix(self) -> list[str]:
        return ["nsenter", f"--net=/run/netns/{self.name}", "--"]

    def plug(self) -> None:
        ip("netns", "add", self.name)
        ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
        ip("link", "set", self.ns_if, "netns", self.name)
        ip("addr", "add", f"{self.host_ip}/{self.prefix_len}", "dev", self.host_if)
        for address in self.extra_host_addresses:
            ip("addr", "add", f"{address}/32", "dev", self.host_if)
        ip("link", "set", self.host_if, "up")
        ip("-n", self.name, "addr", "add", f"{self.ns_ip}/{self.prefix_len}", "dev", self.ns_if)
        ip("-n", self.name, "link", "set", self.ns_if, "up")
        ip("-n", self.name, "link", "set", "lo", "up")
        ip("-n", self.name, "route", "add", "default", "via", self.host_ip)

    def unplug(self) -> None:
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)

    def run(
        self, *argv: str, timeout_s: float = 120.0, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """A command inside the namespace."""
        return subprocess.run(
            [*self.prefix, *argv],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=env if env is not None else dict(os.environ),
        )


@contextmanager
def veth_namespace(
    name: str,
    host_if: str,
    ns_if: str,
    host_ip: str,
    ns_ip: str,
    *,
    prefix_len: int = 30,
    extra_host_addresses: Sequence[str] = (),
) -> Iterator[VethNamespace]:
    """A plugged ``VethNamespace``, unplugged on exit."""
    namespace = VethNamespace(
        name, host_if, ns_if, host_ip, ns_ip, prefix_len, tuple(extra_host_addresses)
    )
    try:
        namespace.plug()
        yield namespace
    finally:
        namespace.unplug()
