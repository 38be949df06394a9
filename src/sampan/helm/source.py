"""Where a HelmChart's chart archive comes from, as K3s resolves ``spec.chart``.

``fetch_chart(spec, ...)`` returns the chart's ``.tgz`` bytes from, in this order:

1. ``spec.chartContent``: the archive itself, base64.
2. ``https://%{KUBERNETES_API}%/static/<path>``: a file under ``<data-dir>/server/static/``
   (read from disk: the helm controller runs on the server that holds it).
3. ``oci://...``: pulled by the Helm engine (``spec.version`` a tag; ``plainHTTP``,
   ``insecureSkipTLSVerify`` and ``authSecret`` apply).
4. any other ``http(s)://`` URL: the archive at that URL.
5. otherwise ``spec.chart`` is a chart name in the repository ``spec.repo``: its
   ``index.yaml`` is read and the entry with ``spec.version`` (or, without one, the highest
   version that is not a pre-release) is downloaded from its first URL (relative URLs are
   taken relative to the repository).

TLS to a repository trusts ``spec.repoCA`` and the ``ca-bundle.crt`` key of
``spec.repoCAConfigMap`` (in addition to the system roots); ``spec.authSecret`` (a
``kubernetes.io/basic-auth`` Secret) gives the basic-auth credentials, which are sent to
another host only with ``spec.authPassCredentials``. Every failure raises ``ChartSourceError``
with a ``reason`` (``ChartNotFound``, ``RepoUnavailable``, ``InvalidChartSource``) and a
message naming what failed; credentials never appear in it. An archive whose index entry has
a ``digest`` is kept in memory (a few, by URL and digest) and not downloaded again while the
index names the same digest.
"""

from __future__ import annotations

import base64
import binascii
import collections
import functools
import hashlib
import re
import ssl
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
import yaml

__all__ = [
    "KUBERNETES_API_PLACEHOLDER",
    "ChartSourceError",
    "RepoAccess",
    "describe_source",
    "fetch_chart",
    "pick_version",
]

KUBERNETES_API_PLACEHOLDER = "%{KUBERNETES_API}%"
STATIC_PREFIX = f"https://{KUBERNETES_API_PLACEHOLDER}/static/"
FETCH_TIMEOUT_S = 60.0
MAX_CHART_BYTES = 64 * 1024 * 1024
MAX_INDEX_BYTES = 64 * 1024 * 1024
CA_BUNDLE_KEY = "ca-bundle.crt"
MAX_CACHED_ARCHIVES = 16

_VERSION = re.compile(r"^v?(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:-([0-9A-Za-z.-]+))?(?:\+.*)?$")

Obj = dict[str, Any]


