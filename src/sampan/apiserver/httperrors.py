"""Failures of the HTTP layer itself answered as Kubernetes ``Status`` JSON.

aiohttp answers a request its parser refuses (an over-long request line or header, too many
headers, a malformed method or version) and any exception that escapes the application with
a ``text/plain`` body of its own, before the API server's dispatcher ever runs. Clients of
the Kubernetes API expect a ``Status`` for every error they cause, so this module swaps in a
request handler whose ``handle_error`` writes one instead:

* a request line over the limit -> 414, headers over the limit -> 431 (Go's net/http, which
  counts both against one header budget, says 431 for either), any other parse error -> 400
  ``BadRequest`` with the parser's first line of explanation;
* anything else (an exception the dispatcher did not turn into a Status) -> 500
  ``InternalError``, logged with its traceback.

The connection is closed after such a response (the stream may be out of sync), as aiohttp
does. ``StatusAppRunner`` is a drop-in ``httpconn.HeaderTimeoutRunner`` that installs the
handler; it is the only thing the server needs to use. aiohttp picks its protocol class in
``Server.__call__`` and offers no option for it, so the runner re-classes the server it built
to a subclass that differs only there (same slots and state).
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMethod, HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from sampan.api.errors import BadRequest, InternalError, StatusError
from sampan.apiserver.responses import error_response
from sampan.httpconn import HeaderTimeoutRunner

__all__ = ["StatusAppRunner", "StatusRequestHandler", "status_for_http_error"]

log = logging.getLogger(__name__)


def _raised_in(exc: BaseException) -> list[str]:
    names = []
    tb = exc.__traceback__
    while tb is not None:
        names.append(tb.tb_frame.f_code.co_name)
        tb = tb.tb_next
    return names


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip().rstrip(":")
    return ""


def status_for_http_error(status: int, exc: BaseException | None) -> StatusError:
    """The Status for an error the HTTP layer met (``status`` as aiohttp chose it)."""
    if isinstance(exc, LineTooLong):
        # Which line was too long: the C parser's callback (cb_on_url, cb_on_header_value)
        # says it; the pure-Python parser names it in its message.
        frames = " ".join(_raised_in(exc))
        in_url = "url" in frames or (
            "header" not in frames and "Status line is too long" in str(exc)
        )
        if in_url:
            return StatusError(
                "request URI too long", code=HTTPStatus.REQUEST_URI_TOO_LONG, reason=""
            )
        return StatusError(
            "request header fields too large",
            code=HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
            reason="",
        )
    if isinstance(exc, HttpProcessingError) or 400 <= status < 500:
        detail = _first_line(getattr(exc, "message", "") or "") if exc is not None else ""
        if "too many headers" in detail.lower():
            return StatusError(
                "request header fields too large",
                code=HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                reason="",
            )
        message = f"malformed HTTP request: {detail}" if detail else "malformed HTTP request"
        return BadRequest(message)
    return InternalError("Internal error occurred: the server could not serve the request")


class StatusRequestHandler(RequestHandler):
    """aiohttp's request handler, with errors of the HTTP layer answered as ``Status``."""

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        error = status_for_http_error(status, exc)
        if error.code >= 500:
            log.error("internal error serving %s", request.path, exc_info=exc)
        elif not isinstance(exc, BadHttpMethod):
            log.debug("refused a malformed request from %s: %s", request.remote, exc)
        if request.writer.output_size > 0:
            # Part of a response went out already: nothing sane can follow on this stream.
            raise ConnectionError("response already started; cannot send an error Status")
        response = error_response(error)
        response.force_close()
        return response


class _StatusServer(web.Server):
    """``web.Server`` whose connections use ``StatusRequestHandler``."""

    def __call__(self) -> RequestHandler:
        kwargs: dict[str, Any] = self._kwargs
        return StatusRequestHandler(self, loop=self._loop, **kwargs)


class StatusAppRunner(HeaderTimeoutRunner):
    """``HeaderTimeoutRunner`` (request headers must arrive in time) whose HTTP-layer errors
    are ``Status`` JSON (see module doc)."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        if type(server) is web.Server:
            server.__class__ = _StatusServer
        return server
