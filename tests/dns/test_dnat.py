"""The node-local design end to end in private network namespaces: a "pod" namespace queries
the cluster DNS IP 10.43.0.10, the "node" namespace DNATs it (as the proxy does) to
169.254.20.10 on the ``sampan-dns`` link, where a server answering from ``ClusterRecords``
listens. Nothing outside the namespaces this test creates is touched."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid

import pytest

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("iptables") is None,
    reason="needs root, iproute2 and iptables",
)

NODE_SERVER = """
import asyncio, sys
from dnslib import DNSRecord
from sampan.dns.records import ClusterRecords
from sampan.dns.server import answer_query, ensure_dummy_interface

ensure_dummy_interface("sampan-dns", "169.254.20.10")
records = ClusterRecords()
records.upsert_service({"metadata": {"name": "web", "namespace": "default"},
                        "spec": {"clusterIP": "10.43.0.80"}})

class Server(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        self.transport = transport
    def datagram_received(self, data, addr):
        self.transport.sendto(answer_query(records, DNSRecord.parse(data))[0].pack(), addr)

async def main():
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(Server, local_addr=("169.254.20.10", 53))
    print("ready", flush=True)
    await loop.run_in_executor(None, sys.stdin.read)  # until the test closes stdin

asyncio.run(main())
"""

POD_CLIENT = """
from dnslib import DNSRecord
raw = DNSRecord.question("web.default.svc.cluster.local").send("10.43.0.10", 53, timeout=5)
print(DNSRecord.parse(raw).rr[0].rdata)
"""


def run(*argv: str) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"{argv}: {result.stderr}"
    return result.stdout


def test_pod_reaches_node_local_dns_through_dnat() -> None:
    suffix = uuid.uuid4().hex[:6]
    node, pod = f"sampan-dnsn-{suffix}", f"sampan-dnsp-{suffix}"
    run("ip", "netns", "add", node)
    try:
        run("ip", "netns", "add", pod)
        try:
            run("ip", "link", "add", "vpod", "netns", pod, "type", "veth", "peer", "name", "vnode",
                "netns", node)  # fmt: skip
            run("ip", "-n", node, "addr", "add", "10.99.0.1/24", "dev", "vnode")
            run("ip", "-n", pod, "addr", "add", "10.99.0.2/24", "dev", "vpod")
            for ns, dev in ((node, "vnode"), (node, "lo"), (pod, "vpod"), (pod, "lo")):
                run("ip", "-n", ns, "link", "set", dev, "up")
            run("ip", "-n", pod, "route", "add", "default", "via", "10.99.0.1")
            run("ip", "netns", "exec", node, "iptables", "-t", "nat", "-A", "PREROUTING",
                "-d", "10.43.0.10", "-p", "udp", "--dport", "53",
                "-j", "DNAT", "--to-destination", "169.254.20.10:53")  # fmt: skip
            server = subprocess.Popen(
                ["ip", "netns", "exec", node, sys.executable, "-c", NODE_SERVER],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            try:
                assert server.stdout is not None and server.stdout.readline().strip() == "ready"
                out = run("ip", "netns", "exec", pod, sys.executable, "-c", POD_CLIENT)
                assert out.strip() == "10.43.0.80"
            finally:
                assert server.stdin is not None
                server.stdin.close()
                server.wait(timeout=10)
        finally:
            run("ip", "netns", "del", pod)
    finally:
        run("ip", "netns", "del", node)
