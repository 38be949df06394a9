"""Trust on first contact, as Rancher's agent does: the CA checksum.

The manager serves its CA certificate (PEM) unauthenticated at ``GET /cacerts``
(``CACERTS_PATH``); the registration command gives the agent ``SAMPAN_CA_CHECKSUM``, the
SHA-256 (lowercase hex) of exactly those bytes. The agent fetches the PEM without verifying
TLS, compares the checksum *before* it sends its token anywhere, and from then on verifies the
manager's TLS certificate against that CA only. ``ca_checksum`` is the one definition of the
checksum, used by both ends.
"""

from __future__ import annotations

import hashlib

from aiohttp import web
from aiohttp.typedefs import Handler

__all__ = ["CACERTS_PATH", "ca_checksum", "cacerts_handler"]

CACERTS_PATH = "/cacerts"


def ca_checksum(ca_pem: bytes) -> str:
    """SHA-256 of the CA PEM bytes as served, lowercase hex (``SAMPAN_CA_CHECKSUM``)."""
    return hashlib.sha256(ca_pem).hexdigest()


def cacerts_handler(ca_pem: bytes) -> Handler:
    """The ``GET /cacerts`` handler serving ``ca_pem`` byte for byte (``text/plain``, as
    Rancher serves it)."""

    async def handle(_request: web.Request) -> web.Response:
        return web.Response(body=ca_pem, content_type="text/plain")

    return handle
