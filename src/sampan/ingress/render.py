"""Pure rendering: Ingress objects (+ Services, EndpointSlices, Secrets) -> ``nginx.conf`` text.

No I/O here: ``render`` takes plain API object dicts and returns the configuration text, the
files it references (TLS certificates, content-addressed) and the problems found per Ingress.

Semantics (as upstream Kubernetes and ingress-nginx):

* an Ingress is ours if ``spec.ingressClassName`` (or the legacy ``kubernetes.io/ingress.class``
  annotation) names one of ``class_names``, or it names no class and ``default_class`` is set;
* hosts become ``server`` blocks (wildcards ``*.example.com`` as nginx writes them); rules
  without a host, and every request matching no host, go to the default server;
* ``Exact`` -> ``location = /p``; ``Prefix`` matches by path element (``/foo`` matches ``/foo``
  and ``/foo/bar``, not ``/foobar``) -> ``location = /foo`` + ``location /foo/``;
  ``ImplementationSpecific`` is a prefix, or a case-insensitive regex when the Ingress asks for
  ``rewrite-target`` or ``use-regex`` (as ingress-nginx). The same host+path claimed twice: the
  oldest Ingress wins (ingress-nginx's rule), the other gets a problem;
* backends are Services by port number or name, sent to the **ready endpoints** of their
  EndpointSlices through one ``upstream`` per service port (keep-alive to the backends); a
  Service that is missing or has no ready endpoint answers 503; an unmatched path falls to the
  Ingress's ``spec.defaultBackend``, else 404;
* TLS: ``kubernetes.io/tls`` Secrets, served by SNI; a host with TLS redirects plain HTTP with
  308 unless ``ssl-redirect: "false"``; a missing/invalid Secret leaves the host on the default
  (self-signed) certificate and is reported;
* annotations, under ``sampan.io/`` or ``nginx.ingress.kubernetes.io/`` (Sampan's prefix wins
  when both are set): ``rewrite-target``, ``use-regex``, ``ssl-redirect``,
  ``proxy-body-size``, ``backend-protocol`` (``HTTP``/``HTTPS``). A value that does not
  validate is ignored and reported;
* proxied requests carry ``Host``, ``X-Real-IP``, ``X-Forwarded-For`` (the client address, as
  ingress-nginx does by default: incoming X-Forwarded-* headers are not trusted),
  ``X-Forwarded-Host``/``-Port``/``-Proto``, ``X-Scheme``, ``X-Request-ID``; HTTP/1.1 with the
  ``Upgrade``/``Connection`` headers passed on (WebSocket), no buffering in either direction
  (streaming, and nginx's workers never need to write temp files under the data dir).

Invariants: every string taken from an API object is either validated against a strict
pattern or written as an nginx quoted string with ``\\`` and ``"`` escaped; control characters
(a newline would start a new directive) are refused, so an object can never inject a
directive. Output is deterministic (sorted) so an unchanged cluster renders byte-identical text
and no reload happens. ``line_owners`` maps each line of the text to the Ingress that produced
it, so an ``nginx -t`` error can name the Ingress.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ANNOTATION_PREFIXES",
    "DEFAULT_CLASS_ANNOTATION",
    "LEGACY_CLASS_ANNOTATION",
    "RenderOptions",
    "Rendered",
    "ingress_key",
    "nginx_quote",
    "render",
]

DEFAULT_CLASS_ANNOTATION = "ingressclass.kubernetes.io/is-default-class"
LEGACY_CLASS_ANNOTATION = "kubernetes.io/ingress.class"
ANNOTATION_PREFIXES = ("sampan.io/", "nginx.ingress.kubernetes.io/")
"""Sampan's spelling first: it wins when both are set."""
TLS_SECRET_TYPE = "kubernetes.io/tls"
SERVICE_LABEL = "kubernetes.io/service-name"
UPSTREAM_KEEPALIVE = 32

