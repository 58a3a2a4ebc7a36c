"""Keeping the cyclic garbage collector off the objects a worker keeps for its whole life.

Start-up freezes what it built (``gc.freeze()`` in ``main``), but validators, element tables
and compiled search plans are also built on first use: after 300 visit pushes a worker held
about 49,000 such objects outside the frozen set, and every full collection walked them
(23 ms, a pause for every request in flight in that worker, four times in those 300 pushes).
:func:`refreeze_if_grown` freezes them too, once they are many, after a collection so that
nothing dead is frozen.
"""

from __future__ import annotations

import asyncio
import gc

__all__ = ["REFREEZE_OBJECTS", "keep_frozen", "refreeze_if_grown"]

#: Objects in the oldest generation beyond which the live ones are frozen.
REFREEZE_OBJECTS = 20_000
#: How often :func:`keep_frozen` looks.
CHECK_EVERY_S = 30.0


def refreeze_if_grown(threshold: int = REFREEZE_OBJECTS) -> bool:
    """Collect and freeze if the oldest generation holds ``threshold`` objects or more.

    Frozen objects are still freed when their last reference goes; only a cycle among them
    that dies later is never collected. Freezing right after a full collection leaves out
    everything already dead, and what lives that long in a worker lives for good (tables,
    caches), so such cycles are rare.
    """
    if len(gc.get_objects(generation=2)) < threshold:
        return False
    gc.collect()
    gc.freeze()
    return True


async def keep_frozen() -> None:
    """Every ``CHECK_EVERY_S``, :func:`refreeze_if_grown` (a task for the worker's life)."""
    while True:
        await asyncio.sleep(CHECK_EVERY_S)
        refreeze_if_grown()
