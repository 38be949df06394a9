"""Unit tests of sampan.dns.records: names and records computed from Service/EndpointSlice data."""

from __future__ import annotations

from typing import Any

from sampan.dns.records import NOERROR, NXDOMAIN, ClusterRecords


def service(name: str, ns: str = "default", **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": ns}, "spec": spec}


def endpoint_slice(
    name: str, svc: str, endpoints: list[dict[str, Any]], ns: str = "default", **extra: Any
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": ns, "labels": {"kubernetes.io/service-name": svc}},
        "addressType": extra.pop("addressType", "IPv4"),
        "endpoints": endpoints,
        "ports": extra.pop("ports", [{"name": "http", "port": 8080, "protocol": "TCP"}]),
    }


def records() -> ClusterRecords:
    r = ClusterRecords()
    r.upsert_service(
        service(
            "web",
            clusterIP="10.43.0.20",
            clusterIPs=["10.43.0.20"],
            ports=[
                {"name": "http", "port": 80, "protocol": "TCP"},
                {"name": "dns", "port": 53, "protocol": "UDP"},
                {"port": 81, "protocol": "TCP"},
            ],
        )
    )
    r.upsert_service(service("db", clusterIP="None", ports=[{"name": "pg", "port": 5432}]))
    r.upsert_slice(
        endpoint_slice(
            "db-1",
            "db",
            [
                {"addresses": ["10.42.0.5"], "hostname": "db-0", "conditions": {"ready": True}},
                {"addresses": ["10.42.0.6"], "conditions": {"ready": True}},
                {"addresses": ["10.42.0.7"], "conditions": {"ready": False}},
            ],
            ports=[{"name": "pg", "port": 5432, "protocol": "TCP"}],
        )
    )
    r.upsert_service(service("ext", ns="other", type="ExternalName", externalName="example.com."))
    return r


def data(answer: Any, rtype: str | None = None) -> list[Any]:
    return [rec.data for rec in answer.answers if rtype is None or rec.rtype == rtype]


def test_cluster_ip_service_a_record_any_case_and_dot():
    answer = records().resolve("Web.Default.svc.cluster.local.", "A")
    assert answer.rcode == NOERROR and not answer.forward
    assert data(answer) == ["10.43.0.20"]
    assert answer.answers[0].name == "web.default.svc.cluster.local"


def test_known_name_other_type_is_nodata_unknown_is_nxdomain():
    r = records()
    nodata = r.resolve("web.default.svc.cluster.local", "AAAA")
    assert nodata.rcode == NOERROR and nodata.answers == ()
    assert r.resolve("nope.default.svc.cluster.local", "A").rcode == NXDOMAIN
    assert r.resolve("web.nope.svc.cluster.local", "A").rcode == NXDOMAIN
    assert r.resolve("x.y.cluster.local", "A").rcode == NXDOMAIN
    assert r.resolve("default.svc.cluster.local", "A").rcode == NOERROR
    assert r.resolve("nope.svc.cluster.local", "A").rcode == NXDOMAIN


def test_headless_service_one_record_per_ready_endpoint():
    answer = records().resolve("db.default.svc.cluster.local", "A")
    assert sorted(data(answer)) == ["10.42.0.5", "10.42.0.6"]


def test_headless_endpoints_deduplicated_across_slices_and_removed_with_slice():
    r = records()
    second = endpoint_slice(
        "db-2", "db", [{"addresses": ["10.42.0.6"]}, {"addresses": ["10.42.0.9"]}]
    )
    r.upsert_slice(second)
    assert sorted(data(r.resolve("db.default.svc.cluster.local", "A"))) == [
        "10.42.0.5",
        "10.42.0.6",
        "10.42.0.9",
    ]
    before = r.generation
    r.delete_slice(second)
    assert r.generation > before
    assert sorted(data(r.resolve("db.default.svc.cluster.local", "A"))) == [
        "10.42.0.5",
        "10.42.0.6",
    ]


def test_pod_hostname_and_dashed_ip_under_headless_service():
    r = records()
    assert data(r.resolve("db-0.db.default.svc.cluster.local", "A")) == ["10.42.0.5"]
    assert data(r.resolve("10-42-0-6.db.default.svc.cluster.local", "A")) == ["10.42.0.6"]
    assert r.resolve("db-9.db.default.svc.cluster.local", "A").rcode == NXDOMAIN
    # not-ready endpoints are not published
    assert r.resolve("10-42-0-7.db.default.svc.cluster.local", "A").rcode == NXDOMAIN
    # a ClusterIP service has no per-endpoint names
    assert r.resolve("x.web.default.svc.cluster.local", "A").rcode == NXDOMAIN


def test_srv_for_named_ports():
    r = records()
    answer = r.resolve("_http._tcp.web.default.svc.cluster.local", "SRV")
    assert data(answer) == [(0, 100, 80, "web.default.svc.cluster.local")]
    assert [rec.data for rec in answer.additional] == ["10.43.0.20"]
    assert data(r.resolve("_dns._udp.web.default.svc.cluster.local", "SRV"))[0][2] == 53
    assert r.resolve("_http._udp.web.default.svc.cluster.local", "SRV").rcode == NXDOMAIN
    whole = r.resolve("web.default.svc.cluster.local", "SRV")
    assert sorted(d[2] for d in data(whole)) == [53, 80]  # the unnamed port has no SRV
    headless = r.resolve("_pg._tcp.db.default.svc.cluster.local", "SRV")
    assert sorted(d[3] for d in data(headless)) == [
        "10-42-0-6.db.default.svc.cluster.local",
        "db-0.db.default.svc.cluster.local",
    ]


def test_external_name_is_cname():
    answer = records().resolve("ext.other.svc.cluster.local", "A")
    assert [(rec.rtype, rec.data) for rec in answer.answers] == [("CNAME", "example.com")]


def test_external_name_to_cluster_name_is_followed():
    r = records()
    r.upsert_service(
        service("alias", type="ExternalName", externalName="web.default.svc.cluster.local")
    )
    answer = r.resolve("alias.default.svc.cluster.local", "A")
    assert [rec.rtype for rec in answer.answers] == ["CNAME", "A"]
    assert answer.answers[1].data == "10.43.0.20"


def test_ptr_for_service_and_endpoint_ips_others_forwarded():
    r = records()
    assert data(r.resolve("20.0.43.10.in-addr.arpa", "PTR")) == ["web.default.svc.cluster.local"]
    assert data(r.resolve("5.0.42.10.in-addr.arpa.", "PTR")) == [
        "db-0.db.default.svc.cluster.local"
    ]
    assert r.resolve("8.8.8.8.in-addr.arpa", "PTR").forward


def test_ipv6_service_aaaa_and_ptr():
    r = ClusterRecords()
    r.upsert_service(service("v6", clusterIP="fd00::10", clusterIPs=["fd00::10"]))
    assert data(r.resolve("v6.default.svc.cluster.local", "AAAA")) == ["fd00::10"]
    assert r.resolve("v6.default.svc.cluster.local", "A").answers == ()
    ptr = "0.1.0.0." + "0." * 24 + "0.0.d.f.ip6.arpa"
    assert data(r.resolve(ptr, "PTR")) == ["v6.default.svc.cluster.local"]


def test_pod_dashed_name():
    r = records()
    assert data(r.resolve("10-42-1-7.default.pod.cluster.local", "A")) == ["10.42.1.7"]
    assert r.resolve("bad-name.default.pod.cluster.local", "A").rcode == NXDOMAIN


def test_other_names_forwarded_and_custom_domain():
    r = ClusterRecords(domain="corp.internal.")
    r.upsert_service(service("web", clusterIP="10.43.0.20"))
    assert r.resolve("example.com", "A").forward
    assert r.resolve("web.default.svc.cluster.local", "A").forward
    assert data(r.resolve("web.default.svc.corp.internal", "A")) == ["10.43.0.20"]


def test_service_update_and_delete():
    r = records()
    r.upsert_service(service("web", clusterIP="10.43.0.21"))
    assert data(r.resolve("web.default.svc.cluster.local", "A")) == ["10.43.0.21"]
    r.delete_service(service("web"))
    assert r.resolve("web.default.svc.cluster.local", "A").rcode == NXDOMAIN
    assert r.resolve("20.0.43.10.in-addr.arpa", "PTR").forward
