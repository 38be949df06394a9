"""The remotecommand channel plan of the WebSocket bridge."""

from __future__ import annotations

from sampan.kubelet.server.bridge import (
    CHANNEL_ERROR,
    CHANNEL_RESIZE,
    CHANNEL_STDERR,
    CHANNEL_STDIN,
    CHANNEL_STDOUT,
    RemoteCommandStreams,
)


def test_error_stream_first_then_the_requested_ones() -> None:
    plain = RemoteCommandStreams(stdin=True, stdout=True, stderr=True, tty=False)
    assert plain.channels() == [CHANNEL_ERROR, CHANNEL_STDIN, CHANNEL_STDOUT, CHANNEL_STDERR]


def test_a_tty_merges_stderr_and_adds_resize() -> None:
    tty = RemoteCommandStreams(stdin=True, stdout=True, stderr=True, tty=True)
    assert tty.channels() == [CHANNEL_ERROR, CHANNEL_STDIN, CHANNEL_STDOUT, CHANNEL_RESIZE]
    quiet = RemoteCommandStreams(stdin=False, stdout=True, stderr=False, tty=False)
    assert quiet.channels() == [CHANNEL_ERROR, CHANNEL_STDOUT]
