"""``sampan secrets-encrypt``: encryption at rest of Secrets, as ``k3s secrets-encrypt``.

* ``status``: ``Encryption Status`` (Enabled when an ``EncryptionConfiguration`` is in effect:
  ``--secrets-encryption`` or ``kube-apiserver-arg=encryption-provider-config=PATH``), the
  ``Current Rotation Stage``, the ``Server Encryption Hashes`` (``start-<sha256 of the file>``
  compared with the hash the running server recorded at start, ``server/cred/
  encryption-loaded.json``: a mismatch means the file changed since and the server needs a
  restart; without flags the file is found through that record),
  and every provider key with the writing one marked active. Reads only local files (0600: run
  as the user that runs the server); never prints key material.
* ``prepare`` / ``rotate`` (K3s's stages; only for the file ``--secrets-encryption``
  generates): ``prepare`` appends a new aescbc key (it reads, the current key still writes);
  ``rotate`` moves it first (it writes). Each needs the server to have loaded the file as it
  is (hashes match) and a server restart after it. The stage (``start``, ``prepare``,
  ``rotate``, ``reencrypt_finished``) is kept in ``encryption-state.json`` beside the file.
* ``reencrypt [--batch N]``: rewrites every Secret through the running API server (admin
  kubeconfig) in pages of ``N``: each is read and replaced unchanged; the server writes such a
  no-op update when the stored value was not written by the first provider (see
  storage/encryption.py), so afterwards every Secret is stored with the current key while the
  server keeps serving. A Secret changed or deleted meanwhile is skipped: its writer already
  stored it with the current key. In the ``rotate`` stage it then drops the old keys from the
  file (stage ``reencrypt_finished``). Works in any stage and for a user's own file too.

Invariants: the configuration and state files are replaced atomically and created 0600; a key
is generated with ``secrets`` and appears only in the file.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import secrets
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sampan.config import ConfigError, load_config

if TYPE_CHECKING:
    from sampan.client import Client

__all__ = [
    "DEFAULT_BATCH",
    "EncryptCommandError",
    "add_secrets_encrypt_parser",
    "finish_rotation",
    "prepare",
    "read_stage",
    "reencrypt_secrets",
    "rotate",
    "run_secrets_encrypt",
    "status_lines",
]

DEFAULT_BATCH = 50
EXIT_OK = 0
EXIT_FAILED = 1


async def reencrypt_secrets(client: Client, *, batch: int = DEFAULT_BATCH) -> int:
    """Replace every Secret unchanged, ``batch`` per list page; returns how many were sent."""
    from sampan.client import ConflictError, NotFoundError
    from sampan.client.api import SECRETS

    count = 0
    token: str | None = None
    while True:
        page = await client.list(SECRETS, limit=batch, continue_=token)
        for secret in page.get("items") or []:
            meta = secret["metadata"]
            body = {**secret, "apiVersion": "v1", "kind": "Secret"}
            try:
                await client.update(SECRETS, body, namespace=meta["namespace"])
            except (ConflictError, NotFoundError):
                continue  # changed or removed meanwhile: stored with the current key already
            count += 1
        token = (page.get("metadata") or {}).get("continue") or None
        if token is None:
            return count


STAGE_START = "start"
STAGE_PREPARE = "prepare"
STAGE_ROTATE = "rotate"
STAGE_FINISHED = "reencrypt_finished"


class EncryptCommandError(Exception):
    """A verb that cannot run now (wrong stage, restart needed, not Sampan's file)."""


def _state_path(config_path: Path) -> Path:
    return config_path.with_name("encryption-state.json")


def read_stage(config_path: Path) -> str:
    """The rotation stage recorded next to the configuration (``start`` when none)."""
    try:
        return str(json.loads(_state_path(config_path).read_text()).get("stage") or STAGE_START)
    except (OSError, ValueError, AttributeError):
        return STAGE_START


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _write_stage(config_path: Path, stage: str) -> None:
    _write_private(_state_path(config_path), json.dumps({"stage": stage}) + "\n")


def loaded_record(loaded_hash_path: Path) -> dict[str, Any]:
    """What the server recorded at its last start: ``{"hash", "path"}``, or {}."""
    try:
        record = json.loads(loaded_hash_path.read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def hashes_line(config_path: Path, loaded_hash_path: Path) -> tuple[bool, str]:
    """(match, the ``Server Encryption Hashes`` line): does the running server use the file?"""
    from sampan.apiserver.storage.encryption import config_hash

    want = config_hash(config_path)
    loaded = str(loaded_record(loaded_hash_path).get("hash") or "")
    if loaded == want:
        return True, f"Server Encryption Hashes: All hashes match ({want})"
    return False, (
        "Server Encryption Hashes: hash does not match: the server has not loaded "
        f"{config_path} as it is now (file {want}, server {loaded or 'none'}); restart it"
    )


def status_lines(path: Path | None, loaded_hash_path: Path | None = None) -> list[str]:
    """The ``status`` report for the configuration at ``path`` (None: disabled)."""
    from sampan.apiserver.storage.encryption import load_encryption_config

    if path is None:
        return ["Encryption Status: Disabled, no configuration file found"]
    config = load_encryption_config(path)
    loaded = loaded_hash_path or path.with_name("encryption-loaded.json")
    lines = [
        "Encryption Status: Enabled",
        f"Current Rotation Stage: {read_stage(path)}",
        hashes_line(path, loaded)[1],
        "",
        f"{'Active':<7} {'Key Type':<10} {'Name':<28} Resources",
        f"{'------':<7} {'--------':<10} {'----':<28} ---------",
    ]
    for resources, provider, name, writes in config.describe():
        lines.append(
            f"{' *' if writes else '':<7} {provider.upper():<10} {name or '-':<28} {resources}"
        )
    return lines


def _generated_doc(path: Path) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """The generated file and its aescbc key list (refused for any other layout)."""
    doc = json.loads(path.read_text())
    try:
        keys = doc["resources"][0]["providers"][0]["aescbc"]["keys"]
    except (KeyError, IndexError, TypeError):
        keys = None
    if not isinstance(keys, list) or not keys:
        raise EncryptCommandError(f"{path} is not the layout --secrets-encryption generates")
    return doc, keys


def _check_loaded(path: Path, loaded_hash_path: Path) -> None:
    match, line = hashes_line(path, loaded_hash_path)
    if not match:
        raise EncryptCommandError(line.split(": ", 1)[1])


def prepare(path: Path, loaded_hash_path: Path, *, now: datetime | None = None) -> str:
    """Add a new aescbc key AFTER the current one (it reads; the current one still writes).
    Returns the new key's name."""
    from sampan.apiserver.storage.encryption import K3S_KEY_NAME, load_encryption_config

    stage = read_stage(path)
    if stage not in (STAGE_START, STAGE_FINISHED):
        raise EncryptCommandError(f"the current stage is {stage}; prepare follows start or "
                                  f"{STAGE_FINISHED}")  # fmt: skip
    _check_loaded(path, loaded_hash_path)
    doc, keys = _generated_doc(path)
    name = f"{K3S_KEY_NAME}-{(now or datetime.now(UTC)).strftime('%Y%m%dT%H%M%SZ')}"
    if any(k.get("name") == name for k in keys):
        raise EncryptCommandError(f"a key named {name} exists already; try again in a second")
    keys.append({"name": name, "secret": base64.b64encode(secrets.token_bytes(32)).decode()})
    _write_private(path, json.dumps(doc, indent=2) + "\n")
    load_encryption_config(path)  # what we wrote must load
    _write_stage(path, STAGE_PREPARE)
    return name


def rotate(path: Path, loaded_hash_path: Path) -> str:
    """Move the prepared key first: new values are written with it. Returns its name."""
    stage = read_stage(path)
    if stage != STAGE_PREPARE:
        raise EncryptCommandError(f"the current stage is {stage}; rotate follows prepare")
    _check_loaded(path, loaded_hash_path)
    doc, keys = _generated_doc(path)
    keys.insert(0, keys.pop())
    _write_private(path, json.dumps(doc, indent=2) + "\n")
    _write_stage(path, STAGE_ROTATE)
    return keys[0]["name"]


def finish_rotation(path: Path) -> list[str]:
    """After a reencrypt in the rotate stage: drop every key but the first from the file.
    Returns the names dropped."""
    doc, keys = _generated_doc(path)
    dropped = [k.get("name", "") for k in keys[1:]]
    del keys[1:]
    _write_private(path, json.dumps(doc, indent=2) + "\n")
    _write_stage(path, STAGE_FINISHED)
    return dropped


def add_secrets_encrypt_parser(sub: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    text = "Control secrets encryption at rest (status, prepare, rotate, reencrypt)"
    cmd = sub.add_parser("secrets-encrypt", help=text, description=text)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", "-c", default=argparse.SUPPRESS, help="configuration file")
    common.add_argument("--data-dir", "-d", default=argparse.SUPPRESS, help="data dir")
    verbs = cmd.add_subparsers(dest="encrypt_command", metavar="VERB", parser_class=parser_class)
    verbs.add_parser("status", parents=[common], help="Print the encryption status")
    verbs.add_parser(
        "prepare", parents=[common], help="Add a new key after the current one (then restart)"
    )
    verbs.add_parser(
        "rotate", parents=[common], help="Make the prepared key the writing one (then restart)"
    )
    re = verbs.add_parser(
        "reencrypt",
        parents=[common],
        help="Rewrite every Secret with the current first provider (after rotate: then drop "
        "the old key)",
    )
    re.add_argument(
        "--kubeconfig", default=None, help="admin kubeconfig (default: write-kubeconfig)"
    )
    re.add_argument("--batch", type=int, default=DEFAULT_BATCH, help="Secrets per list page")


def run_secrets_encrypt(ns: argparse.Namespace) -> int:
    from sampan.apiserver.storage.encryption import EncryptionConfigError
    from sampan.client import ClientConfig, ClientError
    from sampan.supervisor.server import (
        encryption_config_path,
        encryption_hash_path,
        generated_encryption_path,
    )

    verb = getattr(ns, "encrypt_command", None)
    if verb is None:
        print(
            "sampan secrets-encrypt: a verb is required: status, prepare, rotate, reencrypt",
            file=sys.stderr,
        )
        return EXIT_FAILED
    flags = {k: getattr(ns, k) for k in ("config", "data_dir") if hasattr(ns, k)}
    try:
        config = load_config("server", flags)
        loaded = encryption_hash_path(config)
        path = encryption_config_path(config)
        if path is None and loaded_record(loaded).get("path"):
            # No flag here (the server may have been started with them on its command
            # line): the file the server loaded at its last start.
            path = Path(loaded_record(loaded)["path"])
        if path is not None and not path.exists():
            path = None  # --secrets-encryption before the first start
        if verb == "status":
            print("\n".join(status_lines(path, loaded)))
            return EXIT_OK
        if path is None:
            raise EncryptCommandError("encryption is disabled")
        if verb in ("prepare", "rotate") and path != generated_encryption_path(config):
            raise EncryptCommandError(
                f"{verb} manages the file --secrets-encryption generates; edit {path} yourself"
            )
        if verb == "prepare":
            name = prepare(path, loaded)
            print(f"prepare completed successfully: added key {name}; restart the server")
            return EXIT_OK
        if verb == "rotate":
            name = rotate(path, loaded)
            print(f"rotate completed successfully: {name} writes now; restart the server")
            return EXIT_OK
        if ns.batch < 1:
            raise EncryptCommandError("--batch must be at least 1")
        rotating = read_stage(path) == STAGE_ROTATE
        if rotating:
            _check_loaded(path, loaded)
        kubeconfig = Path(ns.kubeconfig) if ns.kubeconfig else config.write_kubeconfig
        count = asyncio.run(_reencrypt(ClientConfig.from_kubeconfig(kubeconfig), ns.batch))
        print(f"reencryption finished: {count} secrets rewritten")
        if rotating:
            dropped = finish_rotation(path)
            print(f"removed the old keys {', '.join(dropped)} from {path}; restart the server")
        return EXIT_OK
    except (
        EncryptCommandError,
        ConfigError,
        EncryptionConfigError,
        ClientError,
        OSError,
        ValueError,
    ) as exc:
        print(f"sampan secrets-encrypt {verb}: {exc}", file=sys.stderr)
        return EXIT_FAILED


async def _reencrypt(client_config: Any, batch: int) -> int:
    from sampan.client import Client

    async with Client(client_config) as client:
        return await reencrypt_secrets(client, batch=batch)
