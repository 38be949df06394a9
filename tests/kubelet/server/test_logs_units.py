"""CRI log format parsing and the /containerLogs options, on files written by the test."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from sampan.kubelet.server.logs import (
    LogOptions,
    LogOptionsError,
    format_record,
    parse_record,
    parse_rfc3339,
    read_log,
)

LOG = (
    b"2024-01-01T00:00:01.000000001Z stdout F one\n"
    b"2024-01-01T00:00:02.000000002Z stderr F two\n"
    b"2024-01-01T00:00:03.5Z stdout P thr\n"
    b"2024-01-01T00:00:03.6Z stdout F ee\n"
    b"2024-01-01T00:00:04Z stdout F \n"
    b"2024-01-01T00:00:05Z stdout F five\n"
)


async def _read(path: Path, options: LogOptions) -> bytes:
    out = bytearray()

    async def write(data: bytes) -> None:
        out.extend(data)

    await read_log(str(path), options, write)
    return bytes(out)


@pytest.fixture
def log_file(tmp_path: Path) -> Path:
    path = tmp_path / "0.log"
    path.write_bytes(LOG)
    return path


def test_parse_record_fields() -> None:
    record = parse_record(b"2024-01-01T00:00:03.5Z stderr P a b  c")
    assert record.stream == b"stderr" and record.partial and record.message == b"a b  c"
    assert record.time() == dt.datetime(2024, 1, 1, 0, 0, 3, 500000, tzinfo=dt.UTC)
    empty = parse_record(b"2024-01-01T00:00:04Z stdout F")
    assert empty.message == b"" and not empty.partial
    garbage = parse_record(b"not a cri line")
    assert garbage.message == b"not a cri line" and garbage.timestamp == b""


def test_format_record_timestamps_only_at_line_start() -> None:
    partial = parse_record(b"2024-01-01T00:00:03.5Z stdout P thr")
    rest = parse_record(b"2024-01-01T00:00:03.6Z stdout F ee")
    assert format_record(partial, timestamps=True, line_start=True) == b"2024-01-01T00:00:03.5Z thr"
    assert format_record(rest, timestamps=True, line_start=False) == b"ee\n"


def test_parse_rfc3339_nanoseconds_and_offsets() -> None:
    assert parse_rfc3339("2024-01-01T00:00:01.123456789Z").microsecond == 123456
    assert parse_rfc3339("2024-01-01T02:00:00+02:00") == parse_rfc3339("2024-01-01T00:00:00Z")
    with pytest.raises(LogOptionsError):
        parse_rfc3339("yesterday")


def test_options_from_query() -> None:
    now = dt.datetime(2024, 1, 1, 0, 0, 10, tzinfo=dt.UTC)
    options = LogOptions.from_query(
        {"follow": "true", "tailLines": "2", "sinceSeconds": "5", "limitBytes": "10"}, now=now
    )
    assert options.follow and options.tail_lines == 2 and options.limit_bytes == 10
    assert options.since_time == dt.datetime(2024, 1, 1, 0, 0, 5, tzinfo=dt.UTC)
    for bad in (
        {"tailLines": "-1"},
        {"limitBytes": "0"},
        {"follow": "maybe"},
        {"sinceSeconds": "1", "sinceTime": "2024-01-01T00:00:00Z"},
    ):
        with pytest.raises(LogOptionsError):
            LogOptions.from_query(bad)


async def test_whole_log_joins_partial_records(log_file: Path) -> None:
    assert await _read(log_file, LogOptions()) == b"one\ntwo\nthree\n\nfive\n"


async def test_tail_lines_counts_logical_lines(log_file: Path) -> None:
    assert await _read(log_file, LogOptions(tail_lines=3)) == b"three\n\nfive\n"
    assert await _read(log_file, LogOptions(tail_lines=0)) == b""
    assert await _read(log_file, LogOptions(tail_lines=100)) == b"one\ntwo\nthree\n\nfive\n"


async def test_since_time_timestamps_and_limit(log_file: Path) -> None:
    since = parse_rfc3339("2024-01-01T00:00:04Z")
    assert await _read(log_file, LogOptions(since_time=since)) == b"\nfive\n"
    stamped = await _read(log_file, LogOptions(timestamps=True, tail_lines=1))
    assert stamped == b"2024-01-01T00:00:05Z five\n"
    assert await _read(log_file, LogOptions(limit_bytes=6)) == b"one\ntw"


async def test_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        await _read(tmp_path / "nope.log", LogOptions())


async def test_follow_ends_when_the_container_stops(log_file: Path) -> None:
    out = bytearray()
    calls = 0

    async def write(data: bytes) -> None:
        out.extend(data)

    async def is_running() -> bool:
        nonlocal calls
        calls += 1
        if calls == 1:  # the container writes one more record, then exits
            with log_file.open("ab") as handle:
                handle.write(b"2024-01-01T00:00:06Z stdout F six\n")
            return True
        return False

    await read_log(
        str(log_file), LogOptions(follow=True, tail_lines=1), write, is_running=is_running
    )
    assert bytes(out) == b"five\nsix\n"


def _reference(records: list[tuple[str, bytes]]) -> list[bytes]:
    """Logical lines of (tag, message) records, the naive way."""
    lines, current = [], b""
    for tag, message in records:
        current += message
        if tag == "F":
            lines.append(current + b"\n")
            current = b""
    return lines


@pytest.mark.parametrize("tail", [0, 1, 2, 7, 500, 5000])
async def test_tail_and_partials_across_read_chunks(tmp_path: Path, tail: int) -> None:
    # Long enough to span several read chunks, with partial records, empty messages, and
    # a last record still being written (no newline).
    records = []
    for i in range(3000):
        if i % 7 == 3:
            records += [("P", b"x" * 50), ("P", b""), ("F", b"end%d" % i)]
        else:
            records.append(("F", b"line %d" % i if i % 11 else b""))
    path = tmp_path / "big.log"
    body = b"".join(
        b"2024-01-01T00:00:00.%09dZ stdout %s %s\n" % (n, tag.encode(), message)
        for n, (tag, message) in enumerate(records)
    )
    path.write_bytes(body + b"2024-01-01T00:00:01Z stdout F unfinished")
    assert len(body) > 2 * 64 * 1024
    expected = _reference(records)
    expected = expected[max(len(expected) - tail, 0) :] if tail else []
    assert await _read(path, LogOptions(tail_lines=tail)) == b"".join(expected)
