"""Cron schedules for CronJobs: the standard five-field syntax plus ``@hourly``-style macros.

``@every <duration>`` (Go duration syntax, e.g. ``@every 1h30m``) is a constant delay, as in
the Go library. ``parse_schedule(text) -> Schedule`` raises ``CronError`` (worded like the Go
cron library kube-apiserver uses) for an unparseable schedule; ``Schedule.next_after(dt)`` gives
the next activation strictly after ``dt`` (naive or aware datetimes; seconds are truncated).
Day of month and day of week combine as in Vixie cron: if both are restricted, either may match.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

__all__ = ["CronError", "Schedule", "parse_schedule"]

_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTHS = {
    m: i + 1 for i, m in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split())
}
_DAYS = {d: i for i, d in enumerate("sun mon tue wed thu fri sat".split())}
# (low, high, names)
_FIELDS: tuple[tuple[int, int, dict[str, int]], ...] = (
    (0, 59, {}),
    (0, 23, {}),
    (1, 31, {}),
    (1, 12, _MONTHS),
    (0, 6, _DAYS),
)
_MAX_SEARCH_MINUTES = 366 * 24 * 60 * 5


class CronError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Schedule:
    minutes: frozenset[int]
    hours: frozenset[int]
    days_of_month: frozenset[int]
    months: frozenset[int]
    days_of_week: frozenset[int]
    dom_star: bool
    dow_star: bool
    every_s: int = 0  # ``@every``: a constant delay instead of the fields

    def matches(self, dt: datetime) -> bool:
        if self.every_s:
            return False
        if dt.minute not in self.minutes or dt.hour not in self.hours:
            return False
        if dt.month not in self.months:
            return False
        dom = dt.day in self.days_of_month
        dow = (dt.isoweekday() % 7) in self.days_of_week
        if self.dom_star or self.dow_star:
            return dom and dow
        return dom or dow

    def next_after(self, dt: datetime) -> datetime | None:
        """The first matching minute strictly after ``dt`` (None if none within 5 years)."""
        if self.every_s:
            return dt.replace(microsecond=0) + timedelta(seconds=self.every_s)
        t = dt.replace(second=0, microsecond=0) + timedelta(minutes=1)
        for _ in range(_MAX_SEARCH_MINUTES):
            if t.month not in self.months:
                # jump to the first day of next month
                year, month = (t.year + 1, 1) if t.month == 12 else (t.year, t.month + 1)
                t = t.replace(year=year, month=month, day=1, hour=0, minute=0)
                continue
            if not self._day_ok(t):
                t = (t + timedelta(days=1)).replace(hour=0, minute=0)
                continue
            if t.hour not in self.hours:
                t = (t + timedelta(hours=1)).replace(minute=0)
                continue
            if t.minute not in self.minutes:
                t += timedelta(minutes=1)
                continue
            return t
        return None

    def _day_ok(self, t: datetime) -> bool:
        dom = t.day in self.days_of_month
        dow = (t.isoweekday() % 7) in self.days_of_week
        if self.dom_star or self.dow_star:
            return dom and dow
        return dom or dow


def _value(text: str, names: dict[str, int], low: int, high: int) -> int:
    lowered = text.lower()
    if lowered in names:
        return names[lowered]
    if not text.isdigit():
        raise CronError(
            f"failed to parse int from {text}: strconv.Atoi: parsing {text!r}: invalid syntax"
        )
    return int(text)


def _parse_field(text: str, low: int, high: int, names: dict[str, int]) -> tuple[set[int], bool]:
    values: set[int] = set()
    star = False
    for part in text.split(","):
        range_part, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit():
                raise CronError(
                    f"failed to parse int from {step_text}: strconv.Atoi: parsing "
                    f"{step_text!r}: invalid syntax"
                )
            step = int(step_text)
            if step == 0:
                raise CronError(f"step of range should be a positive number: {part}")
        if range_part in ("*", "?"):
            start, end = low, high
            star = star or not step_text
        else:
            lo_text, dash, hi_text = range_part.partition("-")
            start = _value(lo_text, names, low, high)
            end = _value(hi_text, names, low, high) if dash else (high if step_text else start)
        if start < low:
            raise CronError(f"beginning of range ({start}) below minimum ({low}): {part}")
        if end > high:
            raise CronError(f"end of range ({end}) above maximum ({high}): {part}")
        if start > end:
            raise CronError(f"beginning of range ({start}) beyond end of range ({end}): {part}")
        values.update(range(start, end + 1, step))
    return values, star


_DURATION_PART = re.compile(r"([0-9]*\.?[0-9]+)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS_S = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def _every(text: str) -> Schedule:
    pos, total_s = 0, 0.0
    while pos < len(text):
        m = _DURATION_PART.match(text, pos)
        if m is None:
            raise CronError(
                f'failed to parse duration @every {text}: time: invalid duration "{text}"'
            )
        total_s += float(m.group(1)) * _DURATION_UNITS_S[m.group(2)]
        pos = m.end()
    if not text:
        raise CronError(f'failed to parse duration @every {text}: time: invalid duration ""')
    empty: frozenset[int] = frozenset()
    # The Go library rounds delays below a second up to one second.
    return Schedule(empty, empty, empty, empty, empty, False, False, every_s=max(1, int(total_s)))


def parse_schedule(text: str) -> Schedule:
    spec = text.strip()
    if not spec:
        raise CronError("empty spec string")
    if spec.startswith("@"):
        if spec.startswith("@every "):
            return _every(spec[len("@every ") :].strip())
        if spec not in _MACROS:
            raise CronError(f"unrecognized descriptor: {spec}")
        spec = _MACROS[spec]
    fields = spec.split()
    if len(fields) != 5:
        raise CronError(f"expected exactly 5 fields, found {len(fields)}: [{' '.join(fields)}]")
    parsed = []
    stars = []
    for text_field, (low, high, names) in zip(fields, _FIELDS, strict=True):
        values, star = _parse_field(text_field, low, high, names)
        parsed.append(frozenset(values))
        stars.append(star)
    dow = parsed[4]
    return Schedule(
        minutes=parsed[0],
        hours=parsed[1],
        days_of_month=parsed[2],
        months=parsed[3],
        days_of_week=dow,
        dom_star=stars[2],
        dow_star=stars[4],
    )
