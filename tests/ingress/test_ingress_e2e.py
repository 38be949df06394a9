"""Ingress end to end, as a user runs it: ``sampan server`` (its agent runs nginx on private
ports), two busybox httpd Deployments behind two Services, Ingresses applied with kubectl, and
requests from the host with a Host header / SNI (Python's http.client and ssl).

Run under the node lock: ``flock /tmp/sampan-node.lock ... pytest tests/ingress``."""

from __future__ import annotations

import base64
import datetime
import http.client
import json
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.e2e.test_single_node import KUBECTL, Cluster, free_port

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    if KUBECTL is None:
        pytest.fail("kubectl is not installed")
    if shutil.which("nginx") is None:
        pytest.fail("nginx is not installed (scripts/install.sh installs it)")
    c = Cluster(Path(tempfile.mkdtemp(prefix="sping-", dir="/tmp")))
    c.http_port, c.https_port = free_port(), free_port()  # type: ignore[attr-defined]
    c.extra_config = f"ingress-http-port: {c.http_port}\ningress-https-port: {c.https_port}\n"  # type: ignore[attr-defined]
    try:
        c.start()
        yield c
    finally:
        if c.proc is not None and c.proc.poll() is None:
            c.proc.send_signal(signal.SIGTERM)
            try:
                c.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                c.proc.kill()
        c.sampan("killall", "--config", str(c.config), "--data-dir", str(c.data))
        shutil.rmtree(c.root, ignore_errors=True)


def httpd(name: str, files: dict[str, str]) -> str:
    script = " && ".join(
        f"mkdir -p /www/{Path(p).parent} && echo {body} > /www/{p}" for p, body in files.items()
    )
    return f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      containers:
      - name: httpd
        image: busybox:1.36
        command: [sh, -c, "{script} && exec httpd -f -p 8080 -h /www"]
        readinessProbe: {{tcpSocket: {{port: 8080}}, periodSeconds: 1}}
---
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  selector: {{app: {name}}}
  ports: [{{name: http, port: 80, targetPort: 8080}}]
"""


def tls_secret(host: str) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), False)
        .sign(key, hashes.SHA256())
    )
    crt = base64.b64encode(cert.public_bytes(serialization.Encoding.PEM)).decode()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "secure-tls"},
            "type": "kubernetes.io/tls",
            "data": {"tls.crt": crt, "tls.key": base64.b64encode(pem).decode()},
        }
    )


INGRESS = """
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web}
spec:
  tls: [{hosts: [secure.example.com], secretName: secure-tls}]
  rules:
  - host: a.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: alpha, port: {number: 80}}}}
      - {path: /b, pathType: Exact, backend: {service: {name: beta, port: {name: http}}}}
      - {path: /foo, pathType: Prefix, backend: {service: {name: beta, port: {number: 80}}}}
  - host: secure.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: alpha, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: rewrite
  annotations: {nginx.ingress.kubernetes.io/rewrite-target: /$2}
spec:
  rules:
  - host: r.example.com
    http:
      paths:
      - path: /app(/|$)(.*)
        pathType: ImplementationSpecific
        backend: {service: {name: beta, port: {number: 80}}}
"""

BAD = """
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: bad
  annotations: {sampan.io/use-regex: "true"}
