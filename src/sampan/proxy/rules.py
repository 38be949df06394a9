"""Pure rule generation for the iptables proxy: Services + EndpointSlices -> the text one
``iptables-restore --noflush`` call takes (nat and filter tables). No I/O here.

The layout follows kube-proxy's iptables mode:

* nat: ``PREROUTING``/``OUTPUT`` -> ``KUBE-SERVICES``; per service port a ``KUBE-SVC-<hash>``
  (every usable endpoint, chosen with ``-m statistic --mode random --probability 1/n`` and
  ``-m recent`` for ``sessionAffinity: ClientIP``), a ``KUBE-SVL-<hash>`` (node-local endpoints,
  for ``internalTrafficPolicy``/``externalTrafficPolicy: Local``), a ``KUBE-EXT-<hash>`` for
  NodePort / LoadBalancer / external IP traffic, one ``KUBE-SEP-<hash>`` per endpoint
  (hairpin: traffic from the endpoint itself is marked for masquerade, then DNAT);
  ``KUBE-NODEPORTS`` reached from ``KUBE-SERVICES`` for local destination addresses;
  ``KUBE-MARK-MASQ`` sets the masquerade bit, ``KUBE-POSTROUTING`` (from ``POSTROUTING``)
  masquerades marked packets.
* filter: ``KUBE-SERVICES`` (``FORWARD``/``OUTPUT``, new connections) rejects cluster IPs of
  services without endpoints and drops ``internalTrafficPolicy: Local`` ones without local
  endpoints; ``KUBE-EXTERNAL-SERVICES`` (``INPUT``/``FORWARD``) does the same for node ports and
  external addresses.

Chain names are upstream's: prefix + the first 16 characters of base32(sha256(service port
name + lower-case protocol [+ "ip:port"])), where the service port name is ``ns/name`` or
``ns/name:port-name``.

Chain prefix: upstream's ``KUBE-`` unless ``RuleOptions.chain_prefix`` says otherwise (a
second cluster on the same host, ``--cluster-name NAME``: ``KNAME-``, so ``KNAME-SERVICES``,
``KNAME-SVC-<hash>``; the ``-m recent`` lists take the prefix too). The rules are built with
the canonical ``KUBE-`` names (``Ruleset.chains`` and ``Ruleset.contents`` hold those) and the
text is written with the real ones; chains and jumps of another prefix are never read,
rewritten or deleted, so two clusters' proxies on one host leave each other alone.

Invariants: the text declares every fixed chain and every chain it uses (declaring a chain in
``--noflush`` mode flushes it, so a restore rewrites our chains completely); chains listed in
``existing`` that are no longer wanted are declared and deleted (``-X``) in the same text;
jumps from the built-in chains are written only when ``existing_jumps`` lacks them, so a
restore never duplicates one. Only IPv4 addresses are handled; IPv6 ones are skipped.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "AFFINITY_TIMEOUT_DEFAULT_S",
    "DEFAULT_CHAIN_PREFIX",
    "FIXED_CHAINS",
    "MASQ_BIT_DEFAULT",
    "OWNED_PREFIXES",
    "Endpoint",
    "RuleOptions",
    "Ruleset",
    "ServicePort",
    "build_rules",
    "chain_hash",
    "endpoint_chain",
    "jump_rules",
    "parse_save",
    "service_ports",
]

MASQ_BIT_DEFAULT = 14
DEFAULT_CHAIN_PREFIX = "KUBE-"
AFFINITY_TIMEOUT_DEFAULT_S = 10800
FIXED_CHAINS: dict[str, tuple[str, ...]] = {
    "nat": ("KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-MARK-MASQ"),
    "filter": ("KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES", "KUBE-FORWARD"),
}
OWNED_PREFIXES = ("KUBE-SVC-", "KUBE-SVL-", "KUBE-EXT-", "KUBE-SEP-", "KUBE-FW-")
_SERVICE_LABEL = "kubernetes.io/service-name"


def chain_hash(*parts: str) -> str:
    """Upstream's 16-character hash of the concatenated parts."""
    digest = hashlib.sha256("".join(parts).encode()).digest()
    return base64.b32encode(digest).decode()[:16]


