"""The manager's acceptance, as a new user runs it: server A with ``--manager`` in the host's
network namespace and an independent server B (``--cluster-name e2eb``, its own CIDRs) in a
network namespace of its own, joined to the host by a veth pair (``tests.support.netns``), so
that B and its cluster agent reach A only across that link.

Log in to A with the bootstrap password, change it, create cluster ``edge-1``, run its
registration command on B (the insecure form: ``curl --insecure ... | kubectl apply -f -``,
inside B's namespace); B's cluster agent runs from the image B built itself (no registry) and
dials A; ``edge-1`` becomes Connected and Ready with B's node count. With the kubeconfig of
``generateKubeconfig`` (server: A's proxy): ``kubectl get nodes`` lists B's node, ``kubectl
auth whoami`` names the manager user (B's API server saw it impersonated), ``kubectl apply``
of a Deployment and its rollout, ``kubectl logs -f`` shows a line the pod prints after the
follow started, ``kubectl exec -it`` on a real terminal (a pty) runs an interactive shell in the
pod, ``kubectl port-forward`` returns the page of an HTTP server in the pod. A second manager
user bound ``read-only`` on ``edge-1`` lists pods there, gets B's 403 ``Forbidden`` on a create,
does not see cluster ``local`` (not listed; its proxy path is 403). Killing the agent's pod
turns ``Connected`` false and the proxy answers 503 with a ``Status``; the Deployment's new pod
brings the cluster back (B's node is cordoned meanwhile, so the disconnection lasts long enough
to be observed). Deleting the Cluster removes the agent from B. Times are printed, never
asserted (generous waits guard against hangs only). Whole-node test: run it under the node
lock."""

from __future__ import annotations

import json
import os
import pty
import queue
import select
import shutil
import signal
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_single_node import KUBECTL, Cluster, free_port
from tests.e2e.test_two_clusters import B_CONFIG, NamedCluster
from tests.support.netns import veth_namespace

pytestmark = pytest.mark.slow

A_CONFIG = "service-node-port-range: 30000-30499\nmanager: true\n"
NEW_PASSWORD = "a new password for the e2e admin"
VIEWER_PASSWORD = "the viewer's own password"
WAIT_S = 180.0

_TAG = os.getpid() % 100000
B_NETNS = f"spmgr{_TAG}"
B_HOST_IF = f"spm{_TAG}h"
B_NS_IF = f"spm{_TAG}n"
B_HOST_IP = "10.250.83.1"
B_NS_IP = "10.250.83.2"

PAGE = "page-from-b"
SAID = b"said-after-the-follow-started"
HELLO_SCRIPT = (
    f"mkdir -p /www; echo {PAGE} > /www/index.html; httpd -p 8080 -h /www; echo started; "
    "while true; do if [ -f /tmp/say ]; then cat /tmp/say; rm -f /tmp/say; fi; sleep 0.2; done"
)
HELLO = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "hello", "namespace": "default"},
    "spec": {
        "replicas": 1,
        "selector": {"matchLabels": {"app": "hello"}},
        "template": {
            "metadata": {"labels": {"app": "hello"}},
            "spec": {
                "terminationGracePeriodSeconds": 1,
                "containers": [
                    {
                        "name": "hello",
                        "image": "busybox:1.36",
                        "command": ["sh", "-c", HELLO_SCRIPT],
                        "ports": [{"containerPort": 8080}],
                    }
                ],
            },
        },
    },
}


class Manager:
    """A's manager API over TLS, trusting A's CA as fetched from ``/cacerts``."""

    def __init__(self, url: str) -> None:
        self.url = url
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE
        with urllib.request.urlopen(url + "/cacerts", context=insecure, timeout=30) as answer:
            self.ca_pem = answer.read()
        self.context = ssl.create_default_context(cadata=self.ca_pem.decode())
        self.token = ""

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        request = urllib.request.Request(
            self.url + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, context=self.context, timeout=60) as answer:
                status, raw = answer.status, answer.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode(errors="replace")

    def login(self, username: str, password: str) -> dict[str, Any]:
        status, login = self.call(
            "POST",
            "/v3-public/localProviders/local?action=login",
            {"username": username, "password": password},
        )
        assert status == 201, login
        self.token = login["token"]
        return login

    def kubeconfig(self, cluster_id: str, path: Path) -> Path:
        status, generated = self.call(
            "POST", f"/v3/clusters/{cluster_id}?action=generateKubeconfig"
        )
        assert status == 200, generated
        path.write_text(generated["config"])
        return path


def _stop(c: Cluster) -> None:
    if c.proc is not None and c.proc.poll() is None:
        c.proc.send_signal(signal.SIGTERM)
        try:
            c.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            c.proc.kill()


