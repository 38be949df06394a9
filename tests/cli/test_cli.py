"""The ``sampan`` command as a user runs it: a real subprocess, real exit codes and output."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sampan import version


def sampan(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SAMPAN_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "sampan.cli.main", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=60,
    )


def test_version_names_sampan_and_kubernetes() -> None:
    out = sampan("--version")
    assert out.returncode == 0
    assert f"v{version.__version__}" in out.stdout
    assert "Kubernetes v1.32." in out.stdout


def test_unknown_flag_is_one_line(tmp_path: Path) -> None:
    out = sampan("server", "--bogus")
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "--bogus" in lines[0]


def test_bad_config_key_is_one_line_naming_key_and_file(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text("no-such-option: 1\n")
    out = sampan("server", "--config", str(cfg), "--data-dir", str(tmp_path / "d"))
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "no-such-option" in lines[0] and str(cfg) in lines[0]


def test_help_groups_flags_with_env_aliases() -> None:
    out = sampan("server", "--help")
    assert out.returncode == 0
    for heading in ("networking:", "database:", "components:", "listener:"):
        assert heading in out.stdout
    assert "[$SAMPAN_DATASTORE_ENDPOINT]" in out.stdout


def test_agent_without_server_names_the_flag(tmp_path: Path) -> None:
    out = sampan("agent", "--data-dir", str(tmp_path), "--config", os.devnull)
    assert out.returncode == 1
    assert "--server" in out.stderr
