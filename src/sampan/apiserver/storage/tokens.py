"""Continue tokens and resourceVersion parameters: parsing and encoding.

A continue token is, as in kube-apiserver, unpadded URL-safe base64 of the JSON
``{"v":"meta.k8s.io/v1","rv":<revision>,"start":"<key relative to the list prefix>"}``. The
``start`` key is the last returned key followed by a NUL byte, so "continue from start" means
"keys >= start" and never repeats the last item. The revision pins the next pages to the
snapshot of the first one. Anything malformed is a 400 BadRequest.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

from sampan.api.errors import BadRequest

__all__ = [
    "CONTINUE_VERSION",
    "ContinueToken",
    "decode_continue",
    "encode_continue",
    "parse_resource_version",
]

CONTINUE_VERSION = "meta.k8s.io/v1"


@dataclass(frozen=True, slots=True)
class ContinueToken:
    revision: int
    start: str
    """Key suffix (relative to the list prefix) to resume at, inclusive."""


def encode_continue(last_key: str, prefix: str, revision: int) -> str:
    """Token resuming after ``last_key`` (a full key under ``prefix``) at ``revision``."""
    start = last_key[len(prefix) :] + "\x00"
    raw = json.dumps({"v": CONTINUE_VERSION, "rv": revision, "start": start}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).rstrip(b"=").decode()


def _invalid(reason: str) -> BadRequest:
    # kube-apiserver wraps the decoder's "continue key is not valid: ..." this way.
    return BadRequest(f"invalid continue token: continue key is not valid: {reason}")


def decode_continue(token: str) -> ContinueToken:
    try:
        padded = token + "=" * (-len(token) % 4)
        raw = base64.urlsafe_b64decode(padded.encode("ascii"))
        data = json.loads(raw)
    except (binascii.Error, UnicodeError, ValueError) as e:
        raise _invalid(str(e) or "malformed token") from e
    if not isinstance(data, dict) or data.get("v") != CONTINUE_VERSION:
        raise _invalid("server does not recognize this encoded version")
    rv = data.get("rv")
    if not isinstance(rv, int) or isinstance(rv, bool) or rv <= 0:
        raise _invalid(f"incorrect encoded start resourceVersion (version {CONTINUE_VERSION})")
    start = data.get("start")
    if not isinstance(start, str) or not start:
        raise _invalid("encoded start key empty")
    # The start key is relative: it must not climb out of the list's prefix.
    if start.startswith("/") or any(part in ("..", ".") for part in start.split("/")):
        raise _invalid("path traversal attempt detected")
    return ContinueToken(revision=rv, start=start)


def parse_resource_version(value: str) -> int:
    """``""`` -> 0 (unset); otherwise a non-negative decimal revision, else 400."""
    if value == "":
        return 0
    if not value.isdigit() or not value.isascii():
        raise BadRequest(f'invalid resource version "{value}"')
    return int(value)
