"""The node agent: join a server with a token, then run the network and kubelet components.

``sampan agent --server URL --token T`` and the agent inside ``sampan server`` take the same
path (K3s: "a server is a control plane plus an agent that joins itself"):

0. **load-balancer** — a local TCP proxy (``sampan.supervisor.loadbalancer``) in front of
   every API server: the join connects through it (still checking the server's certificate
   for the host in ``--server``) and every kubeconfig below uses ``https://127.0.0.1:<port>``,
   so the node keeps working when the server it talks to dies; the servers are learned from
   the ``kubernetes`` Endpoints once the node has joined;
1. **join** — fetch the cluster CA from ``/cacerts`` and refuse it unless its sha256 matches
   the hash in the ``K10...`` token (after ``certificate rotate-ca``: unless it is a bundle
   holding that CA, which signed the new one); send the token secret (basic auth) with the
   node name, the node password and the node's addresses to ``/v1-sampan/node`` over TLS
   that checks the server's certificate against that CA and the host in ``--server``;
   receive the node's
   certificates and write them, with kubeconfigs, under ``<data-dir>/agent/etc/`` (0600). A
   wrong token, an unreachable server or a TLS failure (clock skew) is one log line, then a
   retry with backoff — never a crash;
2. **network** — the CNI configuration from the node's podCIDR, and routes to the other
   nodes' pod subnets (vxlan or host-gw);
3. **dns** — the node-local cluster DNS server (169.254.20.10:53 on a ``sampan-dns`` link;
   ``--node-local-dns-address``, or derived from ``--cluster-name``);
4. **proxy** — Services as iptables rules (kube-proxy's iptables mode; the cluster DNS IP is
   sent to the node-local DNS server);
5. **network-policy** — NetworkPolicies as ipsets and iptables rules for this node's pods
   (unless ``--disable-network-policy``: then its leftover rules are removed at start);
6. **kubelet** — containerd, the Node, pods;
7. **kubelet-server** — the kubelet API on 10250 (``--kubelet-arg=port=N``; the Node's
   ``daemonEndpoints`` tells the API server) for logs, exec, attach, port-forward;
8. **local-path** — removes the directories of this node's released local-path volumes;
9. **ingress** — nginx (a supervised child) serving the Ingresses of the ``sampan-nginx``
   IngressClass on ``--ingress-http-port``/``--ingress-https-port`` (80/443); not with
   ``--disable=ingress``.
10. **kubelet-certificate** — renews the kubelet's client certificate through a CSR at 70-90 %
   of its lifetime (``sampan.supervisor.certrotation``).

Host names: every interface, iptables chain and cgroup root comes from
``Config.host_names`` (K3s's names by default; ``--cluster-name NAME`` gives a second cluster
on the same host its own), so two clusters' agents never rewrite or delete each other's.

The node password is a random secret kept on the node (``/etc/sampan/node/password``, or
``<data-dir>/agent/node-password`` with a non-default data dir): the server remembers it per
node name, so another machine cannot take over an existing node's name.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import logging
import os
import random
import secrets
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from sampan.api import times
from sampan.config import DEFAULT_DATA_DIR, Config, ConfigError
from sampan.pki import LEAF_RENEW_BEFORE_DAYS
from sampan.pki.certs import load_cert, remaining_validity
from sampan.pki.rotation import bundle_endorsed_by
from sampan.supervisor.certrotation import KubeletCertificateRotation
from sampan.supervisor.loadbalancer import EndpointsWatcher, LoadBalancerComponent
from sampan.supervisor.supervisor import Component, ComponentContext
from sampan.supervisor.token import JoinToken, TokenError, parse_token

__all__ = [
    "JoinComponent",
    "NodeCredentials",
    "agent_components",
    "default_node_ips",
    "expiring_node_certificates",
    "node_name",
    "restricted_node_labels",
]

log = logging.getLogger("sampan.agent")

JOIN_PATH = "/v1-sampan/node"
CACERTS_PATH = "/cacerts"
JOIN_BACKOFF_INITIAL_S = 1.0
JOIN_BACKOFF_MAX_S = 30.0
JOIN_TIMEOUT_S = 15.0
SYSTEM_PASSWORD_FILE = Path("/etc/sampan/node/password")
X509_V_ERR_NAME_MISMATCH = (62, 64)
"""OpenSSL's verify codes for a certificate that does not name the host (62) or IP (64)."""