@pytest.fixture
def clusters() -> Iterator[tuple[Cluster, NamedCluster, int]]:
    if KUBECTL is None:
        pytest.fail("kubectl is not installed")
    with veth_namespace(B_NETNS, B_HOST_IF, B_NS_IF, B_HOST_IP, B_NS_IP) as namespace:
        a = Cluster(Path(tempfile.mkdtemp(prefix="spma-", dir="/tmp")))
        a.cgroup_root = f"/sampan-e2e-{os.getpid()}-a"
        manager_port = free_port()
        a.extra_config = A_CONFIG + f"manager-port: {manager_port}\n"
        b = NamedCluster(
            Path(tempfile.mkdtemp(prefix="spmb-", dir="/tmp")),
            B_CONFIG + f"node-ip:\n- {B_NS_IP}\n",
        )
        b.prefix = namespace.prefix
        try:
            a.start()
            b.start()
            yield a, b, manager_port
        finally:
            for c in (b, a):
                _stop(c)
                c.sampan("killall", "--config", str(c.config), "--data-dir", str(c.data))
                shutil.rmtree(c.root, ignore_errors=True)


def _node(c: Cluster) -> dict[str, Any]:
    items = json.loads(c.kubectl("get", "nodes", "-o", "json", check=False) or "{}").get("items")
    return items[0] if items else {}


def _ready(c: Cluster) -> bool:
    conditions = _node(c).get("status", {}).get("conditions", [])
    return any(x["type"] == "Ready" and x["status"] == "True" for x in conditions)


def _condition(view: dict[str, Any], kind: str) -> str:
    for condition in view.get("conditions") or []:
        if condition["type"] == kind:
            return str(condition["status"])
    return ""


def _timed(what: str, c: Cluster, check: Callable[[], Any], timeout_s: float = WAIT_S) -> Any:
    start = time.monotonic()
    result = c.wait(what, check, timeout_s)
    print(f"{what}: {time.monotonic() - start:.1f} s")
    return result


