"""Request info: what a URL and method mean to the Kubernetes API.

Owns the parsing of a request path into verb / API group / version / namespace / resource /
subresource / name, following the rules kube-apiserver's request-info factory applies:

* ``/api/<v>/...`` is the core group, ``/apis/<g>/<v>/...`` a named group; anything else
  (``/healthz``, ``/version``, ``/apis`` itself) is a non-resource request whose verb is the
  lower-cased HTTP method;
* POST -> create, GET/HEAD -> get, PUT -> update, PATCH -> patch, DELETE -> delete;
* a ``watch`` segment right after the version makes a watch (deprecated path form);
* a GET without a name is a list, or a watch when ``?watch`` is present and not ``0``/``false``;
  a DELETE without a name is a deletecollection;
* ``namespaces/<ns>/status|finalize`` are subresources of the namespace object itself.

Invariant: parsing never raises; a path it cannot understand is a non-resource request.

Also owns how boolean and integer query parameters read, as kube-apiserver's parameter
decoding reads them: ``query_flag`` (present and not ``0``/``false`` is true, so
``watch=maybe`` watches) and ``query_int`` (Go's ``strconv.ParseInt``, whose error text a
400 carries).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from sampan.api.typecheck import go_quote

__all__ = ["RequestInfo", "parse_request_info", "query_flag", "query_int"]

_METHOD_VERBS = {
    "POST": "create",
    "GET": "get",
    "HEAD": "get",
    "PUT": "update",
    "PATCH": "patch",
    "DELETE": "delete",
}
_NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})
_API_PREFIXES = frozenset({"api", "apis"})


@dataclass(frozen=True, slots=True)
class RequestInfo:
    path: str
    verb: str
    is_resource_request: bool = False
    api_prefix: str = ""
    api_group: str = ""
    api_version: str = ""
    namespace: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""
    """The object name as authorization sees it: from the path, or for list/watch from a
    ``metadata.name=`` field selector."""
    parts: tuple[str, ...] = ()

    @property
    def path_name(self) -> str:
        """The object name in the URL path ("" for collections)."""
        return self.parts[1] if len(self.parts) >= 2 else ""


def query_flag(query: Mapping[str, str], key: str) -> bool:
    """A boolean query parameter as kube-apiserver decodes one: absent, ``0`` or ``false``
    (any case) is false; anything else, even an empty value or ``maybe``, is true."""
    if key not in query:
        return False
    value = query[key]
    return not (value == "0" or value.casefold() == "false")


_GO_INT = re.compile(r"[+-]?[0-9]+")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def query_int(raw: str) -> int:
    """An integer query parameter as Go's ``strconv.ParseInt(raw, 10, 64)`` reads it; the
    ValueError's text is Go's error text (``strconv.ParseInt: parsing "abc": invalid
    syntax``), which kube-apiserver answers as a 400."""
    if not _GO_INT.fullmatch(raw):
        raise ValueError(f"strconv.ParseInt: parsing {go_quote(raw)}: invalid syntax")
    value = int(raw)
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise ValueError(f"strconv.ParseInt: parsing {go_quote(raw)}: value out of range")
    return value


def parse_request_info(method: str, path: str, query: Mapping[str, str]) -> RequestInfo:
    method = method.upper()
    non_resource = RequestInfo(path=path, verb=method.lower())
    parts = [p for p in path.strip("/").split("/")] if path.strip("/") else []
    if len(parts) < 2 or parts[0] not in _API_PREFIXES:
        return non_resource
    prefix = parts[0]
    rest = parts[1:]
    if prefix == "apis":
        if len(rest) < 2:
            return non_resource
        group, version, rest = rest[0], rest[1], rest[2:]
    else:
        group, version, rest = "", rest[0], rest[1:]
    if not rest:
        # /api/v1 or /apis/g/v: discovery documents, not resources.
        return non_resource

    verb = _METHOD_VERBS.get(method, "")
    if rest[0] == "watch":
        rest = rest[1:]
        if verb == "get":
            verb = "watch"
    namespace = ""
    if rest and rest[0] == "namespaces":
        if len(rest) > 1:
            namespace = rest[1]
            if len(rest) > 2 and rest[2] not in _NAMESPACE_SUBRESOURCES:
                rest = rest[2:]
    resource = rest[0] if len(rest) >= 1 else ""
    name = rest[1] if len(rest) >= 2 else ""
    path_name = name
    subresource = rest[2] if len(rest) >= 3 else ""
    if not name and verb == "get":
        verb = "watch" if query_flag(query, "watch") else "list"
        # A list/watch pinned to one name (fieldSelector=metadata.name=x) carries that name,
        # so RBAC resourceNames rules apply to it as upstream does.
        name = _exact_name(query.get("fieldSelector", ""))
    if not path_name and verb == "delete":
        verb = "deletecollection"
    return RequestInfo(
        path=path,
        verb=verb,
        is_resource_request=True,
        api_prefix=prefix,
        api_group=group,
        api_version=version,
        namespace=namespace,
        resource=resource,
        subresource=subresource,
        name=name,
        parts=tuple(rest),
    )


def _exact_name(field_selector: str) -> str:
    """The name a field selector requires exactly (``metadata.name=x``), if it is a valid
    path segment; "" otherwise."""
    for term in field_selector.split(","):
        key, op, value = term.partition("==") if "==" in term else term.partition("=")
        if op and key.strip() == "metadata.name" and not key.endswith("!"):
            value = value.strip()
            if value and value not in (".", "..") and not any(c in value for c in "/%\\"):
                return value
    return ""
