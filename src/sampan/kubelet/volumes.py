"""Pod volumes on the host: ``<kubelet-dir>/pods/<uid>/volumes/<plugin>/<name>``.

Supported: emptyDir (disk, or ``medium: Memory`` as a tmpfs with ``sizeLimit``), hostPath
(with its ``type`` checks), configMap, secret (tmpfs), downwardAPI, projected (configMap,
secret, downwardAPI, serviceAccountToken, with the token refreshed before it expires) and
persistentVolumeClaim bound to a hostPath or local PersistentVolume (a local-path volume's
directory is made on first mount with mode 0777, as the local-path provisioner makes it;
``volumeMode: Block`` is refused).

File-backed volumes are written as upstream's atomic writer does: the files live in a
timestamped ``..<random>`` directory, ``..data`` is a symlink to it, and each visible name is
a symlink through ``..data``; an update writes a new directory and swaps ``..data`` with one
``rename``, so a reader in the container sees either the old or the new set, never a mix.

Modes and ownership (upstream's): the kubelet directory, ``pods/``, each pod's directory,
its ``volumes/`` and the per-plugin directories are ``0750`` root:root, so no other user of
the host can reach a pod's files (a container sees only its bind mount, never these parents).
Files keep upstream's modes: ``defaultMode`` / per-item ``mode`` (default ``0644``), a mode
outside 0..0777 or of the wrong type fails the mount. With ``fsGroup``, a volume is made
group-owned as upstream's ``SetVolumeOwnership`` does: gid fsGroup on every entry, ``g+r``
on files of read-only volumes, ``g+rx`` and setgid on directories (emptyDir: its root gets
gid fsGroup, ``2777``). A projected service-account token is ``0600`` when the pod has an
fsGroup or one common runAsUser (its owner then), ``0640`` once the fsGroup mask applies.
Directories of existing pods are corrected at their next sync.

Invariants: ``setup`` is idempotent (called on every pod sync; it only rewrites what
changed); ``teardown`` unmounts every mount under the pod's directory, then deletes it. All
file-system work runs in a thread (``asyncio.to_thread``); the token request is async.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ctypes
import ctypes.util
import logging
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from sampan.api.localpath import PROVISIONER as LOCAL_PATH_PROVISIONER
from sampan.api.strictfields import FieldTypeError, get_bool, get_int
from sampan.kubelet import specs
from sampan.kubelet.env import ConfigError, Sources, field_ref_value, resource_field_value
from sampan.kubelet.podutil import quantity

__all__ = [
    "DEFAULT_TOKEN_EXPIRATION_S",
    "MountedVolume",
    "VolumeError",
    "VolumeManager",
    "mounts_under",
    "write_atomic",
]

log = logging.getLogger("sampan.kubelet.volumes")

DEFAULT_TOKEN_EXPIRATION_S = 3600
TOKEN_REFRESH_FRACTION = 0.8
"""A projected token is renewed once this fraction of its lifetime has passed (upstream)."""
DEFAULT_FILE_MODE = 0o644
MAX_FILE_MODE = 0o777
DIR_MODE = 0o750
"""The kubelet dir, ``pods/``, a pod's dir, its ``volumes/`` and plugin dirs (upstream's)."""
DATA_DIR_MODE = 0o755
"""A timestamped data directory inside a file-backed volume (upstream's atomic writer)."""
READ_ONLY_ROOT_MODE = 0o755
"""The root of a secret/configMap/downwardAPI/projected volume: bind-mounted read-only; root
writes it, every container user must traverse it (upstream leaves it 0777: no need)."""
EMPTY_DIR_MODE = 0o777
TOKEN_PRIVATE_MODE = 0o600
_RO_MASK = 0o440
_RW_MASK = 0o660
_EXEC_MASK = 0o110
LOCAL_PATH_DIR_MODE = 0o777
"""A local-path volume's directory (rancher's provisioner: ``mkdir -m 0777``)."""
_MNT_DETACH = 2
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)

