"""The runtime's half of SPDY/3.1 framing, for tests that play containerd's stream server.

``sampan.kubelet.server.spdy`` holds what the kubelet sends and reads as a SPDY *client*
(it opens streams and answers pings; it ends the session on GOAWAY without needing its
payload). A server's frames (SYN_REPLY, GOAWAY) and the payloads of RST_STREAM/GOAWAY are only
needed to test that codec from the other side, so they live here, built on its public parts.
"""

from __future__ import annotations

import struct

from sampan.kubelet.server import spdy

__all__ = ["encode_goaway", "encode_syn_reply", "parse_goaway", "parse_rst_stream"]

_STREAM_ID_MASK = 0x7FFFFFFF


def _control(frame_type: int, flags: int, payload: bytes) -> bytes:
    head = struct.pack(">HHI", 0x8000 | spdy.SPDY_VERSION, frame_type, (flags << 24) | len(payload))
    return head + payload


def encode_syn_reply(
    stream_id: int,
    headers: list[tuple[str, str]],
    compressor: spdy.HeaderCompressor,
    *,
    flags: int = 0,
) -> bytes:
    payload = struct.pack(">I", stream_id & _STREAM_ID_MASK) + compressor.compress(headers)
    return _control(spdy.TYPE_SYN_REPLY, flags, payload)


def encode_goaway(last_good_stream_id: int, status: int = 0) -> bytes:
    payload = struct.pack(">II", last_good_stream_id & _STREAM_ID_MASK, status)
    return _control(spdy.TYPE_GOAWAY, 0, payload)


def parse_rst_stream(frame: spdy.ControlFrame) -> tuple[int, int]:
    """(stream id, status) of a RST_STREAM frame."""
    if len(frame.payload) < 8:
        raise spdy.ProtocolError("short RST_STREAM frame")
    stream_id, status = struct.unpack_from(">II", frame.payload)
    return stream_id & _STREAM_ID_MASK, status


def parse_goaway(frame: spdy.ControlFrame) -> tuple[int, int]:
    """(last good stream id, status) of a GOAWAY frame (status 0 when absent)."""
    if len(frame.payload) < 4:
        raise spdy.ProtocolError("short GOAWAY frame")
    (last,) = struct.unpack_from(">I", frame.payload)
    status = struct.unpack_from(">I", frame.payload, 4)[0] if len(frame.payload) >= 8 else 0
    return last & _STREAM_ID_MASK, status
