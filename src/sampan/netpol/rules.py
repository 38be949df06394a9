"""Pure rule compilation for NetworkPolicy enforcement: NetworkPolicies + Pods + Namespaces ->
ipsets and filter-table chains for one node, and the texts ``ipset restore`` and
``iptables-restore --noflush`` take. No I/O here.

Layout (``S`` is the node's name suffix, see ``Names``):

* ``SAMPAN-NP-S-FWD`` (jumped to from the top of ``FORWARD``) and ``SAMPAN-NP-S-IN`` (from the
  top of ``INPUT``): replies and packets of established flows (conntrack ESTABLISHED,RELATED)
  return at once; then, for each pod on this node isolated for egress, ``-s <pod IP>`` jumps
  to its egress chain, and (``FWD`` only) for each pod isolated for ingress, ``-d <pod IP>``
  jumps to its ingress chain. ``FORWARD`` carries pod-to-pod traffic on the node (the CNI
  bridge with br_netfilter) and across nodes; ``INPUT`` carries pod-to-node traffic (the
  node-local DNS, the API server). Traffic from the node itself to its pods (kubelet probes)
  leaves through ``OUTPUT`` and is never policed, as with kube-router and Calico.
* ``SAMPAN-NP-S-I<hash>`` / ``SAMPAN-NP-S-E<hash>``: one ingress / egress chain per isolated
  local pod: every (peer, port) pair of every rule of every policy selecting the pod is one
  ``-j RETURN`` line (the policies add up); the last line rejects. A RETURN only means "this
  check passed": the packet goes on through the rest of ``FORWARD`` (both the source's egress
  and the destination's ingress check must pass, and other rules still apply).
* ipsets ``sampan-np-s-<kind><hash>``: ``s`` (hash:ip) the IPs of the pods a
  ``podSelector``/``namespaceSelector`` peer selects, cluster-wide; ``b`` (hash:net) one
  ``ipBlock`` with ``except`` entries stored as ``nomatch``; ``n`` (hash:ip,port) every pod IP
  with its container port for one (port name, protocol), for named ports in egress rules (the
  port is the destination pod's). Named ports in ingress rules are resolved per target pod,
  into its own chain.

Semantics (networking.k8s.io/v1): a pod is isolated for a direction when a policy in its
namespace selects it and lists that direction in ``policyTypes`` (default: ``Ingress``, plus
``Egress`` when the policy has egress rules); an isolated pod accepts what at least one such
policy allows; pods no policy selects are untouched. An empty or missing ``from``/``to`` means
every peer; empty or missing ``ports`` every port. Host-network pods and pods that finished
(``Succeeded``/``Failed``) are neither targets nor peers (a host-network pod's IP is its
node's). Only IPv4 is handled: IPv6 ``ipBlock``\\ s match nothing.

Invariants: names are derived only from the suffix and the objects' identity, so two nodes (or
clusters) on one host never share a chain or set; the iptables text declares every chain it
writes (declaring a chain flushes it), so a restore rewrites them completely; stale chains are
declared and deleted in the same text; the jumps from the built-in chains are (re)inserted at
the top only when missing or preceded by anything but another node's jump.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sampan.api.labels import Selector, SelectorError, selector_from_label_selector

__all__ = [
    "JUMP_COMMENT",
    "IPSet",
    "Names",
    "PodInfo",
    "Ruleset",
    "cleanup_ipset_text",
    "cleanup_text",
    "compile_rules",
    "ipset_restore_text",
    "iptables_restore_text",
    "name_suffix",
    "parse_save",
    "pod_info",
]

JUMP_COMMENT = "sampan network policy"
CHAIN_ROOT = "SAMPAN-NP-"
SET_ROOT = "sampan-np-"
SUFFIX_CHARS = 5
HASH_CHARS_CHAIN = 10
HASH_CHARS_SET = 12
MAX_CHAIN_CHARS = 28
"""iptables refuses longer chain names (XT_EXTENSION_MAXNAMELEN - 1)."""
MAX_SET_CHARS = 31
"""ipset refuses longer set names (IPSET_MAXNAMELEN - 1)."""
SET_HASHSIZE = 1024
SET_MAXELEM = 65536
PROTOCOLS = ("TCP", "UDP", "SCTP")
_TERMINAL_PHASES = ("Succeeded", "Failed")
_ALL_IPV4 = ("0.0.0.0/1", "128.0.0.0/1")  # hash:net cannot hold a /0


def _hash(text: str, chars: int) -> str:
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()[:chars]


def name_suffix(identity: str) -> str:
    """The short suffix for one node agent on this host (derived from its resolved data dir:
    two agents never share a data dir)."""
    return _hash(identity, SUFFIX_CHARS)


@dataclass(frozen=True)
class Names:
    """Every chain and set name of one node agent."""

    suffix: str

    @property
    def chain_prefix(self) -> str:
        return f"{CHAIN_ROOT}{self.suffix.upper()}-"

    @property
    def set_prefix(self) -> str:
        return f"{SET_ROOT}{self.suffix.lower()}-"

    @property
    def forward_chain(self) -> str:
        return self.chain_prefix + "FWD"

    @property
    def input_chain(self) -> str:
        return self.chain_prefix + "IN"

    @property
    def tmp_set(self) -> str:
        return self.set_prefix + "tmp"

    def pod_chain(self, direction: str, namespace: str, name: str) -> str:
        letter = "I" if direction == "ingress" else "E"
        chain = self.chain_prefix + letter + _hash(f"{namespace}/{name}", HASH_CHARS_CHAIN)
        assert len(chain) <= MAX_CHAIN_CHARS, chain
        return chain

    def set_name(self, kind: str, key: str) -> str:
        name = self.set_prefix + kind + _hash(key, HASH_CHARS_SET).lower()
        assert len(name) <= MAX_SET_CHARS, name
        return name

    def jumps(self) -> tuple[tuple[str, str], ...]:
        """(built-in chain, our chain) pairs."""
        return (("FORWARD", self.forward_chain), ("INPUT", self.input_chain))


@dataclass(frozen=True)
class PodInfo:
    """What policies need of one pod."""

    namespace: str
    name: str
    ip: str
    node_name: str
    labels: Mapping[str, str]
    ports: tuple[tuple[str, str, int], ...]  # (port name, protocol, container port)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def named_port(self, name: str, protocol: str) -> int | None:
        for port_name, port_protocol, number in self.ports:
            if port_name == name and port_protocol == protocol:
                return number
        return None


def _ipv4(value: Any) -> bool:
    try:
        return isinstance(value, str) and ipaddress.ip_address(value).version == 4
    except ValueError:
        return False


def pod_info(pod: Mapping[str, Any]) -> PodInfo | None:
    """The pod as policies see it; None if policies do not apply to it (no IPv4 address yet,
    host network, finished)."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    if spec.get("hostNetwork") or status.get("phase") in _TERMINAL_PHASES:
        return None
    candidates = [entry.get("ip") for entry in status.get("podIPs") or [] if entry]
    candidates.append(status.get("podIP"))
    ip = next((c for c in candidates if _ipv4(c)), None)
    if ip is None:
        return None
    ports: list[tuple[str, str, int]] = []
    for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        for port in container.get("ports") or []:
            if port.get("name") and port.get("containerPort"):
                ports.append(
                    (port["name"], port.get("protocol") or "TCP", int(port["containerPort"]))
                )
    return PodInfo(
        namespace=meta.get("namespace", ""),
        name=meta.get("name", ""),
        ip=ip,
        node_name=spec.get("nodeName") or "",
        labels=dict(meta.get("labels") or {}),
        ports=tuple(ports),
    )


