"""``sampan token``: bootstrap tokens agents may join with, and rotating the server token.

* ``token create [--ttl 24h] [--description TEXT] [--usages ...] [--groups ...] [TOKEN]``:
  a Kubernetes bootstrap token — the Secret ``kube-system/bootstrap-token-<id>`` of type
  ``bootstrap.kubernetes.io/token`` (``token-id``, ``token-secret``, ``expiration``,
  ``usage-bootstrap-*``, ``auth-extra-groups``, ``description``) — as kubeadm makes them.
  Prints ``K10<sha256 of the cluster CA>::node:<id>.<secret>``; an agent joins with it
  (``sampan agent --token ...``) until it expires. ``--ttl 0`` never expires.
* ``token list``: the bootstrap tokens, with their expiry, usages and description.
* ``token delete ID...``: delete tokens (``<id>`` or ``<id>.<secret>``); agents that already
  joined keep their credentials.
* ``token rotate [--new-token SECRET]``: write a new server token to
  ``<data-dir>/server/token`` (0600; a random secret unless given), keeping the CA hash, and
  the old one in ``server/token.previous`` until the next start re-seals the datastore's
  bootstrap data under the new secret (``sampan.supervisor.bootstrap_data``). The running
  server still accepts the old token: restart it (``sampan server``) to use the new
  one; agents that join later, and servers started with ``--token``, must then use the new
  token (a ``token:`` in the configuration file overrides the file and must be changed too).

The first three talk to the local server with the admin kubeconfig (``--kubeconfig``, else the
``write-kubeconfig`` of the configuration); ``rotate`` only touches the data dir. Tokens are
secrets: they are printed once by ``create`` and by ``list`` (as kubeadm does), never logged.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import os
import re
import secrets
import string
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sampan.api import times
from sampan.config import ConfigError, load_config

if TYPE_CHECKING:  # the client (aiohttp) is imported when a verb runs: keeps --help fast
    from sampan.client import Client, ClientConfig

__all__ = [
    "BOOTSTRAP_TOKEN_TYPE",
    "DEFAULT_GROUPS",
    "DEFAULT_TTL",
    "add_token_parser",
    "create_token",
    "delete_tokens",
    "list_tokens",
    "parse_ttl",
    "rotate_server_token",
    "run_token",
]

BOOTSTRAP_TOKEN_TYPE = "bootstrap.kubernetes.io/token"
TOKEN_NAMESPACE = "kube-system"
SECRET_PREFIX = "bootstrap-token-"
DEFAULT_TTL = "24h"
DEFAULT_USAGES = ("signing", "authentication")
DEFAULT_GROUPS = ("system:bootstrappers:sampan:default-node-token",)
TOKEN_ALPHABET = string.ascii_lowercase + string.digits
TOKEN_ID_LENGTH = 6
TOKEN_SECRET_LENGTH = 16
SERVER_TOKEN_SECRET_BYTES = 32
TOKEN_FILE_MODE = 0o600
EXIT_OK = 0
EXIT_FAILED = 1

_TOKEN = re.compile(r"^(?P<id>[a-z0-9]{6})\.(?P<secret>[a-z0-9]{16})$")
_TOKEN_ID = re.compile(r"^[a-z0-9]{6}$")
_TTL_PART = re.compile(r"(\d+(?:\.\d+)?)(h|m|s|d)")
_TTL_UNITS_S = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
_K10 = re.compile(r"^K10(?P<hash>[0-9a-f]{64})::(?P<user>[^:]+):(?P<secret>.+)$")


class TokenCommandError(Exception):
    """A token command that cannot be done; the message is the one line the user sees."""


# -- helpers ----------------------------------------------------------------------------------


def parse_ttl(text: str) -> timedelta | None:
    """``24h``, ``1h30m``, ``90s``, ``7d`` -> a duration; ``0`` -> None (never expires)."""
    text = text.strip()
    if text in ("0", "0s"):
        return None
    pos = 0
    total_s = 0.0
    for match in _TTL_PART.finditer(text):
        if match.start() != pos:
            break
        total_s += float(match[1]) * _TTL_UNITS_S[match[2]]
        pos = match.end()
    if pos != len(text) or not text:
        raise TokenCommandError(f"invalid --ttl {text!r} (use e.g. 24h, 1h30m, 0 for never)")
    return None if total_s == 0 else timedelta(seconds=total_s)


def _random(length: int) -> str:
    return "".join(secrets.choice(TOKEN_ALPHABET) for _ in range(length))


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _decoded(secret: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in (secret.get("data") or {}).items():
        try:
            out[key] = base64.b64decode(value).decode()
        except (ValueError, UnicodeDecodeError):
            out[key] = ""
    return out


def _token_id(text: str) -> str:
    match = _TOKEN.match(text)
    if match:
        return match["id"]
    if _TOKEN_ID.match(text):
        return text
    raise TokenCommandError(f"{text!r} is not a token ID (6 characters a-z0-9) or token")


# -- operations (async, against the API) ------------------------------------------------------


async def create_token(
    client: Client,
    *,
    token: str = "",
    ttl: timedelta | None = timedelta(hours=24),
    description: str = "",
    usages: tuple[str, ...] = DEFAULT_USAGES,
    groups: tuple[str, ...] = DEFAULT_GROUPS,
    now: datetime | None = None,
) -> str:
    """Create a bootstrap token Secret; returns ``<id>.<secret>``."""
    from sampan.client import AlreadyExistsError
    from sampan.client.api import SECRETS

    if token:
        match = _TOKEN.match(token)
        if match is None:
            raise TokenCommandError(
                "a token must look like [a-z0-9]{6}.[a-z0-9]{16} (e.g. abcdef.0123456789abcdef)"
            )
        token_id, token_secret = match["id"], match["secret"]
    else:
        token_id, token_secret = _random(TOKEN_ID_LENGTH), _random(TOKEN_SECRET_LENGTH)
    data = {"token-id": token_id, "token-secret": token_secret}
    if ttl is not None:
        expires = (now or datetime.now(UTC)) + ttl
        data["expiration"] = times.rfc3339(expires)
    if description:
        data["description"] = description
    for usage in usages:
        data[f"usage-bootstrap-{usage}"] = "true"
    if groups:
        data["auth-extra-groups"] = ",".join(groups)
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": SECRET_PREFIX + token_id, "namespace": TOKEN_NAMESPACE},
        "type": BOOTSTRAP_TOKEN_TYPE,
        "data": {k: _b64(v) for k, v in data.items()},
    }
    try:
        await client.create(SECRETS, body)
    except AlreadyExistsError:
        raise TokenCommandError(f"a token with ID {token_id} already exists") from None
    return f"{token_id}.{token_secret}"


async def list_tokens(client: Client) -> list[dict[str, str]]:
    """Every bootstrap token: ``token``, ``expiration``, ``usages``, ``description``,
    ``groups`` (strings; ``expiration`` empty when it never expires)."""
    from sampan.client.api import SECRETS

    answer = await client.list_all(
        SECRETS, namespace=TOKEN_NAMESPACE, field_selector=f"type={BOOTSTRAP_TOKEN_TYPE}"
    )
    rows = []
    for secret in answer.get("items") or []:
        if secret.get("type") != BOOTSTRAP_TOKEN_TYPE:
            continue
        data = _decoded(secret)
        usages = sorted(
            key.removeprefix("usage-bootstrap-")
            for key, value in data.items()
            if key.startswith("usage-bootstrap-") and value == "true"
        )
        rows.append(
            {
                "token": f"{data.get('token-id', '')}.{data.get('token-secret', '')}",
                "expiration": data.get("expiration", ""),
                "usages": ",".join(usages),
                "description": data.get("description", ""),
                "groups": data.get("auth-extra-groups", ""),
            }
        )
    return sorted(rows, key=lambda r: r["token"])


async def delete_tokens(client: Client, tokens: list[str]) -> list[str]:
    """Delete the tokens named by ID or whole token; returns the IDs deleted. Raises
    ``TokenCommandError`` naming the first one that does not exist."""
    from sampan.client import ApiError
    from sampan.client.api import SECRETS

    deleted = []
    for text in tokens:
        token_id = _token_id(text)
        try:
            await client.delete(SECRETS, SECRET_PREFIX + token_id, namespace=TOKEN_NAMESPACE)
        except ApiError as exc:
            if exc.code == 404:
                raise TokenCommandError(f"bootstrap token {token_id} not found") from None
            raise
        deleted.append(token_id)
    return deleted


def rotate_server_token(data_dir: Path, new_secret: str = "") -> str:
    """Write a new ``<data-dir>/server/token`` (same CA hash, a new secret); returns the
    token. Blocking file I/O."""
    path = data_dir / "server" / "token"
    try:
        old = path.read_text().strip()
    except FileNotFoundError:
        raise TokenCommandError(
            f"{path} does not exist: start the server once before rotating its token"
        ) from None
    match = _K10.match(old)
    if match is None:
        raise TokenCommandError(f"{path} does not hold a K10 token")
    if new_secret.startswith("K10"):
        given = _K10.match(new_secret)
        if given is None or given["hash"] != match["hash"]:
            raise TokenCommandError("--new-token is a K10 token of another cluster or malformed")
        new_secret = given["secret"]
    secret = new_secret or secrets.token_hex(SERVER_TOKEN_SECRET_BYTES)
    if secret == match["secret"]:
        raise TokenCommandError("the new token is the same as the current one")
    rendered = f"K10{match['hash']}::{match['user']}:{secret}"
    # The datastore's bootstrap record is sealed under the secret the server last started
    # with: keep it until the next start moves the record (two rotations in a row keep the
    # first one's).
    previous = path.with_name("token.previous")
    if not previous.exists():
        fd = os.open(previous, os.O_WRONLY | os.O_CREAT | os.O_EXCL, TOKEN_FILE_MODE)
        try:
            os.write(fd, (old + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
    tmp = path.with_name(f".{path.name}.rotate")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, TOKEN_FILE_MODE)
    try:
        os.write(fd, (rendered + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return rendered


def join_token(ca_pem: bytes, token: str) -> str:
    """The bootstrap token in the form ``sampan agent --token`` takes."""
    return f"K10{hashlib.sha256(ca_pem).hexdigest()}::node:{token}"


# -- the command line -------------------------------------------------------------------------


def add_token_parser(sub: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    """Add ``token`` and its subcommands to the ``sampan`` subparsers ``sub``."""
    text = "Manage bootstrap tokens agents join with, and rotate the server token"
    token = sub.add_parser("token", help=text, description=text)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", "-c", default=argparse.SUPPRESS, help="configuration file")
    common.add_argument("--data-dir", "-d", default=argparse.SUPPRESS, help="data dir")
    common.add_argument(
        "--kubeconfig", default=None, help="admin kubeconfig (default: write-kubeconfig)"
    )
    verbs = token.add_subparsers(dest="token_command", metavar="VERB", parser_class=parser_class)
    create = verbs.add_parser("create", parents=[common], help="Create a bootstrap token")
    create.add_argument("token", nargs="?", default="", help="the token (default: random)")
    create.add_argument("--ttl", default=DEFAULT_TTL, help="lifetime (24h, 30m, 0 = never)")
    create.add_argument("--description", default="", help="a human-readable description")
    create.add_argument("--usages", default=",".join(DEFAULT_USAGES), help="comma-separated usages")
    create.add_argument(
        "--groups", default=",".join(DEFAULT_GROUPS), help="comma-separated extra groups"
    )
    verbs.add_parser("list", parents=[common], help="List bootstrap tokens")
    delete = verbs.add_parser("delete", parents=[common], help="Delete bootstrap tokens")
    delete.add_argument("ids", nargs="+", metavar="ID", help="token ID or whole token")
    rotate = verbs.add_parser(
        "rotate",
        parents=[common],
        help="Write a new server token to <data-dir>/server/token (restart the server after)",
    )
    rotate.add_argument("--new-token", default="", help="the new secret (default: random)")


def run_token(ns: argparse.Namespace) -> int:
    """Run ``sampan token VERB`` from the parsed arguments; returns the exit code."""
    verb = getattr(ns, "token_command", None)
    if verb is None:
        print("sampan token: a verb is required: create, list, delete, rotate", file=sys.stderr)
        return EXIT_FAILED
    from sampan.client import ClientConfig, ClientError

    flags = {k: getattr(ns, k) for k in ("config", "data_dir") if hasattr(ns, k)}
    try:
        config = load_config("server", flags)
        if verb == "rotate":
            token = rotate_server_token(config.data_dir, ns.new_token)
            print(token)
            print(
                "the new token is in effect after the server restarts; agents joining later "
                "need it",
                file=sys.stderr,
            )
            if config.token.reveal():
                print(
                    "warning: the configuration sets token: it overrides the file; change it",
                    file=sys.stderr,
                )
            return EXIT_OK
        kubeconfig = Path(ns.kubeconfig) if ns.kubeconfig else config.write_kubeconfig
        client_config = ClientConfig.from_kubeconfig(kubeconfig)
        return asyncio.run(_run_api(verb, ns, client_config))
    except (TokenCommandError, ConfigError) as exc:
        print(f"sampan token {verb}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except (ClientError, OSError, ValueError) as exc:
        print(f"sampan token {verb}: {exc}", file=sys.stderr)
        return EXIT_FAILED


async def _run_api(verb: str, ns: argparse.Namespace, client_config: ClientConfig) -> int:
    from sampan.client import Client

    async with Client(client_config) as client:
        if verb == "create":
            token = await create_token(
                client,
                token=ns.token,
                ttl=parse_ttl(ns.ttl),
                description=ns.description,
                usages=tuple(u for u in ns.usages.split(",") if u),
                groups=tuple(g for g in ns.groups.split(",") if g),
            )
            ca_pem = client_config.ca_pem
            print(join_token(ca_pem, token) if ca_pem else token)
            return EXIT_OK
        if verb == "list":
            print(_table(await list_tokens(client)))
            return EXIT_OK
        for token_id in await delete_tokens(client, ns.ids):
            print(f"bootstrap token {token_id} deleted")
        return EXIT_OK


def _table(rows: list[dict[str, str]]) -> str:
    header = ["TOKEN", "TTL", "EXPIRES", "USAGES", "DESCRIPTION", "EXTRA GROUPS"]
    now = datetime.now(UTC)
    lines = [header]
    for row in rows:
        ttl = "<forever>"
        if row["expiration"]:
            try:
                expires = datetime.fromisoformat(row["expiration"].replace("Z", "+00:00"))
                left_s = (expires - now).total_seconds()
                ttl = "<expired>" if left_s <= 0 else _duration(left_s)
            except ValueError:
                ttl = "<invalid>"
        lines.append(
            [
                row["token"],
                ttl,
                row["expiration"] or "<never>",
                row["usages"],
                row["description"] or "<none>",
                row["groups"],
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "   ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def _duration(seconds: float) -> str:
    hours, rest = divmod(int(seconds), 3600)
    if hours >= 48:
        return f"{hours // 24}d"
    if hours:
        return f"{hours}h"
    return f"{rest // 60}m" if rest >= 60 else f"{rest}s"
