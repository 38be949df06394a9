"""Startup benchmark: ``python -m bench.startup [--runs 5] [--pods 10] [--idle-s 60]``.

``sampan server`` as a user runs it (a real process, containerd as its child, a private cgroup
root via ``kubelet-arg``, a short /tmp data dir, the busybox test image in
``<data>/agent/images``), timed from the moment the process is spawned until

(a) ``/readyz`` answers ``ok`` (anonymous, as upstream allows), and
(b) the node is Ready with a heartbeat from this start (on a warm start the Node object and its
    old Ready condition are already there, so only a heartbeat at or after the start counts).

Each run: a cold start (empty data dir), SIGTERM, a warm start on the same data dir, SIGTERM,
``sampan killall``. Figures are medians over the runs. Then one more server runs ``--pods``
busybox pods; after ``--idle-s`` seconds idle, the RSS of the sampan process (containerd and
its shims not included; containerd's RSS is printed beside it).

Printed beside K3s's documented figures and our goals (issue 9).
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from tests.support.images import BUSYBOX_IMAGE, busybox_archive

DEFAULT_RUNS = 5
DEFAULT_PODS = 10
DEFAULT_IDLE_S = 60.0
READY_TIMEOUT_S = 120.0
POLL_INTERVAL_S = 0.05
STOP_TIMEOUT_S = 30.0
HTTP_TIMEOUT_S = 2.0

GOAL_API_READY_S = 2.0
GOAL_NODE_READY_WARM_S = 5.0
GOAL_RSS_MB = 150.0
K3S_BASELINE = (
    "K3s (documented): the server takes tens of seconds to settle after start; "
    "a server with a workload uses about 1.6 GB of memory"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _unverified_tls() -> ssl.SSLContext:
    """Loopback only, to a server whose CA this run just made: no need to verify it."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Server:
    """One ``sampan server`` process over one data dir (kept across restarts)."""

    def __init__(self, root: Path, image_cache: Path) -> None:
        self.root = root
        self.data = root / "d"
        self.config = root / "config.yaml"
        self.kubeconfig = root / "kubeconfig.yaml"
        self.log = root / "server.log"
        self.port = _free_port()
        self.cgroup_root = f"/sampan-bench-{os.getpid()}"
        self.proc: subprocess.Popen[bytes] | None = None
        self._ssl: ssl.SSLContext | None = None
        root.mkdir(parents=True, exist_ok=True)
        self.config.write_text(
            f"kubelet-arg:\n- cgroup-root={self.cgroup_root}\n"
            f"write-kubeconfig: {self.kubeconfig}\n"
            f"https-listen-port: {self.port}\n"
        )
        images = self.data / "agent" / "images"
        images.mkdir(parents=True)
        shutil.copy(busybox_archive(image_cache), images / "busybox.tar")

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SAMPAN_")}
        env["KUBECONFIG"] = str(self.kubeconfig)
        return env

    def start(self) -> float:
        """Spawn the server; returns the wall-clock start (for heartbeat comparisons)."""
        started = time.time()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sampan.cli.main",
                "server",
                "--config",
                str(self.config),
                "--data-dir",
                str(self.data),
            ],
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("a"),
            env=self.env(),
        )
        return started

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            # Heartbeats are stamped to the second: start the next run in a later second than
            # any heartbeat of this process, so an old Ready condition is never taken as new.
            time.sleep(1.0 - time.time() % 1.0)
        self.proc = None

    def killall(self) -> None:
        self.stop()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "sampan.cli.main",
                "killall",
                "--config",
                str(self.config),
                "--data-dir",
                str(self.data),
            ],
            capture_output=True,
            timeout=120,
            env=self.env(),
            check=False,
        )

    def tail(self) -> str:
        return "\n".join(self.log.read_text().splitlines()[-30:])

    # -- HTTP -------------------------------------------------------------------------------

    def _get(self, path: str, *, admin: bool) -> tuple[int, bytes]:
        context = self._admin_context() if admin else _unverified_tls()
        conn = http.client.HTTPSConnection(
            "127.0.0.1", self.port, context=context, timeout=HTTP_TIMEOUT_S
        )
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def _admin_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            config = yaml.safe_load(self.kubeconfig.read_text())
            user = config["users"][0]["user"]
            cert = self.root / "admin.crt"
            key = self.root / "admin.key"
            cert.write_bytes(base64.b64decode(user["client-certificate-data"]))
            key.write_bytes(base64.b64decode(user["client-key-data"]))
            key.chmod(0o600)
            context = _unverified_tls()
            context.load_cert_chain(cert, key)
            self._ssl = context
        return self._ssl

    def api_ready(self) -> bool:
        try:
            status, body = self._get("/readyz", admin=False)
        except (OSError, http.client.HTTPException):
            return False
        return status == 200 and body.strip() == b"ok"

    def node_ready_since(self, started: float) -> bool:
        if not self.kubeconfig.exists():
            return False
        try:
            status, body = self._get("/api/v1/nodes", admin=True)
        except (OSError, http.client.HTTPException, KeyError, ValueError):
            return False
        if status != 200:
            return False
        floor = datetime.fromtimestamp(int(started), UTC)
        for node in json.loads(body).get("items") or []:
            for cond in (node.get("status") or {}).get("conditions") or []:
                if cond.get("type") != "Ready" or cond.get("status") != "True":
                    continue
                beat = cond.get("lastHeartbeatTime") or ""
                try:
                    when = datetime.fromisoformat(beat.replace("Z", "+00:00"))
                except ValueError:
                    continue
                if when >= floor:
                    return True
        return False

    def wait(self, what: str, check: Any, started_mono: float) -> float:
        deadline = started_mono + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"the server exited while waiting for {what}\n{self.tail()}")
            if check():
                return time.monotonic() - started_mono
            time.sleep(POLL_INTERVAL_S)
        raise RuntimeError(f"timed out waiting for {what}\n{self.tail()}")

    def timed_start(self) -> tuple[float, float]:
        """(seconds to /readyz ok, seconds to node Ready) for one start."""
        mono = time.monotonic()
        started = self.start()
        api_s = self.wait("/readyz", self.api_ready, mono)
        node_s = self.wait("node Ready", lambda: self.node_ready_since(started), mono)
        return api_s, node_s

    def kubectl(self, *args: str, stdin: str | None = None) -> str:
        out = subprocess.run(
            ["kubectl", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            env=self.env(),
            check=False,
        )
        if out.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {out.stderr}")
        return out.stdout


def _pods_manifest(count: int) -> str:
    pods = []
    for i in range(count):
        pods.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": f"idle-{i}", "namespace": "default"},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [
                        {
                            "name": "sleep",
                            "image": BUSYBOX_IMAGE,
                            "imagePullPolicy": "IfNotPresent",
                            "command": ["sleep", "3600"],
                        }
                    ],
                },
            }
        )
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": pods})


