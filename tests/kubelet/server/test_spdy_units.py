"""SPDY/3.1 framing: frames round-trip, header blocks share one zlib context per direction."""

from __future__ import annotations

import asyncio
import hashlib
import struct
import zlib

import pytest

from sampan.kubelet.server import spdy
from tests.support import spdy_peer

# The dictionary's published size and digest (SPDY/3 draft, section 2.6.10.1).
DICTIONARY_BYTES = 1423
DICTIONARY_SHA256 = "51d27341373f923f3cd88e1eb7162aeaa3723d7585ff2399201dc06498407f02"


def _reader(data: bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return reader


def test_dictionary_is_the_published_one() -> None:
    assert len(spdy.HEADER_DICTIONARY) == DICTIONARY_BYTES
    assert hashlib.sha256(spdy.HEADER_DICTIONARY).hexdigest() == DICTIONARY_SHA256
    assert spdy.HEADER_DICTIONARY.startswith(b"\x00\x00\x00\x07options\x00\x00\x00\x04head")


def test_header_blocks_share_the_context_in_order() -> None:
    compressor, decompressor = spdy.HeaderCompressor(), spdy.HeaderDecompressor()
    first = compressor.compress([("streamType", "error")])
    second = compressor.compress([("streamtype", "stdout"), ("port", "80")])
    assert decompressor.decompress(first) == [("streamtype", "error")]
    assert decompressor.decompress(second) == [("streamtype", "stdout"), ("port", "80")]
    # The second block alone cannot be read by a fresh context: they are one zlib stream.
    with pytest.raises(spdy.ProtocolError):
        spdy.HeaderDecompressor().decompress(second)


def test_header_values_with_nul_split_into_pairs() -> None:
    z = zlib.compressobj(zdict=spdy.HEADER_DICTIONARY)
    raw = struct.pack(">I", 1) + struct.pack(">I", 1) + b"a" + struct.pack(">I", 3) + b"x\x00y"
    block = z.compress(raw) + z.flush(zlib.Z_SYNC_FLUSH)
    assert spdy.HeaderDecompressor().decompress(block) == [("a", "x"), ("a", "y")]


async def test_frames_round_trip() -> None:
    compressor, decompressor = spdy.HeaderCompressor(), spdy.HeaderDecompressor()
    wire = (
        spdy.encode_syn_stream(1, [("streamtype", "error")], compressor)
        + spdy_peer.encode_syn_reply(1, [], compressor)
        + spdy.encode_data(3, b"hello")
        + spdy.encode_data(3, b"", fin=True)
        + spdy.encode_ping(7)
        + spdy.encode_rst_stream(5, 3)
        + spdy_peer.encode_goaway(9)
    )
    reader = _reader(wire)
    frame = await spdy.read_frame(reader)
    assert isinstance(frame, spdy.ControlFrame) and frame.type == spdy.TYPE_SYN_STREAM
    assert spdy.parse_syn_stream(frame, decompressor) == (1, 0, [("streamtype", "error")])
    frame = await spdy.read_frame(reader)
    assert isinstance(frame, spdy.ControlFrame)
    assert spdy.parse_syn_reply(frame, decompressor) == (1, [])
    assert await spdy.read_frame(reader) == spdy.DataFrame(3, 0, b"hello")
    fin = await spdy.read_frame(reader)
    assert isinstance(fin, spdy.DataFrame) and fin.fin and fin.data == b""
    ping = await spdy.read_frame(reader)
    assert isinstance(ping, spdy.ControlFrame) and spdy.parse_ping(ping) == 7
    rst = await spdy.read_frame(reader)
    assert isinstance(rst, spdy.ControlFrame) and spdy_peer.parse_rst_stream(rst) == (5, 3)
    goaway = await spdy.read_frame(reader)
    assert isinstance(goaway, spdy.ControlFrame) and spdy_peer.parse_goaway(goaway) == (9, 0)
    assert await spdy.read_frame(reader) is None


async def test_truncated_and_foreign_frames_are_errors() -> None:
    with pytest.raises(spdy.ProtocolError):
        await spdy.read_frame(_reader(spdy.encode_data(1, b"abc")[:-1]))
    with pytest.raises(spdy.ProtocolError):
        await spdy.read_frame(_reader(b"\x00\x00"))
    spdy2 = struct.pack(">HHI", 0x8002, spdy.TYPE_PING, 4) + b"\x00\x00\x00\x01"
    with pytest.raises(spdy.ProtocolError):
        await spdy.read_frame(_reader(spdy2))
