"""``sampan simulate``: flags and their one-line errors (the simulator itself is tested in
tests/simulate against a real API server)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sampan.cli.main import main
from sampan.simulate import parse_duration


def test_durations_parse_like_kubelet_flags() -> None:
    assert parse_duration("10s") == 10.0
    assert parse_duration("500ms") == 0.5
    assert parse_duration("5m") == 300.0
    assert parse_duration("2") == 2.0
    for bad in ("", "ten", "-1s", "0s"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_bad_values_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "absent.kubeconfig"
    assert main(["simulate", "--nodes", "3", "--heartbeat-interval", "soon"]) == 1
    assert capsys.readouterr().err == (
        "sampan simulate: invalid duration 'soon' (use e.g. 10s, 500ms, 5m)\n"
    )
    assert main(["simulate", "--nodes", "3", "--kubeconfig", str(missing)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("sampan simulate: ") and str(missing) in err and err.count("\n") == 1


def test_nodes_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["simulate"])
    assert exc.value.code == 1
    assert "--nodes" in capsys.readouterr().err
