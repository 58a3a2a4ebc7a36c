"""The outbox port: subscriptions' delivery state and the notification events written in the
same storage transaction as the change that caused them.

A write transaction that creates, changes or deletes a Subscription saves its
``SubscriptionRecord`` (``OutboxTransaction.save_subscription``), and one that changes a
resource a subscription watches appends a ``NotificationEvent`` for it
(``append_notifications``): the store numbers the events of each subscription 1, 2, 3...
inside that transaction, so a committed change always has its events, a rolled-back one has
none, and the numbers have no gaps. The delivery worker reads and settles them through the
store's ``Outbox``: it claims a subscription for a while (a lease, so that among the
processes of ``serve --workers N`` one at a time sends a subscription's notifications, in
order), sends, and records what happened.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = [
    "Backlog",
    "NotificationEvent",
    "Outbox",
    "OutboxTransaction",
    "SubscriptionRecord",
    "SubscriptionState",
]


@dataclass(frozen=True)
class SubscriptionRecord:
    """What a write of a Subscription stores about it besides the resource.

    ``owner`` is the JSON of the owner's caller facts (None: keep the stored owner);
    ``handshake`` asks for a handshake before anything else is sent (and resets the retry
    state); ``deleted`` marks a deleted Subscription (it records no more events).
    """

    id: str
    status: str
    channel: str
    content: bytes
    owner: bytes | None = None
    handshake: bool = False
    heartbeat_s: int | None = None
    deleted: bool = False


@dataclass(frozen=True)
class NotificationEvent:
    """One event of a subscription: what changed (the focus, its version and the kind of
    change) and when. ``number`` is given by the store (1, 2, ... per subscription)."""

    subscription: str
    timestamp: str
    focus_type: str
    focus_id: str
    focus_version: int
    change: str
    topic: str | None = None
    number: int = 0


@dataclass(frozen=True)
class SubscriptionState:
    """A subscription's stored state: the record, the numbers of its last event and of the
    last one delivered, and the retry state of its delivery (times are epoch seconds)."""

    id: str
    status: str
    channel: str
    content: bytes
    owner: bytes
    events: int = 0
    delivered: int = 0
    attempts: int = 0
    next_attempt: float = 0.0
    failing_since: float | None = None
    handshake: bool = False
    heartbeat_s: int | None = None
    last_sent: float = 0.0
    error: str | None = None
    changed: int = 0
    deleted: bool = False


@dataclass(frozen=True)
class Backlog:
    """What the outbox holds undelivered: events recorded and not yet delivered, the
    subscriptions they belong to, and the subscriptions whose last attempt failed (being
    retried)."""

    events: int = 0
    subscriptions: int = 0
    retrying: int = 0


class OutboxTransaction(Protocol):
    """The outbox writes of a store transaction (see the module docstring)."""

    async def save_subscription(self, record: SubscriptionRecord) -> None:
        """Create or update the subscription's state (its counters are kept)."""
        ...

    async def append_notifications(self, events: Sequence[NotificationEvent]) -> None:
        """Append events, numbering each after its subscription's last one."""
        ...

    async def subscriptions_changed_since(
        self, seq: int
    ) -> tuple[list[SubscriptionState], int]:
        """``Outbox.changed_since`` as this transaction sees it (what committed before it
        took the write lock, and its own writes)."""
        ...


class Outbox(Protocol):
    """The delivery worker's view of the outbox (each call its own small transaction)."""

    async def changed_since(self, seq: int) -> tuple[list[SubscriptionState], int]:
        """The subscriptions whose record changed after ``seq``, and the newest ``changed``."""
        ...

    async def state(self, id: str) -> SubscriptionState | None:
        """One subscription's state."""
        ...

    async def due(self, now: float, limit: int) -> list[str]:
        """Subscriptions with something to send (events not delivered, a handshake, a
        heartbeat) whose next attempt is due and which no worker holds."""
        ...

    async def claim(self, id: str, worker: str, until: float, now: float) -> bool:
        """Take the subscription's lease until ``until`` unless another worker holds it."""
        ...

    async def claim_many(self, ids: Sequence[str], worker: str, until: float,
                         now: float) -> list[str]:
        """``claim`` for several subscriptions at once (one write on SQLite); return the ids
        claimed, in the order given."""
        ...

    async def settle(self, id: str, worker: str, changes: Mapping[str, Any]) -> bool:
        """Set fields of the state (``delivered``, ``attempts``, ``next_attempt``,
        ``failing_since``, ``handshake``, ``last_sent``, ``error``) and release the lease;
        False (nothing changed) when ``worker`` no longer holds it."""
        ...

    async def events(self, id: str, first: int, last: int | None,
                     limit: int) -> list[NotificationEvent]:
        """The subscription's events numbered ``first`` to ``last`` (inclusive), in order."""
        ...

    async def purge(self, before: float) -> int:
        """Delete events created before ``before`` (epoch seconds); return how many."""
        ...

    async def backlog(self) -> Backlog:
        """What waits over the live (``requested``, ``active``) subscriptions."""
        ...
