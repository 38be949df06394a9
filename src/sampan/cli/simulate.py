"""``sampan simulate``: run fake nodes (KWOK's model) against a cluster.

Parses the flags, finds the kubeconfig (``--kubeconfig``, else ``$KUBECONFIG``, else the one
``sampan server`` writes) and runs ``sampan.simulate.Simulator`` until interrupted. A bad flag
or an unreadable kubeconfig is one line on stderr and exit code 1.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import Any

from sampan.config import ConfigError, load_config

__all__ = ["add_simulate_parser", "run_simulate"]

EXIT_USAGE = 1


def add_simulate_parser(sub: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    text = "Simulate fake nodes (KWOK's model): heartbeats, and pods marked Running with IPs"
    cmd = sub.add_parser("simulate", help=text, description=text)
    cmd.add_argument("--nodes", type=int, required=True, metavar="N", help="How many nodes")
    cmd.add_argument(
        "--kubeconfig",
        metavar="PATH",
        default=None,
        help="Cluster to join [$KUBECONFIG, else the server's admin kubeconfig]",
    )
    cmd.add_argument("--node-prefix", default="kwok-node-", help="Node names: PREFIX0, PREFIX1...")
    cmd.add_argument(
        "--heartbeat-interval", default="10s", metavar="DURATION", help="Lease renewal period"
    )
    cmd.add_argument(
        "--node-status-interval",
        default="5m",
        metavar="DURATION",
        help="How often node conditions are re-posted",
    )
    cmd.add_argument(
        "--taint",
        action="store_true",
        help="Taint the nodes kwok.x-k8s.io/node=fake:NoSchedule (only tolerating pods land)",
    )
    cmd.add_argument(
        "--writers", type=int, default=32, metavar="N", help="Concurrent writes to the API"
    )


def run_simulate(ns: argparse.Namespace) -> int:
    from sampan.client import ClientConfig
    from sampan.simulate import Simulator, SimulatorOptions, parse_duration

    try:
        if ns.nodes < 0 or ns.writers < 1:
            raise ValueError("--nodes must be >= 0 and --writers >= 1")
        options = SimulatorOptions(
            nodes=ns.nodes,
            node_prefix=ns.node_prefix,
            heartbeat_interval_s=parse_duration(ns.heartbeat_interval),
            node_status_interval_s=parse_duration(ns.node_status_interval),
            taint=ns.taint,
            writers=ns.writers,
        )
        config = ClientConfig.from_kubeconfig(_kubeconfig(ns.kubeconfig))
        simulator = Simulator(config, options)
    except (ValueError, OSError, ConfigError) as exc:
        print(f"sampan simulate: {exc}", file=sys.stderr)
        return EXIT_USAGE
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        asyncio.run(simulator.run_forever())
    except KeyboardInterrupt:
        pass
    return 0


def _kubeconfig(flag: str | None) -> Path:
    if flag:
        return Path(flag)
    if os.environ.get("KUBECONFIG"):
        return Path(os.environ["KUBECONFIG"].split(os.pathsep)[0])
    return load_config("server", {}).write_kubeconfig
