"""The Service proxy component (kube-proxy's iptables mode) and a minimal ServiceLB.

``Proxy`` watches Services, EndpointSlices and Nodes and keeps the node's iptables in line
with them (rule layout: ``sampan.proxy.rules``).

Invariants:

* one sync = one ``iptables-save`` per table (to learn existing chains and jumps) + one
  ``iptables-restore --noflush``; never a command per rule. A sync rewrites the fixed chains
  and only those per-service chains that changed (or went missing) since the last applied
  one; every ``sync_period_s`` and after a failure it rewrites everything;
* syncs run at most every ``min_sync_period_s`` (default 1 s) and at least every
  ``sync_period_s`` (default 30 s, repairs drift); any watch event requests one;
* all iptables/conntrack subprocesses run on one worker thread, never on the event loop; with
  ``ProxyOptions.netns`` that thread enters the namespace first (tests) and its children
  inherit it;
* after a sync, UDP conntrack entries that would keep sending to a removed endpoint, or keep a
  cached reject for a service that just got endpoints, are deleted (``conntrack -D``);
* ServiceLB (unless ``service_lb=False``): LoadBalancer services without
  ``spec.loadBalancerClass`` get ``status.loadBalancer.ingress`` = the InternalIPs of all nodes
  (every node's proxy computes the same list, so they never fight); the proxy then serves
  those addresses like external IPs;
* ``stop()`` leaves the rules in place (traffic keeps flowing across a restart, as upstream);
  ``sampan killall`` removes them (with every ``KUBE-*`` chain, in one pass per table).
"""

from __future__ import annotations

import asyncio
import logging
import re
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from sampan.client import Client, ClientConfig, PatchType, SharedInformerFactory
from sampan.client.api import ENDPOINTSLICES, NODES, SERVICES
from sampan.client.syncloop import SyncLoop
from sampan.netns import enter as enter_netns
from sampan.proxy.metrics import ProxyMetrics
from sampan.proxy.rules import (
    DEFAULT_CHAIN_PREFIX,
    MASQ_BIT_DEFAULT,
    RuleOptions,
    Ruleset,
    ServicePort,
    build_rules,
    parse_save,
    service_ports,
)

__all__ = [
    "CLUSTER_DNS_DEFAULT",
    "MIN_SYNC_PERIOD_DEFAULT_S",
    "SYNC_PERIOD_DEFAULT_S",
    "Proxy",
    "ProxyOptions",
    "parse_proxy_args",
]

log = logging.getLogger(__name__)

MIN_SYNC_PERIOD_DEFAULT_S = 1.0
SYNC_PERIOD_DEFAULT_S = 30.0
CLUSTER_DNS_DEFAULT = "10.43.0.10"
SUBPROCESS_TIMEOUT_S = 60.0
_SERVICE_LABEL = "kubernetes.io/service-name"
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_DURATION_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def _parse_duration_s(value: str) -> float:
    text = value.strip()
    total = 0.0
    pos = 0
    for match in _DURATION.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _DURATION_S[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(f"not a duration: {value!r}")
    return total


def _parse_bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes", ""):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise ValueError(f"not a boolean: {value!r}")


@dataclass(frozen=True)
class _Args:
    min_sync_period_s: float = MIN_SYNC_PERIOD_DEFAULT_S
    sync_period_s: float = SYNC_PERIOD_DEFAULT_S
    masquerade_all: bool = False
    masq_bit: int = MASQ_BIT_DEFAULT


_ARG_PARSERS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "iptables-min-sync-period": ("min_sync_period_s", _parse_duration_s),
    "iptables-sync-period": ("sync_period_s", _parse_duration_s),
    "masquerade-all": ("masquerade_all", _parse_bool),
    "iptables-masquerade-bit": ("masq_bit", int),
}


def parse_proxy_args(args: Mapping[str, str]) -> _Args:
    """The supported ``--kube-proxy-arg`` keys (without leading dashes); ValueError on an
    unknown key or a bad value."""
    values: dict[str, Any] = {}
    for raw_key, raw_value in args.items():
        key = raw_key.lstrip("-")
        if key not in _ARG_PARSERS:
            raise ValueError(
                f"unsupported kube-proxy-arg {raw_key!r} (supported: {', '.join(_ARG_PARSERS)})"
            )
        attr, parse = _ARG_PARSERS[key]
        values[attr] = parse(str(raw_value))
    parsed = _Args(**values)
    if parsed.min_sync_period_s < 0 or parsed.sync_period_s <= 0:
        raise ValueError("sync periods must be positive")
    if not 0 <= parsed.masq_bit <= 31:
        raise ValueError("iptables-masquerade-bit must be in 0..31")
    return parsed


