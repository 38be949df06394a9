"""resolv.conf parsing and the upstream list a DNSServer keeps."""

from __future__ import annotations

from pathlib import Path

from sampan.client import ClientConfig
from sampan.dns import DNSOptions, DNSServer, read_resolv_conf


def test_read_resolv_conf(tmp_path: Path) -> None:
    path = tmp_path / "resolv.conf"
    path.write_text(
        "# generated\nsearch example.com\nnameserver 127.0.0.53\n"
        "nameserver fe80::1%eth0\nnameserver not-an-ip\noptions edns0\nnameserver 10.0.0.2\n"
    )
    assert read_resolv_conf(path) == (("127.0.0.53", 53), ("fe80::1", 53), ("10.0.0.2", 53))
    assert read_resolv_conf(tmp_path / "missing") == ()


def test_upstreams_never_point_back_at_cluster_dns() -> None:
    options = DNSOptions(
        listen_address="169.254.20.10",
        listen_port=53,
        upstreams=(("169.254.20.10", 53), ("10.43.0.10", 53), ("1.1.1.1", 53)),
    )
    server = DNSServer(ClientConfig(server="https://127.0.0.1:1"), options)
    assert server.upstreams == (("1.1.1.1", 53),)
