"""The metrics-server add-on in ``sampan server``: present by default, a removal of its
registration with ``--disable=metrics-server`` (as K3s)."""

from __future__ import annotations

from pathlib import Path

from sampan.addons.metrics import MetricsServerRemoval
from sampan.config import load_config
from sampan.supervisor.server import MetricsServerComponent, server_components


def _components(tmp_path: Path, extra: str) -> list[object]:
    path = tmp_path / "config.yaml"
    path.write_text("node-name: n1\nnode-ip: [10.0.0.5]\n" + extra)
    config = load_config("server", {"data_dir": str(tmp_path / "d")}, default_config_file=path)
    return server_components(config)  # type: ignore[arg-type]


def test_metrics_server_is_on_by_default(tmp_path: Path) -> None:
    component = next(c for c in _components(tmp_path, "") if c.name == "metrics-server")  # type: ignore[attr-defined]
    assert isinstance(component._build(object()), MetricsServerComponent)  # type: ignore[attr-defined]


def test_disable_metrics_server(tmp_path: Path) -> None:
    components = _components(tmp_path, "disable: [metrics-server]\n")
    component = next(c for c in components if c.name == "metrics-server")  # type: ignore[attr-defined]
    assert isinstance(component._build(object()), MetricsServerRemoval)  # type: ignore[attr-defined]
