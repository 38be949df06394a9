"""A node for the kubelet API tests: private containerd + in-process API server + KubeletServer.

``node_env`` (session) starts the runtime (the runtime tests' ``runtime_env``), an API server
with its admin kubeconfig (what kubectl uses), and a ``KubeletServer`` on 127.0.0.1 with a
serving certificate from the cluster's server CA; it registers Node ``NODE_NAME`` whose status
points at that kubelet. ``node_env.run_pod(name, containers)`` creates the Pod object (bound
to the node) and runs it straight through CRI with the labels a kubelet uses, so these tests do
not depend on the pod workers.
"""

from __future__ import annotations

import asyncio
import secrets
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest_asyncio

from sampan.client import Client
from sampan.client.api import NODES, PODS
from sampan.kubelet.runtime import pb
from sampan.kubelet.server import KubeletServer, KubeletServerOptions
from sampan.pki import issue_kubelet_serving_certificate
from tests.client.conftest import ApiServerHarness
from tests.kubelet.runtime.conftest import (  # noqa: F401 - fixtures used by name
    RuntimeEnv,
    image_cache_dir,
    runtime_env,
    write_test_cni_conflist,
)
from tests.support.images import BUSYBOX_IMAGE

NODE_NAME = "kubelet-server-test"
NETWORK_READY_POLLS = 300


@dataclass
class RunningPod:
    name: str
    uid: str
    sandbox_id: str
    container_ids: dict[str, str]
    sandbox_config: pb.PodSandboxConfig
    container_configs: dict[str, pb.ContainerConfig]


@dataclass
class NodeEnv:
    runtime_env: RuntimeEnv
    api: ApiServerHarness
    kubelet: KubeletServer
    client: Client
    data_dir: Path
    pods: list[RunningPod] = field(default_factory=list)

    @property
    def kubeconfig(self) -> Path:
        return self.api.kubeconfig

    async def run_pod(
        self,
        name: str,
        containers: dict[str, list[str]],
        *,
        namespace: str = "default",
        stdin: bool = False,
        tty: bool = False,
    ) -> RunningPod:
        """Pod object bound to the node + the same pod through CRI (sandbox, containers)."""
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "nodeName": NODE_NAME,
                "containers": [
                    {"name": c, "image": BUSYBOX_IMAGE, "command": cmd, "stdin": stdin, "tty": tty}
                    for c, cmd in containers.items()
                ],
            },
        }
        created = await self.client.create(PODS, pod, namespace=namespace)
        uid = created["metadata"]["uid"]
        rt = self.runtime_env.runtime.runtime
        log_dir = self.data_dir / "pods" / f"{namespace}_{name}_{uid}"
        log_dir.mkdir(parents=True, exist_ok=True)
        labels = {
            "io.kubernetes.pod.name": name,
            "io.kubernetes.pod.namespace": namespace,
            "io.kubernetes.pod.uid": uid,
        }
        sandbox_config = pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=name, uid=uid, namespace=namespace, attempt=0),
            hostname=name,
            log_directory=str(log_dir),
            labels=labels,
            linux=pb.LinuxPodSandboxConfig(
                cgroup_parent=f"{self.runtime_env.names.cgroup_root}/pod{uid}",
                security_context=pb.LinuxSandboxSecurityContext(
                    namespace_options=pb.NamespaceOption(
                        network=pb.NamespaceMode.POD, pid=pb.NamespaceMode.CONTAINER
                    ),
                ),
            ),
        )
        sandbox_id = await rt.run_pod_sandbox(sandbox_config)
        ids: dict[str, str] = {}
        configs: dict[str, pb.ContainerConfig] = {}
        for cname, command in containers.items():
            config = pb.ContainerConfig(
                metadata=pb.ContainerMetadata(name=cname, attempt=0),
                image=pb.ImageSpec(image=BUSYBOX_IMAGE),
                command=command,
                log_path=f"{cname}/0.log",
                labels={**labels, "io.kubernetes.container.name": cname},
                stdin=stdin,
                tty=tty,
                linux=pb.LinuxContainerConfig(
                    security_context=pb.LinuxContainerSecurityContext(
                        namespace_options=pb.NamespaceOption(
                            network=pb.NamespaceMode.POD, pid=pb.NamespaceMode.CONTAINER
                        )
                    )
                ),
            )
            configs[cname] = config
            ids[cname] = await rt.create_container(sandbox_id, config, sandbox_config)
            await rt.start_container(ids[cname])
        # What the pod workers would report (kubectl port-forward wants phase Running).
        created = await self.client.get(PODS, name, namespace=namespace)
        created["status"] = {
            "phase": "Running",
            "containerStatuses": [
                {
                    "name": c,
                    "image": BUSYBOX_IMAGE,
                    "imageID": "",
                    "containerID": f"containerd://{ids[c]}",
                    "ready": True,
                    "restartCount": 0,
                    "started": True,
                    "state": {"running": {}},
                }
                for c in containers
            ],
        }
        await self.client.update_status(PODS, created)
        running = RunningPod(name, uid, sandbox_id, ids, sandbox_config, configs)
        self.pods.append(running)
        return running


