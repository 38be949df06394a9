"""The pod network between nodes (flannel-like): CNI conflist with the right MTU, VXLAN or
host-gw routes to every other node's pod subnet, and masquerade for traffic leaving the
cluster.

This module owns, on its node:

* the CNI conflist (``cni.write_conflist``) once the own Node has ``spec.podCIDR``, with the
  MTU of the uplink minus the backend's overhead (50 bytes for VXLAN) and the bridge's own
  ``ipMasq`` **off** (see "Masquerade" below);
* backend ``vxlan`` (the default, as flannel's): the device ``sampan.1`` (VNI 1, UDP 8472, no
  learning, local address = the node IP, on the uplink) holding ``<own subnet>.0/32``; per
  remote node: a permanent neighbour entry ``<subnet>.0 -> <its VTEP MAC>``, a permanent FDB
  entry ``<its VTEP MAC> -> dst <its public IP>`` and the route ``<subnet> via <subnet>.0 dev
  sampan.1 onlink`` — the three things flannel's vxlan backend keeps. The VTEP MAC is derived
  from the node name, so it survives restarts and remote nodes' entries stay valid;
* backend ``host-gw``: the route ``<subnet> via <its InternalIP>`` on the uplink per remote node
  (the nodes must share one L2 segment);
* the Node annotations other nodes read: ``sampan.io/backend-type``, ``sampan.io/public-ip``,
  and for vxlan ``sampan.io/backend-data`` = ``{"VNI":1,"VtepMAC":"..."}`` (written with the
  node's own credential: the agent identity only reads Nodes);
* the iptables chains ``SAMPAN-POSTROUTING`` (nat) and ``SAMPAN-FORWARD`` (filter), written with
  one ``iptables-restore --noflush`` (declaring a chain there flushes it, so the write is
  idempotent) plus one jump from ``POSTROUTING``/``FORWARD`` added only when missing.

Masquerade: pod traffic to a destination outside the cluster CIDR is masqueraded; traffic
between pods (cluster CIDR to cluster CIDR) is not, so a pod sees the real address of a pod on
another node. The CNI bridge plugin's ``ipMasq`` would masquerade everything leaving the
*node's* /24 — including traffic to other nodes' pods — so the conflist this module writes
turns it off and ``SAMPAN-POSTROUTING`` does the job once (no double NAT). Flannel makes the
same choice.

Invariants:

* every route this module adds carries the route protocol ``ROUTE_PROTOCOL`` and leads into
  the cluster CIDR; anything with that protocol, inside the cluster CIDR and not wanted is
  removed, anything else is never touched — another cluster on the same host (its own
  ``--cluster-name``, so its own device, VNI and ``SAMPAN-<name>-*`` chains, and its own
  cluster CIDR) keeps its routes (``sampan killall`` deletes ``sampan.1`` and the
  ``SAMPAN-*`` chains, and flushes the routes);
* all netlink and iptables calls run on one dedicated worker thread (never on the event loop),
  one at a time; with ``OverlayOptions.netns`` that thread enters the given network namespace
  first (tests; an agent in a namespace) and the subprocesses it starts inherit it;
* reconcile is level-triggered: every Node event wakes one loop that computes the wanted state
  from the informer's cache and applies the difference; a failure is logged and retried with
  backoff; a full re-apply runs every ``RESYNC_INTERVAL_S`` to repair drift;
* ``stop()`` leaves the data plane in place (pods keep their network across a restart, as with
  flannel); cleanup is ``sampan killall``.

Only IPv4 pod subnets are handled (the first IPv4 entry of ``spec.podCIDRs``).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import ipaddress
import json
import logging
import random
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from sampan.client import Client, ClientConfig, Informer, PatchType
from sampan.client.api import NODES
from sampan.netns import enter as enter_netns
from sampan.network.cni import DEFAULT_BRIDGE, CNIConfig, stop_watch_loop, write_conflist
from sampan.tasks import log_task_end

__all__ = [
    "ANNOTATION_BACKEND_DATA",
    "ANNOTATION_BACKEND_TYPE",
    "ANNOTATION_PUBLIC_IP",
    "BACKENDS",
    "ROUTE_PROTOCOL",
    "VXLAN_DEVICE",
    "VXLAN_OVERHEAD_BYTES",
    "VXLAN_PORT",
    "VXLAN_VNI",
    "Overlay",
    "OverlayError",
    "OverlayOptions",
    "Peer",
    "Uplink",
    "masquerade_rules",
    "node_pod_subnet",
    "own_annotations",
    "peers_from_nodes",
    "remove_dataplane",
    "vtep_mac",
]

log = logging.getLogger("sampan.network.overlay")

BACKEND_VXLAN = "vxlan"
BACKEND_HOST_GW = "host-gw"
BACKENDS = (BACKEND_VXLAN, BACKEND_HOST_GW)

VXLAN_DEVICE = "sampan.1"
VXLAN_VNI = 1
VXLAN_PORT = 8472
VXLAN_OVERHEAD_BYTES = 50
"""Outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14) headers."""

ANNOTATION_BACKEND_TYPE = "sampan.io/backend-type"
ANNOTATION_BACKEND_DATA = "sampan.io/backend-data"
ANNOTATION_PUBLIC_IP = "sampan.io/public-ip"

ROUTE_PROTOCOL = 83
"""rtm_protocol of every route this module adds (83 = ASCII 'S'; unused by known daemons)."""

CHAIN_PREFIX = "SAMPAN-"
MASQUERADE_CHAIN = CHAIN_PREFIX + "POSTROUTING"
FORWARD_CHAIN = CHAIN_PREFIX + "FORWARD"
MULTICAST_CIDR = "224.0.0.0/4"

RESYNC_INTERVAL_S = 60.0
RETRY_INITIAL_S = 0.5
RETRY_MAX_S = 30.0
FIELD_MANAGER = "sampan-network"

_RTNH_F_ONLINK = 4
_NUD_PERMANENT = 0x80
_NTF_SELF = 0x02
"""An FDB entry of the VXLAN device itself (not of a bridge it is enslaved to)."""
_NO_ROUTE_PROBE = "192.0.2.1"
"""TEST-NET-1: asking the kernel for a route to it finds the default route's interface."""

