"""ensure_dummy_interface in a network namespace this test creates (nothing else is touched):
the link (dummy, or an empty bridge where the kernel has no dummy driver) carries the address,
is up, and a second call changes nothing. Then a DNS query over that node-local address, from
inside the namespace."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid

import pytest

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None, reason="needs root and iproute2"
)

SCRIPT = """
import asyncio, sys
from dnslib import DNSRecord
from sampan.dns.records import ClusterRecords
from sampan.dns.server import ensure_dummy_interface, answer_query

ensure_dummy_interface("sampan-dns", "169.254.20.10")
ensure_dummy_interface("sampan-dns", "169.254.20.10")

async def main():
    records = ClusterRecords()
    records.upsert_service({"metadata": {"name": "web", "namespace": "default"},
                            "spec": {"clusterIP": "10.43.0.80"}})

    class Proto(asyncio.DatagramProtocol):
        def connection_made(self, t):
            self.t = t
        def datagram_received(self, data, addr):
            reply, _ = answer_query(records, DNSRecord.parse(data))
            self.t.sendto(reply.pack(), addr)

    loop = asyncio.get_running_loop()
    server, _ = await loop.create_datagram_endpoint(Proto, local_addr=("169.254.20.10", 53))
    raw = await asyncio.to_thread(
        DNSRecord.question("web.default.svc.cluster.local").send, "169.254.20.10", 53, timeout=5
    )
    server.close()
    print(DNSRecord.parse(raw).rr[0].rdata)

asyncio.run(main())
"""


def run(*argv: str) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_dummy_interface_in_netns() -> None:
    netns = f"sampan-dns-test-{uuid.uuid4().hex[:8]}"
    run("ip", "netns", "add", netns)
    try:
        run("ip", "netns", "exec", netns, "ip", "link", "set", "lo", "up")
        out = run("ip", "netns", "exec", netns, sys.executable, "-c", SCRIPT)
        assert out.strip() == "10.43.0.80"
        link = run("ip", "netns", "exec", netns, "ip", "-o", "addr", "show", "dev", "sampan-dns")
        assert link.count("169.254.20.10/32") == 1
        state = run("ip", "netns", "exec", netns, "ip", "-o", "link", "show", "sampan-dns")
        assert "UP" in state
        details = run("ip", "netns", "exec", netns, "ip", "-d", "-o", "link", "show", "sampan-dns")
        assert " dummy " in details or " bridge " in details
    finally:
        run("ip", "netns", "del", netns)
