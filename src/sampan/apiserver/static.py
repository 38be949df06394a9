"""``/static/...``: files under ``<data-dir>/server/static/``, without authentication, as K3s
serves them (chart archives that HelmCharts reference as
``https://%{KUBERNETES_API}%/static/charts/<name>.tgz``).

Invariants: only regular files inside the static directory are served (a path that resolves
outside it, through ``..`` or a symlink, is 404, as is a directory: no listings); GET and HEAD
only (405 otherwise); reads run off the event loop.
"""

from __future__ import annotations

import asyncio
import mimetypes
from pathlib import Path
from urllib.parse import unquote

from aiohttp import web

__all__ = ["STATIC_PREFIX", "is_static_path", "serve_static"]

STATIC_PREFIX = "/static/"


def is_static_path(path: str) -> bool:
    return path.startswith(STATIC_PREFIX)


def _resolve(root: Path, path: str) -> Path | None:
    relative = unquote(path[len(STATIC_PREFIX) :])
    base = root.resolve()
    target = (base / relative).resolve()
    if not target.is_relative_to(base) or not target.is_file():
        return None
    return target


async def serve_static(root: Path, request: web.Request) -> web.StreamResponse:
    if request.method not in ("GET", "HEAD"):
        return web.Response(
            status=405, text="405 method not allowed\n", headers={"Allow": "GET, HEAD"}
        )
    target = await asyncio.to_thread(_resolve, root, request.path)
    if target is None:
        return web.Response(status=404, text="404 page not found\n")
    content_type = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
    if target.suffix == ".tgz":
        content_type = "application/gzip"
    body = await asyncio.to_thread(target.read_bytes)
    return web.Response(body=body, content_type=content_type)
