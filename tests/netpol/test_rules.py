"""The rule compiler without a node: policy objects -> chains, ipsets and restore texts."""

from __future__ import annotations

from typing import Any

import pytest

from sampan.netpol.rules import (
    IPSet,
    Names,
    PodInfo,
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

NODE = "n1"
NAMES = Names(name_suffix("/var/lib/sampan"))
NAMESPACES = {"shop": {"kubernetes.io/metadata.name": "shop"}, "ops": {"team": "ops"}, "dev": {}}


def _pod(
    ns: str,
    name: str,
    ip: str,
    labels: dict[str, str] | None = None,
    *,
    node: str = NODE,
    ports: tuple[tuple[str, str, int], ...] = (),
) -> PodInfo:
    return PodInfo(ns, name, ip, node, labels or {}, ports)


WEB = _pod("shop", "web", "10.42.0.10", {"app": "web"}, ports=(("http", "TCP", 8080),))
WEB2 = _pod("shop", "web2", "10.42.0.11", {"app": "web"}, ports=(("http", "TCP", 9090),))
CLIENT = _pod("shop", "client", "10.42.0.20", {"role": "client"})
REMOTE_CLIENT = _pod("shop", "far", "10.42.1.20", {"role": "client"}, node="n2")
OPS = _pod("ops", "probe", "10.42.1.30", {"role": "client"}, node="n2")
DEV = _pod("dev", "tool", "10.42.0.40", {"role": "client"})
PODS = [WEB, WEB2, CLIENT, REMOTE_CLIENT, OPS, DEV]


def _policy(name: str, spec: dict[str, Any], ns: str = "shop") -> dict[str, Any]:
    return {"metadata": {"namespace": ns, "name": name}, "spec": spec}


def _compile(*policies: dict[str, Any], pods: list[PodInfo] | None = None) -> Ruleset:
    return compile_rules(NAMES, NODE, policies, PODS if pods is None else pods, NAMESPACES)


def _chain(ruleset: Ruleset, direction: str, pod: PodInfo) -> list[str]:
    return ruleset.chains[NAMES.pod_chain(direction, pod.namespace, pod.name)]


def _set_entries(ruleset: Ruleset, line: str) -> tuple[str, ...]:
    name = line.split("--match-set ", 1)[1].split()[0]
    return ruleset.sets[name].entries


def test_names_fit_the_kernel_limits_and_differ_per_data_dir() -> None:
    other = Names(name_suffix("/tmp/second-node"))
    assert NAMES.suffix != other.suffix
    assert NAMES.forward_chain != other.forward_chain
    chain = NAMES.pod_chain("ingress", "a" * 63, "b" * 253)
    assert len(chain) <= 28 and chain.startswith(NAMES.chain_prefix)
    assert len(NAMES.set_name("s", "x" * 1000)) <= 31
    assert len(NAMES.tmp_set) <= 31
    assert NAMES.pod_chain("ingress", "a", "b") != NAMES.pod_chain("egress", "a", "b")


def test_no_policy_leaves_every_pod_alone() -> None:
    ruleset = _compile()
    assert set(ruleset.chains) == {NAMES.forward_chain, NAMES.input_chain}
    assert ruleset.sets == {}
    for lines in ruleset.chains.values():
        assert len(lines) == 1 and "ESTABLISHED" in lines[0] and lines[0].endswith("-j RETURN")


def test_default_deny_ingress_isolates_only_local_pods_of_the_namespace() -> None:
    ruleset = _compile(_policy("deny", {"podSelector": {}, "policyTypes": ["Ingress"]}))
    assert ruleset.isolated["ingress"] == {"shop/web", "shop/web2", "shop/client"}
    assert ruleset.isolated["egress"] == set()
    forward = ruleset.chains[NAMES.forward_chain]
    assert forward[0].endswith("--ctstate RELATED,ESTABLISHED -j RETURN")
    web_chain = NAMES.pod_chain("ingress", "shop", "web")
    assert any(f"-d {WEB.ip}/32" in line and line.endswith(f"-j {web_chain}") for line in forward)
    assert not any(REMOTE_CLIENT.ip in line or DEV.ip in line for line in forward)
    chain = _chain(ruleset, "ingress", WEB)
    assert "--src-type LOCAL -j RETURN" in chain[0]  # the node itself: kubelet probes
    assert chain[-1].endswith("-j REJECT")
    assert len(chain) == 2  # nothing allowed in between
    # ingress isolation adds nothing to INPUT (pod -> node is egress)
    assert len(ruleset.chains[NAMES.input_chain]) == 1


def test_ingress_from_pod_selector_on_a_port() -> None:
    ruleset = _compile(
        _policy(
            "allow",
            {
                "podSelector": {"matchLabels": {"app": "web"}},
                "ingress": [
                    {
                        "from": [{"podSelector": {"matchLabels": {"role": "client"}}}],
                        "ports": [{"protocol": "TCP", "port": 8080}],
                    }
                ],
            },
        )
    )
    assert ruleset.isolated["ingress"] == {"shop/web", "shop/web2"}
    allow = [line for line in _chain(ruleset, "ingress", WEB) if line.endswith("-j RETURN")][1:]
    assert len(allow) == 1
    assert "-p tcp -m tcp --dport 8080" in allow[0] and " src " in allow[0]
    # peers are cluster-wide pods of the policy's namespace (the remote one too), not others
    assert _set_entries(ruleset, allow[0]) == (CLIENT.ip, REMOTE_CLIENT.ip)
    assert '--comment "shop/allow"' in allow[0]


def test_namespace_selector_alone_and_combined_with_a_pod_selector() -> None:
    ruleset = _compile(
        _policy(
            "ns",
            {
                "podSelector": {"matchLabels": {"app": "web"}},
                "ingress": [
                    {
                        "from": [
                            {"namespaceSelector": {"matchLabels": {"team": "ops"}}},
                            {
                                "namespaceSelector": {},
                                "podSelector": {"matchLabels": {"role": "client"}},
                            },
                        ]
                    }
                ],
            },
        )
    )
    allow = [line for line in _chain(ruleset, "ingress", WEB) if "--match-set" in line]
    assert len(allow) == 2
    assert _set_entries(ruleset, allow[0]) == (OPS.ip,)
    assert _set_entries(ruleset, allow[1]) == tuple(
        sorted([CLIENT.ip, REMOTE_CLIENT.ip, OPS.ip, DEV.ip])
    )


def test_policies_add_up_and_identical_peers_share_a_set() -> None:
    peer = {"podSelector": {"matchLabels": {"role": "client"}}}
    ruleset = _compile(
        _policy("one", {"podSelector": {}, "ingress": [{"from": [peer], "ports": [{"port": 80}]}]}),
        _policy("two", {"podSelector": {}, "ingress": [{"from": [peer], "ports": [{"port": 81}]}]}),
    )
    allow = [line for line in _chain(ruleset, "ingress", WEB) if "--match-set" in line]
    assert ["--dport 80" in allow[0], "--dport 81" in allow[1]] == [True, True]
    assert len(ruleset.sets) == 1


def test_empty_from_and_ports_allow_everything() -> None:
    ruleset = _compile(_policy("all", {"podSelector": {}, "ingress": [{}]}))
    chain = _chain(ruleset, "ingress", CLIENT)
    assert chain[1] == f'-A {chain[1].split()[1]} -m comment --comment "shop/all" -j RETURN'


def test_named_ports_resolve_per_target_pod_for_ingress() -> None:
    ruleset = _compile(
        _policy(
            "named",
            {
                "podSelector": {"matchLabels": {"app": "web"}},
                "ingress": [{"ports": [{"port": "http"}]}],
            },
        )
    )
    web = [line for line in _chain(ruleset, "ingress", WEB) if "--dport" in line]
    web2 = [line for line in _chain(ruleset, "ingress", WEB2) if "--dport" in line]
    assert len(web) == 1 and "--dport 8080" in web[0]
    assert len(web2) == 1 and "--dport 9090" in web2[0]
    # a pod without the port: the rule matches nothing there, the pod is still isolated
    ruleset = _compile(
        _policy("named", {"podSelector": {}, "ingress": [{"ports": [{"port": "http"}]}]})
    )
    assert [line.endswith("REJECT") for line in _chain(ruleset, "ingress", CLIENT)[1:]] == [True]


def test_named_ports_in_egress_use_the_destination_pods_ports() -> None:
    ruleset = _compile(
        _policy(
            "out",
            {
                "podSelector": {"matchLabels": {"role": "client"}},
                "policyTypes": ["Egress"],
                "egress": [
                    {
                        "to": [{"podSelector": {"matchLabels": {"app": "web"}}}],
                        "ports": [{"port": "http"}],
                    }
                ],
            },
        )
    )
    (line,) = [line for line in _chain(ruleset, "egress", CLIENT) if "--match-set" in line]
    assert " dst -p tcp -m set --match-set " in line and line.endswith("dst,dst -j RETURN")
    named = line.split("--match-set ")[2].split()[0]
    assert ruleset.sets[named] == IPSet(
        named, "hash:ip,port", (f"{WEB.ip},tcp:8080", f"{WEB2.ip},tcp:9090")
    )


def test_port_ranges_protocols_and_protocol_only_entries() -> None:
    ruleset = _compile(
        _policy(
            "ports",
            {
                "podSelector": {},
                "ingress": [
                    {
                        "ports": [
                            {"protocol": "UDP", "port": 5000, "endPort": 5010},
                            {"protocol": "SCTP", "port": 7000},
                            {"protocol": "TCP"},
                        ]
                    }
                ],
            },
        )
    )
    allow = _chain(ruleset, "ingress", WEB)[1:-1]
    assert [line.split('"shop/ports" ')[1] for line in allow] == [
        "-p udp -m udp --dport 5000:5010 -j RETURN",
        "-p sctp -m sctp --dport 7000 -j RETURN",
        "-p tcp -j RETURN",
    ]


def test_ip_blocks_with_and_without_except() -> None:
    ruleset = _compile(
        _policy(
            "blocks",
            {
                "podSelector": {"matchLabels": {"role": "client"}},
                "egress": [
                    {
                        "to": [
                            {"ipBlock": {"cidr": "192.168.0.0/16"}},
                            {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.42.0.0/16"]}},
                            {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.0.0/16"]}},
                            {"ipBlock": {"cidr": "fd00::/8"}},
                        ]
                    }
                ],
            },
        )
    )
    assert ruleset.isolated["egress"] == {"shop/client"}
    assert ruleset.isolated["ingress"] == {"shop/client"}  # policyTypes defaulted: both
    allow = [line for line in _chain(ruleset, "egress", CLIENT) if line.endswith("RETURN")]
    assert len(allow) == 3  # the IPv6 block matches nothing
    assert "-d 192.168.0.0/16 -j RETURN" in allow[0]
    assert _set_entries(ruleset, allow[1]) == ("10.0.0.0/8", "10.42.0.0/16 nomatch")
    assert _set_entries(ruleset, allow[2]) == ("0.0.0.0/1", "128.0.0.0/1", "169.254.0.0/16 nomatch")
    assert {s.type for s in ruleset.sets.values()} == {"hash:net"}
    # egress chains are reached from FORWARD (pods) and INPUT (the node itself)
    chain = NAMES.pod_chain("egress", "shop", "client")
    for top in (NAMES.forward_chain, NAMES.input_chain):
        assert any(f"-s {CLIENT.ip}/32" in x and x.endswith(chain) for x in ruleset.chains[top])


def test_policy_types_defaults_and_explicit_egress_only() -> None:
    ruleset = _compile(_policy("eg", {"podSelector": {}, "policyTypes": ["Egress"]}))
    assert ruleset.isolated == {
        "egress": {"shop/web", "shop/web2", "shop/client"},
        "ingress": set(),
    }
    assert _chain(ruleset, "egress", WEB)[-1].endswith("-j REJECT")
    assert len(_chain(ruleset, "egress", WEB)) == 1  # default deny: no --src-type LOCAL shortcut
    ruleset = _compile(_policy("in", {"podSelector": {}}))
    assert ruleset.isolated["egress"] == set() and len(ruleset.isolated["ingress"]) == 3


def test_match_expressions_select_pods() -> None:
    selector = {"matchExpressions": [{"key": "app", "operator": "In", "values": ["web"]}]}
    ruleset = _compile(_policy("expr", {"podSelector": selector}))
    assert ruleset.isolated["ingress"] == {"shop/web", "shop/web2"}
    selector = {"matchExpressions": [{"key": "app", "operator": "DoesNotExist"}]}
    ruleset = _compile(_policy("expr", {"podSelector": selector}))
    assert ruleset.isolated["ingress"] == {"shop/client"}


def test_pod_info_skips_host_network_finished_and_unaddressed_pods() -> None:
    def pod(**extra: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "metadata": {"namespace": "a", "name": "p", "labels": {"x": "y"}},
            "spec": {
                "nodeName": "n1",
                "containers": [
                    {
                        "name": "c",
                        "ports": [{"name": "dns", "containerPort": 53, "protocol": "UDP"}],
                    }
                ],
            },
            "status": {"phase": "Running", "podIP": "10.42.0.9", "podIPs": [{"ip": "10.42.0.9"}]},
        }
        for key, value in extra.items():
            body[key].update(value)
        return body

    info = pod_info(pod())
    assert info == PodInfo("a", "p", "10.42.0.9", "n1", {"x": "y"}, (("dns", "UDP", 53),))
    assert info.named_port("dns", "UDP") == 53 and info.named_port("dns", "TCP") is None
    assert pod_info(pod(spec={"hostNetwork": True})) is None
    assert pod_info(pod(status={"phase": "Succeeded"})) is None
    assert pod_info(pod(status={"podIP": None, "podIPs": []})) is None
    dual = pod(status={"podIP": "fd00::9", "podIPs": [{"ip": "fd00::9"}, {"ip": "10.42.0.9"}]})
    assert pod_info(dual) is not None and pod_info(dual).ip == "10.42.0.9"


SAVE = """# Generated by iptables-save
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-FORWARD - [0:0]
:{fwd} - [0:0]
:{stale} - [0:0]
:SAMPAN-NP-OTHER-FWD - [0:0]
-A INPUT -m comment --comment "sampan network policy" -j {inp}
-A FORWARD -m comment --comment "sampan network policy" -j SAMPAN-NP-OTHER-FWD
-A FORWARD -m comment --comment "sampan network policy" -j {fwd}
-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
COMMIT
"""


def _save(**names: str) -> str:
    values = {
        "fwd": NAMES.forward_chain,
        "inp": NAMES.input_chain,
        "stale": NAMES.chain_prefix + "IOLDPOD",
    }
    values.update(names)
    return SAVE.format(**values)


def test_restore_text_rewrites_our_chains_and_deletes_stale_ones() -> None:
    ruleset = _compile(_policy("deny", {"podSelector": {}}))
    chains, rules = parse_save(_save())
    text = iptables_restore_text(ruleset, chains, rules)
    lines = text.splitlines()
    assert lines[0] == "*filter" and lines[-1] == "COMMIT"
    for chain in ruleset.chains:
        assert f":{chain} - [0:0]" in lines
    stale = NAMES.chain_prefix + "IOLDPOD"
    assert f":{stale} - [0:0]" in lines and lines[-2] == f"-X {stale}"
    assert "SAMPAN-NP-OTHER-FWD" not in text  # another node's chains are not ours to touch
    # jumps already first (behind another node's network policy jump only): left alone
    assert not any(line.startswith(("-I ", "-D ")) for line in lines)


def test_restore_text_moves_a_jump_that_is_not_first_and_adds_missing_ones() -> None:
    ruleset = _compile()
    save = _save().replace(
        f'-A INPUT -m comment --comment "sampan network policy" -j {NAMES.input_chain}\n',
        "-A INPUT -j ACCEPT\n"
        f'-A INPUT -m comment --comment "sampan network policy" -j {NAMES.input_chain}\n',
    )
    save = save.replace(
        f'-A FORWARD -m comment --comment "sampan network policy" -j {NAMES.forward_chain}\n', ""
    )
    chains, rules = parse_save(save)
    lines = iptables_restore_text(ruleset, chains, rules).splitlines()
    assert f'-D INPUT -m comment --comment "sampan network policy" -j {NAMES.input_chain}' in lines
    assert (
        f'-I INPUT 1 -m comment --comment "sampan network policy" -j {NAMES.input_chain}' in lines
    )
    assert (
        f'-I FORWARD 1 -m comment --comment "sampan network policy" -j {NAMES.forward_chain}'
        in lines
    )
    assert not any(line.startswith("-D FORWARD") for line in lines)


def test_cleanup_text_removes_only_our_jumps_and_chains() -> None:
    chains, rules = parse_save(_save())
    lines = cleanup_text(NAMES, chains, rules).splitlines()
    assert f'-D INPUT -m comment --comment "sampan network policy" -j {NAMES.input_chain}' in lines
    assert f"-X {NAMES.forward_chain}" in lines and f"-X {NAMES.chain_prefix}IOLDPOD" in lines
    assert not any("OTHER" in line for line in lines)
    assert cleanup_text(NAMES, {"INPUT", "FORWARD"}, {}) == ""


def test_ipset_text_swaps_changed_sets_in_and_skips_unchanged_ones() -> None:
    one = IPSet(NAMES.set_name("s", "one"), "hash:ip", ("10.42.0.1", "10.42.0.2"))
    two = IPSet(NAMES.set_name("b", "two"), "hash:net", ("10.0.0.0/8", "10.1.0.0/16 nomatch"))
    sets = {one.name: one, two.name: two}
    text = ipset_restore_text(NAMES, sets, existing={one.name, NAMES.tmp_set})
    lines = text.splitlines()
    tmp = NAMES.tmp_set
    assert lines[0] == f"destroy {tmp}"  # left over from an interrupted run
    assert f"create {one.name} hash:ip family inet hashsize 1024 maxelem 65536" not in lines
    assert f"create {two.name} hash:net family inet hashsize 1024 maxelem 65536" in lines
    assert f"add {tmp} 10.1.0.0/16 nomatch" in lines
    assert lines.count(f"destroy {tmp}") == 3
    assert f"swap {tmp} {one.name}" in lines and f"swap {tmp} {two.name}" in lines
    # unchanged and present: nothing to do; changed: rewritten
    assert ipset_restore_text(NAMES, sets, {one.name, two.name}, previous=sets) == ""
    changed = {**sets, one.name: IPSet(one.name, "hash:ip", ("10.42.0.3",))}
    text = ipset_restore_text(NAMES, changed, {one.name, two.name}, previous=sets)
    assert f"add {tmp} 10.42.0.3" in text and two.name not in text


def test_cleanup_ipset_text_keeps_wanted_and_foreign_sets() -> None:
    ours = NAMES.set_name("s", "gone")
    kept = NAMES.set_name("s", "kept")
    foreign = Names(name_suffix("/elsewhere")).set_name("s", "gone")
    text = cleanup_ipset_text(NAMES, {ours, kept, foreign, "unrelated"}, keep=[kept])
    assert text == f"destroy {ours}\n"


@pytest.mark.parametrize("cidr", ["not-a-cidr", "10.0.0.0/33"])
def test_malformed_ip_blocks_match_nothing(cidr: str) -> None:
    ruleset = _compile(
        _policy("bad", {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": cidr}}]}]})
    )
    assert [line.endswith("REJECT") for line in _chain(ruleset, "ingress", WEB)[1:]] == [True]
