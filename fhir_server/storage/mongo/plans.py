"""The writes a MongoDB scope plans: new versions, new indexes and guards of conditional
searches (see ``writes``, which plans them, and ``apply_writes``, which performs them)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fhir_server.storage.outbox import NotificationEvent, SubscriptionRecord

__all__ = ["GrantChange", "GuardWrite", "IndexWrite", "OutboxWrite", "PlannedWrite",
           "VersionWrite", "written_keys"]


@dataclass(frozen=True)
class VersionWrite:
    """A new version: the resource document replacing version ``previous`` (None: new).

    ``previous_pk`` is the replaced document's shard key: filters carry it so that a write
    goes to one shard, and so that MongoDB accepts a change of the owning patient.
    """

    resource: dict[str, Any]
    previous: int | None
    previous_pk: str | None = None


@dataclass(frozen=True)
class IndexWrite:
    """A new search index for the current version ``version`` of resource ``key``."""

    key: str
    version: int
    idx: dict[str, Any] | None
    pk: str
    previous_pk: str


@dataclass(frozen=True)
class GuardWrite:
    """A conditional search's guard: its counter must still be ``seen`` when applied.

    Two scopes that ran the same conditional search both bump the same guard, so the
    second to apply fails instead of creating a duplicate (race-safe conditional create).
    """

    key: str
    seen: int


@dataclass(frozen=True)
class OutboxWrite:
    """A subscription's record to save, or its notification events to append (numbered
    when applied, inside the same transaction: ``storage.mongo.outbox``)."""

    record: SubscriptionRecord | None = None
    events: tuple[NotificationEvent, ...] = ()


@dataclass(frozen=True)
class GrantChange:
    """The counters of grant changes (``grant_memo``) to increment with a write that changes
    a Consent's grants, in the same transaction: ``patient|<id>`` and ``actor|<name>``."""

    keys: tuple[str, ...]


PlannedWrite = VersionWrite | IndexWrite | GuardWrite | OutboxWrite | GrantChange


def written_keys(plan: Sequence[PlannedWrite]) -> set[str]:
    """Return the resources (``Type/id``) a plan writes (guards are not resources), and the
    outbox if it writes there."""
    keys = {w.resource["_id"] for w in plan if isinstance(w, VersionWrite)}
    # Notification events are documents written with the change: atomic only together.
    outbox = {"subscription outbox"} if any(isinstance(w, OutboxWrite) for w in plan) else set()
    return keys | {w.key for w in plan if isinstance(w, IndexWrite)} | outbox
