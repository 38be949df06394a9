"""The agent's container runtime layer: the containerd child, the CRI client, local images.

``ContainerRuntime`` (service) is the component the agent starts; ``cri`` is the client the
kubelet talks through (``cri.pb`` holds the CRI message types); ``containerd`` and ``images``
are its parts.
"""

from sampan.kubelet.runtime.containerd import (
    DEFAULT_SANDBOX_IMAGE,
    Containerd,
    ContainerdConfig,
    ContainerdError,
    MissingBinariesError,
    render_config,
)
from sampan.kubelet.runtime.cri import (
    AlreadyExistsError,
    CRIConnection,
    CRIError,
    DeadlineExceededError,
    ImageClient,
    InvalidArgumentError,
    NotFoundError,
    RuntimeClient,
    UnavailableError,
    UnimplementedError,
    connect,
    pb,
)
from sampan.kubelet.runtime.images import (
    ImageImporter,
    ImageImportError,
    ImportResult,
    build_oci_archive,
    build_pause_archive,
)
from sampan.kubelet.runtime.service import ContainerRuntime

__all__ = [
    "DEFAULT_SANDBOX_IMAGE",
    "AlreadyExistsError",
    "CRIConnection",
    "CRIError",
    "ContainerRuntime",
    "Containerd",
    "ContainerdConfig",
    "ContainerdError",
    "DeadlineExceededError",
    "ImageClient",
    "ImageImportError",
    "ImageImporter",
    "ImportResult",
    "InvalidArgumentError",
    "MissingBinariesError",
    "NotFoundError",
    "RuntimeClient",
    "UnavailableError",
    "UnimplementedError",
    "build_oci_archive",
    "build_pause_archive",
    "connect",
    "pb",
    "render_config",
]
