"""Node networking: the pod subnet's CNI configuration (``cni``); routes and policy later."""

from sampan.network.cni import (
    CNI_CONFLIST_NAME,
    DEFAULT_BRIDGE,
    DEFAULT_NETWORK_NAME,
    CNIConfig,
    CNIConfigWriter,
    render_conflist,
    write_conflist,
)

__all__ = [
    "CNI_CONFLIST_NAME",
    "DEFAULT_BRIDGE",
    "DEFAULT_NETWORK_NAME",
    "CNIConfig",
    "CNIConfigWriter",
    "render_conflist",
    "write_conflist",
]