class JoinRefused(Exception):
    """The server answered and said no (wrong token, node password): retrying may help only
    after the user changes something, but we keep retrying with backoff as K3s does."""


def default_node_ips() -> tuple[str, ...]:
    """The address of the interface holding the default route (what K3s advertises)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        # No packet is sent: connect() on UDP only picks the route and source address.
        s.connect(("192.0.2.1", 9))
        return (s.getsockname()[0],)
    except OSError:
        return ("127.0.0.1",)
    finally:
        s.close()


def node_name(config: Config) -> str:
    return config.node_name or socket.gethostname().lower()


def restricted_node_labels(labels: dict[str, str]) -> dict[str, str]:
    """The ``--node-label`` labels NodeRestriction refuses from a kubelet (``node-role...``,
    other ``kubernetes.io``/``k8s.io`` labels outside the kubelet's set)."""
    from sampan.apiserver.admission.noderestriction import forbidden_node_labels

    return {key: labels[key] for key in forbidden_node_labels(labels)}


def node_password_file(data_dir: Path) -> Path:
    if data_dir.resolve() == DEFAULT_DATA_DIR:
        return SYSTEM_PASSWORD_FILE
    return data_dir / "agent" / "node-password"


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _ensure_password(path: Path) -> str:
    if path.exists():
        text = path.read_text().strip()
        if text:
            return text
    password = secrets.token_hex(16)
    _write_private(path, (password + "\n").encode())
    return password


@dataclass(frozen=True)
class NodeCredentials:
    """Where the join put things (all files 0600)."""

    etc_dir: Path
    server_url: str

    def kubeconfig(self, identity: str) -> Path:
        return self.etc_dir / f"{identity}.kubeconfig"

    @property
    def serving_cert(self) -> Path:
        return self.etc_dir / "serving-kubelet.crt"

    @property
    def serving_key(self) -> Path:
        return self.etc_dir / "serving-kubelet.key"

    @property
    def client_ca(self) -> Path:
        return self.etc_dir / "client-ca.crt"


def _kubeconfig(server: str, ca: str, cert: str, key: str) -> bytes:
    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "default",
                "cluster": {"server": server, "certificate-authority-data": b64(ca)},
            }
        ],
        "users": [
            {
                "name": "default",
                "user": {"client-certificate-data": b64(cert), "client-key-data": b64(key)},
            }
        ],
        "contexts": [{"name": "default", "context": {"cluster": "default", "user": "default"}}],
        "current-context": "default",
    }
    return json.dumps(doc, indent=2).encode()


