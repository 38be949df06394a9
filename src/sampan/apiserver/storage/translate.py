"""Translation of datastore errors (``sampan.datastore.types.StoreError``) into API errors.

The boundary rule: nothing below the storage layer reaches a client as-is. Each datastore
error becomes the ``StatusError`` kube-apiserver would return for the same etcd failure, worded
for the resource at hand. Datastore messages are not echoed for unavailability (they may name
hosts); the cause is logged instead.
"""

from __future__ import annotations

import logging

from sampan.api.errors import (
    AlreadyExists,
    BadRequest,
    Conflict,
    Gone,
    InternalError,
    NotFound,
    RequestEntityTooLarge,
    ServiceUnavailable,
    StatusError,
)
from sampan.api.resources import ResourceInfo
from sampan.apiserver.storage.encryption import TransformError
from sampan.datastore.types import (
    CompactedError,
    ConflictError,
    FutureRevisionError,
    InvalidRequestError,
    KeyExistsError,
    KeyNotFoundError,
    StoreError,
    StoreUnavailableError,
)

__all__ = [
    "EXPIRED_CONTINUE_MESSAGE",
    "EXPIRED_LIST_MESSAGE",
    "REQUEST_TOO_LARGE_MESSAGE",
    "translate_store_error",
]

log = logging.getLogger(__name__)

EXPIRED_LIST_MESSAGE = "The resourceVersion for the provided list is too old."
EXPIRED_CONTINUE_MESSAGE = (
    "The provided continue parameter is too old to display a consistent list result. You can "
    "start a new list without the continue parameter, or use the continue token in this "
    "response to retrieve the remainder of the results. Continuing with the provided token "
    "results in an inconsistent list - objects that were created, modified, or deleted between "
    "the time the first chunk was returned and now may show up in the list."
)
REQUEST_TOO_LARGE_MESSAGE = "etcdserver: request is too large"


def translate_store_error(
    err: StoreError, info: ResourceInfo, name: str = "", *, continuing: bool = False
) -> StatusError:
    """The API error for ``err`` raised while serving ``info``/``name``."""
    if isinstance(err, KeyNotFoundError):
        return NotFound.for_object(info.plural, info.group, name)
    if isinstance(err, KeyExistsError):
        return AlreadyExists.for_object(info.plural, info.group, name)
    if isinstance(err, ConflictError):
        return Conflict.stale(info.plural, info.group, name)
    if isinstance(err, CompactedError):
        return Gone(EXPIRED_CONTINUE_MESSAGE if continuing else EXPIRED_LIST_MESSAGE)
    if isinstance(err, FutureRevisionError):
        return BadRequest(
            f"Too large resource version: {err.revision}, current: {err.current_revision}"
        )
    if isinstance(err, InvalidRequestError):
        text = str(err)
        if "large" in text or "size" in text:
            return RequestEntityTooLarge(REQUEST_TOO_LARGE_MESSAGE)
        return BadRequest(text)
    if isinstance(err, TransformError):
        log.error("%s", err)
        return InternalError(f"Internal error occurred: {err}")
    if isinstance(err, StoreUnavailableError):
        log.warning("datastore unavailable while serving %s: %s", info.group_resource, err)
        return ServiceUnavailable("the datastore is unavailable; try again later", retry_after_s=1)
    log.error("unexpected datastore error while serving %s: %r", info.group_resource, err)
    return InternalError(f"datastore error: {type(err).__name__}")
