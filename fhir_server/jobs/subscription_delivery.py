"""The delivery worker: sends what the outbox holds, per subscription in event order.

One worker runs in each server process (``start``). Every ``subscription_poll_s`` (and at
once when a write of this process recorded events) it refreshes the process's index of
subscriptions, asks the outbox for subscriptions with something due (undelivered events, a
handshake, a heartbeat), and claims them (in one write) for ``LEASE_S``: with ``serve
--workers N`` the processes share one outbox, and the lease makes one of them at a time the
sender of a subscription, so its notifications go out in order and each event is sent by one process
(a process killed mid-send leaves a lease that expires; the next sender starts again from
the last event recorded as delivered: delivery is at least once). A websocket subscription
is claimed only by a process holding a connection for it.

For a claimed subscription: a pending handshake is sent first (then the subscription becomes
``active``, or after ``subscription_handshake_window_s`` of failures ``error``); then up to
``max_count`` events after the last delivered, each judged for the owner *now*
(``subscriptions.owners.OwnerReads``, with the Consent grants of the batch's patients read
in one query; a withheld event keeps its number and loses its
focus); or a heartbeat when ``heartbeat_s`` passed without a notification. A failed attempt
is retried with exponential back-off (``subscription_retry_first_s`` doubling up to
``subscription_retry_max_interval_s``) for ``subscription_retry_window_s`` (24 h), then the
subscription goes to ``error`` with the reason; events keep being recorded meanwhile and
are sent, in order, once the subscriber asks for the subscription again (``requested``).
Status changes are written as the server's delivery worker through the router
(``_set_status``). Events older than ``subscription_event_retention_days`` are purged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from fhir_server.errors import FhirError
from fhir_server.interactions.context import Services
from fhir_server.jobs.rest_hook import post_notification
from fhir_server.jobs.websocket_hub import WebSocketHub
from fhir_server.metrics.catalogue import observe_backlog, observe_delivery
from fhir_server.router.door import handle
from fhir_server.router.request import FhirRequest
from fhir_server.search.indexing import compartment_patients
from fhir_server.storage.outbox import NotificationEvent, SubscriptionState
from fhir_server.subscriptions.feed import SubscriptionFeed
from fhir_server.subscriptions.focus import Versions, focus_versions, shown
from fhir_server.subscriptions.index import Registered
from fhir_server.subscriptions.notifications import EventEntry, Notice, notification
from fhir_server.subscriptions.owners import WORKER, BatchGrants, OwnerReads
from fhir_server.subscriptions.plans import Content

__all__ = ["DeliveryWorker", "Running", "start"]

log = logging.getLogger("fhir_server.subscriptions")

#: How long a claimed subscription stays with the worker that claimed it.
LEASE_S = 120.0
#: Subscriptions claimed per look at the outbox.
_BATCH = 64
#: Deliveries in flight at once in one process.
_CONCURRENCY = 32
_PURGE_EVERY_S = 3600.0
#: How often the worker reads the outbox's backlog for /metrics.
_BACKLOG_EVERY_S = 15.0


class DeliveryWorker:
    """Claims due subscriptions and sends their notifications (see the module docstring)."""

    def __init__(self, services: Services, feed: SubscriptionFeed, hub: WebSocketHub,
                 client: httpx.AsyncClient | None = None) -> None:
        self.services = services
        self.feed = feed
        self.hub = hub
        self.id = uuid.uuid4().hex
        self.wake = asyncio.Event()
        #: Posts rest-hook notifications (never follows a redirect).
        self.client = client or httpx.AsyncClient(follow_redirects=False)
        self._slots = asyncio.Semaphore(_CONCURRENCY)
        self._busy: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._purged_at = 0.0
        self._counted_at = 0.0
        #: Set by ``Running.stop``: the loop ends even if a cancellation is lost on the way.
        self.stopping = False
        feed.on_record = self.wake.set

    @property
    def settings(self) -> Any:
        return self.services.settings

    async def run(self) -> None:
        """Work until stopped (a failing round is logged and the next one comes)."""
        while not self.stopping:
            await self._nap()
            if self.stopping:
                return
            self.wake.clear()
            try:
                await self.step()
            except Exception:
                log.exception("a round of subscription delivery failed")

    async def _nap(self) -> None:
        """Wait for a wake-up or ``subscription_poll_s``. Not ``asyncio.wait_for``: on
        Python 3.11 a cancellation arriving with its timeout could be lost, and the worker
        then never stopped."""
        alarm = asyncio.get_running_loop().call_later(self.settings.subscription_poll_s,
                                                      self.wake.set)
        try:
            await self.wake.wait()
        finally:
            alarm.cancel()

    async def step(self) -> None:
        """One round: refresh the index, purge old events, claim and start what is due."""
        await self.feed.refresh()
        now = time.time()
        if now - self._purged_at > _PURGE_EVERY_S:
            self._purged_at = now
            keep = self.settings.subscription_event_retention_days * 86400.0
            await self.services.store.outbox.purge(now - keep)
        if now - self._counted_at > _BACKLOG_EVERY_S and self.settings.metrics != "off":
            self._counted_at = now
            await self.count_backlog()
        wanted: dict[str, Registered] = {}
        for id in await self.services.store.outbox.due(now, _BATCH):
            registered = self.feed.index.get(id)
            if id in self._busy or registered is None:
                continue
            if registered.plan.channel == "websocket" and not self.hub.holds(id):
                continue
            wanted[id] = registered
        # One claim for all (on SQLite one write turn, not one per subscription).
        for id in await self.services.store.outbox.claim_many(list(wanted), self.id,
                                                               now + LEASE_S, now):
            self._start(id, wanted[id])

    async def count_backlog(self) -> None:
        """Read what waits in the outbox into /metrics (every ``_BACKLOG_EVERY_S``)."""
        backlog = await self.services.store.outbox.backlog()
        observe_backlog(backlog.events, backlog.subscriptions, backlog.retrying)

    def _start(self, id: str, registered: Registered) -> None:
        self._busy.add(id)
        task = asyncio.get_running_loop().create_task(self._deliver(id, registered))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for the deliveries in flight (tests; shutting down)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        """Cancel what is in flight and close the HTTP client."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
        await self.client.aclose()

    async def _deliver(self, id: str, registered: Registered) -> None:
        try:
            async with self._slots:
                state = await self.services.store.outbox.state(id)
                if state is not None:
                    await Delivery(self, state, registered).run()
        except Exception:
            log.exception("delivering subscription %s failed", id)
            await self.services.store.outbox.settle(id, self.id, {})
        finally:
            self._busy.discard(id)
            self.wake.set()  # more may be due (the next batch of events)


