"""The API's error tree: every failure a client can see is a ``StatusError`` rendered as a
``meta.k8s.io/v1`` ``Status`` with the code, reason, message and details kube-apiserver uses.

Tree (mirrors the HTTP status classes and Kubernetes ``StatusReason`` values)::

    StatusError                      any Status failure (code, reason, message, details)
    ├── BadRequest           400     BadRequest: malformed body, kind/apiVersion mismatch
    ├── Unauthorized         401     Unauthorized
    ├── Forbidden            403     Forbidden: RBAC denial, namespace terminating
    ├── NotFound             404     NotFound
    ├── MethodNotSupported   405     MethodNotAllowed
    ├── NotAcceptable        406     NotAcceptable
    ├── AlreadyExists        409     AlreadyExists
    ├── Conflict             409     Conflict: stale resourceVersion, precondition failed
    ├── Gone                 410     Expired: resourceVersion compacted
    ├── RequestEntityTooLarge 413    RequestEntityTooLarge
    ├── UnsupportedMediaType 415     UnsupportedMediaType
    ├── Invalid              422     Invalid, with field causes
    ├── TooManyRequests      429     TooManyRequests
    ├── InternalError        500     InternalError
    ├── ServiceUnavailable   503     ServiceUnavailable
    └── Timeout              504     Timeout

Constructors take the resource's group and plural ("deployments", group "apps") because
kube-apiserver words messages as ``deployments.apps "web" not found``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from sampan.api import jsonwire

__all__ = [
    "AlreadyExists",
    "BadRequest",
    "Cause",
    "Conflict",
    "Forbidden",
    "Gone",
    "InternalError",
    "Invalid",
    "MethodNotSupported",
    "NotAcceptable",
    "NotFound",
    "RequestEntityTooLarge",
    "ServiceUnavailable",
    "StatusError",
    "Timeout",
    "TooManyRequests",
    "Unauthorized",
    "UnsupportedMediaType",
    "go_json",
    "qualified_resource",
]


def qualified_resource(resource: str, group: str = "") -> str:
    """``pods`` for the core group, ``deployments.apps`` otherwise (as kube-apiserver prints)."""
    return f"{resource}.{group}" if group else resource


@dataclass(frozen=True, slots=True)
class Cause:
    """One field cause of an Invalid error: reason is e.g. ``FieldValueInvalid``,
    ``FieldValueRequired``, ``FieldValueDuplicate``, ``FieldValueNotSupported``,
    ``FieldValueForbidden``, ``FieldValueTooLong``; field is a path like
    ``spec.containers[0].name``.
    """

    reason: str
    message: str
    field: str

    def to_dict(self) -> dict[str, str]:
        return {"reason": self.reason, "message": self.message, "field": self.field}


class StatusError(Exception):
    code = 500
    reason = "InternalError"

    def __init__(
        self,
        message: str,
        *,
        name: str = "",
        group: str = "",
        kind: str = "",
        causes: list[Cause] | None = None,
        retry_after_s: int = 0,
        reason: str | None = None,
        code: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.name = name
        self.group = group
        self.kind = kind
        self.causes = list(causes or [])
        self.retry_after_s = retry_after_s
        if reason is not None:
            self.reason = reason
        if code is not None:
            self.code = code

    def details(self) -> dict[str, Any] | None:
        details: dict[str, Any] = {}
        if self.name:
            details["name"] = self.name
        if self.group:
            details["group"] = self.group
        if self.kind:
            details["kind"] = self.kind
        if self.causes:
            details["causes"] = [c.to_dict() for c in self.causes]
        if self.retry_after_s:
            details["retryAfterSeconds"] = self.retry_after_s
        return details or None

    def to_status(self) -> dict[str, Any]:
        """The Status in meta/v1's field order (kind, apiVersion, metadata, status, message,
        reason, details, code), empty fields left out as Go's ``omitempty`` does."""
        status: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
        }
        if self.message:
            status["message"] = self.message
        if self.reason:
            status["reason"] = self.reason
        details = self.details()
        if details is not None:
            status["details"] = details
        if self.code:
            status["code"] = self.code
        return status

    def to_json(self) -> bytes:
        """The Status as kube-apiserver's encoder writes it (without the trailing newline)."""
        return go_json(self.to_status())


