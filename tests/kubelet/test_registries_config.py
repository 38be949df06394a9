"""registries.yaml: validation (one line naming file and key) and rendering to containerd's
config.toml and hosts.toml layout. No containerd needed."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from sampan.config import ConfigError, load_config
from sampan.kubelet.registries import RegistriesError, load_registries, write_hosts_dir
from sampan.kubelet.runtime.containerd import ContainerdConfig, render_config
from sampan.supervisor.agent import agent_components


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "registries.yaml"
    path.write_text(text)
    return path


def test_missing_file_is_empty(tmp_path: Path) -> None:
    registries = load_registries(tmp_path / "absent.yaml")
    assert not registries


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("mirror: {}\n", "mirror: unknown field"),
        ("mirrors: {docker.io: {endpoints: []}}\n", "mirrors.docker.io.endpoints: unknown field"),
        ("mirrors: {docker.io: {endpoint: x}}\n", "mirrors.docker.io.endpoint: must be a list"),
        (
            "mirrors: {docker.io: {endpoint: ['ftp://x']}}\n",
            "mirrors.docker.io.endpoint[0]: 'ftp://x' is not an http",
        ),
        ("configs: {r.io: {auth: {user: a}}}\n", "configs.r.io.auth.user: unknown field"),
        ("configs: {r.io: {auth: {username: 1}}}\n", "configs.r.io.auth.username: must be"),
        (
            "configs: {r.io: {tls: {insecure_skip_verify: 'yes'}}}\n",
            "configs.r.io.tls.insecure_skip_verify: must be true or false",
        ),
        (
            "configs: {r.io: {tls: {ca_file: /no/such/ca.crt}}}\n",
            "configs.r.io.tls.ca_file: /no/such/ca.crt does not exist",
        ),
        ("configs: {'bad host/x': {}}\n", "configs.bad host/x: must be a registry host"),
        (
            "mirrors: {docker.io: {endpoint: ['https://m'], rewrite: {'^a/(.*)': 'b/$1'}}}\n",
            "mirrors.docker.io.rewrite: rewrite rules are not supported",
        ),
        ("mirrors: [\n", "line 2:"),
        ("mirrors: {'*': {}}\n", 'mirrors.*.endpoint: the "*" mirror needs at least one'),
        ("- a\n", "must be a map"),
    ],
)
def test_invalid_files_name_file_and_key(tmp_path: Path, text: str, key: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(RegistriesError) as err:
        load_registries(path)
    message = str(err.value)
    assert message.startswith(str(path)), message
    assert key in message, message
    assert "\n" not in message


def test_rendering(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text("pem")
    cert, key = tmp_path / "c.crt", tmp_path / "c.key"
    cert.write_text("pem")
    key.write_text("pem")
    path = _write(
        tmp_path,
        f"""
mirrors:
  docker.io:
    endpoint: ["https://mirror.local:5000", "http://plain.local"]
  "*":
    endpoint: ["https://mirror.local:5000"]
configs:
  mirror.local:5000:
    auth: {{username: u, password: "p\\"w"}}
    tls: {{ca_file: {ca}, cert_file: {cert}, key_file: {key}}}
  other.io:
    tls: {{insecure_skip_verify: true}}
""",
    )
    registries = load_registries(path)
    assert 'p\\"w' not in repr(registries) and 'p"w' not in repr(registries)
    cfg = ContainerdConfig(data_dir=tmp_path / "data", registries=registries)
    doc = tomllib.loads(render_config(cfg))
    registry = doc["plugins"]["io.containerd.grpc.v1.cri"]["registry"]
    assert registry["config_path"] == str(cfg.hosts_dir)
    assert registry["configs"]["mirror.local:5000"]["auth"] == {"username": "u", "password": 'p"w'}
    assert "other.io" not in registry["configs"]

    write_hosts_dir(registries, cfg.hosts_dir)
    assert sorted(p.name for p in cfg.hosts_dir.iterdir()) == [
        "_default",
        "docker.io",
        "mirror.local:5000",
        "other.io",
    ]
    docker = tomllib.loads((cfg.hosts_dir / "docker.io" / "hosts.toml").read_text())
    assert docker["server"] == "https://registry-1.docker.io"
    assert list(docker["host"]) == ["https://mirror.local:5000", "http://plain.local"]
    mirror = docker["host"]["https://mirror.local:5000"]
    assert mirror == {
        "capabilities": ["pull", "resolve"],
        "ca": str(ca),
        "client": [[str(cert), str(key)]],
    }
    direct = tomllib.loads((cfg.hosts_dir / "mirror.local:5000" / "hosts.toml").read_text())
    tls = {"ca": str(ca), "client": [[str(cert), str(key)]]}
    assert direct == {
        "server": "https://mirror.local:5000",
        **tls,
        "host": {"https://mirror.local:5000": {"capabilities": ["pull", "resolve"], **tls}},
    }
    wildcard = tomllib.loads((cfg.hosts_dir / "_default" / "hosts.toml").read_text())
    assert "server" not in wildcard
    other = tomllib.loads((cfg.hosts_dir / "other.io" / "hosts.toml").read_text())
    assert other == {
        "server": "https://other.io",
        "skip_verify": True,
        "host": {"https://other.io": {"capabilities": ["pull", "resolve"], "skip_verify": True}},
    }
    # containerd 1.6 cannot read a hosts.toml without a [host] table.
    assert all("host" in tomllib.loads(p.read_text()) for p in cfg.hosts_dir.glob("*/hosts.toml"))

    # Re-rendering without the file leaves nothing behind.
    write_hosts_dir(load_registries(tmp_path / "gone.yaml"), cfg.hosts_dir)
    assert list(cfg.hosts_dir.iterdir()) == []


def test_agent_refuses_to_start_on_a_malformed_file(tmp_path: Path) -> None:
    bad = _write(tmp_path, "configs: {r.io: {auth: {username: u, pasword: p}}}\n")
    main = tmp_path / "config.yaml"
    main.write_text(f"node-name: n1\nnode-ip: [10.0.0.5]\nprivate-registry: {bad}\n")
    env = {"SAMPAN_URL": "https://h:6443", "SAMPAN_TOKEN": "t"}
    config = load_config(
        "agent", {"data_dir": str(tmp_path / "d")}, env=env, default_config_file=main
    )
    assert config.private_registry == str(bad)
    with pytest.raises(ConfigError, match=rf"^{bad}: configs.r.io.auth.pasword: unknown field"):
        agent_components(config, server_url=lambda: "", token=lambda: "", is_server=False)
    flagged = load_config(
        "agent",
        {"data_dir": str(tmp_path / "d"), "private_registry": str(tmp_path / "none.yaml")},
        env=env,
        default_config_file=main,
    )
    assert flagged.private_registry == str(tmp_path / "none.yaml")
    agent_components(flagged, server_url=lambda: "", token=lambda: "", is_server=False)
