"""Smoke runs of the benchmarks that need neither root nor a node: each runs at a tiny size,
as a user would run it (``python -m bench.X``), and must finish and print its figures. The
figures themselves are not judged here (benchmarks print them beside their baselines); this
only keeps the benchmark code from breaking unnoticed between the runs that measure."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str, timeout: float) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"{args} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_scheduler_benchmark_in_memory_with_owners_and_anti_affinity() -> None:
    out = _run(
        "bench.scheduler",
        "--algorithm-only",
        "--nodes",
        "20",
        "--pods",
        "200",
        "--replicasets",
        "5",
        "--anti-affinity",
        timeout=120,
    )
    match = re.search(
        r"algorithm only \(20 nodes, 200 pods, 5 ReplicaSets, anti-affinity, in memory\): "
        r"(\d+) pods/s, [0-9.]+ ms CPU/pod, (\d+) nodes used, at most (\d+) pods on one",
        out,
    )
    assert match, out
    # Every pod was placed (200 over 20 nodes, spread: no node took them all).
    assert int(match.group(2)) == 20
    assert int(match.group(3)) < 200


@pytest.mark.slow
def test_scale_benchmark_at_a_tiny_size(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    out = _run(
        "bench.scale",
        "--nodes",
        "3",
        "--pods",
        "30",
        "--latency-pods",
        "2",
        "--report",
        str(report),
        timeout=600,
    )
    assert "pods Running per second" in out, out
    report_json = json.loads(report.read_text())
    params = report_json["params"]
    assert (params["nodes"], params["pods"]) == (3, 30), params
    figures = report_json["figures"]
    assert figures["pods_running"] == 30 and figures["latency_pods_running"] == 2, figures
    assert figures["mutating_failures"] == 0, figures
    for key in ("ramp_server_cpu_ms_per_pod", "server_rss_mb", "restart_readyz_s"):
        assert figures[key] > 0, (key, figures)
