"""The runtime layer against a real, private containerd (see conftest.runtime_env)."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from sampan.kubelet.runtime import ContainerdConfig, ContainerRuntime, NotFoundError, images, pb
from sampan.kubelet.runtime.agent_image import DEBIAN_PYTHON, cluster_agent_image_ref
from sampan.kubelet.runtime.service import CLUSTER_AGENT_ARCHIVE_NAME
from tests.kubelet.runtime.conftest import (
    RuntimeEnv,
    container_config,
    write_test_cni_conflist,
)
from tests.support.images import BUSYBOX_IMAGE
from tests.support.poll import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")

log = logging.getLogger("tests.kubelet.runtime")

WAIT_TIMEOUT_S = 30.0
"""Upper bound for conditions that become true asynchronously (not a speed assertion)."""

_CRI_LOG_LINE = re.compile(r"^\S+ (stdout|stderr) ([FP]) (.*)$")


def _tags(image_list: list[pb.Image]) -> set[str]:
    return {tag for image in image_list for tag in image.repo_tags}


async def test_version(runtime_env: RuntimeEnv) -> None:
    version = await runtime_env.runtime.runtime.version()
    assert version.runtime_name == "containerd"
    assert version.runtime_api_version == "v1"
    status = await runtime_env.runtime.runtime.status()
    ready = {c.type: c.status for c in status.status.conditions}
    assert ready["RuntimeReady"] is True


async def test_pause_and_archive_images_are_listed_with_tags(runtime_env: RuntimeEnv) -> None:
    tags = _tags(await runtime_env.runtime.images.list_images())
    assert runtime_env.cfg.sandbox_image in tags
    assert BUSYBOX_IMAGE in tags
    busybox = await runtime_env.runtime.images.image_status(BUSYBOX_IMAGE)
    assert busybox is not None and BUSYBOX_IMAGE in busybox.repo_tags
    assert await runtime_env.runtime.images.image_status("example.test/absent:1") is None


async def test_reimport_is_skipped_via_the_index(runtime_env: RuntimeEnv) -> None:
    importer = runtime_env.runtime.importer
    assert importer is not None
    archive = runtime_env.cfg.images_dir / "busybox-1.36.oci.tar"
    result = await importer.import_archive(archive)
    assert result.skipped
    assert result.refs == (BUSYBOX_IMAGE,)
    index = json.loads(importer.index_path.read_text())
    assert index["imported"][result.sha256] == [BUSYBOX_IMAGE]


async def test_archive_dropped_later_is_imported_compressed(
    runtime_env: RuntimeEnv, caplog: pytest.LogCaptureFixture
) -> None:
    # A broken archive first: its failure is logged and does not stop the watcher.
    bad = runtime_env.cfg.images_dir / "broken.tar"
    await asyncio.to_thread(bad.write_bytes, b"this is not a tar archive\n" * 100)
    ref = "example.test/dropped:1"
    plain = runtime_env.data_dir / "dropped.tar"
    await asyncio.to_thread(images.build_oci_archive, plain, ref=ref, files={"hello": b"hi\n"})

    def gzip_into_images_dir() -> None:
        import gzip
        import shutil

        tmp = runtime_env.data_dir / "dropped.tar.gz.part"
        with plain.open("rb") as src, gzip.open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst)
        os.replace(tmp, runtime_env.cfg.images_dir / "dropped.tar.gz")

    await asyncio.to_thread(gzip_into_images_dir)

    async def listed() -> bool:
        return await runtime_env.runtime.images.image_status(ref) is not None

    await eventually(listed, WAIT_TIMEOUT_S, what=f"{ref} to be imported from the images dir")
    assert any(
        "could not import image archive" in r.getMessage() and str(bad) in r.getMessage()
        for r in caplog.records
    )
    await asyncio.to_thread(bad.unlink)


async def test_zstd_and_docker_archives_are_imported(runtime_env: RuntimeEnv) -> None:
    importer = runtime_env.runtime.importer
    assert importer is not None
    work = runtime_env.data_dir / "archives"
    work.mkdir(exist_ok=True)
    oci = work / "zst.tar"
    await asyncio.to_thread(
        images.build_oci_archive, oci, ref="example.test/zst:1", files={"z": b"z"}
    )
    zst = work / "zst.tar.zst"
    await asyncio.to_thread(
        subprocess.run, ["zstd", "-q", "-f", str(oci), "-o", str(zst)], check=True
    )
    result = await importer.import_archive(zst)
    assert (result.refs, result.skipped) == (("example.test/zst:1",), False)
    assert await runtime_env.runtime.images.image_status("example.test/zst:1") is not None

    if shutil.which("skopeo") is None:
        pytest.skip("skopeo (Debian package skopeo) is needed to make a docker-archive")
    oci = work / "docker-src.tar"
    await asyncio.to_thread(
        images.build_oci_archive, oci, ref="example.test/src:1", files={"d": b"d"}
    )
    docker = work / "docker.tar"
    await asyncio.to_thread(
        subprocess.run,
        [
            "skopeo",
            "--insecure-policy",
            "copy",
            "-q",
            f"oci-archive:{oci}",
            f"docker-archive:{docker}:example.test/docker:2",
        ],
        check=True,
    )
    result = await importer.import_archive(docker)
    assert result.refs == ("example.test/docker:2",)
    image = await runtime_env.runtime.images.image_status("example.test/docker:2")
    assert image is not None and "example.test/docker:2" in image.repo_tags


async def _run_pod(
    env: RuntimeEnv, name: str, command: list[str], *, host_network: bool
) -> tuple[str, str, pb.PodSandboxConfig, float]:
    """RunPodSandbox + CreateContainer + StartContainer; returns ids, config and the time."""
    rt = env.runtime.runtime
    sandbox_config = env.sandbox_config(name, host_network=host_network)
    started = time.monotonic()
    sandbox_id = await rt.run_pod_sandbox(sandbox_config)
    container_id = await rt.create_container(
        sandbox_id, container_config("main", command, host_network=host_network), sandbox_config
    )
    await rt.start_container(container_id)
    elapsed_s = time.monotonic() - started
    return sandbox_id, container_id, sandbox_config, elapsed_s


async def _remove_pod(env: RuntimeEnv, sandbox_id: str, container_id: str) -> None:
    rt = env.runtime.runtime
    await rt.stop_container(container_id, grace_period_s=0)
    status = await rt.container_status(container_id)
    assert status.status.state == pb.ContainerState.CONTAINER_EXITED
    await rt.remove_container(container_id)
    with pytest.raises(NotFoundError):
        await rt.container_status(container_id)
    await rt.stop_pod_sandbox(sandbox_id)
    await rt.remove_pod_sandbox(sandbox_id)
    with pytest.raises(NotFoundError):
        await rt.pod_sandbox_status(sandbox_id)


def _process_name(pid: int) -> str | None:
    """argv[0] of a live process, None if there is none (our own exited children are reaped)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode() or None
    except FileNotFoundError:
        return None


