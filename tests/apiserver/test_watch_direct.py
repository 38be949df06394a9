"""Unit tests of the watch streams' direct writes (apiserver/watch.py): what the fan-out hands
to idle streams in one loop iteration goes out in one write per connection, in order."""

from __future__ import annotations

import asyncio

from sampan.apiserver.storage.types import WatchEvent
from sampan.apiserver.watch import DIRECT_LIMIT_BYTES, DirectWrites, _DirectWriter


class _Transport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.buffered = 0
        self.closing = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return self.buffered


def _chunk(event: WatchEvent) -> bytes:
    line = b'{"type":"' + event.type.encode() + b'","object":' + event.object + b"}\n"
    return b"%x\r\n%b\r\n" % (len(line), line)


def _event(n: int) -> WatchEvent:
    return WatchEvent("MODIFIED", b'{"metadata":{"resourceVersion":"%d"}}' % n)


async def test_events_of_one_iteration_share_one_write_per_connection() -> None:
    writes = DirectWrites()
    a, b = _Transport(), _Transport()
    to_a = _DirectWriter(a, [True], writes)  # type: ignore[arg-type]
    to_b = _DirectWriter(b, [True], writes)  # type: ignore[arg-type]
    events = [_event(i) for i in range(1, 4)]
    for event in events:
        assert to_a(event) and to_b(event)
    assert a.writes == [] and b.writes == []  # nothing written before the iteration ends
    await asyncio.sleep(0)
    joined = b"".join(_chunk(e) for e in events)
    assert a.writes == [joined] and b.writes == [joined]
    assert to_a(_event(4))  # a later iteration: a new write
    await asyncio.sleep(0)
    assert a.writes == [joined, _chunk(_event(4))]


async def test_declines_when_backed_up_or_ending_but_never_overtakes_what_it_holds() -> None:
    writes = DirectWrites()
    transport = _Transport()
    writable = [True]
    writer = _DirectWriter(transport, writable, writes)  # type: ignore[arg-type]
    transport.buffered = DIRECT_LIMIT_BYTES + 1
    assert not writer(_event(1))  # backed up: the event is queued by the caller
    transport.buffered = 0
    assert writer(_event(2))
    transport.buffered = DIRECT_LIMIT_BYTES + 1
    assert writer(_event(3))  # it holds an event: later ones follow it, not the queue
    writer.flush()  # what the stream's own writer does before it writes
    assert transport.writes == [_chunk(_event(2)) + _chunk(_event(3))]
    await asyncio.sleep(0)
    assert len(transport.writes) == 1  # the scheduled flush finds nothing left
    transport.buffered = 0
    assert writer(_event(4))
    writable[0] = False  # the stream ended before the flush: its client resumes from rv 3
    await asyncio.sleep(0)
    assert len(transport.writes) == 1
    transport.closing = True
    assert not writer(_event(5))
