"""The node agent's kubelet: pods via CRI, probes, logs/exec/port-forward, status.

The component is ``Kubelet(client_config, KubeletOptions(...))`` (``kubelet.py``); the
runtime layer it drives is ``sampan.kubelet.runtime``. Modules: ``options`` (configuration
and ``--kubelet-arg``), ``node`` (Node registration, status, Lease), ``pods`` (one worker per
pod), ``specs`` (CRI sandbox/container configs), ``status`` (pod status), ``volumes``,
``env``, ``probes``, ``cgroups``, ``static`` (static pods), ``podutil``.
"""

from sampan.kubelet.kubelet import Kubelet
from sampan.kubelet.options import KubeletOptions, KubeletOptionsError, parse_kubelet_args

__all__ = ["Kubelet", "KubeletOptions", "KubeletOptionsError", "parse_kubelet_args"]
