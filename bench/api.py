"""API server benchmark: ``python -m bench.api``.

Starts ``sampan server`` (datastore + API server) as a child process with a temporary data
dir, and beside it a trivial aiohttp JSON handler over the same TLS certificate as the ceiling.
A client in this process (aiohttp over TLS with the admin client certificate) measures:

* GET of one object: requests/s, p50/p99 latency — beside the trivial handler, with the ratio;
* creates/s with 32 concurrent clients;
* create latency p50/p99 at a fixed offered rate of 500 creates/s (open loop);
* LIST of 10,000 objects (latency, median of 5);
* watch fan-out: 1,000 watchers, one change, p99 time until every watcher has the event —
  once with every watcher in this process (one event loop decrypting 1,000 TLS streams: the
  client's own cost is in the figure) and once with the watchers spread over
  ``--watch-procs`` client processes (4), receive times on the shared monotonic clock, with
  the server's CPU per delivered event (the figure a loaded machine moves least);
* Secrets (issue "Security hardening"): creates/s and GETs/s of Secrets on four more servers
  started one after the other — identity (the baseline), ``aescbc``, ``secretbox``
  (``encryption-provider-config``), and identity with an audit policy at Metadata level
  (every request written to the audit log) — two rounds in alternating order, best of the
  two per server, each beside the baseline.

``--datastore etcd`` runs the same rows (after SQLite's, the reference) on a second server
started with ``--cluster-init --disable-agent`` (embedded etcd, private ports, temp data dir),
then etcd's floor in interleaved rounds, 32 concurrent callers each: raw etcd Put RPCs and
raw create-if-absent Txn RPCs through the client the driver uses (``grpc.aio`` TLS channel,
the server's etcd client certificate; values the size of a stored ConfigMap), and API
ConfigMap creates, with the API's rate as a % of the raw put rate (issue "High availability
on etcd": goal >= 70 %) and the server's and etcd's CPU per operation. A summary table puts
the datastores side by side.

Goals (issue "API server, part 1"): GET >= 40% of the trivial handler's requests/s; >= 2,000
creates/s; p99 create latency < 25 ms at 500 creates/s; fan-out p99 < 100 ms. Secrets: each
variant at most 10% slower than identity. ``--secrets`` runs the Secrets rows alone.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import json
import os
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from base64 import b64decode
from pathlib import Path

import aiohttp
import yaml

from sampan.datastore.etcd import EtcdTLS

READY_TIMEOUT_S = 60.0
ROWS = ("get", "create", "watch")
FAN_OUT_ROUNDS = 5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_s(pid: int) -> float:
    """CPU time (user + system, all threads) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def client_ssl(kubeconfig: Path, workdir: Path) -> ssl.SSLContext:
    cfg = yaml.safe_load(kubeconfig.read_text())
    cluster = cfg["clusters"][0]["cluster"]
    user = cfg["users"][0]["user"]
    ca = workdir / "ca.crt"
    ca.write_bytes(b64decode(cluster["certificate-authority-data"]))
    cert = workdir / "client.crt"
    key = workdir / "client.key"
    cert.write_bytes(b64decode(user["client-certificate-data"]))
    key.write_bytes(b64decode(user["client-key-data"]))
    os.chmod(key, 0o600)
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.load_cert_chain(str(cert), str(key))
    ctx.check_hostname = False
    return ctx


CEILING_APP = textwrap.dedent(
    """
    import ssl, sys, json
    from aiohttp import web
    body = json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "bench",
        "namespace": "default", "uid": "00000000-0000-0000-0000-000000000000",
        "resourceVersion": "1", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "data": {"key": "value"}}).encode()
    async def handler(request):
        return web.Response(body=body, content_type="application/json")
    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(sys.argv[2], sys.argv[3])
    ctx.load_verify_locations(sys.argv[4])
    ctx.verify_mode = ssl.CERT_OPTIONAL
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), ssl_context=ctx,
                print=None, access_log=None)
    """
)