def _log_lines(path: Path) -> list[tuple[str, str, str]]:
    lines = []
    for raw in path.read_text().splitlines():
        match = _CRI_LOG_LINE.match(raw)
        assert match, f"not a CRI log line: {raw!r}"
        lines.append((match.group(1), match.group(2), match.group(3)))
    return lines


async def test_host_network_pod_runs_logs_and_execs(runtime_env: RuntimeEnv) -> None:
    env = runtime_env
    rt = env.runtime.runtime
    sandbox_id, container_id, sandbox_config, elapsed_s = await _run_pod(
        env, "hostnet", ["sh", "-c", "echo hi; sleep 60"], host_network=True
    )
    log.warning("raw CRI RunPodSandbox+CreateContainer+StartContainer: %.3fs", elapsed_s)
    print(f"\nraw CRI RunPodSandbox+CreateContainer+StartContainer: {elapsed_s:.3f}s")

    sandbox = await rt.pod_sandbox_status(sandbox_id, verbose=True)
    assert sandbox.status.state == pb.PodSandboxState.SANDBOX_READY
    info = json.loads(sandbox.info["info"])
    assert info["image"] == env.cfg.sandbox_image  # our pause image, never pulled
    assert info["snapshotter"] == env.runtime.containerd.cfg.snapshotter
    status = await rt.container_status(container_id)
    assert status.status.state == pb.ContainerState.CONTAINER_RUNNING
    assert status.status.image.image == BUSYBOX_IMAGE or status.status.image_ref

    log_path = Path(sandbox_config.log_directory) / "main" / "0.log"
    assert status.status.log_path == str(log_path)

    async def logged_hi() -> bool:
        return log_path.exists() and ("stdout", "F", "hi") in _log_lines(log_path)

    await eventually(logged_hi, WAIT_TIMEOUT_S, what="'hi' in the container log")

    result = await rt.exec_sync(container_id, ["echo", "ok"], timeout_s=10)
    assert (result.exit_code, result.stdout, result.stderr) == (0, b"ok\n", b"")
    failed = await rt.exec_sync(container_id, ["sh", "-c", "echo no >&2; exit 3"], timeout_s=10)
    assert (failed.exit_code, failed.stderr) == (3, b"no\n")

    listed = await rt.list_containers(pb.ContainerFilter(pod_sandbox_id=sandbox_id))
    assert [c.id for c in listed] == [container_id]
    url = await rt.exec(container_id, ["sh"], stdin=True, tty=True)
    assert url.startswith("http://127.0.0.1:")
    assert (await rt.attach(container_id, stdin=True)).startswith("http://127.0.0.1:")
    assert (await rt.port_forward(sandbox_id, [80])).startswith("http://127.0.0.1:")
    all_stats = await rt.list_container_stats(pb.ContainerStatsFilter(id=container_id))
    assert [s.attributes.id for s in all_stats] == [container_id]
    await rt.reopen_container_log(container_id)
    await rt.exec_sync(container_id, ["sh", "-c", "echo after-reopen > /proc/1/fd/1"])

    async def logged_after_reopen() -> bool:
        return ("stdout", "F", "after-reopen") in _log_lines(log_path)

    await eventually(
        logged_after_reopen, WAIT_TIMEOUT_S, what="output after ReopenContainerLog in the log"
    )

    await _remove_pod(env, sandbox_id, container_id)