T = TypeVar("T")


class OverlayError(Exception):
    """A configuration the overlay cannot work with (unknown backend, missing interface)."""


@dataclass(frozen=True, kw_only=True)
class OverlayOptions:
    """What the user chose (``--flannel-backend``, ``--node-ip``, ``--flannel-iface``,
    ``--cluster-cidr``) and where the CNI conflist goes (None: write none).

    ``cluster_cidr`` may list one CIDR per family (``10.42.0.0/16,fd00:42::/56``): the overlay
    uses the IPv4 one. ``bridge``, ``vxlan_device``, ``vxlan_vni`` and ``chain_prefix`` are
    the cluster's names on the host (``sampan.config.HostNames``: flannel's defaults unless
    the cluster is named). ``netns`` is a network namespace file (``/run/netns/<name>``) the
    data-plane thread enters first: None in production.
    """

    node_name: str
    backend: str = BACKEND_VXLAN
    node_ip: str = ""
    iface: str = ""
    cluster_cidr: str = "10.42.0.0/16"
    cni_conf_dir: Path | None = None
    ipam_data_dir: Path | None = None
    bridge: str = DEFAULT_BRIDGE
    vxlan_device: str = VXLAN_DEVICE
    vxlan_vni: int = VXLAN_VNI
    chain_prefix: str = CHAIN_PREFIX
    netns: Path | None = None

    @property
    def ipv4_cluster_cidr(self) -> str:
        """The first IPv4 entry of ``cluster_cidr`` (which may list one per family)."""
        for item in self.cluster_cidr.split(","):
            try:
                net = ipaddress.ip_network(item.strip(), strict=False)
            except ValueError as exc:
                raise OverlayError(f"cluster-cidr {self.cluster_cidr}: {exc}") from None
            if net.version == 4:
                return str(net)
        raise OverlayError(
            f"cluster-cidr {self.cluster_cidr}: no IPv4 CIDR (IPv6-only is not supported)"
        )

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise OverlayError(
                f"flannel-backend {self.backend!r}: expected one of {', '.join(BACKENDS)} "
                "(or 'none', which runs no overlay)"
            )
        _ = self.ipv4_cluster_cidr  # OverlayError without an IPv4 CIDR
        if self.node_ip:
            try:
                ipaddress.IPv4Address(self.node_ip)
            except ValueError:
                raise OverlayError(f"node-ip {self.node_ip!r}: not an IPv4 address") from None


