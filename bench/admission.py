"""Admission webhook benchmark: ``python -m bench.admission``.

Starts ``sampan server`` (datastore + API server, as bench/api.py does) and three local TLS
admission webhook servers (child processes, aiohttp, a serving certificate from a CA made here
with ``cryptography``). Then, with 0, 1 and 3 ValidatingWebhookConfigurations matching
ConfigMap creates (one webhook each, reached by URL with its caBundle), it measures:

* create latency p50/p99 with one client (sequential creates: the webhook calls are on the
  critical path of every request);
* creates/s with 32 concurrent clients;
* the API server's CPU time per create (from /proc; unlike latency, it does not depend on how
  busy the machine is);

and reports the overhead per webhook call at p50 against the run without webhooks, measured in
the same run. Validating webhooks of one request are called concurrently (as upstream), so 3
webhooks cost less than 3 sequential calls.

Goal (issue #14): overhead per webhook call <= 2 ms at p50.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import aiohttp
from tests.support.tls import serving_pki

from bench.api import Bench, client_ssl, free_port, pct

VWC = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations"
MAX_WEBHOOKS = 3

WEBHOOK_APP = textwrap.dedent(
    """
    import json, ssl, sys
    from aiohttp import web
    deny_label = sys.argv[4]
    async def review(request):
        body = await request.json()
        req = body["request"]
        labels = ((req.get("object") or {}).get("metadata") or {}).get("labels") or {}
        response = {"uid": req["uid"], "allowed": deny_label not in labels}
        if not response["allowed"]:
            response["status"] = {"message": "probe"}
        return web.json_response({"apiVersion": body["apiVersion"], "kind": "AdmissionReview",
                                  "response": response})
    app = web.Application()
    app.router.add_post("/validate", review)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(sys.argv[2], sys.argv[3])
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), ssl_context=ctx,
                print=None, access_log=None)
    """
)


def make_pki(directory: Path) -> tuple[bytes, Path, Path]:
    """(CA PEM, serving cert path, key path) for 127.0.0.1."""
    pki = serving_pki(directory, common_name="bench-webhook", stem="webhook")
    return pki.ca_pem, pki.cert_path, pki.key_path


class AdmissionBench(Bench):
    async def start_webhooks(self) -> list[int]:
        self.ca_pem, cert, key = make_pki(self.workdir)
        ports = []
        for i in range(MAX_WEBHOOKS):
            port = free_port()
            proc = subprocess.Popen(
                [sys.executable, "-c", WEBHOOK_APP, str(port), str(cert), str(key), f"deny-{i}"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            self.procs.append(proc)
            ports.append(port)
        for port in ports:
            for _ in range(200):
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                        break
                except OSError:
                    await asyncio.sleep(0.05)
        return ports

    async def install(self, s: aiohttp.ClientSession, index: int, port: int) -> None:
        config = {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": f"bench-{index}"},
            "webhooks": [
                {
                    "name": f"bench-{index}.bench.example.com",
                    "clientConfig": {
                        "url": f"https://127.0.0.1:{port}/validate",
                        "caBundle": base64.b64encode(self.ca_pem).decode(),
                    },
                    "rules": [
                        {
                            "apiGroups": [""],
                            "apiVersions": ["v1"],
                            "operations": ["CREATE"],
                            "resources": ["configmaps"],
                        }
                    ],
                    "sideEffects": "None",
                    "admissionReviewVersions": ["v1"],
                    "timeoutSeconds": 5,
                }
            ],
        }
        async with s.post(self.url + VWC, json=config) as r:
            assert r.status == 201, await r.text()
        # In effect once a labelled probe is refused by exactly this webhook.
        probe_url = f"{self.url}/api/v1/namespaces/default/configmaps"
        for attempt in range(400):
            probe = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": f"probe-{index}-{attempt}", "labels": {f"deny-{index}": "1"}},
            }
            async with s.post(probe_url, json=probe) as r:
                if r.status == 400:
                    return
            await asyncio.sleep(0.025)
        raise SystemExit(f"webhook bench-{index} never took effect")

    async def run(self) -> None:  # type: ignore[override]
        await self.start_server()
        ports = await self.start_webhooks()
        ctx = client_ssl(self.kubeconfig, self.workdir)
        conn = aiohttp.TCPConnector(ssl=ctx, limit=0)
        timeout = aiohttp.ClientTimeout(total=None, sock_read=120)
        n_seq = 300 if self.quick else 1500
        n_par = 1000 if self.quick else 5000
        rows: list[tuple[int, float, float, float]] = []
        async with aiohttp.ClientSession(connector=conn, timeout=timeout) as s:
            base = f"{self.url}/api/v1/namespaces/default/configmaps"
            installed = 0
            for count in (0, 1, MAX_WEBHOOKS):
                while installed < count:
                    await self.install(s, installed, ports[installed])
                    installed += 1
                prefix = f"n{count}-"

                def body(i: int, prefix: str = prefix) -> dict:
                    return {
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "metadata": {"name": f"{prefix}{i}"},
                        "data": {"key": "value"},
                    }

                # warm-up (connections to the webhooks, caches)
                await self.closed_loop(
                    s, "POST", lambda i: base, lambda i, b=body: b(10_000_000 + i), 4, 100
                )
                cpu0 = server_cpu_s(self.server_pid)
                _, lat = await self.closed_loop(s, "POST", lambda i: base, body, 1, n_seq)
                cpu = (server_cpu_s(self.server_pid) - cpu0) / n_seq
                rps, _ = await self.closed_loop(
                    s, "POST", lambda i: base, lambda i, b=body: b(1_000_000 + i), 32, n_par
                )
                rows.append((count, pct(lat, 50), pct(lat, 99), rps, cpu))
        print("ConfigMap creates with N matching validating webhooks (local TLS webhook servers):")
        base_p50, base_cpu = rows[0][1], rows[0][4]
        for count, p50, p99, rps, cpu in rows:
            overhead = ""
            if count:
                total = (p50 - base_p50) * 1e3
                extra_cpu = (cpu - base_cpu) * 1e3
                overhead = (
                    f"\n      overhead p50 {total:.2f} ms ({total / count:.2f} ms/webhook); API "
                    f"server CPU +{extra_cpu / count:.2f} ms/webhook call"
                )
            self.report(
                f"{count} webhook(s)",
                f"p50 {p50 * 1e3:.2f} ms  p99 {p99 * 1e3:.2f} ms  {rps:7.0f} creates/s "
                f"(32 clients)  API server CPU {cpu * 1e3:.2f} ms/create{overhead}",
            )
        one = (rows[1][1] - base_p50) * 1e3
        print(f"  goal: overhead per webhook call <= 2 ms at p50 (1 webhook: {one:.2f} ms)")
        print(
            f"  (load average while measuring: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)"
        )


def server_cpu_s(pid: int) -> float:
    """User + system CPU seconds the process used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sampan-bench-admission-") as tmp:
        bench = AdmissionBench(Path(tmp), args.quick)
        started = time.monotonic()
        try:
            asyncio.run(bench.run())
        finally:
            bench.stop()
        print(f"  ({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
