"""Test images built locally, so tests never need a registry.

``busybox_archive`` builds ``docker.io/library/busybox:1.36`` from Debian's static busybox
(package ``busybox-static``): ``/bin/busybox`` plus a symlink per applet at the path busybox
itself lists (``sh``, ``ls``, ``cat``, ``echo``, ``sleep``, ``httpd``, ``wget``, ``nc`` ...),
and a minimal ``/etc/passwd``. The archive is an OCI layout tarball made by the same builder as
the pause image, built once per test session (cached by directory) and deterministic.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from sampan.kubelet.runtime.images import build_oci_archive

__all__ = ["BUSYBOX_IMAGE", "BUSYBOX_PATH", "busybox_archive"]

BUSYBOX_IMAGE = "docker.io/library/busybox:1.36"
BUSYBOX_PATH = Path("/bin/busybox")

_PASSWD = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
_GROUP = b"root:x:0:\nnobody:x:65534:\n"


def _applet_paths(busybox: Path) -> list[str]:
    out = subprocess.run(
        [str(busybox), "--list-full"], check=True, capture_output=True, text=True
    ).stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


def busybox_archive(cache_dir: Path, *, ref: str = BUSYBOX_IMAGE) -> Path:
    """Path of the busybox image archive in ``cache_dir``, built on first use."""
    dest = cache_dir / "busybox-1.36.oci.tar"
    if dest.exists():
        return dest
    busybox = Path(shutil.which("busybox") or BUSYBOX_PATH)
    if not busybox.is_file():
        raise FileNotFoundError("busybox not found: install the Debian package busybox-static")
    symlinks = {
        "/" + path: "/bin/busybox" for path in _applet_paths(busybox) if path != "bin/busybox"
    }
    build_oci_archive(
        dest,
        ref=ref,
        files={"bin/busybox": busybox, "etc/passwd": _PASSWD, "etc/group": _GROUP},
        symlinks=symlinks,
        dirs={"tmp": 0o1777, "root": 0o700, "var/www": 0o755, "etc": 0o755},
        cmd=["sh"],
    )
    return dest
