"""Container logs as the kubelet serves them: the CRI log file format and its options.

The runtime writes each container's output to a file, one record per line::

    <RFC3339Nano time> <stdout|stderr> <P|F> <message>

``P`` marks a partial record (a long line split by the runtime; the next records continue
it), ``F`` a full one that ends the logical line. ``read_log`` turns such a file into what
``kubectl logs`` shows, honouring ``LogOptions`` (the query of ``/containerLogs``): the last
``tail_lines`` lines, only lines since a time, a timestamp prefix, a byte limit, and
``follow``, which keeps reading as the file grows until the container stops.

Invariants:

* file reads (and the formatting of what was read) run in a thread, in chunks of
  ``READ_CHUNK_BYTES``: a large log is streamed, never read whole; ``tail_lines`` walks
  records backwards from the end, so it costs what it shows, not the file's size;
* a malformed record is passed through as-is rather than dropped (the file may have been
  written by another runtime version);
* ``limit_bytes`` cuts the output at exactly that many bytes;
* ``follow`` notices a rotated file (a new inode at the path) and continues in it; it ends
  when the container is no longer running and the file has been read to its end.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import BinaryIO

__all__ = [
    "FOLLOW_POLL_INTERVAL_S",
    "LogOptions",
    "LogOptionsError",
    "LogRecord",
    "format_record",
    "parse_record",
    "parse_rfc3339",
    "read_log",
]

READ_CHUNK_BYTES = 64 * 1024
FOLLOW_POLL_INTERVAL_S = 0.1
"""How often ``follow`` looks for new output (containerd 1.6 has no event to wait on)."""
RUNNING_CHECK_INTERVAL_S = 1.0
"""How often ``follow`` asks whether the container still runs while the file is idle."""

_STREAMS = (b"stdout", b"stderr")


class LogOptionsError(ValueError):
    """A query parameter of /containerLogs is malformed."""


def parse_rfc3339(text: str) -> dt.datetime:
    """An RFC 3339 time (nanoseconds allowed, truncated to microseconds) as an aware datetime."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    if "." in value:
        head, _, rest = value.partition(".")
        digits = ""
        while rest and rest[0].isdigit():
            digits, rest = digits + rest[0], rest[1:]
        value = f"{head}.{(digits + '000000')[:6]}{rest}"
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError as exc:
        raise LogOptionsError(f"invalid time {text!r}") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed


@dataclass(frozen=True)
class LogOptions:
    follow: bool = False
    previous: bool = False
    timestamps: bool = False
    tail_lines: int | None = None
    limit_bytes: int | None = None
    since_time: dt.datetime | None = None

    @classmethod
    def from_query(cls, query: Mapping[str, str], *, now: dt.datetime | None = None) -> LogOptions:
        """Parse the ``/containerLogs`` (and ``pods/log``) query parameters."""

        def flag(name: str) -> bool:
            value = query.get(name, "false").lower()
            if value not in ("true", "false", "1", "0", ""):
                raise LogOptionsError(f"{name} must be true or false")
            return value in ("true", "1")

        def number(name: str, minimum: int) -> int | None:
            raw = query.get(name)
            if raw is None or raw == "":
                return None
            try:
                value = int(raw)
            except ValueError as exc:
                raise LogOptionsError(f"{name} must be an integer") from exc
            if value < minimum:
                raise LogOptionsError(f"{name} must be at least {minimum}")
            return value

        since_time = None
        since_seconds = number("sinceSeconds", 1)
        if query.get("sinceTime"):
            if since_seconds is not None:
                raise LogOptionsError("at most one of sinceTime or sinceSeconds may be specified")
            since_time = parse_rfc3339(query["sinceTime"])
        elif since_seconds is not None:
            since_time = (now or dt.datetime.now(dt.UTC)) - dt.timedelta(seconds=since_seconds)
        tail = number("tailLines", 0)
        return cls(
            follow=flag("follow"),
            previous=flag("previous"),
            timestamps=flag("timestamps"),
            tail_lines=tail,
            limit_bytes=number("limitBytes", 1),
            since_time=since_time,
        )


