"""api.quantity's shared formatting: Quantity.String() per format and MilliValue()."""

from __future__ import annotations

from decimal import Decimal

import pytest

from sampan.api.quantity import (
    BINARY_SI,
    DECIMAL_EXPONENT,
    DECIMAL_SI,
    QuantityError,
    format_canonical,
    milli_value,
)


@pytest.mark.parametrize(
    ("value", "fmt", "expected"),
    [
        (Decimal(0), BINARY_SI, "0"),
        (Decimal(1000), BINARY_SI, "1k"),  # below 1024 a binary value prints as decimal SI
        (Decimal(1023), BINARY_SI, "1023"),
        (Decimal(1024), BINARY_SI, "1Ki"),
        (Decimal(1234 * 1024), BINARY_SI, "1234Ki"),
        (Decimal(20 * 1024**2), BINARY_SI, "20Mi"),
        (Decimal(8 * 1024**3), BINARY_SI, "8Gi"),
        (Decimal(1025), BINARY_SI, "1025"),
        (Decimal("1536.5"), BINARY_SI, "1536500m"),  # not whole: decimal SI
        (Decimal(-2048), BINARY_SI, "-2Ki"),
        (Decimal("0.4"), DECIMAL_SI, "400m"),
        (Decimal("3.9"), DECIMAL_SI, "3900m"),
        (Decimal(1000), DECIMAL_SI, "1k"),
        (Decimal(1500), DECIMAL_SI, "1500"),
        (Decimal(110), DECIMAL_SI, "110"),
        (Decimal("1e21"), DECIMAL_SI, "1e21"),  # past exa: an exponent
        (Decimal("1e-10"), DECIMAL_SI, "1n"),  # nine decimals, rounded up
        (Decimal(1000), DECIMAL_EXPONENT, "1e3"),
        (5, DECIMAL_SI, "5"),
    ],
)
def test_format_canonical(value: Decimal, fmt: str, expected: str) -> None:
    assert format_canonical(value, fmt) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "expected"),
    [("100m", 100), ("1.5", 1500), ("0.1m", 1), ("2", 2000), (Decimal("0.0001"), 1), (3, 3000)],
)
def test_milli_value_rounds_up(value: str | int | Decimal, expected: int) -> None:
    assert milli_value(value) == expected


def test_milli_value_refuses_malformed() -> None:
    with pytest.raises(QuantityError):
        milli_value("1.5x")
