"""Resources whose structure their in-process builder guarantees: the structural check skips them.

A bridge that builds resources from its own declarative tables and checks every value as it
writes it (the XML 130 route: ``fhir_server.bridges.xml130.lexical``) commits them through
the same push path as any client, within :func:`structure_built`. While it runs, the
resource objects it names (by identity: the very dicts it hands to the router, alive for the
whole call) are the ones :func:`is_built` answers True for, and
``fhir_server.resources.validate_structure`` then skips ``check_structure`` for them (the
profiles still run). The builder may also name base invariants, as (context, key) pairs, that
hold by its construction (``proven``): for its objects only the others are evaluated
(``base_invariants.check_unproven``), and any failure is reported by the full evaluation.

The mark cannot be forged by a client: it is neither a member of the resource nor a header,
but a context variable of the task that makes the call; a request parsed from HTTP is a new
object in another task, and is checked in full.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

__all__ = ["Pairs", "is_built", "proven", "structure_built"]

#: Base invariants named by (context, key), e.g. ``("Period", "per-1")``.
Pairs = frozenset[tuple[str, str]]
_NONE: Pairs = frozenset()
_BUILT: ContextVar[tuple[frozenset[int], Pairs]] = ContextVar(
    "structure_built", default=(frozenset(), _NONE))


@contextmanager
def structure_built(resources: Iterable[dict[str, Any]], proven: Pairs = _NONE) -> Iterator[None]:
    """Within the block, ``is_built`` is True for exactly these objects (the caller keeps
    them alive until the block ends), and ``proven`` answers the invariants that hold for
    them by their builder's construction."""
    token = _BUILT.set((frozenset(id(resource) for resource in resources), proven))
    try:
        yield
    finally:
        _BUILT.reset(token)


def is_built(resource: dict[str, Any]) -> bool:
    """Whether ``resource`` is one an in-process builder vouches for in this task."""
    built = _BUILT.get()[0]
    return bool(built) and id(resource) in built


def proven(resource: dict[str, Any]) -> Pairs | None:
    """The (context, key) invariants that hold by construction for ``resource``; None when
    no builder vouches for it (every invariant is evaluated)."""
    built, pairs = _BUILT.get()
    return pairs if built and id(resource) in built else None