TokenRequester = Callable[[str, str, dict[str, Any]], Awaitable[dict[str, Any]]]
"""(namespace, service account, TokenRequest body) -> TokenRequest answer."""


class VolumeError(Exception):
    """A volume cannot be set up now (missing source, bad hostPath type): FailedMount."""


@dataclass(frozen=True)
class MountedVolume:
    host_path: str
    read_only: bool = False
    selinux_relabel: bool = False


def mounts_under(root: Path) -> list[str]:
    prefix = str(root).rstrip("/") + "/"
    result = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].replace("\\040", " ")
            if point.startswith(prefix) or point == str(root):
                result.append(point)
    return result


def _mount_tmpfs(target: Path, size_bytes: int | None) -> None:
    if os.path.ismount(target):
        return
    options = f"mode=0777,size={size_bytes}" if size_bytes else "mode=0777"
    if _libc.mount(b"tmpfs", str(target).encode(), b"tmpfs", 0, options.encode()) != 0:
        errno = ctypes.get_errno()
        raise VolumeError(f"mount tmpfs on {target}: {os.strerror(errno)}")


def _unmount(point: str) -> None:
    if _libc.umount2(point.encode(), _MNT_DETACH) != 0:
        log.warning("umount %s: %s", point, os.strerror(ctypes.get_errno()))


