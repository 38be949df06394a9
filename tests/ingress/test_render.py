"""The renderer alone: Ingress objects -> nginx.conf text, without nginx (see the e2e test for
the real thing)."""

from __future__ import annotations

import base64
import datetime
from typing import Any

import pytest

from sampan.ingress.render import RenderOptions, nginx_quote, render

OPTS = RenderOptions(data_dir="/d", http_port=8080, https_port=8443, default_cert="/d/def.pem")


def ingress(
    name: str,
    rules: list[dict[str, Any]],
    *,
    annotations: dict[str, str] | None = None,
    cls: str | None = None,
    tls: list[dict[str, Any]] | None = None,
    default_backend: dict[str, Any] | None = None,
    created: str = "2026-01-01T00:00:00Z",
) -> dict[str, Any]:
    spec: dict[str, Any] = {"rules": rules}
    if cls is not None:
        spec["ingressClassName"] = cls
    if tls is not None:
        spec["tls"] = tls
    if default_backend is not None:
        spec["defaultBackend"] = default_backend
    return {
        "metadata": {
            "namespace": "ns",
            "name": name,
            "creationTimestamp": created,
            "annotations": annotations or {},
        },
        "spec": spec,
    }


def backend(service: str, port: int | str = 80) -> dict[str, Any]:
    key = "number" if isinstance(port, int) else "name"
    return {"service": {"name": service, "port": {key: port}}}


def rule(host: str, *paths: tuple[str, str, str]) -> dict[str, Any]:
    return {
        "host": host,
        "http": {
            "paths": [{"path": p, "pathType": t, "backend": backend(svc)} for p, t, svc in paths]
        },
    }


def service(name: str, port: int = 80, port_name: str = "") -> dict[str, Any]:
    return {
        "metadata": {"namespace": "ns", "name": name},
        "spec": {"ports": [{"name": port_name, "port": port, "protocol": "TCP"}]},
    }


def slice_(service: str, ips: list[str], port: int = 8080, ready: bool = True) -> dict[str, Any]:
    return {
        "metadata": {
            "namespace": "ns",
            "name": f"{service}-x",
            "labels": {"kubernetes.io/service-name": service},
        },
        "addressType": "IPv4",
        "ports": [{"name": "", "port": port, "protocol": "TCP"}],
        "endpoints": [{"addresses": [ip], "conditions": {"ready": ready}} for ip in ips],
    }


SERVICES = [service("a"), service("b")]
SLICES = [slice_("a", ["10.42.0.5", "10.42.0.6"]), slice_("b", ["10.42.0.7"])]


def server_block(text: str, host: str) -> str:
    start = text.index(f"server_name {host};")
    end = text.index("\n    }\n", start)
    return text[start:end]


def location(block: str, match: str) -> str:
    start = block.index(f"location {match} {{")
    end = block.index("\n        }", start)
    return block[start:end]


def test_hosts_paths_and_endpoints() -> None:
    ing = ingress(
        "web",
        [
            rule("a.example.com", ("/", "Prefix", "a"), ("/exact", "Exact", "b")),
            rule("b.example.com", ("/foo", "Prefix", "b")),
        ],
    )
    out = render([ing], SERVICES, SLICES, {}, OPTS)
    assert out.problems == {}
    assert "upstream ns_a_80 {\n        server 10.42.0.5:8080 max_fails=0;\n" in out.text
    assert "server 10.42.0.6:8080" in out.text
    a = server_block(out.text, "a.example.com")
    assert "proxy_pass http://ns_a_80;" in location(a, '"/"')
    assert "proxy_pass http://ns_b_80;" in location(a, '= "/exact"')
    b = server_block(out.text, "b.example.com")
    # Prefix /foo: /foo and /foo/... but not /foobar (which falls to the 404 location)
    assert "proxy_pass http://ns_b_80;" in location(b, '= "/foo"')
    assert "proxy_pass http://ns_b_80;" in location(b, '"/foo/"')
    assert "return 404;" in location(b, '"/"')
    default = server_block(out.text, "_")
    assert "return 404;" in location(default, '"/"')
    assert (
        "listen 8080 default_server;" in out.text and "listen 8443 ssl default_server;" in out.text
    )
    for header in (
        "proxy_set_header Host $host;",
        "proxy_set_header X-Forwarded-For $remote_addr;",
        "proxy_set_header X-Forwarded-Proto $scheme;",
        "proxy_set_header Upgrade $http_upgrade;",
        "proxy_set_header Connection $connection_upgrade;",
    ):
        assert header in out.text
    assert "proxy_http_version 1.1;" in out.text and "proxy_buffering off;" in out.text
    # deterministic: same input, same bytes (no reload for an unchanged cluster)
    assert render([ing], SERVICES, list(reversed(SLICES)), {}, OPTS).text == out.text


