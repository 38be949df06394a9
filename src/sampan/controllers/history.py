"""ControllerRevisions: the template history of StatefulSets and DaemonSets.

This module owns the helpers both controllers share to record each distinct pod template as an
``apps/v1`` ControllerRevision owned by the set:

* ``revision_data(template)`` — what a revision stores: ``{"spec": {"template": <template>,
  "$patch": "replace"}}`` (the shape ``kubectl rollout undo`` applies back onto the set).
* ``find_equal(revisions, data)`` — the revision that already holds ``data``, if any.
* ``ensure_revision`` — create the revision ``<set>-<hash>`` (hash of the data and the
  collision count, ``controller-revision-hash`` label set), or reuse an equal existing one; a
  name taken by different data bumps the collision count (returned so the caller can store it
  in ``status.collisionCount``).
* ``bump_revision`` — give a re-used old revision the next revision number (rollback).
* ``truncate_history`` — delete the oldest revisions beyond ``revisionHistoryLimit``, never one
  that is still in use.

Revisions are never mutated in the cache; every write goes to the API server.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from sampan.client.api import (
    CONTROLLERREVISIONS,
    AlreadyExistsError,
    Client,
    NotFoundError,
)
from sampan.controllers.podcontrol import owner_reference, template_hash

__all__ = [
    "CONTROLLER_REVISION_HASH_LABEL",
    "bump_revision",
    "ensure_revision",
    "find_equal",
    "next_revision_number",
    "revision_data",
    "truncate_history",
]

log = logging.getLogger(__name__)

CONTROLLER_REVISION_HASH_LABEL = "controller-revision-hash"
MAX_COLLISION_RETRIES = 10

Obj = dict[str, Any]


def revision_data(template: Mapping[str, Any]) -> Obj:
    """What a ControllerRevision of a set with this pod ``template`` holds."""
    patched = copy.deepcopy(dict(template))
    patched["$patch"] = "replace"
    return {"spec": {"template": patched}}


def _comparable(data: Any) -> Any:
    """Revision data without the hash label (pods of a revision carry it, templates not)."""
    copied = copy.deepcopy(data)
    try:
        labels = copied["spec"]["template"]["metadata"]["labels"]
    except (KeyError, TypeError):
        return copied
    if isinstance(labels, dict):
        labels.pop(CONTROLLER_REVISION_HASH_LABEL, None)
    return copied


def find_equal(revisions: Iterable[Mapping[str, Any]], data: Mapping[str, Any]) -> Obj | None:
    """The newest revision whose data equals ``data``."""
    wanted = _comparable(data)
    matches = [r for r in revisions if _comparable(r.get("data")) == wanted]
    if not matches:
        return None
    return dict(max(matches, key=lambda r: int(r.get("revision") or 0)))


def next_revision_number(revisions: Iterable[Mapping[str, Any]]) -> int:
    return max((int(r.get("revision") or 0) for r in revisions), default=0) + 1


async def ensure_revision(
    client: Client,
    owner: Mapping[str, Any],
    owner_kind: str,
    data: Mapping[str, Any],
    revision: int,
    collision_count: int,
    labels: Mapping[str, str],
) -> tuple[Obj, int]:
    """Create (or find) the revision holding ``data``; returns it and the collision count."""
    meta = owner.get("metadata") or {}
    namespace = meta.get("namespace")
    for _ in range(MAX_COLLISION_RETRIES):
        hash_value = template_hash(_comparable(data), collision_count)
        body = {
            "apiVersion": "apps/v1",
            "kind": "ControllerRevision",
            "metadata": {
                "name": f"{meta.get('name')}-{hash_value}",
                "namespace": namespace,
                "labels": {**labels, CONTROLLER_REVISION_HASH_LABEL: hash_value},
                "ownerReferences": [owner_reference(owner, "apps/v1", owner_kind)],
            },
            "data": copy.deepcopy(dict(data)),
            "revision": revision,
        }
        try:
            created = await client.create(CONTROLLERREVISIONS, body, namespace=namespace)
        except AlreadyExistsError:
            existing = await client.get(
                CONTROLLERREVISIONS, body["metadata"]["name"], namespace=namespace
            )
            ref_uids = {r.get("uid") for r in existing["metadata"].get("ownerReferences") or ()}
            if meta.get("uid") in ref_uids and _comparable(existing.get("data")) == _comparable(
                data
            ):
                return existing, collision_count
            collision_count += 1
            continue
        log.debug("created controller revision %s/%s", namespace, created["metadata"]["name"])
        return created, collision_count
    raise RuntimeError(f"too many hash collisions for the revisions of {meta.get('name')}")


async def bump_revision(client: Client, revision: Mapping[str, Any], number: int) -> Obj:
    """Give ``revision`` a new revision number (a rollback to an old template)."""
    if int(revision.get("revision") or 0) >= number:
        return dict(revision)
    body = copy.deepcopy(dict(revision))
    body["revision"] = number
    return await client.update(CONTROLLERREVISIONS, body)


async def truncate_history(
    client: Client,
    revisions: Iterable[Mapping[str, Any]],
    in_use: Collection[str],
    limit: int,
) -> None:
    """Delete the oldest revisions not named in ``in_use`` beyond ``limit``."""
    unused = sorted(
        (r for r in revisions if r["metadata"]["name"] not in in_use),
        key=lambda r: int(r.get("revision") or 0),
    )
    extra = len(unused) - max(0, limit)
    for revision in unused[: max(0, extra)]:
        meta = revision["metadata"]
        try:
            await client.delete(CONTROLLERREVISIONS, meta["name"], namespace=meta["namespace"])
        except NotFoundError:
            continue
        log.debug("deleted controller revision %s/%s", meta["namespace"], meta["name"])