@dataclass(frozen=True)
class Uplink:
    """The interface pod traffic to other nodes leaves by, and the node's address on it."""

    name: str
    index: int
    ip: str
    mtu: int


@dataclass(frozen=True, order=True)
class Peer:
    """One remote node as the data plane needs it."""

    name: str
    subnet: str
    public_ip: str
    vtep_mac: str = ""


# -- pure functions ---------------------------------------------------------------------------


def vtep_mac(node_name: str, vni: int = VXLAN_VNI) -> str:
    """A stable, locally administered unicast MAC for the node's VTEP (per VNI, so that two
    clusters' devices on one host differ)."""
    seed = node_name if vni == VXLAN_VNI else f"{node_name}:{vni}"
    raw = bytearray(hashlib.sha256(b"sampan-vtep:" + seed.encode()).digest()[:6])
    raw[0] = (raw[0] & 0xFE) | 0x02
    return ":".join(f"{b:02x}" for b in raw)


def node_pod_subnet(node: Mapping[str, Any]) -> str | None:
    """The first IPv4 CIDR of ``spec.podCIDRs`` (or ``spec.podCIDR``), normalised."""
    spec = node.get("spec") or {}
    cidrs = list(spec.get("podCIDRs") or ([spec["podCIDR"]] if spec.get("podCIDR") else []))
    for cidr in cidrs:
        try:
            net = ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            continue
        if net.version == 4:
            return str(net)
    return None


def _internal_ip(node: Mapping[str, Any]) -> str | None:
    for address in (node.get("status") or {}).get("addresses") or []:
        if address.get("type") == "InternalIP":
            try:
                if ipaddress.ip_address(address.get("address", "")).version == 4:
                    return str(address["address"])
            except ValueError:
                continue
    return None


def _public_ip(node: Mapping[str, Any]) -> str | None:
    annotations = (node.get("metadata") or {}).get("annotations") or {}
    value = annotations.get(ANNOTATION_PUBLIC_IP)
    if value:
        try:
            return str(ipaddress.IPv4Address(value))
        except ValueError:
            pass
    return _internal_ip(node)


def _backend_mac(node: Mapping[str, Any]) -> str | None:
    annotations = (node.get("metadata") or {}).get("annotations") or {}
    if annotations.get(ANNOTATION_BACKEND_TYPE) != BACKEND_VXLAN:
        return None
    try:
        data = json.loads(annotations.get(ANNOTATION_BACKEND_DATA) or "null")
    except ValueError:
        return None
    mac = data.get("VtepMAC") if isinstance(data, dict) else None
    return mac.lower() if isinstance(mac, str) and mac else None


def peers_from_nodes(
    nodes: Iterable[Mapping[str, Any]], *, own_name: str, backend: str
) -> tuple[Peer, ...]:
    """The remote nodes that can be routed to now, sorted by name: a pod subnet, an address,
    and for vxlan a published VTEP MAC. Others are skipped until they have them."""
    peers = []
    for node in nodes:
        name = (node.get("metadata") or {}).get("name", "")
        if not name or name == own_name:
            continue
        subnet = node_pod_subnet(node)
        public_ip = _public_ip(node)
        if subnet is None or public_ip is None:
            continue
        mac = ""
        if backend == BACKEND_VXLAN:
            mac = _backend_mac(node) or ""
            if not mac:
                continue
        peers.append(Peer(name, subnet, public_ip, mac))
    return tuple(sorted(peers))


