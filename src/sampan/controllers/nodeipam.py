"""Node IPAM: gives every node its ``spec.podCIDR(s)`` from the cluster CIDR(s).

This module owns the pod-range allocation. Options: ``cluster_cidr`` (one range, or an IPv4
and an IPv6 range separated by a comma for dual stack) and ``node_cidr_mask_size`` (IPv4,
24 by default) / ``node_cidr_mask_size_ipv6`` (64).

Invariants:

* a range is never given to two nodes: before the first allocation the controller waits for
  its node informer to sync and marks every range already in a node's spec as used;
* a node that already has ``spec.podCIDRs`` keeps them (the field is immutable); the ranges
  are marked used if they fall inside the cluster CIDR;
* a deleted node's ranges are released (and may go to a later node);
* when a range runs out, the node gets a ``CIDRNotAvailable`` Warning event and is retried
  with back-off.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

from sampan.client import NotFoundError
from sampan.client.api import NODES, PatchType
from sampan.client.events import TYPE_WARNING
from sampan.controllers.base import ControllerContext, QueueController

__all__ = ["CIDRAllocator", "CIDRExhausted", "NodeIpamController"]

log = logging.getLogger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class CIDRExhausted(Exception):
    """No free range is left in a cluster CIDR."""


class CIDRAllocator:
    """Hands out subnets of one cluster CIDR, each one at most once until released."""

    def __init__(self, cluster_cidr: str, mask_size: int) -> None:
        self.network: Network = ipaddress.ip_network(cluster_cidr.strip(), strict=False)
        if mask_size < self.network.prefixlen or mask_size > self.network.max_prefixlen:
            raise ValueError(
                f"node CIDR mask size {mask_size} does not fit cluster CIDR {self.network}"
            )
        self.mask_size = mask_size
        self.capacity = 1 << (mask_size - self.network.prefixlen)
        self._step = 1 << (self.network.max_prefixlen - mask_size)
        self._used: set[int] = set()
        self._next = 0

    def _index(self, cidr: str) -> int | None:
        try:
            subnet = ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            return None
        if (
            subnet.version != self.network.version
            or subnet.prefixlen != self.mask_size
            or not subnet.subnet_of(self.network)  # type: ignore[arg-type]
        ):
            return None
        offset = int(subnet.network_address) - int(self.network.network_address)
        return offset // self._step

    def _cidr(self, index: int) -> str:
        address = ipaddress.ip_address(int(self.network.network_address) + index * self._step)
        return f"{address}/{self.mask_size}"

    def contains(self, cidr: str) -> bool:
        return self._index(cidr) is not None

    def occupy(self, cidr: str) -> bool:
        """Mark ``cidr`` used; False if it is not one of our subnets."""
        index = self._index(cidr)
        if index is None:
            return False
        self._used.add(index)
        return True

    def release(self, cidr: str) -> None:
        index = self._index(cidr)
        if index is not None:
            self._used.discard(index)

    def allocate(self) -> str:
        if len(self._used) >= self.capacity:
            raise CIDRExhausted(f"no free /{self.mask_size} left in {self.network}")
        for offset in range(self.capacity):
            index = (self._next + offset) % self.capacity
            if index not in self._used:
                self._used.add(index)
                self._next = (index + 1) % self.capacity
                return self._cidr(index)
        raise CIDRExhausted(f"no free /{self.mask_size} left in {self.network}")

    @property
    def used(self) -> int:
        return len(self._used)


class NodeIpamController(QueueController):
    """Allocates node pod CIDRs; see the module docstring."""

    name = "nodeipam"

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.client = ctx.client
        options = ctx.options
        self.allocators: list[CIDRAllocator] = []
        for cidr in (c for c in options.cluster_cidr.split(",") if c.strip()):
            version = ipaddress.ip_network(cidr.strip(), strict=False).version
            mask = options.node_cidr_mask_size if version == 4 else options.node_cidr_mask_size_ipv6
            self.allocators.append(CIDRAllocator(cidr, mask))
        self.recorder = ctx.recorder("cidrAllocator")
        self.nodes = self.watch(ctx.informers.informer(NODES))
        self.nodes.add_event_handler(
            on_add=lambda node: self.queue.add(node["metadata"]["name"]),
            on_update=lambda _old, node: self.queue.add(node["metadata"]["name"]),
            on_delete=lambda node: self.queue.add(node["metadata"]["name"]),
        )
        # node name -> the CIDRs we count as its (to release them when it goes)
        self._held: dict[str, list[str]] = {}

    async def on_synced(self) -> None:
        for node in self.nodes.cache.list():
            self._occupy(node)

    def _occupy(self, node: dict[str, Any]) -> bool:
        """Record the node's existing CIDRs; True if it has any."""
        spec = node.get("spec") or {}
        cidrs = list(spec.get("podCIDRs") or ([spec["podCIDR"]] if spec.get("podCIDR") else []))
        if not cidrs:
            return False
        name = node["metadata"]["name"]
        if self._held.get(name) != cidrs:
            for cidr in self._held.get(name, []):
                self._release(cidr)
            for cidr in cidrs:
                for allocator in self.allocators:
                    allocator.occupy(cidr)
            self._held[name] = cidrs
        return True

    def _release(self, cidr: str) -> None:
        for allocator in self.allocators:
            allocator.release(cidr)

    async def reconcile(self, key: str) -> None:
        if not self.allocators or not self.ctx.options.allocate_node_cidrs:
            return
        node = self.nodes.cache.get(key)
        if node is None:
            released = self._held.pop(key, [])
            for cidr in released:
                self._release(cidr)
                log.debug("nodeipam: released %s of deleted node %s", cidr, key)
            if released:  # nodes waiting for a range may get this one
                for waiting in self.nodes.cache.list():
                    if not (waiting.get("spec") or {}).get("podCIDR"):
                        self.queue.add(waiting["metadata"]["name"])
            return
        if self._occupy(node):
            return
        if key in self._held:
            return  # we patched it; the informer has not shown the patch yet
        cidrs: list[str] = []
        try:
            for allocator in self.allocators:
                cidrs.append(allocator.allocate())
        except CIDRExhausted as exc:
            for cidr in cidrs:
                self._release(cidr)
            message = f"Node {key} status is now: CIDRNotAvailable"
            self.recorder.event(node, TYPE_WARNING, "CIDRNotAvailable", message)
            raise RuntimeError(f"nodeipam: {key}: {exc}") from exc
        patch = {"spec": {"podCIDR": cidrs[0], "podCIDRs": cidrs}}
        try:
            await self.client.patch(NODES, key, patch, patch_type=PatchType.MERGE)
        except NotFoundError:
            for cidr in cidrs:
                self._release(cidr)
            return
        except Exception:
            for cidr in cidrs:
                self._release(cidr)
            raise
        self._held[key] = cidrs
        log.debug("nodeipam: node %s gets podCIDRs %s", key, ", ".join(cidrs))