@dataclass(frozen=True)
class LogRecord:
    timestamp: bytes  # as written (RFC3339Nano); b"" for a malformed record
    stream: bytes
    partial: bool
    message: bytes  # without the record's newline

    def time(self) -> dt.datetime | None:
        if not self.timestamp:
            return None
        try:
            return parse_rfc3339(self.timestamp.decode("ascii"))
        except (LogOptionsError, UnicodeDecodeError):
            return None


def parse_record(line: bytes) -> LogRecord:
    """One line of a CRI log file (without its newline)."""
    parts = line.split(b" ", 3)
    if len(parts) >= 3 and parts[1] in _STREAMS and parts[2] in (b"P", b"F"):
        return LogRecord(
            timestamp=parts[0],
            stream=parts[1],
            partial=parts[2] == b"P",
            message=parts[3] if len(parts) == 4 else b"",
        )
    # An older format had no tag; anything else is passed through.
    if len(parts) >= 2 and parts[1] in _STREAMS:
        message = line.split(b" ", 2)[2] if len(parts) >= 3 else b""
        return LogRecord(timestamp=parts[0], stream=parts[1], partial=False, message=message)
    return LogRecord(timestamp=b"", stream=b"stdout", partial=False, message=line)


def format_record(record: LogRecord, *, timestamps: bool, line_start: bool) -> bytes:
    """What ``kubectl logs`` shows for one record; ``line_start`` says whether it begins a
    logical line (only those get the timestamp prefix)."""
    prefix = record.timestamp + b" " if timestamps and line_start and record.timestamp else b""
    return prefix + record.message + (b"" if record.partial else b"\n")


def _is_partial(line: bytes) -> bool:
    """Whether a record (without its newline) is a ``P`` record; cheap, no parsing."""
    parts = line.split(b" ", 3)
    return len(parts) >= 3 and parts[2] == b"P" and parts[1] in _STREAMS


def _format_lines(lines: list[bytes], options: LogOptions, line_start: bool) -> tuple[bytes, bool]:
    """Output for complete records; returns it and whether the next record starts a line."""
    if not lines:
        return b"", line_start
    if not options.timestamps and options.since_time is None:
        # The common case, without building a LogRecord per line.
        plain: list[bytes] = []
        for line in lines:
            parts = line.split(b" ", 3)
            if len(parts) >= 3 and parts[1] in _STREAMS and parts[2] in (b"F", b"P"):
                message = parts[3] if len(parts) == 4 else b""
                plain.append(message + b"\n" if parts[2] == b"F" else message)
            else:
                record = parse_record(line)
                plain.append(format_record(record, timestamps=False, line_start=True))
        return b"".join(plain), not _is_partial(lines[-1])
    out: list[bytes] = []
    since = options.since_time
    for line in lines:
        record = parse_record(line)
        if since is not None:
            when = record.time()
            if when is not None and when < since:
                line_start = not record.partial
                continue
            if when is not None:
                since = None  # records are in time order: the rest are all later
        out.append(format_record(record, timestamps=options.timestamps, line_start=line_start))
        line_start = not record.partial
    return b"".join(out), line_start


