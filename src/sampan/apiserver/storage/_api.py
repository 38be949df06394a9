"""The storage layer's seam to ``sampan.api``: selectors, field sets, strategy and conversion.

The storage layer calls the kinds-as-data package only through this module, so the contract it
relies on is written down in one place:

* ``sampan.api.labels.parse_selector(text) -> Selector`` (``.matches(labels)``, ``.empty``),
  raising ``SelectorError``;
* ``sampan.api.fields.parse_field_selector(text) -> FieldSelector`` (``.matches(fields)``,
  ``.requirements``), ``field_set(info, obj)``, ``check_supported(info, selector)``;
* ``sampan.api.strategy``: ``default``, ``prepare_for_create``, ``prepare_for_update``,
  ``prepare_for_status_update``, ``validate``, ``validate_update``,
  ``validate_status_update``;
* ``sampan.api.conversion.convert(info_from, obj, info_to)``.

Selectors may be given to the store already parsed (any object with ``matches``) or as text;
text is parsed here and a parse failure becomes a 400 BadRequest.

Where one of those functions is missing (a partial checkout), a minimal stand-in keeps the
store usable: equality-only label selectors, metadata-only field sets, no strategy, identity
conversion. The stand-ins are deliberately small; they are not a second implementation.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from sampan.api.resources import ResourceInfo
from sampan.apiserver.errors import BadRequest, Cause

__all__ = [
    "HAS_STRATEGY",
    "Matcher",
    "convert",
    "field_matcher",
    "field_set",
    "label_matcher",
    "strategy_default",
    "strategy_prepare_for_create",
    "strategy_prepare_for_status_update",
    "strategy_prepare_for_update",
    "strategy_validate",
    "strategy_validate_status_update",
    "strategy_validate_update",
]

log = logging.getLogger(__name__)


class Matcher(Protocol):
    def matches(self, values: Mapping[str, str], /) -> bool: ...


def _optional(module: str, name: str) -> Callable[..., Any] | None:
    try:
        mod = importlib.import_module(module)
    except ImportError:
        return None
    return getattr(mod, name, None)


_parse_selector = _optional("sampan.api.labels", "parse_selector")
_parse_field_selector = _optional("sampan.api.fields", "parse_field_selector")
_field_set = _optional("sampan.api.fields", "field_set")
_check_supported = _optional("sampan.api.fields", "check_supported")
_convert = _optional("sampan.api.conversion", "convert")
_strategy = {
    name: _optional("sampan.api.strategy", name)
    for name in (
        "default",
        "prepare_for_create",
        "prepare_for_update",
        "prepare_for_status_update",
        "validate",
        "validate_update",
        "validate_status_update",
    )
}


def _selector_error_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [ValueError]
    for module in ("sampan.api.labels", "sampan.api.fields"):
        err = _optional(module, "SelectorError")
        if isinstance(err, type) and issubclass(err, BaseException):
            types.append(err)
    return tuple(types)


_SELECTOR_ERRORS = _selector_error_types()


class _EqualitySelector:
    """Stand-in selector: comma-joined ``k=v``/``k==v``/``k!=v`` requirements only."""

    def __init__(self, text: str) -> None:
        self.requirements: list[tuple[str, str, bool]] = []
        for part in filter(None, (p.strip() for p in text.split(","))):
            if "!=" in part:
                key, _, value = part.partition("!=")
                self.requirements.append((key.strip(), value.strip(), False))
            elif "=" in part:
                key, _, value = part.partition("=")
                self.requirements.append((key.strip(), value.lstrip("=").strip(), True))
            else:
                raise ValueError(f"unable to parse requirement: {part!r}")

    def matches(self, values: Mapping[str, str]) -> bool:
        return all((values.get(k) == v) == eq for k, v, eq in self.requirements)


def _is_empty(selector: object) -> bool:
    empty = getattr(selector, "empty", None)
    if callable(empty):
        empty = empty()
    if empty is None:
        reqs = getattr(selector, "requirements", None)
        if reqs is not None:
            return len(reqs) == 0
        return False
    return bool(empty)


def label_matcher(selector: object) -> Matcher | None:
    """A matcher for ``labelSelector`` (text or parsed), or None when it selects everything."""
    if selector is None or selector == "":
        return None
    if isinstance(selector, str):
        try:
            parsed = (_parse_selector or _EqualitySelector)(selector)
        except _SELECTOR_ERRORS as e:
            raise BadRequest(str(e)) from e
    else:
        parsed = selector
    return None if _is_empty(parsed) else parsed  # type: ignore[return-value]


def field_matcher(selector: object, info: ResourceInfo) -> Matcher | None:
    """A matcher for ``fieldSelector`` (text or parsed), or None when it selects everything.
    A field the kind does not support is a 400, worded as kube-apiserver does."""
    if selector is None or selector == "":
        return None
    if isinstance(selector, str):
        try:
            parsed = (_parse_field_selector or _EqualitySelector)(selector)
        except _SELECTOR_ERRORS as e:
            raise BadRequest(str(e)) from e
    else:
        parsed = selector
    if _is_empty(parsed):
        return None
    if _check_supported is not None and hasattr(parsed, "requirements"):
        try:
            parsed = _check_supported(info, parsed)
        except _SELECTOR_ERRORS as e:
            raise BadRequest(str(e)) from e
    return parsed  # type: ignore[return-value]


def field_set(info: ResourceInfo, obj: dict[str, Any]) -> dict[str, str]:
    if _field_set is not None:
        return dict(_field_set(info, obj))
    meta = obj.get("metadata") or {}
    fields = {"metadata.name": str(meta.get("name", ""))}
    if info.namespaced:
        fields["metadata.namespace"] = str(meta.get("namespace", ""))
    return fields


def convert(info_from: ResourceInfo, obj: dict[str, Any], info_to: ResourceInfo) -> dict[str, Any]:
    if info_from.api_version == info_to.api_version and info_from.kind == info_to.kind:
        return obj
    if _convert is not None:
        return _convert(info_from, obj, info_to)
    out = dict(obj)
    out["apiVersion"] = info_to.api_version
    out["kind"] = info_to.kind
    return out


HAS_STRATEGY = all(fn is not None for fn in _strategy.values())
"""True when sampan.api.strategy provides every hook (it then owns status keeping on update,
the status split and generation); the store's own fallbacks apply otherwise."""


def _call(name: str, *args: Any) -> Any:
    fn = _strategy[name]
    if fn is None:
        return None
    return fn(*args)


def strategy_default(info: ResourceInfo, obj: dict[str, Any]) -> None:
    _call("default", info, obj)


def strategy_prepare_for_create(info: ResourceInfo, obj: dict[str, Any]) -> None:
    _call("prepare_for_create", info, obj)


def strategy_prepare_for_update(
    info: ResourceInfo, new: dict[str, Any], old: dict[str, Any]
) -> None:
    _call("prepare_for_update", info, new, old)


def strategy_prepare_for_status_update(
    info: ResourceInfo, new: dict[str, Any], old: dict[str, Any]
) -> None:
    _call("prepare_for_status_update", info, new, old)


def strategy_validate(info: ResourceInfo, obj: dict[str, Any]) -> list[Cause]:
    return list(_call("validate", info, obj) or ())


def strategy_validate_update(
    info: ResourceInfo, new: dict[str, Any], old: dict[str, Any]
) -> list[Cause]:
    return list(_call("validate_update", info, new, old) or ())


def strategy_validate_status_update(
    info: ResourceInfo, new: dict[str, Any], old: dict[str, Any]
) -> list[Cause]:
    return list(_call("validate_status_update", info, new, old) or ())