def _containerd_rss_mb(server: Server) -> float:
    if server.proc is None:
        return 0.0
    children = Path(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children")
    total = 0.0
    for pid in children.read_text().split():
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == "containerd":
                total += _rss_mb(int(pid))
        except OSError:
            continue
    return total


def measure_rss(root: Path, cache: Path, pods: int, idle_s: float) -> tuple[float, float, int]:
    server = Server(root, cache)
    try:
        server.timed_start()
        mono = time.monotonic()

        def created() -> bool:
            try:  # the default ServiceAccount may not exist yet just after start
                server.kubectl("create", "--validate=false", "-f", "-", stdin=_pods_manifest(pods))
            except RuntimeError as exc:
                # kubectl tries every pod: a retry after a partial success only finds the
                # ones created before; done once nothing else failed.
                errors = [line for line in str(exc).splitlines() if "Error" in line]
                return bool(errors) and all("AlreadyExists" in line for line in errors)
            return True

        server.wait("the pods created", created, mono)

        def all_running() -> bool:
            out = json.loads(server.kubectl("get", "pods", "-n", "default", "-o", "json"))
            running = [p for p in out["items"] if (p.get("status") or {}).get("phase") == "Running"]
            return len(running) >= pods

        server.wait(f"{pods} pods Running", all_running, mono)
        time.sleep(idle_s)
        assert server.proc is not None
        running = sum(
            1
            for p in json.loads(server.kubectl("get", "pods", "-o", "json"))["items"]
            if (p.get("status") or {}).get("phase") == "Running"
        )
        return _rss_mb(server.proc.pid), _containerd_rss_mb(server), running
    finally:
        server.killall()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.startup", description=__doc__)
    parser.add_argument("--runs", type=int, default=DEFAULT_RUNS)
    parser.add_argument("--pods", type=int, default=DEFAULT_PODS)
    parser.add_argument("--idle-s", type=float, default=DEFAULT_IDLE_S)
    args = parser.parse_args(argv)
    if shutil.which("kubectl") is None:
        print("bench.startup: kubectl is needed (apt-get install kubernetes-client)")
        return 1
    base = Path(tempfile.mkdtemp(prefix="spb-", dir="/tmp"))  # short: containerd's socket path
    cache = base / "cache"
    cold: list[tuple[float, float]] = []
    warm: list[tuple[float, float]] = []
    try:
        for run in range(args.runs):
            server = Server(base / f"r{run}", cache)
            try:
                cold.append(server.timed_start())
                server.stop()
                warm.append(server.timed_start())
            finally:
                server.killall()
            print(
                f"run {run + 1}/{args.runs}: cold api {cold[-1][0]:.2f}s node {cold[-1][1]:.2f}s; "
                f"warm api {warm[-1][0]:.2f}s node {warm[-1][1]:.2f}s",
                flush=True,
            )
            shutil.rmtree(base / f"r{run}", ignore_errors=True)
        rss_mb, containerd_mb, running = measure_rss(base / "rss", cache, args.pods, args.idle_s)
    finally:
        shutil.rmtree(base, ignore_errors=True)

    def med(values: list[tuple[float, float]], i: int) -> float:
        return statistics.median(v[i] for v in values)

    print()
    print(f"sampan server startup (median of {args.runs}; {os.cpu_count()} CPUs)")
    print(f"  cold start: API ready {med(cold, 0):6.2f} s   node Ready {med(cold, 1):6.2f} s")
    print(f"  warm start: API ready {med(warm, 0):6.2f} s   node Ready {med(warm, 1):6.2f} s")
    print(
        f"  idle RSS after {args.idle_s:.0f} s with {running}/{args.pods} pods running: "
        f"sampan {rss_mb:.0f} MB (containerd {containerd_mb:.0f} MB, shims not counted)"
    )
    print(f"baseline: {K3S_BASELINE}")
    print(
        f"goals:    API ready < {GOAL_API_READY_S:.0f} s; node Ready < "
        f"{GOAL_NODE_READY_WARM_S:.0f} s warm; RSS < {GOAL_RSS_MB:.0f} MB"
    )
    met = (
        med(cold, 0) < GOAL_API_READY_S
        and med(warm, 0) < GOAL_API_READY_S
        and med(warm, 1) < GOAL_NODE_READY_WARM_S
        and rss_mb < GOAL_RSS_MB
    )
    print(f"goals met: {'yes' if met else 'no'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