def _tail_offset(handle: BinaryIO, tail_lines: int) -> int:
    """Offset of the first record of the last ``tail_lines`` logical lines (blocking).

    Walks records backwards from the end, block by block, so a long log costs only what is
    shown. A logical line starts right after an ``F`` record, so the answer is the offset just
    past the (``tail_lines`` + 1)-th ``F`` record from the end, or 0. A last record with no
    newline yet is still being written and does not count."""
    handle.seek(0, os.SEEK_END)
    position = handle.tell()  # buffer holds the file from here to record_end (+1)
    buffer = b""
    record_end: int | None = None  # offset of the newline ending the record being looked at
    full_records = 0
    while True:
        upper = record_end - position if record_end is not None else len(buffer)
        newline = buffer.rfind(b"\n", 0, upper)
        if newline < 0 and position > 0:
            step = min(READ_CHUNK_BYTES, position)
            position -= step
            handle.seek(position)
            buffer = handle.read(step) + buffer
            continue
        if record_end is None:  # the newline ending the last complete record
            if newline < 0:
                return 0
            record_end = position + newline
            if tail_lines == 0:
                return record_end + 1
            buffer = buffer[:newline]
            continue
        record = buffer[newline + 1 : record_end - position]
        if not _is_partial(record):
            full_records += 1
            if full_records == tail_lines + 1:
                return record_end + 1
        if newline < 0:
            return 0
        record_end = position + newline
        buffer = buffer[:newline]


def _open(path: str, options: LogOptions) -> tuple[BinaryIO, int]:
    handle = open(path, "rb")  # closed by read_log
    try:
        if options.tail_lines is not None:
            handle.seek(_tail_offset(handle, options.tail_lines))
        inode = os.fstat(handle.fileno()).st_ino
    except BaseException:
        handle.close()
        raise
    return handle, inode


def _rotated(path: str, inode: int) -> bool:
    try:
        return os.stat(path).st_ino != inode
    except FileNotFoundError:
        return False


class _Cursor:
    """Reading position in one log file plus the parse state across chunks (blocking)."""

    def __init__(self, handle: BinaryIO, options: LogOptions) -> None:
        self.handle = handle
        self.options = options
        self.pending = b""  # a record without its newline yet
        self.line_start = True

    def next_output(self) -> bytes | None:
        """Formatted output of the next chunk of the file; None at its current end."""
        chunk = self.handle.read(READ_CHUNK_BYTES)
        if not chunk:
            return None
        lines = (self.pending + chunk).split(b"\n")
        self.pending = lines.pop()
        out, self.line_start = _format_lines(lines, self.options, self.line_start)
        return out

    def at_end(self) -> bool:
        """True if nothing is left to read (the read position is the file's size)."""
        return self.handle.tell() >= os.fstat(self.handle.fileno()).st_size


async def read_log(
    path: str,
    options: LogOptions,
    write: Callable[[bytes], Awaitable[None]],
    *,
    is_running: Callable[[], Awaitable[bool]] | None = None,
) -> None:
    """Stream the log file at ``path`` to ``write`` as ``options`` say (see the module doc).
    Reading and parsing run in a thread, chunk by chunk.

    Raises ``FileNotFoundError`` when there is no log file."""
    handle, inode = await asyncio.to_thread(_open, path, options)
    cursor = _Cursor(handle, options)
    remaining = options.limit_bytes
    loop = asyncio.get_running_loop()
    last_check = loop.time()
    try:
        while True:
            out = await asyncio.to_thread(cursor.next_output)
            if out is not None:
                if not out:
                    continue
                if remaining is not None:
                    if len(out) >= remaining:
                        await write(out[:remaining])
                        return
                    remaining -= len(out)
                await write(out)
                continue
            if not options.follow:
                return
            if await asyncio.to_thread(_rotated, path, inode):
                await asyncio.to_thread(cursor.handle.close)
                cursor.handle = await asyncio.to_thread(open, path, "rb")
                inode = (await asyncio.to_thread(os.fstat, cursor.handle.fileno())).st_ino
                cursor.pending = b""
                continue
            if is_running is not None and loop.time() - last_check >= RUNNING_CHECK_INTERVAL_S:
                last_check = loop.time()
                # Stopped, and everything it wrote before stopping has been read: done.
                if not await is_running() and await asyncio.to_thread(cursor.at_end):
                    return
                continue
            await asyncio.sleep(FOLLOW_POLL_INTERVAL_S)
    finally:
        await asyncio.to_thread(cursor.handle.close)
