"""Shared bootstrap data: one cluster's CAs and tokens in the datastore, loaded by every server.

Real datastores (SQLite in a temp dir, a private PostgreSQL), real ``sampan server`` processes
for the acceptance: two servers on one PostgreSQL share one CA, so the admin kubeconfig of one
works against the other; a server with another token is refused with one line.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from sampan.datastore.postgres import PostgresBackend
from sampan.datastore.sqlite import SQLiteBackend
from sampan.pki import AUTHORITY_FILES
from sampan.supervisor import bootstrap_data
from sampan.supervisor.bootstrap_data import (
    BOOTSTRAP_PREFIX,
    KEY_CACHE_FILE,
    BootstrapError,
    decrypt,
    encrypt,
    reconcile_bootstrap,
    storage_key,
)
from tests.supervisor.test_server_process import free_port, start_server, wait_for_log
from tests.support.postgres import postgres_server

__all__ = ["postgres_server"]

TOKEN = "correct-horse-battery-staple"


def _cas(server_dir: Path) -> dict[str, bytes]:
    return {name: (server_dir / "tls" / name).read_bytes() for name in AUTHORITY_FILES}


def test_envelope_round_trip_and_wrong_secret() -> None:
    key = storage_key(TOKEN)
    assert key.startswith(BOOTSTRAP_PREFIX) and len(key) == len(BOOTSTRAP_PREFIX) + 12
    sealed = encrypt(TOKEN, b"payload", key=key)
    assert b"payload" not in sealed and TOKEN.encode() not in sealed
    assert decrypt(TOKEN, sealed, key=key) == b"payload"
    with pytest.raises(BootstrapError, match="cannot be decrypted with this token"):
        decrypt("another", sealed, key=key)
    with pytest.raises(BootstrapError, match="cannot be decrypted"):
        decrypt(TOKEN, sealed, key=storage_key("moved"))  # bound to its key
    with pytest.raises(BootstrapError, match="not readable"):
        decrypt(TOKEN, b"garbage", key=key)


def test_key_cache_skips_the_derivation_only_for_the_same_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kept derived key opens the same envelope without PBKDF2 again; it never opens one
    for another secret, and a damaged cache only costs a derivation."""
    derivations: list[int] = []
    real = bootstrap_data._derive

    def counting(secret: str, salt: bytes, iterations: int) -> bytes:
        derivations.append(iterations)
        return real(secret, salt, iterations)

    monkeypatch.setattr(bootstrap_data, "_derive", counting)
    key = storage_key(TOKEN)
    sealed = encrypt(TOKEN, b"payload", key=key)
    cache = tmp_path / "server" / KEY_CACHE_FILE
    derivations.clear()
    assert decrypt(TOKEN, sealed, key=key, key_cache=cache) == b"payload"
    assert len(derivations) == 1
    assert cache.stat().st_mode & 0o777 == 0o600
    assert cache.parent.stat().st_mode & 0o777 == 0o700
    assert TOKEN not in cache.read_text()
    assert decrypt(TOKEN, sealed, key=key, key_cache=cache) == b"payload"
    assert len(derivations) == 1  # from the cache
    # Another secret derives (and fails) even though the cache holds the right key.
    with pytest.raises(BootstrapError, match="cannot be decrypted with this token"):
        decrypt("another", sealed, key=key, key_cache=cache)
    assert len(derivations) == 2
    # Another envelope (new salt) under the same secret derives and replaces the entry.
    resealed = encrypt(TOKEN, b"second", key=key)
    derivations.clear()
    assert decrypt(TOKEN, resealed, key=key, key_cache=cache) == b"second"
    assert decrypt(TOKEN, resealed, key=key, key_cache=cache) == b"second"
    assert len(derivations) == 1
    # A damaged key (the check still matching it) or a garbled file: derive again.
    doc = json.loads(cache.read_text())
    wrong = bytes(32)
    doc["key"] = bootstrap_data._b64(wrong)
    doc["check"] = bootstrap_data._cache_check(wrong, TOKEN)
    cache.write_text(json.dumps(doc))
    assert decrypt(TOKEN, resealed, key=key, key_cache=cache) == b"second"
    cache.write_text("{not json")
    assert decrypt(TOKEN, resealed, key=key, key_cache=cache) == b"second"
    assert len(derivations) == 3
    assert decrypt(TOKEN, resealed, key=key, key_cache=cache) == b"second"
    assert len(derivations) == 3  # the cache was written again


