"""Unit tests of sampan.proxy.rules: chain names, golden text, policies, cleanup text."""

from __future__ import annotations

from typing import Any

import pytest

from sampan.proxy.rules import (
    RuleOptions,
    build_rules,
    chain_hash,
    jump_rules,
    parse_save,
    service_ports,
)
from sampan.proxy.service import parse_proxy_args

OPTS = RuleOptions(node_name="n1", cluster_cidr="10.42.0.0/16")


def svc(name: str, spec: dict[str, Any], status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "default", "name": name},
        "spec": {"clusterIP": "10.43.0.20", **spec},
        "status": status or {},
    }


def eps(
    port: int, *endpoints: tuple[str, str, dict[str, bool]], name: str = "", proto: str = "TCP"
) -> dict[str, Any]:
    return {
        "addressType": "IPv4",
        "ports": [{"name": name, "port": port, "protocol": proto}],
        "endpoints": [
            {"addresses": [ip], "nodeName": node, "conditions": cond}
            for ip, node, cond in endpoints
        ],
    }


READY = {"ready": True}


def test_chain_names_match_upstream() -> None:
    # the names kube-proxy gives the kubernetes and kube-dns services
    assert chain_hash("default/kubernetes:https", "tcp") == "NPX46M4PTMTKRN6Y"
    assert chain_hash("kube-system/kube-dns:dns", "udp") == "TCOU7JCQXEZGVUNU"


GOLDEN_NAT = """\
*nat
:KUBE-SERVICES - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-SVC-{svc} - [0:0]
:KUBE-SEP-{sep} - [0:0]
:KUBE-SEP-OLDOLDOLDOLDOLDO - [0:0]
-A KUBE-SERVICES -m comment --comment "default/web cluster IP" -m tcp -p tcp \
-d 10.43.0.20/32 --dport 80 -j KUBE-SVC-{svc}
-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be \
the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" \
-j MASQUERADE --random-fully
-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
-A KUBE-SVC-{svc} -m comment --comment "default/web cluster IP" -m tcp -p tcp \
-d 10.43.0.20/32 --dport 80 ! -s 10.42.0.0/16 -j KUBE-MARK-MASQ
-A KUBE-SVC-{svc} -m comment --comment "default/web -> 10.42.0.5:8080" -j KUBE-SEP-{sep}
-A KUBE-SEP-{sep} -m comment --comment "default/web" -s 10.42.0.5/32 -j KUBE-MARK-MASQ
-A KUBE-SEP-{sep} -m comment --comment "default/web" -m tcp -p tcp \
-j DNAT --to-destination 10.42.0.5:8080
-X KUBE-SEP-OLDOLDOLDOLDOLDO
COMMIT
"""


def test_golden_cluster_ip_with_stale_chain_and_existing_jumps() -> None:
    ports = service_ports(
        svc("web", {"ports": [{"port": 80}]}), [eps(8080, ("10.42.0.5", "n1", READY))]
    )
    existing = {"nat": {"KUBE-SEP-OLDOLDOLDOLDOLDO", "KUBE-SERVICES"}, "filter": set()}
    rules = {"nat": set(jump_rules("nat")), "filter": set(jump_rules("filter"))}
    text = build_rules(ports, OPTS, existing, rules).text
    nat = text[text.index("*nat") :]
    expected = GOLDEN_NAT.format(
        svc=chain_hash("default/web", "tcp"),
        sep=chain_hash("default/web", "tcp", "10.42.0.5:8080"),
    )
    assert nat == expected
    # the filter table has no per-service rule and no jump (they exist already)
    assert "REJECT" not in text and "-A INPUT" not in text


def test_jumps_written_when_missing() -> None:
    text = build_rules([], OPTS).text
    for line in jump_rules("nat") + jump_rules("filter"):
        assert line in text


