"""Container logs as the kubelet serves them: the CRI log file format and its options.

The runtime writes each container's output to a file, one record per line::

    <RFC3339Nano time> <stdout|stderr> <P|F> <message>

``P`` marks a partial record (a long line split by the runtime; the next records continue
it), ``F`` a full one that ends the logical line. ``read_log`` turns such a file into what
``kubectl logs`` shows, honouring ``LogOptions`` (the query of ``/containerLogs``): the last
``tail_lines`` lines, only lines since a time, a timestamp prefix, a byte limit, and
``follow``, which keeps reading as the file grows until the container stops.

Invariants:

* file reads run in a thread, in chunks of ``READ_CHUNK_BYTES``: a large log is streamed,
  never read whole; ``tail_lines`` scans the file once (in the thread) for line offsets;
* a malformed record is passed through as-is rather than dropped (the file may have been
  written by another runtime version);
* ``limit_bytes`` cuts the output at exactly that many bytes;
* ``follow`` notices a rotated file (a new inode at the path) and continues in it; it ends
  when the container is no longer running and the file has been read to its end.
"""

from __future__ import annotations

import asyncio
import collections
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


def _tail_offset(handle: BinaryIO, tail_lines: int) -> int:
    """Offset of the first record of the last ``tail_lines`` logical lines (blocking)."""
    starts: collections.deque[int] = collections.deque(maxlen=max(tail_lines, 1))
    offset = 0
    line_start = True
    handle.seek(0)
    for line in handle:
        if not line.endswith(b"\n"):
            break  # a record still being written: not a line yet
        if line_start:
            starts.append(offset)
        offset += len(line)
        line_start = not parse_record(line[:-1]).partial
    if tail_lines == 0 or not starts:
        return offset
    return starts[0]


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


async def read_log(
    path: str,
    options: LogOptions,
    write: Callable[[bytes], Awaitable[None]],
    *,
    is_running: Callable[[], Awaitable[bool]] | None = None,
) -> None:
    """Stream the log file at ``path`` to ``write`` as ``options`` say (see the module doc).

    Raises ``FileNotFoundError`` when there is no log file."""
    handle, inode = await asyncio.to_thread(_open, path, options)
    remaining = options.limit_bytes
    pending = b""  # a record without its newline yet
    line_start = True
    loop = asyncio.get_running_loop()
    last_check = loop.time()
    try:
        while True:
            chunk = await asyncio.to_thread(handle.read, READ_CHUNK_BYTES)
            if chunk:
                data = pending + chunk
                lines = data.split(b"\n")
                pending = lines.pop()
                out = bytearray()
                for line in lines:
                    record = parse_record(line)
                    if options.since_time is not None:
                        when = record.time()
                        if when is not None and when < options.since_time:
                            line_start = not record.partial
                            continue
                    out += format_record(
                        record, timestamps=options.timestamps, line_start=line_start
                    )
                    line_start = not record.partial
                if out:
                    if remaining is not None:
                        if len(out) >= remaining:
                            await write(bytes(out[:remaining]))
                            return
                        remaining -= len(out)
                    await write(bytes(out))
                continue
            if not options.follow:
                return
            if await asyncio.to_thread(_rotated, path, inode):
                handle.close()
                handle = await asyncio.to_thread(open, path, "rb")
                inode = (await asyncio.to_thread(os.fstat, handle.fileno())).st_ino
                pending = b""
                continue
            if is_running is not None and loop.time() - last_check >= RUNNING_CHECK_INTERVAL_S:
                last_check = loop.time()
                if not await is_running():
                    # One last read: output written just before the exit.
                    tail = await asyncio.to_thread(handle.read)
                    if not tail:
                        return
                    await asyncio.to_thread(handle.seek, -len(tail), os.SEEK_CUR)
                    continue
            await asyncio.sleep(FOLLOW_POLL_INTERVAL_S)
    finally:
        await asyncio.to_thread(handle.close)
