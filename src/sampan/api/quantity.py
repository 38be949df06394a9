"""Resource quantities (``500m``, ``1Gi``, ``2e3``) as exact Decimals.

``parse_quantity`` accepts upstream's grammar: a signed decimal number followed by a binary
suffix (Ki Mi Gi Ti Pi Ei), a decimal SI suffix (n u m "" k M G T P E) or a decimal exponent
(``e3``/``E-2``). It raises ``QuantityError`` with upstream's message for anything else.
Comparisons and sums (requests vs limits, scheduling fit) use the returned Decimal.

``format_canonical`` is upstream's ``Quantity.String()`` for a value in a given format
(``BinarySI``, ``DecimalSI``, ``DecimalExponent``): nine decimal places at most (finer values
round up), binary suffixes only for whole values of at least 1024, SI suffixes for exponents
that are multiples of three. ``canonical_quantity`` respells a quantity string that way. Every
component that writes a quantity (node capacity, metrics, HPA status, quota messages, printed
columns) uses these two, so one value always has one spelling.
"""

from __future__ import annotations

import math
import re
from decimal import ROUND_UP, Decimal, InvalidOperation, localcontext
from typing import Any, Literal

__all__ = [
    "BINARY_SI",
    "DECIMAL_EXPONENT",
    "DECIMAL_SI",
    "QuantityError",
    "canonical_quantity",
    "format_canonical",
    "format_quantity",
    "milli_value",
    "parse_quantity",
    "quantity_or_none",
]

BINARY_SI = "BinarySI"
DECIMAL_SI = "DecimalSI"
DECIMAL_EXPONENT = "DecimalExponent"
QuantityFormat = Literal["BinarySI", "DecimalSI", "DecimalExponent"]

_QUANTITY_RE = re.compile(
    r"^(?P<num>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
    r"(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?$"
)

_MULTIPLIERS: dict[str, Decimal] = {
    "": Decimal(1),
    "Ki": Decimal(1024),
    "Mi": Decimal(1024) ** 2,
    "Gi": Decimal(1024) ** 3,
    "Ti": Decimal(1024) ** 4,
    "Pi": Decimal(1024) ** 5,
    "Ei": Decimal(1024) ** 6,
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}

QUANTITY_FORMAT_ERROR = "quantities must match the regular expression " + (
    "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
)


class QuantityError(ValueError):
    pass


def parse_quantity(value: str | int | float) -> Decimal:
    """Parse a quantity string (or a bare JSON number) into an exact Decimal."""
    if isinstance(value, bool):
        raise QuantityError(QUANTITY_FORMAT_ERROR)
    if isinstance(value, int | float):
        return Decimal(str(value))
    m = _QUANTITY_RE.match(value.strip()) if isinstance(value, str) else None
    if m is None:
        raise QuantityError(QUANTITY_FORMAT_ERROR)
    try:
        number = Decimal(m.group("num"))
    except InvalidOperation as err:
        raise QuantityError(QUANTITY_FORMAT_ERROR) from err
    suffix = m.group("suffix") or ""
    if suffix[:1] in ("e", "E"):
        return number.scaleb(int(suffix[1:]))
    return number * _MULTIPLIERS[suffix]


def quantity_or_none(value: Any) -> Decimal | None:
    """``parse_quantity(value)``, or None when ``value`` is absent or not a quantity."""
    try:
        return parse_quantity(value)
    except QuantityError:
        return None


def milli_value(value: str | int | float | Decimal) -> int:
    """``Quantity.MilliValue()``: thousandths, rounded up (``"0.1m"`` -> 1, ``"1.5"`` -> 1500).
    ``value`` is a quantity string or an already parsed Decimal; raises ``QuantityError``."""
    number = value if isinstance(value, Decimal) else parse_quantity(value)
    return math.ceil(number * 1000)


def format_quantity(value: Decimal) -> str:
    """A plain decimal rendering (``0.5``, ``1073741824``), used in messages."""
    normalized = value.normalize()
    text = format(normalized, "f")
    return text


_BINARY_SUFFIXES = ("", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei")
_DECIMAL_SUFFIXES = {-9: "n", -6: "u", -3: "m", 0: "", 3: "k", 6: "M", 9: "G", 12: "T", 15: "P"}
_DECIMAL_SUFFIXES[18] = "E"
#: Quantities keep nine decimal places; finer values round up (as ParseQuantity does).
QUANTITY_MIN_EXPONENT = -9
#: Enough significant digits for any quantity kube accepts (up to ~1e27 with 9 decimals).
QUANTITY_DECIMAL_PRECISION = 60


def _suffix_format(suffix: str) -> QuantityFormat:
    if suffix.endswith("i"):
        return "BinarySI"
    if len(suffix) > 1 and suffix[0] in ("e", "E"):  # "E" alone is exa
        return "DecimalExponent"
    return "DecimalSI"


def canonical_quantity(text: str) -> str | None:
    """The canonical spelling of a quantity ("1.5Gi" -> "1536Mi", "1000m" -> "1"), or None
    when ``text`` is not a quantity. The format comes from the suffix, as upstream keeps it.
    """
    match = _QUANTITY_RE.match(text.strip())
    if match is None:
        return None
    suffix = match.group("suffix") or ""
    with localcontext(prec=QUANTITY_DECIMAL_PRECISION):
        number = Decimal(match.group("num"))
        if suffix[:1] in ("e", "E") and len(suffix) > 1:
            value = number.scaleb(int(suffix[1:]))
        else:
            value = number * _MULTIPLIERS[suffix]
        return format_canonical(value, _suffix_format(suffix))


def format_canonical(value: Decimal | int, fmt: QuantityFormat = "DecimalSI") -> str:
    """``Quantity.String()`` of ``value`` in format ``fmt`` (see the module docstring)."""
    with localcontext(prec=QUANTITY_DECIMAL_PRECISION):
        value = Decimal(value).quantize(Decimal(1).scaleb(QUANTITY_MIN_EXPONENT), ROUND_UP)
        if value == 0:
            return "0"
        if fmt == "BinarySI" and abs(value) >= 1024 and value == value.to_integral_value():
            mantissa = int(value)
            power = 0
            while mantissa % 1024 == 0 and power < len(_BINARY_SUFFIXES) - 1:
                mantissa //= 1024
                power += 1
            return f"{mantissa}{_BINARY_SUFFIXES[power]}"
        sign, digits, exponent = value.normalize().as_tuple()
        mantissa = int("".join(str(d) for d in digits)) * (-1 if sign else 1)
        exponent = int(exponent)
        shift = exponent % 3
        mantissa *= 10**shift
        exponent -= shift
        if fmt != "DecimalExponent" and exponent in _DECIMAL_SUFFIXES:
            return f"{mantissa}{_DECIMAL_SUFFIXES[exponent]}"
        return f"{mantissa}e{exponent}" if exponent else str(mantissa)
