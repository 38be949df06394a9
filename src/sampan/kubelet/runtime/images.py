"""Local images: Sampan's own pause image, and importing image archives into containerd.

The pause image is built here, in Python, from Debian's static ``catatonit``: a single-layer
OCI image whose only file is ``/pause`` and whose entrypoint is ``["/pause", "-P"]``. It is
imported at agent start and never pulled. ``build_oci_archive`` is the general builder (the
tests build their busybox image with it too). Builds are deterministic: the same inputs give
the same archive bytes, hence the same digests.

Every archive in ``<data-dir>/agent/images/`` (``.tar``, ``.tar.gz``, ``.tar.zst``; OCI
layout or docker-archive, compression detected from the bytes) is imported at start and
whenever a new file appears there and has stopped growing (K3s airgap behaviour). Imports go
through containerd itself (``ctr -n k8s.io images import``) so the CRI plugin sees the images
with their tags.

Invariants:

* when ``import_archive`` returns, CRI lists the archive's images with their tags;
* an archive whose sha256 is in the import index, and whose images the runtime still has, is
  not imported again; the index (archive sha256 -> image refs) is written atomically;
* imports run one at a time; hashing, decompressing and file writes run in a thread, ``ctr``
  runs as a subprocess: nothing blocks the event loop;
* an archive that fails to import is logged and retried with backoff, or at once when the
  file changes; a failure never stops the watcher.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import io
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from sampan.kubelet.runtime import cri

__all__ = [
    "CATATONIT_PATH",
    "CRI_NAMESPACE",
    "IMAGE_ARCHIVE_SUFFIXES",
    "IMAGE_DIR_POLL_INTERVAL_S",
    "IMAGE_VISIBLE_TIMEOUT_S",
    "IMPORT_TIMEOUT_S",
    "ImageImportError",
    "ImageImporter",
    "ImportResult",
    "build_oci_archive",
    "build_pause_archive",
    "oci_architecture",
]

log = logging.getLogger("sampan.kubelet.runtime.images")

CATATONIT_PATH = Path("/usr/bin/catatonit")
"""Debian's static catatonit (package ``catatonit``): the pause image's only binary."""

CRI_NAMESPACE = "k8s.io"
"""containerd namespace of the CRI plugin: images imported elsewhere are invisible to CRI."""

IMAGE_ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.zst", ".tar.zstd")
IMAGE_DIR_POLL_INTERVAL_S = 5.0
IMPORT_TIMEOUT_S = 600.0
"""One ``ctr images import`` may take this long (a big archive on a slow disk)."""

IMAGE_VISIBLE_TIMEOUT_S = 10.0
"""After ``ctr import``, how long CRI may take to list the images."""

IMPORT_RETRY_START_S = 10.0
IMPORT_RETRY_MAX_S = 600.0
_VISIBLE_POLL_INTERVAL_S = 0.02
_EPOCH = "1970-01-01T00:00:00Z"
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_HASH_CHUNK_BYTES = 1 << 20
_UNPACKING_LINE = re.compile(r"^unpacking (\S+) \((sha256:[0-9a-f]{64})\)")

_MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
_MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
_MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
_MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar"


class ImageImportError(Exception):
    """An image archive could not be imported."""


def oci_architecture() -> str:
    """This machine's architecture in OCI words (amd64, arm64, ...)."""
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}.get(
        machine, machine
    )


def _tar_info(
    name: str, *, mode: int, kind: bytes = tarfile.REGTYPE, size: int = 0
) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.size = size
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def _layer_tar(
    files: Mapping[str, bytes | Path],
    symlinks: Mapping[str, str],
    dirs: Mapping[str, int],
) -> bytes:
    """An uncompressed layer tar. Parent directories are added (0755) when not given."""
    entries: dict[str, tuple[str, object]] = {}
    for path, mode in dirs.items():
        entries[path.strip("/")] = ("dir", mode)
    for path, target in symlinks.items():
        entries[path.strip("/")] = ("symlink", target)
    for path, content in files.items():
        entries[path.strip("/")] = ("file", content)
    for name in list(entries):
        parent = os.path.dirname(name)
        while parent and parent not in entries:
            entries[parent] = ("dir", 0o755)
            parent = os.path.dirname(parent)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(entries):
            kind, value = entries[name]
            if kind == "dir":
                assert isinstance(value, int)
                tar.addfile(_tar_info(name, mode=value, kind=tarfile.DIRTYPE))
            elif kind == "symlink":
                assert isinstance(value, str)
                info = _tar_info(name, mode=0o777, kind=tarfile.SYMTYPE)
                info.linkname = value
                tar.addfile(info)
            else:
                if isinstance(value, Path):
                    data = value.read_bytes()
                    mode = value.stat().st_mode & 0o7777
                else:
                    assert isinstance(value, bytes)
                    data, mode = value, 0o644
                tar.addfile(_tar_info(name, mode=mode, size=len(data)), io.BytesIO(data))
    return buffer.getvalue()


