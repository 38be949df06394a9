"""``make lint`` in the suite, so CI runs it: ruff, the layering of DESIGN.md (cli ->
supervisor -> components -> client -> api/datastore/pki; components never import each other —
they talk through the Kubernetes API) and mypy --strict on the lower layers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_layers_hold() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    out = subprocess.run(
        [str(lint), "--config", str(ROOT / ".importlinter")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]


def test_lower_layers_type_check_strictly() -> None:
    """mypy --strict over the packages ``[tool.mypy] files`` names (api, datastore, client,
    pki, supervisor): the layers everything stands on, and the wiring, keep their annotations
    honest."""
    mypy = Path(sys.executable).with_name("mypy")
    out = subprocess.run(
        [str(mypy), "--cache-dir", str(ROOT / ".mypy_cache")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]


def test_ruff_is_clean() -> None:
    """``make lint``'s ruff pass, in the suite so CI runs it: src, tests and bench."""
    ruff = Path(sys.executable).with_name("ruff")
    out = subprocess.run(
        [str(ruff), "check", "src", "tests", "bench"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
