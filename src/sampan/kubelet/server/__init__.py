"""The kubelet's HTTPS API on port 10250, or ``--kubelet-arg=port`` (logs, exec, attach,
port-forward, stats).

``KubeletServer(KubeletServerOptions(...), runtime, lookup=...)`` is the component; see
``server`` for the endpoints and the authorization choice, ``logs`` for the CRI log format,
``upgrade`` for the byte-level upgrade proxy to the runtime's stream server (SPDY and
WebSocket v4 clients), ``bridge`` for the WebSocket v5 exec/attach and SPDY-over-WebSocket
port-forward translation, ``spdy`` for the SPDY/3.1 framing it uses, ``lookup`` for
name -> CRI id (``CRIPodLookup`` from runtime labels, ``PodManagerLookup`` from the kubelet).
"""

from sampan.kubelet.server.logs import LogOptions, LogOptionsError, read_log
from sampan.kubelet.server.lookup import (
    ContainerRef,
    CRIPodLookup,
    NotFoundError,
    PodLookup,
    PodManagerLookup,
    PodSource,
    SandboxRef,
)
from sampan.kubelet.server.server import (
    DEFAULT_ALLOWED_GROUPS,
    DEFAULT_ALLOWED_USERS,
    DEFAULT_KUBELET_PORT,
    KubeletServer,
    KubeletServerOptions,
)

__all__ = [
    "DEFAULT_ALLOWED_GROUPS",
    "DEFAULT_ALLOWED_USERS",
    "DEFAULT_KUBELET_PORT",
    "CRIPodLookup",
    "ContainerRef",
    "KubeletServer",
    "KubeletServerOptions",
    "LogOptions",
    "LogOptionsError",
    "NotFoundError",
    "PodLookup",
    "PodManagerLookup",
    "PodSource",
    "SandboxRef",
    "read_log",
]
