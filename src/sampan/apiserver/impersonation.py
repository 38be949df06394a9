"""Impersonation: ``Impersonate-User``/``-Group``/``-Uid``/``-Extra-<key>`` request headers.

Owns the step between authentication and authorization that lets a user act as another
(``kubectl --as``/``--as-group``), exactly as kube-apiserver's impersonation filter does:
each requested identity piece needs the ``impersonate`` verb on the matching resource —
``users``/``groups`` (core group), ``serviceaccounts`` in the service account's namespace
(for ``system:serviceaccount:<ns>:<name>`` users), ``uids``/``userextras/<key>``
(authentication.k8s.io) — and the request then proceeds as the impersonated user.

Invariants: without any impersonation header the caller's identity is returned unchanged;
a denied piece fails the whole request with 403 before anything else runs; the impersonated
user always carries ``system:authenticated`` (unless it is ``system:anonymous``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sampan.api.errors import BadRequest, Forbidden

__all__ = ["HEADER_EXTRA_PREFIX", "HEADER_GROUP", "HEADER_UID", "HEADER_USER", "impersonate"]

HEADER_USER = "Impersonate-User"
HEADER_GROUP = "Impersonate-Group"
HEADER_UID = "Impersonate-Uid"
HEADER_EXTRA_PREFIX = "Impersonate-Extra-"
_AUTHENTICATION_GROUP = "authentication.k8s.io"


def _headers_present(headers: Mapping[str, str]) -> bool:
    return any(
        key.lower() in (HEADER_USER.lower(), HEADER_GROUP.lower(), HEADER_UID.lower())
        or key.lower().startswith(HEADER_EXTRA_PREFIX.lower())
        for key in headers
    )


def impersonate(
    user: Any,
    headers: Any,
    *,
    authorize: Callable[[Any], Any],
    make_attributes: Callable[..., Any],
    forbidden_message: Callable[[Any], str],
) -> Any:
    """The identity the request runs as (``user`` itself when nothing is impersonated)."""
    if not _headers_present(headers):
        return user
    from sampan.apiserver.auth.user import (
        ANONYMOUS_USER,
        SYSTEM_AUTHENTICATED,
        UserInfo,
        parse_service_account_username,
        service_account_groups,
    )

    name = headers.get(HEADER_USER, "")
    groups = list(headers.getall(HEADER_GROUP, []))
    uid = headers.get(HEADER_UID, "")
    extra: dict[str, list[str]] = {}
    for key in headers:
        if key.lower().startswith(HEADER_EXTRA_PREFIX.lower()):
            extra_key = key[len(HEADER_EXTRA_PREFIX) :].lower()
            extra.setdefault(extra_key, []).extend(headers.getall(key))
    if not name:
        raise BadRequest(
            "requested impersonation is invalid: impersonating user-extras, groups or uid "
            "requires impersonating a user"
        )

    def check(
        resource: str, target: str, *, group: str = "", namespace: str = "", subresource: str = ""
    ) -> None:
        attrs = make_attributes(
            user=user,
            verb="impersonate",
            namespace=namespace,
            api_group=group,
            resource=resource,
            subresource=subresource,
            name=target,
            resource_request=True,
        )
        if not authorize(attrs).allowed:
            raise Forbidden(forbidden_message(attrs), name=target, group=group, kind=resource)

    service_account = parse_service_account_username(name)
    if service_account is not None:
        sa_namespace, sa_name = service_account
        check("serviceaccounts", sa_name, namespace=sa_namespace)
        if not groups:
            groups = list(service_account_groups(sa_namespace))
    else:
        check("users", name)
    for group_name in groups:
        check("groups", group_name)
    if uid:
        check("uids", uid, group=_AUTHENTICATION_GROUP)
    for key, values in extra.items():
        for value in values:
            check("userextras", value, group=_AUTHENTICATION_GROUP, subresource=key)
    if name != ANONYMOUS_USER and SYSTEM_AUTHENTICATED not in groups:
        groups.append(SYSTEM_AUTHENTICATED)
    return UserInfo(
        name=name,
        uid=uid,
        groups=tuple(groups),
        extra={k: tuple(v) for k, v in extra.items()},
    )