def write_atomic(
    target: Path,
    payload: Mapping[str, tuple[bytes, int]],
    *,
    fs_group: int | None = None,
    owners: Mapping[str, int] | None = None,
) -> bool:
    """Make ``target`` hold exactly ``payload`` (relative path -> (content, mode)); True if
    anything changed. ``fs_group``: every entry gets that gid, files ``g+r``, directories
    ``g+rx`` and setgid (upstream's ownership of a read-only volume); ``owners``: relative
    path -> uid of the files that belong to a user. Blocking."""
    target.mkdir(parents=True, exist_ok=True)
    wanted = {
        rel: (content, _with_group_mask(mode, fs_group, directory=False))
        for rel, (content, mode) in payload.items()
    }
    uid_of = dict(owners or {})
    data_link = target / "..data"
    old_dir: Path | None = None
    with contextlib.suppress(OSError):
        old_dir = target / os.readlink(data_link)
    if old_dir is not None and _matches(old_dir, wanted, fs_group, uid_of):
        return False
    new_dir = Path(tempfile.mkdtemp(prefix=f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.", dir=target))
    dir_mode = _with_group_mask(DATA_DIR_MODE, fs_group, directory=True)
    _own(new_dir, None, fs_group, dir_mode)
    for rel, (content, mode) in wanted.items():
        path = new_dir / rel
        for parent in reversed(path.relative_to(new_dir).parents[:-1]):
            sub = new_dir / parent
            if not sub.is_dir():
                sub.mkdir()
                _own(sub, None, fs_group, dir_mode)
        path.write_bytes(content)
        _own(path, uid_of.get(rel), fs_group, mode)
    tmp_link = target / "..data_tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp_link)
    os.symlink(new_dir.name, tmp_link)
    if fs_group is not None:
        os.lchown(tmp_link, -1, fs_group)
    os.replace(tmp_link, data_link)
    visible = {rel.split("/", 1)[0] for rel in payload}
    for name in visible:
        link = target / name
        if not link.is_symlink():
            os.symlink(f"..data/{name}", link)
            if fs_group is not None:
                os.lchown(link, -1, fs_group)
    for entry in target.iterdir():
        if entry.name.startswith(".."):
            continue
        if entry.name not in visible and entry.is_symlink():
            os.unlink(entry)
    if old_dir is not None and old_dir.is_dir():
        shutil.rmtree(old_dir, ignore_errors=True)
    return True


def _matches(
    directory: Path,
    payload: Mapping[str, tuple[bytes, int]],
    fs_group: int | None,
    owners: Mapping[str, int],
) -> bool:
    try:
        present = {str(p.relative_to(directory)) for p in directory.rglob("*") if not p.is_dir()}
        if present != set(payload):
            return False
        for rel, (content, mode) in payload.items():
            path = directory / rel
            info = path.stat()
            uid = owners.get(rel, os.geteuid())
            gid = fs_group if fs_group is not None else os.getegid()
            if (
                path.read_bytes() != content
                or stat.S_IMODE(info.st_mode) != mode
                or (info.st_uid, info.st_gid) != (uid, gid)
            ):
                return False
    except OSError:
        return False
    return True


def _with_group_mask(mode: int, fs_group: int | None, *, directory: bool, rw: bool = False) -> int:
    """``mode`` as upstream's ``SetVolumeOwnership`` leaves it for an fsGroup volume."""
    if fs_group is None:
        return mode
    mode |= _RW_MASK if rw else _RO_MASK
    if directory:
        mode |= _EXEC_MASK | stat.S_ISGID
    return mode


def _own(path: Path, uid: int | None, gid: int | None, mode: int) -> None:
    if uid is not None or gid is not None:
        os.chown(path, -1 if uid is None else uid, -1 if gid is None else gid)
    os.chmod(path, mode)


def _ensure_dir(path: Path, mode: int, *, root_owned: bool = True) -> None:
    """``path`` exists as a directory with exactly ``mode`` (root:root when we are root)."""
    path.mkdir(parents=True, exist_ok=True, mode=mode)
    info = path.stat()
    if root_owned and os.geteuid() == 0 and (info.st_uid, info.st_gid) != (0, 0):
        os.chown(path, 0, 0)
    if stat.S_IMODE(info.st_mode) != mode:
        os.chmod(path, mode)


class VolumeManager:
    """Sets up and tears down the volumes of the pods of one kubelet."""

    def __init__(
        self,
        kubelet_dir: Path,
        sources: Sources,
        request_token: TokenRequester,
        *,
        get_pvc: Callable[[str, str], Awaitable[dict[str, Any] | None]] | None = None,
        get_pv: Callable[[str], Awaitable[dict[str, Any] | None]] | None = None,
        root_ca_pem: Callable[[], bytes | None] | None = None,
    ) -> None:
        self.kubelet_dir = kubelet_dir
        self.sources = sources
        self.request_token = request_token
        self.get_pvc = get_pvc
        self.get_pv = get_pv
        # (pod uid, audience, expiration) -> (token, refresh at (time.time()))
        self._tokens: dict[tuple[str, str, int], tuple[str, float]] = {}

    def pod_dir(self, uid: str) -> Path:
        return self.kubelet_dir / "pods" / uid

    def ensure_dirs(self) -> None:
        """The kubelet dir and ``pods/``: 0750 root:root (fixes older, wider ones). Blocking."""
        _ensure_dir(self.kubelet_dir, DIR_MODE)
        _ensure_dir(self.kubelet_dir / "pods", DIR_MODE)

    def _ensure_pod_dirs(self, uid: str, plugins: set[str]) -> None:
        self.ensure_dirs()
        pod_dir = self.pod_dir(uid)
        _ensure_dir(pod_dir, DIR_MODE)
        _ensure_dir(pod_dir / "volumes", DIR_MODE)
        for plugin in plugins:
            _ensure_dir(pod_dir / "volumes" / plugin, DIR_MODE)
        # Directories an older kubelet left wider (termination-message files, plugin dirs).
        for entry in [pod_dir / "containers", *(pod_dir / "volumes").iterdir()]:
            with contextlib.suppress(FileNotFoundError):
                if entry.is_dir() and stat.S_IMODE(entry.stat().st_mode) & 0o007:
                    os.chmod(entry, DIR_MODE)

    async def setup(
        self, pod: Mapping[str, Any], allocatable: Mapping[str, Decimal]
    ) -> dict[str, MountedVolume]:
        """Make every volume of ``pod`` present and current; name -> host path."""
        meta = pod.get("metadata") or {}
        uid = meta.get("uid", "")
        base = self.pod_dir(uid) / "volumes"
        volumes = (pod.get("spec") or {}).get("volumes") or []
        plugins = {
            _PLUGIN_DIRS[key]
            for volume in volumes
            if isinstance(volume, dict)
            for key in volume
            if key in _PLUGIN_DIRS
        }
        await asyncio.to_thread(self._ensure_pod_dirs, uid, plugins)
        try:
            owner = _Ownership.of(pod)
        except FieldTypeError as exc:
            raise VolumeError(str(exc)) from exc
        result: dict[str, MountedVolume] = {}
        for volume in volumes:
            name = volume.get("name", "")
            try:
                result[name] = await self._setup_one(pod, volume, base, allocatable, owner)
            except FieldTypeError as exc:
                raise VolumeError(f"volume {name!r}: {exc}") from exc
        return result

    async def _setup_one(
        self,
        pod: Mapping[str, Any],
        volume: Mapping[str, Any],
        base: Path,
        allocatable: Mapping[str, Decimal],
        owner: _Ownership,
    ) -> MountedVolume:
        name = volume.get("name", "")
        namespace = (pod.get("metadata") or {}).get("namespace", "default")
        if "hostPath" in volume:
            source = volume["hostPath"] or {}
            await asyncio.to_thread(_check_host_path, source.get("path", ""), source.get("type"))
            return MountedVolume(source.get("path", ""))
        if "emptyDir" in volume:
            source = volume.get("emptyDir") or {}
            target = base / _PLUGIN_DIRS["emptyDir"] / name
            memory = source.get("medium") == "Memory"
            size = quantity(source.get("sizeLimit"))
            await asyncio.to_thread(
                _prepare_dir, target, memory, int(size) if size else None, owner.fs_group
            )
            return MountedVolume(str(target))
        if "persistentVolumeClaim" in volume:
            return await self._pvc(namespace, volume["persistentVolumeClaim"] or {})
        payload: dict[str, tuple[bytes, int]]
        tmpfs = False
        owners: dict[str, int] = {}
        if "configMap" in volume:
            kind = "configMap"
            payload = self._configmap_payload(namespace, volume["configMap"] or {}, None)
        elif "secret" in volume:
            kind, tmpfs = "secret", True
            payload = self._secret_payload(namespace, volume["secret"] or {}, None)
        elif "downwardAPI" in volume:
            kind = "downwardAPI"
            payload = self._downward_payload(pod, volume["downwardAPI"] or {}, None, allocatable)
        elif "projected" in volume:
            kind, tmpfs = "projected", True
            payload = await self._projected_payload(
                pod, volume["projected"] or {}, allocatable, owner, owners
            )
        else:
            kinds = sorted(k for k in volume if k != "name")
            raise VolumeError(f"volume {name}: unsupported volume type {kinds}")
        target = base / _PLUGIN_DIRS[kind] / name
        await asyncio.to_thread(_write_volume, target, payload, tmpfs, owner.fs_group, owners)
        read_only = "configMap" in volume or "secret" in volume or "projected" in volume
        return MountedVolume(str(target), read_only=read_only)

    async def _pvc(self, namespace: str, source: Mapping[str, Any]) -> MountedVolume:
        claim = source.get("claimName", "")
        if self.get_pvc is None or self.get_pv is None:
            raise VolumeError(f"persistentVolumeClaim {claim}: not supported here")
        pvc = await self.get_pvc(namespace, claim)
        if pvc is None:
            raise VolumeError(f'persistentvolumeclaim "{claim}" not found')
        pv_name = (pvc.get("spec") or {}).get("volumeName")
        if not pv_name or (pvc.get("status") or {}).get("phase") != "Bound":
            raise VolumeError(f'persistentvolumeclaim "{claim}" is not bound')
        pv = await self.get_pv(pv_name)
        if pv is None:
            raise VolumeError(f'persistentvolume "{pv_name}" not found')
        spec = pv.get("spec") or {}
        _refuse_block(pv_name, spec)
        path = (spec.get("hostPath") or {}).get("path") or (spec.get("local") or {}).get("path")
        if not path:
            raise VolumeError(f"persistentvolume {pv_name}: only hostPath and local are supported")
        if _is_local_path(pv):
            await asyncio.to_thread(_ensure_local_path_dir, path)
        if "hostPath" in spec:
            await asyncio.to_thread(
                _check_host_path, path, (spec.get("hostPath") or {}).get("type")
            )
        return MountedVolume(path, read_only=bool(source.get("readOnly")))

    # -- payloads --------------------------------------------------------------------------

    def _items(
        self,
        data: Mapping[str, bytes],
        source: Mapping[str, Any],
        kind: str,
        ref: str,
        default_mode: int,
    ) -> dict[str, tuple[bytes, int]]:
        items = source.get("items")
        payload: dict[str, tuple[bytes, int]] = {}
        if not items:
            for key, content in data.items():
                payload[key] = (content, default_mode)
            return payload
        for item in items:
            key = item.get("key", "")
            if key not in data:
                if get_bool(source, "optional"):
                    continue
                raise VolumeError(
                    f"configmap references non-existent {kind} key: {key}"
                    if kind == "config"
                    else f"references non-existent secret key: {key}"
                )
            payload[item.get("path") or key] = (data[key], _file_mode(item, "mode", default_mode))
        return payload

    def _configmap_payload(
        self, namespace: str, source: Mapping[str, Any], default_mode: int | None
    ) -> dict[str, tuple[bytes, int]]:
        name = source.get("name", "")
        cm = self.sources.configmap(namespace, name)
        if cm is None:
            if get_bool(source, "optional"):
                return {}
            raise VolumeError(f'configmap "{name}" not found')
        data = {k: str(v).encode() for k, v in (cm.get("data") or {}).items()}
        for k, v in (cm.get("binaryData") or {}).items():
            data[k] = base64.b64decode(v)
        mode = _mode(source, default_mode)
        return self._items(data, source, "config", name, mode)

    def _secret_payload(
        self, namespace: str, source: Mapping[str, Any], default_mode: int | None
    ) -> dict[str, tuple[bytes, int]]:
        name = source.get("secretName") or source.get("name") or ""
        secret = self.sources.secret(namespace, name)
        if secret is None:
            if get_bool(source, "optional"):
                return {}
            raise VolumeError(f'secret "{name}" not found')
        data = {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}
        mode = _mode(source, default_mode)
        return self._items(data, source, "secret", name, mode)

    def _downward_payload(
        self,
        pod: Mapping[str, Any],
        source: Mapping[str, Any],
        default_mode: int | None,
        allocatable: Mapping[str, Decimal],
    ) -> dict[str, tuple[bytes, int]]:
        mode = _mode(source, default_mode)
        payload: dict[str, tuple[bytes, int]] = {}
        for item in source.get("items") or []:
            try:
                if item.get("fieldRef"):
                    value = field_ref_value(pod, item["fieldRef"].get("fieldPath", ""))
                elif item.get("resourceFieldRef"):
                    ref = item["resourceFieldRef"]
                    value = resource_field_value(
                        pod,
                        ref.get("containerName", ""),
                        ref.get("resource", ""),
                        ref.get("divisor"),
                        allocatable,
                    )
                else:
                    continue
            except ConfigError as exc:
                raise VolumeError(str(exc)) from exc
            payload[item.get("path", "")] = (value.encode(), _file_mode(item, "mode", mode))
        return payload

    async def _projected_payload(
        self,
        pod: Mapping[str, Any],
        source: Mapping[str, Any],
        allocatable: Mapping[str, Decimal],
        owner: _Ownership,
        owners: dict[str, int],
    ) -> dict[str, tuple[bytes, int]]:
        meta = pod.get("metadata") or {}
        namespace = meta.get("namespace", "default")
        mode = _file_mode(source, "defaultMode", DEFAULT_FILE_MODE)
        payload: dict[str, tuple[bytes, int]] = {}
        for projection in source.get("sources") or []:
            if projection.get("configMap") is not None:
                payload.update(self._configmap_payload(namespace, projection["configMap"], mode))
            elif projection.get("secret") is not None:
                payload.update(self._secret_payload(namespace, projection["secret"], mode))
            elif projection.get("downwardAPI") is not None:
                payload.update(
                    self._downward_payload(pod, projection["downwardAPI"], mode, allocatable)
                )
            elif projection.get("serviceAccountToken") is not None:
                spec = projection["serviceAccountToken"]
                token = await self._token(pod, spec)
                path = spec.get("path", "token")
                # Upstream: private to the pod's user when it has an fsGroup or one runAsUser
                # (the fsGroup mask then makes it 0640).
                private = owner.fs_group is not None or owner.fs_user is not None
                payload[path] = (token.encode(), TOKEN_PRIVATE_MODE if private else mode)
                if owner.fs_user is not None:
                    owners[path] = owner.fs_user
            else:
                kinds = sorted(projection)
                raise VolumeError(f"projected source {kinds} is not supported")
        return payload

    async def _token(self, pod: Mapping[str, Any], spec: Mapping[str, Any]) -> str:
        meta = pod.get("metadata") or {}
        uid = meta.get("uid", "")
        audience = spec.get("audience") or ""
        expiration = int(spec.get("expirationSeconds") or DEFAULT_TOKEN_EXPIRATION_S)
        key = (uid, audience, expiration)
        cached = self._tokens.get(key)
        if cached is not None and time.time() < cached[1]:
            return cached[0]
        sa = (pod.get("spec") or {}).get("serviceAccountName") or "default"
        body: dict[str, Any] = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "audiences": [audience] if audience else [],
                "expirationSeconds": expiration,
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": meta.get("name", ""),
                    "uid": uid,
                },
            },
        }
        try:
            answer = await self.request_token(meta.get("namespace", "default"), sa, body)
        except Exception as exc:
            raise VolumeError(f"failed to fetch token for service account {sa}: {exc}") from exc
        token = str(((answer or {}).get("status") or {}).get("token") or "")
        if not token:
            raise VolumeError(f"failed to fetch token for service account {sa}: empty answer")
        self._tokens[key] = (token, time.time() + expiration * TOKEN_REFRESH_FRACTION)
        return token

    async def teardown(self, uid: str) -> None:
        for key in [k for k in self._tokens if k[0] == uid]:
            del self._tokens[key]
        await asyncio.to_thread(_remove_pod_dir, self.pod_dir(uid))

    def known_pod_uids(self) -> list[str]:
        with contextlib.suppress(OSError):
            return [p.name for p in (self.kubelet_dir / "pods").iterdir() if p.is_dir()]
        return []


