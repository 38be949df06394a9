"""Service proxy benchmark (the iptables half): ``python -m bench.network [--services 1000]
[--endpoints 2]`` (root: uses a private network namespace, touches nothing else).

Printed, for ``--services`` ClusterIP+NodePort services with ``--endpoints`` ready endpoints
each:

* rule generation (``sampan.proxy.rules.build_rules``, pure Python) in ms and rule count;
* one full sync inside a fresh network namespace: ``iptables-save`` + generation +
  ``iptables-restore --noflush``, first (creating every chain) and again (steady state), and a
  partial sync after one service went away (only changed chains written, as the Proxy does);
* with an in-process API server and a running ``Proxy`` holding all those services: the time
  from deleting one Service (and its EndpointSlice) until its KUBE-SVC chain is gone from
  ``iptables-save`` (the brief's goal: within a second; the floor is the 1 s min sync period
  when a sync just ran), median of a few deletions.

Upstream kube-proxy for comparison (its documentation): iptables mode syncs take about a
second at 10,000 services; minSyncPeriod defaults to 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from sampan.proxy.rules import RuleOptions, build_rules, chain_hash, parse_save, service_ports

SERVICES = 1000
ENDPOINTS = 2
DELETIONS = 5


def _service(index: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"namespace": "default", "name": f"svc-{index}"},
        "spec": {
            "type": "NodePort",
            "clusterIP": f"10.43.{1 + index // 250}.{1 + index % 250}",
            "ports": [
                {
                    "name": "http",
                    "port": 80,
                    "targetPort": 8080,
                    "protocol": "TCP",
                    "nodePort": 30000 + index % 2700,
                }
            ],
        },
    }


def _pod_ip(number: int) -> str:
    return f"10.42.{number // 250 % 250}.{1 + number % 250}"


def _slice(index: int, endpoints: int) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "namespace": "default",
            "name": f"svc-{index}-1",
            "labels": {"kubernetes.io/service-name": f"svc-{index}"},
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [
            {
                "addresses": [_pod_ip(index * endpoints + e)],
                "conditions": {"ready": True},
                "nodeName": "n1",
            }
            for e in range(endpoints)
        ],
    }


def _ns(netns: str, *argv: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        ["ip", "netns", "exec", netns, *argv], input=stdin, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {result.stderr.strip()}")
    return result.stdout


def _sync_once(
    netns: str, ports: list[Any], options: RuleOptions, previous: Any = None
) -> tuple[float, Any]:
    start = time.perf_counter()
    saved = _ns(netns, "iptables-save", "-t", "nat") + _ns(netns, "iptables-save", "-t", "filter")
    chains, rules = parse_save(saved)
    ruleset = build_rules(ports, options, chains, rules, previous)
    _ns(netns, "iptables-restore", "--noflush", "-w", "5", stdin=ruleset.text)
    return time.perf_counter() - start, ruleset.contents


def _wait_gone(netns: str, chain: str) -> None:
    while chain in _ns(netns, "iptables-save", "-t", "nat"):
        time.sleep(0.02)


async def _deletion_latency(netns: str, services: int, endpoints: int) -> list[float]:
    from sampan.apiserver import APIServer, APIServerOptions
    from sampan.client import Client, ClientConfig
    from sampan.client.api import ENDPOINTSLICES
    from sampan.client.api import SERVICES as SVC
    from sampan.datastore import open_backend
    from sampan.pki import ensure_client_kubeconfig
    from sampan.proxy import Proxy, ProxyOptions

    with tempfile.TemporaryDirectory(prefix="sampan-bench-net-") as tmp:
        data_dir = pathlib.Path(tmp)
        backend = open_backend("", data_dir)
        await backend.start()
        admin = data_dir / "admin.kubeconfig"
        server = APIServer(
            APIServerOptions(
                tls_dir=data_dir / "server" / "tls",
                hostname="localhost",
                node_ips=("127.0.0.1",),
                bind_address="127.0.0.1",
                port=0,
                kubeconfig_path=admin,
            ),
            backend,
        )
        await server.start()
        proxy_kubeconfig = data_dir / "kube-proxy.kubeconfig"
        await asyncio.to_thread(
            ensure_client_kubeconfig,
            server.pki,
            name="kube-proxy",
            common_name="system:kube-proxy",
            path=proxy_kubeconfig,
            server_url=server.url,
        )
        try:
            async with Client(ClientConfig.from_kubeconfig(admin)) as client:
                for index in range(services):
                    await client.create(SVC, _service(index))
                    await client.create(ENDPOINTSLICES, _slice(index, endpoints))
                proxy = Proxy(
                    ClientConfig.from_kubeconfig(proxy_kubeconfig),
                    ProxyOptions(node_name="n1", netns=pathlib.Path("/run/netns") / netns),
                )
                await proxy.start(None)
                latencies = []
                try:
                    for index in range(DELETIONS):
                        chain = "KUBE-SVC-" + chain_hash(f"default/svc-{index}:http", "tcp")
                        await asyncio.sleep(0.5)
                        start = time.perf_counter()
                        await client.delete(SVC, f"svc-{index}", namespace="default")
                        await client.delete(ENDPOINTSLICES, f"svc-{index}-1", namespace="default")
                        await asyncio.to_thread(_wait_gone, netns, chain)
                        latencies.append(time.perf_counter() - start)
                finally:
                    await proxy.stop()
                return latencies
        finally:
            await server.stop()
            await backend.close()


def run(services: int, endpoints: int) -> None:
    svc_objects = [_service(i) for i in range(services)]
    ports = [p for i, s in enumerate(svc_objects) for p in service_ports(s, [_slice(i, endpoints)])]
    options = RuleOptions(node_name="n1", cluster_cidr="10.42.0.0/16")
    start = time.perf_counter()
    ruleset = build_rules(ports, options)
    generation_s = time.perf_counter() - start
    rule_count = sum(1 for line in ruleset.text.splitlines() if line.startswith("-A"))
    netns = f"spbench{os.getpid()}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        first_s, _ = _sync_once(netns, ports, options)
        steady_s, contents = _sync_once(netns, ports, options)
        partial_s, _ = _sync_once(netns, ports[1:], options, contents)
        _ns(netns, "iptables", "-t", "nat", "-F")  # start the proxy run from scratch
        latencies = asyncio.run(_deletion_latency(netns, services, endpoints))
    finally:
        subprocess.run(["ip", "netns", "del", netns], check=False)
    print(f"Service proxy (iptables), {services} services x {endpoints} endpoints, "
          f"{rule_count} rules")  # fmt: skip
    print(f"  rule generation                      {generation_s * 1000:8.1f} ms")
    print(f"  full sync, first (creates chains)    {first_s * 1000:8.1f} ms")
    print(f"  full sync, steady state              {steady_s * 1000:8.1f} ms")
    print(f"  partial sync, one service removed    {partial_s * 1000:8.1f} ms")
    print(
        f"  delete Service -> chain gone         {statistics.median(latencies) * 1000:8.1f} ms "
        f"median (max {max(latencies) * 1000:.0f} ms, {len(latencies)} deletions)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=SERVICES)
    parser.add_argument("--endpoints", type=int, default=ENDPOINTS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if os.geteuid() != 0:
        sys.exit("bench.network needs root (network namespaces)")
    run(args.services, args.endpoints)


if __name__ == "__main__":
    main()
