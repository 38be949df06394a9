"""Private registries on a real node: a private registry (Debian's ``docker-registry``) with
TLS from a private CA and htpasswd basic auth, started on loopback with its own config and
storage; the busybox test image pushed into it with skopeo. Then, through the kubelet and its
containerd:

(a) an image of the registry and no credentials -> ErrImagePull, its event carrying the
    registry's 401;
(d) the same image with a ``kubernetes.io/dockerconfigjson`` imagePullSecret -> Running;
(b) registries.yaml ``configs`` auth + ``ca_file`` (agent restarted) -> Running, no secret;
(c) registries.yaml mirror of docker.io -> ``docker.io/test/busybox:1`` pulls from it;
(e) the ``"*"`` mirror -> ``registry.invalid/test/busybox:2`` pulls from it.

Run under the node lock (``flock /tmp/sampan-node.lock ...``).
"""

from __future__ import annotations

import base64
import json
import logging
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from sampan.client.api import EVENTS, PODS, SECRETS
from sampan.kubelet.registries import load_registries
from tests.support.cluster import NodeHarness, wait_for
from tests.support.images import busybox_archive
from tests.support.tls import serving_pki

pytestmark = [
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.skipif(
        shutil.which("docker-registry") is None
        or shutil.which("htpasswd") is None
        or shutil.which("skopeo") is None,
        reason="needs Debian's docker-registry, apache2-utils and skopeo (scripts/install.sh)",
    ),
]

USER = "puller"
PASSWORD = "s3cret-pull-pass"