_PLUGIN_DIRS = {
    "emptyDir": "kubernetes.io~empty-dir",
    "configMap": "kubernetes.io~configmap",
    "secret": "kubernetes.io~secret",
    "downwardAPI": "kubernetes.io~downward-api",
    "projected": "kubernetes.io~projected",
}


@dataclass(frozen=True)
class _Ownership:
    """Who a pod's volume files belong to: ``fsGroup``, and ``fs_user`` — the runAsUser every
    init and app container shares, if they all have one (upstream's FsUserFrom)."""

    fs_group: int | None
    fs_user: int | None

    @classmethod
    def of(cls, pod: Mapping[str, Any]) -> _Ownership:
        spec = pod.get("spec") or {}
        users: set[int | None] = set()
        for key in ("initContainers", "containers"):
            for container in spec.get(key) or []:
                users.add(specs.container_security(pod, container).run_as_user)
        fs_user = next(iter(users)) if len(users) == 1 else None
        return cls(specs.pod_security(pod).fs_group, fs_user)


def _file_mode(source: Mapping[str, Any], key: str, default_mode: int) -> int:
    mode = get_int(source, key)
    if mode is None:
        return default_mode
    if not 0 <= mode <= MAX_FILE_MODE:
        raise VolumeError(
            f"{key}: Invalid value: {mode}: must be a number between 0 and 0777 (octal), "
            "both inclusive"
        )
    return mode


