"""Choosing a driver from ``--datastore-endpoint``, and naming an endpoint safely in logs.

Endpoints: ``""`` or ``"sqlite"`` (the embedded default at
``<data-dir>/server/db/state.db``), ``"sqlite:///abs/path.db"``, ``"postgres://..."`` /
``"postgresql://..."``, and etcd as ``"https://host:2379"`` (comma-separated for several
members; ``"http://"`` without TLS), with K3s's ``--datastore-cafile/certfile/keyfile`` as
``tls``. Invariant: no function here puts a password, or an unparsed endpoint
string, into an exception or a log line.
"""

from __future__ import annotations

import pathlib
import re
import urllib.parse
from typing import TYPE_CHECKING

from sampan.datastore.types import Backend, InvalidRequestError

if TYPE_CHECKING:
    from sampan.datastore.etcd import EtcdTLS

__all__ = [
    "DEFAULT_DB_RELATIVE_PATH",
    "describe",
    "open_backend",
    "redact_endpoint",
]

DEFAULT_DB_RELATIVE_PATH = pathlib.Path("server") / "db" / "state.db"
"""Where the embedded SQLite file lives under the data dir (as K3s keeps it)."""

_POSTGRES_SCHEMES = ("postgres", "postgresql")
_ETCD_SCHEMES = ("http", "https")
_EXPECTED = "expected sqlite, sqlite:///path, postgres://..., or https://HOST:2379 (etcd)"
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]{0,31})://")
_SECRET_PARAMS = {"password", "passfile", "sslpassword", "sslkey"}


def _scheme(endpoint: str) -> str | None:
    match = _SCHEME_RE.match(endpoint)
    return match.group(1).lower() if match else None


def open_backend(endpoint: str, data_dir: pathlib.Path, *, tls: EtcdTLS | None = None) -> Backend:
    """The backend for ``endpoint`` (not started: call ``await backend.start()``). ``tls``
    (client TLS files) applies to etcd endpoints only."""
    scheme = _scheme(endpoint)
    if tls is not None and any((tls.cafile, tls.certfile, tls.keyfile)):
        if scheme not in _ETCD_SCHEMES:
            raise InvalidRequestError(
                "datastore-cafile/certfile/keyfile apply to etcd endpoints (https://...); for "
                "PostgreSQL give sslrootcert/sslcert/sslkey in the DSN"
            )
    if scheme in _ETCD_SCHEMES:
        from sampan.datastore.etcd import EtcdBackend

        return EtcdBackend(endpoint, tls=tls)
    if endpoint in ("", "sqlite"):
        from sampan.datastore.sqlite import SQLiteBackend

        return SQLiteBackend(data_dir / DEFAULT_DB_RELATIVE_PATH, private_dir=True)
    if scheme == "sqlite":
        path = endpoint[len("sqlite://") :]
        if not path.startswith("/") or path == "/":
            raise InvalidRequestError(
                "a sqlite datastore endpoint needs an absolute path: sqlite:///path/to/state.db"
            )
        from sampan.datastore.sqlite import SQLiteBackend

        return SQLiteBackend(pathlib.Path(urllib.parse.unquote(path)))
    if scheme in _POSTGRES_SCHEMES:
        from sampan.datastore.postgres import PostgresBackend

        return PostgresBackend(endpoint)
    if scheme is None:
        raise InvalidRequestError(f"unsupported datastore endpoint: {_EXPECTED}")
    raise InvalidRequestError(f"unsupported datastore endpoint scheme {scheme!r}: {_EXPECTED}")


def redact_endpoint(endpoint: str) -> str:
    """``endpoint`` with any password hidden, fit for logs: ``postgres://user:***@host/db``."""
    if endpoint in ("", "sqlite"):
        return endpoint or "sqlite"
    scheme = _scheme(endpoint)
    if scheme is None:
        return "***"
    if scheme == "sqlite":
        return endpoint
    if scheme in _ETCD_SCHEMES and "," in endpoint:
        return ",".join(redact_endpoint(part.strip()) for part in endpoint.split(","))
    try:
        parts = urllib.parse.urlsplit(endpoint)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, hostinfo = netloc.rsplit("@", 1)
            if ":" in userinfo:
                user = userinfo.split(":", 1)[0]
                userinfo = f"{user}:***"
            netloc = f"{userinfo}@{hostinfo}"
        query = parts.query
        if query:
            pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
            query = "&".join(f"{k}={'***' if k.lower() in _SECRET_PARAMS else v}" for k, v in pairs)
        return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, ""))
    except ValueError:
        return f"{scheme}://***"


def describe(backend: Backend) -> str:
    """A one-line, secret-free name for ``backend`` (e.g. ``sqlite /var/lib/.../state.db``)."""
    description = getattr(backend, "description", None)
    return description if isinstance(description, str) else type(backend).__name__
