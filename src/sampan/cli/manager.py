"""``sampan manager``: commands for the manager (``sampan server --manager``).

* ``manager reset-admin``: RancherD's command. Sets a new random password for the manager's
  bootstrap admin (user ``admin``; created again if it was deleted, bound to the global role
  ``admin`` again if unbound), clears its lockout, revokes its tokens, requires a password
  change at the next login, and prints the password on stdout (once; it is stored only as an
  argon2id hash).
* ``manager agent-image --output FILE``: writes the cluster agent image (an OCI archive,
  ``docker.io/sampan/cluster-agent:<version>``, built from Debian's ``python3`` and Sampan's
  code as every Sampan agent builds it) for a cluster that is not Sampan:
  ``ctr -n k8s.io images import FILE`` on each of its nodes. Prints the image name.

``reset-admin`` talks to the local server with the admin kubeconfig (``--kubeconfig``, else the
``write-kubeconfig`` of the configuration); the manager's CRDs must exist (the server ran with
``--manager`` at least once).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from sampan.config import ConfigError, load_config

__all__ = ["add_manager_parser", "run_manager"]

EXIT_OK = 0
EXIT_FAILED = 1


def add_manager_parser(sub: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    """Add ``manager`` and its subcommands to the ``sampan`` subparsers ``sub``."""
    text = "Manager commands (sampan server --manager)"
    manager = sub.add_parser("manager", help=text, description=text)
    verbs = manager.add_subparsers(
        dest="manager_command", metavar="VERB", parser_class=parser_class
    )
    reset = verbs.add_parser(
        "reset-admin",
        help="Set a new random password for the manager's admin user and print it",
        description="Set a new random password for the manager's admin user and print it",
    )
    reset.add_argument("--config", "-c", default=argparse.SUPPRESS, help="configuration file")
    reset.add_argument("--data-dir", "-d", default=argparse.SUPPRESS, help="data dir")
    reset.add_argument(
        "--kubeconfig", default=None, help="admin kubeconfig (default: write-kubeconfig)"
    )
    image = verbs.add_parser(
        "agent-image",
        help="Write the cluster agent image archive (for clusters that are not Sampan)",
        description="Write the cluster agent image as an OCI archive; load it on each node of "
        "the cluster to import with: ctr -n k8s.io images import FILE",
    )
    image.add_argument("--output", "-o", required=True, help="the archive to write (.tar)")


def _agent_image(output: str) -> int:
    from sampan.kubelet.runtime.agent_image import (
        build_cluster_agent_archive,
        cluster_agent_image_ref,
    )
    from sampan.kubelet.runtime.images import ImageImportError

    ref = cluster_agent_image_ref()
    try:
        digest = build_cluster_agent_archive(Path(output), ref=ref)
    except (ImageImportError, OSError) as exc:
        print(f"sampan manager agent-image: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(
        f"{ref} ({digest}) written to {output}; on each node: ctr -n k8s.io images import {output}"
    )
    return EXIT_OK


def run_manager(ns: argparse.Namespace) -> int:
    """Run ``sampan manager VERB``; returns the exit code."""
    verb = getattr(ns, "manager_command", None)
    if verb == "agent-image":
        return _agent_image(ns.output)
    if verb != "reset-admin":
        print("sampan manager: a verb is required: reset-admin, agent-image", file=sys.stderr)
        return EXIT_FAILED
    from sampan.client import ClientConfig, ClientError, NotFoundError

    flags = {k: getattr(ns, k) for k in ("config", "data_dir") if hasattr(ns, k)}
    try:
        config = load_config("server", flags)
        kubeconfig = Path(ns.kubeconfig) if ns.kubeconfig else config.write_kubeconfig
        client_config = ClientConfig.from_kubeconfig(kubeconfig)
        password = asyncio.run(_reset_admin(client_config))
    except NotFoundError as exc:
        print(f"sampan manager {verb}: {exc} (has the server run with --manager?)", file=sys.stderr)
        return EXIT_FAILED
    except (ConfigError, ClientError, OSError, ValueError) as exc:
        print(f"sampan manager {verb}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"New password for default admin user (admin): {password}")
    return EXIT_OK


async def _reset_admin(client_config: Any) -> str:
    from sampan.client import Client
    from sampan.manager.store import reset_admin

    async with Client(client_config) as client:
        return await reset_admin(client)