def test_not_ready_endpoints_and_missing_service_answer_503() -> None:
    ing = ingress(
        "web", [rule("h.example.com", ("/a", "Prefix", "a"), ("/m", "Prefix", "missing"))]
    )
    out = render([ing], SERVICES, [slice_("a", ["10.42.0.5"], ready=False)], {}, OPTS)
    h = server_block(out.text, "h.example.com")
    assert "return 503;" in location(h, '"/a/"')
    assert "return 503;" in location(h, '"/m/"')
    assert out.problems == {"ns/web": ["service ns/missing not found"]}
    assert "upstream ns_" not in out.text


def test_port_by_name() -> None:
    ing = ingress("web", [])
    ing["spec"]["rules"] = [
        {
            "host": "n.example.com",
            "http": {
                "paths": [{"path": "/", "pathType": "Prefix", "backend": backend("c", "web")}]
            },
        }
    ]
    svc = service("c", 8000, "web")
    eps = slice_("c", ["10.42.0.9"], 9000)
    eps["ports"][0]["name"] = "web"
    out = render([ing], [svc], [eps], {}, OPTS)
    assert "upstream ns_c_web {\n        server 10.42.0.9:9000" in out.text


def test_classes() -> None:
    mine = ingress("mine", [rule("m.example.com", ("/", "Prefix", "a"))], cls="sampan-nginx")
    none = ingress("none", [rule("n.example.com", ("/", "Prefix", "a"))])
    other = ingress("other", [rule("o.example.com", ("/", "Prefix", "a"))], cls="traefik")
    legacy = ingress(
        "legacy",
        [rule("l.example.com", ("/", "Prefix", "a"))],
        annotations={"kubernetes.io/ingress.class": "traefik"},
    )
    out = render([mine, none, other, legacy], SERVICES, SLICES, {}, OPTS)
    assert set(out.ingresses) == {"ns/mine", "ns/none"}
    assert "o.example.com" not in out.text and "l.example.com" not in out.text
    not_default = RenderOptions(data_dir="/d", default_class=False)
    out = render([mine, none], SERVICES, SLICES, {}, not_default)
    assert set(out.ingresses) == {"ns/mine"}


def test_default_backend() -> None:
    ing = ingress(
        "web", [rule("a.example.com", ("/x", "Exact", "a"))], default_backend=backend("b")
    )
    out = render([ing], SERVICES, SLICES, {}, OPTS)
    assert "proxy_pass http://ns_b_80;" in location(server_block(out.text, "_"), '"/"')
    assert "proxy_pass http://ns_b_80;" in location(server_block(out.text, "a.example.com"), '"/"')


def test_oldest_ingress_wins_a_path() -> None:
    old = ingress(
        "old", [rule("a.example.com", ("/", "Prefix", "a"))], created="2026-01-01T00:00:00Z"
    )
    new = ingress(
        "new", [rule("a.example.com", ("/", "Prefix", "b"))], created="2026-02-01T00:00:00Z"
    )
    out = render([new, old], SERVICES, SLICES, {}, OPTS)
    assert "ns_a_80" in location(server_block(out.text, "a.example.com"), '"/"')
    assert out.problems == {
        "ns/new": ["path '/' of host 'a.example.com' is already served by Ingress ns/old"]
    }


def _tls_secret() -> dict[str, Any]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "a.example.com")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    crt = cert.public_bytes(serialization.Encoding.PEM)
    pem_key = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return {
        "metadata": {"namespace": "ns", "name": "tls"},
        "type": "kubernetes.io/tls",
        "data": {
            "tls.crt": base64.b64encode(crt).decode(),
            "tls.key": base64.b64encode(pem_key).decode(),
        },
    }