@dataclass(frozen=True)
class ProxyOptions:
    node_name: str
    node_ips: tuple[str, ...] = ()
    cluster_cidr: str = "10.42.0.0/16"
    service_cidr: str = "10.43.0.0/16"
    args: Mapping[str, str] = field(default_factory=dict)
    dns_redirect: tuple[str, int] | None = None
    cluster_dns: str = CLUSTER_DNS_DEFAULT
    service_lb: bool = True
    chain_prefix: str = DEFAULT_CHAIN_PREFIX  # KUBE-, or K<cluster-name>- (HostNames)
    netns: Path | None = None  # run iptables inside this network namespace (tests)


def _run(argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=SUBPROCESS_TIMEOUT_S,
    )


def _save() -> str:
    result = _run(["iptables-save", "-t", "nat"])
    if result.returncode != 0:
        raise RuntimeError(f"iptables-save -t nat: {result.stderr.strip()}")
    text = result.stdout
    result = _run(["iptables-save", "-t", "filter"])
    if result.returncode != 0:
        raise RuntimeError(f"iptables-save -t filter: {result.stderr.strip()}")
    return text + result.stdout


def _restore(text: str) -> None:
    result = _run(["iptables-restore", "--noflush", "-w", "5"], stdin=text)
    if result.returncode != 0:
        raise RuntimeError(f"iptables-restore: {result.stderr.strip()}")


def _conntrack_delete(args: list[str]) -> None:
    result = _run(["conntrack", "-D", *args])
    # exit 1 with "0 flow entries have been deleted" is the normal "nothing matched"
    if result.returncode not in (0, 1):
        log.warning("proxy: conntrack -D %s: %s", " ".join(args), result.stderr.strip())


def _udp_state(ports: list[ServicePort]) -> dict[tuple[str, int, int], set[str]]:
    """(cluster IP, port, node port) -> endpoint IPs in use, for UDP service ports."""
    state: dict[tuple[str, int, int], set[str]] = {}
    for sp in ports:
        if sp.protocol != "UDP":
            continue
        ips = {ep.ip for ep in sp.endpoints if ep.ready or (ep.serving and ep.terminating)}
        for cluster_ip in sp.cluster_ips:
            state[(cluster_ip, sp.port, sp.node_port)] = ips
    return state


def _conntrack_work(
    before: dict[tuple[str, int, int], set[str]], after: dict[tuple[str, int, int], set[str]]
) -> list[list[str]]:
    work: list[list[str]] = []
    for (cluster_ip, port, node_port), old_ips in before.items():
        new_ips = after.get((cluster_ip, port, node_port), set())
        for ip in sorted(old_ips - new_ips):
            work.append(["-p", "udp", "--orig-dst", cluster_ip, "--dst-nat", ip])
            if node_port:
                work.append(["-p", "udp", "--orig-port-dst", str(node_port), "--dst-nat", ip])
    for key, new_ips in after.items():
        cluster_ip, port, node_port = key
        if new_ips and not before.get(key):
            work.append(["-p", "udp", "--orig-dst", cluster_ip, "--orig-port-dst", str(port)])
            if node_port:
                work.append(["-p", "udp", "--orig-port-dst", str(node_port)])
    return work


