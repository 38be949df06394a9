"""Services on the node: kube-proxy's iptables mode plus a minimal ServiceLB.

* ``sampan.proxy.rules``: pure rule generation (Services + EndpointSlices -> restore text).
* ``sampan.proxy.service``: the ``Proxy`` component (informers, sync loop, iptables-save/
  restore in a worker thread, conntrack cleanup, ServiceLB status).

Construct it as ``Proxy(ClientConfig.from_kubeconfig(path), ProxyOptions(node_name=...,
node_ips=..., cluster_cidr=..., service_cidr=..., args=..., dns_redirect=...))``.
"""

from sampan.proxy.service import Proxy, ProxyOptions, parse_proxy_args

__all__ = ["Proxy", "ProxyOptions", "parse_proxy_args"]
