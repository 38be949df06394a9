"""Node networking: the pod subnet's CNI configuration (``cni``) and the pod network between
nodes (``overlay``: vxlan or host-gw routes, masquerade); policy later."""

from sampan.network.cni import (
    CNI_CONFLIST_NAME,
    DEFAULT_BRIDGE,
    DEFAULT_NETWORK_NAME,
    CNIConfig,
    render_conflist,
    write_conflist,
)
from sampan.network.overlay import Overlay, OverlayError, OverlayOptions, remove_dataplane

__all__ = [
    "CNI_CONFLIST_NAME",
    "DEFAULT_BRIDGE",
    "DEFAULT_NETWORK_NAME",
    "CNIConfig",
    "Overlay",
    "OverlayError",
    "OverlayOptions",
    "remove_dataplane",
    "render_conflist",
    "write_conflist",
]
