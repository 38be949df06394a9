"""``sampan server --manager`` (config key ``manager: true``) adds the "manager" component
after the API server; without it there is none. ``--manager-port`` is its port."""

from __future__ import annotations

from pathlib import Path

import pytest

from sampan.cli.main import build_parser
from sampan.client import ClientConfig
from sampan.config import ConfigError, load_config
from sampan.manager.component import ManagerComponent
from sampan.supervisor.server import server_components


def _components(tmp_path: Path, extra: str, flags: dict | None = None) -> list:
    path = tmp_path / "config.yaml"
    path.write_text("node-name: n1\nnode-ip: [10.0.0.5]\n" + extra)
    config = load_config(
        "server", {"data_dir": str(tmp_path / "d"), **(flags or {})}, default_config_file=path
    )
    return server_components(config)


def test_no_manager_by_default(tmp_path: Path) -> None:
    assert "manager" not in [c.name for c in _components(tmp_path, "")]


def test_manager_from_config_file(tmp_path: Path) -> None:
    components = _components(tmp_path, "manager: true\nmanager-port: 9443\n")
    names = [c.name for c in components]
    assert names.index("apiserver") < names.index("manager")
    component = next(c for c in components if c.name == "manager")
    assert component._organizations == ("system:masters",)


def test_manager_flags(tmp_path: Path) -> None:
    ns = build_parser().parse_args(["server", "--manager", "--manager-port", "9443"])
    flags = {k: v for k, v in vars(ns).items() if k != "command"}
    path = tmp_path / "config.yaml"
    path.write_text("")
    config = load_config("server", flags, default_config_file=path)
    assert config.manager is True
    assert config.manager_port == 9443
    assert load_config("server", {}, default_config_file=path).manager_port == 8443


def test_manager_port_must_differ_from_the_api_port(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("manager: true\nmanager-port: 6443\n")
    with pytest.raises(ConfigError, match="manager-port must differ from https-listen-port"):
        load_config("server", {}, default_config_file=path)
    path.write_text("manager-port: 6443\n")  # no manager: no listener, no clash
    assert load_config("server", {}, default_config_file=path).manager_port == 6443


def test_manager_builds_with_the_server_pki(tmp_path: Path) -> None:
    component = next(c for c in _components(tmp_path, "manager: true\n") if c.name == "manager")

    class _Server:
        pki = object()

    component._api.server = _Server()
    built = component._build(ClientConfig(server="https://127.0.0.1:1"))
    assert isinstance(built, ManagerComponent)
    assert built.bootstrap_password_path == tmp_path / "d" / "server" / "manager" / (
        "bootstrap-password"
    )
