"""How the agent wires the network policy component: on by default, started before the
kubelet; ``--disable-network-policy`` (flag or config file) swaps in the cleanup of old rules."""

from __future__ import annotations

from pathlib import Path

from sampan.cli.main import build_parser
from sampan.config import Config, load_config
from sampan.supervisor.agent import NetworkPolicyCleanupComponent, agent_components


def _config(tmp_path: Path, extra: str = "", flags: dict[str, object] | None = None) -> Config:
    path = tmp_path / "config.yaml"
    path.write_text("node-name: n1\nnode-ip: [10.0.0.5]\n" + extra)
    env = {"SAMPAN_URL": "https://h:6443", "SAMPAN_TOKEN": "t"}
    values: dict[str, object] = {"data_dir": str(tmp_path / "d"), **(flags or {})}
    return load_config("agent", values, env=env, default_config_file=path)


def _names(config: Config) -> list[str]:
    components = agent_components(config, server_url=lambda: "", token=lambda: "", is_server=False)
    return [c.name for c in components]


def test_network_policy_runs_by_default_before_the_kubelet(tmp_path: Path) -> None:
    names = _names(_config(tmp_path))
    assert "network-policy-cleanup" not in names
    assert names.index("proxy") < names.index("network-policy") < names.index("kubelet")


def test_disabled_in_the_config_file_or_by_flag(tmp_path: Path) -> None:
    config = _config(tmp_path, "disable-network-policy: true\n")
    assert config.disable_network_policy
    names = _names(config)
    assert "network-policy" not in names and "network-policy-cleanup" in names
    components = agent_components(config, server_url=lambda: "", token=lambda: "", is_server=False)
    assert any(isinstance(c, NetworkPolicyCleanupComponent) for c in components)

    ns = build_parser().parse_args(["agent", "--disable-network-policy"])
    assert ns.disable_network_policy is True
    flagged = _config(tmp_path, flags={"disable_network_policy": True})
    assert flagged.disable_network_policy
    assert build_parser().parse_args(["server", "--disable-network-policy"]).disable_network_policy
