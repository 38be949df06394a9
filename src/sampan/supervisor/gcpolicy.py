"""CPython's cyclic garbage collector around a process start.

While ``sampan server`` starts, its heap grows from its modules to the whole cluster state:
the watch caches and every informer load every object. CPython runs a full collection each
time the objects that survived young collections add up to a quarter of those already old,
and each full collection walks the whole heap: a restart over 20,000 pods ran 17 of them,
5-6 s of its ~22 s to ready (measured with ``gc.callbacks``; bench/README.md, session 7).

``StartupCollections`` makes full collections a hundred times rarer while the components
start (young collections go on as before, so short-lived cycles are still freed at once).
When every component is ready, ``settle`` runs one full collection and freezes what survived
(``gc.freeze``): modules, schemas and the objects just loaded, which live as long as the
process or are freed by reference counting (decoded JSON holds no cycles), so no later full
collection walks them again. A cycle that was alive at that moment and dies later is not
reclaimed; that is a one-time, bounded cost (the few requests in flight then), where
deferring full collections for good would not be.

Once started, the thresholds become ``STEADY_THRESHOLDS``: young collections after 7,000
allocations instead of 700, full ones after 100 middle collections instead of 10 (a higher
value set before is kept). Under load the server promotes objects that outlive two young
collections (requests, events and parsed objects in flight) so fast that the
quarter-of-the-old-objects condition held almost always: in a 20,000-pod ``bench.scale`` run
with CPython's defaults the server ran 171 full collections, 76 s in all, each walking the
ever-larger heap (pauses up to 1.1 s), beside 246 s of CPU in the ramp (``gc.callbacks``;
bench/README.md, session 8). A larger young generation lets most of those objects die before
they are promoted: the same run made 5 full collections (2.2 s), with 30 % less CPU in the
ramp, a mutating p99 of 0.58 s instead of 1.2 s, and the same RSS. Young collections still
free short-lived cycles within a few thousand allocations.
"""

from __future__ import annotations

import gc
import logging
import time

__all__ = ["DEFERRED_FULL_THRESHOLD", "STEADY_THRESHOLDS", "StartupCollections"]

log = logging.getLogger(__name__)

DEFERRED_FULL_THRESHOLD = 1000
"""The third ``gc`` threshold while starting: collections of the middle generation before a
full one is considered (CPython's default is 10)."""

STEADY_THRESHOLDS = (7000, 10, 100)
"""The ``gc`` thresholds once started (each at least what it was before)."""


class StartupCollections:
    """``defer`` once before the components start, ``settle`` when they are all ready (more
    calls of either do nothing)."""

    def __init__(self) -> None:
        self._saved: tuple[int, int, int] | None = None
        self._settled = False

    def defer(self) -> None:
        if self._saved is not None or self._settled:
            return
        self._saved = gc.get_threshold()
        young, middle, _full = self._saved
        gc.set_threshold(young, middle, DEFERRED_FULL_THRESHOLD)

    def settle(self) -> None:
        if self._saved is None or self._settled:
            return
        self._settled = True
        t0 = time.perf_counter()
        gc.collect()
        gc.freeze()
        gc.set_threshold(*(max(a, b) for a, b in zip(self._saved, STEADY_THRESHOLDS, strict=True)))
        log.info(
            "gc: %d objects frozen once started (full collection %.2fs); thresholds %s",
            gc.get_freeze_count(),
            time.perf_counter() - t0,
            gc.get_threshold(),
        )