spec:
  rules:
  - host: bad.example.com
    http:
      paths:
      - path: /x(
        pathType: ImplementationSpecific
        backend: {service: {name: alpha, port: {number: 80}}}
"""


def get(port: int, host: str, path: str = "/") -> tuple[int, str, dict[str, str]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"Host": host})
        resp = conn.getresponse()
        return resp.status, resp.read().decode().strip(), dict(resp.getheaders())
    except OSError as exc:
        return 0, str(exc), {}
    finally:
        conn.close()


def get_tls(port: int, host: str) -> tuple[int, str, str]:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=host) as tls:
            der = tls.getpeercert(binary_form=True)
            assert der is not None
            cn = (
                x509.load_der_x509_certificate(der)
                .subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0]
                .value
            )
            tls.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
    head, _, body = data.decode().partition("\r\n\r\n")
    return int(head.split()[1]), body.strip(), str(cn)


def apply(cluster: Cluster, text: str) -> None:
    path = cluster.root / "apply.yaml"
    path.write_text(text)
    cluster.kubectl("apply", "-f", str(path))


def test_ingress_routes_tls_rewrite_and_bad_config(cluster: Cluster) -> None:
    http_port: int = cluster.http_port  # type: ignore[attr-defined]
    https_port: int = cluster.https_port  # type: ignore[attr-defined]
    cluster.wait(
        "the default IngressClass",
        lambda: "sampan-nginx" in cluster.kubectl("get", "ingressclass", check=False),
    )
    apply(cluster, httpd("alpha", {"index.html": "alpha", "foobar": "alpha-foobar"}))
    apply(
        cluster,
        httpd("beta", {"index.html": "beta", "b": "beta-b", "foo/index.html": "beta-foo"}),
    )
    apply(cluster, tls_secret("secure.example.com"))
    apply(cluster, INGRESS)
    cluster.kubectl("rollout", "status", "deploy/alpha", "deploy/beta", "--timeout=120s")

    # host and path rules, to the endpoints
    cluster.wait("a.example.com -> alpha", lambda: get(http_port, "a.example.com")[1] == "alpha")
    cluster.wait(
        "a.example.com/b -> beta", lambda: get(http_port, "a.example.com", "/b")[1] == "beta-b"
    )  # Exact
    assert get(http_port, "a.example.com", "/foo/")[:2] == (200, "beta-foo")  # Prefix
    assert get(http_port, "a.example.com", "/foobar")[:2] == (200, "alpha-foobar")  # not /foo
    assert get(http_port, "unknown.example.com")[0] == 404
    # rewrite-target
    cluster.wait(
        "r.example.com/app/ -> beta /",
        lambda: get(http_port, "r.example.com", "/app/")[1] == "beta",
    )
    assert get(http_port, "r.example.com", "/app/b")[:2] == (200, "beta-b")
    # TLS with SNI, the Secret's certificate; plain HTTP redirects with 308
    status, body, cn = get_tls(https_port, "secure.example.com")
    assert (status, body, cn) == (200, "alpha", "secure.example.com")
    status, _, headers = get(http_port, "secure.example.com", "/x?y=1")
    assert status == 308
    assert headers["Location"] == f"https://secure.example.com:{https_port}/x?y=1"
    # the address shows in kubectl
    cluster.wait(
        "the Ingress address",
        lambda: cluster.kubectl(
            "get", "ingress", "web", "-o", "jsonpath={.status.loadBalancer.ingress[0].ip}"
        ),
    )

    # an Ingress nginx rejects: never loaded, the others keep serving, an event names it
    pid_path = cluster.data / "agent" / "ingress" / "nginx.pid"
    master = pid_path.read_text().strip()
    apply(cluster, BAD)

    def rejected() -> str:
        out = cluster.kubectl(
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=bad,reason=InvalidConfiguration",
            "-o",
            "jsonpath={.items[*].message}",
            check=False,
        )
        return out

    message = cluster.wait("the InvalidConfiguration event", rejected)
    assert "pcre" in message.lower() or "regular expression" in message.lower(), message
    assert get(http_port, "bad.example.com", "/x(")[0] == 404
    assert get(http_port, "a.example.com")[:2] == (200, "alpha")
    assert "bad.example.com" not in (cluster.data / "agent" / "ingress" / "nginx.conf").read_text()
    # later changes still apply while the bad Ingress exists
    cluster.kubectl(
        "patch",
        "ingress",
        "rewrite",
        "--type=json",
        "-p",
        '[{"op":"replace","path":"/spec/rules/0/host","value":"r2.example.com"}]',
    )
    cluster.wait(
        "r2.example.com served", lambda: get(http_port, "r2.example.com", "/app/")[1] == "beta"
    )
    assert pid_path.read_text().strip() == master  # reloaded, never restarted

    # deleting the Ingress removes its routes
    cluster.kubectl("delete", "ingress", "web")
    cluster.wait("a.example.com gone", lambda: get(http_port, "a.example.com")[0] == 404)