async def _register_node(client: Client, port: int) -> None:
    node = await client.create(
        NODES, {"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE_NAME}}
    )
    node["status"] = {
        "addresses": [
            {"type": "InternalIP", "address": "127.0.0.1"},
            {"type": "Hostname", "address": NODE_NAME},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
    }
    await client.update_status(NODES, node)


async def _ensure_pod_network(env: RuntimeEnv) -> None:
    await asyncio.to_thread(write_test_cni_conflist, env.cfg.cni_conf_dir, env.names)
    rt = env.runtime.runtime
    for _ in range(NETWORK_READY_POLLS):
        status = await rt.status()
        if any(c.type == "NetworkReady" and c.status for c in status.status.conditions):
            return
        await asyncio.sleep(0.1)
    raise RuntimeError("containerd did not report NetworkReady after the CNI conflist")


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def node_env(runtime_env: RuntimeEnv) -> AsyncIterator[NodeEnv]:  # noqa: F811
    data_dir = Path(tempfile.mkdtemp(prefix="sampan-kls-"))
    await _ensure_pod_network(runtime_env)
    api = ApiServerHarness(data_dir / "api")
    await api.start()
    kubelet: KubeletServer | None = None
    client = api.new_client()
    env: NodeEnv | None = None
    try:
        pki = api.server.pki
        cert_pem, key_pem = await asyncio.to_thread(
            issue_kubelet_serving_certificate, pki, [NODE_NAME, "localhost"], ["127.0.0.1"]
        )
        tls = data_dir / "kubelet-tls"
        tls.mkdir(mode=0o700)
        (tls / "serving.crt").write_bytes(cert_pem)
        (tls / "serving.key").write_bytes(key_pem)
        kubelet = KubeletServer(
            KubeletServerOptions(
                node_name=NODE_NAME,
                cert_path=tls / "serving.crt",
                key_path=tls / "serving.key",
                client_ca_path=pki.client_ca_cert_path,
                bind_address="127.0.0.1",
                port=0,
                cgroup_root=runtime_env.names.cgroup_root,
                housekeeping_interval_s=1.0,
            ),
            runtime_env.runtime.runtime,
        )
        await kubelet.start()
        await _register_node(client, kubelet.port)
        env = NodeEnv(runtime_env, api, kubelet, client, data_dir)
        yield env
    finally:
        if env is not None:
            rt = runtime_env.runtime.runtime
            for pod in env.pods:
                await rt.stop_pod_sandbox(pod.sandbox_id)
                await rt.remove_pod_sandbox(pod.sandbox_id)
        if kubelet is not None:
            await kubelet.stop()
        await client.close()
        await api.stop()


async def restart_container(env: NodeEnv, pod: RunningPod, name: str, command: list[str]) -> str:
    """What the pod workers do on a restart: the next attempt, in the same sandbox."""
    rt = env.runtime_env.runtime.runtime
    config = pb.ContainerConfig()
    config.CopyFrom(pod.container_configs[name])
    attempt = config.metadata.attempt + 1
    config.metadata.attempt = attempt
    config.log_path = f"{name}/{attempt}.log"
    del config.command[:]
    config.command.extend(command)
    container_id = await rt.create_container(pod.sandbox_id, config, pod.sandbox_config)
    await rt.start_container(container_id)
    previous_id = pod.container_ids[name]
    pod.container_configs[name] = config
    pod.container_ids[name] = container_id
    # ...and what they report: the new container running, the last one terminated.
    current = await env.client.get(PODS, pod.name, namespace="default")
    for status in current["status"]["containerStatuses"]:
        if status["name"] == name:
            status["containerID"] = f"containerd://{container_id}"
            status["restartCount"] = attempt
            status["lastState"] = {
                "terminated": {"exitCode": 0, "containerID": f"containerd://{previous_id}"}
            }
    await env.client.update_status(PODS, current)
    return container_id


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"
