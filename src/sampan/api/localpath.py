"""Facts shared by both halves of the local-path provisioner (K3s's ``rancher.io/local-path``).

The server half (``sampan.controllers.localpath``) creates a hostPath PersistentVolume for a
claim at ``<storage root>/pvc-<claim uid>_<namespace>_<claim name>`` with node affinity to the
node the scheduler chose; the kubelet of that node creates the directory when it mounts it
(``type: DirectoryOrCreate``). The node half (``sampan.kubelet.localpath``) removes the
directory of a Released volume with reclaim policy Delete, then the volume.

``volume_dir`` is the only judge of whether a path may be removed: it must be a direct child
of the storage root, named ``pvc-...``, with no ``..`` element, and stay there once symlinks
are resolved (so neither a crafted PersistentVolume nor a symlink planted in the root can make
a node delete anything else).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_CLASS_NAME",
    "HOSTNAME_LABEL",
    "PROVISIONER",
    "UnsafePath",
    "pv_name",
    "volume_dir",
    "volume_node",
    "volume_path",
]

PROVISIONER = "rancher.io/local-path"
DEFAULT_CLASS_NAME = "local-path"
HOSTNAME_LABEL = "kubernetes.io/hostname"
DIR_PREFIX = "pvc-"


class UnsafePath(ValueError):
    """A local-path volume's path that a node must not touch."""


def pv_name(claim: Mapping[str, Any]) -> str:
    """``pvc-<claim uid>``: the name of the volume provisioned for ``claim`` (upstream's
    external provisioners name their volumes so; it also makes provisioning idempotent)."""
    return f"{DIR_PREFIX}{(claim.get('metadata') or {}).get('uid', '')}"


def volume_path(root: Path, claim: Mapping[str, Any]) -> str:
    """``<root>/pvc-<uid>_<namespace>_<name>`` (the local-path provisioner's layout)."""
    meta = claim.get("metadata") or {}
    return str(root / f"{pv_name(claim)}_{meta.get('namespace', '')}_{meta.get('name', '')}")


def volume_node(volume: Mapping[str, Any]) -> str | None:
    """The node a local-path volume lives on: the single ``kubernetes.io/hostname In [x]``
    value of its required node affinity, or None."""
    required = (((volume.get("spec") or {}).get("nodeAffinity") or {}).get("required")) or {}
    for term in required.get("nodeSelectorTerms") or ():
        for expr in term.get("matchExpressions") or ():
            values = expr.get("values") or []
            if expr.get("key") == HOSTNAME_LABEL and expr.get("operator") == "In":
                if len(values) == 1:
                    return str(values[0])
    return None


def volume_dir(root: Path, path: str) -> Path:
    """The directory ``path`` names, if a node may delete it; else ``UnsafePath``.

    Reads the file system (symlinks): call it from a thread.
    """
    if not path or not path.startswith("/"):
        raise UnsafePath(f"{path!r} is not an absolute path")
    if ".." in path.split("/"):
        raise UnsafePath(f"{path!r} must not contain '..'")
    real_root = Path(os.path.realpath(root))
    candidate = Path(os.path.normpath(path))
    if candidate.parent != Path(os.path.normpath(root)) and candidate.parent != real_root:
        raise UnsafePath(f"{path!r} is not directly inside the storage root {str(root)!r}")
    if not candidate.name.startswith(DIR_PREFIX):
        raise UnsafePath(f"{path!r} is not a local-path volume directory")
    real = Path(os.path.realpath(real_root / candidate.name))
    if real.parent != real_root or real == real_root:
        raise UnsafePath(f"{path!r} resolves outside the storage root {str(root)!r}")
    return real
