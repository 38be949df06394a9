"""The network policy component: enforces NetworkPolicies for the pods of this node (the job
K3s gives its embedded kube-router network policy controller).

``NetworkPolicyController`` watches NetworkPolicies, Pods and Namespaces (cluster-wide: peers
may be pods anywhere) and keeps this node's ipsets and filter chains in line with them (rule
layout and semantics: ``sampan.netpol.rules``).

Invariants:

* one sync = ``ipset list -n`` + one ``ipset restore`` (changed sets, each filled under a
  temporary name and swapped in) + ``iptables-save -t filter`` + one ``iptables-restore
  --noflush`` (every chain rewritten in one transaction) + one ``ipset restore`` destroying
  sets nothing references any more; never a command per rule or entry;
* all of it, and the rule compilation, runs on one worker thread, never on the event loop;
  with ``NetworkPolicyOptions.netns`` that thread enters the namespace first (tests) and the
  commands it starts inherit it;
* syncs run at most every ``min_sync_period_s`` (default 1 s) and at least every
  ``sync_period_s`` (default 30 s: a full rewrite of every set and chain, repairing drift);
  any watch event that can change the rules requests one; a sync whose rules equal the last
  applied ones writes nothing; a failed sync is retried (and the next one is full);
* ``start()`` returns once the informers have synced and the first sync has been applied, so
  the policies in force before a restart are re-applied before the kubelet (started after
  it) runs pods; a new pod is covered from the first sync after its IP is reported, as with
  kube-router;
* ``stop()`` leaves chains and sets in place (policies keep applying while the agent restarts,
  as with K3s); ``cleanup(names)`` removes them (``sampan killall``, or an agent started with
  ``--disable-network-policy``).
"""

from __future__ import annotations

import asyncio
import copy
import logging
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sampan.client import Client, ClientConfig, SharedInformerFactory
from sampan.client.api import NAMESPACES, NETWORKPOLICIES, PODS
from sampan.client.syncloop import SyncLoop
from sampan.netns import enter as enter_netns
from sampan.netpol.rules import (
    IPSet,
    Names,
    Ruleset,
    cleanup_ipset_text,
    cleanup_text,
    compile_rules,
    ipset_restore_text,
    iptables_restore_text,
    name_suffix,
    parse_save,
    pod_info,
)

__all__ = [
    "MIN_SYNC_PERIOD_DEFAULT_S",
    "SYNC_PERIOD_DEFAULT_S",
    "NetworkPolicyController",
    "NetworkPolicyError",
    "NetworkPolicyOptions",
    "cleanup",
    "names_for_data_dir",
]

log = logging.getLogger("sampan.netpol")

MIN_SYNC_PERIOD_DEFAULT_S = 1.0
SYNC_PERIOD_DEFAULT_S = 30.0
SUBPROCESS_TIMEOUT_S = 60.0
REQUIRED_BINARIES = (
    ("ipset", "ipset"),
    ("iptables-save", "iptables"),
    ("iptables-restore", "iptables"),
)


def names_for_data_dir(data_dir: Path) -> Names:
    """The chain and set names of the agent using ``data_dir`` (unique per host: two agents
    never share a data dir; ``sampan killall`` finds them from the same path)."""
    return Names(name_suffix(str(data_dir.resolve())))


class NetworkPolicyError(Exception):
    """A command the data plane needs failed or is missing."""


@dataclass(frozen=True)
class NetworkPolicyOptions:
    node_name: str
    names: Names
    min_sync_period_s: float = MIN_SYNC_PERIOD_DEFAULT_S
    sync_period_s: float = SYNC_PERIOD_DEFAULT_S
    netns: Path | None = None  # program this network namespace instead (tests)


def _run(argv: list[str], stdin: str | None = None) -> str:
    try:
        result = subprocess.run(
            argv,
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
            timeout=SUBPROCESS_TIMEOUT_S,
        )
    except FileNotFoundError:
        raise NetworkPolicyError(f"{argv[0]}: not installed") from None
    except subprocess.TimeoutExpired:
        raise NetworkPolicyError(f"{argv[0]}: no answer in {SUBPROCESS_TIMEOUT_S:.0f}s") from None
    if result.returncode != 0:
        raise NetworkPolicyError(f"{' '.join(argv[:2])}: {result.stderr.strip()[:500]}")
    return result.stdout


def check_binaries() -> None:
    """NetworkPolicyError naming the Debian package of the first missing command."""
    for binary, package in REQUIRED_BINARIES:
        if shutil.which(binary) is None:
            raise NetworkPolicyError(
                f"network policy enforcement needs {binary} (Debian package {package}); "
                "install it or start with --disable-network-policy"
            )


def _existing_sets() -> set[str]:
    return set(_run(["ipset", "list", "-n"]).split())


def _ipset_restore(text: str) -> None:
    if text:
        _run(["ipset", "restore", "-exist"], text)


def _filter_save() -> tuple[set[str], dict[str, list[str]]]:
    return parse_save(_run(["iptables-save", "-t", "filter"]))


