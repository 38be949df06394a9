"""``sampan install`` / the service half of ``sampan uninstall``, written under a temporary
root: the real command line, the real configuration loader reading what was written, and
``systemd-analyze verify`` judging the unit."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
import yaml

from sampan.cli import install
from sampan.cli.install import remove_services, run_install, service_files, stop_services
from sampan.cli.main import _command_flags
from sampan.config import load_config

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
SYSTEMD_RUNNING = Path("/run/systemd/system").is_dir()

K3S_SERVICE_SETTINGS = (
    "Type=notify",
    "KillMode=process",
    "Delegate=yes",
    "LimitNOFILE=1048576",
    "LimitNPROC=infinity",
    "LimitCORE=infinity",
    "TasksMax=infinity",
    "TimeoutStartSec=0",
    "Restart=always",
    "RestartSec=5s",
    "ExecStartPre=-/sbin/modprobe br_netfilter",
    "ExecStartPre=-/sbin/modprobe overlay",
    "EnvironmentFile=-/etc/default/%N",
    "EnvironmentFile=-/etc/sysconfig/%N",
    "WantedBy=multi-user.target",
    "Wants=network-online.target",
    "After=network-online.target",
)


def sampan(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SAMPAN_")}
    return subprocess.run(
        [sys.executable, "-m", "sampan.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**base, **(env or {})},
        cwd=cwd,
    )


def test_install_server_writes_config_unit_and_env_file(tmp_path: Path) -> None:
    root = tmp_path / "root"
    done = sampan(
        "install",
        "server",
        "--root",
        str(root),
        "--token",
        "s3cret-token",
        "--tls-san",
        "lb.example.lan",
        "--tls-san",
        "10.0.0.5",
        "--disable=local-storage",
        "--debug",
        "--data-dir",
        str(tmp_path / "data"),
        env={"SAMPAN_NODE_NAME": "node-a", "HTTPS_PROXY": "http://proxy:3128"},
    )
    files = service_files(root, "server")
    if SYSTEMD_RUNNING:  # pragma: no cover - the development machines have no systemd
        assert done.returncode == 0, done.stderr
    else:
        # One line saying why, exit 1; the files are written all the same.
        assert done.returncode == 1
        assert done.stderr.count("\n") == 1, done.stderr
        assert "systemd is not running here (not PID 1)" in done.stderr
    assert "s3cret-token" not in done.stdout + done.stderr

    config_text = files.config.read_text()
    assert "s3cret-token" not in config_text
    assert yaml.safe_load(config_text) == {
        "tls-san": ["lb.example.lan", "10.0.0.5"],
        "disable": ["local-storage"],
        "debug": True,
        "data-dir": str(tmp_path / "data"),
    }
    assert files.config.stat().st_mode & 0o777 == 0o600
    env_text = files.env_file.read_text()
    assert files.env_file.stat().st_mode & 0o777 == 0o600
    assert "SAMPAN_TOKEN=s3cret-token\n" in env_text
    assert "SAMPAN_NODE_NAME=node-a\n" in env_text
    assert "HTTPS_PROXY=http://proxy:3128\n" in env_text

    # What the service will run with: the configuration loader reads the files as written.
    env = dict(line.split("=", 1) for line in env_text.splitlines())
    config = load_config("server", {}, env=env, default_config_file=files.config)
    assert config.token.reveal() == "s3cret-token"
    assert config.tls_san == ("lb.example.lan", "10.0.0.5")
    assert config.disable == ("local-storage",)
    assert config.debug is True
    assert config.node_name == "node-a"

    unit = files.unit.read_text()
    assert files.unit.name == "sampan.service"
    for setting in K3S_SERVICE_SETTINGS:
        assert setting + "\n" in unit, setting
    assert "EnvironmentFile=-/etc/systemd/system/sampan.service.env\n" in unit
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    assert exec_start.endswith(" server")
    assert Path(exec_start.removeprefix("ExecStart=").split()[0]).is_file()


def test_systemd_analyze_verify_accepts_the_units(tmp_path: Path) -> None:
    if SYSTEMD_ANALYZE is None:
        pytest.fail("systemd-analyze is not installed (Debian package systemd)")
    root = tmp_path / "root"
    assert sampan("install", "--root", str(root), "--skip-enable").returncode == 0
    server = service_files(root, "server").unit
    agent_done = sampan(
        "install",
        "agent",
        "--root",
        str(root),
        "--skip-enable",
        "--server",
        "https://10.0.0.1:6443",
        "--token",
        "K10abc::server:xyz",
    )
    assert agent_done.returncode == 0, agent_done.stderr
    agent = service_files(root, "agent").unit
    assert agent.name == "sampan-agent.service"
    assert agent.read_text().splitlines()[-1].endswith(" agent")
    for unit in (server, agent):
        verified = subprocess.run(
            [SYSTEMD_ANALYZE, "verify", str(unit)], capture_output=True, text=True, timeout=60
        )
        # verify exits 0 even for settings it ignores; those are reported on stderr.
        assert verified.returncode == 0, verified.stderr
        assert unit.name not in verified.stderr, verified.stderr
        assert "ignoring" not in verified.stderr, verified.stderr
    # A broken unit is refused, so the check above can fail.
    broken = tmp_path / "broken.service"
    broken.write_text(server.read_text().replace("ExecStart=", "ExecStart=/nonexistent/"))
    verified = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", str(broken)], capture_output=True, text=True, timeout=60
    )
    assert verified.returncode != 0


def test_a_second_install_keeps_what_it_does_not_change(tmp_path: Path) -> None:
    root = tmp_path / "root"
    first = sampan(
        "install", "--root", str(root), "--skip-enable", "--token", "tok", "--tls-san", "a.lan"
    )
    assert first.returncode == 0, first.stderr
    second = sampan("install", "--root", str(root), "--skip-enable", "--debug")
    assert second.returncode == 0, second.stderr
    files = service_files(root, "server")
    assert yaml.safe_load(files.config.read_text()) == {"tls-san": ["a.lan"], "debug": True}
    assert "SAMPAN_TOKEN=tok\n" in files.env_file.read_text()


def test_bad_flags_write_nothing(tmp_path: Path) -> None:
    root = tmp_path / "root"
    for args, message in (
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--https-listen-port", "nope"], "expected an integer"),
        (["--config", "/x.yaml"], "--config: sampan install writes /etc/sampan/config.yaml"),
        (["agent"], "sampan agent needs --server"),
        (["--root"], "--root needs a directory"),
    ):
        root_args = [] if "--root" in args else ["--root", str(root)]
        done = sampan("install", *root_args, "--skip-enable", *args, cwd=tmp_path)
        assert done.returncode == 1, args
        assert message in done.stderr, done.stderr
        assert not root.exists(), args
    assert list(tmp_path.iterdir()) == []


class FakeSystemctl:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, args: Sequence[str]) -> subprocess.CompletedProcess[str]:
        self.calls.append(list(args))
        return subprocess.CompletedProcess(["systemctl", *args], 0, "", "")


def test_with_systemd_running_it_reloads_enables_and_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The systemctl calls where systemd runs: a directory of the test stands in for
    ``/run/systemd/system`` and another for the live root ``/``; systemctl is recorded."""
    running = tmp_path / "run-systemd-system"
    running.mkdir()
    monkeypatch.setattr(install, "SYSTEMD_RUNNING", running)
    root = tmp_path / "root"
    systemctl = FakeSystemctl()
    monkeypatch.setattr(install, "LIVE_ROOT", root)
    code = run_install(
        ["--root", str(root), "--debug"], _command_flags, systemctl=systemctl, env={}
    )
    assert code == 0, capsys.readouterr().err
    assert systemctl.calls == [["daemon-reload"], ["enable", "--now", "sampan.service"]]
    systemctl.calls.clear()
    assert (
        run_install(
            ["agent", "--root", str(root), "--skip-start", "--server", "https://h:6443", "-t", "x"],
            _command_flags,
            systemctl=systemctl,
            env={},
        )
        == 0
    )
    assert systemctl.calls == [["daemon-reload"], ["enable", "sampan-agent.service"]]
    systemctl.calls.clear()
    # killall stops them first (Restart=always would start them again).
    assert stop_services(root, systemctl=systemctl) == ["sampan.service", "sampan-agent.service"]
    assert systemctl.calls == [["stop", "sampan.service"], ["stop", "sampan-agent.service"]]
    systemctl.calls.clear()
    removed = remove_services(root, systemctl=systemctl)
    assert sorted(p.name for p in removed) == [
        "sampan-agent.service",
        "sampan-agent.service.env",
        "sampan.service",
        "sampan.service.env",
    ]
    assert ["disable", "--now", "sampan.service"] in systemctl.calls
    assert ["disable", "--now", "sampan-agent.service"] in systemctl.calls
    assert systemctl.calls[-2] == ["daemon-reload"]
    assert not service_files(root, "server").unit.exists()
    # config.yaml is the user's configuration: uninstall removes /etc/sampan as a whole.
    assert service_files(root, "server").config.exists()


def test_remove_services_without_systemd_removes_the_files(tmp_path: Path) -> None:
    root = tmp_path / "root"
    assert sampan("install", "--root", str(root), "--skip-enable").returncode == 0
    systemctl = FakeSystemctl()
    assert stop_services(root, systemctl=systemctl) == []
    removed = remove_services(root, systemctl=systemctl)
    assert {p.name for p in removed} == {"sampan.service", "sampan.service.env"}
    assert systemctl.calls == []  # not the live system: nothing to stop
