"""The storage layer's seam to ``sampan.api``: selectors, field sets, strategy and conversion.

The storage layer calls the kinds-as-data package only through this module, so what it relies
on is written down in one place: ``labels.parse_selector``, ``fields.parse_field_selector`` /
``check_supported`` / ``field_set``, the ``strategy`` hooks and ``conversion.convert``.

Selectors may be given to the store already parsed (anything with ``matches``; the HTTP layer
parses them) or as text; text is parsed here. Either way a field selector is checked against
the kind's supported fields, and every selector error is a 400 BadRequest worded as
kube-apiserver words it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from sampan.api import conversion, fields, labels, strategy
from sampan.api.errors import BadRequest, Cause
from sampan.api.labels import SelectorError
from sampan.api.resources import ResourceInfo

__all__ = [
    "Matcher",
    "convert",
    "field_matcher",
    "field_set",
    "label_matcher",
    "strategy_default",
    "strategy_prepare_for_create",
    "strategy_prepare_for_status_update",
    "strategy_prepare_for_subresource_update",
    "strategy_prepare_for_update",
    "strategy_validate",
    "strategy_validate_status_update",
    "strategy_validate_subresource_update",
    "strategy_validate_update",
]

JSONObj = dict[str, Any]


class Matcher(Protocol):
    def matches(self, values: Mapping[str, str], /) -> bool: ...


def _selects_everything(selector: object) -> bool:
    return bool(getattr(selector, "empty", False))


def label_matcher(selector: object) -> Matcher | None:
    """A matcher for ``labelSelector`` (text or parsed), or None when it selects everything."""
    if selector is None or selector == "":
        return None
    if isinstance(selector, str):
        try:
            selector = labels.parse_selector(selector)
        except SelectorError as e:
            raise BadRequest(str(e)) from e
    return None if _selects_everything(selector) else selector  # type: ignore[return-value]


def field_matcher(selector: object, info: ResourceInfo) -> Matcher | None:
    """A matcher for ``fieldSelector`` (text or parsed), or None when it selects everything.
    A field the kind does not support is a 400."""
    if selector is None or selector == "":
        return None
    try:
        if isinstance(selector, str):
            selector = fields.parse_field_selector(selector)
        if isinstance(selector, fields.FieldSelector):
            selector = fields.check_supported(info, selector)
    except SelectorError as e:
        raise BadRequest(str(e)) from e
    return None if _selects_everything(selector) else selector  # type: ignore[return-value]


def field_set(info: ResourceInfo, obj: JSONObj) -> dict[str, str]:
    return fields.field_set(info, obj)


def convert(info_from: ResourceInfo, obj: JSONObj, info_to: ResourceInfo) -> JSONObj:
    if info_from.api_version == info_to.api_version and info_from.kind == info_to.kind:
        return obj
    return conversion.convert(info_from, obj, info_to)


def strategy_default(info: ResourceInfo, obj: JSONObj) -> None:
    strategy.default(info, obj)


def strategy_prepare_for_create(
    info: ResourceInfo, obj: JSONObj, requester: Mapping[str, Any] | None = None
) -> None:
    strategy.prepare_for_create(info, obj, user=requester)


def strategy_prepare_for_update(info: ResourceInfo, new: JSONObj, old: JSONObj) -> None:
    strategy.prepare_for_update(info, new, old)


def strategy_prepare_for_status_update(info: ResourceInfo, new: JSONObj, old: JSONObj) -> None:
    strategy.prepare_for_status_update(info, new, old)


def strategy_validate(info: ResourceInfo, obj: JSONObj) -> list[Cause]:
    return list(strategy.validate(info, obj))


def strategy_validate_update(info: ResourceInfo, new: JSONObj, old: JSONObj) -> list[Cause]:
    return list(strategy.validate_update(info, new, old))


def strategy_validate_status_update(info: ResourceInfo, new: JSONObj, old: JSONObj) -> list[Cause]:
    return list(strategy.validate_status_update(info, new, old))


def strategy_prepare_for_subresource_update(
    info: ResourceInfo, subresource: str, new: JSONObj, old: JSONObj
) -> bool:
    """The update strategy of ``pods/ephemeralcontainers`` or
    ``certificatesigningrequests/approval``; False when ``subresource`` has none of its own."""
    if (info.group, info.kind, subresource) == ("", "Pod", "ephemeralcontainers"):
        strategy.prepare_for_ephemeral_containers_update(info, new, old)
        return True
    if (info.group, info.kind, subresource) == (
        "certificates.k8s.io",
        "CertificateSigningRequest",
        "approval",
    ):
        strategy.prepare_for_approval_update(info, new, old)
        return True
    return False


def strategy_validate_subresource_update(
    info: ResourceInfo, subresource: str, new: JSONObj, old: JSONObj
) -> list[Cause]:
    if subresource == "ephemeralcontainers":
        return list(strategy.validate_ephemeral_containers_update(info, new, old))
    return list(strategy.validate_status_update(info, new, old))