def own_annotations(
    backend: str, public_ip: str, mac: str, vni: int = VXLAN_VNI
) -> dict[str, str | None]:
    """The annotations this node publishes (None deletes one in a merge patch)."""
    data = (
        json.dumps({"VNI": vni, "VtepMAC": mac}, separators=(",", ":"))
        if backend == BACKEND_VXLAN
        else None
    )
    return {
        ANNOTATION_BACKEND_TYPE: backend,
        ANNOTATION_BACKEND_DATA: data,
        ANNOTATION_PUBLIC_IP: public_ip,
    }


def masquerade_rules(cluster_cidr: str, chain_prefix: str = CHAIN_PREFIX) -> str:
    """``iptables-restore --noflush`` input for the nat and filter chains (not the jumps)."""
    cidr = str(ipaddress.ip_network(cluster_cidr, strict=False))
    masquerade_chain, forward_chain = _chains(chain_prefix)
    return "\n".join(
        [
            "*nat",
            f":{masquerade_chain} - [0:0]",
            f"-A {masquerade_chain} -s {cidr} -d {cidr} -j RETURN",
            f"-A {masquerade_chain} -s {cidr} ! -d {MULTICAST_CIDR} -j MASQUERADE --random-fully",
            "COMMIT",
            "*filter",
            f":{forward_chain} - [0:0]",
            f"-A {forward_chain} -s {cidr} -j ACCEPT",
            f"-A {forward_chain} -d {cidr} -j ACCEPT",
            "COMMIT",
            "",
        ]
    )


def _chains(prefix: str) -> tuple[str, str]:
    """The masquerade (nat) and forward (filter) chain names for a chain prefix."""
    return prefix + "POSTROUTING", prefix + "FORWARD"


def _jumps(prefix: str) -> tuple[tuple[str, str, str, str], ...]:
    masquerade_chain, forward_chain = _chains(prefix)
    return (
        ("nat", "POSTROUTING", masquerade_chain, "sampan pod network masquerade"),
        ("filter", "FORWARD", forward_chain, "sampan pod network forward"),
    )


# -- the data plane (blocking; runs on the worker thread) --------------------------------------


def _iproute() -> Any:
    from pyroute2 import IPRoute

    return IPRoute()


def resolve_uplink(iface: str, node_ip: str) -> Uplink:
    """The uplink: ``iface`` if given, else the interface holding ``node_ip``, else the one of
    the default route; its first IPv4 address unless ``node_ip`` is given. Blocking."""
    from pyroute2.netlink.exceptions import NetlinkError

    with _iproute() as ipr:
        if iface:
            found = ipr.link_lookup(ifname=iface)
            if not found:
                raise OverlayError(f"flannel-iface {iface!r}: no such interface")
            index = int(found[0])
        elif node_ip:
            holders = [
                int(a["index"])
                for a in ipr.get_addr(family=socket.AF_INET)
                if a.get("address") == node_ip
            ]
            if not holders:
                raise OverlayError(f"node-ip {node_ip}: no interface holds this address")
            index = holders[0]
        else:
            try:
                routes = ipr.route("get", dst=_NO_ROUTE_PROBE)
            except NetlinkError as exc:
                raise OverlayError("no default route: set --flannel-iface or --node-ip") from exc
            index = int(next(iter(routes)).get("oif"))
        link = next(iter(ipr.get_links(index)))
        ip = node_ip
        if not ip:
            addresses = [a.get("address") for a in ipr.get_addr(family=socket.AF_INET, index=index)]
            if not addresses:
                raise OverlayError(f"interface {link.get('ifname')} has no IPv4 address")
            ip = str(addresses[0])
        return Uplink(str(link.get("ifname")), index, ip, int(link.get("mtu")))


def _subnet_gateway(subnet: str) -> str:
    return str(ipaddress.ip_network(subnet).network_address)