@dataclass(frozen=True)
class IPSet:
    name: str
    type: str  # hash:ip, hash:net, hash:ip,port
    entries: tuple[str, ...]


@dataclass
class Ruleset:
    """What one sync programs: sets and chains (each chain's ``-A`` lines, in order)."""

    names: Names
    sets: dict[str, IPSet] = field(default_factory=dict)
    chains: dict[str, list[str]] = field(default_factory=dict)
    isolated: dict[str, set[str]] = field(default_factory=dict)
    """Per direction (``ingress``/``egress``), the keys (ns/name) of isolated local pods."""


def _selector(obj: Any) -> Selector:
    try:
        return selector_from_label_selector(obj)
    except SelectorError:
        return Selector.nothing()  # the API server validates selectors; never seen in practice


def _policy_types(spec: Mapping[str, Any]) -> set[str]:
    types = spec.get("policyTypes")
    if types:
        return set(types)
    return {"Ingress", "Egress"} if spec.get("egress") else {"Ingress"}


def _comment(text: str) -> str:
    return f'-m comment --comment "{text}"'


class _Compiler:
    def __init__(
        self,
        names: Names,
        node_name: str,
        pods: Sequence[PodInfo],
        namespaces: Mapping[str, Mapping[str, str]],
    ) -> None:
        self.names = names
        self.node_name = node_name
        self.pods = sorted(pods, key=lambda p: (p.namespace, p.name))
        self.namespaces = namespaces
        self.sets: dict[str, IPSet] = {}
        self.by_namespace: dict[str, list[PodInfo]] = {}
        for pod in self.pods:
            self.by_namespace.setdefault(pod.namespace, []).append(pod)
        # a policy's peers and egress named ports are the same for every pod it selects
        self._peer_cache: dict[tuple[str, str, str], list[str]] = {}
        self._named_cache: dict[tuple[str, str], str] = {}

    # peers -----------------------------------------------------------------------------------

    def _add_set(self, kind: str, set_type: str, key: str, entries: Iterable[str]) -> str:
        name = self.names.set_name(kind, key)
        self.sets[name] = IPSet(name, set_type, tuple(sorted(set(entries))))
        return name

    def _selected_pods(self, namespace: str, peer: Mapping[str, Any]) -> list[PodInfo]:
        pod_selector = _selector(peer.get("podSelector") or {})
        if "namespaceSelector" in peer and peer["namespaceSelector"] is not None:
            ns_selector = _selector(peer["namespaceSelector"])
            in_namespaces = {
                name for name, labels in self.namespaces.items() if ns_selector.matches(labels)
            }
        else:
            in_namespaces = {namespace}
        return [
            pod
            for ns in sorted(in_namespaces)
            for pod in self.by_namespace.get(ns, ())
            if pod_selector.matches(pod.labels)
        ]

    def peer_matches(self, namespace: str, peer: Mapping[str, Any], side: str) -> list[str]:
        """iptables match fragments for one peer (``side`` is ``src`` or ``dst``); a peer
        that can match nothing yields no fragment."""
        key = (namespace, json.dumps(peer, sort_keys=True), side)
        if key not in self._peer_cache:
            self._peer_cache[key] = self._peer_matches(namespace, peer, side)
        return self._peer_cache[key]

    def _peer_matches(self, namespace: str, peer: Mapping[str, Any], side: str) -> list[str]:
        flag = "-s" if side == "src" else "-d"
        block = peer.get("ipBlock")
        if block is not None:
            try:
                cidr = ipaddress.ip_network(block.get("cidr", ""), strict=False)
            except ValueError:
                return []
            if cidr.version != 4:
                return []
            excepts = []
            for item in block.get("except") or []:
                try:
                    net = ipaddress.ip_network(item, strict=False)
                except ValueError:
                    continue
                if net.version == 4:
                    excepts.append(str(net))
            if not excepts:
                return [""] if cidr.prefixlen == 0 else [f"{flag} {cidr}"]
            entries = list(_ALL_IPV4) if cidr.prefixlen == 0 else [str(cidr)]
            entries += [f"{net} nomatch" for net in excepts]
            key = json.dumps({"cidr": str(cidr), "except": sorted(excepts)}, sort_keys=True)
            name = self._add_set("b", "hash:net", key, entries)
            return [f"-m set --match-set {name} {side}"]
        key_doc: dict[str, Any] = {"podSelector": peer.get("podSelector") or {}}
        if peer.get("namespaceSelector") is not None:
            key_doc["namespaceSelector"] = peer["namespaceSelector"]
        else:
            key_doc["namespace"] = namespace
        key = json.dumps(key_doc, sort_keys=True)
        name = self.names.set_name("s", key)
        if name not in self.sets:  # the same peer in another namespace's policy: same set
            ips = [pod.ip for pod in self._selected_pods(namespace, peer)]
            self._add_set("s", "hash:ip", key, ips)
        return [f"-m set --match-set {name} {side}"]

    # ports -----------------------------------------------------------------------------------

    def port_matches(
        self, ports: Sequence[Mapping[str, Any]] | None, target: PodInfo | None
    ) -> list[str]:
        """Match fragments for a rule's ports. Ingress (``target`` given): named ports are the
        target pod's; egress (``target`` None): the destination pod's, through a set."""
        if not ports:
            return [""]
        out: list[str] = []
        for port in ports:
            protocol = str(port.get("protocol") or "TCP").upper()
            if protocol not in PROTOCOLS:
                continue
            proto = protocol.lower()
            value = port.get("port")
            if value is None:
                out.append(f"-p {proto}")
                continue
            if isinstance(value, str) and not value.isdigit():
                if target is not None:
                    number = target.named_port(value, protocol)
                    if number is not None:
                        out.append(f"-p {proto} -m {proto} --dport {number}")
                    continue
                out.append(f"-p {proto} -m set --match-set {self._named(value, protocol)} dst,dst")
                continue
            number = int(value)
            end = port.get("endPort")
            if end is not None and int(end) > number:
                out.append(f"-p {proto} -m {proto} --dport {number}:{int(end)}")
            else:
                out.append(f"-p {proto} -m {proto} --dport {number}")
        return out

    def _named(self, port_name: str, protocol: str) -> str:
        """The set of every pod IP with its container port called ``port_name``."""
        if (port_name, protocol) not in self._named_cache:
            proto = protocol.lower()
            entries = []
            for pod in self.pods:
                number = pod.named_port(port_name, protocol)
                if number is not None:
                    entries.append(f"{pod.ip},{proto}:{number}")
            key = json.dumps({"port": port_name, "protocol": protocol})
            name = self._add_set("n", "hash:ip,port", key, entries)
            self._named_cache[(port_name, protocol)] = name
        return self._named_cache[(port_name, protocol)]

    # chains ----------------------------------------------------------------------------------

    def pod_chain(
        self, direction: str, pod: PodInfo, policies: Sequence[Mapping[str, Any]]
    ) -> tuple[str, list[str]]:
        chain = self.names.pod_chain(direction, pod.namespace, pod.name)
        lines: list[str] = []
        if direction == "ingress":
            lines.append(
                f"-A {chain} {_comment(f'{pod.key}: from the node itself')} "
                "-m addrtype --src-type LOCAL -j RETURN"
            )
        side = "src" if direction == "ingress" else "dst"
        peers_key = "from" if direction == "ingress" else "to"
        for policy in policies:
            meta = policy.get("metadata") or {}
            namespace = meta.get("namespace", "")
            comment = _comment(f"{namespace}/{meta.get('name', '')}")
            for rule in (policy.get("spec") or {}).get(direction) or []:
                peers = rule.get(peers_key) or []
                peer_parts: list[str] = []
                if peers:
                    for peer in peers:
                        peer_parts.extend(self.peer_matches(namespace, peer, side))
                else:
                    peer_parts = [""]
                port_parts = self.port_matches(
                    rule.get("ports"), pod if direction == "ingress" else None
                )
                for peer_part in peer_parts:
                    for port_part in port_parts:
                        match = " ".join(p for p in (peer_part, port_part) if p)
                        lines.append(
                            " ".join(p for p in (f"-A {chain}", comment, match, "-j RETURN") if p)
                        )
        lines.append(
            f"-A {chain} {_comment(f'{pod.key}: no {direction} allowed by policy')} -j REJECT"
        )
        return chain, lines


