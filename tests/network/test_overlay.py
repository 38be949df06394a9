"""The overlay between two "hosts" (network namespaces on one bridge), each running the
``Overlay`` component against one in-process API server: devices, neighbour/FDB entries and
routes as flannel keeps them, real TCP traffic between pod addresses, masquerade to the
outside, and a removed node's routes going away."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from sampan.client import Client, PatchType
from sampan.client.api import NODES
from sampan.config import HostNames
from sampan.network.cni import CNI_CONFLIST_NAME
from sampan.network.overlay import (
    ANNOTATION_BACKEND_DATA,
    ANNOTATION_BACKEND_TYPE,
    ANNOTATION_PUBLIC_IP,
    Overlay,
    OverlayError,
    OverlayOptions,
    Peer,
    apply_vxlan,
    resolve_uplink,
    vtep_mac,
)
from sampan.supervisor.killall import _remove_overlay
from tests.network.conftest import ApiServerHarness, Host, Hosts, sh
from tests.support.poll import eventually

CLUSTER_CIDR = "10.42.0.0/16"
WAIT_S = 20.0
IO_TIMEOUT_S = 5.0


def subnet_of(host: Host) -> str:
    return f"10.42.{host.name[1:]}.0/24"


def pod_ip(host: Host) -> str:
    return f"10.42.{host.name[1:]}.5"


async def create_node(client: Client, host: Host) -> None:
    await client.create(
        NODES,
        {"metadata": {"name": host.name}, "spec": {"podCIDR": subnet_of(host)}},
    )
    await client.patch(
        NODES,
        host.name,
        {"status": {"addresses": [{"type": "InternalIP", "address": host.ip}]}},
        patch_type=PatchType.MERGE,
        subresource="status",
    )


def add_pod_address(host: Host) -> None:
    """A "pod" address: on one end of a veth pair inside the host's namespace."""
    host.ip_cmd("link", "add", "pod0", "type", "veth", "peer", "name", "pod0p")
    host.ip_cmd("addr", "add", f"{pod_ip(host)}/32", "dev", "pod0")
    host.ip_cmd("link", "set", "pod0p", "up")
    host.ip_cmd("link", "set", "pod0", "up")


# -- blocking socket helpers, run on a thread inside a host's namespace -----------------------


def listen(address: str) -> socket.socket:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((address, 0))
    server.listen(1)
    server.settimeout(IO_TIMEOUT_S)
    return server


def accept_echo(server: socket.socket) -> str:
    """Accept one connection, echo what it sends, return the peer's address."""
    conn, peer = server.accept()
    with conn:
        conn.settimeout(IO_TIMEOUT_S)
        conn.sendall(conn.recv(64))
    return str(peer[0])


def connect_echo(source: str, target: str, port: int) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(IO_TIMEOUT_S)
        sock.bind((source, 0))
        sock.connect((target, port))
        sock.sendall(b"sampan")
        return sock.recv(64)


async def tcp_peer_seen(client_host: Host, source: str, server_host: Host, target: str) -> str:
    """Connect from ``source`` on one host to ``target`` on the other; the address the server
    saw the connection come from."""
    server = await server_host.run(listen, target)
    try:
        port = server.getsockname()[1]
        accepted = asyncio.ensure_future(server_host.run(accept_echo, server))
        echoed = await client_host.run(connect_echo, source, target, port)
        assert echoed == b"sampan"
        return await accepted
    finally:
        server.close()


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
async def overlays(
    api_server: ApiServerHarness, client: Client, hosts: Hosts, tmp_path: Path
) -> AsyncIterator[Any]:
    started: list[Overlay] = []

    agent: list[Any] = []

    async def start_one(host: Host, backend: str, by_ip: bool) -> Overlay:
        if not agent:
            agent.append(await api_server.identity_config("system:sampan-agent"))
        kubelet = await api_server.identity_config(f"system:node:{host.name}", ("system:nodes",))
        overlay = Overlay(
            agent[0],
            node_client_config=kubelet,
            options=OverlayOptions(
                node_name=host.name,
                backend=backend,
                iface="" if by_ip else "eth0",
                node_ip=host.ip if by_ip else "",
                cluster_cidr=CLUSTER_CIDR,
                cni_conf_dir=tmp_path / host.name / "cni",
                ipam_data_dir=tmp_path / host.name / "ipam",
                netns=host.netns_path,
            ),
        )
        await overlay.start()
        started.append(overlay)
        await asyncio.wait_for(overlay.ready.wait(), WAIT_S)
        return overlay

    async def start(backend: str, by_ip: bool = False) -> list[Overlay]:
        """Both hosts: a pod address, the Node, the overlay (uplink by name or by IP)."""
        for host in hosts.hosts:
            add_pod_address(host)
            await create_node(client, host)
        return [await start_one(host, backend, by_ip) for host in hosts.hosts]

    start.one = start_one  # type: ignore[attr-defined]

    try:
        yield start
    finally:
        for overlay in started:
            await overlay.stop()


