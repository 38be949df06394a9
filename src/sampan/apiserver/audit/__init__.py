"""Audit logging, as kube-apiserver's ``--audit-policy-file`` and log backend.

The façade the request pipeline uses:

* ``Auditor(policy, backend)``: ``begin(...)`` evaluates the policy for a request whose user is
  known (after authentication; a request refused with 401 is audited with an empty user) and
  returns its ``RequestAudit`` (event.py), or None at level None. The pipeline then records
  the impersonated user, the authorization decision, the response, and emits the stages.
* ``record_request_object`` / ``record_request_patch``: the handlers' hooks for the decoded
  request object (completes ``objectRef``; the body itself from level ``Request``).
* ``add_annotation(key, value)``: an annotation on the audit event of the request being
  served (a context variable, as upstream's ``audit.AddAuditAnnotation(ctx, ...)``); a no-op
  when the request is not audited. Admission plugins use it (PodSecurity).
* ``AUDIT_ID_HEADER``: every response carries ``Audit-ID`` (the client's own, when it sent
  one, else ``new_audit_id()``), auditing on or not, as kube-apiserver does.

policy.py owns the Policy file, log.py the writer thread and rotation, options.py the flags.
"""

from __future__ import annotations

import contextvars
import os
import random
import time
from typing import Any

from aiohttp import web

from sampan.apiserver.audit.event import RequestAudit, encode_event
from sampan.apiserver.audit.log import AuditLogBackend, RotatingFile, backup_name
from sampan.apiserver.audit.options import AUDIT_ARGS, AuditOptions, parse_audit_args
from sampan.apiserver.audit.policy import (
    LEVEL_NONE,
    STAGE_PANIC,
    STAGE_REQUEST_RECEIVED,
    STAGE_RESPONSE_COMPLETE,
    STAGE_RESPONSE_STARTED,
    AuditPolicyError,
    Policy,
    load_policy,
    parse_policy,
)

__all__ = [
    "AUDIT_ARGS",
    "AUDIT_ID_HEADER",
    "AUDIT_ID_KEY",
    "AUDIT_KEY",
    "STAGE_PANIC",
    "STAGE_REQUEST_RECEIVED",
    "STAGE_RESPONSE_COMPLETE",
    "STAGE_RESPONSE_STARTED",
    "AuditLogBackend",
    "AuditOptions",
    "AuditPolicyError",
    "Auditor",
    "Policy",
    "RequestAudit",
    "RotatingFile",
    "add_annotation",
    "backup_name",
    "encode_event",
    "load_policy",
    "new_audit_id",
    "parse_audit_args",
    "parse_policy",
    "record_request_object",
    "record_request_patch",
]

AUDIT_ID_HEADER = "Audit-ID"
AUDIT_KEY: Any = web.RequestKey("sampan.audit", RequestAudit)
"""Where a request keeps its ``RequestAudit`` (absent: not audited)."""
AUDIT_ID_KEY: Any = web.RequestKey("sampan.audit-id", str)
"""Where a request keeps its audit ID (every request; answered as ``Audit-ID``)."""


_ids = random.Random(os.urandom(32))
"""Audit IDs name requests in logs and answers; they are neither secrets nor tokens. Drawn
from a generator seeded once from the OS (``uuid.uuid4`` reads the OS for every request: a
system call that also hands the GIL to the datastore's writer thread, 6 % of the server's CPU
per Lease renewal)."""


def new_audit_id() -> str:
    """A random (version 4) UUID in its usual text form, as kube-apiserver's audit IDs."""
    bits = _ids.getrandbits(128)
    bits = (bits & ~(0xF000 << 64)) | (0x4000 << 64)  # version 4
    bits = (bits & ~(0xC000 << 48)) | (0x8000 << 48)  # RFC 4122 variant
    h = f"{bits:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_CURRENT: contextvars.ContextVar[RequestAudit | None] = contextvars.ContextVar(
    "sampan_audit", default=None
)


def add_annotation(key: str, value: str) -> None:
    """Annotate the audit event of the request this task serves (if it is audited)."""
    audit = _CURRENT.get()
    if audit is not None:
        audit.annotate(key, value)


class Auditor:
    """A loaded policy and the backend its events go to."""

    def __init__(self, policy: Policy, backend: AuditLogBackend) -> None:
        self.policy = policy
        self.backend = backend

    async def begin(
        self,
        request: Any,
        ri: Any,
        user: Any,
        *,
        audit_id: str,
        received: float,
        long_running: bool,
    ) -> RequestAudit | None:
        """The request's audit (RequestReceived already emitted), or None at level None."""
        _CURRENT.set(None)  # a keep-alive connection may serve requests in one task
        config = self.policy.evaluate(user, ri)
        if config.level == LEVEL_NONE:
            return None
        audit = RequestAudit(
            self.backend,
            config,
            audit_id=audit_id,
            received=received,
            request=request,
            ri=ri,
            user=user,
            long_running=long_running,
        )
        request[AUDIT_KEY] = audit
        _CURRENT.set(audit)
        await audit.emit(STAGE_REQUEST_RECEIVED, received)
        return audit

    async def finish(self, audit: RequestAudit, code: int, response: Any) -> None:
        """ResponseComplete (after ResponseStarted, for a long-running request that failed
        before its headers were sent)."""
        audit.response(code, response)
        now = time.time()
        if audit.long_running and not audit.started:
            audit.started = True
            await audit.emit(STAGE_RESPONSE_STARTED, now)
        await audit.emit(STAGE_RESPONSE_COMPLETE, now)


def record_request_object(request: Any, obj: dict[str, Any], body: bytes | None = None) -> None:
    audit = request.get(AUDIT_KEY)
    if audit is not None:
        audit.request_obj(obj, body)


def record_request_patch(request: Any, body: bytes) -> None:
    audit = request.get(AUDIT_KEY)
    if audit is not None:
        audit.request_patch(body)
