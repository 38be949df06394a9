"""Private registries: K3s's ``registries.yaml``, validated, and rendered for containerd.

The file (``/etc/sampan/registries.yaml`` unless ``--private-registry`` names another) has
K3s's schema::

    mirrors:
      <registry>|"*":
        endpoint: [<url>, ...]          # tried in order, then the registry itself
        disable_default_endpoint: bool  # do not fall back to the registry itself
    configs:
      <host[:port]>:
        auth: {username, password, auth, identitytoken}
        tls: {ca_file, cert_file, key_file, insecure_skip_verify}

``load_registries`` reads and validates it: a missing file is an empty configuration; any
unknown key, wrong type or unusable value raises ``RegistriesError`` with one line naming the
file and the key path, so the agent refuses to start. ``write_hosts_dir`` renders containerd's
``hosts.toml`` layout (one ``<dir>/<host>/hosts.toml`` per mirrored or configured host, the
``"*"`` mirror as ``_default``; every file has a ``[host]`` table, which containerd 1.6 needs
to read it at all); ``auth_toml`` renders the CRI plugin's
``registry.configs."<host>".auth`` tables, which containerd 1.6 and 1.7 still use for
credentials when ``config_path`` is set.

Invariants: credentials never reach a log line (``Registries.__repr__`` hides them); the
rendered files that carry them (containerd's config.toml) are written 0600 by the caller;
``rewrite`` rules are refused, because stock containerd 1.6 ignores them in ``hosts.toml``
(K3s relies on its own containerd fork for that) and a silently ignored rule would pull from
the wrong repository.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

__all__ = [
    "DEFAULT_REGISTRIES_PATH",
    "Registries",
    "RegistriesError",
    "RegistryAuth",
    "RegistryMirror",
    "RegistryTLS",
    "auth_toml",
    "load_registries",
    "parse_registries",
    "write_hosts_dir",
]

DEFAULT_REGISTRIES_PATH = Path("/etc/sampan/registries.yaml")

_DEFAULT_HOST_DIR = "_default"
_HOST_RE = re.compile(
    r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]{1,5})?$"
    r"|^\[[0-9a-fA-F:.]+\](:[0-9]{1,5})?$"
)


class RegistriesError(ValueError):
    """registries.yaml is unreadable or invalid; the message is one line naming file and key."""


@dataclass(frozen=True)
class RegistryMirror:
    endpoints: tuple[str, ...] = ()
    disable_default_endpoint: bool = False


@dataclass(frozen=True)
class RegistryAuth:
    username: str = ""
    password: str = ""
    auth: str = ""
    identitytoken: str = ""

    def __repr__(self) -> str:  # never print credentials
        return f"RegistryAuth(username={self.username!r}, secrets=<hidden>)"


@dataclass(frozen=True)
class RegistryTLS:
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    insecure_skip_verify: bool = False


@dataclass(frozen=True)
class RegistryConfig:
    auth: RegistryAuth | None = None
    tls: RegistryTLS | None = None


@dataclass(frozen=True)
class Registries:
    """The validated file; empty when there is none."""

    mirrors: Mapping[str, RegistryMirror] = field(default_factory=dict)
    configs: Mapping[str, RegistryConfig] = field(default_factory=dict)
    source: str = ""

    def __bool__(self) -> bool:
        return bool(self.mirrors or self.configs)


class _Checker:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, message: str) -> RegistriesError:
        where = f" {key}:" if key else ""
        return RegistriesError(f"{self.source}:{where} {message}")

    def mapping(self, value: Any, key: str) -> Mapping[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise self.fail(key, "must be a map with string keys")
        return value

    def known(self, value: Mapping[str, Any], key: str, allowed: tuple[str, ...]) -> None:
        for name in value:
            if name not in allowed:
                path = f"{key}.{name}" if key else name
                raise self.fail(path, f"unknown field (allowed: {', '.join(allowed)})")

    def string(self, value: Any, key: str) -> str:
        if value is None:
            return ""
        if not isinstance(value, str):
            raise self.fail(key, "must be a string")
        return value

    def boolean(self, value: Any, key: str) -> bool:
        if value is None:
            return False
        if not isinstance(value, bool):
            raise self.fail(key, "must be true or false")
        return value

    def host(self, name: str, key: str) -> None:
        if not _HOST_RE.match(name):
            raise self.fail(key, "must be a registry host name, optionally with :port")

    def endpoint(self, value: Any, key: str) -> str:
        url = self.string(value, key)
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise self.fail(key, f"{url!r} is not an http:// or https:// URL")
        if parts.query or parts.fragment or parts.username or parts.password:
            raise self.fail(key, f"{url!r} must not carry credentials, a query or a fragment")
        return url.rstrip("/")

    def file(self, value: Any, key: str) -> str:
        path = self.string(value, key)
        if path and not os.path.isabs(path):
            raise self.fail(key, f"{path!r} must be an absolute path")
        if path and not os.path.isfile(path):
            raise self.fail(key, f"{path} does not exist")
        return path


def parse_registries(document: Any, source: str) -> Registries:
    """Validate a parsed YAML document (see the module docstring)."""
    c = _Checker(source)
    top = c.mapping(document, "")
    c.known(top, "", ("mirrors", "configs"))
    mirrors: dict[str, RegistryMirror] = {}
    for name, raw in c.mapping(top.get("mirrors"), "mirrors").items():
        key = f"mirrors.{name}"
        if name != "*":
            c.host(name, key)
        body = c.mapping(raw, key)
        c.known(body, key, ("endpoint", "rewrite", "disable_default_endpoint"))
        if body.get("rewrite"):
            raise c.fail(
                f"{key}.rewrite",
                "rewrite rules are not supported: containerd 1.6 ignores them in hosts.toml",
            )
        endpoints = body.get("endpoint") or []
        if not isinstance(endpoints, list):
            raise c.fail(f"{key}.endpoint", "must be a list of URLs")
        urls = tuple(c.endpoint(url, f"{key}.endpoint[{i}]") for i, url in enumerate(endpoints))
        disable = c.boolean(body.get("disable_default_endpoint"), f"{key}.disable_default_endpoint")
        if disable and not urls:
            raise c.fail(key, "disable_default_endpoint needs at least one endpoint")
        if name == "*" and not urls:
            raise c.fail(f"{key}.endpoint", 'the "*" mirror needs at least one endpoint')
        mirrors[name] = RegistryMirror(urls, disable)
    configs: dict[str, RegistryConfig] = {}
    for name, raw in c.mapping(top.get("configs"), "configs").items():
        key = f"configs.{name}"
        c.host(name, key)
        body = c.mapping(raw, key)
        c.known(body, key, ("auth", "tls"))
        auth = tls = None
        if body.get("auth") is not None:
            a = c.mapping(body["auth"], f"{key}.auth")
            fields = ("username", "password", "auth", "identitytoken")
            c.known(a, f"{key}.auth", fields)
            auth = RegistryAuth(**{f: c.string(a.get(f), f"{key}.auth.{f}") for f in fields})
            if auth.auth:
                try:
                    base64.b64decode(auth.auth, validate=True)
                except ValueError:
                    raise c.fail(f"{key}.auth.auth", "must be base64 of user:password") from None
        if body.get("tls") is not None:
            t = c.mapping(body["tls"], f"{key}.tls")
            c.known(t, f"{key}.tls", ("ca_file", "cert_file", "key_file", "insecure_skip_verify"))
            tls = RegistryTLS(
                ca_file=c.file(t.get("ca_file"), f"{key}.tls.ca_file"),
                cert_file=c.file(t.get("cert_file"), f"{key}.tls.cert_file"),
                key_file=c.file(t.get("key_file"), f"{key}.tls.key_file"),
                insecure_skip_verify=c.boolean(
                    t.get("insecure_skip_verify"), f"{key}.tls.insecure_skip_verify"
                ),
            )
            if bool(tls.cert_file) != bool(tls.key_file):
                raise c.fail(f"{key}.tls", "cert_file and key_file go together")
        configs[name] = RegistryConfig(auth, tls)
    return Registries(mirrors, configs, source)


def load_registries(path: Path | str | None) -> Registries:
    """Read and validate ``path``; a missing file is the empty configuration."""
    path = Path(path) if path else DEFAULT_REGISTRIES_PATH
    try:
        text = path.read_text()
    except FileNotFoundError:
        return Registries(source=str(path))
    except OSError as exc:
        raise RegistriesError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}:" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise RegistriesError(f"{path}:{where} {problem}") from None
    return parse_registries(document, str(path))


def _toml_str(value: str) -> str:
    return json.dumps(value)


def _host_of(url: str) -> str:
    return urlsplit(url).netloc


def _tls_lines(tls: RegistryTLS | None) -> list[str]:
    if tls is None:
        return []
    lines = []
    if tls.ca_file:
        lines.append(f"  ca = {_toml_str(tls.ca_file)}")
    if tls.cert_file:
        lines.append(f"  client = [[{_toml_str(tls.cert_file)}, {_toml_str(tls.key_file)}]]")
    if tls.insecure_skip_verify:
        lines.append("  skip_verify = true")
    return lines


def _default_server(registry: str) -> str:
    if registry == "docker.io":
        return "https://registry-1.docker.io"
    return f"https://{registry}"


def render_hosts_toml(registries: Registries, registry: str) -> str:
    """``hosts.toml`` for ``registry`` (``"*"`` for the wildcard mirror)."""
    mirror = registries.mirrors.get(registry) or RegistryMirror()
    lines = ["# Written by sampan from registries.yaml at every agent start."]
    if registry != "*" and not mirror.disable_default_endpoint:
        lines.append(f"server = {_toml_str(_default_server(registry))}")
        own = registries.configs.get(registry)
        lines.extend(line.strip() for line in _tls_lines(own.tls if own else None))
    for url in mirror.endpoints:
        host = _host_of(url)
        # containerd appends /v2 to the endpoint's path itself.
        lines.append("")
        lines.append(f"[host.{_toml_str(url)}]")
        lines.append('  capabilities = ["pull", "resolve"]')
        config = registries.configs.get(host)
        lines.extend(_tls_lines(config.tls if config else None))
    if not mirror.endpoints:
        # containerd 1.6 cannot read a hosts.toml without a [host] table (it falls back to
        # defaults: plain http for a loopback registry), so the server is also listed there.
        own = registries.configs.get(registry)
        lines.append("")
        lines.append(f"[host.{_toml_str(_default_server(registry))}]")
        lines.append('  capabilities = ["pull", "resolve"]')
        lines.extend(_tls_lines(own.tls if own else None))
    return "\n".join(lines) + "\n"


def write_hosts_dir(registries: Registries, hosts_dir: Path) -> None:
    """Replace ``hosts_dir`` with one ``<host>/hosts.toml`` per mirrored or configured host."""
    if hosts_dir.exists():
        shutil.rmtree(hosts_dir)
    hosts_dir.mkdir(parents=True, mode=0o700)
    names = set(registries.mirrors) | {
        name for name, config in registries.configs.items() if config.tls is not None
    }
    for name in sorted(names):
        directory = hosts_dir / (_DEFAULT_HOST_DIR if name == "*" else name)
        directory.mkdir(mode=0o700)
        target = directory / "hosts.toml"
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(render_hosts_toml(registries, name))


def auth_toml(registries: Registries) -> list[str]:
    """The CRI plugin's ``registry.configs."<host>".auth`` tables (TOML lines)."""
    lines: list[str] = []
    for host, config in sorted(registries.configs.items()):
        auth = config.auth
        if auth is None:
            continue
        lines.append(
            f'[plugins."io.containerd.grpc.v1.cri".registry.configs.{_toml_str(host)}.auth]'
        )
        for name in ("username", "password", "auth", "identitytoken"):
            value = getattr(auth, name)
            if value:
                lines.append(f"  {name} = {_toml_str(value)}")
        lines.append("")
    return lines