# -- tests ------------------------------------------------------------------------------------


async def test_vxlan_between_two_hosts(
    overlays: Any, hosts: Hosts, client: Client,
    tmp_path: Path,
) -> None:  # fmt: skip
    h1, h2 = hosts.hosts
    o1, o2 = await overlays("vxlan")
    await eventually(lambda: _peers_ready(o1, o2), what="each overlay to route to the other")

    # The Node annotations others read.
    node2 = await client.get(NODES, "h2")
    annotations = node2["metadata"]["annotations"]
    assert annotations[ANNOTATION_BACKEND_TYPE] == "vxlan"
    assert annotations[ANNOTATION_PUBLIC_IP] == h2.ip
    assert json.loads(annotations[ANNOTATION_BACKEND_DATA]) == {
        "VNI": 1,
        "VtepMAC": vtep_mac("h2"),
    }

    # The device, as flannel's vxlan backend makes it.
    link = h1.ip_cmd("-d", "link", "show", "sampan.1")
    assert "vxlan id 1 " in link and f"local {h1.ip} " in link and "dstport 8472" in link
    assert "nolearning" in link and "mtu 1450" in link and vtep_mac("h1") in link
    assert "inet 10.42.1.0/32" in h1.ip_cmd("addr", "show", "sampan.1")
    # Per remote node: route, neighbour and FDB entry.
    routes = h1.ip_cmd("route", "show", "10.42.2.0/24")
    assert "via 10.42.2.0 dev sampan.1" in routes and "onlink" in routes
    neigh = h1.ip_cmd("neigh", "show", "dev", "sampan.1")
    assert f"10.42.2.0 lladdr {vtep_mac('h2')} PERMANENT" in neigh
    fdb = sh("bridge", "-n", h1.netns, "fdb", "show", "dev", "sampan.1")
    assert f"{vtep_mac('h2')} dst {h2.ip} self permanent" in fdb

    # The conflist: own subnet, MTU of the uplink minus 50, the bridge's own masquerade off.
    conflist = json.loads((tmp_path / "h1" / "cni" / CNI_CONFLIST_NAME).read_text())
    bridge = conflist["plugins"][0]
    assert bridge["mtu"] == 1450 and bridge["ipMasq"] is False
    assert bridge["ipam"]["ranges"] == [[{"subnet": "10.42.1.0/24"}]]

    # Real traffic pod -> pod across the overlay, both ways, without NAT.
    assert await tcp_peer_seen(h1, pod_ip(h1), h2, pod_ip(h2)) == pod_ip(h1)
    assert await tcp_peer_seen(h2, pod_ip(h2), h1, pod_ip(h1)) == pod_ip(h2)
    # Pod -> outside the cluster CIDR is masqueraded to the node's address.
    assert await tcp_peer_seen(h1, pod_ip(h1), h2, h2.ip) == h1.ip

    # A restart keeps the device (same ifindex) and the other nodes' entries, removes a stale
    # route of ours and leaves a foreign one alone.
    index_before = h1.ip_cmd("-o", "link", "show", "sampan.1").split(":")[0]
    await o1.stop()
    h1.ip_cmd("route", "add", "10.42.77.0/24", "via", h2.ip, "proto", "83")
    h1.ip_cmd("route", "add", "10.99.0.0/24", "via", h2.ip, "proto", "static")
    o1 = await overlays.one(h1, "vxlan", False)  # type: ignore[attr-defined]
    await eventually(lambda: _peers_ready(o1), what="the restarted overlay to route to h2")
    assert h1.ip_cmd("-o", "link", "show", "sampan.1").split(":")[0] == index_before
    assert h1.ip_cmd("route", "show", "10.42.77.0/24").strip() == ""
    assert "10.99.0.0/24" in h1.ip_cmd("route", "show", "10.99.0.0/24")
    assert await tcp_peer_seen(h1, pod_ip(h1), h2, pod_ip(h2)) == pod_ip(h1)
    nat = sh("ip", "netns", "exec", h1.netns, "iptables-save", "-t", "nat")
    assert nat.count("-j SAMPAN-POSTROUTING") == 1 and nat.count("-j MASQUERADE") == 1

    # A node removed: its route, neighbour and FDB entry go.
    await client.delete(NODES, "h2")
    await eventually(lambda: _no_peers(o1), what="h1 to drop h2")
    assert h1.ip_cmd("route", "show", "10.42.2.0/24").strip() == ""
    assert "10.42.2.0" not in h1.ip_cmd("neigh", "show", "dev", "sampan.1")
    assert vtep_mac("h2") not in sh("bridge", "-n", h1.netns, "fdb", "show", "dev", "sampan.1")

    # Switching the node to host-gw removes the VXLAN device.
    await o1.stop()
    await overlays.one(h1, "host-gw", False)  # type: ignore[attr-defined]
    assert "sampan.1" not in h1.ip_cmd("link", "show")


