"""Node labels a kubelet may not set itself (NodeRestriction): an agent refuses them at start,
a server keeps them for its server-side labeller."""

from __future__ import annotations

from pathlib import Path

import pytest

from sampan.config import ConfigError, load_config
from sampan.supervisor.agent import agent_components, restricted_node_labels
from sampan.supervisor.server import ServerNodeLabels, server_components


def _config(tmp_path: Path, command: str, labels: list[str]) -> object:
    path = tmp_path / "config.yaml"
    path.write_text(
        "node-name: n1\nnode-ip: [10.0.0.5]\nnode-label:\n"
        + "".join(f"- {label}\n" for label in labels)
    )
    env = {"SAMPAN_URL": "https://h:6443", "SAMPAN_TOKEN": "t"} if command == "agent" else {}
    return load_config(
        command, {"data_dir": str(tmp_path / "d")}, env=env, default_config_file=path
    )


def test_restricted_labels() -> None:
    labels = {
        "kubernetes.io/hostname": "n1",
        "node.kubernetes.io/pool": "a",
        "example.com/team": "x",
        "node-role.kubernetes.io/worker": "",
        "node-restriction.kubernetes.io/zone": "z",
        "k8s.io/other": "1",
    }
    assert restricted_node_labels(labels) == {
        "node-role.kubernetes.io/worker": "",
        "node-restriction.kubernetes.io/zone": "z",
        "k8s.io/other": "1",
    }


def test_agent_refuses_a_label_its_kubelet_may_not_set(tmp_path: Path) -> None:
    config = _config(tmp_path, "agent", ["node-role.kubernetes.io/worker=true"])
    with pytest.raises(ConfigError, match=r"node-role\.kubernetes\.io/worker: a kubelet may not"):
        agent_components(config, server_url=lambda: "", token=lambda: "", is_server=False)


def test_server_labels_its_own_node(tmp_path: Path) -> None:
    config = _config(tmp_path, "server", ["node-role.kubernetes.io/worker=true", "team=a"])
    components = server_components(config)
    labeller = next(c for c in components if c.name == "node-labels")
    built = labeller._build(object())  # type: ignore[attr-defined]
    assert isinstance(built, ServerNodeLabels)
    assert built._labels == {
        "node-role.kubernetes.io/control-plane": "true",
        "node-role.kubernetes.io/master": "true",
        "node-role.kubernetes.io/worker": "true",
    }


def test_a_server_on_embedded_etcd_carries_the_etcd_role(tmp_path: Path) -> None:
    """K3s's roles of a ``--cluster-init`` server: control-plane, etcd, master."""
    config = _config(tmp_path, "server", ["team=a"])
    object.__setattr__(config, "cluster_init", True)
    components = server_components(config)
    labeller = next(c for c in components if c.name == "node-labels")
    built = labeller._build(object())  # type: ignore[attr-defined]
    assert built._labels == {
        "node-role.kubernetes.io/control-plane": "true",
        "node-role.kubernetes.io/etcd": "true",
        "node-role.kubernetes.io/master": "true",
    }