def compile_rules(
    names: Names,
    node_name: str,
    policies: Iterable[Mapping[str, Any]],
    pods: Iterable[PodInfo],
    namespaces: Mapping[str, Mapping[str, str]],
) -> Ruleset:
    """The sets and chains that enforce ``policies`` for the pods on ``node_name``."""
    pod_list = list(pods)
    compiler = _Compiler(names, node_name, pod_list, namespaces)
    local = [pod for pod in compiler.pods if pod.node_name == node_name]
    local_by_ns: dict[str, list[PodInfo]] = {}
    for pod in local:
        local_by_ns.setdefault(pod.namespace, []).append(pod)
    selecting: dict[str, dict[str, list[Mapping[str, Any]]]] = {"ingress": {}, "egress": {}}
    ordered = sorted(
        policies,
        key=lambda p: ((p.get("metadata") or {}).get("namespace", ""), p["metadata"]["name"]),
    )
    for policy in ordered:
        meta = policy.get("metadata") or {}
        spec = policy.get("spec") or {}
        namespace = meta.get("namespace", "")
        selector = _selector(spec.get("podSelector") or {})
        types = _policy_types(spec)
        for pod in local_by_ns.get(namespace, ()):
            if not selector.matches(pod.labels):
                continue
            if "Ingress" in types:
                selecting["ingress"].setdefault(pod.key, []).append(policy)
            if "Egress" in types:
                selecting["egress"].setdefault(pod.key, []).append(policy)
    ruleset = Ruleset(names)
    forward = [
        f"-A {names.forward_chain} {_comment('replies and established flows')} "
        "-m conntrack --ctstate RELATED,ESTABLISHED -j RETURN"
    ]
    inbound = [
        f"-A {names.input_chain} {_comment('replies and established flows')} "
        "-m conntrack --ctstate RELATED,ESTABLISHED -j RETURN"
    ]
    pod_chains: dict[str, list[str]] = {}
    for direction in ("egress", "ingress"):
        ruleset.isolated[direction] = set(selecting[direction])
        for pod in local:
            applicable = selecting[direction].get(pod.key)
            if not applicable:
                continue
            chain, lines = compiler.pod_chain(direction, pod, applicable)
            pod_chains[chain] = lines
            if direction == "egress":
                jump = f"-s {pod.ip}/32 {_comment(pod.key + ' egress')} -j {chain}"
                forward.append(f"-A {names.forward_chain} {jump}")
                inbound.append(f"-A {names.input_chain} {jump}")
            else:
                forward.append(
                    f"-A {names.forward_chain} -d {pod.ip}/32 "
                    f"{_comment(pod.key + ' ingress')} -j {chain}"
                )
    ruleset.chains = {names.forward_chain: forward, names.input_chain: inbound, **pod_chains}
    ruleset.sets = dict(sorted(compiler.sets.items()))
    return ruleset


