"""The cluster join token, in K3s's form: ``K10<sha256 of the cluster CA>::<user>:<secret>``.

The server writes its token to ``<data-dir>/server/token`` (0600) on first start and keeps it:
the CA hash lets a joining agent check that it talks to the right cluster before it sends the
secret. A token given with ``--token`` is used as the secret (a full ``K10...`` token given by
the user must carry this cluster's CA hash). The token is a secret: it is never logged.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "TOKEN_PREFIX",
    "JoinToken",
    "TokenError",
    "ensure_agent_token",
    "ensure_server_token",
    "parse_token",
]

TOKEN_PREFIX = "K10"
SERVER_USER = "server"
SECRET_BYTES = 32
TOKEN_FILE_MODE = 0o600

_FULL = re.compile(r"^K10(?P<hash>[0-9a-f]{64})::(?P<user>[^:]+):(?P<secret>.+)$")


class TokenError(Exception):
    """A token that cannot be used; the message never contains the secret."""


@dataclass(frozen=True)
class JoinToken:
    ca_hash: str | None
    """sha256 hex of the CA certificate file, or None for a bare secret."""
    user: str
    secret: str = field(repr=False)

    def render(self) -> str:
        if self.ca_hash is None:
            return self.secret
        return f"{TOKEN_PREFIX}{self.ca_hash}::{self.user}:{self.secret}"


def parse_token(text: str, *, default_user: str = SERVER_USER) -> JoinToken:
    """A full ``K10<hash>::<user>:<secret>`` token, or a bare secret."""
    text = text.strip()
    if not text:
        raise TokenError("the token is empty")
    match = _FULL.match(text)
    if match:
        return JoinToken(match["hash"], match["user"], match["secret"])
    if text.startswith(TOKEN_PREFIX) and "::" in text:
        raise TokenError("the token looks like a K10 token but is malformed")
    return JoinToken(None, default_user, text)


def ca_hash(ca_pem: bytes) -> str:
    return hashlib.sha256(ca_pem).hexdigest()


def ensure_server_token(data_dir: Path, ca_pem: bytes, given: str = "") -> JoinToken:
    """Return the server's join token, writing ``<data-dir>/server/token`` when it is new.

    Blocking file I/O: call from a thread in async code.
    """
    path = data_dir / "server" / "token"
    digest = ca_hash(ca_pem)
    if given:
        token = parse_token(given)
        if token.ca_hash is not None and token.ca_hash != digest:
            raise TokenError(
                "the --token given carries a CA hash that does not match this server's CA "
                f"({path.parent / 'tls' / 'server-ca.crt'})"
            )
        token = JoinToken(digest, SERVER_USER, token.secret)
    elif path.exists():
        token = parse_token(path.read_text())
        token = JoinToken(digest, token.user, token.secret)
    else:
        token = JoinToken(digest, SERVER_USER, secrets.token_hex(SECRET_BYTES))
    rendered = token.render() + "\n"
    if not path.exists() or path.read_text() != rendered:
        _write_private(path, rendered)
    return token


def ensure_agent_token(data_dir: Path, ca_pem: bytes, given: str) -> JoinToken:
    """``--agent-token``: agents (but not servers) join with it; written to
    ``<data-dir>/server/agent-token`` (0600) in the K10 form with user ``node``."""
    token = parse_token(given, default_user="node")
    digest = ca_hash(ca_pem)
    if token.ca_hash is not None and token.ca_hash != digest:
        raise TokenError("the --agent-token given carries a CA hash that does not match")
    token = JoinToken(digest, "node", token.secret)
    path = data_dir / "server" / "agent-token"
    rendered = token.render() + "\n"
    if not path.exists() or path.read_text() != rendered:
        _write_private(path, rendered)
    return token


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, TOKEN_FILE_MODE)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