async def test_host_gw_between_two_hosts(
    overlays: Any, hosts: Hosts, client: Client,
    tmp_path: Path,
) -> None:  # fmt: skip
    h1, h2 = hosts.hosts
    o1, o2 = await overlays("host-gw", by_ip=True)
    await eventually(lambda: _peers_ready(o1, o2), what="each overlay to route to the other")

    assert "sampan.1" not in h1.ip_cmd("link", "show")
    routes = h1.ip_cmd("route", "show", "10.42.2.0/24")
    assert f"via {h2.ip} dev eth0" in routes and "proto 83" in routes
    node1 = await client.get(NODES, "h1")
    annotations = node1["metadata"]["annotations"]
    assert annotations[ANNOTATION_BACKEND_TYPE] == "host-gw"
    assert ANNOTATION_BACKEND_DATA not in annotations
    conflist = json.loads((tmp_path / "h1" / "cni" / CNI_CONFLIST_NAME).read_text())
    assert conflist["plugins"][0]["mtu"] == 1500

    assert await tcp_peer_seen(h1, pod_ip(h1), h2, pod_ip(h2)) == pod_ip(h1)
    assert await tcp_peer_seen(h2, pod_ip(h2), h1, pod_ip(h1)) == pod_ip(h2)

    nat = sh("ip", "netns", "exec", h1.netns, "iptables-save", "-t", "nat")
    assert "-A POSTROUTING" in nat and "-j SAMPAN-POSTROUTING" in nat
    assert nat.count("-j SAMPAN-POSTROUTING") == 1  # the jump is added once only

    # Deleting h2 removes its route; on h2, killall's overlay step removes the rest.
    await client.delete(NODES, "h2")
    await eventually(lambda: _no_peers(o1), what="h1 to drop h2")
    assert h1.ip_cmd("route", "show", "proto", "83").strip() == ""
    await o2.stop()
    assert "10.42.1.0/24" in h2.ip_cmd("route", "show", "proto", "83")
    assert await h2.run(_remove_overlay, HostNames(), None) == 1
    assert h2.ip_cmd("route", "show", "proto", "83").strip() == ""


async def test_unknown_interface_fails_at_start(api_server: ApiServerHarness, hosts: Hosts) -> None:
    h1 = hosts.hosts[0]
    agent = await api_server.identity_config("system:sampan-agent")
    overlay = Overlay(agent, OverlayOptions(node_name="h1", iface="nosuch0", netns=h1.netns_path))
    with pytest.raises(OverlayError, match="nosuch0"):
        await overlay.start()
    await overlay.stop()


async def _peers_ready(*overlays: Overlay) -> bool:
    return all(len(o.peers) == 1 for o in overlays)


async def _no_peers(overlay: Overlay) -> bool:
    return not overlay.peers


CNI_BIN_DIR = Path("/usr/lib/cni")