# -- restore texts ------------------------------------------------------------------------------


def parse_save(text: str) -> tuple[set[str], dict[str, list[str]]]:
    """From ``iptables-save -t filter``: the chain names, and per chain its rule lines in
    order."""
    chains: set[str] = set()
    rules: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.startswith(":"):
            chains.add(line[1:].split()[0])
        elif line.startswith("-A "):
            chain = line.split()[1]
            rules.setdefault(chain, []).append(line.strip())
    return chains, rules


def _target(line: str) -> str | None:
    words = line.split()
    for i, word in enumerate(words[:-1]):
        if word in ("-j", "--jump", "-g", "--goto"):
            return words[i + 1]
    return None


def _jump_spec(chain: str) -> str:
    return f'-m comment --comment "{JUMP_COMMENT}" -j {chain}'


def _jump_lines(names: Names, rules: Mapping[str, list[str]]) -> list[str]:
    """Delete/insert lines that put our jumps first in each built-in chain (before anything
    but other nodes' network policy jumps); nothing when they already are."""
    out: list[str] = []
    for builtin, chain in names.jumps():
        existing = rules.get(builtin, [])
        ours = [i for i, line in enumerate(existing) if _target(line) == chain]
        ahead_ok = bool(ours) and all(
            (_target(line) or "").startswith(CHAIN_ROOT) for line in existing[: ours[0]]
        )
        if len(ours) == 1 and ahead_ok:
            continue
        for index in ours:
            out.append("-D" + existing[index][2:])
        out.append(f"-I {builtin} 1 {_jump_spec(chain)}")
    return out


