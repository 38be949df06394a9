"""``sampan secrets-encrypt``: encryption at rest of Secrets, as ``k3s secrets-encrypt``.

* ``status``: ``Encryption Status`` (Enabled when an ``EncryptionConfiguration`` is in effect:
  ``--secrets-encryption`` or ``kube-apiserver-arg=encryption-provider-config=PATH``), the
  ``Current Rotation Stage`` (always ``start``: the ``prepare``/``rotate`` stages are not
  implemented; rotate keys by editing the file and restarting, then ``reencrypt``), the
  ``Server Encryption Hashes`` (``start-<sha256 of the file>``; one server, so they match), and
  the writing provider and key of every resources entry. Reads only the local file (0600:
  run as the user that runs the server); never prints key material.
* ``reencrypt [--batch N]``: rewrites every Secret through the running API server (admin
  kubeconfig) in pages of ``N``: each is read and replaced unchanged; the server writes such a
  no-op update when the stored value was not written by the first provider (see
  storage/encryption.py), so afterwards every Secret is stored with the current key while the
  server keeps serving. A Secret changed or deleted meanwhile is skipped: its writer already
  stored it with the current key.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sampan.config import ConfigError, load_config

if TYPE_CHECKING:
    from sampan.client import Client

__all__ = [
    "DEFAULT_BATCH",
    "add_secrets_encrypt_parser",
    "reencrypt_secrets",
    "run_secrets_encrypt",
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


def status_lines(path: Path | None) -> list[str]:
    """The ``status`` report for the configuration at ``path`` (None: disabled)."""
    from sampan.apiserver.storage.encryption import config_hash, load_encryption_config

    if path is None:
        return ["Encryption Status: Disabled, no configuration file found"]
    config = load_encryption_config(path)
    lines = [
        "Encryption Status: Enabled",
        "Current Rotation Stage: start",
        f"Server Encryption Hashes: All hashes match ({config_hash(path)})",
        "",
        f"{'Active':<7} {'Key Type':<10} {'Name':<16} Resources",
        f"{'------':<7} {'--------':<10} {'----':<16} ---------",
    ]
    for resources, provider, name in config.describe():
        lines.append(f"{' *':<7} {provider.upper():<10} {name or '-':<16} {resources}")
    return lines


def add_secrets_encrypt_parser(sub: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    text = "Control secrets encryption at rest (status, reencrypt)"
    cmd = sub.add_parser("secrets-encrypt", help=text, description=text)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", "-c", default=argparse.SUPPRESS, help="configuration file")
    common.add_argument("--data-dir", "-d", default=argparse.SUPPRESS, help="data dir")
    verbs = cmd.add_subparsers(dest="encrypt_command", metavar="VERB", parser_class=parser_class)
    verbs.add_parser("status", parents=[common], help="Print the encryption status")
    re = verbs.add_parser(
        "reencrypt", parents=[common], help="Rewrite every Secret with the current first provider"
    )
    re.add_argument(
        "--kubeconfig", default=None, help="admin kubeconfig (default: write-kubeconfig)"
    )
    re.add_argument("--batch", type=int, default=DEFAULT_BATCH, help="Secrets per list page")


def run_secrets_encrypt(ns: argparse.Namespace) -> int:
    from sampan.apiserver.storage.encryption import EncryptionConfigError
    from sampan.client import ClientConfig, ClientError
    from sampan.supervisor.server import encryption_config_path

    verb = getattr(ns, "encrypt_command", None)
    if verb is None:
        print("sampan secrets-encrypt: a verb is required: status, reencrypt", file=sys.stderr)
        return EXIT_FAILED
    flags = {k: getattr(ns, k) for k in ("config", "data_dir") if hasattr(ns, k)}
    try:
        config = load_config("server", flags)
        path = encryption_config_path(config)
        if verb == "status":
            print("\n".join(status_lines(path if path is None or path.exists() else None)))
            return EXIT_OK
        if path is None:
            print("sampan secrets-encrypt reencrypt: encryption is disabled", file=sys.stderr)
            return EXIT_FAILED
        if ns.batch < 1:
            print("sampan secrets-encrypt reencrypt: --batch must be at least 1", file=sys.stderr)
            return EXIT_FAILED
        kubeconfig = Path(ns.kubeconfig) if ns.kubeconfig else config.write_kubeconfig
        count = asyncio.run(_reencrypt(ClientConfig.from_kubeconfig(kubeconfig), ns.batch))
        print(f"reencryption finished: {count} secrets rewritten")
        return EXIT_OK
    except (ConfigError, EncryptionConfigError, ClientError, OSError, ValueError) as exc:
        print(f"sampan secrets-encrypt {verb}: {exc}", file=sys.stderr)
        return EXIT_FAILED


async def _reencrypt(client_config: Any, batch: int) -> int:
    from sampan.client import Client

    async with Client(client_config) as client:
        return await reencrypt_secrets(client, batch=batch)
