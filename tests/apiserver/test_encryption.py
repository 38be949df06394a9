"""Secrets encrypted at rest: a real API server with an EncryptionConfiguration over SQLite.

The datastore is read directly (sqlite3 on the db file, and the raw backend) to prove it only
ever holds ciphertext — current values and the ``old_value`` column alike — while the API
serves the decoded Secret to get, list and watch.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from sampan.api.resources import builtin_registry
from sampan.apiserver.storage.encryption import (
    EncryptionConfigError,
    load_encryption_config,
    write_generated_config,
)
from sampan.cli.main import main
from sampan.cli.secrets_encrypt import (
    EncryptCommandError,
    finish_rotation,
    prepare,
    read_stage,
    reencrypt_secrets,
    rotate,
    status_lines,
)
from sampan.client import ApiError
from sampan.client.api import CONFIGMAPS, ENDPOINTS, SECRETS, SERVICES
from sampan.config import ConfigError, load_config
from sampan.datastore.postgres import PostgresBackend
from sampan.supervisor.server import (
    APIServerComponent,
    DatastoreComponent,
    _record_encryption_hash,
    encryption_config_path,
)
from tests.support.apiserver import ApiServerHarness
from tests.support.postgres import postgres_server

__all__ = ["postgres_server"]

PLAINTEXT = "s3cr3t-value-that-must-not-leak"
KEY1 = base64.b64encode(b"k" * 32).decode()
SAMPAN = [sys.executable, "-m", "sampan.cli.main"]
KEY2 = base64.b64encode(b"z" * 32).decode()


def _config(path: Path, providers: list[dict]) -> Path:
    path.write_text(
        json.dumps(
            {
                "kind": "EncryptionConfiguration",
                "apiVersion": "apiserver.config.k8s.io/v1",
                "resources": [{"resources": ["secrets"], "providers": providers}],
            }
        )
    )
    return path


def _aescbc(name: str, secret: str) -> dict:
    return {"aescbc": {"keys": [{"name": name, "secret": secret}]}}


def _rows(data_dir: Path, name: str) -> list[tuple[bytes, bytes]]:
    db = next((data_dir / "server" / "db").glob("*.db"))
    with sqlite3.connect(db) as conn:
        return conn.execute(
            "SELECT value, old_value FROM kv WHERE name = ? ORDER BY id", (name,)
        ).fetchall()


def _secret(name: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "stringData": {"password": PLAINTEXT},
    }


async def test_secrets_are_ciphertext_in_the_datastore(tmp_path: Path) -> None:
    config = _config(tmp_path / "enc.json", [_aescbc("key1", KEY1), {"identity": {}}])
    harness = ApiServerHarness(tmp_path, encryption_provider_config=config)
    await harness.start()
    try:
        async with harness.new_client() as client:
            stream = client.watch(SECRETS, namespace="default", resource_version="0")
            async with stream:
                await client.create(SECRETS, _secret("db"), namespace="default")
                got = await client.get(SECRETS, "db", namespace="default")
                assert base64.b64decode(got["data"]["password"]).decode() == PLAINTEXT
                # An update writes a new row whose old_value (kine's prev) is the old value.
                got["metadata"]["labels"] = {"tier": "db"}
                await client.update(SECRETS, got, namespace="default")
                kind, obj = await asyncio.wait_for(anext(stream), 30)
                while obj["metadata"]["name"] != "db":
                    kind, obj = await asyncio.wait_for(anext(stream), 30)
                assert kind == "ADDED"
                assert base64.b64decode(obj["data"]["password"]).decode() == PLAINTEXT
            listed = await client.list(SECRETS, namespace="default")
            names = {s["metadata"]["name"]: s for s in listed["items"]}
            assert base64.b64decode(names["db"]["data"]["password"]).decode() == PLAINTEXT
            # A ConfigMap is not configured: stored as plain JSON.
        rows = _rows(tmp_path, "/registry/secrets/default/db")
        assert len(rows) == 2
        for value, old in rows:
            assert value.startswith(b"k8s:enc:aescbc:v1:key1:")
            assert PLAINTEXT.encode() not in value and b"password" not in value
            assert PLAINTEXT.encode() not in old and base64.b64encode(PLAINTEXT.encode()) not in old
        assert rows[1][1].startswith(b"k8s:enc:aescbc:v1:key1:")
        _, kv = await harness.backend.get("/registry/secrets/default/db")
        assert kv.value.startswith(b"k8s:enc:aescbc:v1:key1:")
    finally:
        await harness.stop()


async def test_rotation_to_identity_then_reencrypt(tmp_path: Path) -> None:
    first = _config(tmp_path / "one.json", [_aescbc("key1", KEY1), {"identity": {}}])
    harness = ApiServerHarness(tmp_path, encryption_provider_config=first)
    await harness.start()
    try:
        async with harness.new_client() as client:
            for i in range(5):
                await client.create(SECRETS, _secret(f"s{i}"), namespace="default")
        # Restart with identity first and the old key second: old values stay readable.
        second = _config(tmp_path / "two.json", [{"identity": {}}, _aescbc("key1", KEY1)])
        await harness.server.stop()
        harness.options["encryption_provider_config"] = second
        await harness._start_server(port=0)
        async with harness.new_client() as client:
            got = await client.get(SECRETS, "s3", namespace="default")
            assert base64.b64decode(got["data"]["password"]).decode() == PLAINTEXT
            assert _rows(tmp_path, "/registry/secrets/default/s3")[-1][0].startswith(b"k8s:enc:")
            rewritten = await reencrypt_secrets(client, batch=2)
            assert rewritten >= 5
            for i in range(5):
                value = _rows(tmp_path, f"/registry/secrets/default/s{i}")[-1][0]
                assert (
                    json.loads(value)["data"]["password"]
                    == base64.b64encode(PLAINTEXT.encode()).decode()
                )
            # Once current, a second pass writes nothing new (no-op updates are skipped).
            before = len(_rows(tmp_path, "/registry/secrets/default/s0"))
            await reencrypt_secrets(client, batch=2)
            assert len(_rows(tmp_path, "/registry/secrets/default/s0")) == before
        # And to a new key: identity-stored values move to key2.
        third = _config(
            tmp_path / "three.json",
            [_aescbc("key2", KEY2), _aescbc("key1", KEY1), {"identity": {}}],
        )
        await harness.server.stop()
        harness.options["encryption_provider_config"] = third
        await harness._start_server(port=0)
        async with harness.new_client() as client:
            await reencrypt_secrets(client, batch=3)
            value = _rows(tmp_path, "/registry/secrets/default/s4")[-1][0]
            assert value.startswith(b"k8s:enc:aescbc:v1:key2:")
            got = await client.get(SECRETS, "s4", namespace="default")
            assert base64.b64decode(got["data"]["password"]).decode() == PLAINTEXT
    finally:
        await harness.stop()


async def test_aesgcm_and_secretbox_roundtrip(tmp_path: Path) -> None:
    providers = [
        {"aesgcm": {"keys": [{"name": "g", "secret": KEY1}]}},
        {"secretbox": {"keys": [{"name": "b", "secret": KEY2}]}},
    ]
    for order, prefix in ((providers, b"k8s:enc:aesgcm:v1:g:"),
                          (providers[::-1], b"k8s:enc:secretbox:v1:b:")):  # fmt: skip
        data_dir = tmp_path / prefix.decode().split(":")[2]
        data_dir.mkdir()
        config = _config(data_dir / "enc.json", order)
        harness = ApiServerHarness(data_dir, encryption_provider_config=config)
        await harness.start()
        try:
            async with harness.new_client() as client:
                await client.create(SECRETS, _secret("x"), namespace="default")
                got = await client.get(SECRETS, "x", namespace="default")
                assert base64.b64decode(got["data"]["password"]).decode() == PLAINTEXT
            value = _rows(data_dir, "/registry/secrets/default/x")[-1][0]
            assert value.startswith(prefix) and PLAINTEXT.encode() not in value
        finally:
            await harness.stop()


@pytest.mark.parametrize(
    ("providers", "field", "message"),
    [
        (
            [_aescbc("key1", base64.b64encode(b"short").decode())],
            "resources[0].providers[0].aescbc.keys[0].secret",
            "secret is not of the expected length, got 5, expected one of [16 24 32]",
        ),
        (
            [_aescbc("key1", "not base64!")],
            "resources[0].providers[0].aescbc.keys[0].secret",
            "secrets must be base64 encoded",
        ),
        ([], "resources[0].providers", "at least one provider is required"),
        (
            [{"identity": {}, "aescbc": {"keys": [{"name": "a", "secret": KEY1}]}}],
            "resources[0].providers[0]",
            "more than one provider specified in a single element",
        ),
    ],
)
def test_invalid_config_is_one_clear_line(
    tmp_path: Path, providers: list, field: str, message: str
) -> None:
    path = _config(tmp_path / "bad.json", providers)
    with pytest.raises(EncryptionConfigError) as e:
        load_encryption_config(path)
    text = str(e.value)
    assert "\n" not in text and str(path) in text and field in text and message in text
    assert "c2hvcnQ" not in text  # never the key


async def test_bad_key_length_stops_the_server(tmp_path: Path) -> None:
    config = _config(tmp_path / "bad.json", [_aescbc("key1", base64.b64encode(b"x" * 8).decode())])
    harness = ApiServerHarness(tmp_path, encryption_provider_config=config)
    with pytest.raises(EncryptionConfigError, match="expected length"):
        await harness.start()
    await harness.stop()


def test_generated_config_is_k3s_layout_and_0600(tmp_path: Path) -> None:
    path = tmp_path / "cred" / "encryption-config.json"
    assert write_generated_config(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert not write_generated_config(path)  # kept on the next start
    config = load_encryption_config(path)
    assert config.describe() == [
        ("secrets", "aescbc", "aescbckey", True),
        ("secrets", "identity", "", False),
    ]
    doc = json.loads(path.read_text())
    assert doc["resources"][0]["providers"][1] == {"identity": {}}


async def test_value_no_provider_reads_is_a_500_and_others_keep_working(tmp_path: Path) -> None:
    first = _config(tmp_path / "one.json", [_aescbc("key1", KEY1), {"identity": {}}])
    harness = ApiServerHarness(tmp_path, encryption_provider_config=first)
    await harness.start()
    try:
        async with harness.new_client() as client:
            await client.create(SECRETS, _secret("lost"), namespace="default")
        # The old key is dropped from the file: the Secret cannot be read any more.
        second = _config(tmp_path / "two.json", [_aescbc("key2", KEY2), {"identity": {}}])
        await harness.server.stop()
        harness.options["encryption_provider_config"] = second
        await harness._start_server(port=0)
        async with harness.new_client() as client:
            with pytest.raises(ApiError) as e:
                await client.get(SECRETS, "lost", namespace="default")
            assert e.value.code == 500
            assert e.value.status["reason"] == "InternalError"
            assert e.value.status["message"] == (
                'Internal error occurred: unable to transform key "/registry/secrets/default/lost":'
                " no matching prefix found"
            )
            # Everything else is served: new Secrets (with key2), lists, other resources.
            await client.create(SECRETS, _secret("new"), namespace="default")
            names = [
                s["metadata"]["name"]
                for s in (await client.list(SECRETS, namespace="default"))["items"]
            ]
            assert "new" in names and "lost" not in names
            cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}
            await client.create(CONFIGMAPS, cm, namespace="default")
        value = _rows(tmp_path, "/registry/secrets/default/new")[-1][0]
        assert value.startswith(b"k8s:enc:aescbc:v1:key2:")
        assert json.loads(_rows(tmp_path, "/registry/configmaps/default/c")[-1][0])
    finally:
        await harness.stop()


class _PostgresHarness(ApiServerHarness):
    def __init__(self, data_dir: Path, dsn: str, **options: Any) -> None:
        super().__init__(data_dir, **options)
        self.dsn = dsn

    async def start(self) -> None:
        self.backend = PostgresBackend(self.dsn, auto_compact=False)
        await self.backend.start()
        await self._start_server(port=0)


@pytest.mark.postgres
async def test_postgres_holds_only_ciphertext(tmp_path: Path, postgres_server: Any) -> None:
    dsn = postgres_server.create_database()
    config = _config(tmp_path / "enc.json", [_aescbc("key1", KEY1), {"identity": {}}])
    harness = _PostgresHarness(tmp_path, dsn, encryption_provider_config=config)
    await harness.start()
    try:
        async with harness.new_client() as client:
            await client.create(SECRETS, _secret("pg"), namespace="default")
            got = await client.get(SECRETS, "pg", namespace="default")
            got["metadata"]["labels"] = {"a": "b"}
            await client.update(SECRETS, got, namespace="default")
            got = await client.get(SECRETS, "pg", namespace="default")
            assert base64.b64decode(got["data"]["password"]).decode() == PLAINTEXT
        with psycopg.connect(dsn) as conn:
            rows = conn.execute(
                "SELECT value, old_value FROM kv WHERE name = %s ORDER BY id",
                ("/registry/secrets/default/pg",),
            ).fetchall()
        assert len(rows) == 2
        for value, old in rows:
            assert bytes(value).startswith(b"k8s:enc:aescbc:v1:key1:")
            assert b"password" not in bytes(value) and b"password" not in bytes(old)
    finally:
        await harness.stop()


def test_server_configuration_wiring(tmp_path: Path) -> None:
    """``--secrets-encryption`` picks the generated file; ``kube-apiserver-arg=
    encryption-provider-config=PATH`` a given one, checked before start (one line)."""
    data_dir = tmp_path / "data"
    config = load_config("server", {"data_dir": str(data_dir), "secrets_encryption": True})
    generated = data_dir / "server" / "cred" / "encryption-config.json"
    assert encryption_config_path(config) == generated
    component = APIServerComponent(config, DatastoreComponent("", data_dir))
    assert component._encryption == generated
    assert status_lines(None) == ["Encryption Status: Disabled, no configuration file found"]
    write_generated_config(generated)
    lines = status_lines(generated)
    assert lines[:2] == ["Encryption Status: Enabled", "Current Rotation Stage: start"]
    assert lines[2].startswith("Server Encryption Hashes: hash does not match")  # not started
    _record_encryption_hash(config, load_encryption_config(generated))
    lines = status_lines(generated)
    assert lines[2].startswith("Server Encryption Hashes: All hashes match (start-")
    assert (generated.parent / "encryption-loaded.json").stat().st_mode & 0o777 == 0o600
    assert lines[-2].startswith(" *") and "AESCBC" in lines[-2] and "aescbckey" in lines[-2]
    assert "IDENTITY" in lines[-1] and not lines[-1].startswith(" *")
    secret = json.loads(generated.read_text())["resources"][0]["providers"][0]["aescbc"]
    assert all(secret["keys"][0]["secret"] not in line for line in lines)

    bad = _config(tmp_path / "bad.json", [_aescbc("k", base64.b64encode(b"x" * 7).decode())])
    arg = f"encryption-provider-config={bad}"
    config = load_config("server", {"data_dir": str(data_dir), "kube_apiserver_arg": [arg]})
    with pytest.raises(ConfigError) as e:
        APIServerComponent(config, DatastoreComponent("", data_dir))
    assert "\n" not in str(e.value) and str(bad) in str(e.value)
    assert "expected length, got 7" in str(e.value)
    good = _config(tmp_path / "good.json", [{"identity": {}}])
    args = [f"encryption-provider-config={good}", "max-requests-inflight=7"]
    config = load_config("server", {"data_dir": str(data_dir), "kube_apiserver_arg": args})
    component = APIServerComponent(config, DatastoreComponent("", data_dir))
    assert component._encryption == good and component._limits.max_requests_inflight == 7


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
async def test_kubectl_create_and_replace_reencrypts(tmp_path: Path) -> None:
    """kubectl's view: create a Secret; after a key change, upstream's recipe
    ``kubectl get secrets -A -o json | kubectl replace -f -`` moves it to the new key."""
    first = _config(tmp_path / "one.json", [_aescbc("key1", KEY1), {"identity": {}}])
    harness = ApiServerHarness(tmp_path, encryption_provider_config=first)
    await harness.start()
    try:
        await _kubectl(
            harness, "create", "secret", "generic", "k", f"--from-literal=pw={PLAINTEXT}"
        )
        out = await _kubectl(harness, "get", "secret", "k", "-o", "jsonpath={.data.pw}")
        assert base64.b64decode(out).decode() == PLAINTEXT
        second = _config(tmp_path / "two.json", [_aescbc("key2", KEY2), _aescbc("key1", KEY1)])
        await harness.server.stop()
        harness.options["encryption_provider_config"] = second
        await harness._start_server(port=0)
        listed = await _kubectl(harness, "get", "secrets", "-A", "-o", "json")
        await _kubectl(harness, "replace", "-f", "-", stdin=listed.encode())
        value = _rows(tmp_path, "/registry/secrets/default/k")[-1][0]
        assert value.startswith(b"k8s:enc:aescbc:v1:key2:") and PLAINTEXT.encode() not in value
    finally:
        await harness.stop()


async def _kubectl(harness: ApiServerHarness, *args: str, stdin: bytes | None = None) -> str:
    env = dict(os.environ, KUBECONFIG=str(harness.kubeconfig), HOME=str(harness.data_dir))
    process = await asyncio.create_subprocess_exec(
        shutil.which("kubectl") or "kubectl",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(process.communicate(stdin), 60)
    assert process.returncode == 0, f"kubectl {' '.join(args)}: {err.decode()}"
    return out.decode()


async def test_k3s_rotation_stages(tmp_path: Path) -> None:
    """prepare -> restart -> rotate -> restart -> reencrypt (drops the old key) -> restart, as
    ``k3s secrets-encrypt``; every stage refuses to run before the server loaded the file."""
    data_dir = tmp_path / "data"
    config = load_config("server", {"data_dir": str(data_dir), "secrets_encryption": True})
    path = encryption_config_path(config)
    hash_path = path.parent / "encryption-loaded.json"
    write_generated_config(path)
    harness = ApiServerHarness(tmp_path, encryption_provider_config=path)

    async def restart() -> None:
        if harness.server is None:
            await harness.start()
        else:
            await harness.server.stop()
            await harness._start_server(port=0)
        _record_encryption_hash(config, harness.server.encryption)

    await restart()
    try:
        async with harness.new_client() as client:
            for i in range(3):
                await client.create(SECRETS, _secret(f"r{i}"), namespace="default")
        with pytest.raises(EncryptCommandError, match="rotate follows prepare"):
            rotate(path, hash_path)
        new_key = prepare(path, hash_path)
        assert read_stage(path) == "prepare" and path.stat().st_mode & 0o777 == 0o600
        assert "hash does not match" in status_lines(path, hash_path)[2]
        with pytest.raises(EncryptCommandError, match="restart it"):
            rotate(path, hash_path)  # the server has not loaded the prepared key yet
        await restart()
        assert rotate(path, hash_path) == new_key
        await restart()
        async with harness.new_client() as client:
            await client.create(SECRETS, _secret("after"), namespace="default")
            assert _rows(tmp_path, "/registry/secrets/default/after")[-1][0].startswith(
                f"k8s:enc:aescbc:v1:{new_key}:".encode()
            )
            assert await reencrypt_secrets(client, batch=2) >= 3
        assert finish_rotation(path) == ["aescbckey"]
        assert read_stage(path) == "reencrypt_finished"
        for i in range(3):
            value = _rows(tmp_path, f"/registry/secrets/default/r{i}")[-1][0]
            assert value.startswith(f"k8s:enc:aescbc:v1:{new_key}:".encode())
        await restart()  # without the old key: everything still reads
        async with harness.new_client() as client:
            got = await client.get(SECRETS, "r0", namespace="default")
            assert base64.b64decode(got["data"]["password"]).decode() == PLAINTEXT
        assert status_lines(path, hash_path)[1] == "Current Rotation Stage: reencrypt_finished"
        assert "All hashes match" in status_lines(path, hash_path)[2]
    finally:
        await harness.stop()


def test_status_command_finds_the_file_the_server_loaded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``sampan secrets-encrypt status -d DIR`` without flags: the server started with
    ``--secrets-encryption`` on its command line recorded which file it loaded."""
    data_dir = tmp_path / "data"
    plain = load_config("server", {"data_dir": str(data_dir)})
    assert main(["secrets-encrypt", "status", "-d", str(data_dir)]) == 0
    assert capsys.readouterr().out.startswith("Encryption Status: Disabled")
    path = data_dir / "server" / "cred" / "encryption-config.json"
    write_generated_config(path)
    _record_encryption_hash(plain, load_encryption_config(path))
    assert main(["secrets-encrypt", "status", "-d", str(data_dir)]) == 0
    out = capsys.readouterr().out
    assert "Encryption Status: Enabled" in out and "All hashes match" in out
    secret = json.loads(path.read_text())["resources"][0]["providers"][0]["aescbc"]["keys"][0]
    assert secret["secret"] not in out
    assert main(["secrets-encrypt", "rotate", "-d", str(data_dir)]) == 1
    assert "rotate follows prepare" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_sampan_server_secrets_encryption_process(tmp_path: Path) -> None:
    """``sampan server --secrets-encryption`` as a user runs it (control plane only): the key
    file is generated 0600, a Secret created with kubectl is ciphertext in state.db, ``sampan
    secrets-encrypt status`` (no flags) reports it, and the key is in no log line. A bad
    ``encryption-provider-config`` stops the start with one line."""
    from tests.supervisor.test_server_process import start_server, wait_for_log

    proc, log_path = start_server(tmp_path, "--disable-agent", "--secrets-encryption")
    data_dir = tmp_path / "data"
    try:
        wait_for_log(proc, log_path, "all components ready")
        path = data_dir / "server" / "cred" / "encryption-config.json"
        assert path.stat().st_mode & 0o777 == 0o600
        env = dict(os.environ, KUBECONFIG=str(tmp_path / "kubeconfig.yaml"), HOME=str(tmp_path))
        subprocess.run(
            ["kubectl", "create", "secret", "generic", "p", f"--from-literal=pw={PLAINTEXT}"],
            env=env,
            check=True,
            capture_output=True,
            timeout=60,
        )
        value = _rows(data_dir, "/registry/secrets/default/p")[-1][0]
        assert value.startswith(b"k8s:enc:aescbc:v1:aescbckey:")
        assert PLAINTEXT.encode() not in value
        status = subprocess.run(
            [*SAMPAN, "secrets-encrypt", "status", "--config", os.devnull, "-d", str(data_dir)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert status.returncode == 0, status.stderr
        assert "Encryption Status: Enabled" in status.stdout
        assert "All hashes match" in status.stdout
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    key = json.loads(path.read_text())["resources"][0]["providers"][0]["aescbc"]["keys"][0]
    assert key["secret"] not in log_path.read_text()
    bad = _config(tmp_path / "bad.json", [_aescbc("k", base64.b64encode(b"x" * 5).decode())])
    proc, log_path = start_server(
        tmp_path, "--disable-agent", f"--kube-apiserver-arg=encryption-provider-config={bad}"
    )
    try:
        assert proc.wait(timeout=60) != 0
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log_path.read_text()
    assert "secret is not of the expected length, got 5" in text and str(bad) in text
    assert "Traceback" not in text


async def test_other_resources_and_nested_storage_keys(tmp_path: Path) -> None:
    """Any resource may be listed: Services (stored under ``/registry/services/specs/``) and
    ``*.apps`` are encrypted; Endpoints (``/registry/services/endpoints/``) are not listed and
    stay plain JSON."""
    path = tmp_path / "enc.json"
    path.write_text(
        json.dumps(
            {
                "kind": "EncryptionConfiguration",
                "apiVersion": "apiserver.config.k8s.io/v1",
                "resources": [
                    {
                        "resources": ["services", "*.apps"],
                        "providers": [{"aesgcm": {"keys": [{"name": "g", "secret": KEY1}]}}],
                    }
                ],
            }
        )
    )
    harness = ApiServerHarness(tmp_path, encryption_provider_config=path)
    await harness.start()
    try:
        async with harness.new_client() as client:
            svc = {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "web"},
                "spec": {"ports": [{"port": 80}]},
            }
            await client.create(SERVICES, svc, namespace="default")
            eps = {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "web"}}
            await client.create(ENDPOINTS, eps, namespace="default")
            cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}
            await client.create(CONFIGMAPS, cm, namespace="default")
            got = await client.get(SERVICES, "web", namespace="default")
            assert got["spec"]["ports"][0]["port"] == 80
        assert _rows(tmp_path, "/registry/services/specs/default/web")[-1][0].startswith(
            b"k8s:enc:aesgcm:v1:g:"
        )
        assert json.loads(_rows(tmp_path, "/registry/services/endpoints/default/web")[-1][0])
        assert json.loads(_rows(tmp_path, "/registry/configmaps/default/c")[-1][0])
        config = load_encryption_config(path)
        registry = builtin_registry()
        assert config.transformer_for(registry.by_resource("apps", "v1", "deployments")) is not None
        assert config.transformer_for(registry.by_resource("", "v1", "secrets")) is None
    finally:
        await harness.stop()