def iptables_restore_text(
    ruleset: Ruleset, existing_chains: set[str], existing_rules: Mapping[str, list[str]]
) -> str:
    """The ``iptables-restore --noflush`` input for the filter table."""
    names = ruleset.names
    stale = sorted(
        chain
        for chain in existing_chains
        if chain.startswith(names.chain_prefix) and chain not in ruleset.chains
    )
    out = ["*filter"]
    out.extend(f":{chain} - [0:0]" for chain in ruleset.chains)
    out.extend(f":{chain} - [0:0]" for chain in stale)
    for lines in ruleset.chains.values():
        out.extend(lines)
    out.extend(_jump_lines(names, existing_rules))
    out.extend(f"-X {chain}" for chain in stale)
    out.append("COMMIT")
    return "\n".join(out) + "\n"


def cleanup_text(
    names: Names, existing_chains: set[str], existing_rules: Mapping[str, list[str]]
) -> str:
    """Restore text removing our jumps and chains; empty when there is nothing to remove."""
    chains = sorted(c for c in existing_chains if c.startswith(names.chain_prefix))
    jumps = [
        "-D" + line[2:]
        for builtin, chain in names.jumps()
        for line in existing_rules.get(builtin, [])
        if _target(line) == chain
    ]
    if not chains and not jumps:
        return ""
    out = ["*filter", *(f":{c} - [0:0]" for c in chains), *jumps, *(f"-X {c}" for c in chains)]
    out.append("COMMIT")
    return "\n".join(out) + "\n"


