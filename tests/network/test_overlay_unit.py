"""Pure parts of the overlay: which nodes become peers, annotations, MAC, rules, options."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sampan.network.overlay import (
    ANNOTATION_BACKEND_DATA,
    ANNOTATION_BACKEND_TYPE,
    ANNOTATION_PUBLIC_IP,
    OverlayError,
    OverlayOptions,
    Peer,
    masquerade_rules,
    node_pod_subnet,
    own_annotations,
    peers_from_nodes,
    vtep_mac,
)


def node(
    name: str,
    *,
    cidrs: list[str] | None = None,
    internal_ip: str | None = "10.251.0.9",
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "annotations": annotations or {}},
        "spec": {"podCIDRs": cidrs} if cidrs is not None else {},
        "status": {"addresses": [{"type": "InternalIP", "address": internal_ip}]}
        if internal_ip
        else {},
    }


def vxlan_annotations(mac: str, public_ip: str | None = None) -> dict[str, str]:
    out = {
        ANNOTATION_BACKEND_TYPE: "vxlan",
        ANNOTATION_BACKEND_DATA: json.dumps({"VNI": 1, "VtepMAC": mac}),
    }
    if public_ip:
        out[ANNOTATION_PUBLIC_IP] = public_ip
    return out


def test_vtep_mac_is_stable_unicast_and_locally_administered() -> None:
    mac = vtep_mac("node-a")
    assert mac == vtep_mac("node-a") != vtep_mac("node-b")
    first = int(mac.split(":")[0], 16)
    assert first & 0x01 == 0 and first & 0x02 == 0x02
    assert len(mac.split(":")) == 6


def test_pod_subnet_is_the_first_ipv4_cidr() -> None:
    assert node_pod_subnet(node("a", cidrs=["fd00:42::/64", "10.42.3.0/24"])) == "10.42.3.0/24"
    assert node_pod_subnet({"spec": {"podCIDR": "10.42.4.0/24"}}) == "10.42.4.0/24"
    assert node_pod_subnet(node("a")) is None


def test_vxlan_peers_need_a_subnet_an_address_and_a_vtep_mac() -> None:
    nodes = [
        node("self", cidrs=["10.42.0.0/24"], annotations=vxlan_annotations("02:00:00:00:00:01")),
        node("ready", cidrs=["10.42.1.0/24"], annotations=vxlan_annotations("02:AA:00:00:00:02")),
        node("no-cidr", annotations=vxlan_annotations("02:00:00:00:00:03")),
        node("no-mac", cidrs=["10.42.4.0/24"]),
        node(
            "host-gw-node",
            cidrs=["10.42.5.0/24"],
            annotations={ANNOTATION_BACKEND_TYPE: "host-gw"},
        ),
        node(
            "no-address",
            cidrs=["10.42.6.0/24"],
            internal_ip=None,
            annotations=vxlan_annotations("02:00:00:00:00:06"),
        ),
        node(
            "public",
            cidrs=["10.42.7.0/24"],
            annotations=vxlan_annotations("02:00:00:00:00:07", public_ip="192.0.2.7"),
        ),
    ]
    assert peers_from_nodes(nodes, own_name="self", backend="vxlan") == (
        Peer("public", "10.42.7.0/24", "192.0.2.7", "02:00:00:00:00:07"),
        Peer("ready", "10.42.1.0/24", "10.251.0.9", "02:aa:00:00:00:02"),
    )


def test_host_gw_peers_need_no_mac() -> None:
    nodes = [node("a", cidrs=["10.42.1.0/24"]), node("b")]
    assert peers_from_nodes(nodes, own_name="self", backend="host-gw") == (
        Peer("a", "10.42.1.0/24", "10.251.0.9", ""),
    )


def test_own_annotations() -> None:
    vx = own_annotations("vxlan", "10.0.0.1", "02:00:00:00:00:01")
    assert json.loads(vx[ANNOTATION_BACKEND_DATA] or "") == {
        "VNI": 1,
        "VtepMAC": "02:00:00:00:00:01",
    }
    assert vx[ANNOTATION_PUBLIC_IP] == "10.0.0.1"
    hg = own_annotations("host-gw", "10.0.0.1", "02:00:00:00:00:01")
    assert hg[ANNOTATION_BACKEND_TYPE] == "host-gw" and hg[ANNOTATION_BACKEND_DATA] is None


def test_masquerade_rules_leave_pod_to_pod_traffic_alone() -> None:
    rules = masquerade_rules("10.42.0.0/16").splitlines()
    ret = rules.index("-A SAMPAN-POSTROUTING -s 10.42.0.0/16 -d 10.42.0.0/16 -j RETURN")
    masq = next(i for i, r in enumerate(rules) if "MASQUERADE" in r)
    assert ret < masq
    assert "! -d 224.0.0.0/4" in rules[masq]
    assert "-A SAMPAN-FORWARD -s 10.42.0.0/16 -j ACCEPT" in rules


@pytest.mark.parametrize(
    "changes",
    [
        {"backend": "none"},
        {"backend": "wireguard"},
        {"cluster_cidr": "fd00::/48"},
        {"node_ip": "x"},
    ],
)
def test_options_refuse_what_cannot_work(changes: dict[str, str]) -> None:
    with pytest.raises(OverlayError):
        OverlayOptions(node_name="a", **changes)  # type: ignore[arg-type]


def test_dual_stack_cluster_cidr_uses_the_ipv4_entry() -> None:
    options = OverlayOptions(node_name="a", cluster_cidr="fd00:42::/56, 10.42.0.0/16")
    assert options.ipv4_cluster_cidr == "10.42.0.0/16"


def test_masquerade_chains_and_vtep_mac_follow_the_cluster_name() -> None:
    rules = masquerade_rules("10.52.0.0/16", "SAMPAN-b-")
    assert ":SAMPAN-b-POSTROUTING - [0:0]" in rules and ":SAMPAN-b-FORWARD - [0:0]" in rules
    assert "SAMPAN-POSTROUTING" not in rules
    assert vtep_mac("n1") == vtep_mac("n1", 1) != vtep_mac("n1", 77)