class Bench:
    def __init__(
        self, workdir: Path, quick: bool, rows: frozenset[str] = frozenset(), watch_procs: int = 4
    ) -> None:
        self.workdir = workdir
        self.quick = quick
        self.rows = rows or frozenset(ROWS)
        self.watch_procs = watch_procs
        self.profile_fan_out = ""
        self.ceiling_pid = 0
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.kubeconfig = workdir / "kubeconfig.yaml"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.results: list[tuple[str, str]] = []
        self.figures: dict[str, dict[str, float]] = collections.defaultdict(dict)

    def report(self, label: str, name: str, value: str) -> None:
        self.results.append((f"{label}: {name}", value))
        print(f"  {name:<52} {value}", flush=True)

    # -- processes --------------------------------------------------------------------------

    async def start_server(
        self,
        *,
        data_dir: Path | None = None,
        port: int | None = None,
        kubeconfig: Path | None = None,
        extra: tuple[str, ...] = (),
    ) -> subprocess.Popen[bytes]:
        data_dir = data_dir or self.workdir / "data"
        port = port or self.port
        kubeconfig = kubeconfig or self.kubeconfig
        log_path = data_dir.with_name(data_dir.name + "-server.log")
        log = log_path.open("w")
        env = {k: v for k, v in os.environ.items() if not k.startswith("SAMPAN_")}
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sampan.cli.main",
                "server",
                "--config",
                os.devnull,
                "--data-dir",
                str(data_dir),
                "--https-listen-port",
                str(port),
                "--bind-address",
                "127.0.0.1",
                "--write-kubeconfig",
                str(kubeconfig),
                "--disable-agent",
                "--disable-scheduler",
                "--disable-controller-manager",
                # The fan-out row opens 1,000 watches as one user (the admin): lift the
                # per-user watch limit (500 by default), which is not what is measured.
                "--kube-apiserver-arg",
                "max-watches-per-user=0",
                *extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
            env=env,
        )
        self.procs.append(proc)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while "API server ready" not in log_path.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("sampan server did not start:\n" + log_path.read_text())
            await asyncio.sleep(0.1)
        self.server_pid = proc.pid
        return proc

    async def start_ceiling(self, data_dir: Path | None = None) -> str:
        """The trivial handler, serving with the certificate of the server in ``data_dir``."""
        port = free_port()
        tls = (data_dir or self.workdir / "data") / "server" / "tls"
        cert = next(
            p
            for p in (tls / "serving-kube-apiserver.crt", tls / "serving.crt", tls / "server.crt")
            if p.exists()
        )
        key = cert.with_suffix(".key")
        ca = next(p for p in (tls / "client-ca.crt", tls / "client-ca.pem") if p.exists())
        proc = subprocess.Popen(
            [sys.executable, "-c", CEILING_APP, str(port), str(cert), str(key), str(ca)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.procs.append(proc)
        self.ceiling_pid = proc.pid
        for _ in range(100):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                await asyncio.sleep(0.05)
        return f"https://127.0.0.1:{port}"

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()

    # -- measurements -----------------------------------------------------------------------

    async def closed_loop(
        self,
        session: aiohttp.ClientSession,
        method: str,
        url_of,
        body_of,
        concurrency: int,
        total: int,
    ) -> tuple[float, list[float]]:
        latencies: list[float] = []
        counter = iter(range(total))

        async def worker() -> None:
            for i in counter:
                t0 = time.perf_counter()
                async with session.request(method, url_of(i), json=body_of(i)) as resp:
                    await resp.read()
                    if resp.status >= 300:
                        raise SystemExit(f"{method} {url_of(i)}: {resp.status} {await resp.text()}")
                latencies.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return total / (time.perf_counter() - t0), latencies

    # -- Secrets: encryption providers and the audit log ---------------------------------------

    def variant_args(self, name: str) -> tuple[str, ...]:
        """The server flags of one Secrets variant (files written under the workdir)."""
        if name in ("aescbc", "secretbox"):
            path = self.workdir / f"encryption-{name}.json"
            key = base64.b64encode(os.urandom(32)).decode()
            config = {
                "apiVersion": "apiserver.config.k8s.io/v1",
                "kind": "EncryptionConfiguration",
                "resources": [
                    {
                        "resources": ["secrets"],
                        "providers": [
                            {name: {"keys": [{"name": "key1", "secret": key}]}},
                            {"identity": {}},
                        ],
                    }
                ],
            }
            path.write_text(json.dumps(config))
            os.chmod(path, 0o600)
            return ("--kube-apiserver-arg", f"encryption-provider-config={path}")
        if name == "audit":
            path = self.workdir / "audit-policy.yaml"
            path.write_text(
                "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Metadata\n"
            )
            return ("--audit-policy-file", str(path))
        return ()

    async def run_secrets(self) -> None:
        """The four servers run side by side; each round measures a burst of creates and of
        GETs on every one, back to back in a rotating order, so load from elsewhere hits
        them alike. Figures: the median over rounds, and the median of the per-round ratios
        to identity."""
        variants = ("identity", "aescbc", "secretbox", "audit")
        labels = {
            "identity": "identity (baseline)",
            "aescbc": "aescbc",
            "secretbox": "secretbox",
            "audit": "identity + audit policy at Metadata",
        }
        rounds = 3 if self.quick else 7
        n_create = 150 if self.quick else 300
        n_get = 300 if self.quick else 600
        timeout = aiohttp.ClientTimeout(total=None, sock_read=120)
        urls: dict[str, str] = {}
        pids: dict[str, int] = {}
        sessions: dict[str, aiohttp.ClientSession] = {}
        try:
            for name in variants:
                port = free_port()
                kubeconfig = self.workdir / f"kubeconfig-{name}.yaml"
                proc = await self.start_server(
                    data_dir=self.workdir / f"data-{name}",
                    port=port,
                    kubeconfig=kubeconfig,
                    extra=self.variant_args(name),
                )
                pids[name] = proc.pid
                ctx = client_ssl(kubeconfig, self.workdir)
                sessions[name] = aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(ssl=ctx, limit=0), timeout=timeout
                )
                urls[name] = f"https://127.0.0.1:{port}/api/v1/namespaces/default/secrets"

            def secret(i: int) -> dict:
                return {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": f"s-{i}"},
                    "data": {"password": base64.b64encode(b"hunter2-%d" % i).decode()},
                }

            for name in variants:  # warm-up: connections, caches
                url = urls[name]
                await self.closed_loop(
                    sessions[name], "POST", lambda i, u=url: u, lambda i: secret(-1 - i), 32, 100
                )
            creates: dict[str, list[float]] = {name: [] for name in variants}
            gets: dict[str, list[float]] = {name: [] for name in variants}
            cpu: dict[str, list[float]] = {name: [] for name in variants}
            for round_ in range(rounds):
                shift = round_ % len(variants)
                for name in variants[shift:] + variants[:shift]:
                    url, s = urls[name], sessions[name]
                    first = round_ * n_create
                    cpu0 = cpu_s(pids[name])
                    cps, _ = await self.closed_loop(
                        s,
                        "POST",
                        lambda i, u=url: u,
                        lambda i, f=first: secret(f + i),
                        32,
                        n_create,
                    )
                    gps, _ = await self.closed_loop(
                        s,
                        "GET",
                        lambda i, u=url, f=first: f"{u}/s-{f + i % n_create}",
                        lambda i: None,
                        32,
                        n_get,
                    )
                    creates[name].append(cps)
                    gets[name].append(gps)
                    cpu[name].append((cpu_s(pids[name]) - cpu0) / (n_create + n_get))
        finally:
            for session in sessions.values():
                await session.close()
        print(
            f"Secrets (32 concurrent clients, {rounds} interleaved rounds, medians; "
            "goal <= 10% slower than identity; server CPU per request is the figure that "
            "holds on a loaded machine, where a second thread also buys a second CPU share):"
        )
        for name in variants:
            c_ratio = statistics.median(
                c / b for c, b in zip(creates[name], creates["identity"], strict=True)
            )
            g_ratio = statistics.median(
                g / b for g, b in zip(gets[name], gets["identity"], strict=True)
            )
            self.report(
                "sqlite",
                f"Secret create/get: {labels[name]}",
                f"{statistics.median(creates[name]):6.0f} creates/s ({c_ratio:4.0%})  "
                f"{statistics.median(gets[name]):6.0f} gets/s ({g_ratio:4.0%})  "
                f"server CPU {statistics.median(cpu[name]) * 1e3:.2f} ms/request "
                f"({statistics.median(cpu[name]) / statistics.median(cpu['identity']):4.0%})",
            )

    async def run(
        self, datastores: tuple[str, ...], secrets_only: bool = False, secrets: bool = True
    ) -> None:
        if secrets_only:
            await self.run_secrets()
            return
        sqlite = await self.start_server()
        ceiling = await self.start_ceiling()
        print(f"== datastore sqlite (load average {load_average()})", flush=True)
        await self.run_core("sqlite", self.url, self.kubeconfig, ceiling, sqlite.pid)
        if "etcd" in datastores:
            stop_process(sqlite)
            await self.run_etcd()
        self.summary(datastores)
        if secrets:
            await self.run_secrets()

    async def run_core(
        self, label: str, url: str, kubeconfig: Path, ceiling: str, server_pid: int
    ) -> None:
        """The GET, create, LIST and watch rows against the server at ``url`` (process
        ``server_pid``, whose CPU per create is reported)."""
        ctx = client_ssl(kubeconfig, self.workdir)
        conn = aiohttp.TCPConnector(ssl=ctx, limit=0)
        timeout = aiohttp.ClientTimeout(total=None, sock_read=120)
        async with aiohttp.ClientSession(connector=conn, timeout=timeout) as s:
            ns = f"{url}/api/v1/namespaces/default/configmaps"
            cm = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "bench"},
                "data": {"key": "value"},
            }
            async with s.post(ns, json=cm) as r:
                assert r.status == 201, await r.text()

            if "get" in self.rows:
                await self.get_rows(s, label, ns, ceiling, server_pid)
            if "create" in self.rows:
                await self.create_rows(s, label, url, ns, server_pid)
            if "watch" in self.rows:
                await self.watch_rows(s, label, ns, ctx, timeout, server_pid)

    async def get_rows(
        self, s: aiohttp.ClientSession, label: str, ns: str, ceiling: str, server_pid: int
    ) -> None:
        n_get = 2000 if self.quick else 10000
        await self.closed_loop(s, "GET", lambda i: ceiling + "/x", lambda i: None, 32, 500)
        cpu0 = cpu_s(self.ceiling_pid)
        ceil_rps, ceil_lat = await self.closed_loop(
            s, "GET", lambda i: ceiling + "/x", lambda i: None, 32, n_get
        )
        ceil_cpu = (cpu_s(self.ceiling_pid) - cpu0) / n_get
        await self.closed_loop(s, "GET", lambda i: ns + "/bench", lambda i: None, 32, 500)
        cpu0 = cpu_s(server_pid)
        rps, lat = await self.closed_loop(
            s, "GET", lambda i: ns + "/bench", lambda i: None, 32, n_get
        )
        get_cpu = (cpu_s(server_pid) - cpu0) / n_get
        self.figures[label]["server CPU per GET (us)"] = get_cpu * 1e6
        self.figures[label]["GET req/s"] = rps
        self.figures[label]["GET % of ceiling"] = rps / ceil_rps * 100
        print("GET one object (32 concurrent clients, TLS):")
        self.report(
            label,
            "trivial aiohttp handler (ceiling)",
            f"{ceil_rps:8.0f} req/s  p50 {pct(ceil_lat, 50) * 1e3:.1f} ms  "
            f"p99 {pct(ceil_lat, 99) * 1e3:.1f} ms  CPU {ceil_cpu * 1e6:.0f} us/GET",
        )
        self.report(
            label,
            "sampan GET configmap",
            f"{rps:8.0f} req/s  p50 {pct(lat, 50) * 1e3:.1f} ms  "
            f"p99 {pct(lat, 99) * 1e3:.1f} ms  ({rps / ceil_rps:.0%} of ceiling; "
            f"goal >= 40%)  server CPU {get_cpu * 1e6:.0f} us/GET "
            f"(the handler's CPU is {ceil_cpu / get_cpu:.0%} of it)",
        )

    async def create_rows(
        self, s: aiohttp.ClientSession, label: str, url: str, ns: str, server_pid: int
    ) -> None:
        n_create = 1000 if self.quick else 3000
        cpu0 = cpu_s(server_pid)
        cps, clat = await self.closed_loop(
            s,
            "POST",
            lambda i: ns,
            lambda i: {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": f"c-{i}"},
                "data": {"k": "v"},
            },
            32,
            n_create,
        )
        create_cpu = (cpu_s(server_pid) - cpu0) / n_create
        self.figures[label]["creates/s (32)"] = cps
        self.figures[label]["server CPU per create (us)"] = create_cpu * 1e6
        print("Creates:")
        self.report(
            label,
            "creates/s (32 concurrent)",
            f"{cps:8.0f} /s  p99 {pct(clat, 99) * 1e3:.1f} ms  (goal >= 2,000/s)  "
            f"server CPU {create_cpu * 1e3:.2f} ms/create",
        )

        rate = 500
        duration_s = 3 if self.quick else 6
        lat500: list[float] = []

        refused = 0

        async def one(i: int) -> None:
            nonlocal refused
            t0 = time.perf_counter()
            try:
                async with s.post(
                    ns,
                    json={
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "metadata": {"name": f"r-{i}"},
                    },
                ) as r:
                    await r.read()
            except aiohttp.ClientConnectionError:
                # A server slower than the offered rate: new connections pile up until
                # its listen backlog overflows. Counted, not timed.
                refused += 1
                return
            lat500.append(time.perf_counter() - t0)

        tasks = []
        start = time.perf_counter()
        for i in range(rate * duration_s):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
        self.figures[label][f"create p99 at {rate}/s (ms)"] = pct(lat500, 99) * 1e3
        self.report(
            label,
            f"create latency at {rate}/s offered",
            f"p50 {pct(lat500, 50) * 1e3:.1f} ms  p99 {pct(lat500, 99) * 1e3:.1f} ms  "
            "(goal p99 < 25 ms)" + (f"  {refused} connections refused" if refused else ""),
        )

        # LIST of 10,000 objects in their own namespace.
        async with s.post(
            f"{url}/api/v1/namespaces",
            json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench-list"}},
        ) as r:
            assert r.status == 201, await r.text()
        lns = f"{url}/api/v1/namespaces/bench-list/configmaps"
        await self.closed_loop(
            s,
            "POST",
            lambda i: lns,
            lambda i: {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": f"l-{i:05d}"},
                "data": {"k": "v" * 64},
            },
            32,
            10000,
        )
        list_lat = []
        for _ in range(5):
            t0 = time.perf_counter()
            async with s.get(lns) as r:
                body = await r.read()
            list_lat.append(time.perf_counter() - t0)
        count = len(json.loads(body)["items"])
        self.figures[label][f"LIST {count} (ms)"] = statistics.median(list_lat) * 1e3
        print("LIST:")
        self.report(
            label,
            f"LIST of {count} configmaps (median of 5)",
            f"{statistics.median(list_lat) * 1e3:8.1f} ms",
        )

    async def watch_rows(
        self,
        s: aiohttp.ClientSession,
        label: str,
        ns: str,
        ctx: ssl.SSLContext,
        client_timeout: aiohttp.ClientTimeout,
        server_pid: int,
    ) -> None:
        timeout = client_timeout
        n_watchers = 200 if self.quick else 1000
        # Watch from the collection's current resourceVersion (the object's own may be older
        # than the watch cache's window after the creates above, which would be a 410).
        async with s.get(ns + "?limit=1") as r:
            rv = json.loads(await r.read())["metadata"]["resourceVersion"]
        got: list[float] = []
        ready = 0
        all_ready = asyncio.Event()
        changed_at: list[float] = []

        fan_conn = aiohttp.TCPConnector(ssl=ctx, limit=0)
        async with aiohttp.ClientSession(connector=fan_conn, timeout=timeout) as ws:

            async def watcher() -> None:
                nonlocal ready
                url = (
                    f"{ns}?watch=1&resourceVersion={rv}"
                    "&fieldSelector=metadata.name%3Dbench&timeoutSeconds=120"
                )
                for _attempt in range(60):
                    async with ws.get(url) as r:
                        if r.status == 429:  # the server's in-flight limit: as clients do
                            await asyncio.sleep(float(r.headers.get("Retry-After", "1")))
                            continue
                        if r.status != 200:
                            raise SystemExit(f"watch: {r.status} {await r.text()}")
                        ready += 1
                        if ready == n_watchers:
                            all_ready.set()
                        async for line in r.content:
                            event = json.loads(line)
                            if event.get("type") != "MODIFIED":
                                raise SystemExit(f"watch: unexpected event {line[:200]!r}")
                            got.append(time.perf_counter())
                            return
                raise SystemExit("watch: refused 60 times (429)")

            watchers = [asyncio.create_task(watcher()) for _ in range(n_watchers)]
            await asyncio.wait_for(all_ready.wait(), 120)
            await asyncio.sleep(0.5)
            changed_at.append(time.perf_counter())
            async with s.patch(
                ns + "/bench",
                data=json.dumps({"data": {"key": "v2"}}),
                headers={"Content-Type": "application/merge-patch+json"},
            ) as r:
                await r.read()
            await asyncio.wait_for(asyncio.gather(*watchers), 120)
        delays = [g - changed_at[0] for g in got]
        self.figures[label]["fan-out p99 (ms)"] = pct(delays, 99) * 1e3
        print("Watch fan-out:")
        self.report(
            label,
            f"{n_watchers} watchers, one change (1 client process)",
            f"p50 {pct(delays, 50) * 1e3:.1f} ms  p99 {pct(delays, 99) * 1e3:.1f} ms  "
            "(goal p99 < 100 ms)",
        )
        if self.watch_procs > 0:
            await self.watch_fan_out_procs(s, label, ns, n_watchers, server_pid)

    async def watch_fan_out_procs(
        self, s: aiohttp.ClientSession, label: str, ns: str, n_watchers: int, server_pid: int
    ) -> None:
        """The fan-out with the watchers in ``watch_procs`` client processes, ``ROUNDS``
        changes one second apart: each child prints "ready" once its watches are open, then
        its receive times (time.monotonic, shared by every process) and keeps its watches
        open until told, so the server's CPU over the rounds is the fan-out's alone."""
        procs = self.watch_procs
        rounds = FAN_OUT_ROUNDS
        async with s.get(ns + "?limit=1") as r:
            rv = json.loads(await r.read())["metadata"]["resourceVersion"]
        url = (
            f"{ns}?watch=1&resourceVersion={rv}"
            "&fieldSelector=metadata.name%3Dbench&timeoutSeconds=120"
        )
        children = []
        for i in range(procs):
            count = n_watchers // procs + (1 if i < n_watchers % procs else 0)
            children.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "bench.api",
                    "--watch-client",
                    json.dumps(
                        {"url": url, "count": count, "rounds": rounds, "dir": str(self.workdir)}
                    ),
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                )
            )
        for child in children:
            assert child.stdout is not None
            line = await asyncio.wait_for(child.stdout.readline(), 180)
            if line.strip() != b"ready":
                raise SystemExit(f"watch client: {line[:200]!r}")
        spy = None
        if self.profile_fan_out:
            spy = await asyncio.create_subprocess_exec(
                str(Path(sys.executable).with_name("py-spy")), "record",
                "-p", str(server_pid), "-r", "500", "-d", "3",
                "-f", "raw", "-o", self.profile_fan_out,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
        await asyncio.sleep(0.5)
        cpu0 = cpu_s(server_pid)
        starts: list[float] = []
        for i in range(rounds):
            if i:
                await asyncio.sleep(1.0)
            starts.append(time.monotonic())
            async with s.patch(
                ns + "/bench",
                data=json.dumps({"data": {"key": f"v{starts[-1]}"}}),
                headers={"Content-Type": "application/merge-patch+json"},
            ) as r:
                await r.read()
        delays: list[float] = []
        for child in children:
            assert child.stdout is not None
            out = json.loads(await asyncio.wait_for(child.stdout.readline(), 180))
            for times in out["times"]:  # one watcher's receive times, a change each
                delays.extend(t - start for t, start in zip(times, starts, strict=True))
        # Sampled while the watches are still open: their teardown is not the fan-out's.
        server_cpu = cpu_s(server_pid) - cpu0
        for child in children:
            assert child.stdin is not None
            child.stdin.write(b"done\n")
            await child.stdin.drain()
            await child.wait()
        if spy is not None:
            await spy.wait()
        per_event = server_cpu / (n_watchers * rounds)
        self.figures[label][f"fan-out p99, {procs} client procs (ms)"] = pct(delays, 99) * 1e3
        self.figures[label]["server CPU per watch event (us)"] = per_event * 1e6
        self.report(
            label,
            f"{n_watchers} watchers, {rounds} changes ({procs} client processes)",
            f"p50 {pct(delays, 50) * 1e3:.1f} ms  p99 {pct(delays, 99) * 1e3:.1f} ms  "
            f"(goal p99 < 100 ms)  server CPU {per_event * 1e6:.0f} us/event delivered "
            "(incl. the PATCHes)",
        )

    # -- embedded etcd --------------------------------------------------------------------------

    async def run_etcd(self) -> None:
        """The same rows on ``sampan server --cluster-init`` (embedded etcd, private ports),
        then the API's creates/s beside etcd's raw put rate."""
        data_dir = self.workdir / "data-etcd"
        port = free_port()
        client_port, peer_port = free_etcd_ports()
        kubeconfig = self.workdir / "kubeconfig-etcd.yaml"
        proc = await self.start_server(
            data_dir=data_dir,
            port=port,
            kubeconfig=kubeconfig,
            extra=(
                "--cluster-init",
                "--etcd-client-port",
                str(client_port),
                "--etcd-peer-port",
                str(peer_port),
                "--advertise-address",
                "127.0.0.1",
            ),
        )
        etcd_pid = child_pid(proc.pid, "etcd")
        version = subprocess.run(
            ["etcd", "--version"], capture_output=True, text=True, check=False
        ).stdout.split("\n")[0]
        print(
            f"== datastore etcd (embedded: sampan server --cluster-init, {version}, fsync on; "
            f"load average {load_average()})",
            flush=True,
        )
        url = f"https://127.0.0.1:{port}"
        ceiling = await self.start_ceiling(data_dir)
        await self.run_core("etcd", url, kubeconfig, ceiling, proc.pid)
        tls_dir = data_dir / "server" / "tls" / "etcd"
        tls = EtcdTLS(
            cafile=tls_dir / "server-ca.crt",
            certfile=tls_dir / "client.crt",
            keyfile=tls_dir / "client.key",
        )
        await self.run_etcd_floor(
            url, kubeconfig, f"127.0.0.1:{client_port}", tls, proc.pid, etcd_pid
        )
        stop_process(proc)

    async def run_etcd_floor(
        self,
        url: str,
        kubeconfig: Path,
        target: str,
        tls: EtcdTLS,
        server_pid: int,
        etcd_pid: int,
    ) -> None:
        """Interleaved rounds, 32 concurrent callers each: raw etcd Put RPCs, raw
        create-if-absent Txn RPCs (what the driver sends for a create), API ConfigMap
        creates. The raw calls go through the client the driver uses (``grpc.aio`` secure
        channel with the server's etcd client certificate), with values the size of a stored
        ConfigMap. Figures: medians over rounds and the median of the per-round ratios."""
        import grpc
        from aetcd.rpc import rpc_pb2, rpc_pb2_grpc

        rounds = 3 if self.quick else 5
        n_raw = 1000 if self.quick else 2000
        n_api = 500 if self.quick else 1000
        ns = f"{url}/api/v1/namespaces/default/configmaps"
        ctx = client_ssl(kubeconfig, self.workdir)
        timeout = aiohttp.ClientTimeout(total=None, sock_read=120)
        rates: dict[str, list[float]] = {"put": [], "txn": [], "api": []}
        etcd_cpu: dict[str, list[float]] = {"put": [], "txn": [], "api": []}
        server_cpu: list[float] = []
        async with (
            grpc.aio.secure_channel(target, tls.credentials()) as channel,
            aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=ctx, limit=0), timeout=timeout
            ) as session,
        ):
            kv = rpc_pb2_grpc.KVStub(channel)
            stored = await kv.Range(
                rpc_pb2.RangeRequest(key=b"/registry/configmaps/default/c-0"), timeout=10
            )
            value = b"x" * (len(stored.kvs[0].value) if stored.kvs else 256)

            async def raw(kind: str, round_: int) -> float:
                counter = iter(range(n_raw))

                async def worker() -> None:
                    for i in counter:
                        key = f"/bench-raw/{kind}/{round_}/{i:06d}".encode()
                        put = rpc_pb2.PutRequest(key=key, value=value)
                        if kind == "put":
                            await kv.Put(put, timeout=30)
                            continue
                        absent = rpc_pb2.Compare(
                            result=rpc_pb2.Compare.EQUAL, target=rpc_pb2.Compare.CREATE, key=key
                        )
                        txn = rpc_pb2.TxnRequest(
                            compare=[absent], success=[rpc_pb2.RequestOp(request_put=put)]
                        )
                        await kv.Txn(txn, timeout=30)

                t0 = time.perf_counter()
                await asyncio.gather(*(worker() for _ in range(32)))
                return n_raw / (time.perf_counter() - t0)

            async def api(round_: int) -> float:
                cps, _ = await self.closed_loop(
                    session,
                    "POST",
                    lambda i: ns,
                    lambda i: {
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "metadata": {"name": f"f-{round_}-{i}"},
                        "data": {"k": "v"},
                    },
                    32,
                    n_api,
                )
                return cps

            await raw("put", -1)  # warm-up
            await api(-1)
            phases = ("put", "txn", "api")
            for round_ in range(rounds):
                shift = round_ % len(phases)
                for phase in phases[shift:] + phases[:shift]:
                    etcd0, server0 = cpu_s(etcd_pid), cpu_s(server_pid)
                    if phase == "api":
                        rates[phase].append(await api(round_))
                        server_cpu.append((cpu_s(server_pid) - server0) / n_api)
                        etcd_cpu[phase].append((cpu_s(etcd_pid) - etcd0) / n_api)
                    else:
                        rates[phase].append(await raw(phase, round_))
                        etcd_cpu[phase].append((cpu_s(etcd_pid) - etcd0) / n_raw)
        ratio = statistics.median(a / p for a, p in zip(rates["api"], rates["put"], strict=True))
        ratio_txn = statistics.median(
            a / t for a, t in zip(rates["api"], rates["txn"], strict=True)
        )
        self.figures["etcd"]["raw puts/s (32)"] = statistics.median(rates["put"])
        self.figures["etcd"]["API creates % of raw puts"] = ratio * 100
        print(
            f"etcd floor (32 concurrent callers, {len(value)} B values, {rounds} interleaved "
            "rounds, medians; raw calls through the driver's grpc.aio TLS client):"
        )
        self.report(
            "etcd",
            "raw Put RPCs (the floor)",
            f"{statistics.median(rates['put']):8.0f} /s  "
            f"etcd CPU {statistics.median(etcd_cpu['put']) * 1e3:.2f} ms/put",
        )
        self.report(
            "etcd",
            "raw create-if-absent Txn RPCs",
            f"{statistics.median(rates['txn']):8.0f} /s  "
            f"etcd CPU {statistics.median(etcd_cpu['txn']) * 1e3:.2f} ms/txn",
        )
        self.report(
            "etcd",
            "API ConfigMap creates",
            f"{statistics.median(rates['api']):8.0f} /s  ({ratio:.0%} of raw puts, goal >= 70%; "
            f"{ratio_txn:.0%} of raw Txns)  server CPU "
            f"{statistics.median(server_cpu) * 1e3:.2f} ms/create, etcd CPU "
            f"{statistics.median(etcd_cpu['api']) * 1e3:.2f} ms/create",
        )

    def summary(self, datastores: tuple[str, ...]) -> None:
        if len(self.figures) < 2:
            return
        print("Summary (same run):")
        names = list(self.figures)
        print(f"  {'figure':<34}" + "".join(f"{n:>12}" for n in names))
        keys = dict.fromkeys(k for n in names for k in self.figures[n])
        for key in keys:
            cells = "".join(
                f"{self.figures[n][key]:12,.1f}" if key in self.figures[n] else f"{'-':>12}"
                for n in names
            )
            print(f"  {key:<34}{cells}")