async def test_second_server_loads_first_servers_material(tmp_path: Path) -> None:
    backend = SQLiteBackend(tmp_path / "state.db", auto_compact=False)
    await backend.start()
    try:
        first = await reconcile_bootstrap(
            backend,
            server_dir=tmp_path / "a",
            token=TOKEN,
            agent_token="",
            secrets_encryption=False,
        )
        assert first.created and first.token_secret == TOKEN
        # The next start of this server opens the record with the key it kept.
        assert (tmp_path / "a" / KEY_CACHE_FILE).stat().st_mode & 0o777 == 0o600
        second = await reconcile_bootstrap(
            backend,
            server_dir=tmp_path / "b",
            token=TOKEN,
            agent_token="",
            secrets_encryption=False,
        )
        assert not second.created
        assert _cas(tmp_path / "a") == _cas(tmp_path / "b")
        for name in AUTHORITY_FILES:
            assert (tmp_path / "b" / "tls" / name).stat().st_mode & 0o777 == 0o600
        # The record holds no plaintext key material.
        _, kv = await backend.get(storage_key(TOKEN))
        assert kv is not None and b"PRIVATE KEY" not in kv.value
        # A restart (same dir, token from the token file or flag) changes nothing.
        again = await reconcile_bootstrap(
            backend,
            server_dir=tmp_path / "a",
            token=TOKEN,
            agent_token="",
            secrets_encryption=False,
        )
        assert not again.created and _cas(tmp_path / "a") == _cas(tmp_path / "b")

        with pytest.raises(BootstrapError, match="different token"):
            await reconcile_bootstrap(
                backend,
                server_dir=tmp_path / "c",
                token="wrong",
                agent_token="",
                secrets_encryption=False,
            )
        with pytest.raises(BootstrapError, match="--token"):
            await reconcile_bootstrap(
                backend,
                server_dir=tmp_path / "d",
                token="",
                agent_token="",
                secrets_encryption=False,
            )
        assert not (tmp_path / "c" / "tls" / "server-ca.crt").exists()
        assert not (tmp_path / "d" / "tls").exists()
        # A data dir of another cluster is refused, not overwritten.
        other = SQLiteBackend(tmp_path / "other.db", auto_compact=False)
        await other.start()
        try:
            await reconcile_bootstrap(
                other,
                server_dir=tmp_path / "e",
                token=TOKEN,
                agent_token="",
                secrets_encryption=False,
            )
        finally:
            await other.close()
        before = _cas(tmp_path / "e")
        with pytest.raises(BootstrapError, match="belongs to another cluster"):
            await reconcile_bootstrap(
                backend,
                server_dir=tmp_path / "e",
                token=TOKEN,
                agent_token="",
                secrets_encryption=False,
            )
        assert _cas(tmp_path / "e") == before
    finally:
        await backend.close()


async def test_agent_token_and_encryption_config_are_shared(tmp_path: Path) -> None:
    from sampan.apiserver.storage.encryption import write_generated_config

    backend = SQLiteBackend(tmp_path / "state.db", auto_compact=False)
    await backend.start()
    try:
        await reconcile_bootstrap(
            backend,
            server_dir=tmp_path / "a",
            token=TOKEN,
            agent_token="agent-secret",
            secrets_encryption=True,
            generate_encryption=write_generated_config,
        )
        config_a = tmp_path / "a" / "cred" / "encryption-config.json"
        assert config_a.exists()
        b = await reconcile_bootstrap(
            backend,
            server_dir=tmp_path / "b",
            token=TOKEN,
            agent_token="",
            secrets_encryption=True,
            generate_encryption=write_generated_config,
        )
        assert b.agent_token_secret == "agent-secret"
        config_b = tmp_path / "b" / "cred" / "encryption-config.json"
        assert config_b.read_bytes() == config_a.read_bytes()
        assert config_b.stat().st_mode & 0o777 == 0o600
        with pytest.raises(BootstrapError, match="--agent-token differs"):
            await reconcile_bootstrap(
                backend,
                server_dir=tmp_path / "b",
                token=TOKEN,
                agent_token="other",
                secrets_encryption=True,
            )
        # A rotation on server b (a newer file) is pushed at its restart, pulled by a.
        doc = json.loads(config_b.read_text())
        doc["rotated"] = True
        config_b.write_text(json.dumps(doc))
        await reconcile_bootstrap(
            backend, server_dir=tmp_path / "b", token=TOKEN, agent_token="", secrets_encryption=True
        )
        await reconcile_bootstrap(
            backend, server_dir=tmp_path / "a", token=TOKEN, agent_token="", secrets_encryption=True
        )
        assert json.loads(config_a.read_text())["rotated"] is True
    finally:
        await backend.close()


