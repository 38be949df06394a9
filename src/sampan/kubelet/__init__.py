"""The node agent's kubelet: pods via CRI, probes, logs/exec/port-forward, status."""