def watch_client(spec_text: str) -> None:
    """A child of the fan-out row (see ``watch_fan_out_procs``)."""
    spec = json.loads(spec_text)
    workdir = Path(spec["dir"])
    ctx = ssl.create_default_context(cafile=str(workdir / "ca.crt"))
    ctx.load_cert_chain(str(workdir / "client.crt"), str(workdir / "client.key"))
    ctx.check_hostname = False

    async def main() -> None:
        got: list[list[float]] = []
        done = 0
        ready = 0
        all_ready = asyncio.Event()
        release = asyncio.Event()
        all_got = asyncio.Event()
        timeout = aiohttp.ClientTimeout(total=None, sock_read=120)
        conn = aiohttp.TCPConnector(ssl=ctx, limit=0)
        async with aiohttp.ClientSession(connector=conn, timeout=timeout) as ws:

            async def watcher() -> None:
                nonlocal ready, done
                for _attempt in range(60):
                    async with ws.get(spec["url"]) as r:
                        if r.status == 429:
                            await asyncio.sleep(float(r.headers.get("Retry-After", "1")))
                            continue
                        if r.status != 200:
                            raise SystemExit(f"watch: {r.status} {await r.text()}")
                        ready += 1
                        if ready == spec["count"]:
                            all_ready.set()
                        times: list[float] = []
                        got.append(times)
                        async for line in r.content:
                            times.append(time.monotonic())
                            if json.loads(line).get("type") != "MODIFIED":
                                raise SystemExit(f"watch: unexpected event {line[:200]!r}")
                            if len(times) == spec["rounds"]:
                                break
                        done += 1
                        if done == spec["count"]:
                            all_got.set()
                        await release.wait()  # the connection stays open until told
                        return
                raise SystemExit("watch: refused 60 times (429)")

            tasks = [asyncio.create_task(watcher()) for _ in range(spec["count"])]
            await asyncio.wait_for(all_ready.wait(), 170)
            print("ready", flush=True)
            await asyncio.wait_for(all_got.wait(), 170)
            print(json.dumps({"times": got, "cpu_s": time.process_time()}), flush=True)
            await asyncio.to_thread(sys.stdin.readline)
            release.set()
            await asyncio.wait_for(asyncio.gather(*tasks), 170)

    asyncio.run(main())


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def free_etcd_ports() -> tuple[int, int]:
    """A client port and a peer port whose next port (etcd's metrics) is free too."""
    for _ in range(100):
        client, peer = free_port(), free_port()
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", peer + 1))
        except OSError:
            continue
        if len({client, peer, peer + 1}) == 3:
            return client, peer
    raise SystemExit("no free ports for etcd")


