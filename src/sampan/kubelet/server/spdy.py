"""SPDY/3.1 framing: just enough of the protocol to be a client of a CRI stream server.

Kubernetes multiplexes exec/attach (remotecommand) and port-forward streams over SPDY/3.1.
The kubelet needs to speak it itself where it translates another protocol (WebSocket
``v5.channel.k8s.io``) into SPDY for containerd's stream server. This module owns the wire
format only; sessions are built on it elsewhere.

Frames (all integers big-endian)::

    control:  1|version(15) type(16) | flags(8) length(24) | payload
    data:     0|stream-id(31)        | flags(8) length(24) | payload

Control frames used here: SYN_STREAM (1), SYN_REPLY (2), RST_STREAM (3), SETTINGS (4),
PING (6), GOAWAY (7), HEADERS (8), WINDOW_UPDATE (9). Header blocks (in SYN_STREAM,
SYN_REPLY, HEADERS) are ``count(32)`` then ``len(32) name len(32) value`` pairs, compressed
with zlib primed with the SPDY/3 dictionary (``HEADER_DICTIONARY``). Each direction of a
connection has one zlib stream for all its header blocks, flushed with Z_SYNC_FLUSH after
each block, so a ``HeaderCompressor``/``HeaderDecompressor`` must see every block of its
direction, in order.

Invariants: ``read_frame`` never reads past one frame; frames larger than
``MAX_FRAME_BYTES`` are a ``ProtocolError`` (the 24-bit length allows 16 MiB); an encoded frame
is one ``bytes`` object, so writers that write each frame with a single ``write()`` never
interleave frames.
"""

from __future__ import annotations

import asyncio
import struct
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "FLAG_FIN",
    "FLAG_UNIDIRECTIONAL",
    "HEADER_DICTIONARY",
    "MAX_FRAME_BYTES",
    "SPDY_VERSION",
    "TYPE_GOAWAY",
    "TYPE_HEADERS",
    "TYPE_PING",
    "TYPE_RST_STREAM",
    "TYPE_SETTINGS",
    "TYPE_SYN_REPLY",
    "TYPE_SYN_STREAM",
    "TYPE_WINDOW_UPDATE",
    "ControlFrame",
    "DataFrame",
    "HeaderCompressor",
    "HeaderDecompressor",
    "ProtocolError",
    "encode_data",
    "encode_ping",
    "encode_rst_stream",
    "encode_syn_stream",
    "parse_ping",
    "parse_syn_reply",
    "parse_syn_stream",
    "read_frame",
]

SPDY_VERSION = 3
TYPE_SYN_STREAM = 1
TYPE_SYN_REPLY = 2
TYPE_RST_STREAM = 3
TYPE_SETTINGS = 4
TYPE_PING = 6
TYPE_GOAWAY = 7
TYPE_HEADERS = 8
TYPE_WINDOW_UPDATE = 9
FLAG_FIN = 0x01
FLAG_UNIDIRECTIONAL = 0x02
MAX_FRAME_BYTES = 1 << 24
MAX_HEADER_BLOCK_BYTES = 1 << 20
_STREAM_ID_MASK = 0x7FFFFFFF

# The SPDY/3 header compression dictionary (draft-mbelshe-httpbis-spdy-00, 2.6.10.1): a run
# of length-prefixed words, then a run of plain text.
_DICTIONARY_WORDS = (
    *(
        "options head post put delete trace accept accept-charset accept-encoding "
        "accept-language accept-ranges age allow authorization cache-control connection "
        "content-base content-encoding content-language content-length content-location "
        "content-md5 content-range content-type date etag expect expires from host if-match "
        "if-modified-since if-none-match if-range if-unmodified-since last-modified location "
        "max-forwards pragma proxy-authenticate proxy-authorization range referer retry-after "
        "server te trailer transfer-encoding upgrade user-agent vary via warning "
        "www-authenticate method get status"
    ).split(),
    "200 OK",
    "version",
    "HTTP/1.1",
    "url",
    "public",
    "set-cookie",
    "keep-alive",
    "origin",
)
_DICTIONARY_TEXT = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request"
    "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented"
    "503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 "
    "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,"
    "application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivate"
    "max-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
)
HEADER_DICTIONARY = b"".join(
    struct.pack(">I", len(w)) + w.encode("ascii") for w in _DICTIONARY_WORDS
) + _DICTIONARY_TEXT.encode("ascii")


class ProtocolError(Exception):
    """The peer sent something that is not valid SPDY/3.1."""


@dataclass(frozen=True)
class DataFrame:
    stream_id: int
    flags: int
    data: bytes

    @property
    def fin(self) -> bool:
        return bool(self.flags & FLAG_FIN)


@dataclass(frozen=True)
class ControlFrame:
    type: int
    flags: int
    payload: bytes

    @property
    def fin(self) -> bool:
        return bool(self.flags & FLAG_FIN)


Headers = Sequence[tuple[str, str]]