def test_import_a_cluster_and_use_it_through_the_manager(
    clusters: tuple[Cluster, NamedCluster, int],
) -> None:
    a, b, manager_port = clusters
    started = time.monotonic()
    a.wait("A's node Ready", lambda: _ready(a))
    b.wait("B's node Ready", lambda: _ready(b))
    # B built and imported the cluster agent image itself (no registry anywhere).
    b.wait(
        "B's cluster agent image",
        lambda: "sampan-cluster-agent.tar" in b.log.read_text(),
        WAIT_S,
    )
    print(f"both servers ready: {time.monotonic() - started:.1f} s")
    address = next(
        x["address"] for x in _node(a)["status"]["addresses"] if x["type"] == "InternalIP"
    )
    url = f"https://{address}:{manager_port}"
    manager = a.wait("A's manager", lambda: _try(lambda: Manager(url)))

    # Log in with the bootstrap password (from its file), change it, log in again.
    password = (a.data / "server" / "manager" / "bootstrap-password").read_text().strip()
    login = manager.login("admin", password)
    assert login["mustChangePassword"] is True, login
    status, body = manager.call(
        "POST",
        "/v3/users?action=changepassword",
        {"currentPassword": password, "newPassword": NEW_PASSWORD},
    )
    assert status == 200, body
    login = manager.login("admin", NEW_PASSWORD)
    admin_id = login["userId"]

    # Create edge-1 and run its registration command on B (inside B's network namespace: the
    # manifest is fetched from A's manager across the veth, as the agent then dials it).
    status, created = manager.call("POST", "/v3/clusters", {"name": "edge-1"})
    assert status == 201, created
    cluster_id = created["id"]
    command = created["registration"]["insecureCommand"]
    start = time.monotonic()
    applied = subprocess.run(
        [*b.prefix, "bash", "-o", "pipefail", "-c", command],
        capture_output=True,
        text=True,
        timeout=120,
        env=b.env(),
    )
    assert applied.returncode == 0, applied.stderr
    assert "deployment.apps/sampan-cluster-agent created" in applied.stdout

    def connected_and_ready() -> dict[str, Any] | None:
        _, view = manager.call("GET", f"/v3/clusters/{cluster_id}")
        ok = _condition(view, "Connected") == "True" and _condition(view, "Ready") == "True"
        return view if ok and view.get("nodeCount") else None

    try:
        view = b.wait("edge-1 Connected and Ready", connected_and_ready, WAIT_S)
    except AssertionError:
        print(b.kubectl("-n", "sampan-system", "get", "all,secrets", "-o", "wide", check=False))
        print(b.kubectl("-n", "sampan-system", "describe", "pods", check=False))
        print(b.kubectl("-n", "sampan-system", "logs", "deploy/sampan-cluster-agent", check=False))
        raise
    print(f"edge-1 Connected and Ready after the apply: {time.monotonic() - start:.1f} s")
    nodes = json.loads(b.kubectl("get", "nodes", "-o", "json"))["items"]
    b_node = nodes[0]["metadata"]["name"]
    b_addresses = [x["address"] for x in nodes[0]["status"]["addresses"]]
    assert B_NS_IP in b_addresses and address not in b_addresses  # B is across the veth
    assert view["nodeCount"] == len(nodes)
    assert view["version"].startswith("v1.32")
    assert view["agentVersion"]

    # Through A with the generated kubeconfig: B's nodes, a Deployment, its logs (followed),
    # an interactive exec, a port-forward; B's API server sees the manager user.
    admin_kubeconfig = manager.kubeconfig(cluster_id, a.root / "edge-1.kubeconfig")
    assert through(admin_kubeconfig, "get", "nodes", "-o", "name").strip() == f"node/{b_node}"
    whoami = ("auth", "whoami", "-o", "jsonpath={.status.userInfo.username}")
    assert through(admin_kubeconfig, *whoami) == admin_id
    deployment = a.root / "hello.json"
    deployment.write_text(json.dumps(HELLO))
    assert "deployment.apps/hello created" in through(
        admin_kubeconfig, "apply", "-f", str(deployment)
    )
    step = time.monotonic()
    through(admin_kubeconfig, "rollout", "status", "deployment/hello", "--timeout=150s")
    print(f"Deployment rolled out through A: {time.monotonic() - step:.1f} s")
    pod = json.loads(through(admin_kubeconfig, "get", "pods", "-l", "app=hello", "-o", "json"))
    pod_name = next(
        p["metadata"]["name"] for p in pod["items"] if not p["metadata"].get("deletionTimestamp")
    )

    step = time.monotonic()
    follow = Lines([*_kubectl(admin_kubeconfig), "logs", "-f", f"pod/{pod_name}"])
    try:
        follow.wait_for(lambda line: line == "started", "the pod's first line via logs -f")
        # An interactive shell on a real terminal: its input is evaluated in the pod (the
        # terminal's local echo cannot print "sum=42"), and it makes the pod print a line
        # after the follow started.
        text, code = exec_tty(
            admin_kubeconfig,
            f"pod/{pod_name}",
            b"echo host=$(hostname) tty=$(tty) sum=$((6*7)); echo " + SAID + b" > /tmp/say; exit\n",
        )
        assert code == 0, text
        assert f"host={pod_name}" in text and "tty=/dev/pts/" in text and "sum=42" in text, text
        follow.wait_for(lambda line: line == SAID.decode(), "the line printed after the follow")
    finally:
        follow.stop()
    print(f"logs -f and exec -it through A: {time.monotonic() - step:.1f} s")

    forward = Lines([*_kubectl(admin_kubeconfig), "port-forward", f"pod/{pod_name}", ":8080"])
    try:
        line = forward.wait_for(
            lambda line: line.startswith("Forwarding from 127.0.0.1:"), "port-forward's port"
        )
        local_port = int(line.split("127.0.0.1:", 1)[1].split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{local_port}/", timeout=60) as answer:
            assert answer.read().decode().strip() == PAGE
    finally:
        forward.stop()

    # A second user, read-only on edge-1: lists pods there, is refused a create by B's RBAC,
    # and does not see cluster local at all.
    status, viewer = manager.call(
        "POST",
        "/v3/users",
        {"username": "viewer", "password": VIEWER_PASSWORD, "mustChangePassword": False},
    )
    assert status == 201, viewer
    status, binding = manager.call(
        "POST",
        "/v3/clusterroletemplatebindings",
        {"userId": viewer["id"], "clusterId": cluster_id, "roleTemplateId": "read-only"},
    )
    assert status == 201, binding
    as_viewer = Manager(url)
    as_viewer.login("viewer", VIEWER_PASSWORD)
    status, listed = as_viewer.call("GET", "/v3/clusters")
    assert status == 200 and [c["id"] for c in listed["data"]] == [cluster_id], listed
    status, body = as_viewer.call("GET", "/k8s/clusters/local/api/v1/namespaces")
    assert status == 403 and body["kind"] == "Status" and body["code"] == 403, body
    viewer_kubeconfig = as_viewer.kubeconfig(cluster_id, a.root / "viewer.kubeconfig")
    assert through(viewer_kubeconfig, *whoami) == viewer["id"]

    def viewer_lists_pods() -> str:
        done = subprocess.run(
            [*_kubectl(viewer_kubeconfig), "get", "pods", "-o", "name"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        return done.stdout if done.returncode == 0 else ""

    assert f"pod/{pod_name}" in b.wait("the viewer to list pods on edge-1", viewer_lists_pods)
    refused = subprocess.run(
        [*_kubectl(viewer_kubeconfig), "create", "configmap", "nope"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode != 0
    assert f'User "{viewer["id"]}" cannot create resource "configmaps"' in refused.stderr, (
        refused.stderr
    )
    status, body = as_viewer.call(
        "POST",
        f"/k8s/clusters/{cluster_id}/api/v1/namespaces/default/configmaps",
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "nope"}},
    )
    assert status == 403 and body["kind"] == "Status" and body["reason"] == "Forbidden", body

    # The agent's pod is killed. B's node is cordoned first so that its replacement (the
    # Deployment makes one at once) stays Pending while the disconnection is observed.
    b.kubectl("cordon", b_node)
    old_pod = b.kubectl("-n", "sampan-system", "get", "pods", "-o", "name").strip()
    step = time.monotonic()
    b.kubectl("-n", "sampan-system", "delete", old_pod)  # returns once the pod is gone

    def disconnected() -> bool:
        _, view = manager.call("GET", f"/v3/clusters/{cluster_id}")
        return _condition(view, "Connected") == "False"

    b.wait("edge-1 Connected false", disconnected)
    print(
        f"edge-1 Connected false after the agent's pod was killed: {time.monotonic() - step:.1f} s"
    )
    status, body = manager.call("GET", f"/k8s/clusters/{cluster_id}/api/v1/nodes")
    assert status == 503, body
    assert body["kind"] == "Status" and body["code"] == 503, body

    def replaced() -> list[str]:
        pods = b.kubectl("-n", "sampan-system", "get", "pods", "-o", "name").split()
        return [p for p in pods if p != old_pod]

    assert b.wait("the Deployment's new agent pod", replaced)
    b.kubectl("uncordon", b_node)
    _timed("edge-1 back with the new agent pod", b, connected_and_ready)
    assert through(admin_kubeconfig, "get", "nodes", "-o", "name").strip() == f"node/{b_node}"

    # Deleting the Cluster removes the agent from B.
    status, body = manager.call("DELETE", f"/v3/clusters/{cluster_id}")
    assert status == 200 and body["agentRemoved"] is True, body
    _timed(
        "namespace sampan-system gone from B",
        b,
        lambda: "NotFound" in _kubectl_err(b, "get", "namespace", "sampan-system"),
    )
    print(f"whole test: {time.monotonic() - started:.1f} s")


def _kubectl(kubeconfig: Path) -> list[str]:
    assert KUBECTL is not None
    return [KUBECTL, "--kubeconfig", str(kubeconfig)]


def through(kubeconfig: Path, *args: str) -> str:
    """kubectl with a kubeconfig of the manager's proxy (from the host's network namespace)."""
    done = subprocess.run(
        [*_kubectl(kubeconfig), *args], capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr}"
    return done.stdout


class Lines:
    """A long-running command whose stdout lines are read as they come."""

    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_for(self, match: Callable[[str], bool], what: str, timeout_s: float = WAIT_S) -> str:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"timed out waiting for {what}: {self.seen}") from None
            if line is None:
                raise AssertionError(f"the command ended before {what}: {self.seen}")
            self.seen.append(line)
            if match(line):
                return line

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def exec_tty(kubeconfig: Path, target: str, typed: bytes) -> tuple[str, int]:
    """``kubectl exec -it TARGET -- sh`` on a real terminal (a pty), ``typed`` as its input;
    returns what the terminal showed and kubectl's exit code."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [*_kubectl(kubeconfig), "exec", "-it", target, "--", "sh"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
    )
    os.close(slave)
    shown = bytearray()
    try:
        os.write(master, typed)
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if ready:
                try:
                    data = os.read(master, 4096)
                except OSError:  # EIO: kubectl closed the terminal
                    break
                if not data:
                    break
                shown += data
            elif proc.poll() is not None:
                break
        else:
            proc.kill()
        code = proc.wait(timeout=30)
    finally:
        os.close(master)
    return shown.decode(errors="replace"), code


def _kubectl_err(c: Cluster, *args: str) -> str:
    assert KUBECTL is not None
    out = subprocess.run(
        [*c.prefix, KUBECTL, *args], capture_output=True, text=True, timeout=60, env=c.env()
    )
    return out.stderr


def _try(make: Callable[[], Any]) -> Any:
    try:
        return make()
    except (OSError, urllib.error.URLError):
        return None