_BODY_SIZE = re.compile(r"^[0-9]{1,12}[kKmMgG]?$")
_HOST = re.compile(r"^(\*\.)?[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$")
_NAME = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$")
_UPSTREAM = re.compile(r"^[a-z0-9_.-]{1,300}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def nginx_quote(value: str) -> str:
    """``value`` as an nginx quoted string; ValueError for control characters."""
    if _CONTROL.search(value):
        raise ValueError("contains a control character")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def ingress_key(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


@dataclass(frozen=True)
class RenderOptions:
    data_dir: str
    """The ingress directory (absolute): pid, logs, temp dirs, certificates live under it."""
    http_port: int = 80
    https_port: int = 443
    class_names: frozenset[str] = frozenset({"sampan-nginx"})
    default_class: bool = True
    default_cert: str = ""
    """Path of the default (self-signed) certificate+key PEM; empty: no HTTPS listener."""
    worker_processes: int = 1


@dataclass
class Rendered:
    text: str
    files: dict[str, bytes] = field(default_factory=dict)
    """File name (relative to ``<data_dir>/certs``) -> content; names are content hashes."""
    problems: dict[str, list[str]] = field(default_factory=dict)
    """Ingress key -> what could not be served as asked (one Warning event each)."""
    line_owners: dict[int, str] = field(default_factory=dict)
    """1-based line number -> the key of the Ingress that produced it."""
    ingresses: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    """Key -> the Ingress objects served by this configuration."""


# -- annotations -----------------------------------------------------------------------------


def _annotation(ingress: Mapping[str, Any], name: str) -> str | None:
    annotations = (ingress.get("metadata") or {}).get("annotations") or {}
    for prefix in ANNOTATION_PREFIXES:
        value = annotations.get(prefix + name)
        if value is not None:
            return str(value)
    return None


@dataclass(frozen=True)
class _Settings:
    rewrite_target: str | None = None
    use_regex: bool = False
    ssl_redirect: bool = True
    body_size: str | None = None
    backend_https: bool = False


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise ValueError(f"not a boolean: {value!r}")


def _settings(ingress: Mapping[str, Any], problems: list[str]) -> _Settings:
    values: dict[str, Any] = {}
    value = _annotation(ingress, "rewrite-target")
    if value is not None:
        try:
            nginx_quote(value)
            if not value.startswith("/") and "://" not in value:
                raise ValueError("must start with / or be an absolute URL")
            values["rewrite_target"] = value
        except ValueError as exc:
            problems.append(f"annotation rewrite-target ignored: {exc}")
    for name, attr in (("use-regex", "use_regex"), ("ssl-redirect", "ssl_redirect")):
        value = _annotation(ingress, name)
        if value is not None:
            try:
                values[attr] = _bool(value)
            except ValueError as exc:
                problems.append(f"annotation {name} ignored: {exc}")
    value = _annotation(ingress, "proxy-body-size")
    if value is not None:
        if _BODY_SIZE.match(value.strip()):
            values["body_size"] = value.strip()
        else:
            problems.append(
                f"annotation proxy-body-size ignored: {value!r} is not a size (e.g. 8m, 512k, 0)"
            )
    value = _annotation(ingress, "backend-protocol")
    if value is not None:
        upper = value.strip().upper()
        if upper in ("HTTP", "HTTPS"):
            values["backend_https"] = upper == "HTTPS"
        else:
            problems.append(f"annotation backend-protocol ignored: {value!r} (HTTP or HTTPS)")
    return _Settings(**values)


# -- backends --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Backend:
    upstream: str | None
    """The upstream name, or None: answer ``status``."""
    status: int = 503
    https: bool = False


class _Backends:
    """Resolves Ingress backends to upstream blocks of ready endpoint addresses."""

    def __init__(
        self,
        services: Iterable[Mapping[str, Any]],
        slices: Iterable[Mapping[str, Any]],
    ) -> None:
        self.services: dict[tuple[str, str], Mapping[str, Any]] = {}
        for svc in services:
            meta = svc.get("metadata") or {}
            self.services[(meta.get("namespace", ""), meta.get("name", ""))] = svc
        self.slices: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
        for eps in slices:
            meta = eps.get("metadata") or {}
            owner = (meta.get("labels") or {}).get(SERVICE_LABEL)
            if owner:
                self.slices.setdefault((meta.get("namespace", ""), owner), []).append(eps)
        self.upstreams: dict[str, list[str]] = {}

    def resolve(
        self, namespace: str, backend: Mapping[str, Any], https: bool, problems: list[str]
    ) -> _Backend:
        service = backend.get("service")
        if not isinstance(service, Mapping):
            problems.append("backend without a service (resource backends are not supported)")
            return _Backend(None, 503)
        name = str(service.get("name") or "")
        port = service.get("port") or {}
        svc = self.services.get((namespace, name))
        if svc is None:
            problems.append(f"service {namespace}/{name} not found")
            return _Backend(None, 503)
        svc_port = None
        for candidate in (svc.get("spec") or {}).get("ports") or []:
            if (port.get("name") and candidate.get("name") == port.get("name")) or (
                port.get("number") and candidate.get("port") == port.get("number")
            ):
                svc_port = candidate
                break
        wanted = port.get("name") or port.get("number")
        if svc_port is None:
            problems.append(f"service {namespace}/{name} has no port {wanted}")
            return _Backend(None, 503)
        if (svc_port.get("protocol") or "TCP") != "TCP":
            problems.append(f"service {namespace}/{name} port {wanted} is not TCP")
            return _Backend(None, 503)
        port_name = svc_port.get("name") or ""
        addresses: set[str] = set()
        for eps in self.slices.get((namespace, name), []):
            if eps.get("addressType", "IPv4") != "IPv4":
                continue
            numbers = [
                p.get("port")
                for p in eps.get("ports") or []
                if (p.get("name") or "") == port_name and (p.get("protocol") or "TCP") == "TCP"
            ]
            if not numbers or not isinstance(numbers[0], int):
                continue
            for endpoint in eps.get("endpoints") or []:
                conditions = endpoint.get("conditions") or {}
                if conditions.get("ready") is False:
                    continue
                for address in endpoint.get("addresses") or []:
                    if re.fullmatch(r"[0-9]{1,3}(\.[0-9]{1,3}){3}", str(address)):
                        addresses.add(f"{address}:{numbers[0]}")
        if not addresses:
            return _Backend(None, 503)
        upstream = f"{namespace}_{name}_{port_name or svc_port.get('port')}"
        if not _UPSTREAM.match(upstream):
            problems.append(f"service {namespace}/{name}: unusable name or port name")
            return _Backend(None, 503)
        self.upstreams[upstream] = sorted(addresses)
        return _Backend(upstream, https=https)


# -- routes ----------------------------------------------------------------------------------


@dataclass
class _Location:
    owner: str
    match: str
    """The location's arguments, already quoted (``= "/foo"``, ``"/foo/"``, ``~* "^/foo"``)."""
    backend: _Backend
    settings: _Settings
    rewrite_regex: str | None = None
    redirect: bool = False


@dataclass
class _Server:
    host: str
    locations: dict[str, _Location] = field(default_factory=dict)
    cert: str | None = None
    cert_owner: str | None = None
    default: tuple[str, _Backend, _Settings] | None = None


def _path_matches(path: str, path_type: str, regex: bool) -> list[tuple[str, str | None]]:
    """(location arguments, rewrite regex) pairs for one Ingress path."""
    quoted = nginx_quote(path)
    if regex:
        anchored = "^" + path
        return [(f"~* {nginx_quote(anchored)}", "(?i)" + anchored)]
    if path_type == "Exact":
        return [(f"= {quoted}", None)]
    base = path.rstrip("/")
    if not base:
        return [(nginx_quote("/"), None)]
    return [(f"= {nginx_quote(base)}", None), (nginx_quote(base + "/"), None)]


def _creation(ingress: Mapping[str, Any]) -> tuple[str, str]:
    meta = ingress.get("metadata") or {}
    return (str(meta.get("creationTimestamp") or ""), ingress_key(ingress))


def is_ours(ingress: Mapping[str, Any], options: RenderOptions) -> bool:
    spec = ingress.get("spec") or {}
    name = spec.get("ingressClassName")
    if name is None:
        name = ((ingress.get("metadata") or {}).get("annotations") or {}).get(
            LEGACY_CLASS_ANNOTATION
        )
    if name is None:
        return options.default_class
    return name in options.class_names


def _tls_file(secret: Mapping[str, Any] | None) -> tuple[str, bytes] | str:
    """(file name, PEM cert+key) for a TLS Secret, or the reason it cannot be used."""
    if secret is None:
        return "not found"
    if secret.get("type") != TLS_SECRET_TYPE:
        return f"is of type {secret.get('type')!r}, not {TLS_SECRET_TYPE!r}"
    data = secret.get("data") or {}
    try:
        cert = base64.b64decode(data.get("tls.crt") or "", validate=True)
        key = base64.b64decode(data.get("tls.key") or "", validate=True)
    except ValueError:
        return "has data that is not base64"
    if b"-----BEGIN CERTIFICATE-----" not in cert:
        return "has no PEM certificate in tls.crt"
    if b"PRIVATE KEY-----" not in key:
        return "has no PEM private key in tls.key"
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        x509.load_pem_x509_certificate(cert)
        load_pem_private_key(key, password=None)
    except (ValueError, TypeError) as exc:
        return f"does not hold a usable certificate and key ({exc})"
    content = cert.rstrip(b"\n") + b"\n" + key.rstrip(b"\n") + b"\n"
    return hashlib.sha256(content).hexdigest()[:32] + ".pem", content


def render(
    ingresses: Sequence[Mapping[str, Any]],
    services: Iterable[Mapping[str, Any]],
    slices: Iterable[Mapping[str, Any]],
    secrets: Mapping[tuple[str, str], Mapping[str, Any]],
    options: RenderOptions,
) -> Rendered:
    """Render the whole nginx configuration (see the module docstring)."""
    result = Rendered(text="")
    backends = _Backends(services, slices)
    servers: dict[str, _Server] = {"": _Server("")}
    for ingress in sorted((i for i in ingresses if is_ours(i, options)), key=_creation):
        key = ingress_key(ingress)
        namespace = (ingress.get("metadata") or {}).get("namespace", "")
        problems: list[str] = []
        try:
            _add_ingress(
                ingress, key, namespace, servers, backends, secrets, options, result, problems
            )
        except ValueError as exc:  # an unquotable string: the whole Ingress is left out
            problems.append(f"not served: {exc}")
        if problems:
            result.problems[key] = problems
        result.ingresses[key] = ingress
    _emit(servers, backends, options, result)
    return result


def _add_ingress(
    ingress: Mapping[str, Any],
    key: str,
    namespace: str,
    servers: dict[str, _Server],
    backends: _Backends,
    secrets: Mapping[tuple[str, str], Mapping[str, Any]],
    options: RenderOptions,
    result: Rendered,
    problems: list[str],
) -> None:
    spec = ingress.get("spec") or {}
    settings = _settings(ingress, problems)
    regex = settings.use_regex or settings.rewrite_target is not None
    # Validate first, then mutate: a bad Ingress must leave no half of itself behind.
    hosts_tls: dict[str, str | None] = {}
    for tls in spec.get("tls") or []:
        secret_name = str(tls.get("secretName") or "")
        file = _tls_file(secrets.get((namespace, secret_name))) if secret_name else "not named"
        if isinstance(file, str):
            problems.append(f"TLS secret {namespace}/{secret_name} {file}; default certificate")
            cert = None
        else:
            result.files[file[0]] = file[1]
            cert = file[0]
        for host in tls.get("hosts") or [""]:
            if host and not _HOST.match(str(host)):
                problems.append(f"TLS host {host!r} ignored: not a DNS name")
                continue
            hosts_tls.setdefault(str(host), cert)
    routes: list[tuple[str, str, str, Mapping[str, Any]]] = []
    for rule in spec.get("rules") or []:
        host = str(rule.get("host") or "")
        if host and not _HOST.match(host):
            problems.append(f"rule host {host!r} ignored: not a DNS name")
            continue
        for path in ((rule.get("http") or {}).get("paths")) or []:
            value = str(path.get("path") or "/")
            if not value.startswith("/"):
                problems.append(f"path {value!r} ignored: must be absolute")
                continue
            nginx_quote(value)  # raises for control characters
            routes.append((host, value, str(path.get("pathType") or "Prefix"), path))
    default_backend = None
    if spec.get("defaultBackend"):
        default_backend = backends.resolve(
            namespace, spec["defaultBackend"], settings.backend_https, problems
        )

    for host, cert in hosts_tls.items():
        server = servers.setdefault(host, _Server(host))
        if server.cert is None and cert is not None:
            server.cert, server.cert_owner = cert, key
    for host, value, path_type, path in routes:
        server = servers.setdefault(host, _Server(host))
        backend = backends.resolve(
            namespace, path.get("backend") or {}, settings.backend_https, problems
        )
        redirect = settings.ssl_redirect and host in hosts_tls
        for match, rewrite in _path_matches(value, path_type, regex):
            existing = server.locations.get(match)
            if existing is not None:
                if existing.owner != key:
                    problems.append(
                        f"path {value!r} of host {host or '*'!r} is already served by "
                        f"Ingress {existing.owner}"
                    )
                continue
            server.locations[match] = _Location(key, match, backend, settings, rewrite, redirect)
    if default_backend is not None:
        for host in {h for h, *_ in routes} | {""}:
            server = servers[host] if host in servers else servers.setdefault(host, _Server(host))
            if server.default is None:
                server.default = (key, default_backend, settings)


# -- emitting --------------------------------------------------------------------------------


class _Writer:
    def __init__(self, result: Rendered) -> None:
        self.lines: list[str] = []
        self.result = result

    def line(self, text: str, owner: str | None = None, indent: int = 0) -> None:
        self.lines.append("    " * indent + text)
        if owner is not None:
            self.result.line_owners[len(self.lines)] = owner


def _emit(
    servers: dict[str, _Server], backends: _Backends, options: RenderOptions, result: Rendered
) -> None:
    d = options.data_dir.rstrip("/")
    w = _Writer(result)
    w.line("# Rendered by sampan's ingress controller; do not edit (rewritten on every change).")
    w.line(f"pid {nginx_quote(d + '/nginx.pid')};")
    w.line(f"error_log {nginx_quote(d + '/logs/error.log')} notice;")
    w.line("daemon off;")
    w.line(f"worker_processes {options.worker_processes};")
    w.line("events {")
    w.line("worker_connections 16384;", indent=1)
    w.line("}")
    w.line("http {")
    for line in (
        "default_type application/octet-stream;",
        "server_tokens off;",
        "sendfile on;",
        "keepalive_timeout 75s;",
        "server_names_hash_bucket_size 256;",
        "server_names_hash_max_size 4096;",
        "map_hash_bucket_size 128;",
        f"access_log {nginx_quote(d + '/logs/access.log')};",
        f"client_body_temp_path {nginx_quote(d + '/tmp/client_body')};",
        f"proxy_temp_path {nginx_quote(d + '/tmp/proxy')};",
        f"fastcgi_temp_path {nginx_quote(d + '/tmp/fastcgi')};",
        f"uwsgi_temp_path {nginx_quote(d + '/tmp/uwsgi')};",
        f"scgi_temp_path {nginx_quote(d + '/tmp/scgi')};",
        "client_max_body_size 1m;",
        "proxy_http_version 1.1;",
        "proxy_buffering off;",
        "proxy_request_buffering off;",
        "proxy_max_temp_file_size 0;",
        "proxy_connect_timeout 5s;",
        "proxy_read_timeout 60s;",
        "proxy_send_timeout 60s;",
        "proxy_next_upstream error timeout;",
        "ssl_protocols TLSv1.2 TLSv1.3;",
        "ssl_session_cache shared:SSL:10m;",
        "map $http_upgrade $connection_upgrade {",
        "    default upgrade;",
        "    '' '';",
        "}",
    ):
        w.line(line, indent=1)
    if options.default_cert:
        w.line(f"ssl_certificate {nginx_quote(options.default_cert)};", indent=1)
        w.line(f"ssl_certificate_key {nginx_quote(options.default_cert)};", indent=1)
    for name, addresses in sorted(backends.upstreams.items()):
        w.line(f"upstream {name} {{", indent=1)
        for address in addresses:
            w.line(f"server {address} max_fails=0;", indent=2)
        w.line(f"keepalive {UPSTREAM_KEEPALIVE};", indent=2)
        w.line("}", indent=1)
    default = servers.pop("")
    _emit_server(w, default, options, d, default_server=True)
    for host in sorted(servers):
        _emit_server(w, servers[host], options, d, default_server=False)
    w.line("}")
    result.text = "\n".join(w.lines) + "\n"


def _emit_server(
    w: _Writer, server: _Server, options: RenderOptions, d: str, *, default_server: bool
) -> None:
    flag = " default_server" if default_server else ""
    w.line("server {", indent=1)
    w.line(f"listen {options.http_port}{flag};", indent=2)
    if options.default_cert:
        w.line(f"listen {options.https_port} ssl{flag};", indent=2)
    w.line(f"server_name {'_' if default_server else server.host};", indent=2)
    if server.cert is not None:
        cert = nginx_quote(f"{d}/certs/{server.cert}")
        w.line(f"ssl_certificate {cert};", server.cert_owner, indent=2)
        w.line(f"ssl_certificate_key {cert};", server.cert_owner, indent=2)
    for match in sorted(server.locations):
        _emit_location(w, server.locations[match], options)
    if '"/"' not in server.locations:  # what no path matches: the default backend, or 404
        if server.default is not None:
            owner, backend, settings = server.default
            _emit_location(w, _Location(owner, '"/"', backend, settings), options)
        else:
            w.line('location "/" {', indent=2)
            w.line("return 404;", indent=3)
            w.line("}", indent=2)
    w.line("}", indent=1)


def _emit_location(w: _Writer, loc: _Location, options: RenderOptions) -> None:
    owner = loc.owner
    w.line(f"location {loc.match} {{", owner, indent=2)
    w.line(f"# ingress {owner}", owner, indent=3)
    if loc.redirect:
        port = "" if options.https_port == 443 else f":{options.https_port}"
        w.line("if ($scheme = http) {", owner, indent=3)
        w.line(f"return 308 https://$host{port}$request_uri;", owner, indent=4)
        w.line("}", owner, indent=3)
    if loc.settings.body_size is not None:
        w.line(f"client_max_body_size {loc.settings.body_size};", owner, indent=3)
    if loc.backend.upstream is None:
        w.line(f"return {loc.backend.status};", owner, indent=3)
        w.line("}", owner, indent=2)
        return
    if loc.rewrite_regex is not None and loc.settings.rewrite_target is not None:
        w.line(
            f"rewrite {nginx_quote(loc.rewrite_regex)} "
            f"{nginx_quote(loc.settings.rewrite_target)} break;",
            owner,
            indent=3,
        )
    for header, value in (
        ("Host", "$host"),
        ("X-Request-ID", "$request_id"),
        ("X-Real-IP", "$remote_addr"),
        ("X-Forwarded-For", "$remote_addr"),
        ("X-Forwarded-Host", "$host"),
        ("X-Forwarded-Port", "$server_port"),
        ("X-Forwarded-Proto", "$scheme"),
        ("X-Forwarded-Scheme", "$scheme"),
        ("X-Scheme", "$scheme"),
        ("X-Original-URI", "$request_uri"),
        ("Upgrade", "$http_upgrade"),
        ("Connection", "$connection_upgrade"),
    ):
        w.line(f"proxy_set_header {header} {value};", owner, indent=3)
    scheme = "https" if loc.backend.https else "http"
    if loc.backend.https:
        w.line("proxy_ssl_server_name on;", owner, indent=3)
    w.line(f"proxy_pass {scheme}://{loc.backend.upstream};", owner, indent=3)
    w.line("}", owner, indent=2)
