"""The subscriptions a process matches writes against, keyed so that a write costs a few
dictionary look-ups however many subscriptions there are.

Each subscription is filed under ``(resource type, patient)`` for every type its topic (or
classic criteria) watches and every patient its criteria filter on, or ``(type, None)`` when
it filters on no patient (a facility watching all new Encounters, the insurance portal). A
change of a resource in the compartments of patients P1..Pn looks up ``(type, None)`` and
``(type, Pi)``: with 10,000 citizens' subscriptions, a write about one patient finds the one
or two of that patient, never the others.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from fhir_server.security.caller import Caller
from fhir_server.subscriptions.plans import Plan
from fhir_server.subscriptions.topics import Topic

__all__ = ["Registered", "SubscriptionIndex"]

#: Statuses in which a subscription records events (``off`` records none; an ``error``
#: subscription still counts them, Backport IG errors.html).
RECORDING = frozenset({"requested", "active", "error"})


@dataclass(frozen=True)
class Registered:
    """An indexed subscription: its plan and its owner."""

    plan: Plan
    owner: Caller


class SubscriptionIndex:
    """The subscriptions of the process by id and by ``(type, patient)``."""

    def __init__(self) -> None:
        self._by_id: dict[str, Registered] = {}
        self._buckets: dict[tuple[str, str | None], dict[str, Registered]] = {}
        self._types: dict[str, int] = {}
        self._previous: dict[str, bool] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, id: str) -> Registered | None:
        """The subscription ``id``, if it records events."""
        return self._by_id.get(id)

    def _keys(self, plan: Plan) -> list[tuple[str, str | None]]:
        patients: Iterable[str | None] = plan.patients or (None,)
        return [(kind, patient) for kind in plan.resource_types for patient in patients]

    def put(self, registered: Registered) -> None:
        """File (or refile) a subscription; one that does not record events is dropped."""
        self.remove(registered.plan.id)
        if registered.plan.status not in RECORDING:
            return
        self._by_id[registered.plan.id] = registered
        for key in self._keys(registered.plan):
            self._buckets.setdefault(key, {})[registered.plan.id] = registered
        for kind in registered.plan.resource_types:
            self._types[kind] = self._types.get(kind, 0) + 1
        self._previous.clear()

    def remove(self, id: str) -> None:
        """Forget a subscription."""
        old = self._by_id.pop(id, None)
        if old is None:
            return
        for key in self._keys(old.plan):
            bucket = self._buckets.get(key)
            if bucket is not None:
                bucket.pop(id, None)
                if not bucket:
                    del self._buckets[key]
        for kind in old.plan.resource_types:
            self._types[kind] -= 1
            if not self._types[kind]:
                del self._types[kind]
        self._previous.clear()

    def watches(self, resource_type: str) -> bool:
        """Whether any subscription watches the type (cheap pre-check per write)."""
        return resource_type in self._types

    def candidates(self, resource_type: str, patients: Iterable[str]) -> list[Registered]:
        """The subscriptions that may fire for a change of the type in those patients'
        compartments (their triggers and filters decide)."""
        found = dict(self._buckets.get((resource_type, None), {}))
        for patient in patients:
            found.update(self._buckets.get((resource_type, patient), {}))
        return list(found.values())

    def needs_previous(self, resource_type: str, topics: dict[str, Topic]) -> bool:
        """Whether a subscription on the type has a trigger on the previous version
        (remembered until the subscriptions change; ``forget_topics`` when topics do)."""
        if resource_type not in self._previous:
            self._previous[resource_type] = resource_type in self._types and any(
                r.plan.topic in topics and topics[r.plan.topic].needs_previous(resource_type)
                for r in self._by_id.values())
        return self._previous[resource_type]

    def forget_topics(self) -> None:
        """The topics changed: what :meth:`needs_previous` remembered no longer holds."""
        self._previous.clear()
