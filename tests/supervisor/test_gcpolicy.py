"""``StartupCollections``: full collections deferred while starting, then one full collection
and a freeze of what survived, then young and full collections ten times rarer than
CPython's defaults."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from sampan.supervisor.gcpolicy import (
    DEFERRED_FULL_THRESHOLD,
    STEADY_THRESHOLDS,
    StartupCollections,
)


@pytest.fixture
def gc_state() -> Iterator[None]:
    thresholds = gc.get_threshold()
    gc.unfreeze()
    try:
        yield
    finally:
        gc.unfreeze()  # the test process keeps collecting everything
        gc.set_threshold(*thresholds)


class _Cycle:
    def __init__(self) -> None:
        self.me = self


@pytest.mark.usefixtures("gc_state")
def test_defer_then_settle() -> None:
    gc.set_threshold(700, 10, 10)
    collections = StartupCollections()
    collections.settle()  # before defer: nothing
    assert gc.get_freeze_count() == 0
    collections.defer()
    assert gc.get_threshold() == (700, 10, DEFERRED_FULL_THRESHOLD)
    collections.defer()  # once only: the saved thresholds stay the original ones
    kept = [_Cycle() for _ in range(100)]
    garbage = weakref.ref(_Cycle())  # a dead cycle: collected, not frozen
    collections.settle()
    assert garbage() is None
    assert gc.get_threshold() == STEADY_THRESHOLDS == (7000, 10, 100)
    frozen = gc.get_freeze_count()
    assert frozen > len(kept)
    live_cycles = [o for o in gc.get_objects() if isinstance(o, _Cycle)]
    assert live_cycles == []  # every survivor is in the permanent generation now
    collections.settle()  # once only
    assert gc.get_freeze_count() == frozen
    collections.defer()  # after settling: nothing
    assert gc.get_threshold() == (7000, 10, 100)


@pytest.mark.usefixtures("gc_state")
def test_settle_keeps_rarer_thresholds_set_before() -> None:
    gc.set_threshold(9000, 20, 50)
    collections = StartupCollections()
    collections.defer()
    assert gc.get_threshold() == (9000, 20, DEFERRED_FULL_THRESHOLD)
    collections.settle()
    assert gc.get_threshold() == (9000, 20, 100)
