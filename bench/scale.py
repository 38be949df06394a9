"""Scale benchmark: ``python -m bench.scale [--nodes 200] [--pods 2000] [--report PATH]``.

The issue's target is ``--nodes 5000 --pods 150000`` on a quiet machine; the defaults finish
in a few minutes on a shared one (``--nodes 500 --pods 10000`` would take about half an hour
there at the ramp rate seen).
What runs, each in its own process:

* ``sampan server --disable-agent`` on a temp data dir (SQLite), so the real controllers and
  scheduler do the work; cluster CIDR 10.128.0.0/9 so 5,000 nodes get a /24 each; packaged
  add-ons disabled (their pods would only add noise, and metrics-server would scrape
  kubelets that do not exist); the scheduler's and controller manager's leader election off
  (one server needs none; on an overloaded machine a Lease renewal that misses its 10 s
  deadline ends the component's term and it competes again, which stalls the ramp for a
  lease duration; ``--leader-elect`` keeps it on to see that);
* ``sampan simulate --nodes N`` (KWOK's model: leases, pods marked Running with IPs);
* this process: creates ``pods/100`` Deployments of 100 replicas (fewer for a remainder) over
  ``--namespaces`` namespaces, watches the pods, and measures.

Figures, each printed beside its SLO or the issue's goal (for 5,000 nodes/150,000 pods):

* ramp (clusterloader2's "saturation" phase): time from the first Deployment create to all
  pods Running and Ready (seen through a watch), pods/s, and pod startup p50/p99 (first seen
  by the watch -> seen Running and Ready). Every pod is created at once, so a pod's startup
  here is mostly its wait behind the ones before it: this shows throughput, not the SLO;
  the server's CPU seconds in the ramp per pod (``/proc/<pid>/stat``; on a shared machine the
  figure that moves least with the load) and the API requests it took per pod, by verb and
  resource (``apiserver_request_total`` from ``/metrics`` before and after);
* latency phase (what upstream's pod startup SLO is measured on, as clusterloader2's density
  test does after saturation): ``--latency-pods`` (default 100) Deployments of one replica,
  created at ``--latency-rate`` (default 5/s) while the cluster holds the ramp's pods and the
  simulator's heartbeats go on; pod startup p50/p99 from the pod first seen by the watch (the
  SLO counts from its creation timestamp, which has one-second resolution) and from the
  Deployment's create call (which adds the two controllers' latency) to Running and Ready;
* mutating calls during the ramp: a probe client creates and updates ConfigMaps at a fixed
  ``--probe-rate`` (default 5/s), p50/p99 of each call;
* reads after the ramp: LIST of all pods with ``resourceVersion=0`` (served from the watch
  cache) and with it unset (a consistent read), LIST of one namespace, GET of one pod — p50
  and p99, timed to the last byte of the body (no client-side JSON decoding);
* watch delivery: 100 watchers of one namespace's ConfigMaps, 20 updates at 5/s; delivery
  latency = arrival at each watcher - the moment the update was sent, p50/p99;
* the watch cache's bytes per pod (``apiserver_watch_cache_bytes{resource="pods"}`` over
  ``apiserver_storage_objects{resource="pods"}`` from ``/metrics``) beside a pod's JSON size
  (the LIST of all pods' body over the same count), and their ratio (issue 23: "near the JSON
  size");
* memory and disk at the end: the server's VmRSS (``/proc/<pid>/status``) and the simulator's,
  the datastore's size (``<data>/server/db``), both also per pod;
* restart: SIGTERM the server, start it again on the same data dir; seconds until
  ``/readyz`` answers ok, and until a LIST of all pods (``resourceVersion=0``) has them all.

The machine (cores, load average before and after) goes into the JSON report, because these
figures mean little on a loaded machine. No root needed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from sampan.client import Client, ClientConfig, ClientError, Informer
from sampan.client.api import CONFIGMAPS, DEPLOYMENTS, NAMESPACES, PODS
from sampan.simulate.objects import slim_pod

READY_TIMEOUT_S = 180.0
REPLICAS_PER_DEPLOYMENT = 100
CREATE_CONCURRENCY = 8
WATCHERS = 100
WATCH_EVENTS = 20
WATCH_EVENT_INTERVAL_S = 0.2
LIST_ALL_RUNS = 5
LIST_NS_RUNS = 20
GET_RUNS = 100
CLUSTER_CIDR = "10.128.0.0/9"
LABEL = "bench.sampan.io/scale"
LATENCY_LABEL = "bench.sampan.io/latency"
LATENCY_NAMESPACE = "scale-latency"

# Upstream's SLOs and the goals (both for 5,000 nodes / 150,000 pods).
GOALS = {
    "latency_pod_startup_p99_s": ("<= 5 s (SLO)", 5.0),
    "mutating_p99_s": ("<= 1 s", 1.0),
    "list_all_rv0_p99_s": ("<= 5 s (SLO 30 s)", 5.0),
    "list_all_consistent_p99_s": ("<= 5 s (SLO 30 s)", 5.0),
    "list_namespace_p99_s": ("<= 0.2 s (SLO 1 s)", 0.2),
    "get_pod_p99_s": ("<= 1 s", 1.0),
    "watch_delivery_p99_s": ("<= 0.1 s (goal for 1,000 watchers)", 0.1),
    "server_rss_mb": ("<= 4096 MB", 4096.0),
    "restart_readyz_s": ("<= 60 s", 60.0),
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (``/proc/<pid>/stat``)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


class Processes:
    """The server and simulator child processes, their logs in the work dir."""

    def __init__(self, workdir: Path, nodes: int, leader_elect: bool) -> None:
        self.workdir = workdir
        self.nodes = nodes
        self.leader_args = (
            []
            if leader_elect
            else [
                "--kube-scheduler-arg",
                "leader-elect=false",
                "--kube-controller-manager-arg",
                "leader-elect=false",
            ]
        )
        self.port = _free_port()
        self.kubeconfig = workdir / "kubeconfig.yaml"
        self.server: subprocess.Popen[bytes] | None = None
        self.simulator: subprocess.Popen[bytes] | None = None
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SAMPAN_")}

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = (self.workdir / f"{name}.log").open("ab")
        return subprocess.Popen(
            [sys.executable, "-m", "sampan.cli.main", *argv],
            stdout=subprocess.DEVNULL,
            stderr=log,
            env=self.env,
        )

    def start_server(self) -> None:
        self.server = self._spawn(
            "server",
            [
                "server",
                "--config",
                os.devnull,
                "--data-dir",
                str(self.workdir / "data"),
                "--https-listen-port",
                str(self.port),
                "--bind-address",
                "127.0.0.1",
                "--write-kubeconfig",
                str(self.kubeconfig),
                "--disable-agent",
                "--disable",
                "coredns,ingress,local-storage,metrics-server",
                "--cluster-cidr",
                CLUSTER_CIDR,
                *self.leader_args,
            ],
        )

    async def wait_readyz(self) -> float:
        """Seconds from now until ``/readyz`` answers ok."""
        assert self.server is not None
        start = time.monotonic()
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        url = f"https://127.0.0.1:{self.port}/readyz"
        async with aiohttp.ClientSession() as session:
            while time.monotonic() - start < READY_TIMEOUT_S:
                if self.server.poll() is not None:
                    raise SystemExit(f"sampan server exited; see {self.workdir / 'server.log'}")
                try:
                    async with session.get(url, ssl=context, timeout=aiohttp.ClientTimeout(2)) as r:
                        if r.status == 200 and (await r.text()).strip() == "ok":
                            return time.monotonic() - start
                except (aiohttp.ClientError, TimeoutError):
                    pass
                await asyncio.sleep(0.05)
        raise SystemExit("sampan server did not become ready")

    async def start_simulator(self) -> None:
        self.simulator = self._spawn(
            "simulator",
            ["simulate", "--nodes", str(self.nodes), "--kubeconfig", str(self.kubeconfig)],
        )
        log = self.workdir / "simulator.log"
        deadline = time.monotonic() + READY_TIMEOUT_S + self.nodes / 10
        while "simulating" not in log.read_text():
            if self.simulator.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("sampan simulate did not start:\n" + log.read_text()[-3000:])
            await asyncio.sleep(0.2)

    def stop_server(self) -> None:
        if self.server is not None and self.server.poll() is None:
            self.server.send_signal(signal.SIGTERM)
            try:
                self.server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.server.kill()
                self.server.wait()

    def stop(self) -> None:
        for proc in (self.simulator, self.server):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in (self.simulator, self.server):
            if proc is not None:
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()


def _raw_session(config: ClientConfig, workdir: Path) -> aiohttp.ClientSession:
    """An aiohttp session with the admin's client certificate, to time bodies as bytes."""
    context = ssl.create_default_context(cadata=(config.ca_pem or b"").decode() or None)
    cert, key = workdir / "admin.crt", workdir / "admin.key"
    for path, data in ((cert, config.client_cert_pem), (key, config.client_key_pem)):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data or b"")
    context.load_cert_chain(cert, key)
    return aiohttp.ClientSession(
        base_url=config.server,
        connector=aiohttp.TCPConnector(ssl=context, limit=WATCHERS + 10),
        timeout=aiohttp.ClientTimeout(total=600),
    )


