"""The AddOn manager: applies ``<data-dir>/server/manifests`` (K3s's auto-deploying manifests).

What it owns:

* the ``addons.sampan.io`` CRD (applied at start) and one ``AddOn`` per manifest file in
  kube-system (``spec.source``, ``spec.checksum``);
* the packaged components (K3s's "packaged components"): the manifests Sampan ships in
  ``sampan/addons/packaged/`` (``coredns``, ``local-storage``, ``ingress``). At every start each
  is written into the directory with the cluster's values filled in (``%{CLUSTER_DNS}%``,
  ``%{CLUSTER_DOMAIN}%``, ``%{DEFAULT_LOCAL_STORAGE_PATH}%``), except those named in
  ``disabled``: as K3s's stage step, a ``<file>.skip`` does not stop the rewrite, it stops the
  apply;
* disabling (``--disable=NAME``, any manifest of the directory, packaged or not, as K3s): at
  each pass a file whose name without extension is disabled has every object it lists deleted
  from the cluster, then the file is removed and its AddOn deleted (K3s's deploy controller
  "delete": the objects of a disabled component go, the AddOn too);
* applying: every object of every manifest with server-side apply, field manager
  ``sampan-addons``, ``force=true``, labelled ``addons.sampan.io/owner=<addon>``; Namespaces
  and CRDs of a file first; namespaced objects without a namespace land in kube-system (the
  AddOn's namespace), as with K3s;
* pruning, as K3s's apply with the AddOn as owner: once a changed file applied in full, the
  objects carrying its owner label that it no longer lists are deleted, searched among the
  kinds it holds now and held before (the AddOn's ``addons.sampan.io/gvks`` annotation).

Invariants:

* a file is applied at start and whenever its bytes change (the directory is polled every
  ``poll_interval_s``; the sha256 decides). ``spec.checksum`` is only set once every object of
  that content was applied, so a failed or half-applied file is retried at each poll;
* a bad file (does not parse, unknown kind, rejected object) gets one log line and one Warning
  Event on its AddOn naming the file and the problem, once per content; the other files are
  applied regardless;
* deleting a file (or adding ``<file>.skip``) deletes nothing in the cluster; only a disable
  does, and a disabled file whose objects cannot all be deleted stays on disk (retried at the
  next pass);
* the background task ``addons`` catches and logs each pass's errors; cancellation propagates.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

from sampan.addons.crd import ADDON_NAMESPACE, ADDONS, addon_crd
from sampan.addons.manifests import (
    ManifestError,
    ManifestFile,
    disabled_manifests,
    parse_manifest,
    scan_manifests,
)
from sampan.client import (
    ApiError,
    Client,
    ClientConfig,
    ClientError,
    EventRecorder,
    NotFoundError,
    PatchType,
    Resource,
)
from sampan.client.api import CUSTOMRESOURCEDEFINITIONS
from sampan.client.events import TYPE_NORMAL, TYPE_WARNING

__all__ = [
    "DEFAULT_POLL_INTERVAL_S",
    "FIELD_MANAGER",
    "PACKAGED_NAMES",
    "AddonManager",
    "AddonOptions",
    "packaged_manifests",
    "render",
    "template_vars",
]

log = logging.getLogger(__name__)

FIELD_MANAGER = "sampan-addons"
DEFAULT_POLL_INTERVAL_S = 5.0
CRD_READY_TIMEOUT_S = 30.0
CRD_READY_POLL_S = 0.1
DISCOVERY_RETRY_S = 0.5
DISCOVERY_WAIT_S = 10.0
"""How long a file that defines CRDs waits for them to be served before its custom objects
are applied."""
FIRST_KINDS = ("Namespace", "CustomResourceDefinition")
OWNER_LABEL = "addons.sampan.io/owner"
"""Set on every object applied from a manifest: the AddOn it came from (``owner_label_value``),
so objects dropped from the file, or of a disabled file, can be found and deleted."""
GVK_ANNOTATION = "addons.sampan.io/gvks"
"""On the AddOn: the kinds its content last applied in full held (K3s's
``addon.k3s.cattle.io/gvks``), where pruning looks for objects of that AddOn."""
GVK_SEPARATOR = ";"
GVK_KIND_SEPARATOR = ", Kind="
MAX_LABEL_VALUE = 63
_LABEL_VALUE = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")

PACKAGED_DIR = "packaged"
"""Package data directory (``sampan/addons/packaged/<name>.yaml``) of the packaged manifests."""
PACKAGED_NAMES = ("coredns", "local-storage", "ingress")
"""The packaged components, by the name ``--disable`` takes (their files are
``<name>.yaml``). ``coredns``: the cluster DNS Service ``kube-dns`` (the DNS server itself runs
in each agent). ``local-storage``: the default StorageClass ``local-path`` (its provisioner
runs in the controller manager, its node half in each agent; ``--disable=local-storage`` also
leaves the provisioner out). ``ingress``: the default IngressClass ``sampan-nginx`` served by
each agent's ingress component (``--disable=ingress`` also stops the server's own agent from
running it). ``metrics-server`` and ``servicelb`` are components of their own with no
manifest; ``--disable`` takes them too."""


DEFAULT_VALUES = {
    "cluster_dns": "10.43.0.10",
    "cluster_domain": "cluster.local",
    "default_local_storage_path": "/var/lib/sampan/storage",
}
"""The values of Sampan's default configuration (``sampan.config``) for ``template_vars``."""


