"""The tunnel's wire format: one frame per binary WebSocket message.

This docstring is the protocol's specification; ``session.py`` implements the behaviour.

Transport: one WebSocket per cluster agent, opened by the agent to the manager's connect
endpoint with the subprotocol ``sampan-tunnel.v1`` (the version lives in the subprotocol, so
frames carry none). Every WebSocket message is binary and holds exactly one frame; a text
message is a protocol error. Heartbeats are WebSocket pings sent by the agent.

Frame layout (network byte order)::

    0        1                 5
    +--------+-----------------+---------------------------
    | type   | connection id   | payload (rest of the message)
    | u8     | u32             |
    +--------+-----------------+---------------------------

Connection ids name one stream (one TCP connection on the agent's side). The side that dials
picks the id: the manager (WebSocket server) uses odd ids, the agent even ones, so both could
dial without colliding; id 0 is never used. Ids only grow (never reused within a session), so
a late frame cannot be mistaken for a new stream's.

Types and payloads:

=============  ====  ===================================================================
type           code  payload
=============  ====  ===================================================================
dial           1     ``window u32 | timeout_ms u32 | "host:port"`` (UTF-8, ≤ 1 KiB):
                     open a TCP connection to host:port; ``window`` is the dialer's initial
                     receive credit for the stream
dial-ok        2     ``window u32``: connected; the acceptor's initial receive credit
dial-error     3     UTF-8 message (≤ 1 KiB): not connected; the id is free again
data           4     1 .. ``MAX_DATA_BYTES`` bytes of the stream, in order
window         5     ``increment u32``: the receiver consumed that many more bytes; the sender
                     may send that many more
close-write    6     empty: the sender will send no more data (half-close); it still reads
close          7     empty: the sender is done with the stream in both directions (after its
                     buffered data); each side forgets the id once it has sent or received
                     ``close``, ``error`` or ``dial-error``
error          8     UTF-8 message (≤ 1 KiB): the stream is aborted (the far side's socket
                     failed, or the frame named a connection the receiver does not know)
=============  ====  ===================================================================

Flow control is per stream and credit-based, as HTTP/2's: a sender may have at most the
receiver's advertised credit in flight; each ``data`` frame spends its length, each
``window`` frame adds. A sender whose credit is used up stops (its local writer is paused)
while every other stream keeps flowing; a ``data`` frame beyond the credit is a protocol
error. Receivers grant credit back as their application consumes bytes.

Protocol errors close the whole session (WebSocket close code 1002, or 1009 for a message
larger than ``MAX_FRAME_BYTES``) with one log line; every open stream then ends with
``StreamReset``. A frame that names an unknown connection id is not a protocol error (it can
race with a close): ``data``, ``window`` and ``close-write`` are answered with ``error``,
``dial-ok`` with ``close``, and ``close``/``error``/``dial-error`` are dropped silently.
"""

from __future__ import annotations

import enum
import struct

from sampan.manager.tunnel.errors import ProtocolError

__all__ = [
    "DEFAULT_WINDOW_BYTES",
    "HEADER",
    "MAX_DATA_BYTES",
    "MAX_FRAME_BYTES",
    "MAX_TEXT_BYTES",
    "SUBPROTOCOL",
    "FrameType",
    "decode",
    "decode_dial",
    "decode_u32",
    "encode",
    "encode_dial",
    "encode_text",
    "encode_u32",
]

SUBPROTOCOL = "sampan-tunnel.v1"
HEADER = struct.Struct("!BI")
_U32 = struct.Struct("!I")
_DIAL = struct.Struct("!II")

MAX_DATA_BYTES = 32 * 1024
MAX_FRAME_BYTES = 64 * 1024
MAX_TEXT_BYTES = 1024
DEFAULT_WINDOW_BYTES = 256 * 1024
MAX_WINDOW_BYTES = 2**31 - 1


class FrameType(enum.IntEnum):
    DIAL = 1
    DIAL_OK = 2
    DIAL_ERROR = 3
    DATA = 4
    WINDOW = 5
    CLOSE_WRITE = 6
    CLOSE = 7
    ERROR = 8


_EMPTY = frozenset({FrameType.CLOSE_WRITE, FrameType.CLOSE})
_U32_PAYLOAD = frozenset({FrameType.DIAL_OK, FrameType.WINDOW})
_TEXT = frozenset({FrameType.DIAL_ERROR, FrameType.ERROR})


def encode(kind: FrameType, conn_id: int, payload: bytes = b"") -> bytes:
    return HEADER.pack(kind, conn_id) + payload


def encode_u32(kind: FrameType, conn_id: int, value: int) -> bytes:
    return HEADER.pack(kind, conn_id) + _U32.pack(value)


def encode_text(kind: FrameType, conn_id: int, text: str) -> bytes:
    data = text.encode()[:MAX_TEXT_BYTES]
    return HEADER.pack(kind, conn_id) + data


def encode_dial(conn_id: int, window: int, timeout_ms: int, host: str, port: int) -> bytes:
    address = f"{host}:{port}".encode()
    if len(address) > MAX_TEXT_BYTES:
        raise ValueError("dial address too long")
    return HEADER.pack(FrameType.DIAL, conn_id) + _DIAL.pack(window, timeout_ms) + address


def decode(message: bytes) -> tuple[FrameType, int, bytes]:
    """Split one WebSocket message into (type, connection id, payload); ``ProtocolError`` on
    a frame that breaks the layout above."""
    if len(message) > MAX_FRAME_BYTES:
        raise ProtocolError(
            f"frame of {len(message)} bytes exceeds the maximum of {MAX_FRAME_BYTES}"
        )
    if len(message) < HEADER.size:
        raise ProtocolError(f"frame of {len(message)} bytes is shorter than its header")
    code, conn_id = HEADER.unpack_from(message)
    try:
        kind = FrameType(code)
    except ValueError:
        raise ProtocolError(f"unknown frame type {code}") from None
    if conn_id == 0:
        raise ProtocolError(f"{kind.name.lower()} frame for connection id 0")
    payload = message[HEADER.size :]
    size = len(payload)
    if kind is FrameType.DATA and not 0 < size <= MAX_DATA_BYTES:
        raise ProtocolError(f"data frame of {size} bytes (allowed 1..{MAX_DATA_BYTES})")
    if kind in _EMPTY and size:
        raise ProtocolError(f"{kind.name.lower()} frame with a {size}-byte payload")
    if kind in _U32_PAYLOAD and size != _U32.size:
        raise ProtocolError(f"{kind.name.lower()} frame with a {size}-byte payload (want 4)")
    if kind in _TEXT and size > MAX_TEXT_BYTES:
        raise ProtocolError(f"{kind.name.lower()} message of {size} bytes")
    if kind is FrameType.DIAL and not _DIAL.size < size <= _DIAL.size + MAX_TEXT_BYTES:
        raise ProtocolError(f"dial frame with a {size}-byte payload")
    return kind, conn_id, payload


def decode_u32(payload: bytes) -> int:
    value: int = _U32.unpack(payload)[0]
    return value


def decode_dial(payload: bytes) -> tuple[int, int, str, int]:
    """(window, timeout_ms, host, port) of a dial payload."""
    window, timeout_ms = _DIAL.unpack_from(payload)
    try:
        address = payload[_DIAL.size :].decode()
        host, _, port_text = address.rpartition(":")
        port = int(port_text)
    except ValueError:
        raise ProtocolError("dial frame with a malformed address") from None
    if not host or not 0 < port < 65536:
        raise ProtocolError(f"dial frame with a malformed address {address!r}")
    return window, timeout_ms, host.strip("[]"), port
