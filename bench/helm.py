"""HelmChart benchmark: ``python -m bench.helm``.

Starts the API server in-process (the tests' harness: SQLite, real TLS, no node), a chart
repository on 127.0.0.1 and the helm controller, then, for the acceptance chart (Deployment,
Service, ConfigMaps, a subchart) and for a chart of 100 ConfigMap templates, measures in the
same run:

* ``HelmChart``: wall time from creating the object to ``status.releaseRevision == 1``
  (install), and from patching ``valuesContent`` to revision 2 (upgrade) — what a user waits
  for; it includes reading the repository index, downloading the chart and starting the Helm
  child process;
* the Helm engine alone, cold (``run_engine``: a fresh child per operation, no controller);
* the baseline: ``kubectl apply --server-side`` of the same manifests rendered by Helm
  (``helm template`` equivalent), first apply (creates) and second (the upgrade's changes).

The goal is HelmChart ≤ 1.5x kubectl. The status is polled every ``POLL_S``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.helm.charts import ChartRepo, demo_chart_files, many_templates_chart_files
from tests.support.apiserver import ApiServerHarness

from sampan.controllers.base import ControllerManagerOptions
from sampan.helm.component import HelmControllerComponent
from sampan.helm.controller import HelmOptions, kubeconfig_text
from sampan.helm.crd import HELMCHARTS
from sampan.helm.engine import run_engine

KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"
POLL_S = 0.01
TEMPLATES = 100


def render(archive: bytes, release: str, namespace: str, values: dict[str, Any]) -> str:
    """The manifests ``helm template`` prints (sorted by file name, as Helm does)."""
    import helm_python as helm

    with helm.Chart.load_archive(archive) as chart:
        rendered = chart.render(values, name=release, namespace=namespace)
    docs = [
        f"---\n# Source: {path}\n{text}"
        for path, text in sorted(rendered.items())
        if not path.endswith("NOTES.txt") and text.strip()
    ]
    return "\n".join(docs)


class HelmBench:
    def __init__(self, workdir: Path, rounds: int) -> None:
        self.workdir = workdir
        self.rounds = rounds
        self.harness = ApiServerHarness(workdir / "data")
        self.repo = ChartRepo()
        self.component: HelmControllerComponent | None = None
        self.rows: list[tuple[str, float, float, float]] = []

    async def kubectl(self, *args: str) -> float:
        env = dict(os.environ, KUBECONFIG=str(self.harness.kubeconfig), HOME=str(self.workdir))
        t0 = time.perf_counter()
        done = await asyncio.to_thread(
            subprocess.run, [KUBECTL, *args], env=env, capture_output=True, text=True, check=False
        )
        elapsed = time.perf_counter() - t0
        if done.returncode != 0:
            raise SystemExit(f"kubectl {' '.join(args)} failed: {done.stderr}")
        return elapsed

    async def namespace(self, name: str) -> None:
        await self.kubectl("create", "namespace", name)

    async def wait_revision(self, client: Any, name: str, namespace: str, revision: int) -> None:
        while True:
            chart = await client.get(HELMCHARTS, name, namespace=namespace)
            status = chart.get("status") or {}
            failed = [c for c in status.get("conditions") or [] if c["type"] == "Failed"]
            if failed and failed[0]["status"] == "True":
                raise SystemExit(f"{name}: {failed[0].get('message')}")
            if status.get("releaseRevision") == revision and status.get("configHash"):
                return
            await asyncio.sleep(POLL_S)

    async def one_chart(self, label: str, chart: str, archive: bytes, round_: int) -> None:
        v1 = {"greeting": "one", "value": "one"}
        v2 = {"greeting": "two", "value": "two"}
        suffix = f"{chart}-{round_}"
        # Baseline: kubectl apply --server-side of the rendered manifests.
        ns_k = f"k-{suffix}"
        await self.namespace(ns_k)
        files = []
        for index, values in enumerate((v1, v2)):
            path = self.workdir / f"{suffix}-{index}.yaml"
            path.write_text(render(archive, chart, ns_k, values))
            files.append(path)
        k_install = await self.kubectl("apply", "--server-side", "-n", ns_k, "-f", str(files[0]))
        k_upgrade = await self.kubectl("apply", "--server-side", "-n", ns_k, "-f", str(files[1]))

        # The Helm engine alone.
        ns_e = f"e-{suffix}"
        await self.namespace(ns_e)
        request = {
            "action": "apply",
            "release": chart,
            "namespace": ns_e,
            "chart": base64.b64encode(archive).decode(),
            "kubeconfig": kubeconfig_text(self.harness.client_config()),
            "timeout_s": 300,
        }
        t0 = time.perf_counter()
        await run_engine({**request, "values_layers": [v1]})
        e_install = time.perf_counter() - t0
        t0 = time.perf_counter()
        await run_engine({**request, "values_layers": [v2]})
        e_upgrade = time.perf_counter() - t0

        # The HelmChart, as a user sees it.
        ns_h = f"h-{suffix}"
        await self.namespace(ns_h)
        async with self.harness.new_client() as client:
            body = {
                "apiVersion": "helm.cattle.io/v1",
                "kind": "HelmChart",
                "metadata": {"name": chart, "namespace": ns_h},
                "spec": {"chart": chart, "repo": self.repo.url, "valuesContent": _yaml(v1)},
            }
            t0 = time.perf_counter()
            await client.create(HELMCHARTS, body, namespace=ns_h)
            await self.wait_revision(client, chart, ns_h, 1)
            h_install = time.perf_counter() - t0
            t0 = time.perf_counter()
            await client.patch(
                HELMCHARTS, chart, {"spec": {"valuesContent": _yaml(v2)}}, namespace=ns_h
            )
            await self.wait_revision(client, chart, ns_h, 2)
            h_upgrade = time.perf_counter() - t0
        self.rows.append((f"{label} install", h_install, e_install, k_install))
        self.rows.append((f"{label} upgrade", h_upgrade, e_upgrade, k_upgrade))

    async def run(self) -> None:
        (self.workdir / "data").mkdir()
        await self.harness.start()
        demo = self.repo.add(demo_chart_files())
        many = self.repo.add(many_templates_chart_files(TEMPLATES))
        await self.repo.start()
        self.component = HelmControllerComponent(
            self.harness.client_config(),
            HelmOptions(static_dir=self.workdir / "static"),
            ControllerManagerOptions(leader_elect=False),
        )
        await self.component.start()
        await self.component.wait_started()
        try:
            for round_ in range(self.rounds):
                await self.one_chart("demo chart", "demo", demo, round_)
                await self.one_chart(f"{TEMPLATES}-template chart", "many", many, round_)
        finally:
            await self.component.stop()
            await self.repo.stop()
            await self.harness.stop()
        self.report()

    def report(self) -> None:
        print(f"{'':28} {'HelmChart':>10} {'cold engine':>12} {'kubectl SSA':>12} {'ratio':>7}")
        by_label: dict[str, list[tuple[float, float, float]]] = {}
        for label, h, e, k in self.rows:
            by_label.setdefault(label, []).append((h, e, k))
        for label, samples in by_label.items():
            h, e, k = (_median([s[i] for s in samples]) for i in range(3))
            print(f"{label:28} {h:9.2f}s {e:11.2f}s {k:11.2f}s {h / k:6.2f}x")
        print(f"(median of {self.rounds} round(s); ratio = HelmChart / kubectl; goal <= 1.5x)")


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def _yaml(values: dict[str, Any]) -> str:
    return "".join(f"{key}: {value}\n" for key, value in values.items())


def main(argv: list[str] | None = None, runner: Callable[..., Any] = asyncio.run) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.helm", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3, help="repetitions (median reported)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sampan-bench-helm-") as tmp:
        runner(HelmBench(Path(tmp), args.rounds).run())


if __name__ == "__main__":
    main()
