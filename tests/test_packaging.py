"""The wheel: a copy of the sources outside the repository is built with pip, the wheel holds
every module and the data files read at run time, and once installed into a fresh venv (with
no copy of the repository anywhere on its path) ``sampan --version`` runs and the packaged
manifests load from the installed package."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO / "src" / "sampan"
BUILD_TIMEOUT_S = 300


def _run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        args, cwd=cwd, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, env=env
    )
    assert done.returncode == 0, f"{' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _clean_env() -> dict[str, str]:
    return {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME") and not k.startswith("SAMPAN_")
    }


def test_wheel_holds_the_data_files_and_runs_outside_the_repository(tmp_path: Path) -> None:
    # The sources alone, as a user's checkout or an sdist would give them.
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, project / name)
    shutil.copytree(
        SOURCE, project / "src" / "sampan", ignore=shutil.ignore_patterns("__pycache__")
    )
    dist = tmp_path / "dist"
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--disable-pip-version-check",
            "-q",
            "-w",
            str(dist),
            str(project),
        ],
        cwd=tmp_path,
        env=_clean_env(),
    )
    (wheel,) = dist.glob("sampan-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(
            archive.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt")
        )
    # Every file of the package that is not a cache: modules and data files alike.
    expected = {
        "sampan/" + str(path.relative_to(SOURCE))
        for path in SOURCE.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert {"sampan/addons/packaged/coredns.yaml", "sampan/addons/packaged/ingress.yaml"} <= (
        expected
    )
    assert expected - names == set()
    # The web UI works air-gapped: its templates and the vendored htmx/xterm.js are inside
    # (scripts/vendor-ui.py fills static/vendor; scripts/install.sh runs it).
    assert {
        "sampan/ui/templates/base.html",
        "sampan/ui/static/app.js",
        "sampan/ui/static/app.css",
        "sampan/ui/static/vendor/htmx.min.js",
        "sampan/ui/static/vendor/xterm.js",
        "sampan/ui/static/vendor/xterm.css",
        "sampan/ui/static/vendor/addon-fit.js",
    } <= names
    assert "sampan = sampan.cli.main:main" in entry_points

    # A fresh venv holding only the wheel; the dependencies come from this test's environment
    # (a path entry, so no .pth of it runs: the repository's editable install is not seen).
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path)
    python = venv / "bin" / "python"
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--no-deps",
            "--no-index",
            "--disable-pip-version-check",
            "-q",
            str(wheel),
        ],
        cwd=tmp_path,
        env=_clean_env(),
    )
    site = Path(
        _run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            cwd=tmp_path,
        ).strip()
    )
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "test-deps.pth").write_text("".join(f"{path}\n" for path in sorted(deps)))

    work = tmp_path / "elsewhere"
    work.mkdir()
    version = _run([str(venv / "bin" / "sampan"), "--version"], cwd=work, env=_clean_env())
    assert version.startswith("sampan version v"), version
    loaded = _run(
        [
            str(python),
            "-c",
            "import sampan.addons as a, sampan; "
            "print(sampan.__file__); print(sorted(a.packaged_manifests()))",
        ],
        cwd=work,
        env=_clean_env(),
    ).splitlines()
    assert Path(loaded[0]).is_relative_to(site), loaded
    assert loaded[1] == "['coredns', 'ingress', 'local-storage']"