def packaged_manifests() -> dict[str, str]:
    """The packaged manifests' templates by component name (read from the package data)."""
    root = resources.files("sampan.addons") / PACKAGED_DIR
    return {name: (root / f"{name}.yaml").read_text(encoding="utf-8") for name in PACKAGED_NAMES}


def template_vars(
    *, cluster_dns: str, cluster_domain: str, default_local_storage_path: str
) -> dict[str, str]:
    """The placeholders K3s fills in its packaged manifests, with this cluster's values."""
    return {
        "%{CLUSTER_DNS}%": cluster_dns,
        "%{CLUSTER_DOMAIN}%": cluster_domain,
        "%{DEFAULT_LOCAL_STORAGE_PATH}%": default_local_storage_path,
    }


def render(template: str, variables: Mapping[str, str]) -> str:
    """``template`` with every placeholder of ``variables`` replaced (plain substitution)."""
    for key, value in variables.items():
        template = template.replace(key, value)
    return template


class _Context(Protocol):
    def fail(self, reason: str) -> None: ...


@dataclass(frozen=True)
class AddonOptions:
    manifests_dir: Path
    disabled: frozenset[str] | set[str] = frozenset()
    """Manifests (by file name without extension) not to deploy: not written if packaged,
    and their objects, file and AddOn removed if present."""
    packaged: Mapping[str, str] = field(default_factory=packaged_manifests)
    """Templates of the packaged manifests by name (written as ``<name>.yaml``)."""
    variables: Mapping[str, str] = field(default_factory=lambda: template_vars(**DEFAULT_VALUES))
    """Placeholders filled in the packaged templates (``template_vars``; the server passes its
    configuration's values, the default is Sampan's default configuration)."""
    poll_interval_s: float = DEFAULT_POLL_INTERVAL_S


@dataclass
class _State:
    """What the manager knows of one manifest file."""

    applied_checksum: str = ""
    gvks: frozenset[str] = frozenset()
    """The kinds (``GVK_ANNOTATION`` form) of the content last applied in full."""
    reported: tuple[str, str] | None = None
    """(checksum, message) of the last failure reported, so each is reported once."""


