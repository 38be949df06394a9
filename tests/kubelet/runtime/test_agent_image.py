"""The cluster agent image: its manifest, what its layer holds, and that it runs.

Built once per module (a few seconds). The run check unpacks the layer and runs the image's
entrypoint under ``chroot`` (root only): with no configuration the agent must start, import
everything it needs from the image alone, and exit 1 naming the missing environment.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from sampan.kubelet.runtime import agent_image
from sampan.manager import manifest
from sampan.version import __version__

pytestmark = pytest.mark.skipif(
    not agent_image.DEBIAN_PYTHON.exists(), reason="Debian's python3 is not installed"
)


def _members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {
            m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.isfile()
        }


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, dict[str, bytes]]:
    path = tmp_path_factory.mktemp("agent-image") / "agent.tar"
    digest = agent_image.build_cluster_agent_archive(path)
    return path, digest, _members(path)


def _layer(members: dict[str, bytes], digest: str) -> tuple[dict[str, object], bytes]:
    manifest_doc = json.loads(members[f"blobs/sha256/{digest.removeprefix('sha256:')}"])
    config = json.loads(members[f"blobs/sha256/{manifest_doc['config']['digest'][7:]}"])
    (layer_desc,) = manifest_doc["layers"]
    return config, members[f"blobs/sha256/{layer_desc['digest'][7:]}"]


def test_the_manifest_runs_the_image_every_sampan_agent_imports() -> None:
    ref = agent_image.cluster_agent_image_ref()
    assert ref == f"docker.io/sampan/cluster-agent:{__version__.replace('+', '-')}"
    assert manifest.AGENT_IMAGE_REPOSITORY == agent_image.CLUSTER_AGENT_IMAGE_REPOSITORY
    text = manifest.import_manifest(
        manager_url="https://m:8443", token="t", cluster="c-1", ca_pem=b"ca", agent_version="0.1.0"
    )
    assert f"image: {agent_image.cluster_agent_image_ref('0.1.0')}" in text


def test_image_is_named_and_runs_the_tunnel_agent(
    built: tuple[Path, str, dict[str, bytes]],
) -> None:
    _, digest, members = built
    entries = json.loads(members["index.json"])["manifests"]
    assert [e["digest"] for e in entries] == [digest, digest]
    version_ref, content_ref = (e["annotations"]["io.containerd.image.name"] for e in entries)
    assert version_ref == agent_image.cluster_agent_image_ref()
    assert content_ref.startswith(version_ref + "-")
    assert len(content_ref) == len(version_ref) + 1 + agent_image.CONTENT_TAG_CHARS
    config, _ = _layer(members, digest)
    inner = config["config"]
    assert isinstance(inner, dict)
    assert inner["Entrypoint"] == ["/usr/bin/python3", "-m", "sampan.manager.tunnel"]
    assert inner["Labels"]["io.sampan.image"] == "cluster-agent"


def test_layer_holds_debian_python_the_agent_code_and_its_deps_only(
    built: tuple[Path, str, dict[str, bytes]],
) -> None:
    _, digest, members = built
    _, layer = _layer(members, digest)
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        entries = {m.name: m for m in tar.getmembers()}
    interpreter = agent_image.DEBIAN_PYTHON.resolve()
    minor = interpreter.name.removeprefix("python")
    assert entries[str(interpreter).lstrip("/")].mode & 0o111
    assert entries["usr/bin/python3"].linkname == interpreter.name
    site = agent_image.DIST_PACKAGES
    for needed in (
        f"usr/lib/python{minor}/asyncio/__init__.py",
        f"usr/lib/python{minor}/ssl.py",
        f"{site}/sampan/manager/tunnel/__main__.py",
        f"{site}/sampan/manager/tunnel/agent.py",
        f"{site}/sampan/version.py",
        f"{site}/aiohttp/__init__.py",
        f"{site}/yarl/__init__.py",
        f"{site}/multidict/__init__.py",
    ):
        assert needed in entries, needed
    assert any(n.startswith(f"usr/lib/python{minor}/lib-dynload/_ssl.") for n in entries)
    assert any("libssl.so" in n for n in entries)
    names = list(entries)
    # the agent's closure only: no other component, no test suites, no caches or C sources
    assert not [n for n in names if n.startswith(f"{site}/sampan/apiserver")]
    assert not [n for n in names if n.startswith(f"{site}/sampan/kubelet")]
    assert not [n for n in names if f"/python{minor}/test/" in n or "/config-" in n]
    assert not [n for n in names if "__pycache__" in n or n.endswith((".pyc", ".pyx", ".c"))]


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("chroot") is None, reason="needs root")
def test_image_entrypoint_starts_from_the_image_alone(
    built: tuple[Path, str, dict[str, bytes]], tmp_path: Path
) -> None:
    _, digest, members = built
    _, layer = _layer(members, digest)
    root = tmp_path / "rootfs"
    root.mkdir()
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        tar.extractall(root, filter="tar")
    proc = subprocess.run(
        [str(shutil.which("chroot")), str(root), "/usr/bin/python3", "-m", "sampan.manager.tunnel"],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1, proc.stderr
    assert "missing environment: SAMPAN_MANAGER_URL" in proc.stderr
    assert "Traceback" not in proc.stderr


def _copy_of_sampan(tmp_path: Path) -> Path:
    """A development tree of its own: a copy of the ``sampan`` package being tested."""
    import sampan

    root = tmp_path / "src"
    shutil.copytree(
        Path(sampan.__file__).parent,
        root / "sampan",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    return root


def test_content_tag_follows_the_files_and_the_build_is_skipped_when_present(
    tmp_path: Path,
) -> None:
    root = _copy_of_sampan(tmp_path)
    inputs = tmp_path / "inputs.json"
    first = tmp_path / "first.tar"
    ref, built = agent_image.prepare_cluster_agent_archive(first, inputs, sampan_root=root)
    assert built and first.exists()
    assert ref.startswith(agent_image.cluster_agent_image_ref() + "-")
    assert inputs.stat().st_mode & 0o777 == 0o600
    # Unchanged inputs: the tag is known from their sizes and times alone.
    assert agent_image.recorded_content_ref(inputs) == ref

    # An edit in the tree (a module the agent imports): stale, and another tag, built.
    module = root / "sampan" / "manager" / "tunnel" / "agent.py"
    original = module.read_bytes()
    module.write_bytes(original + b"\n# an edit\n")
    assert agent_image.recorded_content_ref(inputs) is None
    second = tmp_path / "second.tar"
    edited, built = agent_image.prepare_cluster_agent_archive(
        second, inputs, present=[ref], sampan_root=root
    )
    assert built and second.exists() and edited != ref
    layer = _layer(_members(second), _index_digest(second))[1]
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        copied = tar.extractfile(f"{agent_image.DIST_PACKAGES}/sampan/manager/tunnel/agent.py")
        assert copied is not None and copied.read().endswith(b"# an edit\n")

    # The edit undone (the file is newer, its content as before): the first tag again, which
    # the runtime holds, so nothing is written.
    module.write_bytes(original)
    assert agent_image.recorded_content_ref(inputs) is None
    third = tmp_path / "third.tar"
    again, built = agent_image.prepare_cluster_agent_archive(
        third, inputs, present=[ref, edited], sampan_root=root
    )
    assert (again, built) == (ref, False)
    assert not third.exists()
    assert agent_image.recorded_content_ref(inputs) == ref


def _index_digest(path: Path) -> str:
    return str(json.loads(_members(path)["index.json"])["manifests"][0]["digest"])
