"""NetworkPolicy sync benchmark: ``python -m bench.netpol [--policies 200] [--pods 1000]
[--services 1000]`` (root: programs a private network namespace, touches nothing else).

Printed, for ``--policies`` policies over ``--pods`` simulated pods (20 namespaces, every pod
on this node — the upper bound: remote pods only add set entries, local ones add chains):

* rule compilation (``sampan.netpol.rules.compile_rules``, pure Python), with the chain,
  rule, set and set-entry counts;
* one sync as the controller does it (``sampan.netpol.controller.apply`` on a worker thread
  that entered the namespace): first (creating every set and chain), a full resync (every
  set rewritten: the periodic repair), and an incremental one after one pod came (only the
  sets that changed are rewritten; the chains in one ``iptables-restore``);
* beside it, in the same run and namespace kind, the service proxy's full sync of
  ``--services`` services x 2 endpoints (``bench.network``'s measurement), the figure the
  issue compares against.

kube-router (K3s's embedded policy controller) documents no figure; the goal here is a sync
of the same order as the proxy's, so policy changes land as fast as Service changes.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.network import _service, _slice, _sync_once
from sampan.netns import enter as enter_netns
from sampan.netpol import controller as netpol
from sampan.netpol.rules import Names, compile_rules, pod_info
from sampan.proxy.rules import RuleOptions, service_ports

NAMESPACES = 20
POLICIES = 200
PODS = 1000
SERVICES = 1000
NODE = "n1"


def _pod(index: int) -> dict[str, Any]:
    ns = f"ns-{index % NAMESPACES}"
    return {
        "metadata": {
            "namespace": ns,
            "name": f"pod-{index}",
            "labels": {"app": f"app-{index % 10}", "role": "client" if index % 3 == 0 else "web"},
        },
        "spec": {
            "nodeName": NODE,
            "containers": [
                {"name": "c", "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]}
            ],
        },
        "status": {"phase": "Running", "podIP": f"10.42.{index // 250}.{1 + index % 250}"},
    }


def _policy(index: int) -> dict[str, Any]:
    """Ten shapes users write: default deny, allow from a label, from a namespace, both
    combined, ipBlock with except, named ports, port ranges, and egress to DNS."""
    ns = f"ns-{index % NAMESPACES}"
    shape = index // NAMESPACES % 10
    spec: dict[str, Any] = {"podSelector": {"matchLabels": {"app": f"app-{shape}"}}}
    client = {"podSelector": {"matchLabels": {"role": "client"}}}
    other_ns = {"namespaceSelector": {"matchLabels": {"team": f"t{index % 4}"}}}
    if shape == 0:
        spec = {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    elif shape == 1:
        spec["ingress"] = [{"from": [client], "ports": [{"port": 80}]}]
    elif shape == 2:
        spec["ingress"] = [{"from": [other_ns]}]
    elif shape == 3:
        spec["ingress"] = [{"from": [{**other_ns, **client}], "ports": [{"port": "http"}]}]
    elif shape == 4:
        spec["ingress"] = [
            {"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.42.0.0/16"]}}]}
        ]
    elif shape == 5:
        spec["ingress"] = [{"ports": [{"port": 8000, "endPort": 8100}]}]
    elif shape == 6:
        spec["policyTypes"] = ["Egress"]
        spec["egress"] = [{"ports": [{"port": 53, "protocol": "UDP"}]}]
    elif shape == 7:
        spec["policyTypes"] = ["Egress"]
        spec["egress"] = [{"to": [client, other_ns], "ports": [{"port": 443}]}]
    elif shape == 8:
        spec["ingress"] = [
            {"from": [client, other_ns], "ports": [{"port": "http"}, {"port": 9090}]}
        ]
    else:
        spec["ingress"] = [{}]  # allow all
    return {"metadata": {"namespace": ns, "name": f"np-{index}"}, "spec": spec}


def _namespaces() -> dict[str, dict[str, str]]:
    return {
        f"ns-{i}": {"kubernetes.io/metadata.name": f"ns-{i}", "team": f"t{i % 4}"}
        for i in range(NAMESPACES)
    }


def _ns(netns: str, *argv: str) -> str:
    result = subprocess.run(["ip", "netns", "exec", netns, *argv], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {result.stderr.strip()}")
    return result.stdout


def run(policies: int, pods: int, services: int) -> None:
    names = Names(f"b{os.getpid() % 100000}")
    pod_objects = [_pod(i) for i in range(pods)]
    infos = [info for info in map(pod_info, pod_objects) if info is not None]
    policy_objects = [_policy(i) for i in range(policies)]
    namespaces = _namespaces()

    start = time.perf_counter()
    ruleset = compile_rules(names, NODE, policy_objects, infos, namespaces)
    compile_s = time.perf_counter() - start
    rule_count = sum(len(lines) for lines in ruleset.chains.values())
    entries = sum(len(s.entries) for s in ruleset.sets.values())

    netns = f"snpbench{os.getpid()}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        path = Path("/run/netns") / netns
        with ThreadPoolExecutor(1, initializer=enter_netns, initargs=(path,)) as worker:

            def timed_apply(rs: Any, previous: Any) -> float:
                began = time.perf_counter()
                worker.submit(netpol.apply, rs, previous).result()
                return time.perf_counter() - began

            first_s = timed_apply(ruleset, None)
            full_s = timed_apply(ruleset, None)
            # one more pod arrives: compile again and write only the sets that changed
            new_pod = pod_info(_pod(pods))
            assert new_pod is not None
            began = time.perf_counter()
            grown = compile_rules(names, NODE, policy_objects, [*infos, new_pod], namespaces)
            incremental_s = time.perf_counter() - began + timed_apply(grown, ruleset.sets)
            saved = _ns(netns, "iptables-save", "-t", "filter")
            assert names.forward_chain in saved, "policy chains missing after the sync"

        # the service proxy's full sync in the same run, in a fresh namespace of its own
        svc_objects = [_service(i) for i in range(services)]
        ports = [p for i, s in enumerate(svc_objects) for p in service_ports(s, [_slice(i, 2)])]
        options = RuleOptions(node_name=NODE, cluster_cidr="10.42.0.0/16")
        subprocess.run(["ip", "netns", "add", netns + "p"], check=True)
        try:
            proxy_first_s, _ = _sync_once(netns + "p", ports, options)
            proxy_steady_s, _ = _sync_once(netns + "p", ports, options)
        finally:
            subprocess.run(["ip", "netns", "del", netns + "p"], check=False)
    finally:
        subprocess.run(["ip", "netns", "del", netns], check=False)

    print(
        f"NetworkPolicy (ipset + iptables), {policies} policies, {len(infos)} pods on the node, "
        f"{len(ruleset.chains)} chains, {rule_count} rules, {len(ruleset.sets)} sets "
        f"({entries} entries)"
    )
    print(f"  rule compilation                     {compile_s * 1000:8.1f} ms")
    print(f"  sync, first (creates sets + chains)  {first_s * 1000:8.1f} ms")
    print(f"  sync, full resync (every set)        {full_s * 1000:8.1f} ms")
    print(f"  sync, one pod added (compile+apply)  {incremental_s * 1000:8.1f} ms")
    print(f"Service proxy (iptables), {services} services x 2 endpoints — baseline, same run")
    print(f"  full sync, first                     {proxy_first_s * 1000:8.1f} ms")
    print(f"  full sync, steady state              {proxy_steady_s * 1000:8.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policies", type=int, default=POLICIES)
    parser.add_argument("--pods", type=int, default=PODS)
    parser.add_argument("--services", type=int, default=SERVICES)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if os.geteuid() != 0:
        sys.exit("bench.netpol needs root (network namespaces)")
    netpol.check_binaries()
    run(args.policies, args.pods, args.services)


if __name__ == "__main__":
    main()