class JoinComponent:
    """Join the server; ``start`` returns once the node's credentials are on disk."""

    name = "join"

    def __init__(
        self,
        *,
        server_url: Callable[[], str],
        token: Callable[[], str],
        node_name: str,
        node_ips: tuple[str, ...],
        data_dir: Path,
        dial_url: Callable[[], str] | None = None,
    ) -> None:
        self._server_url_of = server_url
        self._server_url = ""
        # Where to connect (the local load balancer) when it is not --server itself; the
        # server's certificate is still checked for the host in --server.
        self._dial_url_of = dial_url
        self._dial_url = ""
        self._token = token
        self._node_name = node_name
        self._node_ips = node_ips
        self._data_dir = data_dir
        self.credentials: NodeCredentials | None = None

    async def start(self, ctx: ComponentContext) -> None:
        self._server_url = self._server_url_of().rstrip("/")
        self._dial_url = (self._dial_url_of or self._server_url_of)().rstrip("/")
        try:
            token = parse_token(self._token(), default_user="node")
        except TokenError as exc:
            raise ConfigError(f"--token: {exc}") from None
        password = await asyncio.to_thread(_ensure_password, node_password_file(self._data_dir))
        delay = JOIN_BACKOFF_INITIAL_S
        while True:
            try:
                creds = await self._join(token, password)
                break
            except (JoinRefused, OSError, aiohttp.ClientError, TimeoutError) as exc:
                reason = _one_line(exc)
                log.error("join %s: %s; retrying in %.0fs", self._server_url, reason, delay)
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, JOIN_BACKOFF_MAX_S)
        self.credentials = await asyncio.to_thread(self._write, creds)
        log.info("joined %s as node %s", self._server_url, self._node_name)

    async def stop(self) -> None:
        return None

    async def _join(self, token: JoinToken, password: str) -> dict[str, str]:
        timeout = aiohttp.ClientTimeout(total=JOIN_TIMEOUT_S)
        # Only for GET /cacerts: the CA is not known yet, so nothing can be verified (neither
        # chain nor name). The answer is trusted only once its sha256 matches the token's CA
        # hash, and nothing secret is sent on this connection.
        pinning = ssl.create_default_context()
        pinning.check_hostname = False
        pinning.verify_mode = ssl.CERT_NONE
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.get(self._dial_url + CACERTS_PATH, ssl=pinning) as resp:
                if resp.status != 200:
                    raise JoinRefused(f"GET {CACERTS_PATH} answered {resp.status}")
                ca_pem = await resp.read()
            if token.ca_hash is not None:
                # After `sampan certificate rotate-ca` the file is a bundle that still holds
                # the pinned CA, which signed the new one: the old token keeps working.
                if not bundle_endorsed_by(ca_pem, token.ca_hash):
                    raise JoinRefused(
                        "the server's CA does not match the hash in the token (wrong server, "
                        "or a token from another cluster)"
                    )
            else:
                log.warning("token has no CA hash: trusting the server's CA as presented")
            # From here on the server must prove its identity: a certificate chaining to the
            # pinned CA and valid for the host in --server (its serving certificate carries
            # its addresses, 127.0.0.1 and every --tls-san).
            verified = ssl.create_default_context(cadata=ca_pem.decode())
            verified.minimum_version = ssl.TLSVersion.TLSv1_2
            auth = base64.b64encode(f"{token.user}:{token.secret}".encode()).decode()
            body = {
                "nodeName": self._node_name,
                "nodePassword": password,
                "nodeIPs": list(self._node_ips),
            }
            async with session.post(
                self._dial_url + JOIN_PATH,
                json=body,
                headers={"Authorization": f"Basic {auth}"},
                ssl=verified,
                server_hostname=urlsplit(self._server_url).hostname,
            ) as resp:
                payload = await resp.read()
                if resp.status != 200:
                    message = _status_message(payload) or f"HTTP {resp.status}"
                    if resp.status == 401:
                        message = "the server refused the token"
                    raise JoinRefused(message)
        try:
            creds = json.loads(payload)
        except ValueError:
            raise JoinRefused("the server's answer is not JSON") from None
        if not isinstance(creds, dict):
            raise JoinRefused("the server's answer is not a JSON object")
        return creds

    def _write(self, creds: dict[str, str]) -> NodeCredentials:
        etc = self._data_dir / "agent" / "etc"
        out = NodeCredentials(etc, self._dial_url)
        # Every join brings fresh certificates; say which old ones were due (K3s renews those
        # within 90 days of expiry at start, and logs each).
        for path, reason in expiring_node_certificates(etc):
            log.info("renewed certificate %s: %s", path, reason)
        ca = creds["ca"]
        pairs = {
            "kubelet": ("kubeletClientCert", "kubeletClientKey"),
            "agent": ("agentCert", "agentKey"),
            "kube-proxy": ("proxyCert", "proxyKey"),
            "ingress": ("ingressCert", "ingressKey"),
        }
        for identity, (cert, key) in pairs.items():
            _write_private(
                out.kubeconfig(identity),
                _kubeconfig(self._dial_url, ca, creds[cert], creds[key]),
            )
        _write_private(out.serving_cert, creds["kubeletServingCert"].encode())
        _write_private(out.serving_key, creds["kubeletServingKey"].encode())
        _write_private(out.client_ca, creds["clientCA"].encode())
        _write_private(etc / "server-ca.crt", ca.encode())
        return out


def _certificate_in(path: Path) -> bytes | None:
    """The PEM certificate of a node file: a ``.crt``, or the client certificate embedded in
    a kubeconfig (JSON, as ``_kubeconfig`` writes it)."""
    data = path.read_bytes()
    if path.suffix == ".crt":
        return data
    try:
        users = json.loads(data).get("users") or []
        return base64.b64decode(users[0]["user"]["client-certificate-data"])
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return None


