"""Resource quantities (``500m``, ``1Gi``, ``2e3``) as exact Decimals.

``parse_quantity`` accepts upstream's grammar: a signed decimal number followed by a binary
suffix (Ki Mi Gi Ti Pi Ei), a decimal SI suffix (n u m "" k M G T P E) or a decimal exponent
(``e3``/``E-2``). It raises ``QuantityError`` with upstream's message for anything else.
Comparisons and sums (requests vs limits, scheduling fit) use the returned Decimal.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

__all__ = ["QuantityError", "format_quantity", "parse_quantity"]

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


def format_quantity(value: Decimal) -> str:
    """A plain decimal rendering (``0.5``, ``1073741824``), used in messages."""
    normalized = value.normalize()
    text = format(normalized, "f")
    return text