class AddonManager:
    """Component ``addons``: ``AddonManager(client_config, AddonOptions(...))``."""

    name = "addons"

    def __init__(self, client_config: ClientConfig, options: AddonOptions) -> None:
        self._client_config = client_config
        self.options = options
        self._client: Client | None = None
        self._recorder: EventRecorder | None = None
        self._task: asyncio.Task[None] | None = None
        self._states: dict[Path, _State] = {}
        self._discovery: dict[str, dict[str, Resource]] = {}
        self.synced = asyncio.Event()
        """Set after the first full pass over the directory."""
        self.errors: dict[str, str] = {}
        """Addon name -> the problem of its last failed apply (cleared once it applies)."""

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, ctx: _Context | None = None) -> None:
        """Write the packaged manifests, then apply in the background (start does not wait for
        the manifests: nothing else needs them to be ready)."""
        await asyncio.to_thread(self._write_packaged)
        self._client = Client(self._client_config)
        self._recorder = EventRecorder(self._client, FIELD_MANAGER)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="addons")
        self._task.add_done_callback(self._task_ended)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task})
            self._task = None
        if self._recorder is not None:
            await self._recorder.stop(drain_timeout_s=1.0)
            self._recorder = None
        if self._client is not None:
            await self._client.close()
            self._client = None

    def _task_ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("addons: task ended", exc_info=task.exception())

    async def wait_synced(self) -> None:
        await self.synced.wait()

    # -- the loop ----------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            try:
                await self._ensure_crd()
                await self._load_addons()
                break
            except (ClientError, TimeoutError) as exc:
                log.warning("addons: cannot install the AddOn CRD yet: %s", exc)
                await asyncio.sleep(self.options.poll_interval_s)
        while True:
            try:
                await self.sync()
            except ClientError as exc:
                log.warning("addons: pass failed: %s", exc)
            except Exception:
                log.exception("addons: pass failed")
            self.synced.set()
            await asyncio.sleep(self.options.poll_interval_s)

    async def _ensure_crd(self) -> None:
        client = self._require_client()
        crd = addon_crd()
        await client.patch(
            CUSTOMRESOURCEDEFINITIONS,
            crd["metadata"]["name"],
            crd,
            patch_type=PatchType.APPLY,
            field_manager=FIELD_MANAGER,
            force=True,
        )
        async with asyncio.timeout(CRD_READY_TIMEOUT_S):
            while True:
                try:
                    await client.list(ADDONS, namespace=ADDON_NAMESPACE, limit=1)
                    return
                except NotFoundError:
                    await asyncio.sleep(CRD_READY_POLL_S)

    async def _load_addons(self) -> None:
        """Remember what existing AddOns say was applied, so unchanged files are skipped."""
        client = self._require_client()
        addons = await client.list_all(ADDONS, namespace=ADDON_NAMESPACE)
        for addon in addons.get("items") or []:
            spec = addon.get("spec") or {}
            source, checksum = spec.get("source"), spec.get("checksum")
            if isinstance(source, str) and isinstance(checksum, str) and checksum:
                state = self._states.setdefault(Path(source), _State())
                state.applied_checksum = checksum
                state.gvks = _addon_gvks(addon)

    async def sync(self) -> dict[str, str]:
        """One pass: apply every manifest whose content is not applied yet.

        Returns the problems of this pass by addon name (empty when all is applied)."""
        problems: dict[str, str] = {}
        disabled = set(self.options.disabled)
        for manifest in await asyncio.to_thread(
            disabled_manifests, self.options.manifests_dir, disabled
        ):
            problem = await self._delete_file(manifest)
            if problem:
                problems[manifest.addon] = problem
        files = await asyncio.to_thread(scan_manifests, self.options.manifests_dir, disabled)
        for manifest in files:
            state = self._states.setdefault(manifest.path, _State())
            if state.applied_checksum == manifest.checksum:
                continue
            problem = await self._apply_file(manifest, state)
            if problem:
                problems[manifest.addon] = problem
                self.errors[manifest.addon] = problem
            else:
                self.errors.pop(manifest.addon, None)
        return problems

    def _write_packaged(self) -> None:
        directory = self.options.manifests_dir
        directory.mkdir(parents=True, exist_ok=True)
        for name, text in self.options.packaged.items():
            path = directory / f"{name}.yaml"
            if name in self.options.disabled:
                continue  # an earlier run's file, if any, is removed by the disable pass
            data = render(text, self.options.variables).encode()
            try:
                if path.read_bytes() == data:
                    continue
            except FileNotFoundError:
                pass
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_bytes(data)
            tmp.replace(path)

    # -- applying one file -------------------------------------------------------------------

    async def _apply_file(self, manifest: ManifestFile, state: _State) -> str:
        """Apply one manifest; returns "" on success or the problem (already reported)."""
        problems: list[str] = []
        count = 0
        try:
            objects = parse_manifest(manifest.path.name, manifest.data)
        except ManifestError as exc:
            problems.append(str(exc))
            objects = []
        has_crds = any(o.get("kind") == "CustomResourceDefinition" for o in objects)
        objects.sort(key=_apply_order)
        applied: set[tuple[str, str, str, str]] = set()
        for obj in objects:
            try:
                key = await self._apply_object(
                    obj, owner=owner_label_value(manifest.addon), wait_for_kind=has_crds
                )
                applied.add(key)
                count += 1
            except (ManifestError, ApiError) as exc:
                problems.append(f"{_describe(obj)}: {_message(exc)}")
        gvks = frozenset(_gvk(o) for o in objects)
        if not problems:
            # As K3s (wrangler's apply with the AddOn as owner): what the file no longer lists
            # goes, searched by the owner label among the kinds applied before and now.
            problems += await self._prune(manifest.addon, state.gvks | gvks, keep=applied)
        problem = "; ".join(problems)
        addon = await self._record(manifest, state, problem, gvks)
        if problem:
            if state.reported != (manifest.checksum, problem):
                state.reported = (manifest.checksum, problem)
                log.warning("addons: manifest %s: %s", manifest.path, problem)
                if addon is not None and self._recorder is not None:
                    self._recorder.event(
                        addon,
                        TYPE_WARNING,
                        "ApplyManifestFailed",
                        f"manifest {manifest.path}: {problem}",
                    )
            return problem
        state.applied_checksum = manifest.checksum
        state.gvks = gvks
        state.reported = None
        log.info("addons: applied %s (%d objects)", manifest.path, count)
        if addon is not None and self._recorder is not None:
            self._recorder.event(
                addon,
                TYPE_NORMAL,
                "AppliedManifest",
                f"applied manifest {manifest.path} ({count} objects)",
            )
        return ""

    async def _delete_file(self, manifest: ManifestFile) -> str:
        """A disabled manifest: delete every object it lists (last applied first), then the
        file, then its AddOn. Returns "" when done, else the problem (logged once per
        content; the file stays for the next pass)."""
        client = self._require_client()
        problems: list[str] = []
        try:
            objects = parse_manifest(manifest.path.name, manifest.data)
        except ManifestError as exc:
            objects = []
            problems.append(str(exc))
        objects.sort(key=_apply_order, reverse=True)
        deleted = 0
        for obj in objects:
            try:
                resource = await self._resolve(obj["apiVersion"], obj["kind"], wait=False)
            except ManifestError:
                continue  # the server does not serve the kind: nothing of it to delete
            metadata = obj["metadata"]
            namespace = (
                (metadata.get("namespace") or ADDON_NAMESPACE) if resource.namespaced else None
            )
            try:
                await client.delete(resource, metadata["name"], namespace=namespace)
                deleted += 1
            except NotFoundError:
                continue
            except ApiError as exc:
                problems.append(f"{_describe(obj)}: {_message(exc)}")
        addon: dict[str, Any] | None = None
        try:
            addon = await client.get(ADDONS, manifest.addon, namespace=ADDON_NAMESPACE)
        except NotFoundError:
            pass
        # Objects it applied before that the file does not list any more go too.
        known = frozenset(_gvk(o) for o in objects) | (
            _addon_gvks(addon) if addon is not None else frozenset()
        )
        problems += await self._prune(manifest.addon, known, keep=set())
        state = self._states.setdefault(manifest.path, _State())
        if problems:
            problem = "; ".join(problems)
            if state.reported != (manifest.checksum, problem):
                state.reported = (manifest.checksum, problem)
                log.warning(
                    "addons: disabled manifest %s: cannot delete: %s", manifest.path, problem
                )
            return problem
        if addon is not None and self._recorder is not None:
            self._recorder.event(
                addon,
                TYPE_NORMAL,
                "DeletingManifest",
                f"deleting manifest {manifest.path} (disabled; {deleted} objects deleted)",
            )
        await asyncio.to_thread(manifest.path.unlink, missing_ok=True)
        if addon is not None:
            try:
                await client.delete(ADDONS, manifest.addon, namespace=ADDON_NAMESPACE)
            except NotFoundError:
                pass
        self._states.pop(manifest.path, None)
        self.errors.pop(manifest.addon, None)
        log.info(
            "addons: %s is disabled: deleted %d objects, the manifest and its AddOn",
            manifest.path,
            deleted,
        )
        return ""

    async def _apply_object(
        self, obj: dict[str, Any], *, owner: str, wait_for_kind: bool
    ) -> tuple[str, str, str, str]:
        """Apply one object with the owner label; returns its ``_key`` as applied."""
        client = self._require_client()
        resource = await self._resolve(obj["apiVersion"], obj["kind"], wait=wait_for_kind)
        metadata = dict(obj["metadata"])
        labels = metadata.get("labels")
        metadata["labels"] = {**(labels if isinstance(labels, dict) else {}), OWNER_LABEL: owner}
        namespace: str | None = None
        if resource.namespaced:
            namespace = metadata.get("namespace") or ADDON_NAMESPACE
            metadata["namespace"] = namespace
        else:
            metadata.pop("namespace", None)
        obj = {**obj, "metadata": metadata}
        await client.patch(
            resource,
            metadata["name"],
            obj,
            namespace=namespace,
            patch_type=PatchType.APPLY,
            field_manager=FIELD_MANAGER,
            force=True,
        )
        return _key(obj)

    async def _record(
        self, manifest: ManifestFile, state: _State, problem: str, gvks: frozenset[str]
    ) -> dict[str, Any] | None:
        """Apply the file's AddOn; its checksum and kinds only when the whole file applied
        (else the previous ones, which server-side apply would otherwise drop)."""
        spec: dict[str, Any] = {"source": str(manifest.path)}
        checksum = manifest.checksum if not problem else state.applied_checksum
        if checksum:
            spec["checksum"] = checksum
        metadata: dict[str, Any] = {"name": manifest.addon, "namespace": ADDON_NAMESPACE}
        kinds = gvks if not problem else state.gvks
        if kinds:
            metadata["annotations"] = {GVK_ANNOTATION: GVK_SEPARATOR.join(sorted(kinds))}
        body = {
            "apiVersion": ADDONS.api_version,
            "kind": ADDONS.kind,
            "metadata": metadata,
            "spec": spec,
        }
        try:
            return await self._require_client().patch(
                ADDONS,
                manifest.addon,
                body,
                namespace=ADDON_NAMESPACE,
                patch_type=PatchType.APPLY,
                field_manager=FIELD_MANAGER,
                force=True,
            )
        except ApiError as exc:
            log.warning("addons: cannot record AddOn %s: %s", manifest.addon, _message(exc))
            return None

    async def _prune(
        self, addon: str, gvks: frozenset[str], *, keep: set[tuple[str, str, str, str]]
    ) -> list[str]:
        """Delete the objects labelled as applied from ``addon`` among ``gvks`` that are not
        in ``keep`` (``_key`` tuples). Returns the problems."""
        client = self._require_client()
        selector = f"{OWNER_LABEL}={owner_label_value(addon)}"
        problems: list[str] = []
        found: list[tuple[Resource, dict[str, Any]]] = []
        for gvk in sorted(gvks):
            api_version, _, kind = gvk.partition(GVK_KIND_SEPARATOR)
            try:
                resource = await self._resolve(api_version, kind, wait=False)
            except ManifestError:
                continue  # not served (any more): nothing of it to delete
            try:
                listed = await client.list_all(resource, label_selector=selector)
            except NotFoundError:
                continue  # the kind went away since discovery answered
            except ApiError as exc:
                problems.append(f"cannot list {resource.plural}: {_message(exc)}")
                continue
            for item in listed.get("items") or []:
                item = {"apiVersion": api_version, "kind": kind, **item}
                if _key(item) not in keep:
                    found.append((resource, item))
        found.sort(key=lambda pair: _apply_order(pair[1]), reverse=True)
        for resource, item in found:
            metadata = item.get("metadata") or {}
            try:
                await client.delete(resource, metadata["name"], namespace=metadata.get("namespace"))
                log.info(
                    "addons: %s: deleted %s (no longer in its manifest)", addon, _describe(item)
                )
            except NotFoundError:
                continue
            except ApiError as exc:
                problems.append(f"{_describe(item)}: cannot delete: {_message(exc)}")
        return problems

    # -- discovery ---------------------------------------------------------------------------

    async def _resolve(self, api_version: str, kind: str, *, wait: bool) -> Resource:
        """The REST resource serving ``kind`` in ``api_version`` (asks discovery on a miss;
        with ``wait``, keeps asking for a while: a CRD of the same file may be on its way)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (DISCOVERY_WAIT_S if wait else 0.0)
        cached = self._discovery.get(api_version, {}).get(kind)
        if cached is not None:
            return cached
        while True:
            kinds = await self._discover(api_version)
            if kind in kinds:
                return kinds[kind]
            if loop.time() >= deadline:
                raise ManifestError(f'the server has no kind "{kind}" in "{api_version}"')
            await asyncio.sleep(DISCOVERY_RETRY_S)

    async def _discover(self, api_version: str) -> dict[str, Resource]:
        group, _, version = api_version.rpartition("/")
        path = f"/apis/{group}/{version}" if group else f"/api/{version}"
        try:
            answer = await self._require_client().request("GET", path)
        except NotFoundError:
            return {}
        kinds: dict[str, Resource] = {}
        for entry in (answer or {}).get("resources") or []:
            name = entry.get("name", "")
            if "/" in name or not entry.get("kind"):
                continue
            kinds.setdefault(
                entry["kind"],
                Resource(group, version, name, entry["kind"], bool(entry.get("namespaced"))),
            )
        self._discovery[api_version] = kinds
        return kinds

    def _require_client(self) -> Client:
        if self._client is None:
            raise RuntimeError("the AddOn manager is not started")
        return self._client


def _apply_order(obj: Mapping[str, Any]) -> int:
    kind = obj.get("kind")
    return FIRST_KINDS.index(kind) if kind in FIRST_KINDS else len(FIRST_KINDS)


def _describe(obj: Mapping[str, Any]) -> str:
    metadata = obj.get("metadata") or {}
    where = f"{metadata.get('namespace')}/" if metadata.get("namespace") else ""
    return f"{obj.get('kind')} {where}{metadata.get('name')}"


def _message(exc: Exception) -> str:
    if isinstance(exc, ApiError):
        return exc.message or str(exc)
    return str(exc)


def owner_label_value(addon: str) -> str:
    """The ``OWNER_LABEL`` value naming ``addon`` (its name, or a hash when the name is no
    valid label value)."""
    if len(addon) <= MAX_LABEL_VALUE and _LABEL_VALUE.fullmatch(addon):
        return addon
    return hashlib.sha256(addon.encode()).hexdigest()[:MAX_LABEL_VALUE]


def _gvk(obj: Mapping[str, Any]) -> str:
    """``apps/v1, Kind=Deployment`` (K3s's notation of its AddOn GVK annotation)."""
    return f"{obj.get('apiVersion')}{GVK_KIND_SEPARATOR}{obj.get('kind')}"


def _key(obj: Mapping[str, Any]) -> tuple[str, str, str, str]:
    """(group, kind, namespace, name): an object as applied or listed, whatever version names
    it."""
    metadata = obj.get("metadata") or {}
    group = str(obj.get("apiVersion") or "").rpartition("/")[0]
    return (group, str(obj.get("kind")), metadata.get("namespace") or "", metadata.get("name"))


def _addon_gvks(addon: Mapping[str, Any]) -> frozenset[str]:
    annotations = (addon.get("metadata") or {}).get("annotations") or {}
    text = annotations.get(GVK_ANNOTATION) or ""
    return frozenset(g for g in text.split(GVK_SEPARATOR) if GVK_KIND_SEPARATOR in g)
