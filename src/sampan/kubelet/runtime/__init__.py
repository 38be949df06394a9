"""The agent's container runtime layer: the containerd child, the CRI client, local images."""
