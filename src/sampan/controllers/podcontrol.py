"""Shared helpers of the workload controllers: pods and other dependents of an owner.

This module owns what ReplicaSet, Deployment, StatefulSet, DaemonSet and Job controllers share:

* **Pod predicates** (``is_pod_active``, ``is_pod_ready``, ``is_pod_available``) with upstream's
  meaning: *active* = not Succeeded/Failed and not being deleted; *available* = Ready for at
  least ``minReadySeconds``.
* **Owner references** (``owner_reference``, ``controller_of``) and **claiming** (client-go's
  ControllerRefManager): an owner adopts orphans its selector matches and releases dependents it
  owns that no longer match. Adoption and release are merge patches carrying the dependent's
  resourceVersion, so a race with another writer is a conflict (the key is retried), never a
  silent overwrite.
* **Expectations** (``Expectations``): how many creations and which deletions an owner still
  waits to see in its informer. A controller does not act on an owner while expectations are
  unmet (unless they expired, ``EXPECTATIONS_TTL_S``), so it never creates a second batch of
  pods before the cache shows the first.
* **PodControl**: create pods from a template (owner reference, labels, Events
  SuccessfulCreate/FailedCreate) in slow-start batches (1, 2, 4, ...; stop at the first
  failure, as upstream) and delete them (SuccessfulDelete/FailedDelete).
* **Scale-down ranking** (``deletion_rank``): unassigned before assigned, Pending before Unknown
  before Running, not ready before ready, more co-located siblings first, ready for a shorter
  time first, more restarts first, newer first.
* **Arithmetic**: ``scaled_value`` (int-or-percent, rounded up or down as upstream),
  ``template_hash`` (the ``pod-template-hash`` / ``controller-revision-hash`` value: FNV-1a 32
  over the canonical JSON of the template and the collision count, written in upstream's
  vowel-free alphabet).
* **Time**: ``wall_now(clock)`` — the real UTC time for a real clock, or ``clock.now()`` as
  seconds since the epoch for a fake one (tests drive deadlines with a ``FakeClock``).

Nothing here keeps state across calls except ``Expectations``; nothing mutates cached objects.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sampan.api import times
from sampan.api.labels import Selector
from sampan.client.api import (
    PODS,
    AlreadyExistsError,
    Client,
    ConflictError,
    NotFoundError,
    PatchType,
    Resource,
)
from sampan.client.events import TYPE_NORMAL, TYPE_WARNING, EventRecorder
from sampan.client.informer import Cache
from sampan.client.workqueue import Clock, FakeClock

__all__ = [
    "EXPECTATIONS_TTL_S",
    "INDEX_CONTROLLER",
    "SLOW_START_INITIAL_BATCH",
    "Expectations",
    "PodControl",
    "SlowStartError",
    "claim",
    "claim_candidates",
    "condition",
    "controller_of",
    "deletion_rank",
    "format_time",
    "index_controller",
    "is_pod_active",
    "is_pod_available",
    "is_pod_ready",
    "is_terminal",
    "orphan_key",
    "owner_reference",
    "parse_time",
    "pod_from_template",
    "ready_since",
    "scaled_value",
    "set_condition",
    "siblings_per_node",
    "slow_start",
    "template_hash",
    "wall_now",
]

log = logging.getLogger(__name__)

EXPECTATIONS_TTL_S = 300.0
"""Expectations older than this are considered satisfied (a lost watch event must not wedge an
owner forever), as upstream's ExpectationsTimeout."""
SLOW_START_INITIAL_BATCH = 1
"""The first batch of creations; each later batch doubles (upstream's SlowStartInitialBatchSize)."""

_HASH_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_FNV32_OFFSET = 0x811C9DC5
_FNV32_PRIME = 0x01000193

Obj = dict[str, Any]


# ---------------------------------------------------------------------------------------------
# Time


def wall_now(clock: Clock | None = None) -> datetime:
    """The current UTC time: real for a real clock, ``clock.now()`` epoch seconds for a fake."""
    if isinstance(clock, FakeClock):
        return datetime.fromtimestamp(clock.now(), UTC)
    return datetime.now(UTC)


