"""Resources whose structure their in-process builder guarantees: the structural check skips them.

A bridge that builds resources from its own declarative tables and checks every value as it
writes it (the XML 130 route: ``fhir_server.bridges.xml130.lexical``) commits them through
the same push path as any client, within :func:`structure_built`. While it runs, the
resource objects it names (by identity: the very dicts it hands to the router, alive for the
whole call) are the ones :func:`is_built` answers True for, and
``fhir_server.resources.validate_structure`` then skips ``check_structure`` for them (the
base invariants and the profiles still run).

The mark cannot be forged by a client: it is neither a member of the resource nor a header,
but a context variable of the task that makes the call; a request parsed from HTTP is a new
object in another task, and is checked in full.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

__all__ = ["is_built", "structure_built"]

_BUILT: ContextVar[frozenset[int]] = ContextVar("structure_built", default=frozenset())


@contextmanager
def structure_built(resources: Iterable[dict[str, Any]]) -> Iterator[None]:
    """Within the block, ``is_built`` is True for exactly these objects (the caller keeps
    them alive until the block ends)."""
    token = _BUILT.set(frozenset(id(resource) for resource in resources))
    try:
        yield
    finally:
        _BUILT.reset(token)


def is_built(resource: dict[str, Any]) -> bool:
    """Whether ``resource`` is one an in-process builder vouches for in this task."""
    built = _BUILT.get()
    return bool(built) and id(resource) in built