def expiring_node_certificates(etc_dir: Path) -> list[tuple[Path, str]]:
    """(file, why) for each certificate under ``etc_dir`` (the node's kubeconfigs and serving
    certificate) that has expired or expires within ``LEAF_RENEW_BEFORE_DAYS``."""
    if not etc_dir.is_dir():
        return []
    found = []
    for path in sorted([*etc_dir.glob("*.kubeconfig"), etc_dir / "serving-kubelet.crt"]):
        try:
            pem = _certificate_in(path)
            cert = load_cert(pem) if pem else None
        except (OSError, ValueError):
            continue
        if cert is None:
            continue
        left = remaining_validity(cert)
        expiry = times.rfc3339(cert.not_valid_after_utc)
        if left <= dt.timedelta(0):
            found.append((path, f"expired at {expiry}"))
        elif left < dt.timedelta(days=LEAF_RENEW_BEFORE_DAYS):
            found.append(
                (
                    path,
                    f"expires within {LEAF_RENEW_BEFORE_DAYS} days "
                    f"(at {expiry}, {left.days} days left)",
                )
            )
    return found


def _status_message(payload: bytes) -> str:
    try:
        status = json.loads(payload)
    except ValueError:
        return ""
    return status.get("message", "") if isinstance(status, dict) else ""


def _one_line(exc: BaseException) -> str:
    verify_error = getattr(exc, "certificate_error", exc)  # aiohttp wraps the ssl error
    if isinstance(verify_error, ssl.SSLCertVerificationError):
        if verify_error.verify_code in X509_V_ERR_NAME_MISMATCH:
            return (
                f"the server's certificate is not valid for the host in --server "
                f"({verify_error.verify_message}); use an address the server's certificate "
                "carries, or add this one to the server's --tls-san"
            )
        return f"TLS verification failed (is this machine's clock right?): {verify_error}"
    if "CERTIFICATE_VERIFY_FAILED" in str(exc):
        return f"TLS verification failed (is this machine's clock right?): {exc}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot reach the server: {exc.os_error.strerror or exc}"
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0]


class JoinedComponent:
    """A component built from the join's credentials once the join has finished."""

    def __init__(self, name: str, join: JoinComponent, build: Callable[[NodeCredentials], Any]):
        self.name = name
        self._join = join
        self._build = build
        self.inner: Any = None

    async def start(self, ctx: ComponentContext) -> None:
        assert self._join.credentials is not None, "join starts first"
        self.inner = await asyncio.to_thread(self._build, self._join.credentials)
        await self.inner.start(ctx)

    async def stop(self) -> None:
        if self.inner is not None:
            await self.inner.stop()
            self.inner = None


class KubeletServerComponent:
    """The kubelet API (10250 or ``--kubelet-arg=port``), started once the kubelet's runtime
    is up."""

    name = "kubelet-server"

    def __init__(
        self, kubelet: JoinedComponent, join: JoinComponent, node: str, registry: Any
    ) -> None:
        self._kubelet = kubelet
        self._join = join
        self._node = node
        self._registry = registry
        self.inner: Any = None

    async def start(self, ctx: ComponentContext) -> None:
        from sampan.kubelet.server import KubeletServer, KubeletServerOptions, PodManagerLookup

        creds = self._join.credentials
        kubelet = self._kubelet.inner
        assert creds is not None and kubelet is not None
        args = kubelet.options.args
        options = KubeletServerOptions(
            node_name=self._node,
            bind_address=args.address,
            port=args.port,
            cert_path=creds.serving_cert,
            key_path=creds.serving_key,
            client_ca_path=creds.client_ca,
            cgroup_root=kubelet.options.cgroup_root or "/",
        )
        self.inner = KubeletServer(
            options,
            kubelet.runtime,
            lookup=PodManagerLookup(kubelet),
            metrics_registry=self._registry,
        )
        await self.inner.start(ctx)

    async def stop(self) -> None:
        if self.inner is not None:
            await self.inner.stop()
            self.inner = None


class NetworkPolicyCleanupComponent:
    """With ``--disable-network-policy``: remove what an earlier run enforced, so stale
    policies do not keep applying."""

    name = "network-policy-cleanup"

    def __init__(self, data_dir: Path) -> None:
        self._data_dir = data_dir

    async def start(self, ctx: ComponentContext) -> None:
        from sampan.netpol import NetworkPolicyError, cleanup, names_for_data_dir

        names = await asyncio.to_thread(names_for_data_dir, self._data_dir)
        try:
            removed = await asyncio.to_thread(cleanup, names)
        except NetworkPolicyError as exc:  # best effort: the agent runs without it
            log.warning("network policy disabled; removing its old rules failed: %s", exc)
            return
        if removed:
            log.info("network policy disabled: removed %d chains and sets", removed)

    async def stop(self) -> None:
        return None


