"""``apply`` and ``cleanup`` against the real iptables and ipset, inside a private network
namespace (ipsets and iptables are per namespace; nothing outside it is touched)."""

from __future__ import annotations

from sampan.netpol.controller import apply, cleanup
from sampan.netpol.rules import Names, PodInfo, compile_rules, name_suffix
from tests.netpol.conftest import Netns

NAMES = Names(name_suffix("/tmp/netpol-dataplane-test"))


PODS = [
    PodInfo("shop", "web", "10.42.0.10", "n1", {"app": "web"}, (("http", "TCP", 8080),)),
    PodInfo("shop", "client", "10.42.0.20", "n1", {"role": "client"}, ()),
    PodInfo("ops", "far", "10.42.1.20", "n2", {"role": "client"}, ()),
]
POLICY = {
    "metadata": {"namespace": "shop", "name": "p"},
    "spec": {
        "podSelector": {"matchLabels": {"app": "web"}},
        "ingress": [
            {
                "from": [
                    {"namespaceSelector": {}, "podSelector": {"matchLabels": {"role": "client"}}},
                    {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}},
                ],
                "ports": [{"port": "http"}, {"protocol": "SCTP", "port": 7000, "endPort": 7002}],
            }
        ],
        "egress": [{"ports": [{"port": "http"}, {"protocol": "UDP", "port": 53}]}],
    },
}


def test_apply_then_shrink_then_cleanup(netns: Netns) -> None:
    netns.sh("iptables", "-A", "FORWARD", "-j", "ACCEPT")  # e.g. the overlay's accept rule
    full = compile_rules(NAMES, "n1", [POLICY], PODS, {"shop": {}, "ops": {}})
    netns.call(apply, full, None)
    saved = netns.sh("iptables-save", "-t", "filter")
    forward = [line for line in saved.splitlines() if line.startswith("-A FORWARD")]
    assert forward[0].endswith(f"-j {NAMES.forward_chain}") and forward[1] == "-A FORWARD -j ACCEPT"
    for chain in full.chains:
        assert f":{chain} " in saved
    assert netns.sets() == set(full.sets)
    peers = next(s for s in full.sets.values() if s.type == "hash:ip")
    members = netns.sh("ipset", "list", peers.name)
    assert "10.42.0.20" in members and "10.42.1.20" in members

    # applying again changes nothing and does not duplicate the jumps
    netns.call(apply, full, full.sets)
    again = netns.sh("iptables-save", "-t", "filter")
    assert again.count(f"-j {NAMES.forward_chain}") == saved.count(f"-j {NAMES.forward_chain}")

    # the policy goes: its pod chains and sets go with it
    netns.sh("ipset", "create", NAMES.tmp_set, "hash:net")  # as if a restore was interrupted
    empty = compile_rules(NAMES, "n1", [], PODS, {"shop": {}, "ops": {}})
    netns.call(apply, empty, full.sets)
    saved = netns.sh("iptables-save", "-t", "filter")
    assert not any(chain in saved for chain in full.chains if chain not in empty.chains)
    assert netns.sets() == set()

    netns.call(apply, full, None)
    assert netns.call(cleanup, NAMES) == len(full.chains) + len(full.sets)
    saved = netns.sh("iptables-save", "-t", "filter")
    assert "SAMPAN-NP-" not in saved and "-A FORWARD -j ACCEPT" in saved
    assert netns.sets() == set()
    assert netns.call(cleanup, NAMES) == 0
