"""The sd_notify client: datagrams on a real unix socket, the environment variable taken."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from sampan.supervisor.notify import NOTIFY_SOCKET_ENV, Notifier


def test_from_environment_takes_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    address = str(tmp_path / "n.sock")
    monkeypatch.setenv(NOTIFY_SOCKET_ENV, address)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        notifier = Notifier.from_environment()
        # Children started later (containerd) must not report readiness in our name.
        assert NOTIFY_SOCKET_ENV not in os.environ
        assert notifier.ready("up")
        assert sock.recv(100) == b"READY=1\nSTATUS=up"
        assert notifier.stopping("bye")
        assert sock.recv(100) == b"STOPPING=1\nSTATUS=bye"


def test_abstract_address() -> None:
    name = f"sampan-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        assert Notifier("@" + name).send("READY=1")
        assert sock.recv(100) == b"READY=1"


def test_without_a_socket_nothing_is_sent(tmp_path: Path) -> None:
    assert not Notifier(None).ready("x")
    # A socket nobody listens on: not an error for the server.
    assert not Notifier(str(tmp_path / "absent.sock")).ready("x")
