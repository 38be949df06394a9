"""The layering of DESIGN.md, enforced: cli -> supervisor -> components -> client ->
api/datastore/pki; components (apiserver, kubelet, controllers, scheduler, network, proxy,
dns) never import each other — they talk through the Kubernetes API."""

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
