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

The young thresholds then go back to what they were, and the full one becomes
``STEADY_FULL_THRESHOLD`` (100, against CPython's default 10; a higher one set before is
kept). Under load the server promotes objects that outlive two young collections (requests,
events and parsed objects in flight) so fast that the quarter-of-the-old-objects condition
held almost always: in a 20,000-pod ``bench.scale`` run the server ran 171 full collections,
76 s in all, each walking the ever-larger heap, beside 246 s of CPU in the ramp
(``gc.callbacks``; bench/README.md, session 8). A full collection now waits for a hundred
middle ones instead of ten: 31 of them, 18 s, ramp CPU 194 s, same RSS. Young collections,
which free most cycles, run as often as before.
"""

from __future__ import annotations

import gc
import logging
import time

__all__ = ["DEFERRED_FULL_THRESHOLD", "STEADY_FULL_THRESHOLD", "StartupCollections"]

log = logging.getLogger(__name__)

DEFERRED_FULL_THRESHOLD = 1000
"""The third ``gc`` threshold while starting: collections of the middle generation before a
full one is considered (CPython's default is 10)."""

STEADY_FULL_THRESHOLD = 100
"""The third ``gc`` threshold once started (at least what it was before)."""


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
        young, middle, full = self._saved
        gc.set_threshold(young, middle, max(full, STEADY_FULL_THRESHOLD))
        log.info(
            "gc: %d objects frozen once started (full collection %.2fs); thresholds %s",
            gc.get_freeze_count(),
            time.perf_counter() - t0,
            gc.get_threshold(),
        )
