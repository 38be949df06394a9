"""Quantities and cron schedules (used by validation, the scheduler and the CronJob controller)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import pytest

from sampan.api.cron import CronError, parse_schedule
from sampan.api.quantity import QuantityError, parse_quantity


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("500m", Decimal("0.5")),
        ("1", Decimal(1)),
        ("1.5", Decimal("1.5")),
        ("1Ki", Decimal(1024)),
        ("1Gi", Decimal(1024**3)),
        ("2k", Decimal(2000)),
        ("1e3", Decimal(1000)),
        ("100M", Decimal(100_000_000)),
        (2, Decimal(2)),
    ],
)
def test_parse_quantity(text: str | int, value: Decimal) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "abc", "1.2.3", "5 Gi", "1KiB"])
def test_bad_quantities(text: str) -> None:
    with pytest.raises(QuantityError):
        parse_quantity(text)


def test_cron_next_activation() -> None:
    every_quarter_hour_on_weekdays = parse_schedule("*/15 9-17 * * mon-fri")
    saturday_noon = datetime(2024, 1, 6, 12, 0)
    assert every_quarter_hour_on_weekdays.next_after(saturday_noon) == datetime(2024, 1, 8, 9, 0)
    assert parse_schedule("@hourly").next_after(datetime(2024, 1, 1, 0, 30)) == datetime(
        2024, 1, 1, 1, 0
    )
    assert parse_schedule("0 0 29 2 *").next_after(datetime(2024, 3, 1)) == datetime(
        2028, 2, 29, 0, 0
    )
    assert parse_schedule("@every 1h30m").next_after(datetime(2024, 1, 1, 0, 0)) == datetime(
        2024, 1, 1, 1, 30
    )
    # day of month and day of week both restricted: either matches (Vixie cron)
    assert parse_schedule("0 0 1 * sun").next_after(datetime(2024, 1, 1, 0, 0)) == datetime(
        2024, 1, 7, 0, 0
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("* * * *", "expected exactly 5 fields, found 4: [* * * *]"),
        ("61 * * * *", "end of range (61) above maximum (59): 61"),
        ("@often", "unrecognized descriptor: @often"),
        ("@every 5x", 'failed to parse duration @every 5x: time: invalid duration "5x"'),
        ("*/0 * * * *", "step of range should be a positive number: */0"),
    ],
)
def test_cron_errors(text: str, message: str) -> None:
    with pytest.raises(CronError) as info:
        parse_schedule(text)
    assert str(info.value) == message