class Proxy(SyncLoop):
    """Programs Services into iptables; see the module docstring."""

    name = "proxy"
    log_name = "proxy"

    def __init__(
        self,
        client_config: ClientConfig,
        options: ProxyOptions,
        *,
        metrics_registry: CollectorRegistry | None = None,
    ) -> None:
        """``metrics_registry``: where ``kubeproxy_*`` series go (the agent's node registry;
        None: a private one)."""
        self.options = options
        self.args = parse_proxy_args(options.args)
        super().__init__(
            client_config,
            "sampan-proxy",
            resync_s=self.args.sync_period_s,
            min_interval_s=self.args.min_sync_period_s,
        )
        self.metrics = ProxyMetrics(
            metrics_registry if metrics_registry is not None else CollectorRegistry()
        )
        self._udp: dict[tuple[str, int, int], set[str]] = {}
        self._lb_patched: dict[str, list[str]] = {}
        self._contents: dict[str, dict[str, tuple[str, ...]]] | None = None
        self._last_full_s = 0.0

    # lifecycle ---------------------------------------------------------------------------

    async def _prepare(self) -> None:
        netns = self.options.netns
        self._open_worker(
            "sampan-proxy",
            enter_netns if netns is not None else None,
            (netns,) if netns is not None else (),
        )

    def _add_informers(self, factory: SharedInformerFactory, client: Client) -> None:
        self._services = factory.informer(SERVICES)
        self._slices = factory.informer(ENDPOINTSLICES)
        self._nodes = factory.informer(NODES) if self.options.service_lb else None
        for informer in factory.informers:
            self._wake_on_changes(informer)

    # syncing -------------------------------------------------------------------------------

    def _service_ports(self) -> list[ServicePort]:
        by_service: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for eps in self._slices.cache.list():
            meta = eps.get("metadata") or {}
            owner = (meta.get("labels") or {}).get(_SERVICE_LABEL)
            if owner:
                by_service.setdefault((meta.get("namespace", ""), owner), []).append(eps)
        ports: list[ServicePort] = []
        for service in self._services.cache.list():
            meta = service.get("metadata") or {}
            key = (meta.get("namespace", ""), meta.get("name", ""))
            ports.extend(service_ports(service, by_service.get(key, [])))
        return ports

    async def _sync(self) -> None:
        started = time.perf_counter()
        try:
            if self.options.service_lb:
                await self._update_load_balancers()
            ports = self._service_ports()
            options = RuleOptions(
                node_name=self.options.node_name,
                cluster_cidr=self.options.cluster_cidr,
                masquerade_all=self.args.masquerade_all,
                masq_bit=self.args.masq_bit,
                cluster_dns=self.options.cluster_dns,
                dns_redirect=self.options.dns_redirect,
                chain_prefix=self.options.chain_prefix,
            )
            now_s = asyncio.get_running_loop().time()
            full = self._contents is None or now_s - self._last_full_s >= self.args.sync_period_s
            previous = None if full else self._contents
            self._contents = None  # if the restore fails, the next sync is a full one
            ruleset = await self._blocking(self._apply, ports, options, previous)
            self._contents = ruleset.contents
            if full:
                self._last_full_s = now_s
            udp = _udp_state(ports)
            work = _conntrack_work(self._udp, udp)
            self._udp = udp
            for args in work:
                await self._blocking(_conntrack_delete, args)
            self.metrics.last_sync.set_to_current_time()
        finally:
            self.metrics.sync_duration.observe(time.perf_counter() - started)

    @staticmethod
    def _apply(
        ports: list[ServicePort],
        options: RuleOptions,
        previous: dict[str, dict[str, tuple[str, ...]]] | None,
    ) -> Ruleset:
        chains, rules = parse_save(_save())
        ruleset = build_rules(ports, options, chains, rules, previous)
        _restore(ruleset.text)
        return ruleset

    # ServiceLB -----------------------------------------------------------------------------

    def _lb_ips(self) -> list[str]:
        ips: set[str] = set()
        if self._nodes is not None:
            for node in self._nodes.cache.list():
                for address in (node.get("status") or {}).get("addresses") or []:
                    if address.get("type") == "InternalIP" and ":" not in address.get(
                        "address", ":"
                    ):
                        ips.add(address["address"])
        if not ips:
            ips.update(ip for ip in self.options.node_ips if ":" not in ip)
        return sorted(ips)

    async def _update_load_balancers(self) -> None:
        assert self._client is not None
        ips = self._lb_ips()
        for service in self._services.cache.list():
            spec = service.get("spec") or {}
            if spec.get("type") != "LoadBalancer" or spec.get("loadBalancerClass"):
                continue
            meta = service["metadata"]
            current = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
            wanted = [{"ip": ip, "ipMode": "VIP"} for ip in ips]
            if current == wanted:
                continue
            try:
                await self._client.patch(
                    SERVICES,
                    meta["name"],
                    {"status": {"loadBalancer": {"ingress": wanted}}},
                    namespace=meta["namespace"],
                    patch_type=PatchType.MERGE,
                    subresource="status",
                )
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("proxy: ServiceLB status of %s/%s", meta["namespace"], meta["name"])