@dataclass
class Registry:
    host: str
    ca_file: Path
    proc: subprocess.Popen[bytes]
    log: Path

    def manifest_requests(self, repository: str, tag: str) -> int:
        """How many manifest requests the registry logged for ``repository:tag``."""
        return self.log.read_text().count(f"/v2/{repository}/manifests/{tag}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _certs(directory: Path) -> tuple[Path, Path, Path]:
    pki = serving_pki(directory, common_name="test-registry")
    return pki.ca_file, pki.cert_path, pki.key_path


def _wait_listening(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"docker-registry exited: {log.read_text()[-2000:]}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"docker-registry did not listen: {log.read_text()[-2000:]}")


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    root = tmp_path_factory.mktemp("registry")
    ca_file, cert_file, key_file = _certs(root)
    htpasswd = subprocess.run(
        ["htpasswd", "-Bbn", USER, PASSWORD], check=True, capture_output=True, text=True
    ).stdout
    (root / "htpasswd").write_text(htpasswd)
    port = _free_port()
    config = {
        "version": 0.1,
        "log": {"level": "info", "accesslog": {"disabled": False}},
        "storage": {"filesystem": {"rootdirectory": str(root / "storage")}},
        "http": {
            "addr": f"127.0.0.1:{port}",
            "tls": {"certificate": str(cert_file), "key": str(key_file)},
        },
        "auth": {"htpasswd": {"realm": "test-realm", "path": str(root / "htpasswd")}},
    }
    (root / "config.yml").write_text(json.dumps(config))  # JSON is YAML
    log = root / "registry.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["docker-registry", "serve", str(root / "config.yml")],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_listening(port, proc, log)
        host = f"127.0.0.1:{port}"
        certs_dir = root / "skopeo-certs"
        certs_dir.mkdir()
        shutil.copy(ca_file, certs_dir / "ca.crt")
        cache = Path(tempfile.mkdtemp(prefix="sampan-registry-images-"))
        try:
            archive = busybox_archive(cache)
            for tag in ("1", "2"):
                subprocess.run(
                    [
                        "skopeo",
                        "copy",
                        "--quiet",
                        f"oci-archive:{archive}",
                        f"docker://{host}/test/busybox:{tag}",
                        "--dest-creds",
                        f"{USER}:{PASSWORD}",
                        "--dest-cert-dir",
                        str(certs_dir),
                    ],
                    check=True,
                    capture_output=True,
                    timeout=120,
                )
        finally:
            shutil.rmtree(cache, ignore_errors=True)
        yield Registry(host=host, ca_file=ca_file, proc=proc, log=log)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _registries_yaml(path: Path, registry: Registry, *, auth: bool) -> Path:
    config: dict[str, Any] = {"tls": {"ca_file": str(registry.ca_file)}}
    if auth:
        config["auth"] = {"username": USER, "password": PASSWORD}
    document = {
        "mirrors": {
            "docker.io": {"endpoint": [f"https://{registry.host}"]},
            "*": {"endpoint": [f"https://{registry.host}"]},
        },
        "configs": {registry.host: config},
    }
    path.write_text(json.dumps(document))
    return path


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def node(registry: Registry) -> AsyncIterator[NodeHarness]:
    image_cache = Path(tempfile.mkdtemp(prefix="sampan-node-images-"))
    yaml_path = _registries_yaml(image_cache / "registries.yaml", registry, auth=False)
    harness = NodeHarness(image_cache, registries=load_registries(yaml_path))
    try:
        await harness.start()
        yield harness
    finally:
        await harness.stop()
        shutil.rmtree(image_cache, ignore_errors=True)


def _pod(name: str, image: str, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            "containers": [
                {
                    "name": "main",
                    "image": image,
                    "imagePullPolicy": "Always",
                    "command": ["sleep", "3600"],
                }
            ],
            "terminationGracePeriodSeconds": 1,
            **spec,
        },
    }


def _diagnostics(node: NodeHarness, registry: Registry) -> str:
    """What a failed pull needs to be understood: hosts.toml files and the logs' tails."""
    assert node.kubelet is not None
    cfg = node.kubelet.runtime_component.cfg
    parts = [f"{p}:\n{p.read_text()}" for p in sorted(cfg.hosts_dir.glob("*/hosts.toml"))]
    lines = cfg.log_path.read_text().splitlines()
    parts.append("containerd: " + "\n".join(ln for ln in lines if "test/busybox" in ln)[-3000:])
    parts.append("registry: " + registry.log.read_text()[-3000:])
    return "\n".join(parts)


def _waiting(pod: dict[str, Any]) -> dict[str, Any]:
    statuses = (pod.get("status") or {}).get("containerStatuses") or [{}]
    return (statuses[0].get("state") or {}).get("waiting") or {}


async def _running(node: NodeHarness, registry: Registry, ns: str, name: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        pod = await node.get_pod(ns, name)
        if pod is not None and (pod.get("status") or {}).get("phase") == "Running":
            return pod
        return None

    try:
        return await wait_for(check, what=f"pod {name} Running", timeout_s=60)
    except AssertionError:
        pod = await node.get_pod(ns, name)
        raise AssertionError(
            f"pod {name} not Running: {_waiting(pod or {})}\n{_diagnostics(node, registry)}"
        ) from None


async def test_private_registry_pulls(
    node: NodeHarness, registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    assert node.client is not None
    ns = await node.namespace()
    private = f"{registry.host}/test/busybox:1"

    # (a) no credentials anywhere: the registry's 401 reaches the pod's status.
    await node.create_pod(ns, _pod("anonymous", private))

    async def refused() -> str | None:
        pod = await node.get_pod(ns, "anonymous")
        if _waiting(pod or {}).get("reason") not in ("ErrImagePull", "ImagePullBackOff"):
            return None
        events = await node.client.list(
            EVENTS, namespace=ns, field_selector="involvedObject.name=anonymous"
        )
        for event in events.get("items") or []:
            message = str(event.get("message") or "")
            if event.get("reason") == "Failed" and "Failed to pull image" in message:
                return message
        return None

    message = await wait_for(refused, what="ErrImagePull and its event", timeout_s=60)
    assert "401 Unauthorized" in message, (message, _diagnostics(node, registry))
    await node.client.delete(PODS, "anonymous", namespace=ns)

    # (d) an imagePullSecret of type kubernetes.io/dockerconfigjson.
    dockerconfig = {
        "auths": {
            registry.host: {
                "username": USER,
                "password": PASSWORD,
                "auth": base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode(),
            }
        }
    }
    await node.client.create(
        SECRETS,
        {
            "metadata": {"name": "pull"},
            "type": "kubernetes.io/dockerconfigjson",
            "data": {
                ".dockerconfigjson": base64.b64encode(json.dumps(dockerconfig).encode()).decode()
            },
        },
        namespace=ns,
    )
    await node.create_pod(ns, _pod("with-secret", private, imagePullSecrets=[{"name": "pull"}]))
    await _running(node, registry, ns, "with-secret")

    # The agent restarts with registries.yaml carrying the credentials (read at start only).
    await node.stop_kubelet()
    node.kubelet_overrides["registries"] = load_registries(
        _registries_yaml(node.root / "registries-auth.yaml", registry, auth=True)
    )
    await node.start_kubelet()
    assert node.kubelet is not None
    config_toml = node.kubelet.runtime_component.cfg.config_path
    assert config_toml.stat().st_mode & 0o777 == 0o600
    assert PASSWORD in config_toml.read_text()

    # (b) configs auth + ca_file: a pod without any secret pulls (a tag not pulled before).
    await node.create_pod(ns, _pod("with-config", f"{registry.host}/test/busybox:2"))
    await _running(node, registry, ns, "with-config")

    # (c) the docker.io mirror: docker.io/test/busybox:1 comes from the local registry.
    before = registry.manifest_requests("test/busybox", "1")
    await node.create_pod(ns, _pod("mirrored", "docker.io/test/busybox:1"))
    await _running(node, registry, ns, "mirrored")
    assert registry.manifest_requests("test/busybox", "1") > before

    # (e) the "*" mirror: a registry with no entry of its own (and no DNS name) pulls from it.
    before = registry.manifest_requests("test/busybox", "2")
    await node.create_pod(ns, _pod("wildcard", "registry.invalid/test/busybox:2"))
    await _running(node, registry, ns, "wildcard")
    assert registry.manifest_requests("test/busybox", "2") > before

    # No password in Sampan's log records, nor in containerd's log.
    assert PASSWORD not in caplog.text
    assert node.kubelet is not None
    assert PASSWORD not in node.kubelet.runtime_component.cfg.log_path.read_text()