async def test_token_rotation_moves_the_record(tmp_path: Path) -> None:
    from sampan.cli.token import rotate_server_token

    backend = SQLiteBackend(tmp_path / "state.db", auto_compact=False)
    await backend.start()
    server_dir = tmp_path / "data" / "server"
    try:
        first = await reconcile_bootstrap(
            backend, server_dir=server_dir, token="", agent_token="", secrets_encryption=False
        )
        ca = (server_dir / "tls" / "server-ca.crt").read_bytes()
        import hashlib

        digest = hashlib.sha256(ca).hexdigest()
        (server_dir / "token").write_text(f"K10{digest}::server:{first.token_secret}\n")
        rotate_server_token(tmp_path / "data", "brand-new-secret")
        after = await reconcile_bootstrap(
            backend, server_dir=server_dir, token="", agent_token="", secrets_encryption=False
        )
        assert after.token_secret == "brand-new-secret"
        assert not (server_dir / "token.previous").exists()
        keys = [kv.key for kv in (await backend.list(BOOTSTRAP_PREFIX)).items]
        assert keys == [storage_key("brand-new-secret")]
    finally:
        await backend.close()


@pytest.mark.postgres
async def test_racing_first_starts_make_one_ca(tmp_path: Path, postgres_server: Any) -> None:
    dsn = postgres_server.create_database()
    backends = [PostgresBackend(dsn, auto_compact=False) for _ in range(3)]
    for b in backends:
        await b.start()
    try:
        results = await asyncio.gather(
            *(
                reconcile_bootstrap(
                    b,
                    server_dir=tmp_path / f"s{i}",
                    token=TOKEN,
                    agent_token="",
                    secrets_encryption=False,
                )
                for i, b in enumerate(backends)
            )
        )
        assert sum(r.created for r in results) == 1
        assert _cas(tmp_path / "s0") == _cas(tmp_path / "s1") == _cas(tmp_path / "s2")
        # Two first starts with different tokens: exactly one cluster results.
        dsn2 = postgres_server.create_database()
        pair = [PostgresBackend(dsn2, auto_compact=False) for _ in range(2)]
        for b in pair:
            await b.start()
        try:
            outcome = await asyncio.gather(
                *(
                    reconcile_bootstrap(
                        b,
                        server_dir=tmp_path / f"t{i}",
                        token=f"token-{i}",
                        agent_token="",
                        secrets_encryption=False,
                    )
                    for i, b in enumerate(pair)
                ),
                return_exceptions=True,
            )
            assert sum(isinstance(o, BootstrapError) for o in outcome) == 1
            assert len((await pair[0].list(BOOTSTRAP_PREFIX)).items) == 1
        finally:
            for b in pair:
                await b.close()
    finally:
        for b in backends:
            await b.close()


def _kubectl(kubeconfig: Path, server: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), "--server", server, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.postgres
def test_two_servers_on_one_postgres_share_one_ca(tmp_path: Path, postgres_server: Any) -> None:
    """Acceptance: the admin kubeconfig written by server A works against server B."""
    dsn = postgres_server.create_database()
    common = ("--disable-agent", "--datastore-endpoint", dsn, "--token", TOKEN)
    procs = []
    try:
        a_dir, b_dir = tmp_path / "a", tmp_path / "b"
        a_dir.mkdir()
        b_dir.mkdir()
        port_a, port_b = free_port(), free_port()
        proc_a, log_a = start_server(a_dir, *common, "--https-listen-port", str(port_a))
        procs.append(proc_a)
        proc_b, log_b = start_server(b_dir, *common, "--https-listen-port", str(port_b))
        procs.append(proc_b)
        wait_for_log(proc_a, log_a, "all components ready")
        wait_for_log(proc_b, log_b, "all components ready")
        assert (a_dir / "data/server/tls/server-ca.crt").read_bytes() == (
            b_dir / "data/server/tls/server-ca.crt"
        ).read_bytes()
        for port in (port_a, port_b):
            out = _kubectl(a_dir / "kubeconfig.yaml", f"https://127.0.0.1:{port}", "get", "ns")
            assert out.returncode == 0, out.stderr
            assert "kube-system" in out.stdout
        # A third server with another token is refused with one clear line.
        c_dir = tmp_path / "c"
        c_dir.mkdir()
        proc_c, log_c = start_server(
            c_dir, "--disable-agent", "--datastore-endpoint", dsn, "--token", "wrong-token"
        )
        procs.append(proc_c)
        assert proc_c.wait(timeout=120) == 1
        text = log_c.read_text()
        assert "bootstrap data encrypted with a different token" in text
        assert "wrong-token" not in text and TOKEN not in text
        assert "Traceback" not in text
        assert not (c_dir / "data/server/tls/server-ca.crt").exists()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