def endpoint_chain(port_name: str, protocol: str, endpoint: str) -> str:
    return "KUBE-SEP-" + chain_hash(port_name, protocol.lower(), endpoint)


@dataclass(frozen=True)
class Endpoint:
    ip: str
    port: int
    node_name: str | None
    ready: bool
    serving: bool
    terminating: bool

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"


@dataclass
class ServicePort:
    """One port of one Service with everything the rules need."""

    namespace: str
    name: str
    port_name: str
    protocol: str  # TCP, UDP, SCTP
    port: int
    cluster_ips: tuple[str, ...]
    node_port: int = 0
    external_ips: tuple[str, ...] = ()  # spec.externalIPs + status.loadBalancer ingress IPs
    external_local: bool = False  # externalTrafficPolicy: Local
    internal_local: bool = False  # internalTrafficPolicy: Local
    affinity_timeout_s: int = 0  # sessionAffinity: ClientIP when > 0
    endpoints: tuple[Endpoint, ...] = ()

    @property
    def key(self) -> str:
        """Upstream's ServicePortName string: ``ns/name`` or ``ns/name:port``."""
        base = f"{self.namespace}/{self.name}"
        return f"{base}:{self.port_name}" if self.port_name else base

    @property
    def proto(self) -> str:
        return self.protocol.lower()

    @property
    def svc_chain(self) -> str:
        return "KUBE-SVC-" + chain_hash(self.key, self.proto)

    @property
    def svl_chain(self) -> str:
        return "KUBE-SVL-" + chain_hash(self.key, self.proto)

    @property
    def ext_chain(self) -> str:
        return "KUBE-EXT-" + chain_hash(self.key, self.proto)

    def sep_chain(self, endpoint: Endpoint) -> str:
        return endpoint_chain(self.key, self.protocol, endpoint.address)

    @property
    def has_external(self) -> bool:
        return bool(self.node_port or self.external_ips)


def _usable(endpoints: Iterable[Endpoint]) -> list[Endpoint]:
    """Ready endpoints; when there are none, serving and terminating ones (upstream's rule)."""
    candidates = list(endpoints)
    ready = [ep for ep in candidates if ep.ready]
    if ready:
        return ready
    return [ep for ep in candidates if ep.serving and ep.terminating]


def _ipv4(value: str) -> bool:
    try:
        return ipaddress.ip_address(value).version == 4
    except ValueError:
        return False


def _slice_endpoints(
    slices: Sequence[Mapping[str, Any]], port_name: str, protocol: str
) -> tuple[Endpoint, ...]:
    found: dict[str, Endpoint] = {}
    for eps in slices:
        if eps.get("addressType", "IPv4") != "IPv4":
            continue
        port_number = None
        for port in eps.get("ports") or []:
            if (port.get("name") or "") == port_name and (port.get("protocol") or "TCP") == (
                protocol
            ):
                port_number = port.get("port")
                break
        if not port_number:
            continue
        for endpoint in eps.get("endpoints") or []:
            conditions = endpoint.get("conditions") or {}
            ready = conditions.get("ready")
            ready = True if ready is None else bool(ready)
            serving = conditions.get("serving")
            serving = ready if serving is None else bool(serving)
            terminating = bool(conditions.get("terminating") or False)
            for address in endpoint.get("addresses") or []:
                if not _ipv4(address):
                    continue
                ep = Endpoint(
                    address,
                    int(port_number),
                    endpoint.get("nodeName"),
                    ready,
                    serving,
                    terminating,
                )
                found.setdefault(ep.address, ep)
    return tuple(sorted(found.values(), key=lambda ep: (ep.ip, ep.port)))