def cni_add(host: Host, pod: Host, conflist_path: Path, container_id: str) -> str:
    """Run the conflist's bridge plugin in ``host`` for the ``pod`` namespace, as containerd
    would; the pod's address."""
    conflist = json.loads(conflist_path.read_text())
    conf = {**conflist["plugins"][0], "cniVersion": conflist["cniVersion"], "name": "sampan"}
    env = {
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": container_id,
        "CNI_NETNS": str(pod.netns_path),
        "CNI_IFNAME": "eth0",
        "CNI_PATH": str(CNI_BIN_DIR),
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
    }
    result = subprocess.run(
        ["ip", "netns", "exec", host.netns, str(CNI_BIN_DIR / "bridge")],
        input=json.dumps(conf),
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    address = json.loads(result.stdout)["ips"][0]["address"]
    return str(address.split("/")[0])


@pytest.mark.skipif(not (CNI_BIN_DIR / "bridge").exists(), reason="no CNI plugins")
async def test_pods_behind_the_cni_bridge_reach_each_other(
    overlays: Any, hosts: Hosts, tmp_path: Path
) -> None:
    """Pods made by the CNI bridge plugin from the written conflist: MTU, no NAT between pods
    on two nodes, masquerade to an address outside the cluster CIDR."""
    h1, h2 = hosts.hosts
    await overlays("vxlan")
    pods: list[tuple[Host, str]] = []
    for host in (h1, h2):
        pod = hosts.add_netns(f"{host.name}pod")
        conflist = tmp_path / host.name / "cni" / CNI_CONFLIST_NAME
        ip = await asyncio.to_thread(cni_add, host, pod, conflist, f"pod-{host.name}")
        assert ip.startswith(f"10.42.{host.name[1:]}.")
        assert "mtu 1450" in pod.ip_cmd("link", "show", "eth0")
        assert (tmp_path / host.name / "ipam" / "sampan" / ip).exists()
        pods.append((pod, ip))
    (pod1, ip1), (pod2, ip2) = pods
    assert await tcp_peer_seen(pod1, ip1, pod2, ip2) == ip1
    assert await tcp_peer_seen(pod2, ip2, pod1, ip1) == ip2
    assert await tcp_peer_seen(pod1, ip1, h2, h2.ip) == h1.ip


async def test_a_named_cluster_leaves_the_other_clusters_device_and_routes(hosts: Hosts) -> None:
    """Two clusters' data planes on one host: each syncs and removes only its own VXLAN device
    and the routes into its own cluster CIDR."""
    h1, _ = hosts.hosts
    uplink = await h1.run(resolve_uplink, "eth0", "")
    peer = Peer("h2", "10.42.2.0/24", hosts.hosts[1].ip, vtep_mac("h2"))
    await h1.run(apply_vxlan, uplink, "10.42.1.0/24", vtep_mac("h1"), [peer])
    other = Peer("h2", "10.152.2.0/24", hosts.hosts[1].ip, vtep_mac("h2", 77))
    named = functools.partial(apply_vxlan, device="sampan-b", vni=77, cluster_cidr="10.152.0.0/16")
    await h1.run(named, uplink, "10.152.1.0/24", vtep_mac("h1", 77), [other])
    links = h1.ip_cmd("-d", "link", "show")
    assert "sampan.1" in links and "sampan-b" in links and "vxlan id 77" in links
    routes = h1.ip_cmd("route", "show", "proto", "83")
    assert "10.42.2.0/24" in routes and "10.152.2.0/24" in routes
    # the named cluster loses its peer: the unnamed cluster's route stays
    await h1.run(named, uplink, "10.152.1.0/24", vtep_mac("h1", 77), [])
    routes = h1.ip_cmd("route", "show", "proto", "83")
    assert "10.42.2.0/24" in routes and "10.152.2.0/24" not in routes
    # and the named cluster's cleanup removes its device only
    named_cluster = HostNames(cluster_name="b", vxlan_device="sampan-b", vxlan_vni=77)
    assert await h1.run(_remove_overlay, named_cluster, "10.152.0.0/16") == 1
    links = h1.ip_cmd("link", "show")
    assert "sampan.1" in links and "sampan-b" not in links
    assert "10.42.2.0/24" in h1.ip_cmd("route", "show", "proto", "83")
