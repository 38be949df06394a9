"""One request's audit event (``audit.k8s.io/v1`` ``Event``) and its JSON line.

``RequestAudit`` is created once the request's user is known and the policy gave it a level
above None. It gathers what kube-apiserver's audit context gathers — the user, the
impersonated user, the source IPs, the object reference, authorization annotations, the
request object (from ``Request``), the response status and the response object (from
``RequestResponse``) — and ``emit(stage)`` hands a snapshot of it to the backend for each stage
the policy does not omit.

Cheap on the request path: a snapshot is a shallow dict; bodies are kept as the bytes that went
over the wire (``RawJSON``) and only parsed again by the writer thread when they must be
re-indented or lose ``managedFields``; the response's ``Status`` fields are read from its body
there too. ``encode_event`` (writer thread) renders a record as one line with upstream's field
order: kind, apiVersion, level, auditID, stage, requestURI, verb, user, impersonatedUser,
sourceIPs, userAgent, objectRef, responseStatus, requestObject, responseObject,
requestReceivedTimestamp, stageTimestamp (RFC 3339 with microseconds), annotations.

Invariants: a Secret's data reaches a record only at ``Request`` or above (request body) or
``RequestResponse`` (response body); at ``Metadata`` no body is ever kept. A record is never
changed after ``emit`` handed it over.
"""

from __future__ import annotations

import ipaddress
import json
import time
from typing import Any

from sampan.apiserver.audit.policy import (
    API_VERSION,
    LEVEL_REQUEST,
    LEVEL_REQUEST_RESPONSE,
    STAGE_REQUEST_RECEIVED,
    levels_at_least,
)

__all__ = ["EVENT_FIELDS", "RawJSON", "RequestAudit", "encode_event", "micro_time", "source_ips"]

EVENT_FIELDS = (
    "kind",
    "apiVersion",
    "level",
    "auditID",
    "stage",
    "requestURI",
    "verb",
    "user",
    "impersonatedUser",
    "sourceIPs",
    "userAgent",
    "objectRef",
    "responseStatus",
    "requestObject",
    "responseObject",
    "requestReceivedTimestamp",
    "stageTimestamp",
    "annotations",
)
MAX_USER_AGENT_CHARS = 1024
USER_AGENT_TRUNCATED = "...TRUNCATED"
_STATUS_FIELDS = ("status", "message", "reason", "details", "code")
_STATUS_MARK = b'"kind":"Status"'


class RawJSON:
    """A JSON document as received or sent; the writer thread re-encodes it only when it must
    (line breaks inside, or managed fields to drop)."""

    __slots__ = ("data", "omit_managed_fields")

    def __init__(self, data: bytes, *, omit_managed_fields: bool = False) -> None:
        self.data = data
        self.omit_managed_fields = omit_managed_fields

    def render(self) -> str:
        data = self.data.strip()
        if not self.omit_managed_fields and b"\n" not in data and b"\r" not in data:
            return data.decode("utf-8", errors="replace")
        obj = json.loads(data)
        if self.omit_managed_fields:
            _drop_managed_fields(obj)
        return _dumps(obj)


def _drop_managed_fields(obj: Any) -> None:
    if not isinstance(obj, dict):
        return
    metadata = obj.get("metadata")
    if isinstance(metadata, dict):
        metadata.pop("managedFields", None)
    items = obj.get("items")
    if isinstance(items, list):
        for item in items:
            _drop_managed_fields(item)
    rows = obj.get("rows")  # a Table's objects
    if isinstance(rows, list):
        for row in rows:
            if isinstance(row, dict):
                _drop_managed_fields(row.get("object"))


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_dumps = _ENCODER.encode
_second_cache: tuple[int, str] = (-1, "")


def micro_time(when: float) -> str:
    """metav1.MicroTime: ``2026-12-07T03:04:05.123456Z`` (the seconds part is cached: events
    come in bursts within one second)."""
    global _second_cache
    second = int(when)
    micros = round((when - second) * 1e6)
    if micros >= 1_000_000:
        second, micros = second + 1, micros - 1_000_000
    cached_second, prefix = _second_cache
    if cached_second != second:
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _second_cache = (second, prefix)
    return f"{prefix}.{micros:06d}Z"