def service_ports(
    service: Mapping[str, Any], slices: Sequence[Mapping[str, Any]]
) -> list[ServicePort]:
    """The ServicePorts of one Service object (none for ExternalName and headless services)."""
    meta = service.get("metadata") or {}
    spec = service.get("spec") or {}
    if spec.get("type") == "ExternalName":
        return []
    cluster_ips = [ip for ip in (spec.get("clusterIPs") or [spec.get("clusterIP")]) if ip]
    cluster_ips = [ip for ip in cluster_ips if ip != "None" and _ipv4(ip)]
    if not cluster_ips:
        return []
    external = [ip for ip in spec.get("externalIPs") or [] if _ipv4(ip)]
    if spec.get("type") == "LoadBalancer":
        for ingress in ((service.get("status") or {}).get("loadBalancer") or {}).get(
            "ingress"
        ) or []:
            ip = ingress.get("ip")
            if ip and _ipv4(ip) and ingress.get("ipMode", "VIP") == "VIP" and ip not in external:
                external.append(ip)
    affinity = 0
    if spec.get("sessionAffinity") == "ClientIP":
        config = ((spec.get("sessionAffinityConfig") or {}).get("clientIP")) or {}
        affinity = int(config.get("timeoutSeconds") or AFFINITY_TIMEOUT_DEFAULT_S)
    node_port_types = ("NodePort", "LoadBalancer")
    result = []
    for port in spec.get("ports") or []:
        protocol = port.get("protocol") or "TCP"
        port_name = port.get("name") or ""
        result.append(
            ServicePort(
                namespace=meta.get("namespace", "default"),
                name=meta.get("name", ""),
                port_name=port_name,
                protocol=protocol,
                port=int(port["port"]),
                cluster_ips=tuple(cluster_ips),
                node_port=int(port.get("nodePort") or 0)
                if spec.get("type") in node_port_types
                else 0,
                external_ips=tuple(external),
                external_local=spec.get("externalTrafficPolicy") == "Local",
                internal_local=spec.get("internalTrafficPolicy") == "Local",
                affinity_timeout_s=affinity,
                endpoints=_slice_endpoints(slices, port_name, protocol),
            )
        )
    return result


@dataclass(frozen=True)
class RuleOptions:
    node_name: str
    cluster_cidr: str = ""
    masquerade_all: bool = False
    masq_bit: int = MASQ_BIT_DEFAULT
    cluster_dns: str | None = None
    dns_redirect: tuple[str, int] | None = None
    chain_prefix: str = DEFAULT_CHAIN_PREFIX


@dataclass
class Ruleset:
    """The restore text and what it programs (for conntrack cleanup and tests)."""

    text: str
    chains: dict[str, set[str]] = field(default_factory=dict)
    # per table, per per-service chain (KUBE-SVC-/SVL-/EXT-/SEP-): its rule lines; pass it
    # back as ``previous`` to skip chains that did not change (partial sync)
    contents: dict[str, dict[str, tuple[str, ...]]] = field(default_factory=dict)
    skipped: int = 0


def _comment(text: str) -> str:
    return f'-m comment --comment "{text}"'


def _match(proto: str, dest: str | None, port: int) -> str:
    parts = [f"-m {proto} -p {proto}"]
    if dest:
        parts.append(f"-d {dest}")
    parts.append(f"--dport {port}")
    return " ".join(parts)


JUMPS: dict[str, tuple[tuple[str, str], ...]] = {
    "nat": (
        ("PREROUTING", '-m comment --comment "kubernetes service portals" -j KUBE-SERVICES'),
        ("OUTPUT", '-m comment --comment "kubernetes service portals" -j KUBE-SERVICES'),
        (
            "POSTROUTING",
            '-m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING',
        ),
    ),
    "filter": (
        (
            "INPUT",
            "-m conntrack --ctstate NEW "
            '-m comment --comment "kubernetes externally-visible service portals" '
            "-j KUBE-EXTERNAL-SERVICES",
        ),
        (
            "FORWARD",
            "-m conntrack --ctstate NEW "
            '-m comment --comment "kubernetes externally-visible service portals" '
            "-j KUBE-EXTERNAL-SERVICES",
        ),
        (
            "FORWARD",
            '-m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" '
            "-j KUBE-SERVICES",
        ),
        (
            "OUTPUT",
            '-m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" '
            "-j KUBE-SERVICES",
        ),
        ("FORWARD", '-m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD'),
    ),
}


def jump_rules(table: str, prefix: str = DEFAULT_CHAIN_PREFIX) -> list[str]:
    """The ``-A <builtin> ...`` lines linking the built-in chains to ours, as iptables-save
    prints them."""
    return [_named(f"-A {chain} {rule}", prefix) for chain, rule in JUMPS[table]]


