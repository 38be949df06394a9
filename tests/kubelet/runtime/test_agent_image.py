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
    (entry,) = json.loads(members["index.json"])["manifests"]
    assert entry["digest"] == digest
    assert entry["annotations"]["io.containerd.image.name"] == (
        agent_image.cluster_agent_image_ref()
    )
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
