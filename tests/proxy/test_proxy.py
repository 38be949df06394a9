"""The Proxy against an in-process API server, programming iptables inside a private network
namespace, with real TCP traffic to a ClusterIP and a NodePort."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from sampan.client import Client
from sampan.client.api import ENDPOINTSLICES, SERVICES
from sampan.config import HostNames
from sampan.proxy import Proxy, ProxyOptions
from sampan.proxy.rules import chain_hash
from sampan.supervisor.killall import _flush_iptables
from tests.support.syncloop import wait_sync

from .conftest import ApiServerHarness, Node, sh

SYNC_TIMEOUT_S = 10.0
SVC_CHAIN = "KUBE-SVC-" + chain_hash("default/web:http", "tcp")


def web_service(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "type": "NodePort",
            "clusterIP": "10.43.0.20",
            "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080}],
            **spec,
        },
    }


def web_slice(ip: str) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "web-1",
            "namespace": "default",
            "labels": {"kubernetes.io/service-name": "web"},
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": [ip], "conditions": {"ready": True}, "nodeName": "n1"}],
    }


def _tcp_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    return sock


def _udp_socket(address: tuple[str, int]) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.setblocking(False)
    return sock


def _listen(address: tuple[str, int]) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(address)
    sock.listen(16)
    sock.setblocking(False)
    return sock


async def ask(node: Node, address: tuple[str, int]) -> bytes:
    """Connect from inside the node namespace and read the server's greeting."""
    sock = await node.run(_tcp_socket)
    try:
        async with asyncio.timeout(5):
            await asyncio.get_running_loop().sock_connect(sock, address)
            reader, writer = await asyncio.open_connection(sock=sock)
            data = await reader.read(100)
            writer.close()
            return data
    finally:
        sock.close()


async def test_cluster_ip_and_node_port_traffic_and_cleanup(
    api_server: ApiServerHarness, client: Client, node: Node
) -> None:
    async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hello from pod")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(greet, sock=await node.run(_listen, (node.pod_ip, 8080)))
    config = await api_server.identity_config("system:kube-proxy")
    options = ProxyOptions(node_name="n1", node_ips=(node.node_ip,), netns=node.path)
    await client.create(SERVICES, web_service())
    proxy = Proxy(config, options)
    await proxy.start(None)
    try:
        # no endpoints: rejected in the filter table, no service chain
        saved = node.save()
        assert "default/web:http has no endpoints" in saved and SVC_CHAIN not in saved
        try:
            await ask(node, ("10.43.0.20", 80))
        except ConnectionRefusedError:
            pass
        else:
            raise AssertionError("a service without endpoints must reject")

        await client.create(ENDPOINTSLICES, web_slice(node.pod_ip))
        await wait_sync(proxy, SYNC_TIMEOUT_S)
        saved = node.save()
        assert f":{SVC_CHAIN}" in saved and "has no endpoints" not in saved
        assert await ask(node, ("10.43.0.20", 80)) == b"hello from pod"
        assert await ask(node, (node.node_ip, 30080)) == b"hello from pod"

        # a second sync changes nothing and adds no second jump
        await wait_sync(proxy, SYNC_TIMEOUT_S)
        again = node.save()
        assert again.count("-j KUBE-SERVICES") == saved.count("-j KUBE-SERVICES")
        assert again.count("-j KUBE-POSTROUTING") == 1

        await client.delete(SERVICES, "web", namespace="default")
        await client.delete(ENDPOINTSLICES, "web-1", namespace="default")
        await wait_sync(proxy, SYNC_TIMEOUT_S)
        saved = node.save()
        # only the API server's own default/kubernetes service is left
        chains = {line.split()[0][1:] for line in saved.splitlines() if line.startswith(":K")}
        assert SVC_CHAIN not in chains and "default/web" not in saved
        assert {c for c in chains if c.startswith(("KUBE-SVC-", "KUBE-EXT-"))} <= {
            "KUBE-SVC-NPX46M4PTMTKRN6Y"
        }
    finally:
        await proxy.stop()
        server.close()
        await server.wait_closed()

    # a new proxy (a restart) adds no second jump either
    proxy = Proxy(config, options)
    await proxy.start(None)
    await proxy.stop()
    saved = node.save()
    assert saved.count("-j KUBE-POSTROUTING") == 1
    assert saved.count("-j KUBE-EXTERNAL-SERVICES") == 2  # INPUT and FORWARD
    assert saved.count("-j KUBE-FORWARD") == 1
    await node.run(_flush_iptables, HostNames())
    assert "KUBE-" not in node.save()
    assert "kubernetes service portals" not in node.save()