@dataclass
class Delivery:
    """One claimed subscription's turn: one handshake, notification or heartbeat."""

    worker: DeliveryWorker
    state: SubscriptionState
    registered: Registered

    @property
    def services(self) -> Services:
        return self.worker.services

    async def run(self) -> None:
        state, now = self.state, time.time()
        if state.handshake:
            await self._handshake()
        elif state.status == "active" and state.delivered < state.events:
            await self._events()
        elif state.status == "active" and state.heartbeat_s is not None \
                and state.last_sent + state.heartbeat_s <= now:
            await self._heartbeat()
        else:
            await self._settle({})

    def _notice(self, kind: str, status: str | None = None, last: int | None = None) -> Notice:
        """The status of a notification; ``last``: the number of its last event (the events
        since the start, inclusive of this notification)."""
        plan = self.registered.plan
        return Notice(plan.id, plan.topic, status or self.state.status, kind,
                      self.state.events if last is None else last, plan.content,
                      plan.fhir_version)

    async def _handshake(self) -> None:
        bundle = notification(self._notice("handshake", "requested"), [],
                              self.services.base_url)
        failure = await self._send(bundle)
        if failure is None:
            self._count("handshake", "sent")
            if self.state.status != "active":
                await _set_status(self.services, self.state.id, "active", None)
            await self._settle({"handshake": 0, **_success()})
        else:
            await self._failed("handshake", failure)

    async def _events(self) -> None:
        plan = self.registered.plan
        found = await self.services.store.outbox.events(
            self.state.id, self.state.delivered + 1, None, plan.max_count)
        if not found:  # purged before they could be sent: go on after them
            await self._settle({"delivered": self.state.events})
            return
        entries = await self._entries(found)
        notice = self._notice("event-notification", last=found[-1].number)
        failure = await self._send(notification(notice, entries, self.services.base_url))
        if failure is None:
            withheld = sum(entry.focus is None for entry in entries)
            self._count("event-notification", "sent", len(entries) - withheld, withheld)
            await self._settle({"delivered": found[-1].number, **_success()})
        else:
            await self._failed("event-notification", failure)

    async def _heartbeat(self) -> None:
        failure = await self._send(notification(self._notice("heartbeat"), [],
                                                self.services.base_url))
        if failure is None:
            self._count("heartbeat", "sent")
            await self._settle(_success())
        else:
            await self._failed("heartbeat", failure)

    async def _entries(self, events: list[NotificationEvent]) -> list[EventEntry]:
        """The events as the owner may see them now (no focus when it may not): their
        versions are read first, then the Consent grants of all their patients at once."""
        versions = [await focus_versions(self.services, event) for event in events]
        reads = await self._owner_reads(versions)
        return [self._entry(event, shown(found, reads.readable) if reads is not None else None)
                for event, found in zip(events, versions, strict=True)]

    def _entry(self, event: NotificationEvent, content: dict[str, Any] | None) -> EventEntry:
        focus = f"{event.focus_type}/{event.focus_id}" if content is not None else None
        full = self.registered.plan.content is Content.FULL_RESOURCE and event.change != "delete"
        return EventEntry(event.number, event.timestamp, focus, event.change,
                          content if full else None)

    async def _owner_reads(self, versions: list[Versions]) -> OwnerReads | None:
        """The owner's reads of the batch's versions, now (None: its authorization was
        revoked)."""
        services, owner = self.services, self.registered.owner
        if services.verifier is not None and services.verifier.revoked(owner.grant_id):
            return None
        judged = [pair for found in versions for pair in found]
        patients = set().union(*(compartment_patients(r, services.registry) for r, _ in judged),
                               *(c for _, c in judged))
        reads = OwnerReads(await self.worker.feed.owners.named(owner), services.registry,
                           services.sharing, BatchGrants(services.store, patients))
        await reads.load(judged)
        return reads

    async def _send(self, bundle: dict[str, Any]) -> str | None:
        """Send on the subscription's channel; None on success, else why not."""
        body = orjson.dumps(bundle)
        plan = self.registered.plan
        if plan.channel == "websocket":
            sent = await self.worker.hub.send(plan.id, body.decode())
            return None if sent else "no websocket connection"
        return await post_notification(self.worker.client, plan, body,
                                       self.services.settings)

    def _count(self, kind: str, outcome: str, focus: int = 0, withheld: int = 0) -> None:
        """Count the attempt for /metrics (``sent``, ``retry`` or ``error``)."""
        if self.services.settings.metrics != "off":
            observe_delivery(kind, self.registered.plan.channel, outcome, focus, withheld)

    async def _settle(self, changes: dict[str, Any]) -> None:
        await self.services.store.outbox.settle(self.state.id, self.worker.id, changes)

    async def _failed(self, kind: str, reason: str) -> None:
        """Record a failed attempt: retry later, or give up after the window of ``kind``
        (``subscription_handshake_window_s`` for a handshake, else the retry window)."""
        settings, now = self.services.settings, time.time()
        window = (settings.subscription_handshake_window_s if kind == "handshake"
                  else settings.subscription_retry_window_s)
        gives_up = self.registered.plan.channel != "websocket" \
            and now - (self.state.failing_since or now) >= window
        self._count(kind, "error" if gives_up else "retry")
        if self.registered.plan.channel == "websocket":
            await self._settle({})  # the events wait for the next connection
            return
        since = self.state.failing_since or now
        attempts = self.state.attempts + 1
        if gives_up:
            await _set_status(self.services, self.state.id, "error", reason)
            await self._settle({"attempts": attempts, "failing_since": since,
                                "error": reason})
            log.warning("subscription %s is in error: %s", self.state.id, reason)
            return
        delay = min(settings.subscription_retry_first_s * 2 ** (attempts - 1),
                    settings.subscription_retry_max_interval_s)
        await self._settle({"attempts": attempts, "failing_since": since, "error": reason,
                            "next_attempt": now + delay})