def _blob(data: bytes) -> tuple[str, dict[str, object]]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    return digest, {"digest": digest, "size": len(data)}


def _json_bytes(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def build_oci_archive(
    dest: Path,
    *,
    ref: str,
    extra_refs: Sequence[str] = (),
    files: Mapping[str, bytes | Path],
    symlinks: Mapping[str, str] | None = None,
    dirs: Mapping[str, int] | None = None,
    entrypoint: Sequence[str] = (),
    cmd: Sequence[str] = (),
    env: Sequence[str] = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",),
    working_dir: str = "/",
    labels: Mapping[str, str] | None = None,
) -> str:
    """Write a single-layer OCI image archive (OCI layout in a tar) tagged ``ref`` (and each
    of ``extra_refs``: one index entry per name, all for the same manifest) to ``dest``;
    returns the manifest digest. ``files`` maps image paths to bytes (mode 0644)
    or to host files (copied with their mode). Blocking: run it in a thread."""
    layer = _layer_tar(files, symlinks or {}, dirs or {})
    layer_digest, layer_desc = _blob(layer)
    config = {
        "architecture": oci_architecture(),
        "os": "linux",
        "created": _EPOCH,
        "config": {
            "Entrypoint": list(entrypoint) or None,
            "Cmd": list(cmd) or None,
            "Env": list(env),
            "WorkingDir": working_dir,
            "Labels": dict(labels or {}) or None,
        },
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        "history": [{"created": _EPOCH, "created_by": "sampan build_oci_archive"}],
    }
    config_bytes = _json_bytes(config)
    config_digest, config_desc = _blob(config_bytes)
    manifest = {
        "schemaVersion": 2,
        "mediaType": _MEDIA_MANIFEST,
        "config": {"mediaType": _MEDIA_CONFIG, **config_desc},
        "layers": [{"mediaType": _MEDIA_LAYER, **layer_desc}],
    }
    manifest_bytes = _json_bytes(manifest)
    manifest_digest, manifest_desc = _blob(manifest_bytes)
    index = {
        "schemaVersion": 2,
        "mediaType": _MEDIA_INDEX,
        "manifests": [
            {
                "mediaType": _MEDIA_MANIFEST,
                **manifest_desc,
                "platform": {"architecture": oci_architecture(), "os": "linux"},
                "annotations": {
                    "io.containerd.image.name": name,
                    "org.opencontainers.image.ref.name": (
                        name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else "latest"
                    ),
                },
            }
            for name in (ref, *extra_refs)
        ],
    }
    members = [
        ("oci-layout", _json_bytes({"imageLayoutVersion": "1.0.0"})),
        ("index.json", _json_bytes(index)),
        (f"blobs/sha256/{layer_digest.removeprefix('sha256:')}", layer),
        (f"blobs/sha256/{config_digest.removeprefix('sha256:')}", config_bytes),
        (f"blobs/sha256/{manifest_digest.removeprefix('sha256:')}", manifest_bytes),
    ]
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    with tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for directory in ("blobs", "blobs/sha256"):
            tar.addfile(_tar_info(directory, mode=0o755, kind=tarfile.DIRTYPE))
        for name, data in members:
            tar.addfile(_tar_info(name, mode=0o644, size=len(data)), io.BytesIO(data))
    os.replace(tmp, dest)
    return manifest_digest


def build_pause_archive(dest: Path, *, ref: str, catatonit: Path = CATATONIT_PATH) -> str:
    """Sampan's pause image: catatonit as ``/pause``, entrypoint ``["/pause", "-P"]``.
    Returns the manifest digest. Blocking: run it in a thread."""
    if not catatonit.is_file():
        raise ImageImportError(
            f"{catatonit} not found: install the Debian package catatonit (the pause image "
            "is built from it)"
        )
    return build_oci_archive(
        dest,
        ref=ref,
        files={"pause": catatonit},
        entrypoint=["/pause", "-P"],
        env=(),
        labels={"io.sampan.image": "pause"},
    )


@dataclass(frozen=True)
class ImportResult:
    """What importing one archive did: the image refs it holds, and whether it was skipped
    because the index says it was imported before."""

    path: Path
    sha256: str
    refs: tuple[str, ...]
    skipped: bool


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _is_archive(path: Path) -> bool:
    return path.is_file() and path.name.endswith(IMAGE_ARCHIVE_SUFFIXES)


def _read_index(path: Path) -> dict[str, list[str]]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable image import index %s: %s", path, exc)
        return {}
    entries = data.get("imported", {}) if isinstance(data, dict) else {}
    return {str(k): [str(r) for r in v] for k, v in entries.items() if isinstance(v, list)}


def _write_index(path: Path, entries: Mapping[str, Sequence[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump({"imported": {k: list(v) for k, v in entries.items()}}, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _decompressed_copy(path: Path, tmp_dir: Path) -> Path | None:
    """A decompressed temporary copy of ``path`` if it is gzip or zstd, else None."""
    with path.open("rb") as f:
        magic = f.read(4)
    if magic.startswith(_GZIP_MAGIC):
        opener = "gzip"
    elif magic == _ZSTD_MAGIC:
        opener = "zstd"
    else:
        return None
    tmp_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="import-", suffix=".tar", dir=tmp_dir)
    out_path = Path(tmp)
    try:
        with os.fdopen(fd, "wb") as out:
            if opener == "gzip":
                with gzip.open(path, "rb") as src:
                    shutil.copyfileobj(src, out, _HASH_CHUNK_BYTES)
            else:
                if shutil.which("zstd") is None:
                    raise ImageImportError(
                        f"{path} is zstd-compressed: install the Debian package zstd"
                    )
                with path.open("rb") as src:
                    subprocess.run(["zstd", "-d", "-c"], stdin=src, stdout=out, check=True)
    except BaseException:
        out_path.unlink(missing_ok=True)
        raise
    return out_path


_Signature = tuple[int, int]


@dataclass(frozen=True)
class _Retry:
    signature: _Signature
    at: float
    backoff_s: float


class ImageImporter:
    """Imports image archives into containerd (namespace k8s.io) through ``ctr``.

    ``address`` is containerd's socket; ``index_path`` the JSON import index (keep it beside
    containerd's root so that wiping the root also forgets what was imported);
    ``snapshotter`` the one the CRI plugin uses, so images are unpacked where CRI looks.
    """

    def __init__(
        self,
        *,
        address: Path,
        images: cri.ImageClient,
        index_path: Path,
        snapshotter: str | None = None,
        namespace: str = CRI_NAMESPACE,
        import_timeout_s: float = IMPORT_TIMEOUT_S,
        visible_timeout_s: float = IMAGE_VISIBLE_TIMEOUT_S,
    ) -> None:
        self.visible_timeout_s = visible_timeout_s
        self.address = address
        self.images = images
        self.index_path = index_path
        self.snapshotter = snapshotter
        self.namespace = namespace
        self.import_timeout_s = import_timeout_s
        self._lock = asyncio.Lock()
        self._handled: dict[Path, _Signature] = {}
        self._retries: dict[Path, _Retry] = {}
        self._tmp_dir = index_path.parent / "import-tmp"

    async def _all_present(self, refs: Sequence[str]) -> bool:
        for ref in refs:
            if await self.images.image_status(ref) is None:
                return False
        return True

    async def import_archive(self, path: Path, *, force: bool = False) -> ImportResult:
        """Import one archive unless the index says it was, and its images are still there
        (``force``: import anyway, e.g. when one of its names was since moved to another
        image)."""
        async with self._lock:
            sha256 = await asyncio.to_thread(_file_sha256, path)
            index = await asyncio.to_thread(_read_index, self.index_path)
            known = index.get(sha256)
            if known and not force and await self._all_present(known):
                log.debug("image archive %s already imported: %s", path, ", ".join(known))
                return ImportResult(path, sha256, tuple(known), skipped=True)
            refs = await self._ctr_import(path)
            await self._wait_visible(refs)
            index[sha256] = refs
            await asyncio.to_thread(_write_index, self.index_path, index)
            log.info("imported image archive %s: %s", path, ", ".join(refs) or "(no named image)")
            return ImportResult(path, sha256, tuple(refs), skipped=False)

    async def _wait_visible(self, refs: Sequence[str]) -> None:
        """CRI learns of imported images from containerd events, asynchronously: wait until
        it lists them, so that callers may use an image as soon as its import returns."""
        deadline = time.monotonic() + self.visible_timeout_s
        while not await self._all_present(refs):
            if time.monotonic() >= deadline:
                raise ImageImportError(
                    f"imported {', '.join(refs)} but CRI does not list them after "
                    f"{self.visible_timeout_s:g}s"
                )
            await asyncio.sleep(_VISIBLE_POLL_INTERVAL_S)

    async def _ctr_import(self, path: Path) -> list[str]:
        plain = await asyncio.to_thread(_decompressed_copy, path, self._tmp_dir)
        argv = ["ctr", "--address", str(self.address), "-n", self.namespace, "images", "import"]
        if self.snapshotter:
            argv += ["--snapshotter", self.snapshotter]
        argv.append(str(plain or path))
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            try:
                output, _ = await asyncio.wait_for(proc.communicate(), self.import_timeout_s)
            except TimeoutError:
                proc.kill()
                await proc.wait()
                raise ImageImportError(
                    f"importing {path} took longer than {self.import_timeout_s:g}s"
                ) from None
        finally:
            if plain is not None:
                await asyncio.to_thread(plain.unlink, missing_ok=True)
        text = output.decode(errors="replace")
        if proc.returncode != 0:
            raise ImageImportError(f"ctr images import {path} failed: {text.strip()}")
        refs = [m.group(1) for line in text.splitlines() if (m := _UNPACKING_LINE.match(line))]
        return refs

    async def import_dir(self, images_dir: Path) -> list[ImportResult]:
        """Import every archive in ``images_dir`` (sorted by name); failures are logged and
        retried by ``watch``."""
        async with self._lock:
            # Decompressed copies left by an agent killed in the middle of an import.
            await asyncio.to_thread(shutil.rmtree, self._tmp_dir, ignore_errors=True)
        results = []
        for path in await asyncio.to_thread(_list_archives, images_dir):
            result = await self._import_logged(path)
            if result is not None:
                results.append(result)
        return results

    async def _import_logged(self, path: Path) -> ImportResult | None:
        signature = await asyncio.to_thread(_signature, path)
        try:
            result = await self.import_archive(path)
        except (ImageImportError, cri.CRIError, OSError) as exc:
            retry = self._retries.get(path)
            backoff_s = IMPORT_RETRY_START_S
            if retry is not None and retry.signature == signature:
                backoff_s = min(retry.backoff_s * 2, IMPORT_RETRY_MAX_S)
            self._retries[path] = _Retry(signature, time.monotonic() + backoff_s, backoff_s)
            log.error(
                "could not import image archive %s (retrying in %gs): %s", path, backoff_s, exc
            )
            return None
        self._retries.pop(path, None)
        self._handled[path] = signature
        return result

    def _due(self, path: Path, signature: _Signature) -> bool:
        if self._handled.get(path) == signature:
            return False
        retry = self._retries.get(path)
        return retry is None or retry.signature != signature or time.monotonic() >= retry.at

    async def watch(
        self, images_dir: Path, *, poll_interval_s: float = IMAGE_DIR_POLL_INTERVAL_S
    ) -> None:
        """Forever: import each archive that appears in (or changes in) ``images_dir`` once
        its size and mtime are the same on two polls in a row (so a copy in progress is not
        imported half-written); retry failed ones with backoff (10 s doubling to 10 min),
        or at once when the file changes."""
        previous = await asyncio.to_thread(_signatures, images_dir)
        while True:
            await asyncio.sleep(poll_interval_s)
            current = await asyncio.to_thread(_signatures, images_dir)
            for path, signature in sorted(current.items()):
                if previous.get(path) == signature and self._due(path, signature):
                    await self._import_logged(path)
            previous = current


def _signature(path: Path) -> _Signature:
    st = path.stat()
    return (st.st_size, st.st_mtime_ns)


def _list_archives(images_dir: Path) -> list[Path]:
    if not images_dir.is_dir():
        return []
    return sorted(p for p in images_dir.iterdir() if _is_archive(p))


def _signatures(images_dir: Path) -> dict[Path, _Signature]:
    result = {}
    for path in _list_archives(images_dir):
        with contextlib.suppress(FileNotFoundError):
            result[path] = _signature(path)
    return result