class HeaderCompressor:
    """One direction's header compression context."""

    def __init__(self) -> None:
        self._z = zlib.compressobj(
            zlib.Z_DEFAULT_COMPRESSION,
            zlib.DEFLATED,
            15,
            8,
            zlib.Z_DEFAULT_STRATEGY,
            HEADER_DICTIONARY,
        )

    def compress(self, headers: Iterable[tuple[str, str]]) -> bytes:
        pairs = list(headers)
        raw = bytearray(struct.pack(">I", len(pairs)))
        for name, value in pairs:
            key = name.lower().encode("utf-8")
            val = value.encode("utf-8")
            raw += struct.pack(">I", len(key)) + key + struct.pack(">I", len(val)) + val
        return self._z.compress(bytes(raw)) + self._z.flush(zlib.Z_SYNC_FLUSH)


class HeaderDecompressor:
    """The other direction's context; values holding NULs are split into several pairs."""

    def __init__(self) -> None:
        self._z = zlib.decompressobj(15, HEADER_DICTIONARY)

    def decompress(self, block: bytes) -> list[tuple[str, str]]:
        try:
            raw = self._z.decompress(block, MAX_HEADER_BLOCK_BYTES)
        except zlib.error as exc:
            raise ProtocolError(f"bad header block: {exc}") from exc
        try:
            (count,) = struct.unpack_from(">I", raw, 0)
            offset = 4
            pairs: list[tuple[str, str]] = []
            for _ in range(count):
                (klen,) = struct.unpack_from(">I", raw, offset)
                key = raw[offset + 4 : offset + 4 + klen]
                offset += 4 + klen
                (vlen,) = struct.unpack_from(">I", raw, offset)
                value = raw[offset + 4 : offset + 4 + vlen]
                offset += 4 + vlen
                if len(key) != klen or len(value) != vlen:
                    raise ProtocolError("truncated header block")
                for part in value.split(b"\x00"):
                    pairs.append((key.decode("utf-8", "replace"), part.decode("utf-8", "replace")))
        except struct.error as exc:
            raise ProtocolError("truncated header block") from exc
        return pairs


def _control(frame_type: int, flags: int, payload: bytes) -> bytes:
    return (
        struct.pack(">HHI", 0x8000 | SPDY_VERSION, frame_type, (flags << 24) | len(payload))
        + payload
    )


def encode_data(stream_id: int, data: bytes, *, fin: bool = False) -> bytes:
    if len(data) >= MAX_FRAME_BYTES:
        raise ValueError("a DATA frame holds less than 16 MiB")
    flags = FLAG_FIN if fin else 0
    return struct.pack(">II", stream_id & _STREAM_ID_MASK, (flags << 24) | len(data)) + data


def encode_syn_stream(
    stream_id: int,
    headers: Headers,
    compressor: HeaderCompressor,
    *,
    associated_id: int = 0,
    priority: int = 0,
    flags: int = 0,
) -> bytes:
    payload = struct.pack(
        ">IIBB",
        stream_id & _STREAM_ID_MASK,
        associated_id & _STREAM_ID_MASK,
        (priority & 0x7) << 5,
        0,
    ) + compressor.compress(headers)
    return _control(TYPE_SYN_STREAM, flags, payload)


def encode_rst_stream(stream_id: int, status: int) -> bytes:
    return _control(TYPE_RST_STREAM, 0, struct.pack(">II", stream_id & _STREAM_ID_MASK, status))


def encode_ping(ping_id: int) -> bytes:
    return _control(TYPE_PING, 0, struct.pack(">I", ping_id))


async def read_frame(reader: asyncio.StreamReader) -> DataFrame | ControlFrame | None:
    """The next frame, or None at a clean end of stream (EOF between frames)."""
    try:
        head = await reader.readexactly(8)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise ProtocolError("connection closed inside a frame header") from exc
    first, second = struct.unpack(">II", head)
    flags, length = second >> 24, second & 0xFFFFFF
    try:
        payload = await reader.readexactly(length) if length else b""
    except asyncio.IncompleteReadError as exc:
        raise ProtocolError("connection closed inside a frame") from exc
    if first & 0x80000000:
        version = (first >> 16) & 0x7FFF
        if version != SPDY_VERSION:
            raise ProtocolError(f"SPDY version {version} is not supported")
        return ControlFrame(type=first & 0xFFFF, flags=flags, payload=payload)
    return DataFrame(stream_id=first & _STREAM_ID_MASK, flags=flags, data=payload)


def _need(frame: ControlFrame, size: int, name: str) -> None:
    if len(frame.payload) < size:
        raise ProtocolError(f"short {name} frame")


def parse_syn_stream(
    frame: ControlFrame, decompressor: HeaderDecompressor
) -> tuple[int, int, list[tuple[str, str]]]:
    """(stream id, associated stream id, headers)."""
    _need(frame, 10, "SYN_STREAM")
    stream_id, associated = struct.unpack_from(">II", frame.payload)
    headers = decompressor.decompress(frame.payload[10:])
    return stream_id & _STREAM_ID_MASK, associated & _STREAM_ID_MASK, headers


def parse_syn_reply(
    frame: ControlFrame, decompressor: HeaderDecompressor
) -> tuple[int, list[tuple[str, str]]]:
    _need(frame, 4, "SYN_REPLY")
    (stream_id,) = struct.unpack_from(">I", frame.payload)
    return stream_id & _STREAM_ID_MASK, decompressor.decompress(frame.payload[4:])


def parse_ping(frame: ControlFrame) -> int:
    _need(frame, 4, "PING")
    return struct.unpack_from(">I", frame.payload)[0]
