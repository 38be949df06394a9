"""Cgroup readings (v1 hybrid and v2 layouts in a temp tree) and CPU rates from samples."""

from __future__ import annotations

from pathlib import Path

from sampan.kubelet.stats import _Series, read_cgroup_usage


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v1(tmp_path: Path) -> None:
    pod = "kubepods/burstable/podabc"
    _write(tmp_path / "cpuacct" / pod / "cpuacct.usage", "2500000000\n")
    _write(tmp_path / "memory" / pod / "memory.usage_in_bytes", "10485760\n")
    _write(
        tmp_path / "memory" / pod / "memory.stat",
        "cache 100\nrss 1\ntotal_rss 4194304\ntotal_inactive_file 2097152\ntotal_pgfault 7\n"
        "total_pgmajfault 1\n",
    )
    usage = read_cgroup_usage("/" + pod, fs=tmp_path)
    assert usage is not None
    assert usage.cpu_ns == 2_500_000_000
    assert usage.memory_usage == 10485760
    assert usage.working_set == 10485760 - 2097152
    assert usage.rss == 4194304
    assert (usage.page_faults, usage.major_page_faults) == (7, 1)
    assert read_cgroup_usage("/kubepods/podnone", fs=tmp_path) is None


def test_cgroup_v2(tmp_path: Path) -> None:
    _write(tmp_path / "cgroup.controllers", "cpu memory pids\n")
    pod = "kubepods/podabc"
    _write(tmp_path / pod / "cpu.stat", "usage_usec 1500000\nuser_usec 1000000\n")
    _write(tmp_path / pod / "memory.current", "8388608\n")
    _write(tmp_path / pod / "memory.stat", "anon 4194304\ninactive_file 9999999999\n")
    usage = read_cgroup_usage(pod, fs=tmp_path)
    assert usage is not None
    assert usage.cpu_ns == 1_500_000_000
    assert usage.working_set == 0  # inactive file pages larger than usage: never negative
    assert usage.rss == 4194304


def test_rate_needs_two_samples_and_survives_a_reset() -> None:
    series = _Series()
    series.add(0, 0)
    assert series.rate() is None
    series.add(2_000_000_000, 1_000_000_000)  # one core-second over two seconds
    assert series.rate() == 500_000_000
    series.add(3_000_000_000, 10)  # counter went back: a new container
    assert series.rate() is None


def test_net_dev(tmp_path: Path) -> None:
    from sampan.kubelet.stats import read_net_dev

    _write(
        tmp_path / "dev",
        "Inter-|   Receive                                                |  Transmit\n"
        " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs"
        " drop fifo colls carrier compressed\n"
        "    lo:  100 1 0 0 0 0 0 0  100 1 0 0 0 0 0 0\n"
        "  eth0: 5000 10 2 0 0 0 0 0 7000 12 3 0 0 0 0 0\n",
    )
    assert read_net_dev(tmp_path / "dev") == [
        {"name": "eth0", "rxBytes": 5000, "rxErrors": 2, "txBytes": 7000, "txErrors": 3}
    ]
    assert read_net_dev(tmp_path / "absent") == []


def test_prometheus_families_from_a_snapshot() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from sampan.kubelet.stats import (
        CgroupUsage,
        _CadvisorCollector,
        _ContainerReading,
        _PodReading,
        _ResourceCollector,
        _Snapshot,
    )

    at = 1_700_000_000_000_000_000
    container = _ContainerReading(
        name="app", container_id="abc", started_ns=at - 10**9, at=at, cpu_ns=3 * 10**9,
        working_set=2048, usage=4096, rss=1024, rootfs_used=None, image="busybox:1",
    )  # fmt: skip
    pod = _PodReading(
        name="web", namespace="default", uid="u1", started_ns=at, at=at,
        cgroup=CgroupUsage(cpu_ns=4 * 10**9, memory_usage=8192, working_set=4096, rss=2048),
        containers=[container],
        network=[{"name": "eth0", "rxBytes": 10, "rxErrors": 0, "txBytes": 20, "txErrors": 0}],
        cgroup_path="/kubepods/podu1",
    )  # fmt: skip
    snap = _Snapshot(at=at, node=CgroupUsage(cpu_ns=10**10, working_set=10**6), available=None,
                     pods=[pod])  # fmt: skip
    for collector, expected in (
        (
            _ResourceCollector(snap),
            [
                'container_cpu_usage_seconds_total{container="app",namespace="default",pod="web"}'
                " 3.0 1700000000000",
                'pod_memory_working_set_bytes{namespace="default",pod="web"} 4096.0 1700000000000',
                "node_cpu_usage_seconds_total 10.0 1700000000000",
            ],
        ),
        (
            _CadvisorCollector(snap),
            [
                'container_cpu_usage_seconds_total{container="app",cpu="total",'
                'id="/kubepods/podu1/abc",image="busybox:1",name="abc",namespace="default",'
                'pod="web"} 3.0 1700000000000',
                'container_network_receive_bytes_total{container="",id="/kubepods/podu1",image="",'
                'interface="eth0",name="",namespace="default",pod="web"} 10.0 1700000000000',
            ],
        ),
    ):
        registry = CollectorRegistry(auto_describe=False)
        registry.register(collector)
        lines = generate_latest(registry).decode().splitlines()
        for line in expected:
            assert line in lines, (line, lines)
