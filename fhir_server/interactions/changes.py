"""What the write path tells whoever follows its changes (the subscriptions' outbox).

``write.apply`` hands every prepared write to :meth:`ChangeFeed.admit` before it is checked
and stored (a Subscription or a topic is refused there when the server cannot serve it), and
every stored change to :meth:`ChangeFeed.observe` inside the same store transaction, so that
what the feed writes (notification events) commits or rolls back with the change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from fhir_server.security.caller import Caller
from fhir_server.storage.port import StoredResource, StoreTransaction

__all__ = ["Change", "ChangeFeed"]


@dataclass(frozen=True)
class Change:
    """One stored change: ``kind`` is ``create``, ``update`` or ``delete``; ``resource`` the
    content after it (None for a deletion), ``previous`` the content before it where it was
    read (a deletion's always, an update's when :meth:`ChangeFeed.needs_previous`);
    ``index`` the search index of ``resource`` (None for a deletion); ``caller`` who wrote."""

    kind: str
    stored: StoredResource
    resource: dict[str, Any] | None
    previous: dict[str, Any] | None
    index: object | None
    caller: Caller


class ChangeFeed(Protocol):
    """A follower of the write path (see the module docstring)."""

    def admit(self, write: Any) -> None:
        """Check (and normalise) a prepared ``write.Write`` before it is applied; raise a
        ``FhirError`` to refuse it."""
        ...

    def needs_previous(self, resource_type: str) -> bool:
        """Whether an update of the type must be observed with its previous content."""
        ...

    async def observe(self, tx: StoreTransaction, change: Change) -> None:
        """Record what follows from ``change`` inside ``tx``."""
        ...