class ChartSourceError(Exception):
    """The chart could not be had. ``reason`` is a CamelCase word for status and events."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class RepoAccess:
    """How to talk to a repository: TLS trust and basic-auth credentials."""

    def __init__(
        self,
        *,
        ca_pem: str = "",
        username: str = "",
        password: str = "",
        pass_credentials: bool = False,
        insecure_skip_tls_verify: bool = False,
        plain_http: bool = False,
    ) -> None:
        self.ca_pem = ca_pem
        self.username = username
        self.password = password
        self.pass_credentials = pass_credentials
        self.insecure_skip_tls_verify = insecure_skip_tls_verify
        self.plain_http = plain_http

    def ssl_context(self, url: str) -> ssl.SSLContext | bool:
        """TLS settings for ``url`` (none for plain http)."""
        if not url.startswith("https://"):
            return True  # aiohttp's default; unused for http
        if self.insecure_skip_tls_verify:
            return False
        return _ssl_context(self.ca_pem.strip())

    def headers_for(self, url: str, repo_url: str) -> dict[str, str]:
        """The basic-auth header for ``url``: only on the repository's host unless
        ``pass_credentials``."""
        if not self.username and not self.password:
            return {}
        if not self.pass_credentials and urlsplit(url).netloc != urlsplit(repo_url).netloc:
            return {}
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}


@functools.lru_cache(maxsize=8)
def _ssl_context(ca_pem: str) -> ssl.SSLContext:
    """The system roots plus ``ca_pem`` (loading the roots costs ~0.1 s: made once per CA)."""
    context = ssl.create_default_context()
    if ca_pem:
        try:
            context.load_verify_locations(cadata=ca_pem)
        except (ssl.SSLError, ValueError) as exc:
            raise ChartSourceError(
                "InvalidChartSource", f"repoCA is not a PEM certificate bundle: {exc}"
            ) from None
    return context


class _ArchiveCache:
    """Chart archives by (URL, index digest): an unchanged chart is not downloaded again.
    Bounded by ``MAX_CACHED_ARCHIVES`` entries (least recently used dropped)."""

    def __init__(self) -> None:
        self._entries: collections.OrderedDict[tuple[str, str], bytes] = collections.OrderedDict()

    def get(self, key: tuple[str, str]) -> bytes | None:
        data = self._entries.get(key)
        if data is not None:
            self._entries.move_to_end(key)
        return data

    def put(self, key: tuple[str, str], data: bytes) -> None:
        self._entries[key] = data
        self._entries.move_to_end(key)
        while len(self._entries) > MAX_CACHED_ARCHIVES:
            self._entries.popitem(last=False)


_ARCHIVES = _ArchiveCache()


def describe_source(spec: Mapping[str, Any], chart_url: str = "") -> str:
    """Where the chart comes from, in words (for the ApplyJob-style event)."""
    chart = str(spec.get("chart") or "")
    version = str(spec.get("version") or "")
    if spec.get("chartContent"):
        return (
            f"inline spec.chartContent from {chart_url}"
            if chart_url
            else "inline spec.chartContent"
        )
    if chart.startswith("oci://"):
        if version:
            return f"version {version} from OCI registry {chart}"
        return f"latest stable version from OCI registry {chart}"
    if "://" in chart:
        return chart
    if version:
        return f"{chart} version {version} from chart repository {spec.get('repo') or ''}"
    return f"latest stable version of {chart} from chart repository {spec.get('repo') or ''}"


def _version_key(text: str) -> tuple[int, int, int, int, str] | None:
    match = _VERSION.match(text.strip())
    if match is None:
        return None
    major, minor, patch, pre = match.groups()
    # A release sorts above any of its pre-releases.
    return (int(major), int(minor or 0), int(patch or 0), 0 if pre else 1, pre or "")


def pick_version(entries: list[Obj], chart: str, version: str) -> Obj:
    """The index entry for ``version`` (exact, with or without a leading ``v``), or the
    highest stable version when ``version`` is empty."""
    if version:
        wanted = version.strip().lstrip("v")
        for entry in entries:
            if str(entry.get("version") or "").lstrip("v") == wanted:
                return entry
        raise ChartSourceError(
            "ChartNotFound", f'chart "{chart}" version "{version}" not found in repository'
        )
    best: tuple[tuple[int, int, int, int, str], Obj] | None = None
    for entry in entries:
        key = _version_key(str(entry.get("version") or ""))
        if key is None or key[3] == 0:
            continue
        if best is None or key > best[0]:
            best = (key, entry)
    if best is None:
        raise ChartSourceError(
            "ChartNotFound", f'no stable version of chart "{chart}" in repository'
        )
    return best[1]


async def _get(
    session: aiohttp.ClientSession, url: str, access: RepoAccess, repo_url: str, limit: int
) -> bytes:
    try:
        async with session.get(
            url, headers=access.headers_for(url, repo_url), ssl=access.ssl_context(url)
        ) as response:
            if response.status == 404:
                raise ChartSourceError("ChartNotFound", f"{url}: 404 Not Found")
            if response.status >= 400:
                raise ChartSourceError(
                    "RepoUnavailable",
                    f"{url}: HTTP {response.status} {response.reason or ''}".strip(),
                )
            body = await response.content.read(limit + 1)
            if len(body) > limit:
                raise ChartSourceError("InvalidChartSource", f"{url}: larger than {limit} bytes")
            return body
    except ChartSourceError:
        raise
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise ChartSourceError(
            "RepoUnavailable", f"{url}: {type(exc).__name__}: {exc}".rstrip(": ")
        ) from None


def _static_file(static_dir: Path, chart: str) -> bytes:
    relative = chart[len(STATIC_PREFIX) :]
    root = static_dir.resolve()
    path = (root / relative).resolve()
    if not path.is_relative_to(root) or path == root:
        raise ChartSourceError("InvalidChartSource", f"{chart}: outside the static directory")
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ChartSourceError("ChartNotFound", f"{chart}: no such file {path}") from None
    except OSError as exc:
        raise ChartSourceError("InvalidChartSource", f"{chart}: {exc.strerror}") from None


async def fetch_chart(
    spec: Mapping[str, Any],
    access: RepoAccess,
    *,
    static_dir: Path,
    pull_oci: Callable[[str, str, RepoAccess], Awaitable[bytes]],
) -> bytes:
    """The chart archive ``spec`` names (see the module docstring)."""
    content = spec.get("chartContent")
    if content:
        try:
            return base64.b64decode(str(content), validate=False)
        except (binascii.Error, ValueError) as exc:
            raise ChartSourceError(
                "InvalidChartSource", f"spec.chartContent is not base64: {exc}"
            ) from None
    chart = str(spec.get("chart") or "").strip()
    version = str(spec.get("version") or "").strip()
    if not chart:
        raise ChartSourceError("InvalidChartSource", "spec.chart or spec.chartContent is required")
    if chart.startswith(STATIC_PREFIX):
        import asyncio

        return await asyncio.to_thread(_static_file, static_dir, chart)
    if chart.startswith("oci://"):
        return await pull_oci(chart, version, access)
    timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        if "://" in chart:
            if not chart.startswith(("http://", "https://")):
                raise ChartSourceError("InvalidChartSource", f"{chart}: unsupported URL scheme")
            return await _get(session, chart, access, chart, MAX_CHART_BYTES)
        repo = str(spec.get("repo") or "").strip()
        if not repo:
            raise ChartSourceError(
                "InvalidChartSource", f'chart "{chart}" needs spec.repo (a chart repository URL)'
            )
        base = repo if repo.endswith("/") else repo + "/"
        raw_index = await _get(session, urljoin(base, "index.yaml"), access, repo, MAX_INDEX_BYTES)
        try:
            index = yaml.safe_load(raw_index) or {}
        except yaml.YAMLError as exc:
            raise ChartSourceError(
                "RepoUnavailable", f"{repo}: index.yaml is not YAML: {exc}"
            ) from None
        entries = (index.get("entries") or {}).get(chart) if isinstance(index, dict) else None
        if not entries:
            raise ChartSourceError(
                "ChartNotFound", f'chart "{chart}" not found in repository {repo}'
            )
        entry = pick_version(list(entries), chart, version)
        urls = entry.get("urls") or []
        if not urls:
            raise ChartSourceError(
                "RepoUnavailable", f'{repo}: chart "{chart}" has no download URL'
            )
        url = urljoin(base, str(urls[0]))
        digest = str(entry.get("digest") or "")
        cached = _ARCHIVES.get((url, digest)) if digest else None
        if cached is not None and hashlib.sha256(cached).hexdigest() == digest:
            return cached
        data = await _get(session, url, access, repo, MAX_CHART_BYTES)
        if digest and hashlib.sha256(data).hexdigest() == digest:
            _ARCHIVES.put((url, digest), data)
        return data
