"""NetworkPolicy enforcement on the node (K3s embeds kube-router's network policy controller
for this job).

* ``sampan.netpol.rules``: pure compilation (NetworkPolicies + Pods + Namespaces -> ipsets and
  filter-table chains, and the ``ipset restore`` / ``iptables-restore`` texts); no I/O.
* ``sampan.netpol.controller``: the ``NetworkPolicyController`` agent component (informers,
  rate-limited sync loop, ipset/iptables calls on a worker thread) and ``cleanup``.

Construct it as ``NetworkPolicyController(ClientConfig.from_kubeconfig(path),
NetworkPolicyOptions(node_name=..., names=names_for_data_dir(data_dir)))``.
"""

from sampan.netpol.controller import (
    NetworkPolicyController,
    NetworkPolicyError,
    NetworkPolicyOptions,
    cleanup,
    names_for_data_dir,
)
from sampan.netpol.rules import Names, name_suffix

__all__ = [
    "Names",
    "NetworkPolicyController",
    "NetworkPolicyError",
    "NetworkPolicyOptions",
    "cleanup",
    "name_suffix",
    "names_for_data_dir",
]