def child_pid(parent: int, comm: str) -> int:
    """The pid of ``parent``'s child process named ``comm``."""
    for task in Path(f"/proc/{parent}/task").iterdir():
        for pid in (task / "children").read_text().split():
            if Path(f"/proc/{pid}/comm").read_text().strip() == comm:
                return int(pid)
    raise SystemExit(f"no {comm} child of process {parent}")


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts")
    parser.add_argument("--secrets", action="store_true", help="only the Secrets rows")
    parser.add_argument(
        "--datastore",
        default="sqlite",
        help="comma-separated: sqlite (always run, the reference) and etcd (embedded: "
        "sampan server --cluster-init, with etcd's raw put rate as its floor)",
    )
    parser.add_argument("--no-secrets", action="store_true", help="leave out the Secrets rows")
    parser.add_argument(
        "--rows",
        default=",".join(ROWS),
        help=f"comma-separated rows to run on SQLite: {', '.join(ROWS)} (create includes "
        "the 500/s and LIST rows)",
    )
    parser.add_argument(
        "--watch-procs",
        type=int,
        default=4,
        help="client processes for the second fan-out row (0: leave it out)",
    )
    parser.add_argument(
        "--profile-fan-out",
        default="",
        metavar="PATH",
        help="py-spy record (raw, 3 s) of the server around the multi-process fan-out",
    )
    parser.add_argument("--watch-client", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.watch_client:
        watch_client(args.watch_client)
        return
    rows = frozenset(r.strip() for r in args.rows.split(",") if r.strip())
    if rows - set(ROWS):
        parser.error(f"unknown row(s): {', '.join(sorted(rows - set(ROWS)))}")
    datastores = tuple(d.strip() for d in args.datastore.split(",") if d.strip())
    unknown = set(datastores) - {"sqlite", "etcd"}
    if unknown:
        parser.error(f"unknown datastore(s): {', '.join(sorted(unknown))}")
    with tempfile.TemporaryDirectory(prefix="sampan-bench-api-") as tmp:
        bench = Bench(Path(tmp), args.quick, rows, args.watch_procs)
        bench.profile_fan_out = args.profile_fan_out
        try:
            asyncio.run(
                bench.run(datastores, secrets_only=args.secrets, secrets=not args.no_secrets)
            )
        finally:
            bench.stop()


if __name__ == "__main__":
    main()
