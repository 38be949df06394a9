"""``--dashboard`` (config ``dashboard: true``) adds the "dashboard" component after the API
server, off by default; with ``--manager`` the manager serves the UI instead."""

from __future__ import annotations

from pathlib import Path

import pytest

from sampan.cli.main import build_parser
from sampan.config import ConfigError, load_config
from sampan.supervisor.server import server_components


def _names(tmp_path: Path, extra: str) -> list[str]:
    path = tmp_path / "config.yaml"
    path.write_text("node-name: n1\nnode-ip: [10.0.0.5]\n" + extra)
    config = load_config("server", {"data_dir": str(tmp_path / "d")}, default_config_file=path)
    return [c.name for c in server_components(config)]


def test_no_dashboard_by_default(tmp_path: Path) -> None:
    assert "dashboard" not in _names(tmp_path, "")


def test_dashboard_from_config(tmp_path: Path) -> None:
    names = _names(tmp_path, "dashboard: true\n")
    assert names.index("apiserver") < names.index("dashboard")


def test_the_manager_serves_the_ui_instead(tmp_path: Path) -> None:
    names = _names(tmp_path, "dashboard: true\nmanager: true\nmanager-port: 9443\n")
    assert "dashboard" not in names and "manager" in names


def test_dashboard_flags(tmp_path: Path) -> None:
    ns = build_parser().parse_args(["server", "--dashboard", "--dashboard-port", "9444"])
    flags = {k: v for k, v in vars(ns).items() if k != "command"}
    path = tmp_path / "config.yaml"
    path.write_text("")
    config = load_config("server", flags, default_config_file=path)
    assert config.dashboard is True and config.dashboard_port == 9444
    assert load_config("server", {}, default_config_file=path).dashboard_port == 8443


def test_dashboard_port_must_differ_from_the_api_port(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("dashboard: true\ndashboard-port: 6443\n")
    with pytest.raises(ConfigError, match="dashboard-port must differ"):
        load_config("server", {}, default_config_file=path)
