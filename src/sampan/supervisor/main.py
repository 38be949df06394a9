"""Entry from the CLI: set up logging, build the components for the command, run them."""

from __future__ import annotations

import asyncio
import logging

from sampan.config import Config, ConfigError, describe
from sampan.supervisor.agent import agent_components
from sampan.supervisor.gcpolicy import StartupCollections
from sampan.supervisor.logs import setup_logging
from sampan.supervisor.notify import Notifier
from sampan.supervisor.profile import apply_profile
from sampan.supervisor.server import server_components
from sampan.supervisor.supervisor import Supervisor

__all__ = ["run"]

log = logging.getLogger("sampan.supervisor")


def run(config: Config) -> int:
    # Taken out of the environment first: containerd and the shims must not inherit it.
    notifier = Notifier.from_environment()
    setup_logging(debug=config.debug, verbosity=config.v)
    from sampan import version

    log.info(
        "sampan %s v%s (Kubernetes %s), data dir %s",
        config.command,
        version.__version__,
        version.KUBERNETES_VERSION,
        config.data_dir,
    )
    for source in config.sources:
        log.info("configuration read from %s", source)
    for line in describe(config):
        log.debug("option %s", line)
    try:
        config = apply_profile(config)  # --profile=cis, --protect-kernel-defaults
    except ConfigError as exc:
        log.error("%s", exc)
        return 1
    if config.command == "server" and config.cluster_reset:
        return _cluster_reset(config)
    if config.command == "server":
        try:
            components = server_components(config)
        except ConfigError as exc:
            log.error("%s", exc)
            return 1
    else:
        try:
            components = agent_components(
                config,
                server_url=lambda: config.server,
                token=config.token.reveal,
                is_server=False,
            )
        except ConfigError as exc:
            log.error("%s", exc)
            return 1
    collections = StartupCollections()
    collections.defer()
    supervisor = Supervisor(components, notifier=notifier, on_ready=collections.settle)
    return asyncio.run(supervisor.run())


def _cluster_reset(config: Config) -> int:
    """``sampan server --cluster-reset [--cluster-reset-restore-path FILE]``: done before any
    component starts, then the process exits (as K3s's reset does)."""
    from sampan.datastore.snapshot import SnapshotError
    from sampan.supervisor.snapshots import cluster_reset

    try:
        log.info("%s", cluster_reset(config))
    except (SnapshotError, OSError) as exc:
        log.error("cluster reset failed, nothing changed: %s", exc)
        return 1
    return 0