async def test_cni_network_pod_gets_an_address(runtime_env: RuntimeEnv) -> None:
    env = runtime_env
    rt = env.runtime.runtime
    await asyncio.to_thread(write_test_cni_conflist, env.cfg.cni_conf_dir, env.names)

    async def network_ready() -> bool:
        status = await rt.status()
        return any(c.type == "NetworkReady" and c.status for c in status.status.conditions)

    await eventually(
        network_ready, WAIT_TIMEOUT_S, what="NetworkReady after writing the CNI conflist"
    )
    sandbox_id, container_id, _, _ = await _run_pod(env, "cni", ["sleep", "60"], host_network=False)
    sandbox = await rt.pod_sandbox_status(sandbox_id)
    ip = ipaddress.ip_address(sandbox.status.network.ip)
    assert ip in ipaddress.ip_network(env.names.pod_subnet)
    result = await rt.exec_sync(container_id, ["ip", "-o", "-4", "addr", "show", "eth0"])
    assert result.exit_code == 0 and f" {ip}/" in result.stdout.decode()
    await _remove_pod(env, sandbox_id, container_id)


async def test_unknown_ids_are_not_found(runtime_env: RuntimeEnv) -> None:
    rt = runtime_env.runtime.runtime
    with pytest.raises(NotFoundError):
        await rt.container_status("0" * 64)
    with pytest.raises(NotFoundError):
        await rt.pod_sandbox_status("0" * 64)


async def _kill_containerd_and_wait_restart(env: RuntimeEnv) -> None:
    """SIGKILL the session's containerd; return once its supervisor has restarted it."""
    containerd = env.runtime.containerd
    assert containerd is not None
    old_pid, restarts = containerd.pid, containerd.restarts
    assert old_pid is not None
    os.kill(old_pid, signal.SIGKILL)

    async def restarted() -> bool:
        return containerd.restarts > restarts and containerd.ready.is_set()

    await eventually(restarted, WAIT_TIMEOUT_S, what="the supervisor to restart containerd")
    assert containerd.pid != old_pid


@pytest.mark.slow
async def test_killed_containerd_is_restarted_and_containers_survive(
    runtime_env: RuntimeEnv,
) -> None:
    env = runtime_env
    rt = env.runtime.runtime
    sandbox_id, container_id, _, _ = await _run_pod(
        env, "survivor", ["sleep", "120"], host_network=True
    )
    before = await rt.container_status(container_id)
    assert before.status.state == pb.ContainerState.CONTAINER_RUNNING

    await _kill_containerd_and_wait_restart(env)

    after = await rt.container_status(container_id)
    assert after.status.state == pb.ContainerState.CONTAINER_RUNNING
    assert after.status.started_at == before.status.started_at
    result = await rt.exec_sync(container_id, ["echo", "still here"], timeout_s=10)
    assert result.stdout == b"still here\n"
    await _remove_pod(env, sandbox_id, container_id)


async def test_existing_endpoint_is_used_without_starting_containerd(
    runtime_env: RuntimeEnv, tmp_path: Path
) -> None:
    other = ContainerRuntime(
        ContainerdConfig(data_dir=tmp_path / "other"), endpoint=runtime_env.cfg.endpoint
    )
    await other.start()
    try:
        assert other.containerd is None
        assert (await other.runtime.version()).runtime_api_version == "v1"
        assert await other.images.image_status(runtime_env.cfg.sandbox_image) is not None
        assert not (tmp_path / "other" / "agent" / "run").exists()
    finally:
        await other.stop()
    # Stopping a runtime that only borrowed the socket leaves its owner running.
    assert (await runtime_env.runtime.runtime.version()).runtime_name == "containerd"


