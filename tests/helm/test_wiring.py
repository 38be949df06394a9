"""``sampan server`` runs the helm controller by default; ``--disable=helm-controller`` and
``--disable-helm-controller`` leave it out (as K3s)."""

from __future__ import annotations

from pathlib import Path

from sampan.config import load_config
from sampan.helm import HelmControllerComponent
from sampan.supervisor.server import server_components


def _components(tmp_path: Path, extra: str) -> list[object]:
    path = tmp_path / "config.yaml"
    path.write_text("node-name: n1\nnode-ip: [10.0.0.5]\n" + extra)
    config = load_config("server", {"data_dir": str(tmp_path / "d")}, default_config_file=path)
    return server_components(config)  # type: ignore[arg-type]


def _names(components: list[object]) -> list[str]:
    return [c.name for c in components]  # type: ignore[attr-defined]


def test_helm_controller_runs_by_default(tmp_path: Path) -> None:
    components = _components(tmp_path, "")
    names = _names(components)
    assert names.index("controllers") < names.index("helm-controller") < names.index("addons")
    component = next(c for c in components if c.name == "helm-controller")  # type: ignore[attr-defined]
    built = component._build(component._api and _client_config())  # type: ignore[attr-defined]
    assert isinstance(built, HelmControllerComponent)
    assert (tmp_path / "d" / "server" / "static" / "charts").is_dir()


def test_disable_helm_controller(tmp_path: Path) -> None:
    assert "helm-controller" not in _names(_components(tmp_path, "disable: [helm-controller]\n"))
    assert "helm-controller" not in _names(_components(tmp_path, "disable-helm-controller: true\n"))


def _client_config():  # a config the component can be built with (it connects only at start)
    from sampan.client import ClientConfig

    return ClientConfig(server="https://127.0.0.1:1")
