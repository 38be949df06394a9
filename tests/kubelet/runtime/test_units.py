"""Pure tests of the runtime layer's parts: config rendering, archive building, CRI errors."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
import tomllib
from pathlib import Path

import grpc
import pytest

from sampan.kubelet.runtime import cri, images
from sampan.kubelet.runtime.containerd import (
    ContainerdConfig,
    MissingBinariesError,
    check_binaries,
    detect_snapshotter,
    render_config,
)

CRI_KEY = "io.containerd.grpc.v1.cri"


def test_render_config_has_what_this_machine_needs(tmp_path: Path) -> None:
    cfg = ContainerdConfig(data_dir=tmp_path, snapshotter="native")
    doc = tomllib.loads(render_config(cfg))
    agent = tmp_path / "agent"
    assert doc["version"] == 2
    assert doc["root"] == str(agent / "containerd")
    assert doc["state"] == str(agent / "run" / "containerd")
    assert doc["grpc"]["address"] == str(cfg.socket_path)
    assert cfg.socket_path.is_relative_to(agent)
    plugin = doc["plugins"][CRI_KEY]
    assert plugin["restrict_oom_score_adj"] is True
    assert plugin["netns_mounts_under_state_dir"] is True
    assert plugin["stream_server_address"] == "127.0.0.1"
    assert plugin["stream_server_port"] == "0"
    assert plugin["sandbox_image"] == "sampan.local/pause:3.10"
    assert plugin["containerd"]["snapshotter"] == "native"
    runc = plugin["containerd"]["runtimes"]["runc"]
    assert runc["runtime_type"] == "io.containerd.runc.v2"
    assert runc["options"]["SystemdCgroup"] is False
    assert runc["options"]["Root"] == str(agent / "run" / "runc")
    assert plugin["cni"]["bin_dir"] == "/usr/lib/cni"
    assert plugin["cni"]["conf_dir"] == str(agent / "etc" / "cni" / "net.d")
    assert doc["plugins"]["io.containerd.internal.v1.opt"]["path"].startswith(str(agent))
    assert CRI_KEY not in doc["disabled_plugins"]


def test_render_config_quotes_odd_paths(tmp_path: Path) -> None:
    odd = tmp_path / 'a "quoted" dir\\x'
    doc = tomllib.loads(render_config(ContainerdConfig(data_dir=odd)))
    assert doc["root"] == str(odd / "agent" / "containerd")


def test_missing_binaries_name_the_debian_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(MissingBinariesError) as info:
        check_binaries()
    message = str(info.value)
    assert "\n" not in message
    for package in ("containerd", "runc", "containernetworking-plugins"):
        assert package in message


def _members(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as tar:
        return {
            m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.isfile()
        }


def test_pause_archive_is_a_deterministic_oci_layout(tmp_path: Path) -> None:
    first = tmp_path / "a.tar"
    second = tmp_path / "b.tar"
    digest = images.build_pause_archive(first, ref="sampan.local/pause:3.10")
    assert images.build_pause_archive(second, ref="sampan.local/pause:3.10") == digest
    assert first.read_bytes() == second.read_bytes()

    members = _members(first)
    assert json.loads(members["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads(members["index.json"])
    (entry,) = index["manifests"]
    assert entry["digest"] == digest
    assert entry["annotations"]["io.containerd.image.name"] == "sampan.local/pause:3.10"
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == "3.10"
    for name, data in members.items():
        if name.startswith("blobs/sha256/"):
            assert images.hashlib.sha256(data).hexdigest() == name.rsplit("/", 1)[1]
    manifest = json.loads(members[f"blobs/sha256/{digest.removeprefix('sha256:')}"])
    config = json.loads(members[f"blobs/sha256/{manifest['config']['digest'][7:]}"])
    assert config["config"]["Entrypoint"] == ["/pause", "-P"]
    assert config["os"] == "linux"
    (layer_desc,) = manifest["layers"]
    layer = members[f"blobs/sha256/{layer_desc['digest'][7:]}"]
    assert config["rootfs"]["diff_ids"] == [layer_desc["digest"]]
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        pause = tar.getmember("pause")
        assert pause.mode & 0o111
        assert pause.size == images.CATATONIT_PATH.stat().st_size


def test_layer_adds_parent_dirs_and_symlinks(tmp_path: Path) -> None:
    archive = tmp_path / "x.tar"
    images.build_oci_archive(
        archive,
        ref="example.test/x:1",
        files={"usr/share/x/data": b"hello"},
        symlinks={"bin/sh": "/bin/busybox"},
        dirs={"tmp": 0o1777},
    )
    members = _members(archive)
    index = json.loads(members["index.json"])
    manifest = json.loads(members[f"blobs/sha256/{index['manifests'][0]['digest'][7:]}"])
    layer = members[f"blobs/sha256/{manifest['layers'][0]['digest'][7:]}"]
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        names = {m.name: m for m in tar.getmembers()}
    assert names["usr"].isdir() and names["usr/share/x"].isdir()
    assert names["bin/sh"].issym() and names["bin/sh"].linkname == "/bin/busybox"
    assert names["tmp"].mode == 0o1777
    assert names["usr/share/x/data"].mode == 0o644


@pytest.mark.parametrize(
    ("endpoint", "target"),
    [
        ("/run/x.sock", "unix:///run/x.sock"),
        ("unix:/run/x.sock", "unix:///run/x.sock"),
        ("unix:///run/x.sock", "unix:///run/x.sock"),
    ],
)
def test_normalize_endpoint(endpoint: str, target: str) -> None:
    assert cri.normalize_endpoint(endpoint) == target


@pytest.mark.parametrize(
    ("code", "error"),
    [
        (grpc.StatusCode.NOT_FOUND, cri.NotFoundError),
        (grpc.StatusCode.UNAVAILABLE, cri.UnavailableError),
        (grpc.StatusCode.UNKNOWN, cri.CRIError),
    ],
)
def test_grpc_errors_are_translated(code: grpc.StatusCode, error: type[cri.CRIError]) -> None:
    rpc_error = grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), "boom")
    translated = cri._translate("ContainerStatus", rpc_error)
    assert type(translated) is error
    assert translated.code == code
    assert "ContainerStatus" in str(translated) and "boom" in str(translated)


async def test_nothing_listening_is_unavailable(tmp_path: Path) -> None:
    async with cri.connect(str(tmp_path / "none.sock"), timeout_s=2.0) as conn:
        with pytest.raises(cri.UnavailableError):
            await conn.runtime.version()


def test_snapshotter_falls_back_to_native_where_overlay_cannot_mount(tmp_path: Path) -> None:
    # overlayfs cannot be the upper layer of another overlay: a root inside an overlay mount
    # is a real place where the probe must fail and choose "native".
    for name in ("lower", "upper", "work", "merged"):
        (tmp_path / name).mkdir()
    options = f"lowerdir={tmp_path}/lower,upperdir={tmp_path}/upper,workdir={tmp_path}/work"
    subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o", options, str(tmp_path / "merged")],
        check=True,
    )
    try:
        assert detect_snapshotter(tmp_path / "plain") == "overlayfs"
        assert detect_snapshotter(tmp_path / "merged" / "root") == "native"
    finally:
        subprocess.run(["umount", "-l", str(tmp_path / "merged")], check=True)
    assert not any((tmp_path / "plain").iterdir())  # the probe cleans up after itself