def _network_policy_component(config: Config, join: JoinComponent, node: str) -> Component:
    if config.disable_network_policy:
        return NetworkPolicyCleanupComponent(config.data_dir)
    from sampan.client import ClientConfig
    from sampan.netpol import NetworkPolicyController, NetworkPolicyOptions, names_for_data_dir

    return JoinedComponent(
        "network-policy",
        join,
        lambda creds: NetworkPolicyController(
            ClientConfig.from_kubeconfig(creds.kubeconfig("agent")),
            NetworkPolicyOptions(node_name=node, names=names_for_data_dir(config.data_dir)),
        ),
    )


def agent_components(
    config: Config, *, server_url: Callable[[], str], token: Callable[[], str], is_server: bool
) -> list[Component]:
    """The agent's components in start order. Options are checked here, before anything
    starts (``ConfigError`` for a bad ``kubelet-arg``, label or taint)."""
    from prometheus_client import CollectorRegistry

    from sampan.client import ClientConfig
    from sampan.dns import DNSOptions, DNSServer
    from sampan.kubelet import Kubelet, KubeletOptions, KubeletOptionsError
    from sampan.kubelet.localpath import LocalPathCleaner
    from sampan.kubelet.registries import RegistriesError, load_registries
    from sampan.kubelet.runtime.containerd import ContainerdConfig
    from sampan.network.overlay import Overlay, OverlayError, OverlayOptions
    from sampan.proxy import Proxy, ProxyOptions, parse_proxy_args

    name = node_name(config)
    node_ips = tuple(config.node_ip) or default_node_ips()
    # The node's Prometheus registry: the kubelet's, proxy's and DNS server's series, served
    # on the kubelet API's /metrics (they share one registry, as in K3s's agent process).
    node_registry = CollectorRegistry()
    labels: dict[str, str] = {}
    for item in config.node_label:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"node-label: {item!r} is not of the form key=value")
        labels[key] = value
    restricted = restricted_node_labels(labels)
    if restricted and not is_server:
        raise ConfigError(
            f"node-label: {', '.join(sorted(restricted))}: a kubelet may not set these labels "
            "on its own Node (NodeRestriction); label the node with kubectl instead"
        )
    labels = {k: v for k, v in labels.items() if k not in restricted}  # a server sets them
    names = config.host_names
    kubelet_args = config.component_args("kubelet-arg")
    if names.cluster_name:
        kubelet_args.setdefault("cgroup-root", names.cgroup_root)
    try:
        registries = load_registries(config.private_registry)
    except RegistriesError as exc:
        raise ConfigError(str(exc)) from None
    try:
        kubelet_options = KubeletOptions(
            node_name=name,
            data_dir=config.data_dir,
            node_ips=node_ips,
            labels=labels,
            taints=tuple(config.node_taint),
            cluster_dns=config.cluster_dns,
            cluster_domain=config.cluster_domain,
            is_server=is_server,
            runtime_endpoint=config.container_runtime_endpoint,
            kubelet_args=kubelet_args,
            registries=registries,
        )
    except KubeletOptionsError as exc:
        raise ConfigError(str(exc)) from None
    for sub in ("etc", "images", "pod-manifests", "containerd", "logs"):
        os.makedirs(config.data_dir / "agent" / sub, mode=0o700, exist_ok=True)

    # Every client of the node reaches the API servers through the local load balancer.
    balancer = LoadBalancerComponent(
        "load-balancer",
        server_url=server_url,
        port=config.lb_server_port,  # 0: the port of the server URL plus one
        state_file=config.data_dir / "agent" / "etc" / "load-balancer.json",
    )
    join = JoinComponent(
        server_url=server_url,
        dial_url=lambda: balancer.url,
        token=token,
        node_name=name,
        node_ips=node_ips,
        data_dir=config.data_dir,
    )
    components: list[Component] = [balancer, join]
    components.append(
        JoinedComponent(
            "load-balancer-endpoints",
            join,
            lambda creds: EndpointsWatcher(
                ClientConfig.from_kubeconfig(creds.kubeconfig("kube-proxy")), balancer.started()
            ),
        )
    )
    if config.network_backend != "none":  # "none": the user's own CNI
        try:
            overlay_options = OverlayOptions(
                node_name=name,
                backend=config.network_backend,
                node_ip=node_ips[0],
                iface=config.flannel_iface,
                cluster_cidr=config.cluster_cidr,
                cni_conf_dir=ContainerdConfig(data_dir=config.data_dir).cni_conf_dir,
                ipam_data_dir=config.data_dir / "agent" / "cni" / "networks",
                bridge=names.bridge,
                vxlan_device=names.vxlan_device,
                vxlan_vni=names.vxlan_vni,
                chain_prefix=names.network_chain_prefix,
            )
        except OverlayError as exc:
            raise ConfigError(str(exc)) from None
        components.append(
            JoinedComponent(
                "network",
                join,
                lambda creds: Overlay(
                    ClientConfig.from_kubeconfig(creds.kubeconfig("agent")),
                    overlay_options,
                    node_client_config=ClientConfig.from_kubeconfig(creds.kubeconfig("kubelet")),
                ),
            )
        )
    dns = JoinedComponent(
        "dns",
        join,
        lambda creds: DNSServer(
            ClientConfig.from_kubeconfig(creds.kubeconfig("agent")),
            DNSOptions(
                cluster_domain=config.cluster_domain,
                cluster_dns=config.cluster_dns,
                listen_address=names.dns_address,
                interface=names.dns_interface,
            ),
            metrics_registry=node_registry,
        ),
    )
    components.append(dns)
    try:
        parse_proxy_args(config.component_args("kube-proxy-arg"))
    except ValueError as exc:
        raise ConfigError(f"kube-proxy-arg: {exc}") from None

    def build_proxy(creds: NodeCredentials) -> Any:
        server = dns.inner
        return Proxy(
            ClientConfig.from_kubeconfig(creds.kubeconfig("kube-proxy")),
            ProxyOptions(
                node_name=name,
                node_ips=node_ips,
                cluster_cidr=config.cluster_cidr,
                service_cidr=config.service_cidr,
                args=config.component_args("kube-proxy-arg"),
                dns_redirect=(server.address, server.port) if server is not None else None,
                cluster_dns=config.cluster_dns,
                service_lb="servicelb" not in config.disable,
                chain_prefix=names.proxy_chain_prefix,
            ),
            metrics_registry=node_registry,
        )

    components.append(JoinedComponent("proxy", join, build_proxy))
    components.append(_network_policy_component(config, join, name))
    kubelet = JoinedComponent(
        "kubelet",
        join,
        lambda creds: Kubelet(
            ClientConfig.from_kubeconfig(creds.kubeconfig("kubelet")),
            kubelet_options,
            metrics_registry=node_registry,
        ),
    )
    components += [kubelet, KubeletServerComponent(kubelet, join, name, node_registry)]

    # The node half of the local-path provisioner: removes released volumes' directories.
    components.append(
        JoinedComponent(
            "local-path",
            join,
            lambda creds: LocalPathCleaner(
                ClientConfig.from_kubeconfig(creds.kubeconfig("agent")),
                node_name=name,
                storage_root=config.local_storage_path,
            ),
        )
    )
    if "ingress" not in config.disable:
        from sampan.ingress import IngressController, IngressOptions

        ingress_options = IngressOptions(
            node_name=name,
            directory=config.data_dir / "agent" / "ingress",
            node_ips=node_ips,
            http_port=config.ingress_http_port,
            https_port=config.ingress_https_port,
        )
        components.append(
            JoinedComponent(
                "ingress",
                join,
                lambda creds: IngressController(
                    ClientConfig.from_kubeconfig(creds.kubeconfig("ingress")), ingress_options
                ),
            )
        )

    def kubelet_clients() -> list[Any]:
        inner = kubelet.inner
        client = getattr(inner, "client", None) if inner is not None else None
        return [client] if client is not None else []

    def kubelet_kubeconfig() -> Path:
        assert join.credentials is not None, "join starts first"
        return join.credentials.kubeconfig("kubelet")

    # The kubelet's client certificate is renewed through a CSR before it expires.
    components.append(KubeletCertificateRotation(kubelet_kubeconfig, name, kubelet_clients))
    return components
