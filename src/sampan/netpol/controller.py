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
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from sampan.client import Client, ClientConfig, SharedInformerFactory
from sampan.client.api import NAMESPACES, NETWORKPOLICIES, PODS
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
T = TypeVar("T")

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


class _FailureSink(Protocol):
    def fail(self, reason: str) -> None: ...


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


class NetworkPolicyController:
    """Enforces NetworkPolicies on this node; see the module docstring."""

    name = "network-policy"

    def __init__(self, client_config: ClientConfig, options: NetworkPolicyOptions) -> None:
        self.options = options
        self._client_config = client_config.with_user_agent("sampan-network-policy")
        self._client: Client | None = None
        self._factory: SharedInformerFactory | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._ctx: _FailureSink | None = None
        self._applied: Ruleset | None = None
        self._applied_text = ""
        self._last_full_s = 0.0
        self._sync_started = 0
        self._sync_done = asyncio.Condition()
        self.sync_count = 0
        self.apply_count = 0
        self.last_sync_error: str | None = None

    # lifecycle -------------------------------------------------------------------------------

    async def start(self, ctx: _FailureSink | None = None) -> None:
        self._ctx = ctx
        check_binaries()
        netns = self.options.netns
        self._executor = ThreadPoolExecutor(
            max_workers=1,
            thread_name_prefix="sampan-netpol",
            initializer=enter_netns if netns is not None else None,
            initargs=(netns,) if netns is not None else (),
        )
        self._client = Client(self._client_config)
        self._factory = SharedInformerFactory(self._client)
        self._policies = self._factory.informer(NETWORKPOLICIES)
        self._pods = self._factory.informer(PODS)
        self._namespaces = self._factory.informer(NAMESPACES)
        self._policies.add_event_handler(
            on_add=lambda _o: self._wake.set(),
            on_update=lambda _a, _b: self._wake.set(),
            on_delete=lambda _o: self._wake.set(),
        )
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
        try:
            self._factory.start()
            await self._factory.wait_synced()
            try:
                await self._sync()
            except NetworkPolicyError as exc:
                raise NetworkPolicyError(
                    f"{exc} (start with --disable-network-policy to run without enforcement)"
                ) from exc
        except BaseException:
            await self._shutdown()
            raise
        self._task = asyncio.create_task(self._loop(), name="netpol-sync")
        self._task.add_done_callback(self._task_done)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        await self._shutdown()

    async def _shutdown(self) -> None:
        if self._factory is not None:
            await self._factory.stop()
            self._factory = None
        if self._client is not None:
            await self._client.close()
            self._client = None
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("network policy: sync loop died", exc_info=exc)
            if self._ctx is not None:
                self._ctx.fail(f"network policy sync loop died: {exc}")

    # event filters: only what can change the rules wakes the loop ------------------------------

    def _on_pod_update(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        if pod_info(old) != pod_info(new):
            self._wake.set()

    def _on_labels_update(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        if (old.get("metadata") or {}).get("labels") != (new.get("metadata") or {}).get("labels"):
            self._wake.set()

    # syncing ---------------------------------------------------------------------------------

    async def _blocking(self, func: Callable[..., T], *args: Any) -> T:
        assert self._executor is not None
        return await asyncio.get_running_loop().run_in_executor(self._executor, func, *args)

    # Only tests call this: wait for a sync instead of sleeping.
    async def wait_sync(self, timeout_s: float | None = None) -> int:
        """Request a sync and wait until one that started after the request has finished;
        returns the number of finished syncs (tests)."""
        target = self._sync_started + 1
        self._wake.set()
        async with asyncio.timeout(timeout_s), self._sync_done:
            await self._sync_done.wait_for(lambda: self.sync_count >= target)
        return self.sync_count

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        last_start = loop.time()
        while True:
            try:
                async with asyncio.timeout(self.options.sync_period_s):
                    await self._wake.wait()
            except TimeoutError:
                pass
            wait_s = last_start + self.options.min_sync_period_s - loop.time()
            if wait_s > 0:
                await asyncio.sleep(wait_s)
            last_start = loop.time()
            try:
                await self._sync()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.last_sync_error = str(exc)
                log.error("network policy: sync failed (retrying): %s", exc)
                self._wake.set()

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
        self._wake.clear()
        self._sync_started += 1
        try:
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
            self.last_sync_error = None
        finally:
            self.sync_count += 1
            async with self._sync_done:
                self._sync_done.notify_all()