def source_ips(request: Any) -> list[str]:
    """X-Forwarded-For, then X-Real-Ip, then the peer, without repeats (as upstream)."""
    found: list[str] = []
    forwarded = request.headers.get("X-Forwarded-For", "")
    if forwarded:
        for part in forwarded.split(","):
            _add_ip(found, part.strip())
    _add_ip(found, request.headers.get("X-Real-Ip", "").strip())
    remote = request.remote or ""
    if remote and remote not in found:
        found.append(remote)  # the peer address as the socket gave it
    return found


def _add_ip(found: list[str], text: str) -> None:
    if not text:
        return
    try:
        address = str(ipaddress.ip_address(text))
    except ValueError:
        return
    if address not in found:
        found.append(address)


class RequestAudit:
    """The audit event of one request; see the module docstring."""

    __slots__ = (
        "_backend",
        "_event",
        "annotations",
        "level",
        "long_running",
        "omit_managed_fields",
        "omit_stages",
        "request_object",
        "response_object",
        "started",
        "status_body",
        "status_code",
    )

    def __init__(
        self,
        backend: Any,
        config: Any,
        *,
        audit_id: str,
        received: float,
        request: Any,
        ri: Any,
        user: Any,
        long_running: bool = False,
    ) -> None:
        self._backend = backend
        self.level = config.level
        self.omit_stages = config.omit_stages
        self.omit_managed_fields = config.omit_managed_fields
        self.long_running = long_running
        self.annotations: dict[str, str] = {}
        self.status_code = 0
        self.status_body: bytes | None = None
        self.request_object: RawJSON | None = None
        self.response_object: RawJSON | None = None
        self.started = False
        agent = request.headers.get("User-Agent", "")
        if len(agent) > MAX_USER_AGENT_CHARS:
            agent = agent[:MAX_USER_AGENT_CHARS] + USER_AGENT_TRUNCATED
        event: dict[str, Any] = {
            "kind": "Event",
            "apiVersion": API_VERSION,
            "level": self.level,
            "auditID": audit_id,
            "requestURI": request.raw_path,
            "verb": ri.verb,
            "user": user.to_dict() if user is not None else {},
            "sourceIPs": source_ips(request),
            "requestReceivedTimestamp": received,
        }
        if agent:
            event["userAgent"] = agent
        if ri.is_resource_request:
            ref: dict[str, Any] = {"resource": ri.resource}
            if ri.namespace:
                ref["namespace"] = ri.namespace
            if ri.name:
                ref["name"] = ri.name
            if ri.api_group:
                ref["apiGroup"] = ri.api_group
            ref["apiVersion"] = ri.api_version
            if ri.subresource:
                ref["subresource"] = ri.subresource
            event["objectRef"] = ref
        self._event = event

    # --- what the pipeline learns ----------------------------------------------------------

    def impersonated(self, user: Any) -> None:
        self._event["impersonatedUser"] = user.to_dict()

    def annotate(self, key: str, value: str) -> None:
        """First value wins, as upstream (a second, different value is ignored)."""
        self.annotations.setdefault(key, value)

    def request_obj(self, obj: dict[str, Any], body: bytes | None = None) -> None:
        """The decoded request object: its name, namespace, uid and resourceVersion complete
        the object reference; from ``Request`` the object itself is recorded."""
        metadata = obj.get("metadata") if isinstance(obj, dict) else None
        ref = self._event.get("objectRef")
        if isinstance(metadata, dict) and ref is not None:
            ref = dict(ref)
            for key in ("namespace", "name", "uid", "resourceVersion"):
                value = metadata.get(key)
                if value and not ref.get(key):
                    ref[key] = value
            self._event["objectRef"] = _ordered_ref(ref)
        if levels_at_least(self.level, LEVEL_REQUEST):
            data = body if body is not None and body.lstrip()[:1] == b"{" else None
            self.request_object = RawJSON(
                data if data is not None else _dumps(obj).encode(),
                omit_managed_fields=self.omit_managed_fields,
            )

    def request_patch(self, body: bytes) -> None:
        """A patch is recorded as sent (from ``Request``), as upstream does."""
        if levels_at_least(self.level, LEVEL_REQUEST) and body.lstrip()[:1] in (b"{", b"["):
            self.request_object = RawJSON(body)

    def response(self, code: int, response: Any) -> None:
        """The status code, and the body when it is a Status or (``RequestResponse``) JSON."""
        self.status_code = code
        body = getattr(response, "body", None)
        if not isinstance(body, bytes | bytearray) or not body:
            return
        content_type = getattr(response, "content_type", "")
        if content_type != "application/json":
            return
        if _STATUS_MARK in body[:64]:
            self.status_body = bytes(body)
        if self.level == LEVEL_REQUEST_RESPONSE:
            self.response_object = RawJSON(
                bytes(body), omit_managed_fields=self.omit_managed_fields
            )

    # --- stages ------------------------------------------------------------------------------

    def snapshot(self, stage: str, now: float) -> dict[str, Any] | None:
        """The record of ``stage``, or None when the policy omits it."""
        if stage in self.omit_stages:
            return None
        record = dict(self._event)
        record["stage"] = stage
        record["stageTimestamp"] = (
            record["requestReceivedTimestamp"] if stage == STAGE_REQUEST_RECEIVED else now
        )
        if self.status_code:
            record["responseStatus"] = {"metadata": {}, "code": self.status_code}
            if self.status_body is not None:
                record["_statusBody"] = self.status_body
        if self.request_object is not None and stage != STAGE_REQUEST_RECEIVED:
            record["requestObject"] = self.request_object
        if self.response_object is not None and stage != STAGE_REQUEST_RECEIVED:
            record["responseObject"] = self.response_object
        if self.annotations:
            record["annotations"] = dict(self.annotations)
        return record

    async def emit(self, stage: str, now: float) -> None:
        record = self.snapshot(stage, now)
        if record is not None:
            await self._backend.submit(record)