async def _request_counts(raw: aiohttp.ClientSession) -> dict[str, float]:
    """``apiserver_request_total`` from the server's ``/metrics``, summed over codes, keyed
    ``VERB resource[/subresource]``."""
    async with raw.get("/metrics") as resp:
        text = await resp.text()
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels_text, _, value = line[len("apiserver_request_total{") :].rpartition("} ")
        labels = dict(
            part.split("=", 1) for part in labels_text.replace('"', "").split(",") if "=" in part
        )
        key = f"{labels.get('verb', '')} {labels.get('resource', '')}"
        if labels.get("subresource"):
            key += "/" + labels["subresource"]
        counts[key] = counts.get(key, 0.0) + float(value)
    return counts


async def _pod_gauges(raw: aiohttp.ClientSession) -> dict[str, float]:
    """The ``{resource="pods"}`` samples of the server's storage gauges, by metric name."""
    async with raw.get("/metrics") as resp:
        text = await resp.text()
    gauges: dict[str, float] = {}
    for name in ("apiserver_storage_objects", "apiserver_watch_cache_bytes"):
        prefix = name + '{resource="pods"} '
        for line in text.splitlines():
            if line.startswith(prefix):
                gauges[name] = float(line[len(prefix) :])
    return gauges


def _deployment(name: str, namespace: str, replicas: int, label: str = LABEL) -> dict[str, Any]:
    labels = {"app": name, label: "1"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": "registry.k8s.io/pause:3.10",
                            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
                        }
                    ]
                },
            },
        },
    }


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.procs = Processes(workdir, args.nodes, args.leader_elect)
        self.figures: dict[str, Any] = {}

    def note(self, key: str, value: Any) -> None:
        self.figures[key] = value
        print(
            f"  {key:<30} {value:.3f}" if isinstance(value, float) else f"  {key:<30} {value}",
            flush=True,
        )

    async def run(self) -> dict[str, Any]:
        args = self.args
        load_before = _loadavg()
        self.procs.start_server()
        self.note("server_start_readyz_s", await self.procs.wait_readyz())
        config = ClientConfig.from_kubeconfig(self.procs.kubeconfig)
        t0 = time.monotonic()
        await self.procs.start_simulator()
        self.note("simulator_register_s", time.monotonic() - t0)
        namespaces = [f"scale-{i}" for i in range(args.namespaces)]
        async with Client(config) as client:
            for ns in [*namespaces, "scale-probe", LATENCY_NAMESPACE]:
                await client.create(NAMESPACES, {"metadata": {"name": ns}})
            await asyncio.sleep(1.0)  # the namespaces' service accounts
            async with _raw_session(config, self.workdir) as raw:
                before = await _request_counts(raw)
                assert self.procs.server is not None and self.procs.simulator is not None
                cpu_before = _cpu_s(self.procs.server.pid), _cpu_s(self.procs.simulator.pid)
                await self.ramp(client, namespaces)
                server_cpu = _cpu_s(self.procs.server.pid) - cpu_before[0]
                simulator_cpu = _cpu_s(self.procs.simulator.pid) - cpu_before[1]
                self.note("ramp_server_cpu_s", server_cpu)
                self.note("ramp_server_cpu_ms_per_pod", server_cpu * 1000 / max(args.pods, 1))
                self.note("ramp_simulator_cpu_s", simulator_cpu)
                self.request_breakdown(before, await _request_counts(raw))
                await self.latency_phase(client)
                await self.reads(raw, namespaces)
                await self.watch_delivery(client, raw)
        assert self.procs.server is not None and self.procs.simulator is not None
        pods = args.pods
        rss = _rss_mb(self.procs.server.pid)
        db = _dir_bytes(self.workdir / "data" / "server" / "db")
        self.note("server_rss_mb", rss)
        self.note("server_rss_kb_per_pod", rss * 1024 / max(pods, 1))
        self.note("simulator_rss_mb", _rss_mb(self.procs.simulator.pid))
        self.note("datastore_mb", db / 1e6)
        self.note("datastore_bytes_per_pod", db / max(pods, 1))
        await self.restart(config)
        return {
            "machine": {
                "cpus": os.cpu_count(),
                "loadavg_before": load_before,
                "loadavg_after": _loadavg(),
                "python": platform.python_version(),
                "platform": platform.platform(),
            },
            "params": {"nodes": args.nodes, "pods": pods, "namespaces": args.namespaces},
            "figures": self.figures,
        }

    async def ramp(self, client: Client, namespaces: list[str]) -> None:
        args = self.args
        first_seen: dict[str, float] = {}
        startup: list[float] = []
        done = asyncio.Event()

        def on_pod(pod: dict[str, Any]) -> None:
            key = f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"
            now = time.monotonic()
            first_seen.setdefault(key, now)
            status = pod["status"]
            if status.get("phase") == "Running" and status.get("ready") and key in first_seen:
                startup.append(now - first_seen.pop(key))
                if len(startup) >= args.pods:
                    done.set()

        informer = Informer(client, PODS, label_selector=LABEL, transform=slim_pod)
        informer.add_event_handler(on_add=on_pod, on_update=lambda _o, n: on_pod(n))
        informer.start()
        await informer.wait_synced()
        probe_latencies: list[float] = []
        stop_probe = asyncio.Event()
        probe = asyncio.create_task(self.probe(client, probe_latencies, stop_probe))
        count = (args.pods + REPLICAS_PER_DEPLOYMENT - 1) // REPLICAS_PER_DEPLOYMENT
        slots = asyncio.Semaphore(CREATE_CONCURRENCY)

        async def create(i: int) -> None:
            replicas = min(REPLICAS_PER_DEPLOYMENT, args.pods - i * REPLICAS_PER_DEPLOYMENT)
            ns = namespaces[i % len(namespaces)]
            async with slots:
                await client.create(DEPLOYMENTS, _deployment(f"d{i}", ns, replicas), namespace=ns)

        start = time.monotonic()
        await asyncio.gather(*(create(i) for i in range(count)))
        self.note("deployments_created_s", time.monotonic() - start)
        try:
            await asyncio.wait_for(done.wait(), args.timeout)
        except TimeoutError:
            print(f"  ramp timed out: {len(startup)}/{args.pods} pods Running", flush=True)
        elapsed = time.monotonic() - start
        stop_probe.set()
        await probe
        await informer.stop()
        self.note("pods_running", len(startup))
        self.note("time_to_all_running_s", elapsed)
        self.note("pods_per_s", len(startup) / elapsed)
        self.note("pod_startup_p50_s", _pct(startup, 0.5))
        self.note("pod_startup_p99_s", _pct(startup, 0.99))
        self.note("mutating_calls", len(probe_latencies))
        self.note("mutating_p50_s", _pct(probe_latencies, 0.5))
        self.note("mutating_p99_s", _pct(probe_latencies, 0.99))

    async def latency_phase(self, client: Client) -> None:
        """One-replica Deployments created at a fixed rate into the loaded cluster; see the
        module docstring."""
        count = self.args.latency_pods
        if count <= 0:
            return
        sent: dict[str, float] = {}  # Deployment name -> when its create was sent
        first_seen: dict[str, float] = {}
        from_seen: list[float] = []
        from_create: list[float] = []
        done = asyncio.Event()

        def on_pod(pod: dict[str, Any]) -> None:
            meta = pod["metadata"]
            key = meta["name"]
            now = time.monotonic()
            first_seen.setdefault(key, now)
            status = pod["status"]
            if status.get("phase") == "Running" and status.get("ready") and key in first_seen:
                from_seen.append(now - first_seen.pop(key))
                app = key.rsplit("-", 2)[0]  # <deployment>-<template hash>-<suffix>
                if app in sent:
                    from_create.append(now - sent.pop(app))
                if len(from_seen) >= count:
                    done.set()

        informer = Informer(client, PODS, namespace=LATENCY_NAMESPACE, transform=slim_pod)
        informer.add_event_handler(on_add=on_pod, on_update=lambda _o, n: on_pod(n))
        informer.start()
        await informer.wait_synced()
        interval = 1.0 / self.args.latency_rate
        creates: list[asyncio.Task[Any]] = []
        next_at = time.monotonic()
        for i in range(count):
            name = f"latency-{i}"
            sent[name] = time.monotonic()
            body = _deployment(name, LATENCY_NAMESPACE, 1, LATENCY_LABEL)
            creates.append(
                asyncio.create_task(client.create(DEPLOYMENTS, body, namespace=LATENCY_NAMESPACE))
            )
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        await asyncio.gather(*creates)
        try:
            await asyncio.wait_for(done.wait(), READY_TIMEOUT_S)
        except TimeoutError:
            print(f"  latency phase timed out: {len(from_seen)}/{count} pods Running", flush=True)
        await informer.stop()
        self.note("latency_pods_running", len(from_seen))
        self.note("latency_pod_startup_p50_s", _pct(from_seen, 0.5))
        self.note("latency_pod_startup_p99_s", _pct(from_seen, 0.99))
        self.note("latency_from_create_p50_s", _pct(from_create, 0.5))
        self.note("latency_from_create_p99_s", _pct(from_create, 0.99))

    def request_breakdown(self, before: dict[str, float], after: dict[str, float]) -> None:
        """The API requests the ramp caused (all clients: controllers, scheduler, simulator,
        this process), per pod, most frequent first."""
        pods = max(self.args.pods, 1)
        diff = {k: v - before.get(k, 0.0) for k, v in after.items()}
        total = sum(diff.values())
        self.note("ramp_requests_per_pod", total / pods)
        breakdown = {k: round(v / pods, 3) for k, v in diff.items() if v / pods >= 0.01}
        self.figures["ramp_requests_per_pod_by_kind"] = dict(
            sorted(breakdown.items(), key=lambda kv: -kv[1])
        )
        for key, value in self.figures["ramp_requests_per_pod_by_kind"].items():
            print(f"    {value:8.3f}  {key}", flush=True)

    async def probe(self, client: Client, latencies: list[float], stop: asyncio.Event) -> None:
        """ConfigMap creates and updates at a fixed rate (open loop: a slow answer does not
        slow the next call down)."""
        interval = 1.0 / self.args.probe_rate
        pending: set[asyncio.Task[None]] = set()
        creates: dict[int, asyncio.Task[None]] = {}
        failures = 0

        async def one(i: int) -> None:
            # Even calls create probe-<i/2>; odd ones patch the ConfigMap the previous call
            # created (after that create answered; only the patch itself is timed).
            nonlocal failures
            name = f"probe-{i // 2}"
            if i % 2:
                previous = creates.pop(i - 1)
                await asyncio.gather(previous, return_exceptions=True)
            t = time.monotonic()
            try:
                if i % 2 == 0:
                    body = {"metadata": {"name": name}, "data": {"i": str(i)}}
                    await client.create(CONFIGMAPS, body, namespace="scale-probe")
                else:
                    patch = {"data": {"i": str(i)}}
                    await client.patch(CONFIGMAPS, name, patch, namespace="scale-probe")
            except ClientError:
                failures += 1
                return
            latencies.append(time.monotonic() - t)

        i = 0
        next_at = time.monotonic()
        while not stop.is_set():
            task = asyncio.create_task(one(i))
            if i % 2 == 0:
                creates[i] = task
            pending.add(task)
            task.add_done_callback(pending.discard)
            i += 1
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        await asyncio.gather(*pending, return_exceptions=True)
        self.note("mutating_failures", failures)

    async def _timed_get(
        self, raw: aiohttp.ClientSession, path: str, params: dict[str, str], runs: int
    ) -> tuple[list[float], int]:
        latencies: list[float] = []
        size = 0
        for _ in range(runs):
            t = time.monotonic()
            async with raw.get(path, params=params) as resp:
                body = await resp.read()
                if resp.status != 200:
                    raise SystemExit(f"GET {path}: {resp.status} {body[:300]!r}")
            latencies.append(time.monotonic() - t)
            size = len(body)
        return latencies, size

    async def reads(self, raw: aiohttp.ClientSession, namespaces: list[str]) -> None:
        for label, params in (("rv0", {"resourceVersion": "0"}), ("consistent", {})):
            lat, size = await self._timed_get(raw, "/api/v1/pods", params, LIST_ALL_RUNS)
            self.note(f"list_all_{label}_p50_s", _pct(lat, 0.5))
            self.note(f"list_all_{label}_p99_s", _pct(lat, 0.99))
        self.note("list_all_mb", size / 1e6)
        await self.watch_cache_size(raw, size)
        ns = namespaces[0]
        lat, _ = await self._timed_get(raw, f"/api/v1/namespaces/{ns}/pods", {}, LIST_NS_RUNS)
        self.note("list_namespace_p50_s", _pct(lat, 0.5))
        self.note("list_namespace_p99_s", _pct(lat, 0.99))
        async with raw.get(f"/api/v1/namespaces/{ns}/pods", params={"limit": "1"}) as resp:
            name = (await resp.json())["items"][0]["metadata"]["name"]
        lat, _ = await self._timed_get(raw, f"/api/v1/namespaces/{ns}/pods/{name}", {}, GET_RUNS)
        self.note("get_pod_p50_s", _pct(lat, 0.5))
        self.note("get_pod_p99_s", _pct(lat, 0.99))

    async def watch_cache_size(self, raw: aiohttp.ClientSession, list_bytes: int) -> None:
        """The watch cache's bytes per pod (``apiserver_watch_cache_bytes`` over
        ``apiserver_storage_objects`` for pods) beside a pod's JSON size (the LIST of all pods
        over the same count)."""
        gauges = await _pod_gauges(raw)
        pods = gauges.get("apiserver_storage_objects", 0.0)
        cache_bytes = gauges.get("apiserver_watch_cache_bytes")
        if not pods or cache_bytes is None:
            return
        self.note("watch_cache_bytes_per_pod", cache_bytes / pods)
        self.note("pod_json_bytes", list_bytes / pods)
        self.note("watch_cache_vs_json", cache_bytes / list_bytes)

    async def watch_delivery(self, client: Client, raw: aiohttp.ClientSession) -> None:
        ns = "scale-probe"
        created = await client.create(
            CONFIGMAPS, {"metadata": {"name": "watched"}, "data": {"sent": "0"}}, namespace=ns
        )
        rv = created["metadata"]["resourceVersion"]
        latencies: list[float] = []
        ready = 0
        all_ready = asyncio.Event()

        async def watcher() -> None:
            nonlocal ready
            path = f"/api/v1/namespaces/{ns}/configmaps"
            params = {
                "watch": "1",
                "resourceVersion": rv,
                "fieldSelector": "metadata.name=watched",
                "timeoutSeconds": "300",
            }
            async with raw.get(path, params=params) as resp:
                ready += 1
                if ready == WATCHERS:
                    all_ready.set()
                seen = 0
                async for line in resp.content:
                    arrived = time.time()
                    event = json.loads(line)
                    if event["type"] != "MODIFIED":
                        continue
                    latencies.append(arrived - float(event["object"]["data"]["sent"]))
                    seen += 1
                    if seen == WATCH_EVENTS:
                        return

        tasks = [asyncio.create_task(watcher()) for _ in range(WATCHERS)]
        await asyncio.wait_for(all_ready.wait(), 120)
        await asyncio.sleep(0.5)
        for _ in range(WATCH_EVENTS):
            patch = {"data": {"sent": repr(time.time())}}
            await client.patch(CONFIGMAPS, "watched", patch, namespace=ns)
            await asyncio.sleep(WATCH_EVENT_INTERVAL_S)
        await asyncio.wait_for(asyncio.gather(*tasks), 120)
        self.note("watch_delivery_p50_s", _pct(latencies, 0.5))
        self.note("watch_delivery_p99_s", _pct(latencies, 0.99))

    async def restart(self, config: ClientConfig) -> None:
        self.procs.stop_server()
        t0 = time.monotonic()
        self.procs.start_server()
        self.note("restart_readyz_s", await self.procs.wait_readyz())
        async with _raw_session(config, self.workdir) as raw:
            while True:
                async with raw.get(
                    "/api/v1/pods", params={"resourceVersion": "0", "labelSelector": LABEL}
                ) as resp:
                    if resp.status == 200:
                        items = (await resp.json())["items"]
                        if len(items) >= self.args.pods:
                            break
                if time.monotonic() - t0 > READY_TIMEOUT_S:
                    break
                await asyncio.sleep(0.5)
        self.note("restart_full_list_s", time.monotonic() - t0)


