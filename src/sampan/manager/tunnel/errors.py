"""The tunnel's error tree: what the manager's proxy and the cluster agent can catch.

Tree::

    TunnelError (ConnectionError)   anything that went wrong with a tunnel or one of its streams
    ├── NotConnected                no live tunnel for that cluster (the proxy answers 503)
    ├── DialError                   the agent could not or would not open the connection:
    │   │                           target not allowed, refused, unreachable (the proxy: 502)
    │   └── DialTimeout             no dial-ok/dial-error within the timeout (also TimeoutError)
    ├── StreamReset                 an open stream ended abnormally: the peer sent ``error`` or
    │                               the tunnel itself went away (the proxy: 502)
    └── ProtocolError               the peer broke the framing rules; its session is closed

    TunnelConnectError (aiohttp.ClientConnectionError)
                                    what ``TunnelConnector`` raises through an aiohttp client
                                    when a dial fails; ``.error`` is the ``TunnelError`` above

    AgentError                      the cluster agent cannot run at all
    └── CAChecksumMismatch          the manager's CA does not hash to the expected checksum

``TunnelError`` is a ``ConnectionError`` (an ``OSError``) so HTTP clients that treat a lost
connection as such (aiohttp's response handler, asyncio streams) need no special case.
"""

from __future__ import annotations

import aiohttp

__all__ = [
    "AgentError",
    "CAChecksumMismatch",
    "DialError",
    "DialTimeout",
    "NotConnected",
    "ProtocolError",
    "StreamReset",
    "TunnelConnectError",
    "TunnelError",
]


class TunnelError(ConnectionError):
    """Base of every tunnel failure."""


class NotConnected(TunnelError):
    """No live tunnel session for the cluster."""


class DialError(TunnelError):
    """The far end answered ``dial-error`` (its message is the exception's text)."""


class DialTimeout(DialError, TimeoutError):
    """The far end did not answer a dial in time."""


class StreamReset(TunnelError):
    """A stream ended abnormally (``error`` frame, or its session ended)."""


class ProtocolError(TunnelError):
    """The peer broke the framing rules; the whole session is closed."""


class TunnelConnectError(aiohttp.ClientConnectionError):
    """A failed dial seen through aiohttp (which passes its own errors through unchanged but
    would wrap a bare ``OSError``): ``error`` says which one, for the proxy's status code."""

    def __init__(self, error: TunnelError) -> None:
        super().__init__(str(error))
        self.error = error


class AgentError(Exception):
    """The cluster agent cannot run with the configuration it was given."""


class CAChecksumMismatch(AgentError):
    """The CA the manager serves does not hash to the configured checksum."""
