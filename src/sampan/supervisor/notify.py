"""systemd's readiness protocol (``sd_notify``), for ``Type=notify`` units.

What it owns: the ``NOTIFY_SOCKET`` the service manager gave this process. ``Notifier.
from_environment()`` takes it out of the environment (as ``sd_notify(unset_environment=1)``),
so children (containerd, runc shims) cannot report readiness in Sampan's name. ``send`` writes
one datagram of ``KEY=VALUE`` lines to that unix datagram socket; an address starting with
``@`` is in the abstract namespace.

Invariants: without ``NOTIFY_SOCKET`` every call is a no-op; a failed send is logged once at
debug level and never raised (readiness reporting must not stop the server); sends are tiny
non-blocking datagrams, safe to call from the event loop.
"""

from __future__ import annotations

import logging
import os
import socket

__all__ = ["NOTIFY_SOCKET_ENV", "Notifier"]

log = logging.getLogger("sampan.supervisor")

NOTIFY_SOCKET_ENV = "NOTIFY_SOCKET"


class Notifier:
    """Sends ``READY=1``, ``STOPPING=1`` and ``STATUS=...`` to the service manager."""

    def __init__(self, address: str | None) -> None:
        self.address = address or None

    @classmethod
    def from_environment(cls) -> Notifier:
        return cls(os.environ.pop(NOTIFY_SOCKET_ENV, None))

    def send(self, *fields: str) -> bool:
        """Send ``fields`` (``"READY=1"``, ...) as one message; True when it was sent."""
        if self.address is None:
            return False
        address = self.address
        if address.startswith("@"):
            address = "\0" + address[1:]
        message = "\n".join(fields).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.setblocking(False)
                sock.sendto(message, address)
        except OSError as exc:
            log.debug("sd_notify to %s failed: %s", self.address, exc)
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.send("READY=1", f"STATUS={status}")

    def stopping(self, status: str) -> bool:
        return self.send("STOPPING=1", f"STATUS={status}")
