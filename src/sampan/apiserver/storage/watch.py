"""Watch streams served from a watch cache.

One stream = one ``Watcher`` registered on a ``WatchCache``. The stream first yields what the
client asked to catch up on — a synthetic ADDED per current object (resourceVersion "" or "0",
or sendInitialEvents=true, then a BOOKMARK annotated ``k8s.io/initial-events-end``), or the
cached changes after the requested revision — and then live changes from its bounded queue.

Invariants:

* The catch-up snapshot and the registration happen in one synchronous step, so no change is
  lost or repeated between catch-up and live events.
* A revision older than the cache's ring floor is answered with one ERROR event (410 Expired,
  "too old resource version: N (floor)") and the stream ends, as kube-apiserver does.
* A periodic BOOKMARK is sent only while the queue is empty, so its revision never claims
  changes the client has not seen.
* A stream ends (without error) when its watcher is ended: queue overflow, cache relist, or
  server stop. The client resumes from its last revision.
* Events come out in batches (``WatchStream.next_batch``: the catch-up at once, then whatever
  queued while the writer was busy), in the same order as one by one; a live change that
  finds the stream idle may be written by the fan-out itself (``WatchStream.direct``).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable

from sampan.api.errors import Cause, Gone, StatusError, Timeout, TooManyRequests
from sampan.api.resources import ResourceInfo
from sampan.apiserver.storage import _api
from sampan.apiserver.storage.cache import RevisionTracker, WatchCache, Watcher, dumps
from sampan.apiserver.storage.types import (
    EVENT_BOOKMARK,
    EVENT_ERROR,
    StorageSettings,
    WatchEvent,
)

__all__ = [
    "INITIAL_EVENTS_END_ANNOTATION",
    "WatchStream",
    "bookmark_event",
    "error_event",
    "too_large_resource_version",
    "watch_stream",
]

INITIAL_EVENTS_END_ANNOTATION = "k8s.io/initial-events-end"


def error_event(err: StatusError) -> WatchEvent:
    return WatchEvent(EVENT_ERROR, err.to_json())


def bookmark_event(info: ResourceInfo, revision: int, *, initial_end: bool = False) -> WatchEvent:
    meta: dict[str, object] = {"resourceVersion": str(revision)}
    if initial_end:
        meta["annotations"] = {INITIAL_EVENTS_END_ANNOTATION: "true"}
    obj = {"kind": info.kind, "apiVersion": info.storage_version, "metadata": meta}
    return WatchEvent(EVENT_BOOKMARK, dumps(obj))


def too_large_resource_version(revision: int, current: int) -> Timeout:
    """kube-apiserver's answer when the cache does not reach a requested revision in time."""
    return Timeout(
        f"Too large resource version: {revision}, current: {current}",
        causes=[Cause("ResourceVersionTooLarge", "Too large resource version", "")],
        retry_after_s=1,
    )


class WatchStream:
    """One open watch: an async iterator of events that also hands out, in one step,
    everything already waiting (``next_batch``), so its writer can send a batch in one write.

    ``direct``, when set before the first event is asked for, becomes the watcher's direct
    writer (see ``cache.Watcher``): live events then skip the queue while the stream is idle.
    """

    __slots__ = ("_batches", "_buffer", "direct")

    def __init__(self) -> None:
        self.direct: Callable[[WatchEvent], bool] | None = None
        self._buffer: deque[WatchEvent] = deque()
        self._batches: AsyncGenerator[list[WatchEvent], None] | None = None

    def __aiter__(self) -> WatchStream:
        return self

    async def __anext__(self) -> WatchEvent:
        assert self._batches is not None
        while not self._buffer:
            self._buffer.extend(await anext(self._batches))
        return self._buffer.popleft()

    async def next_batch(self) -> list[WatchEvent]:
        """The events ready now (at least one; waits for one when none is)."""
        if self._buffer:
            out = list(self._buffer)
            self._buffer.clear()
            return out
        assert self._batches is not None
        return await anext(self._batches)

    async def aclose(self) -> None:
        if self._batches is not None:
            await self._batches.aclose()