_REF_ORDER = (
    "resource",
    "namespace",
    "name",
    "uid",
    "apiGroup",
    "apiVersion",
    "resourceVersion",
    "subresource",
)


def _ordered_ref(ref: dict[str, Any]) -> dict[str, Any]:
    return {key: ref[key] for key in _REF_ORDER if key in ref}


def _response_status(record: dict[str, Any]) -> dict[str, Any]:
    status = record["responseStatus"]
    body = record.get("_statusBody")
    if body is None:
        return status
    try:
        parsed = json.loads(body)
    except ValueError:
        return status
    if not isinstance(parsed, dict):
        return status
    out: dict[str, Any] = {"metadata": {}}
    for key in _STATUS_FIELDS:
        if parsed.get(key):
            out[key] = parsed[key]
    out["code"] = status["code"]
    return out


_SAFE_STRING_MAX = 4096
_encoded: dict[int, tuple[Any, str]] = {}
"""Writer-side memo of the objects a request's stages share (user, objectRef, sourceIPs): by
identity, holding the object so that its id stays its own; cleared when it grows."""
_ENCODED_MAX = 8192


def _string(value: str) -> str:
    """A JSON string; plain text (most fields) without the encoder."""
    if len(value) < _SAFE_STRING_MAX and value.isprintable() and '"' not in value:
        if "\\" not in value:
            return f'"{value}"'
    return _dumps(value)


def _shared(value: Any) -> str:
    hit = _encoded.get(id(value))
    if hit is not None and hit[0] is value:
        return hit[1]
    text = _dumps(value)
    if len(_encoded) >= _ENCODED_MAX:
        _encoded.clear()
    _encoded[id(value)] = (value, text)
    return text


_SHARED_FIELDS = frozenset({"user", "impersonatedUser", "sourceIPs", "objectRef"})


def encode_event(record: dict[str, Any]) -> bytes:
    """One JSON line (writer thread only: it keeps a memo). Fields in order; plain strings
    written directly, the objects a request's stages share encoded once."""
    parts = []
    for key in EVENT_FIELDS:
        if key not in record:
            continue
        value = record[key]
        if key == "responseStatus":
            if "_statusBody" in record:
                text = _dumps(_response_status(record))
            else:
                text = f'{{"metadata":{{}},"code":{int(value["code"])}}}'
        elif key == "annotations":
            text = "{" + ",".join(f"{_string(k)}:{_string(v)}" for k, v in value.items()) + "}"
        elif isinstance(value, RawJSON):
            text = value.render()
        elif key in ("requestReceivedTimestamp", "stageTimestamp"):
            text = f'"{micro_time(value)}"'
        elif isinstance(value, str):
            text = _string(value)
        elif key in _SHARED_FIELDS:
            text = _shared(value)
        else:
            text = _dumps(value)
        parts.append(f'"{key}":{text}')
    # A lone surrogate (an undecodable header byte) becomes a \\udcXX escape, still JSON.
    return ("{" + ",".join(parts) + "}\n").encode("utf-8", "backslashreplace")