def print_table(report: dict[str, Any]) -> None:
    figures = report["figures"]
    params = report["params"]
    machine = report["machine"]
    print()
    print(
        f"bench.scale: {params['nodes']} simulated nodes, {params['pods']} pods; "
        f"{machine['cpus']} CPUs, load average {machine['loadavg_before'][0]:.1f} before, "
        f"{machine['loadavg_after'][0]:.1f} after"
    )
    print(f"  {'figure':<30} {'value':>12}   goal/SLO (at 5,000 nodes, 150,000 pods)")
    rows = [
        ("time to all pods Running (s)", "time_to_all_running_s", None),
        ("pods Running per second", "pods_per_s", None),
        ("ramp pod startup p50 (s)", "pod_startup_p50_s", None),
        ("ramp pod startup p99 (s)", "pod_startup_p99_s", None),
        ("latency pod startup p50 (s)", "latency_pod_startup_p50_s", None),
        ("latency pod startup p99 (s)", "latency_pod_startup_p99_s", "latency_pod_startup_p99_s"),
        ("  from Deployment create p99", "latency_from_create_p99_s", None),
        ("server CPU/pod in ramp (ms)", "ramp_server_cpu_ms_per_pod", None),
        ("API requests/pod in ramp", "ramp_requests_per_pod", None),
        ("mutating p50 during ramp (s)", "mutating_p50_s", None),
        ("mutating p99 during ramp (s)", "mutating_p99_s", "mutating_p99_s"),
        ("LIST all pods rv=0 p50 (s)", "list_all_rv0_p50_s", None),
        ("LIST all pods rv=0 p99 (s)", "list_all_rv0_p99_s", "list_all_rv0_p99_s"),
        ("LIST all pods rv unset p50 (s)", "list_all_consistent_p50_s", None),
        (
            "LIST all pods rv unset p99 (s)",
            "list_all_consistent_p99_s",
            "list_all_consistent_p99_s",
        ),
        ("LIST one namespace p50 (s)", "list_namespace_p50_s", None),
        ("LIST one namespace p99 (s)", "list_namespace_p99_s", "list_namespace_p99_s"),
        ("GET one pod p50 (s)", "get_pod_p50_s", None),
        ("GET one pod p99 (s)", "get_pod_p99_s", "get_pod_p99_s"),
        ("watch delivery p50, 100 w. (s)", "watch_delivery_p50_s", None),
        ("watch delivery p99, 100 w. (s)", "watch_delivery_p99_s", "watch_delivery_p99_s"),
        ("watch cache bytes per pod", "watch_cache_bytes_per_pod", None),
        ("pod JSON bytes (LIST all/pods)", "pod_json_bytes", None),
        ("watch cache / JSON size", "watch_cache_vs_json", None),
        ("server RSS (MB)", "server_rss_mb", "server_rss_mb"),
        ("server RSS per pod (KB)", "server_rss_kb_per_pod", None),
        ("simulator RSS (MB)", "simulator_rss_mb", None),
        ("datastore size (MB)", "datastore_mb", None),
        ("restart to /readyz (s)", "restart_readyz_s", "restart_readyz_s"),
        ("restart to full pod LIST (s)", "restart_full_list_s", None),
    ]
    for label, key, goal_key in rows:
        value = figures.get(key)
        shown = f"{value:12.3f}" if isinstance(value, float) else f"{value!s:>12}"
        goal = ""
        if goal_key:
            text, limit = GOALS[goal_key]
            verdict = "ok" if isinstance(value, float) and value <= limit else "MISSED"
            goal = f"{text}  {verdict}"
        print(f"  {label:<30} {shown}   {goal}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=200)
    parser.add_argument("--pods", type=int, default=2000)
    parser.add_argument("--namespaces", type=int, default=5)
    parser.add_argument("--probe-rate", type=float, default=5.0, help="mutating probe calls/s")
    parser.add_argument("--timeout", type=float, default=1800.0, help="ramp timeout (s)")
    parser.add_argument(
        "--latency-pods", type=int, default=100, help="one-replica Deployments after the ramp"
    )
    parser.add_argument("--latency-rate", type=float, default=5.0, help="their creates per second")
    parser.add_argument("--report", type=Path, default=None, help="write the JSON report here")
    parser.add_argument(
        "--leader-elect",
        action="store_true",
        help="keep the scheduler's and controllers' leader election on (see the docstring)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs, data)")
    args = parser.parse_args()
    if args.pods > args.nodes * 110:
        parser.error("more pods than the nodes hold (110 each)")
    # SIGTERM unwinds like Ctrl-C, so the children are stopped and the work dir removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    workdir = Path(tempfile.mkdtemp(prefix="sampan-scale-"))
    bench = Bench(args, workdir)
    print(f"bench.scale: work dir {workdir}", flush=True)
    try:
        report = asyncio.run(bench.run())
    finally:
        bench.procs.stop()
        if not args.keep:
            subprocess.run(["rm", "-rf", str(workdir)], check=False)
    print_table(report)
    if args.report:
        args.report.write_text(json.dumps(report, indent=2) + "\n")
        print(f"report written to {args.report}")


if __name__ == "__main__":
    main()
