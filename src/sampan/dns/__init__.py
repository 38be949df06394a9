"""Cluster DNS for Sampan agents (node-local, like a node-local DNS cache).

* ``sampan.dns.records``: ``ClusterRecords``, the pure name -> records logic fed from Service
  and EndpointSlice objects (``Answer``, ``Record``).
* ``sampan.dns.server``: ``DNSServer`` (the agent component, UDP + TCP, forwarding to the host's
  resolvers), ``DNSOptions``, ``read_resolv_conf``.

Construct: ``DNSServer(ClientConfig.from_kubeconfig(<data-dir>/agent/etc/agent.kubeconfig),
DNSOptions(cluster_domain=..., cluster_dns=...))``; it listens on ``DNSServer.address`` /
``DNSServer.port`` (default 169.254.20.10:53 on the dummy interface ``sampan-dns``), where the
proxy sends the kube-dns Service IP.
"""

from sampan.dns.records import Answer, ClusterRecords, Record
from sampan.dns.server import (
    DEFAULT_CLUSTER_DNS,
    DEFAULT_INTERFACE,
    DEFAULT_LISTEN_ADDRESS,
    DEFAULT_LISTEN_PORT,
    DNSOptions,
    DNSServer,
    read_resolv_conf,
)

__all__ = [
    "DEFAULT_CLUSTER_DNS",
    "DEFAULT_INTERFACE",
    "DEFAULT_LISTEN_ADDRESS",
    "DEFAULT_LISTEN_PORT",
    "Answer",
    "ClusterRecords",
    "DNSOptions",
    "DNSServer",
    "Record",
    "read_resolv_conf",
]
