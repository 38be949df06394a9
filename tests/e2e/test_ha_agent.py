"""An agent rides out the death of its server (issue #20's HA acceptance on embedded etcd):
three ``--disable-agent`` servers joined through embedded etcd, each on its own address of the
host side of the agent's veth and all on one HTTPS port (the ``kubernetes`` Endpoints carries
one port for every server, as upstream), an agent in a network namespace joined through the
first server, a busybox pod running on it. SIGKILL of the first server and of its etcd (the
two survivors keep etcd's quorum): seen through a survivor, the pod stays Running with the
same container (never restarted), the agent's Node stays Ready (the longest non-Ready stretch,
polled every 2 s for 60 s, is under the node monitor grace period of 40 s), and the kubelet's
Lease is renewed again after the kill, through a survivor."""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import pytest

from sampan.client import ApiError, Client, ClientConfig, TransportError
from sampan.client.api import LEASES, NODES, PODS
from tests.e2e.test_join import HOST_IF, Agent, ip, netns  # noqa: F401 (fixture)
from tests.supervisor.test_etcd import _etcd_ports
from tests.supervisor.test_server_process import free_port
from tests.support.images import busybox_archive

pytestmark = [pytest.mark.etcd, pytest.mark.slow]

# Host-side addresses of the agent's veth (reachable from its namespace over its default
# route); one server on each.
ADDRESSES = ("10.250.79.1", "10.250.79.2", "10.250.79.3")
READY_TIMEOUT_S = 240.0
POLL_INTERVAL_S = 2.0
WATCH_AFTER_KILL_S = 60.0
NODE_MONITOR_GRACE_PERIOD_S = 40.0
AGENT = "agent1"
_LOCAL_ROUTE = ("route", "replace", "table", "local", "local")
POD = "steady"


def _start_server(root: Path, address: str, port: int, *extra: str) -> subprocess.Popen[str]:
    root.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAMPAN_")}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sampan.cli.main",
            "server",
            "--config",
            os.devnull,
            "--data-dir",
            str(root / "data"),
            "--https-listen-port",
            str(port),
            "--write-kubeconfig",
            str(root / "kubeconfig.yaml"),
            "--disable-agent",
            "--bind-address",
            address,
            "--node-ip",
            address,
            "--advertise-address",
            address,
            "--node-name",
            f"server-{address.rsplit('.', 1)[1]}",
            *_etcd_ports(),
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=(root / "server.log").open("w"),
        text=True,
        env=env,
    )


def _wait(what: str, check, timeout_s: float = READY_TIMEOUT_S, procs=()):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        for proc, log in procs:
            if proc.poll() is not None:
                pytest.fail(f"{what}: a process exited {proc.returncode}:\n{log()[-4000:]}")
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}")


