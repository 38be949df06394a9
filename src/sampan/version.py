"""Version numbers: Sampan's own, and the Kubernetes API version it serves."""

__version__ = "0.1.0"
KUBERNETES_VERSION = "v1.32.4"
KUBERNETES_MAJOR = "1"
KUBERNETES_MINOR = "32"