AGENT_IMAGE_WAIT_S = 300.0
"""Upper bound for a build and import of the cluster agent image on a loaded machine."""


async def _agent_content_tags(env: RuntimeEnv) -> list[str]:
    version_ref = cluster_agent_image_ref()
    image = await env.runtime.images.image_status(version_ref)
    tags = image.repo_tags if image is not None else []
    return [tag for tag in tags if tag.startswith(version_ref + "-")]


async def _agent_image_checks_done(env: RuntimeEnv) -> None:
    await asyncio.wait_for(env.runtime._agent_image_idle.wait(), AGENT_IMAGE_WAIT_S)


async def _remove_image(env: RuntimeEnv, ref: str) -> None:
    """CRI RemoveImage, straight through the image client's stub (the kubelet has no image
    garbage collection yet, so its client has no such call)."""
    request = pb.RemoveImageRequest(image=pb.ImageSpec(image=ref))
    await env.runtime.images._stub.RemoveImage(request, timeout=30)


async def _remove_agent_image(env: RuntimeEnv) -> None:
    images_client = env.runtime.images
    version_ref = cluster_agent_image_ref()
    for tag in await _agent_content_tags(env):
        await _remove_image(env, tag)
    if await images_client.image_status(version_ref) is not None:
        await _remove_image(env, version_ref)
    assert await images_client.image_status(version_ref) is None


@pytest.mark.skipif(not DEBIAN_PYTHON.exists(), reason="Debian's python3 is not installed")
async def test_cluster_agent_image_is_built_only_when_missing(
    runtime_env: RuntimeEnv, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def content_tags() -> list[str]:
        return await _agent_content_tags(runtime_env)

    # The session's runtime checks it in the background (at start, and again after an earlier
    # test killed containerd): wait until no check is running or due, then remove the image.
    await _agent_image_checks_done(runtime_env)
    await _remove_agent_image(runtime_env)

    other = ContainerRuntime(
        ContainerdConfig(data_dir=tmp_path / "other"),
        endpoint=runtime_env.cfg.endpoint,
        cluster_agent_image=False,
    )
    await other.start()
    try:
        archive = other.cfg.root_dir / CLUSTER_AGENT_ARCHIVE_NAME
        # Missing from the runtime: built and imported under both tags.
        await other.ensure_cluster_agent_image()
        assert archive.exists()
        (tag,) = await content_tags()
        # Present, inputs unchanged: no build (no archive written, no child process).
        archive.unlink()
        with caplog.at_level(logging.INFO, logger="sampan.kubelet.runtime"):
            await other.ensure_cluster_agent_image()
        assert f"cluster agent image {tag} is up to date (no build)" in caplog.text
        assert not archive.exists()
        assert await content_tags() == [tag]
    finally:
        await other.stop()


@pytest.mark.slow
@pytest.mark.skipif(not DEBIAN_PYTHON.exists(), reason="Debian's python3 is not installed")
async def test_the_cluster_agent_image_is_checked_again_after_containerd_restarts(
    runtime_env: RuntimeEnv,
) -> None:
    """A containerd that dies during the image's import loses it: after each restart the
    runtime checks the image again, so an image missing then is built and imported again."""
    await _agent_image_checks_done(runtime_env)
    await _remove_agent_image(runtime_env)
    await _kill_containerd_and_wait_restart(runtime_env)
    await _agent_image_checks_done(runtime_env)
    tags = await _agent_content_tags(runtime_env)
    assert len(tags) == 1, tags
    image = await runtime_env.runtime.images.image_status(cluster_agent_image_ref())
    assert image is not None and tags[0] in image.repo_tags


@pytest.mark.slow
async def test_stopping_containerd_leaves_containers_running(runtime_env: RuntimeEnv) -> None:
    env = runtime_env
    containerd = env.runtime.containerd
    assert containerd is not None
    rt = env.runtime.runtime
    sandbox_id, container_id, _, _ = await _run_pod(
        env, "keeper", ["sleep", "120"], host_network=True
    )
    status = await rt.container_status(container_id, verbose=True)
    pid = json.loads(status.info["info"])["pid"]
    assert pid > 0

    old_pid = containerd.pid
    await containerd.stop()
    assert old_pid is not None and await asyncio.to_thread(_process_name, old_pid) is None
    # The container's process outlives containerd: its shim is a separate process.
    assert await asyncio.to_thread(_process_name, pid) == "sleep"

    await containerd.start()
    after = await rt.container_status(container_id)
    assert after.status.state == pb.ContainerState.CONTAINER_RUNNING
    await _remove_pod(env, sandbox_id, container_id)
