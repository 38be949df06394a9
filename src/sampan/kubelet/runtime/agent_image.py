"""The Sampan cluster agent image, built locally from Debian's ``python3`` and Sampan's code.

The manager's import manifest runs ``docker.io/sampan/cluster-agent:<sampan version>``
(``python -m sampan.manager.tunnel``). Like the pause image (built from catatonit, see
``images``), it is never pulled: every Sampan agent builds it here and imports it at start,
and ``sampan manager agent-image --output FILE`` writes the same archive for clusters that are
not Sampan (``ctr -n k8s.io images import FILE``).

One layer, made of:

* Debian's interpreter (``/usr/bin/python3`` → ``python3.X``) with ``python3`` and ``python``
  symlinks, and its standard library ``/usr/lib/python3.X`` less what an agent never runs
  (tests, the static ``config-*`` library, ``ensurepip``, ``lib2to3``, ``distutils``,
  ``pydoc_data``, ``venv``, ``sqlite3``/``curses``/``dbm`` and their compiled modules,
  ``__pycache__``, Debian's ``sitecustomize``);
* the shared libraries the interpreter and its compiled modules load (``ldd`` closure, with
  the dynamic loader), laid out as on the host (merged ``/usr``: ``/lib`` → ``usr/lib``);
* in ``/usr/lib/python3/dist-packages`` (Debian's own ``sys.path`` entry): the Sampan modules
  the agent imports, and the whole top-level packages of its third-party imports (aiohttp
  and its dependencies, compiled parts included) — found by importing the agent's entry
  module in a child interpreter of the one running Sampan, so the set follows the code.

**Tags.** The archive names the image twice: ``:<version>`` (what the import manifest runs, the
same on every Sampan of that version) and the content tag ``:<version>-<digest>``, a SHA-256
of what goes in (each file's image path, mode and content, the symlinks, the configuration),
so an edit in a development tree gives another tag. ``prepare_cluster_agent_archive`` builds
only when the runtime does not already hold that content tag, and records the inputs' sizes
and modification times; ``recorded_content_ref`` answers the tag again from those alone, so
an agent start whose inputs did not change and whose runtime holds the image does no build
at all (see ``sampan.kubelet.runtime.service``).

Invariants: the same inputs give the same bytes (``build_oci_archive`` is deterministic);
compiled third-party modules must be built for the same ``python3.X`` as Debian's (checked:
a mismatch raises ``ImageImportError`` rather than building an image that cannot start).
Blocking: run ``build_cluster_agent_archive`` in a thread, or, from a long-lived process,
in a child (``python -m sampan.kubelet.runtime.agent_image DEST``, as the kubelet does): the
build's transient ~50 MB and the few MB it leaves behind stay out of the server's RSS.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from sampan.kubelet.runtime.images import ImageImportError, build_oci_archive
from sampan.pki.files import atomic_write
from sampan.version import __version__

__all__ = [
    "AGENT_ENTRY_MODULE",
    "CLUSTER_AGENT_IMAGE_REPOSITORY",
    "CONTENT_TAG_CHARS",
    "DEBIAN_PYTHON",
    "build_cluster_agent_archive",
    "cluster_agent_content_ref",
    "cluster_agent_image_ref",
    "content_digest",
    "prepare_cluster_agent_archive",
    "recorded_content_ref",
]

CLUSTER_AGENT_IMAGE_REPOSITORY = "docker.io/sampan/cluster-agent"
"""Also in ``sampan.manager.manifest`` (components do not import each other; a test checks
that both agree)."""

CONTENT_TAG_CHARS = 16
"""Hex digits of the content digest in the content tag."""
AGENT_ENTRY_MODULE = "sampan.manager.tunnel.agent"
AGENT_MAIN = "sampan/manager/tunnel/__main__.py"
DEBIAN_PYTHON = Path("/usr/bin/python3")
"""Debian's interpreter (package ``python3``): the image's only program."""

DIST_PACKAGES = "usr/lib/python3/dist-packages"
_STDLIB_SKIP_DIRS = {
    "test",
    "tests",
    "idle_test",
    "idlelib",
    "tkinter",
    "turtledemo",
    "ensurepip",
    "lib2to3",
    "distutils",
    "pydoc_data",
    "venv",
    "__pycache__",
    "site-packages",
    "dist-packages",
    "sqlite3",
    "curses",
    "dbm",
}
_STDLIB_SKIP_FILES = {"sitecustomize.py", "EXTERNALLY-MANAGED"}
_DYNLOAD_SKIP = re.compile(
    r"^(_test\w*|_ctypes_test|_xx\w*|xxlimited\w*|_curses\w*|_dbm|_gdbm|_sqlite3|nis|readline"
    r"|ossaudiodev|audioop|_crypt|_lsprof)\.cpython-"
)
"""Compiled standard modules an agent never loads (and whose libraries it need not carry)."""
_PACKAGE_SKIP_SUFFIXES = (".pyc", ".pyx", ".pxd", ".pxi", ".c", ".h", ".cpp")
_LDD_LINE = re.compile(r"^\s*(?:\S+\s+=>\s+)?(/\S+)\s+\(0x[0-9a-f]+\)")
_CLOSURE_SCRIPT = (
    "import importlib, json, sys\n"
    "importlib.import_module(sys.argv[1])\n"
    "print(json.dumps({n: m.__file__ for n, m in list(sys.modules.items())"
    " if isinstance(getattr(m, '__file__', None), str)}))\n"
)


def cluster_agent_image_ref(version: str = __version__) -> str:
    """``docker.io/sampan/cluster-agent:<version>`` (``+`` is not allowed in a tag: ``-``)."""
    return f"{CLUSTER_AGENT_IMAGE_REPOSITORY}:{version.replace('+', '-')}"


def _sampan_root() -> Path:
    """The directory that holds the ``sampan`` package (``src`` in a checkout)."""
    import sampan

    return Path(sampan.__file__).resolve().parent.parent


def _agent_modules(python: str, entry: str, sampan_root: Path) -> dict[str, Path]:
    """Module name -> file of everything ``entry`` imports, in a child of ``python``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(sampan_root), *filter(None, [env.get("PYTHONPATH", "")])]
    )
    env.pop("PYTHONSTARTUP", None)
    proc = subprocess.run(
        [python, "-c", _CLOSURE_SCRIPT, entry],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if proc.returncode != 0:
        raise ImageImportError(f"cannot import {entry} to find its files: {proc.stderr.strip()}")
    return {name: Path(path) for name, path in json.loads(proc.stdout).items()}


def _installed(path: Path) -> bool:
    """An installed distribution's file (not the standard library's)."""
    return any(part in ("site-packages", "dist-packages") for part in path.parts)


def _copy_tree(
    src: Path, dest: str, files: dict[str, Path], symlinks: dict[str, str], *, stdlib: bool
) -> None:
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames[:] = sorted(
            d
            for d in dirnames
            if d != "__pycache__"
            and not (stdlib and (d in _STDLIB_SKIP_DIRS or d.startswith("config-")))
        )
        rel_dir = Path(dirpath).relative_to(src)
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if stdlib and (name in _STDLIB_SKIP_FILES or _DYNLOAD_SKIP.match(name)):
                continue
            if not stdlib and name.endswith(_PACKAGE_SKIP_SUFFIXES):
                continue
            target = f"{dest}/{rel_dir / name}".replace("/./", "/")
            if path.is_symlink():
                link = os.readlink(path)
                if os.path.isabs(link):
                    if path.is_file():
                        files[target] = path.resolve()
                    continue
                symlinks[target] = link
            elif path.is_file():
                files[target] = path


def _ldd(paths: list[Path]) -> set[Path]:
    """The shared objects (loader included) the given ELF files load, as ``ldd`` names them."""
    found: set[Path] = set()
    for path in paths:
        proc = subprocess.run(
            ["ldd", str(path)], capture_output=True, text=True, timeout=60, check=False
        )
        if proc.returncode != 0:  # not dynamic ("not a dynamic executable"): nothing to add
            continue
        for line in proc.stdout.splitlines():
            if "not found" in line:
                raise ImageImportError(f"{path}: a shared library is missing: {line.strip()}")
            match = _LDD_LINE.match(line)
            if match:
                found.add(Path(match.group(1)))
    return found


def _add_library(path: Path, files: dict[str, Path], symlinks: dict[str, str]) -> None:
    """``path`` as the loader looks it up: its real file, and a symlink where the name
    ``ldd`` gave is another (e.g. ``/lib64/ld-linux-x86-64.so.2``)."""
    real = path.resolve()
    files[str(real).lstrip("/")] = real
    named = path.parent.resolve() / path.name
    if named != real:
        symlinks[str(named).lstrip("/")] = str(real)


@dataclass(frozen=True)
class _Plan:
    """What goes into the image: image path -> host file, and image symlinks."""

    files: dict[str, Path]
    symlinks: dict[str, str]


def _plan(python: Path, builder_python: str, sampan_root: Path | None = None) -> _Plan:
    """The image's contents (see the module docstring); ``sampan_root``: the directory
    holding the ``sampan`` package to copy (default: the running one). Blocking (a child
    import, ``ldd``)."""
    if not python.exists():
        raise ImageImportError(
            f"{python} not found: install the Debian package python3 (the cluster agent image "
            "is built from it)"
        )
    interpreter = python.resolve()
    match = re.fullmatch(r"python(\d+\.\d+)", interpreter.name)
    if match is None:
        raise ImageImportError(f"{interpreter} is not a python3.X interpreter")
    minor = match.group(1)
    builder_minor = f"{sys.version_info.major}.{sys.version_info.minor}"
    if builder_python == sys.executable and builder_minor != minor:
        raise ImageImportError(
            f"Sampan runs on Python {builder_minor} but Debian's {interpreter} is {minor}: the "
            "agent's compiled dependencies would not load"
        )
    files: dict[str, Path] = {}
    symlinks: dict[str, str] = {
        "usr/bin/python3": interpreter.name,
        "usr/bin/python": interpreter.name,
    }
    for top in ("bin", "lib", "lib64", "sbin"):
        host = Path("/") / top
        if host.is_symlink():
            symlinks[top] = os.readlink(host)
    files[str(interpreter).lstrip("/")] = interpreter
    stdlib = Path(f"/usr/lib/python{minor}")
    if not stdlib.is_dir():
        raise ImageImportError(f"{stdlib} not found: install the Debian package python{minor}")
    _copy_tree(stdlib, str(stdlib).lstrip("/"), files, symlinks, stdlib=True)

    sampan_root = (sampan_root or _sampan_root()).resolve()
    modules = _agent_modules(builder_python, AGENT_ENTRY_MODULE, sampan_root)
    packages: dict[str, Path] = {}
    for name, path in sorted(modules.items()):
        top = name.split(".")[0]
        real = path.resolve()
        if top == "sampan":
            files[f"{DIST_PACKAGES}/{real.relative_to(sampan_root)}"] = real
        elif top.startswith("_distutils_hack") or not _installed(path):
            continue
        elif real.name == "__init__.py" and name == top:
            packages[top] = real.parent
        elif name == top:
            packages[top] = real
    main = sampan_root / AGENT_MAIN
    files[f"{DIST_PACKAGES}/{AGENT_MAIN}"] = main  # ``-m``'s target: imported only when run
    for top, path in sorted(packages.items()):
        if path.is_dir():
            _copy_tree(path, f"{DIST_PACKAGES}/{top}", files, symlinks, stdlib=False)
        else:
            files[f"{DIST_PACKAGES}/{path.name}"] = path

    elves = [p for p in files.values() if p == interpreter or p.name.endswith(".so")]
    for library in sorted(_ldd(elves)):
        _add_library(library, files, symlinks)
    for target in [t for t in files if t.startswith(DIST_PACKAGES) and t.endswith(".so")]:
        abi = re.search(r"\.cpython-(\d)(\d+)-", target)
        if abi and f"{abi.group(1)}.{abi.group(2)}" != minor:
            raise ImageImportError(f"{target} is built for another Python than {minor}")
    return _Plan(files, symlinks)


_ENTRYPOINT = ("/usr/bin/python3", "-m", "sampan.manager.tunnel")
_ENV = (
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "PYTHONUNBUFFERED=1",
    "PYTHONDONTWRITEBYTECODE=1",
)


def _labels() -> dict[str, str]:
    return {"io.sampan.image": "cluster-agent", "io.sampan.version": __version__}


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def content_digest(plan: _Plan) -> str:
    """SHA-256 of everything that makes the image: each file's image path, mode and content,
    each symlink, and the image configuration (blocking: reads every file)."""
    digest = hashlib.sha256()
    config = {"entrypoint": _ENTRYPOINT, "env": _ENV, "labels": _labels()}
    digest.update(json.dumps(config, sort_keys=True).encode() + b"\n")
    for target in sorted(plan.files):
        source = plan.files[target]
        mode = source.stat().st_mode & 0o7777
        digest.update(f"f {target} {mode:o} {_file_digest(source)}\n".encode())
    for target in sorted(plan.symlinks):
        digest.update(f"l {target} {plan.symlinks[target]}\n".encode())
    return digest.hexdigest()


def cluster_agent_content_ref(digest: str, version: str = __version__) -> str:
    """``docker.io/sampan/cluster-agent:<version>-<first CONTENT_TAG_CHARS of digest>``: the
    tag that names these very contents (the import manifest names the version tag)."""
    return f"{cluster_agent_image_ref(version)}-{digest[:CONTENT_TAG_CHARS]}"


def _write(plan: _Plan, dest: Path, refs: list[str]) -> str:
    return build_oci_archive(
        dest,
        ref=refs[0],
        extra_refs=refs[1:],
        files=plan.files,
        symlinks=plan.symlinks,
        dirs={"tmp": 0o1777},
        entrypoint=list(_ENTRYPOINT),
        env=_ENV,
        labels=_labels(),
    )


def build_cluster_agent_archive(
    dest: Path,
    *,
    ref: str | None = None,
    python: Path = DEBIAN_PYTHON,
    builder_python: str = sys.executable,
) -> str:
    """Write the cluster agent image (see the module docstring) to ``dest``, named ``ref``
    (default: the version tag) and by its content tag; returns the manifest digest.
    ``builder_python`` is the interpreter whose packages are copied (the one running Sampan).
    Blocking."""
    plan = _plan(python, builder_python)
    refs = [ref or cluster_agent_image_ref(), cluster_agent_content_ref(content_digest(plan))]
    return _write(plan, dest, refs)


# -- building only what is missing or stale ------------------------------------------------


def _signatures(plan: _Plan) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for source in plan.files.values():
        st = source.stat()
        out[str(source)] = [st.st_size, st.st_mtime_ns]
    return out


def recorded_content_ref(inputs: Path) -> str | None:
    """The content tag recorded in ``inputs`` by the last ``prepare_cluster_agent_archive``,
    if none of the files that went in has changed since (same size and modification time)
    and Sampan's version is the same; else None. Blocking (a ``stat`` per file: a few ms)."""
    try:
        record = json.loads(inputs.read_text())
        if record.get("version") != __version__ or not isinstance(record.get("files"), dict):
            return None
        for source, signature in record["files"].items():
            st = os.stat(source)
            if [st.st_size, st.st_mtime_ns] != signature:
                return None
        ref = record.get("ref")
    except (OSError, ValueError, TypeError, AttributeError):
        return None
    return ref if isinstance(ref, str) else None


def prepare_cluster_agent_archive(
    dest: Path,
    inputs: Path,
    *,
    present: Iterable[str] = (),
    python: Path = DEBIAN_PYTHON,
    builder_python: str = sys.executable,
    sampan_root: Path | None = None,
) -> tuple[str, bool]:
    """Find what goes into the image and its content tag; write the archive to ``dest``
    (named by the version tag and the content tag) unless that content tag is among
    ``present`` (the runtime already has it). Records the inputs' signatures in ``inputs``
    (for ``recorded_content_ref``). Returns (content ref, whether the archive was written).
    Blocking."""
    plan = _plan(python, builder_python, sampan_root)
    content_ref = cluster_agent_content_ref(content_digest(plan))
    built = content_ref not in set(present)
    if built:
        _write(plan, dest, [cluster_agent_image_ref(), content_ref])
    record = {"version": __version__, "ref": content_ref, "files": _signatures(plan)}
    inputs.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(inputs, json.dumps(record).encode(), mode=0o600)
    return content_ref, built


def _main(argv: list[str]) -> int:
    """``python -m sampan.kubelet.runtime.agent_image DEST [--inputs FILE [--present REF]...]``:
    build the archive at DEST; with ``--inputs``, only when no ``--present`` ref is its content
    tag (see ``prepare_cluster_agent_archive``), printing ``built REF`` or ``present REF``."""
    parser = argparse.ArgumentParser(prog="python -m sampan.kubelet.runtime.agent_image")
    parser.add_argument("dest", type=Path)
    parser.add_argument("--inputs", type=Path)
    parser.add_argument("--present", action="append", default=[])
    args = parser.parse_args(argv)
    try:
        if args.inputs is None:
            build_cluster_agent_archive(args.dest)
            return 0
        ref, built = prepare_cluster_agent_archive(args.dest, args.inputs, present=args.present)
    except (ImageImportError, OSError) as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"{'built' if built else 'present'} {ref}")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
