from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from sampan.supervisor.token import TokenError, ensure_server_token, parse_token

CA = b"-----BEGIN CERTIFICATE-----\nfake\n-----END CERTIFICATE-----\n"
HASH = hashlib.sha256(CA).hexdigest()


def test_first_start_writes_k10_token_0600_and_keeps_it(tmp_path: Path) -> None:
    token = ensure_server_token(tmp_path, CA)
    path = tmp_path / "server" / "token"
    text = path.read_text().strip()
    assert text.startswith(f"K10{HASH}::server:")
    assert path.stat().st_mode & 0o777 == 0o600
    assert ensure_server_token(tmp_path, CA).render() == token.render() == text
    assert token.secret not in repr(token)


def test_given_secret_becomes_the_token(tmp_path: Path) -> None:
    token = ensure_server_token(tmp_path, CA, "my-secret")
    assert token.render() == f"K10{HASH}::server:my-secret"
    full = ensure_server_token(tmp_path, CA, token.render())
    assert full.render() == token.render()


def test_full_token_for_another_cluster_is_refused(tmp_path: Path) -> None:
    other = "K10" + "0" * 64 + "::server:s3cret"
    with pytest.raises(TokenError, match="does not match") as info:
        ensure_server_token(tmp_path, CA, other)
    assert "s3cret" not in str(info.value)


def test_parse_token_forms() -> None:
    assert parse_token("abc").ca_hash is None
    t = parse_token(f"K10{HASH}::node:pw")
    assert (t.ca_hash, t.user, t.secret) == (HASH, "node", "pw")
    with pytest.raises(TokenError):
        parse_token("K10zz::x")
    with pytest.raises(TokenError):
        parse_token("  ")