def watch_stream(
    cache: WatchCache,
    tracker: RevisionTracker,
    info: ResourceInfo,
    settings: StorageSettings,
    current_revision: Callable[[], Awaitable[int]],
    *,
    namespace: str | None,
    labels: _api.Matcher | None,
    fields: _api.Matcher | None,
    resource_version: str,
    revision: int,
    allow_bookmarks: bool,
    send_initial_events: bool | None,
) -> WatchStream:
    """The events of one watch; see the module docstring. ``revision`` is
    ``resource_version`` parsed (0 for "" and "0")."""
    stream = WatchStream()
    stream._batches = _batches(
        stream,
        cache,
        tracker,
        info,
        settings,
        current_revision,
        namespace=namespace,
        labels=labels,
        fields=fields,
        resource_version=resource_version,
        revision=revision,
        allow_bookmarks=allow_bookmarks,
        send_initial_events=send_initial_events,
    )
    return stream


async def _batches(
    stream: WatchStream,
    cache: WatchCache,
    tracker: RevisionTracker,
    info: ResourceInfo,
    settings: StorageSettings,
    current_revision: Callable[[], Awaitable[int]],
    *,
    namespace: str | None,
    labels: _api.Matcher | None,
    fields: _api.Matcher | None,
    resource_version: str,
    revision: int,
    allow_bookmarks: bool,
    send_initial_events: bool | None,
) -> AsyncGenerator[list[WatchEvent], None]:
    if not cache.ready.is_set():
        try:
            await asyncio.wait_for(cache.ready.wait(), settings.ready_wait_s)
        except TimeoutError:
            yield [error_event(TooManyRequests("storage is (re)initializing", retry_after_s=1))]
            return
    if resource_version == "":
        # Consistent: start from a state at least as new as the datastore's now.
        try:
            target = await current_revision()
        except StatusError as e:
            yield [error_event(e)]
            return
        await tracker.wait_consistent(target, settings.consistent_read_wait_s)
    elif revision > 0 and not await tracker.wait_for(revision, settings.freshness_wait_s):
        yield [error_event(too_large_resource_version(revision, tracker.revision))]
        return
    if not cache.ready.is_set():
        # A relist started while we waited: let the client come back.
        yield [error_event(TooManyRequests("storage is (re)initializing", retry_after_s=1))]
        return

    initial = send_initial_events
    if initial is None:
        initial = resource_version in ("", "0")
    watcher = Watcher(namespace, labels, fields, settings.watcher_queue_size)
    watcher.direct = stream.direct
    # --- synchronous: snapshot/replay and registration, atomic w.r.t. incoming changes ---
    replay: list[WatchEvent] = []
    if initial:
        snapshot_revision = tracker.revision
        for entry in cache.entries(namespace):
            if watcher.matches(entry):
                replay.append(entry.added_event())
        if send_initial_events:
            replay.append(bookmark_event(info, snapshot_revision, initial_end=True))
    elif revision > 0:
        if revision < cache.ring_floor:
            yield [error_event(Gone(f"too old resource version: {revision} ({cache.ring_floor})"))]
            return
        for change in cache.changes_since(revision):
            out = watcher.translate(change)
            if out is not None:
                replay.append(out)
    cache.register(watcher)
    # --- end of the synchronous part ---
    try:
        if replay:
            yield replay
        del replay
        queue = watcher.queue
        while True:
            if queue:
                # Everything waiting, in one batch (the stream's writer sends it at once).
                batch = list(queue)
                queue.clear()
                yield batch
                continue
            if watcher.ended:
                return
            watcher.wake.clear()
            # Idle: the queue is empty and what was yielded is written (the writer asks
            # for the next batch only then), so a live change may be written directly.
            watcher.idle = True
            try:
                if not allow_bookmarks:
                    await watcher.wake.wait()
                    continue
                try:
                    await asyncio.wait_for(watcher.wake.wait(), settings.bookmark_interval_s)
                except TimeoutError:
                    if not queue and not watcher.ended:
                        watcher.idle = False
                        yield [bookmark_event(info, tracker.revision)]
            finally:
                watcher.idle = False
    finally:
        cache.unregister(watcher)
        watcher.end()