def _iptables_restore(text: str) -> None:
    _run(["iptables-restore", "--noflush", "-w", "5"], text)


def apply(ruleset: Ruleset, previous_sets: Mapping[str, IPSet] | None) -> None:
    """Program ``ruleset`` (blocking). ``previous_sets``: the sets of the last applied
    ruleset (unchanged ones are skipped), or None to rewrite every set."""
    names = ruleset.names
    existing = _existing_sets()
    _ipset_restore(ipset_restore_text(names, ruleset.sets, existing, previous_sets))
    chains, rules = _filter_save()
    _iptables_restore(iptables_restore_text(ruleset, chains, rules))
    stale = existing - {names.tmp_set}  # the temporary set is gone after the first restore
    _ipset_restore(cleanup_ipset_text(names, stale, keep=ruleset.sets))


def cleanup(names: Names) -> int:
    """Remove this node's jumps, chains and sets (blocking); how many chains and sets went.
    Does nothing without iptables/ipset on the machine."""
    removed = 0
    if shutil.which("iptables-save") is not None:
        chains, rules = _filter_save()
        text = cleanup_text(names, chains, rules)
        if text:
            _iptables_restore(text)
            removed += sum(1 for c in chains if c.startswith(names.chain_prefix))
    if shutil.which("ipset") is not None:
        existing = _existing_sets()
        text = cleanup_ipset_text(names, existing)
        _ipset_restore(text)
        removed += text.count("\n")
    return removed


class NetworkPolicyController(SyncLoop):
    """Enforces NetworkPolicies on this node; see the module docstring."""

    name = "network-policy"
    log_name = "network policy"

    def __init__(self, client_config: ClientConfig, options: NetworkPolicyOptions) -> None:
        super().__init__(
            client_config,
            "sampan-network-policy",
            resync_s=options.sync_period_s,
            min_interval_s=options.min_sync_period_s,
        )
        self.options = options
        self._applied: Ruleset | None = None
        self._applied_text = ""
        self._last_full_s = 0.0
        self.apply_count = 0

    # lifecycle -------------------------------------------------------------------------------

    async def _prepare(self) -> None:
        check_binaries()
        netns = self.options.netns
        self._open_worker(
            "sampan-netpol",
            enter_netns if netns is not None else None,
            (netns,) if netns is not None else (),
        )

    def _add_informers(self, factory: SharedInformerFactory, client: Client) -> None:
        self._policies = factory.informer(NETWORKPOLICIES)
        self._pods = factory.informer(PODS)
        self._namespaces = factory.informer(NAMESPACES)
        self._wake_on_changes(self._policies)
        self._pods.add_event_handler(
            on_add=lambda _o: self._wake.set(),
            on_update=self._on_pod_update,
            on_delete=lambda _o: self._wake.set(),
        )
        self._namespaces.add_event_handler(
            on_add=lambda _o: self._wake.set(),
            on_update=self._on_labels_update,
            on_delete=lambda _o: self._wake.set(),
        )

    async def _first_sync(self) -> None:
        try:
            await self._run_sync()
        except NetworkPolicyError as exc:
            raise NetworkPolicyError(
                f"{exc} (start with --disable-network-policy to run without enforcement)"
            ) from exc

    # event filters: only what can change the rules wakes the loop ------------------------------

    def _on_pod_update(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        if pod_info(old) != pod_info(new):
            self._wake.set()

    def _on_labels_update(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        if (old.get("metadata") or {}).get("labels") != (new.get("metadata") or {}).get("labels"):
            self._wake.set()

    # syncing ---------------------------------------------------------------------------------

    async def compile(self) -> Ruleset:
        """The ruleset for the informers' current caches: the inputs are taken here, the
        compilation (pure CPU, linear in pods x policies) runs on the worker thread."""
        pods = [info for pod in self._pods.cache.list() if (info := pod_info(pod)) is not None]
        namespaces = {
            (ns.get("metadata") or {}).get("name", ""): dict(
                (ns.get("metadata") or {}).get("labels") or {}
            )
            for ns in self._namespaces.cache.list()
        }
        policies = copy.deepcopy(self._policies.cache.list())  # the thread must own them
        return await self._blocking(
            compile_rules, self.options.names, self.options.node_name, policies, pods, namespaces
        )

    async def _sync(self) -> None:
        ruleset = await self.compile()
        text = repr((ruleset.chains, ruleset.sets))
        now_s = asyncio.get_running_loop().time()
        full = self._applied is None or now_s - self._last_full_s >= self.options.sync_period_s
        if full or text != self._applied_text:
            previous = None if full or self._applied is None else self._applied.sets
            self._applied = None  # a failed apply makes the next sync a full one
            await self._blocking(apply, ruleset, previous)
            self._applied = ruleset
            self._applied_text = text
            self.apply_count += 1
            if full:
                self._last_full_s = now_s
            log.debug(
                "network policy: %d isolated pods (ingress), %d (egress), %d sets",
                len(ruleset.isolated.get("ingress", ())),
                len(ruleset.isolated.get("egress", ())),
                len(ruleset.sets),
            )