def _create(name: str, set_type: str) -> str:
    return f"create {name} {set_type} family inet hashsize {SET_HASHSIZE} maxelem {SET_MAXELEM}"


def ipset_restore_text(
    names: Names,
    sets: Mapping[str, IPSet],
    existing: set[str],
    previous: Mapping[str, IPSet] | None = None,
) -> str:
    """``ipset restore`` input writing ``sets``: each changed (or missing) set is filled under
    the temporary name and swapped in, so a set is never seen half-filled; sets equal to
    ``previous`` that still exist are left alone."""
    previous = previous or {}
    out: list[str] = []
    if names.tmp_set in existing:
        out.append(f"destroy {names.tmp_set}")
    for name, ipset in sets.items():
        if name in existing and previous.get(name) == ipset:
            continue
        if name not in existing:
            out.append(_create(name, ipset.type))
        out.append(_create(names.tmp_set, ipset.type))
        out.extend(f"add {names.tmp_set} {entry}" for entry in ipset.entries)
        out.append(f"swap {names.tmp_set} {name}")
        out.append(f"destroy {names.tmp_set}")
    return "\n".join(out) + "\n" if out else ""


def cleanup_ipset_text(names: Names, existing: set[str], keep: Iterable[str] = ()) -> str:
    """``ipset restore`` input destroying our sets not in ``keep`` (they must no longer be
    referenced by a rule)."""
    kept = set(keep)
    doomed = sorted(n for n in existing if n.startswith(names.set_prefix) and n not in kept)
    return "".join(f"destroy {name}\n" for name in doomed)