_GO_ESCAPES = {
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}
_GO_ESCAPE_TABLE = str.maketrans(_GO_ESCAPES)


_LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")


def go_json(obj: Any) -> bytes:
    """Compact JSON byte for byte as Go's encoding/json writes it: UTF-8 kept, but ``<``,
    ``>``, ``&``, U+2028 and U+2029 escaped (they can only occur inside strings, so the
    translation never touches structure), and a lone surrogate (a name or value that came
    from invalid UTF-8) written as U+FFFD, as Go writes invalid UTF-8; never an encode error
    that would turn a 4xx into a 500."""
    try:
        return jsonwire.dumps_go(obj)
    except UnicodeEncodeError:
        text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
        return _LONE_SURROGATE.sub("\ufffd", text.translate(_GO_ESCAPE_TABLE)).encode()


class BadRequest(StatusError):
    code = 400
    reason = "BadRequest"


class Unauthorized(StatusError):
    code = 401
    reason = "Unauthorized"

    def __init__(self, message: str = "Unauthorized", **kw: Any) -> None:
        super().__init__(message, **kw)


class Forbidden(StatusError):
    code = 403
    reason = "Forbidden"


class NotFound(StatusError):
    code = 404
    reason = "NotFound"

    @classmethod
    def for_object(cls, resource: str, group: str, name: str) -> NotFound:
        return cls(
            f'{qualified_resource(resource, group)} "{name}" not found',
            name=name,
            group=group,
            kind=resource,
        )


class MethodNotSupported(StatusError):
    code = 405
    reason = "MethodNotAllowed"


class NotAcceptable(StatusError):
    code = 406
    reason = "NotAcceptable"


class AlreadyExists(StatusError):
    code = 409
    reason = "AlreadyExists"

    @classmethod
    def for_object(cls, resource: str, group: str, name: str) -> AlreadyExists:
        return cls(
            f'{qualified_resource(resource, group)} "{name}" already exists',
            name=name,
            group=group,
            kind=resource,
        )


class Conflict(StatusError):
    code = 409
    reason = "Conflict"

    @classmethod
    def stale(cls, resource: str, group: str, name: str) -> Conflict:
        return cls(
            f'Operation cannot be fulfilled on {qualified_resource(resource, group)} "{name}": '
            "the object has been modified; please apply your changes to the latest version "
            "and try again",
            name=name,
            group=group,
            kind=resource,
        )


class Gone(StatusError):
    code = 410
    reason = "Expired"


class RequestEntityTooLarge(StatusError):
    code = 413
    reason = "RequestEntityTooLarge"


class UnsupportedMediaType(StatusError):
    code = 415
    reason = "UnsupportedMediaType"


class Invalid(StatusError):
    code = 422
    reason = "Invalid"

    @classmethod
    def for_object(cls, kind: str, group: str, name: str, causes: list[Cause]) -> Invalid:
        """kube-apiserver's wording: ``ConfigMap "Foo" is invalid: metadata.name: Invalid
        value: ...`` with one ``field: message`` per cause, joined as a list when several; the
        kind is qualified by a non-empty group (``Deployment.apps "web" is invalid: ...``)."""
        parts = [f"{c.field}: {c.message}" if c.field else c.message for c in causes]
        if len(parts) == 1:
            summary = parts[0]
        else:
            summary = "[" + ", ".join(parts) + "]"
        qualified_kind = f"{kind}.{group}" if group else kind
        return cls(
            f'{qualified_kind} "{name}" is invalid: {summary}',
            name=name,
            group=group,
            kind=kind,
            causes=causes,
        )


class TooManyRequests(StatusError):
    code = 429
    reason = "TooManyRequests"


class InternalError(StatusError):
    code = 500
    reason = "InternalError"


class ServiceUnavailable(StatusError):
    code = 503
    reason = "ServiceUnavailable"


class Timeout(StatusError):
    code = 504
    reason = "Timeout"
