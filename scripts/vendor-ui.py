#!/usr/bin/env python3
"""Vendor the web UI's JavaScript and CSS from the npm registry into the Python package.

The UI (``sampan.ui``) loads nothing from a CDN: htmx, xterm.js and xterm's fit addon are
fetched here with ``npm pack`` at the pinned versions below, each tarball's ``sha512``
checked against the integrity written here (the npm registry's ``dist.integrity``), and only
the files the UI serves are extracted into ``src/sampan/ui/static/vendor/`` (git-ignored,
shipped in the wheel as package data). ``scripts/install.sh`` runs this when they are missing.

Usage: ``python3 scripts/vendor-ui.py [--force]`` (needs ``npm``; works offline when npm's
cache already holds the tarballs). To bump a version, change it and its integrity together
(``npm view <pkg>@<version> dist.integrity``).
"""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENDOR = ROOT / "src" / "sampan" / "ui" / "static" / "vendor"

# (package spec, npm pack's file name, sha512 integrity, {path in tarball: vendored name})
PACKAGES = [
    (
        "htmx.org@2.0.4",
        "htmx.org-2.0.4.tgz",
        "sha512-HLxMCdfXDOJirs3vBZl/ZLoY+c7PfM4Ahr2Ad4YXh6d22T5ltbTXFFkpx9Tgb2vvmWFMbIc3LqN2ToNkZJvyYQ==",
        {"package/dist/htmx.min.js": "htmx.min.js", "package/LICENSE": "htmx.LICENSE"},
    ),
    (
        "@xterm/xterm@5.5.0",
        "xterm-xterm-5.5.0.tgz",
        "sha512-hqJHYaQb5OptNunnyAnkHyM8aCjZ1MEIDTQu1iIbbTD/xops91NB5yq1ZK/dC2JDbVWtF23zUtl9JE2NqwT87A==",
        {
            "package/lib/xterm.js": "xterm.js",
            "package/css/xterm.css": "xterm.css",
            "package/LICENSE": "xterm.LICENSE",
        },
    ),
    (
        "@xterm/addon-fit@0.10.0",
        "xterm-addon-fit-0.10.0.tgz",
        "sha512-UFYkDm4HUahf2lnEyHvio51TNGiLK66mqP2JoATy7hRZeXaGMRDr00JiSF7m63vR5WKATF605yEggJKsw0JpMQ==",
        {"package/lib/addon-fit.js": "addon-fit.js", "package/LICENSE": "addon-fit.LICENSE"},
    ),
]


def vendored_files() -> list[Path]:
    return [VENDOR / name for *_, files in PACKAGES for name in files.values()]


def _integrity(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def vendor(force: bool = False) -> None:
    if not force and all(path.is_file() for path in vendored_files()):
        print("vendor-ui: up to date")
        return
    VENDOR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for spec, filename, integrity, files in PACKAGES:
            subprocess.run(
                ["npm", "pack", "--silent", "--pack-destination", tmp, spec],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            data = (Path(tmp) / filename).read_bytes()
            if _integrity(data) != integrity:
                sys.exit(f"vendor-ui: {spec}: integrity mismatch (got {_integrity(data)})")
            with tarfile.open(Path(tmp) / filename) as tar:
                for member, name in files.items():
                    extracted = tar.extractfile(member)
                    if extracted is None:
                        sys.exit(f"vendor-ui: {spec}: {member} is not a file")
                    (VENDOR / name).write_bytes(extracted.read())
            print(f"vendor-ui: {spec} ok")


if __name__ == "__main__":
    vendor(force="--force" in sys.argv[1:])