format_time = times.rfc3339
parse_time = times.parse


# ---------------------------------------------------------------------------------------------
# Conditions


def condition(obj: Mapping[str, Any], cond_type: str) -> Obj | None:
    for cond in (obj.get("status") or {}).get("conditions") or ():
        if isinstance(cond, dict) and cond.get("type") == cond_type:
            return cond
    return None


def set_condition(
    status: Obj,
    cond_type: str,
    cond_status: str,
    reason: str,
    message: str,
    now: datetime,
    *,
    probe_time: bool = False,
) -> bool:
    """Set a condition in ``status`` (a mutable copy); keep lastTransitionTime when the status is
    unchanged. Returns True if anything changed."""
    conditions: list[Obj] = status.setdefault("conditions", [])
    stamp = format_time(now)
    for index, cond in enumerate(conditions):
        if cond.get("type") != cond_type:
            continue
        if (
            cond.get("status") == cond_status
            and cond.get("reason") == reason
            and cond.get("message") == message
        ):
            return False
        new = dict(cond, status=cond_status, reason=reason, message=message)
        if cond.get("status") != cond_status:
            new["lastTransitionTime"] = stamp
        if probe_time or "lastUpdateTime" in cond:
            new["lastUpdateTime"] = stamp
        conditions[index] = new
        return True
    new = {
        "type": cond_type,
        "status": cond_status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": stamp,
    }
    if probe_time:
        new["lastUpdateTime"] = stamp
    conditions.append(new)
    return True


# ---------------------------------------------------------------------------------------------
# Pod predicates