def _mode(source: Mapping[str, Any], default_mode: int | None) -> int:
    fallback = default_mode if default_mode is not None else DEFAULT_FILE_MODE
    return _file_mode(source, "defaultMode", fallback)


def _prepare_dir(target: Path, memory: bool, size_bytes: int | None, fs_group: int | None) -> None:
    target.mkdir(parents=True, exist_ok=True)
    if memory:
        _mount_tmpfs(target, size_bytes)
    mode = _with_group_mask(EMPTY_DIR_MODE, fs_group, directory=True, rw=True)
    _own(target, None, fs_group, mode)


def _write_volume(
    target: Path,
    payload: Mapping[str, tuple[bytes, int]],
    tmpfs: bool,
    fs_group: int | None,
    owners: Mapping[str, int],
) -> None:
    target.mkdir(parents=True, exist_ok=True)
    if tmpfs:
        _mount_tmpfs(target, None)
    _own(target, None, fs_group, _with_group_mask(READ_ONLY_ROOT_MODE, fs_group, directory=True))
    write_atomic(target, payload, fs_group=fs_group, owners=owners)


def _is_local_path(pv: Mapping[str, Any]) -> bool:
    annotations = (pv.get("metadata") or {}).get("annotations") or {}
    return annotations.get("pv.kubernetes.io/provisioned-by") == LOCAL_PATH_PROVISIONER