def test_tls_sni_and_redirect() -> None:
    secret = _tls_secret()
    tls = [{"hosts": ["a.example.com"], "secretName": "tls"}]
    ing = ingress("web", [rule("a.example.com", ("/", "Prefix", "a"))], tls=tls)
    out = render([ing], SERVICES, SLICES, {("ns", "tls"): secret}, OPTS)
    assert out.problems == {}
    [(name, content)] = out.files.items()
    assert b"BEGIN CERTIFICATE" in content and b"PRIVATE KEY" in content
    a = server_block(out.text, "a.example.com")
    assert f'ssl_certificate "/d/certs/{name}";' in a
    assert "return 308 https://$host:8443$request_uri;" in location(a, '"/"')
    # ssl-redirect "false" turns the redirect off
    off = ingress(
        "web",
        [rule("a.example.com", ("/", "Prefix", "a"))],
        tls=tls,
        annotations={"nginx.ingress.kubernetes.io/ssl-redirect": "false"},
    )
    out = render([off], SERVICES, SLICES, {("ns", "tls"): secret}, OPTS)
    assert "return 308" not in out.text
    # a missing Secret: the host is served with the default certificate and it is reported
    out = render([ing], SERVICES, SLICES, {}, OPTS)
    assert "certs/" not in out.text
    assert out.problems == {"ns/web": ["TLS secret ns/tls not found; default certificate"]}
    broken = dict(secret, data={"tls.crt": base64.b64encode(b"junk").decode(), "tls.key": ""})
    out = render([ing], SERVICES, SLICES, {("ns", "tls"): broken}, OPTS)
    assert "has no PEM certificate" in out.problems["ns/web"][0]


def test_annotations_both_spellings() -> None:
    rw = ingress(
        "rw",
        [rule("r.example.com", ("/app(/|$)(.*)", "ImplementationSpecific", "a"))],
        annotations={
            "sampan.io/rewrite-target": "/$2",
            "nginx.ingress.kubernetes.io/rewrite-target": "/ignored",
            "nginx.ingress.kubernetes.io/proxy-body-size": "8m",
            "sampan.io/backend-protocol": "HTTPS",
        },
    )
    out = render([rw], SERVICES, SLICES, {}, OPTS)
    loc = location(server_block(out.text, "r.example.com"), '~* "^/app(/|$)(.*)"')
    assert 'rewrite "(?i)^/app(/|$)(.*)" "/$2" break;' in loc
    assert "client_max_body_size 8m;" in loc
    assert "proxy_pass https://ns_a_80;" in loc


def test_bad_annotation_values_are_ignored_and_reported() -> None:
    ing = ingress(
        "web",
        [rule("a.example.com", ("/", "Prefix", "a"))],
        annotations={
            "sampan.io/proxy-body-size": "1m; return 200",
            "sampan.io/backend-protocol": "GRPC",
            "sampan.io/rewrite-target": "/x\nreturn 200;",
        },
    )
    out = render([ing], SERVICES, SLICES, {}, OPTS)
    assert "return 200" not in out.text and "client_max_body_size 1m;" in out.text
    assert len(out.problems["ns/web"]) == 3


@pytest.mark.parametrize("path", ['/a"; return 200; #', "/a{}", "/a\\", "/b;c"])
def test_paths_cannot_inject(path: str) -> None:
    ing = ingress("web", [rule("a.example.com", (path, "Exact", "a"))])
    out = render([ing], SERVICES, SLICES, {}, OPTS)
    assert f"location = {nginx_quote(path)} {{" in out.text
    # read the token back as nginx's parser does: one quoted string, then only the brace
    line = next(ln for ln in out.text.splitlines() if ln.strip().startswith("location ="))
    rest = line.strip().removeprefix("location = ")
    assert rest[0] == '"'
    value, i = "", 1
    while rest[i] != '"':
        if rest[i] == "\\" and rest[i + 1] in '"\\':
            i += 1
        value += rest[i]
        i += 1
    assert value == path and rest[i + 1 :] == " {"


def test_control_characters_leave_the_ingress_out() -> None:
    ing = ingress("web", [rule("a.example.com", ("/a\nreturn 200;", "Exact", "a"))])
    out = render([ing], SERVICES, SLICES, {}, OPTS)
    assert "return 200" not in out.text and "a.example.com" not in out.text
    assert out.problems["ns/web"] == ["not served: contains a control character"]


def test_line_owners_name_the_ingress() -> None:
    ing = ingress(
        "web",
        [rule("a.example.com", ("/(", "ImplementationSpecific", "a"))],
        annotations={"sampan.io/use-regex": "true"},
    )
    out = render([ing], SERVICES, SLICES, {}, OPTS)
    lines = out.text.splitlines()
    number = next(i for i, ln in enumerate(lines, 1) if "location ~*" in ln)
    assert out.line_owners[number] == "ns/web"