def is_terminal(pod: Mapping[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def is_pod_active(pod: Mapping[str, Any]) -> bool:
    """Not finished and not being deleted (upstream's IsPodActive)."""
    return not is_terminal(pod) and not (pod.get("metadata") or {}).get("deletionTimestamp")


def is_pod_ready(pod: Mapping[str, Any]) -> bool:
    cond = condition(pod, "Ready")
    return cond is not None and cond.get("status") == "True"


def ready_since(pod: Mapping[str, Any]) -> datetime | None:
    """When the pod last became Ready (None if it is not Ready)."""
    cond = condition(pod, "Ready")
    if cond is None or cond.get("status") != "True":
        return None
    return parse_time(cond.get("lastTransitionTime"))


def is_pod_available(pod: Mapping[str, Any], min_ready_s: int, now: datetime) -> bool:
    """Ready for at least ``min_ready_s`` seconds (upstream's IsPodAvailable)."""
    if not is_pod_ready(pod):
        return False
    if min_ready_s <= 0:
        return True
    since = ready_since(pod)
    return since is not None and (now - since).total_seconds() >= min_ready_s


def _restarts(pod: Mapping[str, Any]) -> int:
    statuses = (pod.get("status") or {}).get("containerStatuses") or ()
    return sum(int(s.get("restartCount") or 0) for s in statuses if isinstance(s, dict))


_PHASE_RANK = {"Pending": 0, "Unknown": 1, "Running": 2}


def deletion_rank(
    pod: Mapping[str, Any], siblings_on_node: Mapping[str, int] | None = None
) -> tuple[Any, ...]:
    """Sort key: pods that sort first are deleted first when scaling down (upstream's
    ActivePodsWithRanks order)."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    node = spec.get("nodeName") or ""
    ready = is_pod_ready(pod)
    since = ready_since(pod) if ready else None
    created = parse_time(meta.get("creationTimestamp"))
    return (
        1 if node else 0,
        _PHASE_RANK.get(status.get("phase") or "Pending", 0),
        1 if ready else 0,
        -(siblings_on_node or {}).get(node, 0) if node else 0,
        # ready for a shorter time first: a later "since" sorts first
        -(since.timestamp()) if since else 0.0,
        -_restarts(pod),
        -(created.timestamp()) if created else 0.0,
        meta.get("name") or "",
    )


# ---------------------------------------------------------------------------------------------
# Arithmetic


def scaled_value(value: Any, total: int, *, round_up: bool) -> int:
    """An IntOrString (``3`` or ``"25%"``) scaled against ``total``."""
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    text = str(value)
    if text.endswith("%"):
        percent = int(text[:-1])
        scaled = percent * total
        return -(-scaled // 100) if round_up else scaled // 100
    return int(text)


def _fnv1a32(data: bytes, start: int = _FNV32_OFFSET) -> int:
    value = start
    for byte in data:
        value ^= byte
        value = (value * _FNV32_PRIME) & 0xFFFFFFFF
    return value


def template_hash(template: Any, collision_count: int | None = None) -> str:
    """A short, stable, DNS-safe hash of a pod template (plus the collision count)."""
    data = json.dumps(template, sort_keys=True, separators=(",", ":")).encode()
    value = _fnv1a32(data)
    if collision_count:
        value = _fnv1a32(str(collision_count).encode(), value)
    # Spread the 32-bit value over the alphabet (never a vowel, so never a word).
    out = []
    while True:
        value, digit = divmod(value, len(_HASH_ALPHABET))
        out.append(_HASH_ALPHABET[digit])
        if not value:
            break
    return "".join(out)


# ---------------------------------------------------------------------------------------------
# Owner references


def owner_reference(owner: Mapping[str, Any], api_version: str, kind: str) -> Obj:
    meta = owner.get("metadata") or {}
    return {
        "apiVersion": api_version,
        "kind": kind,
        "name": meta.get("name"),
        "uid": meta.get("uid"),
        "controller": True,
        "blockOwnerDeletion": True,
    }


def controller_of(obj: Mapping[str, Any]) -> Obj | None:
    """The ownerReference with ``controller: true``, if any."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or ():
        if isinstance(ref, dict) and ref.get("controller"):
            return ref
    return None


INDEX_CONTROLLER = "controller"
"""Informer index (``index_controller``): an object's controller's uid, or for an object
without a controller ``orphan_key(namespace)``; what ``claim`` needs as its candidates,
without every object of the namespace (kube-controller-manager's workload controllers look
pods up by such an index since 1.33, orphans under a per-namespace key)."""


def orphan_key(namespace: str) -> str:
    """The ``INDEX_CONTROLLER`` value of a namespace's objects without a controller (never a
    uid: it holds a ``/``)."""
    return f"orphan/{namespace}"


def index_controller(obj: Mapping[str, Any]) -> tuple[str, ...]:
    ref = controller_of(obj)
    if ref is not None and ref.get("uid"):
        return (str(ref["uid"]),)
    return (orphan_key((obj.get("metadata") or {}).get("namespace") or ""),)


def claim_candidates(cache: Cache, owner: Mapping[str, Any]) -> list[Obj]:
    """The objects of ``owner``'s namespace that ``claim`` may keep or adopt: those it
    controls and the orphans, from an informer cache with ``INDEX_CONTROLLER``. (An object
    controlled by another owner is skipped by ``claim`` anyway.)"""
    meta = owner.get("metadata") or {}
    namespace = meta.get("namespace") or ""
    owned = [
        o
        for o in cache.by_index(INDEX_CONTROLLER, str(meta.get("uid") or ""))
        if (o.get("metadata") or {}).get("namespace") == namespace
    ]
    return owned + cache.by_index(INDEX_CONTROLLER, orphan_key(namespace))


async def _patch_owner_refs(
    client: Client, resource: Resource, obj: Mapping[str, Any], refs: list[Obj]
) -> Obj | None:
    meta = obj.get("metadata") or {}
    patch = {
        "metadata": {
            "ownerReferences": refs,
            "resourceVersion": meta.get("resourceVersion"),
            "uid": meta.get("uid"),
        }
    }
    try:
        return await client.patch(
            resource,
            meta["name"],
            patch,
            namespace=meta.get("namespace"),
            patch_type=PatchType.MERGE,
        )
    except NotFoundError:
        return None


async def claim(
    client: Client,
    resource: Resource,
    owner: Mapping[str, Any],
    api_version: str,
    kind: str,
    selector: Selector,
    candidates: Iterable[Mapping[str, Any]],
    *,
    can_adopt: Callable[[], Awaitable[bool]] | None = None,
    match: Callable[[Mapping[str, Any]], bool] | None = None,
) -> list[Obj]:
    """The dependents ``owner`` controls after adopting matching orphans and releasing owned
    objects that no longer match (client-go's ClaimPods). ``candidates`` are cache objects of
    the owner's namespace; the result holds the cache objects (or the patched copies).

    ``can_adopt`` is awaited once before the first adoption (upstream re-reads the owner to be
    sure it is not being deleted); ``match`` adds a test to the selector (e.g. a name prefix).
    """
    owner_meta = owner.get("metadata") or {}
    owner_uid = owner_meta.get("uid")
    owner_deleting = bool(owner_meta.get("deletionTimestamp"))
    adopt_checked: bool | None = None
    claimed: list[Obj] = []
    for obj in candidates:
        meta = obj.get("metadata") or {}
        labels = meta.get("labels") or {}
        matches = selector.matches(labels) and (match is None or match(obj))
        ref = controller_of(obj)
        if ref is not None:
            if ref.get("uid") != owner_uid:
                continue
            if matches:
                claimed.append(dict(obj))
                continue
            if owner_deleting:
                continue
            refs = [
                r
                for r in meta.get("ownerReferences") or ()
                if isinstance(r, dict) and r.get("uid") != owner_uid
            ]
            log.debug("release %s/%s from %s", meta.get("namespace"), meta.get("name"), kind)
            try:
                await _patch_owner_refs(client, resource, obj, refs)
            except ConflictError:
                log.debug("release %s: conflict; will retry", meta.get("name"))
                raise
            continue
        if not matches or owner_deleting or meta.get("deletionTimestamp"):
            continue
        if adopt_checked is None:
            adopt_checked = True if can_adopt is None else await can_adopt()
        if not adopt_checked:
            continue
        refs = [dict(r) for r in meta.get("ownerReferences") or () if isinstance(r, dict)]
        refs.append(owner_reference(owner, api_version, kind))
        log.debug("adopt %s/%s into %s", meta.get("namespace"), meta.get("name"), kind)
        patched = await _patch_owner_refs(client, resource, obj, refs)
        if patched is not None:
            claimed.append(patched)
    return claimed


# ---------------------------------------------------------------------------------------------
# Expectations


@dataclass
class _Expectation:
    adds: int = 0
    deletes: set[str] = field(default_factory=set)
    set_at_s: float = 0.0


class Expectations:
    """Per owner key: creations still to be observed (a count) and deletions (pod keys).

    ``satisfied(key)`` is True when nothing is pending, when nothing was ever recorded, or
    when the record is older than ``ttl_s``.
    """

    def __init__(self, clock: Clock, ttl_s: float = EXPECTATIONS_TTL_S) -> None:
        self._clock = clock
        self._ttl_s = ttl_s
        self._records: dict[str, _Expectation] = {}

    def satisfied(self, key: str) -> bool:
        record = self._records.get(key)
        if record is None:
            return True
        if record.adds <= 0 and not record.deletes:
            return True
        if self._clock.now() - record.set_at_s > self._ttl_s:
            log.debug("expectations of %s expired", key)
            return True
        return False

    def expect(self, key: str, adds: int = 0, deletes: Iterable[str] = ()) -> None:
        """Replace the record of ``key`` (call right before acting)."""
        self._records[key] = _Expectation(adds, set(deletes), self._clock.now())

    def creation_observed(self, key: str) -> None:
        record = self._records.get(key)
        if record is not None and record.adds > 0:
            record.adds -= 1

    def creations_failed(self, key: str, count: int) -> None:
        """``count`` creations will never be observed (they were not attempted or failed)."""
        record = self._records.get(key)
        if record is not None:
            record.adds = max(0, record.adds - count)

    def deletion_observed(self, key: str, pod_key: str) -> None:
        record = self._records.get(key)
        if record is not None:
            record.deletes.discard(pod_key)

    def forget(self, key: str) -> None:
        self._records.pop(key, None)


# ---------------------------------------------------------------------------------------------
# Creating and deleting pods


async def slow_start(count: int, create: Callable[[int], Awaitable[None]]) -> int:
    """Call ``create(i)`` for i in 0..count-1 in batches of 1, 2, 4, ...; stop after a batch in
    which anything failed. Returns how many succeeded; the first error is re-raised after the
    batch (the caller requeues). Ordinals are handed out in order."""
    done = 0
    batch = min(count, SLOW_START_INITIAL_BATCH)
    next_index = 0
    while batch > 0:
        indexes = range(next_index, next_index + batch)
        next_index += batch
        results = await asyncio.gather(*(create(i) for i in indexes), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        done += len(results) - len(errors)
        for error in errors:
            if isinstance(error, asyncio.CancelledError):
                raise error
        if errors:
            raise SlowStartError(done, next_index, errors[0]) from errors[0]
        batch = min(2 * batch, count - next_index)
    return done


class SlowStartError(Exception):
    """Raised by ``slow_start`` after a batch in which a creation failed."""

    def __init__(self, done: int, attempted: int, first: BaseException) -> None:
        super().__init__(str(first))
        self.done = done
        self.attempted = attempted
        self.first = first


def pod_from_template(
    template: Mapping[str, Any],
    owner: Mapping[str, Any],
    owner_api_version: str,
    owner_kind: str,
    *,
    name: str | None = None,
    generate_name: str | None = None,
    extra_labels: Mapping[str, str] | None = None,
) -> Obj:
    """A Pod body from a pod template: labels, annotations, finalizers and spec copied; the
    owner's controller reference set."""
    tmeta = template.get("metadata") or {}
    meta: Obj = {
        "labels": {**(tmeta.get("labels") or {}), **(extra_labels or {})},
        "ownerReferences": [owner_reference(owner, owner_api_version, owner_kind)],
    }
    if tmeta.get("annotations"):
        meta["annotations"] = copy.deepcopy(tmeta["annotations"])
    if tmeta.get("finalizers"):
        meta["finalizers"] = list(tmeta["finalizers"])
    if name:
        meta["name"] = name
    else:
        meta["generateName"] = generate_name or f"{(owner.get('metadata') or {}).get('name')}-"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": copy.deepcopy(template.get("spec") or {}),
    }


class PodControl:
    """Creates and deletes pods for owners, recording upstream's Events on the owner."""

    def __init__(self, client: Client, recorder: EventRecorder) -> None:
        self.client = client
        self.recorder = recorder

    async def create(self, namespace: str, pod: Obj, owner: Mapping[str, Any]) -> Obj:
        try:
            created = await self.client.create(PODS, pod, namespace=namespace)
        except AlreadyExistsError:
            raise
        except Exception as exc:
            self.recorder.event(owner, TYPE_WARNING, "FailedCreate", f"Error creating: {exc}")
            raise
        name = (created.get("metadata") or {}).get("name")
        log.debug("created pod %s/%s", namespace, name)
        self.recorder.event(owner, TYPE_NORMAL, "SuccessfulCreate", f"Created pod: {name}")
        return created

    async def delete(self, namespace: str, name: str, owner: Mapping[str, Any]) -> None:
        try:
            await self.client.delete(PODS, name, namespace=namespace)
        except NotFoundError:
            log.debug("pod %s/%s already gone", namespace, name)
            return
        except Exception as exc:
            self.recorder.event(
                owner, TYPE_WARNING, "FailedDelete", f"Error deleting pod {name}: {exc}"
            )
            raise
        log.debug("deleted pod %s/%s", namespace, name)
        self.recorder.event(owner, TYPE_NORMAL, "SuccessfulDelete", f"Deleted pod: {name}")


def siblings_per_node(pods: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """How many of ``pods`` run on each node (for ``deletion_rank``)."""
    counts: dict[str, int] = {}
    for pod in pods:
        node = (pod.get("spec") or {}).get("nodeName")
        if node:
            counts[node] = counts.get(node, 0) + 1
    return counts