def _our_routes(ipr: Any, cluster_cidr: str | None) -> list[Any]:
    """Routes with our protocol; with ``cluster_cidr``, only those into it (another cluster
    on this host marks its routes the same way, into its own cluster CIDR)."""
    network = ipaddress.ip_network(cluster_cidr, strict=False) if cluster_cidr else None
    return [
        r
        for r in ipr.get_routes(family=socket.AF_INET)
        if r.get("proto") == ROUTE_PROTOCOL
        and r.get("table") == 254
        and (network is None or _route_within(r, network))
    ]


def _route_within(route: Any, network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    dst = route.get("dst")
    if not dst:
        return False
    try:
        return ipaddress.ip_network(f"{dst}/{route.get('dst_len')}", strict=False).subnet_of(
            network  # type: ignore[arg-type]
        )
    except (TypeError, ValueError):
        return False


def _route_key(route: Any) -> tuple[str, str, int]:
    return (
        f"{route.get('dst')}/{route.get('dst_len')}",
        str(route.get("gateway") or ""),
        int(route.get("oif") or 0),
    )


def _delete_route(ipr: Any, route: Any) -> None:
    dst, gateway, oif = _route_key(route)
    address, _, length = dst.partition("/")
    ipr.route(
        "del",
        dst=address,
        dst_len=int(length),
        gateway=gateway or None,
        oif=oif or None,
        proto=ROUTE_PROTOCOL,
    )


def _sync_routes(
    ipr: Any, wanted: dict[str, tuple[str, int, int]], cluster_cidr: str | None = None
) -> None:
    """Make our routes (into ``cluster_cidr``) exactly ``wanted``: subnet -> (gateway, oif,
    flags)."""
    wanted_keys = {(dst, gw, oif) for dst, (gw, oif, _flags) in wanted.items()}
    for route in _our_routes(ipr, cluster_cidr):
        if _route_key(route) not in wanted_keys:
            _delete_route(ipr, route)
    for dst, (gateway, oif, flags) in wanted.items():
        ipr.route("replace", dst=dst, gateway=gateway, oif=oif, flags=flags, proto=ROUTE_PROTOCOL)


def _delete_link(ipr: Any, name: str) -> None:
    for index in ipr.link_lookup(ifname=name):
        ipr.link("del", index=index)


def _ensure_vxlan_device(ipr: Any, uplink: Uplink, mac: str, device: str, vni: int) -> int:
    mtu = uplink.mtu - VXLAN_OVERHEAD_BYTES
    found = ipr.link_lookup(ifname=device)
    if found:
        link = next(iter(ipr.get_links(found[0])))
        same = (
            link.get(("linkinfo", "kind")) == "vxlan"
            and link.get(("linkinfo", "data", "vxlan_id")) == vni
            and link.get(("linkinfo", "data", "vxlan_local")) == uplink.ip
            and link.get(("linkinfo", "data", "vxlan_link")) == uplink.index
            and link.get(("linkinfo", "data", "vxlan_port")) == VXLAN_PORT
        )
        if not same:
            log.info("network: %s does not match the node's settings; recreating", device)
            ipr.link("del", index=found[0])
            found = []
    if not found:
        ipr.link(
            "add",
            ifname=device,
            kind="vxlan",
            vxlan_id=vni,
            vxlan_local=uplink.ip,
            vxlan_link=uplink.index,
            vxlan_port=VXLAN_PORT,
            vxlan_learning=0,
            address=mac,
            mtu=mtu,
        )
        found = ipr.link_lookup(ifname=device)
    index = int(found[0])
    ipr.link("set", index=index, address=mac, mtu=mtu, state="up")
    return index


def _ensure_device_address(ipr: Any, index: int, address: str) -> None:
    present = False
    for addr in ipr.get_addr(family=socket.AF_INET, index=index):
        if addr.get("address") == address and addr.get("prefixlen") == 32:
            present = True
        else:
            ipr.addr("del", index=index, address=addr.get("address"), prefixlen=addr["prefixlen"])
    if not present:
        ipr.addr("add", index=index, address=address, prefixlen=32)


def apply_vxlan(
    uplink: Uplink,
    own_subnet: str,
    mac: str,
    peers: Iterable[Peer],
    *,
    device: str = VXLAN_DEVICE,
    vni: int = VXLAN_VNI,
    cluster_cidr: str | None = None,
) -> None:
    """Device, address, and per peer neighbour + FDB entry + route; stale ones (routes into
    ``cluster_cidr`` only) removed."""
    peers = list(peers)
    with _iproute() as ipr:
        index = _ensure_vxlan_device(ipr, uplink, mac, device, vni)
        _ensure_device_address(ipr, index, _subnet_gateway(own_subnet))
        wanted_neigh = {_subnet_gateway(p.subnet): p.vtep_mac for p in peers}
        wanted_fdb = {p.vtep_mac: p.public_ip for p in peers}
        # Routes go first (stale ones away before their neighbour), then neighbours, then FDB.
        _sync_routes(
            ipr,
            {p.subnet: (_subnet_gateway(p.subnet), index, _RTNH_F_ONLINK) for p in peers},
            cluster_cidr,
        )
        for neigh in ipr.get_neighbours(family=socket.AF_INET, ifindex=index):
            if neigh.get("ifindex") != index:
                continue  # never touch another device's entries, whatever the dump returns
            dst, lladdr = neigh.get("dst"), str(neigh.get("lladdr") or "").lower()
            if wanted_neigh.get(dst) != lladdr:
                ipr.neigh("del", dst=dst, lladdr=lladdr or None, ifindex=index)
        for dst, lladdr in wanted_neigh.items():
            ipr.neigh("replace", dst=dst, lladdr=lladdr, ifindex=index, state=_NUD_PERMANENT)
        for entry in ipr.fdb("dump"):
            if entry.get("ifindex") != index or not entry.get("dst"):
                continue
            lladdr = str(entry.get("lladdr") or "").lower()
            if wanted_fdb.get(lladdr) != entry.get("dst"):
                ipr.fdb("del", ifindex=index, lladdr=lladdr, dst=entry.get("dst"), flags=_NTF_SELF)
        for lladdr, dst in wanted_fdb.items():
            ipr.fdb(
                "replace",
                ifindex=index,
                lladdr=lladdr,
                dst=dst,
                state=_NUD_PERMANENT,
                flags=_NTF_SELF,
            )


def apply_host_gw(
    uplink: Uplink,
    peers: Iterable[Peer],
    *,
    device: str = VXLAN_DEVICE,
    cluster_cidr: str | None = None,
) -> None:
    """A route per peer via its address on the uplink; no VXLAN device."""
    with _iproute() as ipr:
        _delete_link(ipr, device)
        _sync_routes(ipr, {p.subnet: (p.public_ip, uplink.index, 0) for p in peers}, cluster_cidr)


def _run(argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)


def ensure_masquerade(cluster_cidr: str, chain_prefix: str = CHAIN_PREFIX) -> bool:
    """Write the SAMPAN-* chains and add the jumps to them when missing; False (nothing done)
    without iptables on the machine. Blocking."""
    if shutil.which("iptables-restore") is None or shutil.which("iptables") is None:
        return False
    restored = _run(["iptables-restore", "--noflush"], masquerade_rules(cluster_cidr, chain_prefix))
    if restored.returncode != 0:
        raise OSError(f"iptables-restore: {restored.stderr.strip()[:300]}")
    for table, chain, target, comment in _jumps(chain_prefix):
        spec = [chain, "-m", "comment", "--comment", comment, "-j", target]
        if _run(["iptables", "-w", "-t", table, "-C", *spec]).returncode == 0:
            continue
        added = _run(["iptables", "-w", "-t", table, "-A", *spec])
        if added.returncode != 0:
            raise OSError(f"iptables -t {table} -A {chain}: {added.stderr.strip()[:300]}")
    return True


def remove_dataplane(device: str = VXLAN_DEVICE, cluster_cidr: str | None = None) -> int:
    """Delete the VXLAN device (``sampan.1``) and every route this module added (into
    ``cluster_cidr`` when given) (``sampan killall``; the ``SAMPAN-*`` chains are removed with
    the other chains there); how many things went. Blocking."""
    removed = 0
    with _iproute() as ipr:
        for index in ipr.link_lookup(ifname=device):
            ipr.link("del", index=index)  # its routes, neighbours and FDB entries go with it
            removed += 1
        for route in _our_routes(ipr, cluster_cidr):
            _delete_route(ipr, route)
            removed += 1
    return removed


# -- the component ----------------------------------------------------------------------------


class _FailureSink(Protocol):
    def fail(self, reason: str) -> None: ...


@dataclass
class _Applied:
    """What the data plane was last made to look like (to skip no-op work)."""

    subnet: str | None = None
    peers: tuple[Peer, ...] | None = None
    masquerade: bool = False
    conflist: CNIConfig | None = None


class Overlay:
    """Agent component ``network``: CNI conflist, routes to other nodes, masquerade.

    ``start`` resolves the uplink (an unknown ``--flannel-iface`` fails here) and returns; the
    rest waits for the own Node's pod subnet (the kubelet creates the Node after this starts).
    ``ready`` is set once the conflist and the data plane for the own subnet are in place.
    """

    name = "network"

    def __init__(
        self,
        client_config: ClientConfig,
        options: OverlayOptions,
        *,
        node_client_config: ClientConfig | None = None,
    ) -> None:
        """``client_config`` reads every Node (the agent identity may list and watch them,
        nothing more); ``node_client_config`` — the node's own (kubelet) identity, which
        NodeRestriction lets write only its own Node — publishes the annotations (default:
        ``client_config``)."""
        self.client_config = client_config
        self.node_client_config = node_client_config
        self.options = options
        self.mac = vtep_mac(options.node_name, options.vxlan_vni)
        self.uplink: Uplink | None = None
        self.peers: tuple[Peer, ...] = ()
        self.ready = asyncio.Event()
        self._applied = _Applied()
        self._client: Client | None = None
        self._node_client: Client | None = None
        self._informer: Informer | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._executor: ThreadPoolExecutor | None = None

    async def _blocking(self, fn: Callable[..., T], *args: Any) -> T:
        assert self._executor is not None
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def start(self, ctx: _FailureSink | None = None) -> None:
        netns = self.options.netns
        self._executor = ThreadPoolExecutor(
            max_workers=1,
            thread_name_prefix="sampan-netlink",
            initializer=enter_netns if netns is not None else None,
            initargs=(netns,) if netns is not None else (),
        )
        try:
            self.uplink = await self._blocking(
                resolve_uplink, self.options.iface, self.options.node_ip
            )
        except BaseException:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise
        log.info(
            "network: backend %s on %s (%s, MTU %d)",
            self.options.backend,
            self.uplink.name,
            self.uplink.ip,
            self.uplink.mtu,
        )
        self._client = Client(self.client_config)
        if self.node_client_config is not None:
            self._node_client = Client(self.node_client_config)
        self._informer = Informer(self._client, NODES)
        self._informer.add_event_handler(
            on_add=lambda _n: self._wake.set(),
            on_update=lambda _o, _n: self._wake.set(),
            on_delete=lambda _n: self._wake.set(),
        )
        self._informer.start()
        self._wake.set()  # masquerade at once, even before any Node exists
        self._task = asyncio.create_task(self._run(), name="network-overlay")
        self._task.add_done_callback(log_task_end)

    async def stop(self) -> None:
        task, informer, clients = self._task, self._informer, (self._client, self._node_client)
        self._task, self._informer, self._client, self._node_client = None, None, None, None
        await stop_watch_loop(task, informer, *clients)
        if self._executor is not None:
            # The thread may have entered another namespace: it dies with the executor.
            self._executor.shutdown(wait=False)
            self._executor = None

    async def _run(self) -> None:
        delay_s = RETRY_INITIAL_S
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=RESYNC_INTERVAL_S)
                force = False
            except TimeoutError:
                force = True
            self._wake.clear()
            try:
                await self._reconcile(force=force)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # netlink, iptables or API errors: retry with backoff
                log.warning(
                    "network: reconcile failed (%s: %s); retrying in %.1fs",
                    type(exc).__name__,
                    exc,
                    delay_s,
                    exc_info=log.isEnabledFor(logging.DEBUG),
                )
                self._applied = _Applied()
                await asyncio.sleep(delay_s * random.uniform(0.8, 1.2))
                delay_s = min(delay_s * 2, RETRY_MAX_S)
                self._wake.set()
            else:
                delay_s = RETRY_INITIAL_S

    async def _reconcile(self, *, force: bool) -> None:
        assert self._informer is not None and self.uplink is not None
        uplink = self.uplink
        opts = self.options
        if not self._applied.masquerade or force:
            if (
                not await self._blocking(
                    ensure_masquerade, opts.ipv4_cluster_cidr, opts.chain_prefix
                )
                and not force
            ):
                log.warning("network: no iptables on this machine; pod traffic is not masqueraded")
            self._applied.masquerade = True
        if not self._informer.has_synced:
            return  # a partial list must not remove routes to nodes not seen yet
        own = self._informer.cache.get_by_name(opts.node_name)
        if own is None:
            return
        await self._publish(own, uplink)
        subnet = node_pod_subnet(own)
        if subnet is None:
            return
        await self._write_conflist(subnet, uplink)
        peers = peers_from_nodes(
            self._informer.cache.list(), own_name=opts.node_name, backend=opts.backend
        )
        if force or peers != self._applied.peers or subnet != self._applied.subnet:
            if opts.backend == BACKEND_VXLAN:
                await self._blocking(
                    functools.partial(
                        apply_vxlan,
                        device=opts.vxlan_device,
                        vni=opts.vxlan_vni,
                        cluster_cidr=opts.ipv4_cluster_cidr,
                    ),
                    uplink,
                    subnet,
                    self.mac,
                    peers,
                )
            else:
                await self._blocking(
                    functools.partial(
                        apply_host_gw, device=opts.vxlan_device, cluster_cidr=opts.ipv4_cluster_cidr
                    ),
                    uplink,
                    peers,
                )
            if peers != self._applied.peers:
                log.info(
                    "network: routes to %d node(s): %s",
                    len(peers),
                    ", ".join(f"{p.name}={p.subnet}" for p in peers) or "-",
                )
            self._applied.peers = peers
            self._applied.subnet = subnet
            self.peers = peers
        self.ready.set()

    async def _publish(self, own: Mapping[str, Any], uplink: Uplink) -> None:
        wanted = own_annotations(self.options.backend, uplink.ip, self.mac, self.options.vxlan_vni)
        current = (own.get("metadata") or {}).get("annotations") or {}
        if all(current.get(k) == v for k, v in wanted.items()):
            return
        client = self._node_client or self._client
        assert client is not None
        await client.patch(
            NODES,
            self.options.node_name,
            {"metadata": {"annotations": wanted}},
            patch_type=PatchType.MERGE,
            field_manager=FIELD_MANAGER,
        )

    async def _write_conflist(self, subnet: str, uplink: Uplink) -> None:
        if self.options.cni_conf_dir is None:
            return
        overhead = VXLAN_OVERHEAD_BYTES if self.options.backend == BACKEND_VXLAN else 0
        cfg = CNIConfig(
            pod_cidrs=(subnet,),
            bridge=self.options.bridge,
            ip_masq=False,  # SAMPAN-POSTROUTING masquerades once, for the whole cluster CIDR
            mtu=uplink.mtu - overhead,
            ipam_data_dir=self.options.ipam_data_dir,
        )
        if cfg == self._applied.conflist:
            return
        changed = await asyncio.to_thread(write_conflist, self.options.cni_conf_dir, cfg)
        self._applied.conflist = cfg
        log.info(
            "network: pod CIDR %s, MTU %d; CNI configuration %s",
            subnet,
            cfg.mtu,
            "written" if changed else "unchanged",
        )
