"""The subscriptions' hook in the write path (``interactions.changes.ChangeFeed``): the
outbox is written in the same storage transaction as the change.

``admit`` runs on every prepared write before it is applied: a Subscription the server cannot
serve is refused (unknown topic, filter, channel or payload, an endpoint it will not post to,
a citizen's subscription about someone else), and its status is set as the Backport IG says
(a rest-hook waits ``requested`` for its handshake; a websocket is ``active`` at once).
``observe`` runs inside the write's transaction on every stored change: a written
Subscription saves its record (with its owner's caller facts), and a change that fires an
indexed subscription, and that the subscription's owner may read, appends one event for it.
Both land in the store with the change or not at all.

The index of subscriptions follows the subscription records (``changed``, a counter the
store gives each save): every write transaction first reads, inside itself, the records
changed since the index last looked, so that a change committed after a subscription (in any
worker process) is matched against it; what a transaction files that way is provisional
until the delivery worker's next refresh reads it committed (``refresh``, every
``subscription_poll_s``, which also re-reads the last ``_LAG`` changes: MongoDB may commit
them out of counter order). Topics are reloaded every ``TOPIC_RELOAD_S`` and after a topic is
written in this process.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Collection
from typing import Any, cast

from fhir_server import decimals
from fhir_server.errors import FhirError
from fhir_server.interactions.changes import Change
from fhir_server.search.indexing import compartment_patients, index_resource
from fhir_server.search.model import SearchIndex
from fhir_server.search.parse import parse_search
from fhir_server.search.registry import SearchParameterRegistry
from fhir_server.security.actors import ActorNames
from fhir_server.security.caller import Caller
from fhir_server.security.sharing import SharingRules
from fhir_server.security.tokens import insufficient_scope
from fhir_server.settings import Settings
from fhir_server.storage.outbox import (
    NotificationEvent,
    OutboxTransaction,
    SubscriptionRecord,
    SubscriptionState,
)
from fhir_server.storage.port import ResourceStore, StoreTransaction
from fhir_server.subscriptions.endpoints import check_endpoint
from fhir_server.subscriptions.index import Registered, SubscriptionIndex
from fhir_server.subscriptions.owners import (
    WORKER,
    BatchGrants,
    OwnerNames,
    OwnerReads,
    owner_facts,
    owner_of,
)
from fhir_server.subscriptions.plans import Plan, make_plan
from fhir_server.subscriptions.topics import (
    TOPIC_CODE,
    Topic,
    compile_all,
    compile_topic,
    is_topic,
    shipped_topics,
)

__all__ = ["SUBSCRIPTION", "SubscriptionFeed"]

SUBSCRIPTION = "Subscription"
TOPIC_RELOAD_S = 10.0
_LAG = 64
log = logging.getLogger("fhir_server.subscriptions")


class SubscriptionFeed:
    """The outbox side of the write path, and the process's index of subscriptions."""

    def __init__(self, store: ResourceStore, registry: SearchParameterRegistry,
                 settings: Settings, sharing: SharingRules, names: ActorNames) -> None:
        self.store = store
        self.registry = registry
        self.settings = settings
        #: The deployment's Consent rules and the callers' names, as the router has them.
        self.sharing = sharing
        self.owners = OwnerNames(names)
        self.index = SubscriptionIndex()
        self.topics: dict[str, Topic] = {}
        #: The newest ``changed`` of the subscription records this process has read.
        self.seen = 0
        self.topics_loaded_at = 0.0
        self.topics_stale = True
        #: Called after events or a subscription were recorded (the worker wakes up).
        self.on_record: Any = None
        #: Subscriptions filed from a transaction's view, until a refresh confirms them.
        self._provisional: set[str] = set()
        #: The ``changed`` of the record each subscription was last filed from.
        self._filed: dict[str, int] = {}
        #: The transactions that have read the subscription records changed before them.
        self._looked: weakref.WeakSet[StoreTransaction] = weakref.WeakSet()

    # -- loading -------------------------------------------------------------------------

    async def load_topics(self) -> None:
        """Read the topics: the shipped ones and every Basic-wrapped topic in the store."""
        query = parse_search("Basic", [("code", "|".join(TOPIC_CODE)), ("_count", "1000")],
                             self.registry).query
        found = await self.store.search(query)
        stored = [match.resource() for match in found.matches]
        topics = compile_all([*shipped_topics(), *stored], self.registry)
        if self.topics and topics != self.topics:  # file every subscription again
            self.seen, self._filed = 0, {}
        self.topics = topics
        self.topics_loaded_at, self.topics_stale = time.monotonic(), False
        self.index.forget_topics()

    async def refresh(self) -> int:
        """Bring the index up to date with the subscription records changed since the last
        refresh; return how many changed."""
        if self.topics_stale or time.monotonic() - self.topics_loaded_at > TOPIC_RELOAD_S:
            await self.load_topics()
        provisional, self._provisional = self._provisional, set()
        states, latest = await self.store.outbox.changed_since(max(0, self.seen - _LAG))
        for state in states:
            provisional.discard(state.id)
            self._file(state)
        for id in provisional:  # filed by a transaction: committed, or rolled back?
            found = await self.store.outbox.state(id)
            if found is None:
                self.index.remove(id)
                self._filed.pop(id, None)
            else:
                self._file(found, again=True)
        self.seen = max(self.seen, latest)
        return len(states)

    def _file(self, state: SubscriptionState, again: bool = False) -> None:
        """Index the subscription as its record says (unless already filed from it)."""
        if not again and self._filed.get(state.id) == state.changed:
            return
        self._filed[state.id] = state.changed
        if state.deleted:
            self.index.remove(state.id)
            return
        try:
            plan = make_plan(decimals.loads(state.content), self.topics, self.registry)
        except FhirError as exc:  # its topic is gone: it can no longer fire
            log.warning("subscription %s is not indexed: %s", state.id, exc.diagnostics)
            self.index.remove(state.id)
            return
        self.index.put(Registered(plan, owner_of(state.owner)))

    # -- the write path ------------------------------------------------------------------

    def admit(self, write: Any) -> None:
        """Refuse a Subscription or topic the server cannot serve; set a Subscription's
        status (``requested`` for a rest-hook's handshake, ``active`` for a websocket)."""
        resource = write.resource
        if resource is None or write.access.caller == WORKER:
            return
        if write.resource_type == "Basic" and is_topic(resource):
            compile_topic(resource, self.registry)
        if write.resource_type != SUBSCRIPTION:
            return
        plan = make_plan(resource, self.topics, self.registry)
        self._check_owner(plan, write.access.caller)
        if plan.channel == "rest-hook" and plan.status != "off":
            check_endpoint(plan.endpoint, self.settings)
        if plan.status in ("requested", "active"):
            resource["status"] = "requested" if plan.channel == "rest-hook" else "active"

    def _check_owner(self, plan: Plan, caller: Caller) -> None:
        """403 for a patient's subscription about several patients, and for a subscription
        to a patient-only topic by anyone but the one patient it filters on."""
        bound = caller.patient_id is not None and caller.scopes is not None
        if bound and len(plan.patients) > 1:
            raise insufficient_scope("a patient's subscription filters on that patient alone")
        topic = self.topics.get(plan.topic) if plan.topic else None
        if topic is not None and topic.patient_only \
                and not (bound and plan.patients == {caller.patient_id}):
            raise insufficient_scope(f"only the patient, with a token bound to their record, "
                                     f"subscribes to {topic.url}, filtered on their Patient")

    def needs_previous(self, resource_type: str) -> bool:
        """Whether updates of the type must be observed with their previous content."""
        return self.index.needs_previous(resource_type, self.topics)

    async def observe(self, tx: StoreTransaction, change: Change) -> None:
        """Record, inside ``tx``, what ``change`` means for subscriptions."""
        stored = change.stored
        outbox = cast(OutboxTransaction, tx)
        if stored.resource_type == SUBSCRIPTION:
            await self._save(tx, change)
        elif stored.resource_type == "Basic" and any(
                is_topic(r) for r in (change.resource, change.previous) if r):
            self.topics_stale = True
        if tx not in self._looked:  # once per transaction (a round trip on MongoDB)
            self._looked.add(tx)
            states, _ = await outbox.subscriptions_changed_since(self.seen)
            for state in states:
                self._provisional.add(state.id)
                self._file(state)
        if not self.index.watches(stored.resource_type):
            return
        events = await self._events(change)
        if events:
            await outbox.append_notifications(events)
            self._recorded()

    async def _save(self, tx: StoreTransaction, change: Change) -> None:
        resource = change.resource
        content = change.stored.content if resource is not None else b"{}"
        channel = str((((resource or change.previous or {}).get("channel")) or {}).get("type"))
        status = str((resource or {}).get("status", "off"))
        worker = change.caller == WORKER
        heartbeat = None
        if resource is not None:
            try:
                heartbeat = make_plan(resource, self.topics, self.registry).heartbeat_s
            except FhirError:  # written by the worker after its topic was removed
                heartbeat = None
        record = SubscriptionRecord(
            id=change.stored.id, status=status, channel=channel, content=content,
            owner=None if worker else owner_facts(change.caller),
            handshake=not worker and status == "requested", heartbeat_s=heartbeat,
            deleted=resource is None)
        await cast(OutboxTransaction, tx).save_subscription(record)
        self._recorded()

    def _recorded(self) -> None:
        if self.on_record is not None:
            self.on_record()

    async def _events(self, change: Change) -> list[NotificationEvent]:
        stored = change.stored
        subject = change.resource if change.resource is not None else change.previous
        if subject is None:
            return []
        after = change.index if isinstance(change.index, SearchIndex) else None
        patients = after.compartments if after is not None \
            else compartment_patients(subject, self.registry)
        candidates = self.index.candidates(stored.resource_type, patients)
        if not candidates:
            return []
        before = self._previous_index(change)
        fired = [registered for registered in candidates if registered.plan.fires(
            self.topics.get(registered.plan.topic) if registered.plan.topic else None,
            change.kind, stored.resource_type, before, after)]
        indexed = after or before
        context = indexed.compartments if indexed is not None else ()
        grants = BatchGrants(self.store, context)  # read once, if an owner needs them
        events = []
        for registered in fired:
            if not await self._readable(registered.owner, subject, context, grants):
                continue
            plan = registered.plan
            events.append(NotificationEvent(
                plan.id, stored.last_updated, stored.resource_type, stored.id,
                stored.version, change.kind, plan.topic))
        return events

    async def _readable(self, owner: Caller, subject: dict[str, Any],
                        context: Collection[str], grants: BatchGrants) -> bool:
        """Whether the owner may read the changed resource, as its token would now."""
        reads = OwnerReads(await self.owners.named(owner), self.registry, self.sharing, grants)
        await reads.load([(subject, context)])
        return reads.readable(subject, context)

    def _previous_index(self, change: Change) -> SearchIndex | None:
        if change.previous is None:
            return None
        return index_resource(change.previous, self.registry)