def _named(text: str, prefix: str) -> str:
    """Canonical (``KUBE-``) chain names in ``text`` -> the names with ``prefix``. Comments
    never hold ``KUBE-`` (service keys are lower-case DNS names), so only names change."""
    if prefix == DEFAULT_CHAIN_PREFIX:
        return text
    return text.replace(DEFAULT_CHAIN_PREFIX, prefix)


def _own_chains(chains: Iterable[str], prefix: str) -> set[str]:
    """The canonical names of the existing chains that carry ``prefix`` (only those are
    ours)."""
    n = len(prefix)
    return {DEFAULT_CHAIN_PREFIX + c[n:] for c in chains if c.startswith(prefix)}


def parse_save(text: str) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """From iptables-save output: per table the chain names and the set of rule lines."""
    chains: dict[str, set[str]] = {}
    rules: dict[str, set[str]] = {}
    table = ""
    for line in text.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
            chains.setdefault(table, set())
            rules.setdefault(table, set())
        elif line.startswith(":") and table:
            chains[table].add(line[1:].split()[0])
        elif line.startswith("-A ") and table:
            rules[table].add(line.strip())
    return chains, rules


def build_rules(
    ports: Sequence[ServicePort],
    options: RuleOptions,
    existing_chains: Mapping[str, set[str]] | None = None,
    existing_rules: Mapping[str, set[str]] | None = None,
    previous: Mapping[str, Mapping[str, tuple[str, ...]]] | None = None,
) -> Ruleset:
    """The restore text for ``ports`` (see the module docstring).

    With ``previous`` (the ``contents`` of the last ruleset that was applied), per-service
    chains whose rules are unchanged and that still exist (``existing_chains``) are left out
    of the text: ``--noflush`` leaves them as they are, which keeps a sync cheap when few
    services change. The fixed chains are always rewritten."""
    existing_chains = existing_chains or {}
    existing_rules = existing_rules or {}
    prefix = options.chain_prefix
    mark = f"{1 << options.masq_bit:#x}/{1 << options.masq_bit:#x}"
    nat_chains: list[str] = list(FIXED_CHAINS["nat"])
    nat: list[str] = []
    filt: list[str] = []
    nodeports: list[str] = []

    nat.append(f"-A KUBE-POSTROUTING -m mark ! --mark {mark} -j RETURN")
    nat.append(f"-A KUBE-POSTROUTING -j MARK --xor-mark {1 << options.masq_bit:#x}")
    nat.append(
        "-A KUBE-POSTROUTING "
        + _comment("kubernetes service traffic requiring SNAT")
        + " -j MASQUERADE --random-fully"
    )
    nat.append(f"-A KUBE-MARK-MASQ -j MARK --or-mark {1 << options.masq_bit:#x}")
    filt.append(
        "-A KUBE-FORWARD -m conntrack --ctstate INVALID "
        + _comment("kubernetes forwarding rules")
        + " -j DROP"
    )
    filt.append(
        f"-A KUBE-FORWARD {_comment('kubernetes forwarding rules')} -m mark --mark {mark} -j ACCEPT"
    )
    filt.append(
        "-A KUBE-FORWARD "
        + _comment("kubernetes forwarding conntrack rule")
        + " -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
    )

    dns_redirected: set[tuple[str, int]] = set()
    if options.dns_redirect is not None and options.cluster_dns:
        host, port = options.dns_redirect
        for proto in ("udp", "tcp"):
            nat.append(
                f"-A KUBE-SERVICES {_comment('node-local DNS')} "
                f"{_match(proto, options.cluster_dns + '/32', 53)} "
                f"-j DNAT --to-destination {host}:{port}"
            )
        dns_redirected.add((options.cluster_dns, 53))

    for sp in sorted(ports, key=lambda p: (p.key, p.proto)):
        proto = sp.proto
        cluster_eps = _usable(sp.endpoints)
        local_eps = _usable(ep for ep in sp.endpoints if ep.node_name == options.node_name)
        needs_svl = sp.internal_local or (sp.external_local and sp.has_external)
        comment = _comment(f"{sp.key} cluster IP")
        redirected = any((ip, sp.port) in dns_redirected for ip in sp.cluster_ips)
        # cluster IP
        internal_eps = local_eps if sp.internal_local else cluster_eps
        internal_chain = sp.svl_chain if sp.internal_local else sp.svc_chain
        for ip in sp.cluster_ips:
            if redirected and (ip, sp.port) in dns_redirected and proto in ("udp", "tcp"):
                continue
            if internal_eps:
                nat.append(
                    f"-A KUBE-SERVICES {comment} {_match(proto, ip + '/32', sp.port)} "
                    f"-j {internal_chain}"
                )
            elif cluster_eps or not sp.internal_local:
                reason = "has no local endpoints" if sp.internal_local else "has no endpoints"
                action = "DROP" if sp.internal_local else "REJECT"
                filt.append(
                    f"-A KUBE-SERVICES {_comment(f'{sp.key} {reason}')} "
                    f"{_match(proto, ip + '/32', sp.port)} -j {action}"
                )
            else:
                filt.append(
                    f"-A KUBE-SERVICES {_comment(f'{sp.key} has no endpoints')} "
                    f"{_match(proto, ip + '/32', sp.port)} -j REJECT"
                )
        # external (node port, external IPs, load balancer ingress)
        external_eps = local_eps if sp.external_local else cluster_eps
        if sp.has_external:
            if external_eps or (sp.external_local and cluster_eps):
                for ip in sp.external_ips:
                    nat.append(
                        f"-A KUBE-SERVICES {_comment(f'{sp.key} external IP')} "
                        f"{_match(proto, ip + '/32', sp.port)} -j {sp.ext_chain}"
                    )
                if sp.node_port:
                    nodeports.append(
                        f"-A KUBE-NODEPORTS {_comment(sp.key)} "
                        f"{_match(proto, None, sp.node_port)} -j {sp.ext_chain}"
                    )
            if not external_eps:
                reason = "has no local endpoints" if sp.external_local else "has no endpoints"
                action = "DROP" if sp.external_local else "REJECT"
                for ip in sp.external_ips:
                    filt.append(
                        f"-A KUBE-EXTERNAL-SERVICES {_comment(f'{sp.key} {reason}')} "
                        f"{_match(proto, ip + '/32', sp.port)} -j {action}"
                    )
                if sp.node_port:
                    filt.append(
                        f"-A KUBE-EXTERNAL-SERVICES {_comment(f'{sp.key} {reason}')} "
                        f"-m addrtype --dst-type LOCAL {_match(proto, None, sp.node_port)} "
                        f"-j {action}"
                    )
        if not cluster_eps:
            continue  # nothing to load-balance to: no SVC/EXT/SEP chains
        # KUBE-SVC: every usable endpoint
        nat_chains.append(sp.svc_chain)
        for ip in sp.cluster_ips:
            if options.masquerade_all:
                nat.append(
                    f"-A {sp.svc_chain} {comment} {_match(proto, ip + '/32', sp.port)} "
                    "-j KUBE-MARK-MASQ"
                )
            elif options.cluster_cidr:
                nat.append(
                    f"-A {sp.svc_chain} {comment} {_match(proto, ip + '/32', sp.port)} "
                    f"! -s {options.cluster_cidr} -j KUBE-MARK-MASQ"
                )
        _balance(nat, sp, sp.svc_chain, cluster_eps)
        if needs_svl and local_eps:
            nat_chains.append(sp.svl_chain)
            _balance(nat, sp, sp.svl_chain, local_eps)
        if sp.has_external:
            nat_chains.append(sp.ext_chain)
            ext = sp.ext_chain
            if sp.external_local:
                if options.cluster_cidr:
                    nat.append(
                        f"-A {ext} "
                        + _comment("pod traffic for " + sp.key + " external destinations")
                        + f" -s {options.cluster_cidr} -j {sp.svc_chain}"
                    )
                nat.append(
                    f"-A {ext} "
                    + _comment("masquerade LOCAL traffic for " + sp.key + " external destinations")
                    + " -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ"
                )
                nat.append(
                    f"-A {ext} "
                    + _comment("route LOCAL traffic for " + sp.key + " external destinations")
                    + f" -m addrtype --src-type LOCAL -j {sp.svc_chain}"
                )
                if local_eps:
                    nat.append(f"-A {ext} -j {sp.svl_chain}")
            else:
                nat.append(
                    f"-A {ext} "
                    + _comment("masquerade traffic for " + sp.key + " external destinations")
                    + " -j KUBE-MARK-MASQ"
                )
                nat.append(f"-A {ext} -j {sp.svc_chain}")
        sep_eps = _dedup_eps([*cluster_eps, *(local_eps if needs_svl else [])])
        for ep in sep_eps:
            sep = sp.sep_chain(ep)
            nat_chains.append(sep)
            nat.append(f"-A {sep} {_comment(sp.key)} -s {ep.ip}/32 -j KUBE-MARK-MASQ")
            recent = f" -m recent --name {sep} --set" if sp.affinity_timeout_s else ""
            nat.append(
                f"-A {sep} {_comment(sp.key)}{recent} -m {proto} -p {proto} "
                f"-j DNAT --to-destination {ep.address}"
            )

    nat.extend(nodeports)
    nat.append(
        "-A KUBE-SERVICES "
        + _comment("kubernetes service nodeports; NOTE: this must be the last rule in this chain")
        + " -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS"
    )

    wanted = {"nat": _dedup(nat_chains), "filter": list(FIXED_CHAINS["filter"])}
    previous = previous or {}
    contents: dict[str, dict[str, tuple[str, ...]]] = {}
    skipped = 0
    out: list[str] = []
    for table, rules in (("filter", filt), ("nat", nat)):
        by_chain: dict[str, list[str]] = {chain: [] for chain in wanted[table]}
        for line in rules:
            by_chain[line.split(" ", 2)[1]].append(line)
        table_contents = {
            chain: tuple(lines)
            for chain, lines in by_chain.items()
            if chain.startswith(OWNED_PREFIXES)
        }
        contents[table] = table_contents
        old = previous.get(table, {})
        present = _own_chains(existing_chains.get(table, set()), prefix)
        keep = {
            chain
            for chain, lines in table_contents.items()
            if chain in present and old.get(chain) == lines
        }
        skipped += len(keep)
        stale = sorted(
            chain
            for chain in present
            if chain.startswith(OWNED_PREFIXES) and chain not in wanted[table]
        )
        out.append(f"*{table}")
        out.extend(f":{chain} - [0:0]" for chain in wanted[table] if chain not in keep)
        out.extend(f":{chain} - [0:0]" for chain in stale)
        have = existing_rules.get(table, set())
        out.extend(line for line in jump_rules(table) if _named(line, prefix) not in have)
        for chain, lines in by_chain.items():
            if chain not in keep:
                out.extend(lines)
        out.extend(f"-X {chain}" for chain in stale)
        out.append("COMMIT")
    return Ruleset(
        _named("\n".join(out) + "\n", prefix),
        {k: set(v) for k, v in wanted.items()},
        contents,
        skipped,
    )


def _balance(nat: list[str], sp: ServicePort, chain: str, endpoints: Sequence[Endpoint]) -> None:
    if sp.affinity_timeout_s:
        for ep in endpoints:
            sep = sp.sep_chain(ep)
            nat.append(
                f"-A {chain} {_comment(sp.key + ' -> ' + ep.address)} -m recent --name {sep} "
                f"--rcheck --seconds {sp.affinity_timeout_s} --reap -j {sep}"
            )
    count = len(endpoints)
    for index, ep in enumerate(endpoints):
        sep = sp.sep_chain(ep)
        remaining = count - index
        if remaining > 1:
            nat.append(
                f"-A {chain} {_comment(sp.key + ' -> ' + ep.address)} -m statistic --mode "
                f"random --probability {1.0 / remaining:.10f} -j {sep}"
            )
        else:
            nat.append(f"-A {chain} {_comment(sp.key + ' -> ' + ep.address)} -j {sep}")


def _dedup_eps(endpoints: Iterable[Endpoint]) -> list[Endpoint]:
    return list({ep.address: ep for ep in endpoints}.values())


def _dedup(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))