def _success() -> dict[str, Any]:
    return {"attempts": 0, "failing_since": None, "error": None, "next_attempt": 0.0,
            "last_sent": time.time()}


async def _set_status(services: Services, id: str, status: str, error: str | None) -> None:
    """Write the Subscription's status (and ``error``) as the delivery worker, through the
    router: the one way this job changes a resource."""
    try:
        stored = await services.store.read("Subscription", id)
    except FhirError:
        return  # deleted meanwhile
    resource = stored.resource()
    resource["status"] = status
    if error:
        resource["error"] = error
    else:
        resource.pop("error", None)
    request = FhirRequest("PUT", "update", "Subscription", id, body=resource,
                          if_match=f'W/"{stored.version}"')
    try:
        await handle(services, request, WORKER)
    except FhirError as exc:  # changed by its subscriber meanwhile: theirs wins
        log.info("status %s of subscription %s not written: %s", status, id, exc.diagnostics)


@dataclass
class Running:
    """The worker task of a server process and what it needs to stop."""

    worker: DeliveryWorker
    task: asyncio.Task[None]

    async def stop(self) -> None:
        self.worker.stopping = True
        self.worker.wake.set()
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        await self.worker.close()


async def start(services: Services, hub: WebSocketHub,
                client: httpx.AsyncClient | None = None) -> Running:
    """Load the subscriptions, hook the outbox into the write path and start the worker."""
    feed = SubscriptionFeed(services.store, services.registry, services.settings,
                            services.sharing, services.names)
    await feed.refresh()
    services.changes = feed
    worker = DeliveryWorker(services, feed, hub, client)
    return Running(worker, asyncio.get_running_loop().create_task(worker.run()))
