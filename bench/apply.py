"""Apply benchmark: ``python -m bench.apply``.

Starts ``sampan server`` (as bench.api does) and measures, beside a baseline taken in the same
run:

* ``kubectl apply -f <dir>`` of 100 objects (50 ConfigMaps, 50 Deployments): wall time of the
  first apply (creates), the second (all unchanged) and a third that changes every object
  (three-way strategic merge patches), beside ``kubectl create -f`` of the same objects in
  another namespace;
* server-side apply requests/s (32 concurrent clients, aiohttp over TLS): apply that creates,
  apply of an unchanged configuration, apply that changes a field — beside plain POST creates
  of the same ConfigMaps;
* with ``--openapi-rows``: ``kubectl create -f`` and the unchanged ``kubectl apply -f`` again,
  each through a plain-HTTP proxy in this process that forwards everything to the server
  (with the admin client certificate): once passing this server's OpenAPI v3 documents
  through, and once with every ``/openapi/v3`` URL a 404 (kubectl then falls back to
  ``/openapi/v2``, which it parses once per process: the floor that shows what kubectl's
  per-object parsing of v3 documents costs, kubernetes/kubernetes#127095);
* with ``--upstream-openapi DIR`` also a pair whose ``/openapi/v3/api/v1`` and
  ``/openapi/v3/apis/apps/v1`` are recorded kube-apiserver documents (``DIR/api/v1.json``,
  ``DIR/apis/apps/v1.json``: the layout of kubectl's ``testdata/openapi/v3``), their hashes
  put into the ``/openapi/v3`` index. Same kubectl, objects and server: the difference to
  the first pair is what the documents' size costs kubectl.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import aiohttp
import yaml
from aiohttp import web

from bench.admission import server_cpu_s
from bench.api import Bench, client_ssl, free_port, pct

KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"
APPLY_CONTENT_TYPE = "application/apply-patch+yaml"
KUBECTL_OBJECTS = 100
CONCURRENCY = 32


def manifest(index: int, namespace: str, generation: int) -> dict:
    if index % 2 == 0:
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": f"cm-{index}", "namespace": namespace},
            "data": {"key": f"value-{generation}", "other": "x" * 64},
        }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": f"deploy-{index}", "namespace": namespace},
        "spec": {
            "replicas": 1 + generation,
            "selector": {"matchLabels": {"app": f"d{index}"}},
            "template": {
                "metadata": {"labels": {"app": f"d{index}"}},
                "spec": {
                    "containers": [
                        {
                            "name": "main",
                            "image": f"registry.example/app:{generation}",
                            "ports": [{"containerPort": 8080}],
                        }
                    ]
                },
            },
        },
    }


RECORDED_GROUP_VERSIONS = ("api/v1", "apis/apps/v1")


class ApplyBench(Bench):
    upstream_openapi: Path | None = None
    openapi_rows = False

    def kubectl(
        self, *args: str, kubeconfig: Path | None = None, home: Path | None = None
    ) -> KubectlRun:
        env = dict(
            os.environ,
            KUBECONFIG=str(kubeconfig or self.kubeconfig),
            HOME=str(home or self.workdir),
        )
        children0 = _children_cpu_s()
        server0 = server_cpu_s(self.server_pid)
        t0 = time.perf_counter()
        done = subprocess.run(
            [KUBECTL, *args], env=env, capture_output=True, text=True, check=False
        )
        elapsed = time.perf_counter() - t0
        if done.returncode != 0:
            raise SystemExit(f"kubectl {' '.join(args)} failed: {done.stderr}")
        return KubectlRun(
            elapsed,
            _children_cpu_s() - children0,
            server_cpu_s(self.server_pid) - server0,
            done.stdout,
        )

    def line(self, name: str, value: str) -> None:
        self.report("apply", name, value)

    def write_dir(self, name: str, namespace: str, generation: int, count: int) -> Path:
        directory = self.workdir / name
        directory.mkdir(exist_ok=True)
        for index in range(count):
            obj = manifest(index, namespace, generation)
            (directory / f"{index:03d}.json").write_text(json.dumps(obj))
        return directory

    async def kubectl_apply(self) -> None:
        count = KUBECTL_OBJECTS // 4 if self.quick else KUBECTL_OBJECTS
        print(f"kubectl apply of {count} objects (wall time, one kubectl process each):")
        for namespace in ("bench-apply", "bench-create"):
            await asyncio.to_thread(self.kubectl, "create", "namespace", namespace)
        # Warm kubectl's discovery cache so both sides pay the same.
        await asyncio.to_thread(self.kubectl, "get", "namespaces")
        created = self.write_dir("create", "bench-create", 0, count)
        first = self.write_dir("apply-0", "bench-apply", 0, count)
        changed = self.write_dir("apply-1", "bench-apply", 1, count)
        baseline = await asyncio.to_thread(self.kubectl, "create", "-f", str(created))
        self.line("baseline: kubectl create -f", baseline.describe())
        runs = (
            ("kubectl apply -f (all created)", ("apply", "-f", str(first))),
            ("kubectl apply -f (all unchanged)", ("apply", "-f", str(first))),
            ("kubectl apply -f (all configured)", ("apply", "-f", str(changed))),
        )
        for label, args in runs:
            took = await asyncio.to_thread(self.kubectl, *args)
            if "unchanged" in label:
                took.expect_all("unchanged", count)
            self.line(label, took.describe(baseline))
        took = await asyncio.to_thread(
            self.kubectl, "apply", "--server-side", "--force-conflicts", "-f", str(first)
        )
        self.line("kubectl apply --server-side -f (all changed)", took.describe())

    async def rate(
        self,
        session: aiohttp.ClientSession,
        method: str,
        path_of,
        body_of,
        content_type: str,
        total: int,
    ) -> tuple[float, list[float]]:
        latencies: list[float] = []
        counter = iter(range(total))

        async def worker() -> None:
            for i in counter:
                data = json.dumps(body_of(i)).encode()
                t0 = time.perf_counter()
                async with session.request(
                    method, path_of(i), data=data, headers={"Content-Type": content_type}
                ) as resp:
                    body = await resp.read()
                    if resp.status >= 300:
                        raise SystemExit(f"{method} {path_of(i)}: {resp.status} {body[:300]!r}")
                latencies.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        return total / (time.perf_counter() - t0), latencies

    async def server_side_apply(self) -> None:
        total = 500 if self.quick else 3000
        print(f"Server-side apply, {CONCURRENCY} concurrent clients, {total} requests each:")
        ssl_context = client_ssl(self.kubeconfig, self.workdir)
        connector = aiohttp.TCPConnector(ssl=ssl_context, limit=CONCURRENCY)
        async with aiohttp.ClientSession(self.url, connector=connector) as session:
            base = "/api/v1/namespaces/default/configmaps"

            def cm(i: int, value: str) -> dict:
                return {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": f"ssa-{i}"},
                    "data": {"key": value, "other": "x" * 64},
                }

            def posted(i: int) -> dict:
                return {**cm(i, "v"), "metadata": {"name": f"post-{i}"}}

            rate, lat = await self.rate(
                session, "POST", lambda i: base, posted, "application/json", total
            )
            self.line("baseline: POST creates/s", _rate(rate, lat))
            runs = (
                ("apply creating the object", "a"),
                ("apply unchanged", "a"),
                ("apply changing a field", "b"),
            )
            for label, value in runs:
                rate, lat = await self.rate(
                    session,
                    "PATCH",
                    lambda i: f"{base}/ssa-{i}?fieldManager=bench",
                    lambda i, value=value: cm(i, value),
                    APPLY_CONTENT_TYPE,
                    total,
                )
                self.line(f"{label}/s", _rate(rate, lat))

    async def recorded_openapi(self) -> None:
        """create/apply pairs through the proxy: this server's documents, recorded
        kube-apiserver documents for the two group-versions the objects use (when given),
        no v3 documents at all."""
        recorded = {}
        for gv_path in RECORDED_GROUP_VERSIONS if self.upstream_openapi else ():
            document = json.loads((self.upstream_openapi / f"{gv_path}.json").read_text())
            body = json.dumps(document, separators=(",", ":")).encode()
            recorded[gv_path] = (body, hashlib.sha512(body).hexdigest().upper())
        ours = [len(self.openapi_bytes(gv)) // 1024 for gv in RECORDED_GROUP_VERSIONS]
        theirs = [len(b) // 1024 for b, _ in recorded.values()]
        print(
            "Through a proxy, kubectl CPU by OpenAPI document (KiB of "
            f"{' and '.join(RECORDED_GROUP_VERSIONS)}: ours {ours}"
            + (f", kube-apiserver's {theirs}" if theirs else "")
            + "):"
        )
        count = KUBECTL_OBJECTS // 4 if self.quick else KUBECTL_OBJECTS
        applied = self.workdir / "apply-0"
        # The rows above left the objects changed by a server-side apply: one client-side
        # apply of the same files brings the last-applied annotation back in line, so each
        # apply below has nothing to change.
        await asyncio.to_thread(self.kubectl, "apply", "-f", str(applied))
        ssl_context = client_ssl(self.kubeconfig, self.workdir)
        modes = (
            ("ours", "this server's OpenAPI", {}, False),
            ("recorded", "kube-apiserver's OpenAPI", recorded, False),
            ("v2", "no OpenAPI v3 (kubectl uses v2)", {}, True),
        )
        for name, label, documents, hide_v3 in modes:
            if name == "recorded" and not recorded:
                continue
            proxy = OpenAPIProxy(self.url, ssl_context, documents, hide_v3=hide_v3)
            port = await proxy.start()
            try:
                kubeconfig = self.workdir / f"kubeconfig-proxy-{name}.yaml"
                config = yaml.safe_load(self.kubeconfig.read_text())
                config["clusters"][0]["cluster"] = {"server": f"http://127.0.0.1:{port}"}
                config["users"][0]["user"] = {}
                kubeconfig.write_text(yaml.safe_dump(config))
                home = self.workdir / f"home-{name}"
                home.mkdir()
                namespace = f"bench-create-{name}"

                def run(*args: str, kubeconfig: Path = kubeconfig, home: Path = home) -> KubectlRun:
                    return self.kubectl(*args, kubeconfig=kubeconfig, home=home)

                await asyncio.to_thread(run, "create", "namespace", namespace)
                await asyncio.to_thread(run, "get", "namespaces")
                created = self.write_dir(f"create-{name}", namespace, 0, count)
                baseline = await asyncio.to_thread(run, "create", "-f", str(created))
                self.line(f"{label}: kubectl create -f", baseline.describe())
                took = await asyncio.to_thread(run, "apply", "-f", str(applied))
                took.expect_all("unchanged", count)
                self.line(f"{label}: kubectl apply -f (unchanged)", took.describe(baseline))
            finally:
                await proxy.stop()

    def openapi_bytes(self, gv_path: str) -> bytes:
        env = dict(os.environ, KUBECONFIG=str(self.kubeconfig), HOME=str(self.workdir))
        return subprocess.run(
            [KUBECTL, "get", "--raw", f"/openapi/v3/{gv_path}"],
            env=env,
            capture_output=True,
            check=True,
        ).stdout

    async def run(self) -> None:
        await self.start_server()
        await self.kubectl_apply()
        if self.openapi_rows:
            await self.recorded_openapi()
        await self.server_side_apply()


class OpenAPIProxy:
    """Plain-HTTP proxy to the server; answers ``/openapi/v3/<gv>`` from ``documents``
    (gv path -> (JSON bytes, hash)) with kube-apiserver's hashed-URL headers and rewrites
    the ``/openapi/v3`` index to name their hashes. With ``hide_v3`` every ``/openapi/v3``
    URL is a 404, as from a server older than 1.24: kubectl then validates and computes
    patches from ``/openapi/v2``, which it parses once per process (the floor row)."""

    def __init__(
        self,
        target: str,
        ssl_context,
        documents: dict[str, tuple[bytes, str]],
        *,
        hide_v3: bool = False,
    ) -> None:
        self.target = target
        self.ssl_context = ssl_context
        self.documents = documents
        self.hide_v3 = hide_v3
        self.runner: web.AppRunner | None = None
        self.session: aiohttp.ClientSession | None = None

    async def start(self) -> int:
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=self.ssl_context), auto_decompress=False
        )
        app = web.Application(client_max_size=64 << 20)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", port).start()
        return port

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
        if self.session is not None:
            await self.session.close()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if self.hide_v3 and (request.path + "/").startswith("/openapi/v3/"):
            return web.Response(status=404, text="404 page not found\n")
        gv_path = request.path.removeprefix("/openapi/v3/")
        if gv_path in self.documents:
            body, digest = self.documents[gv_path]
            headers = {"ETag": f'"{digest}"', "Vary": "Accept"}
            if request.query.get("hash") == digest:
                headers["Cache-Control"] = "public, immutable"
                headers["Expires"] = "Fri, 31 Dec 2099 23:59:59 UTC"
            return web.Response(body=body, content_type="application/json", headers=headers)
        index = request.path == "/openapi/v3" and bool(self.documents)
        skip = {"host", "content-length"} | ({"if-none-match"} if index else set())
        headers = {k: v for k, v in request.headers.items() if k.lower() not in skip}
        assert self.session is not None
        async with self.session.request(
            request.method,
            self.target + str(request.rel_url),
            headers=headers,
            data=await request.read(),
        ) as upstream:
            body = await upstream.read()
            if index and upstream.status == 200:
                paths = json.loads(body)["paths"]
                for gv, (_, digest) in self.documents.items():
                    paths[gv] = {"serverRelativeURL": f"/openapi/v3/{gv}?hash={digest}"}
                body = json.dumps({"paths": paths}).encode()
            drop = {"content-length", "transfer-encoding", "connection"}
            out = {k: v for k, v in upstream.headers.items() if k.lower() not in drop}
            return web.Response(body=body, status=upstream.status, headers=out)


class KubectlRun:
    """Wall time of one kubectl run and the CPU seconds kubectl and the server spent in it."""

    def __init__(
        self, wall_s: float, kubectl_cpu_s: float, server_cpu_s: float, stdout: str = ""
    ) -> None:
        self.stdout = stdout
        self.wall_s = wall_s
        self.kubectl_cpu_s = kubectl_cpu_s
        self.server_cpu_s = server_cpu_s

    def expect_all(self, outcome: str, count: int) -> None:
        """Every object's line of kubectl's output ends with ``outcome`` (so a timed run did
        the work it is named for)."""
        lines = self.stdout.splitlines()
        if len(lines) != count or not all(line.endswith(f" {outcome}") for line in lines):
            raise SystemExit(f"expected {count} objects {outcome}, kubectl said:\n{self.stdout}")

    def describe(self, baseline: KubectlRun | None = None) -> str:
        ratio = f"({self.wall_s / baseline.wall_s:.2f}x)" if baseline is not None else ""
        return (
            f"{self.wall_s:5.2f} s {ratio:8} kubectl CPU {self.kubectl_cpu_s:5.2f} s"
            f"  server CPU {self.server_cpu_s:5.2f} s"
        )


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _rate(rate: float, latencies: list[float]) -> str:
    p50_ms = pct(latencies, 50) * 1e3
    p99_ms = pct(latencies, 99) * 1e3
    return f"{rate:8.0f}/s  p50 {p50_ms:.1f} ms  p99 {p99_ms:.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts")
    parser.add_argument(
        "--upstream-openapi",
        type=Path,
        metavar="DIR",
        help="recorded kube-apiserver OpenAPI v3 documents (DIR/api/v1.json, "
        "DIR/apis/apps/v1.json) to compare kubectl's cost with (see bench/README.md); "
        "implies --openapi-rows",
    )
    parser.add_argument(
        "--openapi-rows",
        action="store_true",
        help="create/unchanged apply again through a proxy: with this server's OpenAPI v3, "
        "then with none (kubectl falls back to v2)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sampan-bench-apply-") as tmp:
        bench = ApplyBench(Path(tmp), args.quick)
        bench.upstream_openapi = args.upstream_openapi
        bench.openapi_rows = args.openapi_rows or args.upstream_openapi is not None
        try:
            asyncio.run(bench.run())
        finally:
            bench.stop()


if __name__ == "__main__":
    main()