def _ready(node: dict) -> bool:
    conditions = (node.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _microtime(value: str) -> float:
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _container(pod: dict) -> tuple[str, int, str]:
    statuses = (pod.get("status") or {}).get("containerStatuses") or [{}]
    status = statuses[0]
    started = ((status.get("state") or {}).get("running") or {}).get("startedAt", "")
    return status.get("containerID", ""), status.get("restartCount", -1), started


async def _get(config: ClientConfig, resource, name: str, namespace: str | None = None):
    async with Client(config) as client:
        return await client.get(resource, name, namespace=namespace)


def test_agent_stays_ready_and_its_pod_runs_when_its_server_is_killed(
    tmp_path: Path,
    netns: str,  # noqa: F811
) -> None:
    for address in ADDRESSES:
        ip("addr", "add", f"{address}/32", "dev", HOST_IF)
        # On separate machines a server dials a peer's etcd from its own address, which its
        # etcd peer certificate carries; on one host the kernel would pick the peer's address
        # as the source (etcd refuses: not in the dialer's certificate). Loopback, in every
        # certificate, is the source here, as for the 127.0.0.x servers of the writer test.
        ip(*_LOCAL_ROUTE, address, "dev", HOST_IF, "scope", "host", "src", "127.0.0.1")
    port = free_port()
    roots = [tmp_path / f"s{i}" for i in range(3)]
    logs = [r / "server.log" for r in roots]
    procs: list[subprocess.Popen[str]] = []
    agent_root = Path(tempfile.mkdtemp(prefix="sph-", dir="/tmp"))
    agent: Agent | None = None
    try:
        procs.append(_start_server(roots[0], ADDRESSES[0], port, "--cluster-init"))
        text = _wait(
            "the first server",
            lambda: "all components ready" in logs[0].read_text() and logs[0].read_text(),
            procs=[(procs[0], logs[0].read_text)],
        )
        etcd_pid = int(re.findall(r"started etcd \(pid (\d+)\)", text)[-1])
        token = (roots[0] / "data" / "server" / "token").read_text().strip()
        first_url = f"https://{ADDRESSES[0]}:{port}"
        for i in (1, 2):
            # One join at a time: etcd promotes a learner before the next member add.
            procs.append(
                _start_server(roots[i], ADDRESSES[i], port, "--server", first_url, "--token", token)
            )
            _wait(
                f"server {ADDRESSES[i]}",
                lambda i=i: "all components ready" in logs[i].read_text(),
                procs=[(procs[i], logs[i].read_text)],
            )

        base = ClientConfig.from_kubeconfig(roots[1] / "kubeconfig.yaml")
        configs = [replace(base, server=f"https://{a}:{port}") for a in ADDRESSES]
        survivor = configs[1]

        images = agent_root / "d" / "agent" / "images"
        images.mkdir(parents=True)
        shutil.copy(busybox_archive(tmp_path / "cache"), images / "busybox.tar")
        agent = Agent(agent_root, AGENT, first_url, token)
        agent_procs = [(agent.proc, agent.log.read_text)]

        def node_ready() -> bool:
            try:
                return _ready(asyncio.run(_get(configs[0], NODES, AGENT)))
            except (ApiError, TransportError):
                return False

        _wait("the agent's node Ready", node_ready, procs=agent_procs)
        # The agent's load balancer learned every server from the Endpoints.
        state_files = agent_root / "d" / "agent" / "etc"
        wanted = {f"{a}:{port}" for a in ADDRESSES}

        def balancer_knows_all() -> bool:
            for path in state_files.glob("*load-balancer.json"):
                if wanted <= set(json.loads(path.read_text()).get("servers", [])):
                    return True
            return False

        _wait("the agent's balancer to know the three servers", balancer_knows_all)

        manifest = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": POD, "namespace": "default"},
            "spec": {
                "nodeSelector": {"kubernetes.io/hostname": AGENT},
                "terminationGracePeriodSeconds": 1,
                "containers": [
                    {"name": "c", "image": "busybox:1.36", "command": ["sleep", "3600"]}
                ],
            },
        }

        async def create_pod() -> bool:
            async with Client(configs[0]) as client:
                try:
                    await client.create(PODS, manifest, namespace="default")
                except ApiError as exc:
                    # The default ServiceAccount may not exist yet: the admission refuses.
                    return exc.code == 409
                except TransportError:
                    return False
            return True

        _wait("the pod's creation", lambda: asyncio.run(create_pod()))

        def pod_running() -> dict | None:
            pod = asyncio.run(_get(configs[0], PODS, POD, "default"))
            phase = (pod.get("status") or {}).get("phase")
            return pod if phase == "Running" and _container(pod)[0] else None

        before = _container(_wait("the pod Running", pod_running, procs=agent_procs))

        async def watch_after_kill() -> dict:
            longest, stretch_start = 0.0, None
            failed_polls = 0
            containers = set()
            phases = set()
            renewed_after_kill = None
            async with Client(survivor) as client:
                os.kill(etcd_pid, signal.SIGKILL)
                procs[0].send_signal(signal.SIGKILL)
                killed_wall, killed = time.time(), time.monotonic()
                while time.monotonic() - killed < WATCH_AFTER_KILL_S:
                    now = time.monotonic()
                    try:
                        node = await client.get(NODES, AGENT)
                        pod = await client.get(PODS, POD, namespace="default")
                        lease = await client.get(LEASES, AGENT, namespace="kube-node-lease")
                    except (ApiError, TransportError):
                        failed_polls += 1  # etcd electing a leader: no observation
                    else:
                        if _ready(node):
                            stretch_start = None
                        else:
                            stretch_start = stretch_start if stretch_start is not None else now
                            longest = max(longest, now - stretch_start)
                        containers.add(_container(pod))
                        phases.add((pod.get("status") or {}).get("phase"))
                        renew = (lease.get("spec") or {}).get("renewTime")
                        if renewed_after_kill is None and renew and _microtime(renew) > killed_wall:
                            renewed_after_kill = now - killed
                    await asyncio.sleep(POLL_INTERVAL_S)
            return {
                "longest_not_ready_s": longest,
                "failed_polls": failed_polls,
                "containers": containers,
                "phases": phases,
                "lease_renewed_after_s": renewed_after_kill,
                "killed_at": datetime.datetime.fromtimestamp(killed_wall, datetime.UTC).isoformat(),
            }

        seen = asyncio.run(watch_after_kill())
        procs[0].wait(timeout=30)
        # Reported: the figures of the run.
        print(
            f"longest NotReady stretch {seen['longest_not_ready_s']:.1f}s, "
            f"first Lease renewal {seen['lease_renewed_after_s']}s after the kill, "
            f"{seen['failed_polls']} failed polls; killed at {seen['killed_at']}"
        )
        agent_log = agent.log.read_text()
        print("\n".join(line for line in agent_log.splitlines() if "; using " in line))
        assert re.search(
            rf"{re.escape(ADDRESSES[0])}:{port} (is unhealthy|cannot be reached|failed)", agent_log
        ), agent_log[-3000:]
        assert seen["phases"] == {"Running"}, seen
        assert seen["containers"] == {before}, (before, seen)
        assert seen["longest_not_ready_s"] < NODE_MONITOR_GRACE_PERIOD_S, seen
        assert seen["lease_renewed_after_s"] is not None, agent_log[-3000:]
        assert agent.proc.poll() is None
        final = asyncio.run(_get(survivor, NODES, AGENT))
        assert _ready(final), final.get("status")
    except BaseException:
        if agent is not None:
            print("--- agent log ---\n" + "\n".join(agent.log.read_text().splitlines()[-60:]))
        for log in logs[1:]:
            if log.exists():
                print(f"--- {log} ---\n" + "\n".join(log.read_text().splitlines()[-30:]))
        raise
    finally:
        if agent is not None:
            agent.stop()
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(agent_root, ignore_errors=True)
