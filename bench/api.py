"""API server benchmark: ``python -m bench.api``.

Starts ``sampan server`` (datastore + API server) as a child process with a temporary data
dir, and beside it a trivial aiohttp JSON handler over the same TLS certificate as the ceiling.
A client in this process (aiohttp over TLS with the admin client certificate) measures:

* GET of one object: requests/s, p50/p99 latency — beside the trivial handler, with the ratio;
* creates/s with 32 concurrent clients;
* create latency p50/p99 at a fixed offered rate of 500 creates/s (open loop);
* LIST of 10,000 objects (latency, median of 5);
* watch fan-out: 1,000 watchers, one change, p99 time until every watcher has the event;
* Secrets (issue "Security hardening"): creates/s and GETs/s of Secrets on four more servers
  started one after the other — identity (the baseline), ``aescbc``, ``secretbox``
  (``encryption-provider-config``), and identity with an audit policy at Metadata level
  (every request written to the audit log) — two rounds in alternating order, best of the
  two per server, each beside the baseline.

Goals (issue "API server, part 1"): GET >= 40% of the trivial handler's requests/s; >= 2,000
creates/s; p99 create latency < 25 ms at 500 creates/s; fan-out p99 < 100 ms. Secrets: each
variant at most 10% slower than identity. ``--secrets`` runs the Secrets rows alone.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
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

READY_TIMEOUT_S = 60.0


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
    def __init__(self, workdir: Path, quick: bool) -> None:
        self.workdir = workdir
        self.quick = quick
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.kubeconfig = workdir / "kubeconfig.yaml"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.results: list[tuple[str, str]] = []

    def report(self, name: str, value: str) -> None:
        self.results.append((name, value))
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

    async def start_ceiling(self) -> str:
        port = free_port()
        tls = self.workdir / "data" / "server" / "tls"
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
                f"Secret create/get: {labels[name]}",
                f"{statistics.median(creates[name]):6.0f} creates/s ({c_ratio:4.0%})  "
                f"{statistics.median(gets[name]):6.0f} gets/s ({g_ratio:4.0%})  "
                f"server CPU {statistics.median(cpu[name]) * 1e3:.2f} ms/request "
                f"({statistics.median(cpu[name]) / statistics.median(cpu['identity']):4.0%})",
            )

    async def run(self, secrets_only: bool = False) -> None:
        if secrets_only:
            await self.run_secrets()
            return
        await self.start_server()
        ctx = client_ssl(self.kubeconfig, self.workdir)
        ceiling = await self.start_ceiling()
        conn = aiohttp.TCPConnector(ssl=ctx, limit=0)
        timeout = aiohttp.ClientTimeout(total=None, sock_read=120)
        async with aiohttp.ClientSession(connector=conn, timeout=timeout) as s:
            ns = f"{self.url}/api/v1/namespaces/default/configmaps"
            cm = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "bench"},
                "data": {"key": "value"},
            }
            async with s.post(ns, json=cm) as r:
                assert r.status == 201, await r.text()

            n_get = 2000 if self.quick else 10000
            await self.closed_loop(s, "GET", lambda i: ceiling + "/x", lambda i: None, 32, 500)
            ceil_rps, ceil_lat = await self.closed_loop(
                s, "GET", lambda i: ceiling + "/x", lambda i: None, 32, n_get
            )
            await self.closed_loop(s, "GET", lambda i: ns + "/bench", lambda i: None, 32, 500)
            rps, lat = await self.closed_loop(
                s, "GET", lambda i: ns + "/bench", lambda i: None, 32, n_get
            )
            print("GET one object (32 concurrent clients, TLS):")
            self.report(
                "trivial aiohttp handler (ceiling)",
                f"{ceil_rps:8.0f} req/s  p50 {pct(ceil_lat, 50) * 1e3:.1f} ms  "
                f"p99 {pct(ceil_lat, 99) * 1e3:.1f} ms",
            )
            self.report(
                "sampan GET configmap",
                f"{rps:8.0f} req/s  p50 {pct(lat, 50) * 1e3:.1f} ms  "
                f"p99 {pct(lat, 99) * 1e3:.1f} ms  ({rps / ceil_rps:.0%} of ceiling; "
                "goal >= 40%)",
            )

            n_create = 1000 if self.quick else 3000
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
            print("Creates:")
            self.report(
                "creates/s (32 concurrent)",
                f"{cps:8.0f} /s  p99 {pct(clat, 99) * 1e3:.1f} ms  (goal >= 2,000/s)",
            )

            rate = 500
            duration_s = 3 if self.quick else 6
            lat500: list[float] = []

            async def one(i: int) -> None:
                t0 = time.perf_counter()
                async with s.post(
                    ns,
                    json={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"r-{i}"}},
                ) as r:
                    await r.read()
                lat500.append(time.perf_counter() - t0)

            tasks = []
            start = time.perf_counter()
            for i in range(rate * duration_s):
                delay = start + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(one(i)))
            await asyncio.gather(*tasks)
            self.report(
                f"create latency at {rate}/s offered",
                f"p50 {pct(lat500, 50) * 1e3:.1f} ms  p99 {pct(lat500, 99) * 1e3:.1f} ms  "
                "(goal p99 < 25 ms)",
            )

            # LIST of 10,000 objects in their own namespace.
            async with s.post(
                f"{self.url}/api/v1/namespaces",
                json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench-list"}},
            ) as r:
                assert r.status == 201, await r.text()
            lns = f"{self.url}/api/v1/namespaces/bench-list/configmaps"
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
            print("LIST:")
            self.report(
                f"LIST of {count} configmaps (median of 5)",
                f"{statistics.median(list_lat) * 1e3:8.1f} ms",
            )

            # Watch fan-out.
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
                    async with ws.get(url) as r:
                        ready += 1
                        if ready == n_watchers:
                            all_ready.set()
                        async for line in r.content:
                            event = json.loads(line)
                            if event["type"] != "MODIFIED":
                                raise SystemExit(f"watch: unexpected event {line[:200]!r}")
                            got.append(time.perf_counter())
                            return

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
            print("Watch fan-out:")
            self.report(
                f"{n_watchers} watchers, one change",
                f"p50 {pct(delays, 50) * 1e3:.1f} ms  p99 {pct(delays, 99) * 1e3:.1f} ms  "
                "(goal p99 < 100 ms)",
            )
        await self.run_secrets()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts")
    parser.add_argument("--secrets", action="store_true", help="only the Secrets rows")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sampan-bench-api-") as tmp:
        bench = Bench(Path(tmp), args.quick)
        try:
            asyncio.run(bench.run(secrets_only=args.secrets))
        finally:
            bench.stop()


if __name__ == "__main__":
    main()
