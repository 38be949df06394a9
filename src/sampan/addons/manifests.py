"""Reading the manifests directory: which files count, their checksums, their documents.

Pure functions over bytes and paths (no API access, no event loop): the AddOn manager calls
them from a thread. Rules, as K3s's deploy controller has them:

* a manifest is a regular file named ``*.yaml``, ``*.yml`` or ``*.json`` directly in the
  directory (sub-directories and hidden files are ignored);
* ``<file>.skip`` beside it (``coredns.yaml.skip``) stops that manifest from being applied;
* a manifest whose file name without extension is disabled (``--disable=coredns``) is not
  applied either, whether or not it has a ``.skip``: ``disabled_manifests`` lists it for
  removal;
* its AddOn's name is the file name without the extension, made a valid DNS subdomain;
* a file may hold many YAML documents (``---``) and ``kind: List`` objects; empty documents
  are ignored; each object must have ``apiVersion``, ``kind`` and ``metadata.name``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "MANIFEST_SUFFIXES",
    "SKIP_SUFFIX",
    "ManifestError",
    "ManifestFile",
    "addon_name",
    "disabled_manifests",
    "manifest_stem",
    "parse_manifest",
    "scan_manifests",
]

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
SKIP_SUFFIX = ".skip"
MAX_NAME_LENGTH = 253
_INVALID_NAME_CHARS = re.compile(r"[^a-z0-9.-]+")


class ManifestError(Exception):
    """A manifest that cannot be applied; the message names the problem (not the file)."""


@dataclass(frozen=True)
class ManifestFile:
    """One manifest found in the directory, with what it holds when it was read."""

    path: Path
    addon: str
    checksum: str
    """sha256 hex of the file's bytes."""
    data: bytes


def manifest_stem(name: str) -> str:
    """``coredns.yaml`` -> ``coredns``: the file name without its manifest extension (what
    ``--disable`` names)."""
    for suffix in MANIFEST_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def addon_name(path: Path) -> str:
    """``/x/Traefik_Config.yaml`` -> ``traefik-config``: the file name without its extension,
    lower-cased, characters a name may not hold replaced by ``-``."""
    name = _INVALID_NAME_CHARS.sub("-", manifest_stem(path.name).lower()).strip(".-")
    return name[:MAX_NAME_LENGTH].rstrip(".-") or "manifest"


def scan_manifests(
    directory: Path, disabled: frozenset[str] | set[str] = frozenset()
) -> list[ManifestFile]:
    """Every manifest in ``directory`` that is neither skipped nor disabled, read whole,
    sorted by name.

    Blocking file I/O. A file that vanishes or cannot be read between listing and reading is
    left out (it will be seen, or not, at the next scan)."""
    return _read(
        directory,
        lambda name, names: name + SKIP_SUFFIX not in names and manifest_stem(name) not in disabled,
    )


def disabled_manifests(directory: Path, disabled: frozenset[str] | set[str]) -> list[ManifestFile]:
    """The manifests in ``directory`` whose name without extension is in ``disabled`` (a
    ``.skip`` beside one does not matter), read whole. Blocking file I/O."""
    if not disabled:
        return []
    return _read(directory, lambda name, _names: manifest_stem(name) in disabled)


def _read(directory: Path, wanted: Callable[[str, set[str]], bool]) -> list[ManifestFile]:
    try:
        entries = sorted(directory.iterdir())
    except FileNotFoundError:
        return []
    names = {entry.name for entry in entries}
    found: list[ManifestFile] = []
    for entry in entries:
        if entry.name.startswith(".") or not entry.name.endswith(MANIFEST_SUFFIXES):
            continue
        if not wanted(entry.name, names):
            continue
        try:
            if not entry.is_file():
                continue
            data = entry.read_bytes()
        except OSError:
            continue
        found.append(ManifestFile(entry, addon_name(entry), hashlib.sha256(data).hexdigest(), data))
    return found


def parse_manifest(name: str, data: bytes) -> list[dict[str, Any]]:
    """The objects in a manifest file's bytes (``name`` says whether it is JSON).

    Raises ``ManifestError`` for text that does not parse or an object that is not one."""
    try:
        text = data.decode()
    except UnicodeDecodeError as exc:
        raise ManifestError(f"not UTF-8 text: {exc}") from None
    documents: list[Any]
    try:
        if name.endswith(".json"):
            documents = [json.loads(text)] if text.strip() else []
        else:
            documents = list(yaml.safe_load_all(text))
    except (ValueError, yaml.YAMLError) as exc:
        raise ManifestError(f"cannot parse: {_one_line(str(exc))}") from None
    objects: list[dict[str, Any]] = []
    for index, document in enumerate(documents, start=1):
        if document is None:
            continue
        for obj in _expand(document, f"document {index}"):
            objects.append(obj)
    return objects


def _expand(document: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(document, dict):
        raise ManifestError(f"{where} is not an object")
    kind = document.get("kind")
    if isinstance(kind, str) and kind.endswith("List") and "items" in document:
        items = document.get("items") or []
        if not isinstance(items, list):
            raise ManifestError(f"{where}: items is not a list")
        out: list[dict[str, Any]] = []
        for i, item in enumerate(items):
            out.extend(_expand(item, f"{where} item {i}"))
        return out
    api_version = document.get("apiVersion")
    if not isinstance(api_version, str) or not api_version:
        raise ManifestError(f"{where}: apiVersion is missing")
    if not isinstance(kind, str) or not kind:
        raise ManifestError(f"{where}: kind is missing")
    metadata = document.get("metadata")
    if not isinstance(metadata, dict) or not isinstance(metadata.get("name"), str):
        raise ManifestError(f"{where} ({kind}): metadata.name is missing")
    return [document]


def _one_line(text: str) -> str:
    return " ".join(text.split())