def test_no_endpoints_rejects_in_filter_and_has_no_chains() -> None:
    ports = service_ports(
        svc("web", {"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}), []
    )
    text = build_rules(ports, OPTS).text
    assert "KUBE-SVC-" not in text and "KUBE-SEP-" not in text
    assert (
        '-A KUBE-SERVICES -m comment --comment "default/web has no endpoints" -m tcp -p tcp '
        "-d 10.43.0.20/32 --dport 80 -j REJECT"
    ) in text
    assert (
        '-A KUBE-EXTERNAL-SERVICES -m comment --comment "default/web has no endpoints" '
        "-m addrtype --dst-type LOCAL -m tcp -p tcp --dport 30080 -j REJECT"
    ) in text


def test_only_ready_then_serving_terminating() -> None:
    slices = [
        eps(
            80,
            ("10.42.0.5", "n1", {"ready": False, "serving": True, "terminating": True}),
            ("10.42.0.6", "n1", READY),
            ("10.42.0.7", "n1", {"ready": False}),
        )
    ]
    text = build_rules(service_ports(svc("web", {"ports": [{"port": 80}]}), slices), OPTS).text
    assert "10.42.0.6:80" in text
    assert "10.42.0.5:80" not in text and "10.42.0.7:80" not in text
    slices[0]["endpoints"].pop(1)  # no ready one left: the serving terminating one is used
    text = build_rules(service_ports(svc("web", {"ports": [{"port": 80}]}), slices), OPTS).text
    assert "--to-destination 10.42.0.5:80" in text and "10.42.0.7" not in text


def test_probabilities_spread_evenly() -> None:
    slices = [eps(80, *[(f"10.42.0.{i}", "n1", READY) for i in range(1, 5)])]
    text = build_rules(service_ports(svc("web", {"ports": [{"port": 80}]}), slices), OPTS).text
    probabilities = [
        line.split("--probability ")[1].split()[0]
        for line in text.splitlines()
        if "--probability" in line
    ]
    assert probabilities == ["0.2500000000", "0.3333333333", "0.5000000000"]


def test_session_affinity_uses_recent() -> None:
    spec = {"ports": [{"port": 80}], "sessionAffinity": "ClientIP"}
    ports = service_ports(svc("web", spec), [eps(80, ("10.42.0.5", "n1", READY))])
    sep = "KUBE-SEP-" + chain_hash("default/web", "tcp", "10.42.0.5:80")
    text = build_rules(ports, OPTS).text
    assert f"-m recent --name {sep} --rcheck --seconds 10800 --reap -j {sep}" in text
    assert f"-m recent --name {sep} --set -m tcp -p tcp -j DNAT" in text


def test_internal_traffic_policy_local() -> None:
    spec = {"ports": [{"port": 80}], "internalTrafficPolicy": "Local"}
    slices = [eps(80, ("10.42.0.5", "n1", READY), ("10.42.1.5", "n2", READY))]
    text = build_rules(service_ports(svc("web", spec), slices), OPTS).text
    svl = "KUBE-SVL-" + chain_hash("default/web", "tcp")
    assert f"--dport 80 -j {svl}" in text
    svl_lines = [line for line in text.splitlines() if line.startswith(f"-A {svl}")]
    assert len(svl_lines) == 1 and "10.42.0.5:80" in svl_lines[0]
    # on a node without a local endpoint the cluster IP is dropped
    other = RuleOptions(node_name="n3", cluster_cidr="10.42.0.0/16")
    text = build_rules(service_ports(svc("web", spec), slices), other).text
    assert "has no local endpoints" in text and f":{svl}" not in text


def test_external_traffic_policy_local() -> None:
    spec = {
        "type": "NodePort",
        "ports": [{"port": 80, "nodePort": 30080}],
        "externalTrafficPolicy": "Local",
    }
    slices = [eps(80, ("10.42.0.5", "n1", READY), ("10.42.1.5", "n2", READY))]
    text = build_rules(service_ports(svc("web", spec), slices), OPTS).text
    ext = "KUBE-EXT-" + chain_hash("default/web", "tcp")
    svl = "KUBE-SVL-" + chain_hash("default/web", "tcp")
    svc_chain = "KUBE-SVC-" + chain_hash("default/web", "tcp")
    assert f"--dport 30080 -j {ext}" in text
    assert f"-A {ext} -j {svl}" in text
    assert f"-s 10.42.0.0/16 -j {svc_chain}" in text
    # the cluster IP still reaches both endpoints
    assert "10.42.1.5:80" in text


def test_load_balancer_ingress_served_like_external_ip() -> None:
    spec = {"type": "LoadBalancer", "ports": [{"port": 80, "nodePort": 30080}]}
    status = {"loadBalancer": {"ingress": [{"ip": "192.0.2.10", "ipMode": "VIP"}]}}
    ports = service_ports(svc("web", spec, status), [eps(80, ("10.42.0.5", "n1", READY))])
    text = build_rules(ports, OPTS).text
    ext = "KUBE-EXT-" + chain_hash("default/web", "tcp")
    assert f"-d 192.0.2.10/32 --dport 80 -j {ext}" in text


def test_udp_port_names_and_dns_redirect() -> None:
    dns = {
        "metadata": {"namespace": "kube-system", "name": "kube-dns"},
        "spec": {
            "clusterIP": "10.43.0.10",
            "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP"},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
            ],
        },
    }
    options = RuleOptions(
        node_name="n1",
        cluster_cidr="10.42.0.0/16",
        cluster_dns="10.43.0.10",
        dns_redirect=("169.254.20.10", 53),
    )
    text = build_rules(service_ports(dns, []), options).text
    for proto in ("udp", "tcp"):
        assert (
            f"-m {proto} -p {proto} -d 10.43.0.10/32 --dport 53 "
            "-j DNAT --to-destination 169.254.20.10:53"
        ) in text
    assert "REJECT" not in text  # the redirect answers, not the (endpoint-less) Service


