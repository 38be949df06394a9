"""The Sampan manager: many clusters from one place (issue 24).

A component like the others: it talks to its own ("local") cluster only through the Kubernetes
API, keeps its state there as custom resources in ``management.sampan.io``, and reaches
downstream clusters through tunnels their cluster agents open outward."""
