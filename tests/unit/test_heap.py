"""Freezing what a worker built after start-up (``fhir_server.heap``)."""

from __future__ import annotations

import gc
import weakref

from fhir_server.heap import refreeze_if_grown


class _Node:
    link: _Node | None = None


def test_many_long_lived_objects_are_frozen_and_the_dead_are_not() -> None:
    gc.collect()
    gc.unfreeze()  # whatever earlier tests froze is this test's to count
    try:
        kept = [[number] for number in range(30_000)]
        gc.collect()  # now in the oldest generation
        before = len(gc.get_objects(generation=2))
        dead = _Node()
        dead.link = dead  # a cycle, garbage from the next line on
        gone = weakref.ref(dead)
        del dead
        assert before >= 30_000 and refreeze_if_grown(threshold=before)
        assert gone() is None  # collected before the freeze, not kept for good
        assert len(gc.get_objects(generation=2)) < 1_000  # a full collection walks these only
        assert gc.get_freeze_count() >= 30_000
        assert len(kept) == 30_000
    finally:
        gc.unfreeze()


def test_a_small_oldest_generation_is_left_alone() -> None:
    frozen = gc.get_freeze_count()
    assert not refreeze_if_grown(threshold=10**9)
    assert gc.get_freeze_count() == frozen