def _ensure_local_path_dir(path: str) -> None:
    """A local-path volume's directory, made on first mount as the local-path provisioner
    makes it: mode 0777, so a container running as any user can write its volume."""
    directory = Path(path)
    if directory.exists():
        return
    directory.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    directory.mkdir(exist_ok=True)
    os.chmod(directory, LOCAL_PATH_DIR_MODE)


def _refuse_block(pv_name: str, spec: Mapping[str, Any]) -> None:
    """Raw block volumes (``volumeMode: Block``) need volumeDevices, which Sampan lacks."""
    if (spec.get("volumeMode") or "Filesystem") == "Block":
        raise VolumeError(
            f'persistentvolume "{pv_name}" has volumeMode Block: block volumes are not supported'
        )


def _check_host_path(path: str, path_type: str | None) -> None:
    if not path.startswith("/"):
        raise VolumeError(f"hostPath {path!r} must be absolute")
    kind = path_type or ""
    p = Path(path)
    if kind == "DirectoryOrCreate":
        p.mkdir(parents=True, exist_ok=True, mode=0o755)
        return
    if kind == "FileOrCreate":
        if not p.exists():
            p.parent.mkdir(parents=True, exist_ok=True)
            p.touch(mode=0o644)
        elif p.is_dir():
            raise VolumeError(f"hostPath type check failed: {path} is not a file")
        return
    checks = {
        "Directory": (Path.is_dir, "a directory"),
        "File": (Path.is_file, "a file"),
        "Socket": (Path.is_socket, "a socket file"),
        "CharDevice": (Path.is_char_device, "a character device"),
        "BlockDevice": (Path.is_block_device, "a block device"),
    }
    if kind in checks:
        check, what = checks[kind]
        if not check(p):
            raise VolumeError(f"hostPath type check failed: {path} is not {what}")


def _remove_pod_dir(pod_dir: Path) -> None:
    for point in sorted(mounts_under(pod_dir), key=len, reverse=True):
        _unmount(point)
    shutil.rmtree(pod_dir, ignore_errors=True)