def test_headless_and_external_name_skipped() -> None:
    assert service_ports(svc("h", {"clusterIP": "None", "ports": [{"port": 80}]}), []) == []
    assert service_ports(svc("e", {"type": "ExternalName", "externalName": "x.org"}), []) == []


def test_proxy_args() -> None:
    parsed = parse_proxy_args({"iptables-min-sync-period": "500ms", "masquerade-all": "true"})
    assert parsed.min_sync_period_s == 0.5 and parsed.masquerade_all
    assert parse_proxy_args({"--iptables-sync-period": "1m30s"}).sync_period_s == 90
    with pytest.raises(ValueError):
        parse_proxy_args({"proxy-mode": "ipvs"})
    with pytest.raises(ValueError):
        parse_proxy_args({"iptables-sync-period": "soon"})


def test_partial_sync_skips_unchanged_chains() -> None:
    def ports(n: int) -> list[Any]:
        result = []
        for i in range(n):
            service = svc(f"s{i}", {"clusterIP": f"10.43.0.{i + 1}", "ports": [{"port": 80}]})
            result += service_ports(service, [eps(80, (f"10.42.0.{i + 1}", "n1", READY))])
        return result

    first = build_rules(ports(3), OPTS)
    existing = {"nat": first.chains["nat"], "filter": first.chains["filter"]}
    same = build_rules(ports(3), OPTS, existing, previous=first.contents)
    assert same.skipped == 6 and "KUBE-SEP-" not in same.text
    assert "-A KUBE-SERVICES" in same.text  # the fixed chains are always rewritten
    # one service changes endpoint: only its chains are rewritten
    changed = ports(3)
    changed[1].endpoints = (
        changed[1].endpoints[0].__class__("10.42.0.99", 80, "n1", True, True, False),
    )
    text = build_rules(changed, OPTS, existing, previous=first.contents).text
    assert "10.42.0.99:80" in text and "10.42.0.1:80" not in text
    sep = "KUBE-SEP-" + chain_hash("default/s1", "tcp", "10.42.0.2:80")
    assert f"-X {sep}" in text
    # a chain missing from the kernel is rewritten even when unchanged
    gone = {"nat": existing["nat"] - {changed[0].svc_chain}, "filter": existing["filter"]}
    text = build_rules(ports(3), OPTS, gone, previous=first.contents).text
    assert f":{changed[0].svc_chain}" in text


def test_chain_prefix_names_every_chain_and_leaves_other_prefixes_alone() -> None:
    ports = service_ports(
        svc("web", {"ports": [{"port": 80}], "sessionAffinity": "ClientIP"}),
        [eps(8080, ("10.42.0.5", "n1", READY))],
    )
    named = RuleOptions(node_name="n1", cluster_cidr="10.52.0.0/16", chain_prefix="Kb-")
    # the unnamed cluster's chains and jumps exist; none of them is ours
    existing = {
        "nat": {"KUBE-SERVICES", "KUBE-SVC-AAAAAAAAAAAAAAAA", "Kb-SEP-OLDOLDOLDOLDOLDO"},
        "filter": {"KUBE-SERVICES"},
    }
    rules = {"nat": set(jump_rules("nat")), "filter": set(jump_rules("filter"))}
    ruleset = build_rules(ports, named, existing, rules)
    text = ruleset.text
    assert "KUBE-" not in text
    assert ":Kb-SERVICES - [0:0]" in text and ":Kb-NODEPORTS - [0:0]" in text
    svc_chain = "Kb-SVC-" + chain_hash("default/web", "tcp")
    assert f"-j {svc_chain}" in text and "--name Kb-SEP-" in text
    assert "-X Kb-SEP-OLDOLDOLDOLDOLDO" in text  # its own stale chain goes
    for line in jump_rules("nat", "Kb-") + jump_rules("filter", "Kb-"):
        assert line in text  # its jumps are missing, so they are written
    assert all(len(chain) <= 28 for chain in parse_save(text)[0]["nat"])
    # once its jumps exist they are not written again
    again = build_rules(
        ports, named, existing, {t: rules[t] | set(jump_rules(t, "Kb-")) for t in rules}
    )
    assert "-A PREROUTING" not in again.text
    # the unnamed cluster's proxy never touches Kb- chains
    plain = build_rules(ports, OPTS, {"nat": {"Kb-SVC-BBBBBBBBBBBBBBBB"}, "filter": set()}).text
    assert "Kb-" not in plain
