"""Cluster DNS names from Services and EndpointSlices: the pure resolution logic.

``ClusterRecords`` owns an index built from the objects an informer delivers (it copies what it
needs and never keeps or mutates the objects themselves) and answers ``resolve(qname, qtype)``
with an ``Answer``: a response code and resource records, with no wire format involved (the
server in ``sampan.dns.server`` encodes them). What it answers, for ``<domain>`` =
``cluster.local`` by default:

* ``<svc>.<ns>.svc.<domain>``: A/AAAA with the ClusterIP(s); for a headless Service (clusterIP
  ``None``) one A/AAAA per ready endpoint address (deduplicated over all its slices); for an
  ExternalName Service a CNAME to the external name (followed when it is itself a cluster name).
* ``<hostname>.<svc>.<ns>.svc.<domain>``: the endpoint of headless ``<svc>`` with that hostname
  (set by the endpointslice controller for pods whose ``hostname``/``subdomain`` match), or
  whose address written with dashes is ``<hostname>`` (``10-42-0-5``), as CoreDNS does.
* ``_<port>._<proto>.<svc>.<ns>.svc.<domain>``: SRV per named port; ``<svc>.<ns>.svc.<domain>``
  asked for SRV: one SRV per named port (per endpoint for headless Services).
* ``<a-b-c-d>.<ns>.pod.<domain>``: the address written in the name (CoreDNS "pods insecure").
* PTR under ``in-addr.arpa``/``ip6.arpa`` for ClusterIPs and endpoint addresses.

Invariants: a name under the cluster domain that is not known gets ``NXDOMAIN``; a known name
without records of the asked type gets ``NOERROR`` with no answers (NODATA); a name outside the
cluster domain, and a reverse name that is not a cluster address, gets ``Answer.forward``:
the caller sends it to the upstream resolvers. ``generation`` grows on every change that can
alter an answer, so callers may cache answers per generation.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DEFAULT_CLUSTER_DOMAIN",
    "DEFAULT_TTL_S",
    "NOERROR",
    "NXDOMAIN",
    "SERVICE_NAME_LABEL",
    "Answer",
    "ClusterRecords",
    "Record",
]

DEFAULT_CLUSTER_DOMAIN = "cluster.local"
DEFAULT_TTL_S = 5
"""Time to live of every cluster answer (CoreDNS's kubernetes plugin uses 5 s too)."""

SERVICE_NAME_LABEL = "kubernetes.io/service-name"

NOERROR = 0
NXDOMAIN = 3

_ADDRESS_TYPES = frozenset(("A", "AAAA"))


@dataclass(frozen=True, slots=True)
class Record:
    """One resource record. ``data`` is an address (A/AAAA), a name (CNAME/PTR) or, for SRV,
    ``(priority, weight, port, target)``. Names are absolute without the final dot."""

    name: str
    rtype: str
    data: Any
    ttl_s: int = DEFAULT_TTL_S


@dataclass(frozen=True, slots=True)
class Answer:
    """What to reply: ``rcode`` with ``answers`` and ``additional`` records; ``forward`` means
    the name is not ours and should go to the upstream resolvers."""

    rcode: int = NOERROR
    answers: tuple[Record, ...] = ()
    additional: tuple[Record, ...] = ()
    forward: bool = False
    authoritative: bool = True


_FORWARD = Answer(forward=True, authoritative=False)
_NXDOMAIN = Answer(rcode=NXDOMAIN)
_NODATA = Answer()


@dataclass(frozen=True, slots=True)
class _Port:
    name: str
    port: int
    protocol: str


@dataclass(frozen=True, slots=True)
class _Endpoint:
    address: str
    hostname: str
    ready: bool


@dataclass(slots=True)
class _Service:
    namespace: str
    name: str
    type: str
    cluster_ips: tuple[str, ...]
    headless: bool
    external_name: str
    ports: tuple[_Port, ...]


@dataclass(slots=True)
class _Slice:
    service: str
    endpoints: tuple[_Endpoint, ...]
    ports: tuple[_Port, ...]


def _rtype_of(address: str) -> str:
    return "AAAA" if ":" in address else "A"


def _dashed(address: str) -> str:
    return address.replace(".", "-").replace(":", "-")


def _ports(raw: Any, *, port_key: str) -> tuple[_Port, ...]:
    ports = []
    for port in raw or ():
        number = port.get(port_key)
        if not isinstance(number, int):
            continue
        ports.append(_Port(str(port.get("name") or ""), number, str(port.get("protocol") or "TCP")))
    return tuple(ports)


def _service_from(obj: Mapping[str, Any]) -> _Service:
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    cluster_ip = str(spec.get("clusterIP") or "")
    ips = [str(ip) for ip in spec.get("clusterIPs") or () if ip and ip != "None"]
    if not ips and cluster_ip and cluster_ip != "None":
        ips = [cluster_ip]
    service_type = str(spec.get("type") or "ClusterIP")
    return _Service(
        namespace=str(meta.get("namespace") or ""),
        name=str(meta.get("name") or ""),
        type=service_type,
        cluster_ips=tuple(ips),
        headless=cluster_ip == "None",
        external_name=str(spec.get("externalName") or "").lower().rstrip("."),
        ports=_ports(spec.get("ports"), port_key="port"),
    )


def _slice_from(obj: Mapping[str, Any]) -> _Slice | None:
    meta = obj.get("metadata") or {}
    service = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
    if not service or obj.get("addressType") not in ("IPv4", "IPv6"):
        return None
    endpoints = []
    for endpoint in obj.get("endpoints") or ():
        ready = (endpoint.get("conditions") or {}).get("ready")
        hostname = str(endpoint.get("hostname") or "").lower()
        for address in endpoint.get("addresses") or ():
            endpoints.append(_Endpoint(str(address), hostname, ready is None or bool(ready)))
    return _Slice(str(service), tuple(endpoints), _ports(obj.get("ports"), port_key="port"))


def _meta_key(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


@dataclass
class ClusterRecords:
    """The DNS view of the cluster; fed by informer handlers, read by the server."""

    domain: str = DEFAULT_CLUSTER_DOMAIN
    ttl_s: int = DEFAULT_TTL_S
    generation: int = 0
    _services: dict[tuple[str, str], _Service] = field(default_factory=dict)
    _slices: dict[tuple[str, str], _Slice] = field(default_factory=dict)
    # (namespace, service) -> slice names, to find a Service's endpoints.
    _slices_by_service: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    _namespaces: dict[str, int] = field(default_factory=dict)
    _reverse: dict[str, str] | None = None

    def __post_init__(self) -> None:
        self.domain = self.domain.lower().strip(".")
        self._suffix = "." + self.domain

    # -- feeding ---------------------------------------------------------------------------

    def _changed(self) -> None:
        self.generation += 1
        self._reverse = None

    def upsert_service(self, obj: Mapping[str, Any]) -> None:
        service = _service_from(obj)
        key = (service.namespace, service.name)
        if key not in self._services:
            self._namespaces[service.namespace] = self._namespaces.get(service.namespace, 0) + 1
        self._services[key] = service
        self._changed()

    def delete_service(self, obj: Mapping[str, Any]) -> None:
        key = _meta_key(obj)
        if self._services.pop(key, None) is not None:
            left = self._namespaces.get(key[0], 1) - 1
            if left:
                self._namespaces[key[0]] = left
            else:
                self._namespaces.pop(key[0], None)
            self._changed()

    def upsert_slice(self, obj: Mapping[str, Any]) -> None:
        namespace, name = _meta_key(obj)
        self._drop_slice(namespace, name)
        parsed = _slice_from(obj)
        if parsed is not None:
            self._slices[(namespace, name)] = parsed
            self._slices_by_service.setdefault((namespace, parsed.service), set()).add(name)
        self._changed()

    def delete_slice(self, obj: Mapping[str, Any]) -> None:
        namespace, name = _meta_key(obj)
        if self._drop_slice(namespace, name):
            self._changed()

    def _drop_slice(self, namespace: str, name: str) -> bool:
        old = self._slices.pop((namespace, name), None)
        if old is None:
            return False
        names = self._slices_by_service.get((namespace, old.service))
        if names is not None:
            names.discard(name)
            if not names:
                del self._slices_by_service[(namespace, old.service)]
        return True

    # -- queries ---------------------------------------------------------------------------

    def in_domain(self, qname: str) -> bool:
        name = qname.lower().rstrip(".")
        return name == self.domain or name.endswith(self._suffix)

    def resolve(self, qname: str, qtype: str) -> Answer:
        """Answer ``qname`` (any case, final dot optional) for ``qtype`` (``"A"``, ``"SRV"``...)."""
        name = qname.lower().rstrip(".")
        if name.endswith(".in-addr.arpa") or name.endswith(".ip6.arpa"):
            return self._resolve_reverse(name, qtype)
        if name == self.domain:
            return _NODATA
        if not name.endswith(self._suffix):
            return _FORWARD
        labels = name[: -len(self._suffix)].split(".")
        if labels[-1] == "svc":
            return self._resolve_svc(name, labels[:-1], qtype)
        if labels[-1] == "pod":
            return self._resolve_pod(name, labels[:-1], qtype)
        return _NXDOMAIN

    def _fqdn(self, *labels: str) -> str:
        return ".".join(labels) + self._suffix

    def _resolve_svc(self, name: str, labels: list[str], qtype: str) -> Answer:
        if not labels:
            return _NODATA
        if len(labels) == 1:
            return _NODATA if labels[0] in self._namespaces else _NXDOMAIN
        namespace, service_name = labels[-1], labels[-2]
        service = self._services.get((namespace, service_name))
        if service is None:
            return _NXDOMAIN
        rest = labels[:-2]
        if not rest:
            return self._service_answer(name, service, qtype)
        if len(rest) == 1 and not rest[0].startswith("_"):
            return self._endpoint_answer(name, service, rest[0], qtype)
        if len(rest) == 2 and rest[0].startswith("_") and rest[1].startswith("_"):
            return self._port_answer(name, service, rest[0][1:], rest[1][1:], qtype)
        return _NXDOMAIN

    def _endpoints(self, service: _Service) -> list[_Endpoint]:
        seen: set[str] = set()
        endpoints = []
        for slice_name in sorted(
            self._slices_by_service.get((service.namespace, service.name), ())
        ):
            for endpoint in self._slices[(service.namespace, slice_name)].endpoints:
                if endpoint.ready and endpoint.address not in seen:
                    seen.add(endpoint.address)
                    endpoints.append(endpoint)
        return endpoints

    def _endpoint_ports(self, service: _Service) -> list[_Port]:
        ports: dict[tuple[str, str], _Port] = {}
        for slice_name in sorted(
            self._slices_by_service.get((service.namespace, service.name), ())
        ):
            for port in self._slices[(service.namespace, slice_name)].ports:
                ports.setdefault((port.name, port.protocol), port)
        return list(ports.values())

    def _endpoint_target(self, service: _Service, endpoint: _Endpoint) -> str:
        label = endpoint.hostname or _dashed(endpoint.address)
        return self._fqdn(label, service.name, service.namespace, "svc")

    def _addresses(self, name: str, addresses: list[str], qtype: str) -> Answer:
        records = tuple(
            Record(name, _rtype_of(address), address, self.ttl_s)
            for address in addresses
            if qtype == "ANY" or _rtype_of(address) == qtype
        )
        return Answer(answers=records)

    def _service_answer(self, name: str, service: _Service, qtype: str) -> Answer:
        if service.type == "ExternalName":
            if not service.external_name:
                return _NODATA
            cname = Record(name, "CNAME", service.external_name, self.ttl_s)
            if qtype == "CNAME":
                return Answer(answers=(cname,))
            follow = ()
            if self.in_domain(service.external_name) and service.external_name != name:
                follow = self.resolve(service.external_name, qtype).answers
            return Answer(answers=(cname, *follow))
        if qtype == "SRV":
            return self._srv(name, service, None, None)
        if qtype not in _ADDRESS_TYPES and qtype != "ANY":
            return _NODATA
        if service.headless:
            return self._addresses(name, [e.address for e in self._endpoints(service)], qtype)
        return self._addresses(name, list(service.cluster_ips), qtype)

    def _endpoint_answer(self, name: str, service: _Service, label: str, qtype: str) -> Answer:
        if not service.headless:
            return _NXDOMAIN
        matches = [
            e.address
            for e in self._endpoints(service)
            if e.hostname == label or (not e.hostname and _dashed(e.address) == label)
        ]
        if not matches:
            return _NXDOMAIN
        if qtype not in _ADDRESS_TYPES and qtype != "ANY":
            return _NODATA
        return self._addresses(name, matches, qtype)

    def _port_answer(
        self, name: str, service: _Service, port_name: str, protocol: str, qtype: str
    ) -> Answer:
        answer = self._srv(name, service, port_name, protocol)
        if not answer.answers:
            return _NXDOMAIN
        if qtype != "SRV" and qtype != "ANY":
            return _NODATA
        return answer

    def _srv(
        self, name: str, service: _Service, port_name: str | None, protocol: str | None
    ) -> Answer:
        def wanted(port: _Port) -> bool:
            if not port.name:
                return False
            if port_name is None:
                return True
            return port.name == port_name and port.protocol.lower() == protocol

        answers: list[Record] = []
        additional: list[Record] = []
        if service.headless:
            endpoints = self._endpoints(service)
            for port in self._endpoint_ports(service):
                if not wanted(port):
                    continue
                for endpoint in endpoints:
                    target = self._endpoint_target(service, endpoint)
                    answers.append(Record(name, "SRV", (0, 100, port.port, target), self.ttl_s))
            for endpoint in endpoints:
                target = self._endpoint_target(service, endpoint)
                additional.append(
                    Record(target, _rtype_of(endpoint.address), endpoint.address, self.ttl_s)
                )
        elif service.type != "ExternalName":
            target = self._fqdn(service.name, service.namespace, "svc")
            for port in service.ports:
                if wanted(port):
                    answers.append(Record(name, "SRV", (0, 100, port.port, target), self.ttl_s))
            additional = [
                Record(target, _rtype_of(ip), ip, self.ttl_s) for ip in service.cluster_ips
            ]
        if not answers:
            return Answer()
        return Answer(answers=tuple(answers), additional=tuple(additional))

    def _resolve_pod(self, name: str, labels: list[str], qtype: str) -> Answer:
        if len(labels) != 2:
            return _NODATA if len(labels) == 1 else _NXDOMAIN
        dashed = labels[0]
        address: ipaddress.IPv4Address | ipaddress.IPv6Address
        try:
            if dashed.count("-") == 3:
                address = ipaddress.IPv4Address(dashed.replace("-", "."))
            else:
                address = ipaddress.IPv6Address(dashed.replace("-", ":"))
        except ValueError:
            return _NXDOMAIN
        return self._addresses(name, [str(address)], qtype)

    def _reverse_index(self) -> dict[str, str]:
        if self._reverse is None:
            index: dict[str, str] = {}
            for (namespace, _slice_name), parsed in self._slices.items():
                service = self._services.get((namespace, parsed.service))
                if service is None:
                    continue
                for endpoint in parsed.endpoints:
                    if endpoint.ready:
                        key = _reverse_pointer(endpoint.address)
                        if key:
                            index.setdefault(key, self._endpoint_target(service, endpoint))
            for service in self._services.values():
                for ip in service.cluster_ips:
                    key = _reverse_pointer(ip)
                    if key:  # a Service's own IP wins over an endpoint's
                        index[key] = self._fqdn(service.name, service.namespace, "svc")
            self._reverse = index
        return self._reverse

    def _resolve_reverse(self, name: str, qtype: str) -> Answer:
        target = self._reverse_index().get(name)
        if target is None:
            return _FORWARD
        if qtype != "PTR" and qtype != "ANY":
            return _NODATA
        return Answer(answers=(Record(name, "PTR", target, self.ttl_s),))


def _reverse_pointer(address: str) -> str | None:
    try:
        return ipaddress.ip_address(address).reverse_pointer
    except ValueError:
        return None