async def test_service_lb_and_dns_redirect(
    api_server: ApiServerHarness, client: Client, node: Node
) -> None:
    config = await api_server.identity_config("system:kube-proxy")
    options = ProxyOptions(
        node_name="n1",
        node_ips=(node.node_ip,),
        netns=node.path,
        dns_redirect=("10.42.0.5", 5353),
    )
    await client.create(SERVICES, web_service(type="LoadBalancer"))
    proxy = Proxy(config, options)
    await proxy.start(None)
    try:
        await wait_sync(proxy, SYNC_TIMEOUT_S)  # the status patch comes back as an update
        service = await client.get(SERVICES, "web", namespace="default")
        assert service["status"]["loadBalancer"]["ingress"] == [
            {"ip": node.node_ip, "ipMode": "VIP"}
        ]
        saved = node.save()
        for proto in ("udp", "tcp"):
            assert (
                f"-A KUBE-SERVICES -d 10.43.0.10/32 -p {proto} -m comment --comment "
                f'"node-local DNS" -m {proto} --dport 53 -j DNAT --to-destination 10.42.0.5:5353'
            ) in saved
        # a datagram to the kube-dns address reaches the node-local listener
        listener = await node.run(_udp_socket, ("10.42.0.5", 5353))
        sender = await node.run(_udp_socket, ("10.42.0.1", 0))
        try:
            loop = asyncio.get_running_loop()
            await loop.sock_sendto(sender, b"query", ("10.43.0.10", 53))
            async with asyncio.timeout(5):
                data, _peer = await loop.sock_recvfrom(listener, 100)
            assert data == b"query"
        finally:
            listener.close()
            sender.close()
    finally:
        await proxy.stop()
        await node.run(_flush_iptables, HostNames())


async def test_udp_conntrack_follows_endpoint_change(
    api_server: ApiServerHarness, client: Client, node: Node
) -> None:
    """A UDP "connection" pinned by conntrack to a removed endpoint is flushed, so the next
    datagram from the same source port reaches the new endpoint."""
    await node.run(sh_in_ns, node, ("addr", "add", "10.42.0.6/24", "dev", "vb"))
    service = web_service(type="ClusterIP")
    service["spec"]["ports"] = [{"name": "dns", "port": 53, "protocol": "UDP"}]
    await client.create(SERVICES, service)
    endpoint_slice = web_slice(node.pod_ip)
    endpoint_slice["ports"] = [{"name": "dns", "port": 5300, "protocol": "UDP"}]
    await client.create(ENDPOINTSLICES, endpoint_slice)
    first = await node.run(_udp_socket, (node.pod_ip, 5300))
    second = await node.run(_udp_socket, ("10.42.0.6", 5300))
    sender = await node.run(_udp_socket, (node.node_ip, 0))
    options = ProxyOptions(node_name="n1", node_ips=(node.node_ip,), netns=node.path)
    proxy = Proxy(await api_server.identity_config("system:kube-proxy"), options)
    await proxy.start(None)
    loop = asyncio.get_running_loop()
    try:
        await loop.sock_sendto(sender, b"one", ("10.43.0.20", 53))
        async with asyncio.timeout(5):
            assert (await loop.sock_recvfrom(first, 100))[0] == b"one"
        endpoint_slice["endpoints"][0]["addresses"] = ["10.42.0.6"]
        await client.update(ENDPOINTSLICES, endpoint_slice)
        await wait_sync(proxy, SYNC_TIMEOUT_S)
        await loop.sock_sendto(sender, b"two", ("10.43.0.20", 53))
        async with asyncio.timeout(5):
            assert (await loop.sock_recvfrom(second, 100))[0] == b"two"
    finally:
        await proxy.stop()
        for sock in (first, second, sender):
            sock.close()
        await node.run(_flush_iptables, HostNames())


def sh_in_ns(node: Node, argv: tuple[str, ...]) -> None:
    sh("ip", "-n", node.netns, *argv)
