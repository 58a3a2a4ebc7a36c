"""Contract: the outbox. Events commit with the change that caused them or not at all, are
numbered 1, 2, 3... per subscription without gaps, and one worker at a time holds a
subscription's lease."""

from __future__ import annotations

import time
from typing import Any, cast

import pytest

from fhir_server.storage.outbox import (
    Backlog,
    NotificationEvent,
    OutboxTransaction,
    SubscriptionRecord,
)
from fhir_server.storage.port import ResourceStore
from tests.builders import observation


class Boom(Exception):
    """Raised inside a scope to abandon it."""


def _record(id: str, **changes: Any) -> SubscriptionRecord:
    values: dict[str, Any] = {"id": id, "status": "active", "channel": "rest-hook",
                              "content": b'{"resourceType":"Subscription"}', "owner": b"{}"}
    return SubscriptionRecord(**{**values, **changes})


def _event(subscription: str, focus: str) -> NotificationEvent:
    return NotificationEvent(subscription, "2026-12-06T00:00:00Z", "Observation", focus, 1,
                             "create", "https://topic")


async def _with_subscriptions(store: ResourceStore, *ids: str) -> None:
    async with store.transaction() as tx:
        for id in ids:
            await cast(OutboxTransaction, tx).save_subscription(_record(id))


async def test_events_are_numbered_per_subscription_without_gaps(store: ResourceStore) -> None:
    await _with_subscriptions(store, "s1", "s2")
    for n in range(3):
        async with store.transaction() as tx:
            await tx.create({**observation(), "id": f"o{n}"}, None)
            await cast(OutboxTransaction, tx).append_notifications(
                [_event("s1", f"o{n}"), *([_event("s2", f"o{n}")] if n else [])])
    found = await store.outbox.events("s1", 1, None, 10)
    assert [(e.number, e.focus_id) for e in found] == [(1, "o0"), (2, "o1"), (3, "o2")]
    assert [e.number for e in await store.outbox.events("s2", 1, None, 10)] == [1, 2]
    assert [e.number for e in await store.outbox.events("s1", 2, 2, 10)] == [2]
    state = await store.outbox.state("s1")
    assert state is not None and (state.events, state.delivered) == (3, 0)


async def test_a_rolled_back_change_leaves_no_event_and_no_number(store: ResourceStore) -> None:
    await _with_subscriptions(store, "s1")
    with pytest.raises(Boom):
        async with store.transaction() as tx:
            await tx.create({**observation(), "id": "lost"}, None)
            await cast(OutboxTransaction, tx).append_notifications([_event("s1", "lost")])
            raise Boom
    async with store.transaction() as tx:
        await tx.create({**observation(), "id": "kept"}, None)
        await cast(OutboxTransaction, tx).append_notifications([_event("s1", "kept")])
    found = await store.outbox.events("s1", 1, None, 10)
    assert [(e.number, e.focus_id) for e in found] == [(1, "kept")]


async def test_saving_a_subscription_keeps_its_counters_and_a_handshake_resets_retries(
    store: ResourceStore,
) -> None:
    await _with_subscriptions(store, "s1")
    async with store.transaction() as tx:
        await cast(OutboxTransaction, tx).append_notifications([_event("s1", "o1")])
    now = time.time()
    assert await store.outbox.claim("s1", "w", now + 60, now)
    assert await store.outbox.settle("s1", "w", {"attempts": 3, "error": "down"})
    async with store.transaction() as tx:
        await cast(OutboxTransaction, tx).save_subscription(
            _record("s1", status="requested", owner=None, handshake=True))
    state = await store.outbox.state("s1")
    assert state is not None
    assert (state.events, state.attempts, state.error, state.handshake) == (1, 0, None, True)
    changed, latest = await store.outbox.changed_since(0)
    assert [s.id for s in changed] == ["s1"] and latest == state.changed


async def test_one_worker_at_a_time_holds_a_subscription(store: ResourceStore) -> None:
    await _with_subscriptions(store, "s1")
    async with store.transaction() as tx:
        await cast(OutboxTransaction, tx).append_notifications([_event("s1", "o1")])
    now = time.time()
    assert await store.outbox.due(now, 10) == ["s1"]
    assert await store.outbox.claim("s1", "first", now + 60, now)
    assert not await store.outbox.claim("s1", "second", now + 60, now)
    assert await store.outbox.due(now, 10) == []
    assert not await store.outbox.settle("s1", "second", {"delivered": 1})
    assert await store.outbox.settle("s1", "first", {"delivered": 1})
    assert await store.outbox.due(now, 10) == []
    later = now + 120  # an expired lease of a worker that died is taken over
    assert await store.outbox.claim("s1", "first", now + 60, now)
    assert await store.outbox.claim("s1", "second", later + 60, later)


async def test_several_subscriptions_are_claimed_at_once_but_none_held_by_another(
    store: ResourceStore,
) -> None:
    await _with_subscriptions(store, "s1", "s2", "s3")
    now = time.time()
    assert await store.outbox.claim("s2", "other", now + 60, now)
    claimed = await store.outbox.claim_many(["s3", "s2", "s1", "none"], "w", now + 60, now)
    assert claimed == ["s3", "s1"]
    assert not await store.outbox.claim("s1", "other", now + 60, now)
    assert await store.outbox.claim_many([], "w", now + 60, now) == []


async def test_old_events_are_purged(store: ResourceStore) -> None:
    await _with_subscriptions(store, "s1")
    async with store.transaction() as tx:
        await cast(OutboxTransaction, tx).append_notifications([_event("s1", "o1")])
    assert await store.outbox.purge(time.time() - 3600) == 0
    assert await store.outbox.purge(time.time() + 1) == 1
    assert await store.outbox.events("s1", 1, None, 10) == []


async def test_the_backlog_counts_what_waits_for_live_subscriptions(
    store: ResourceStore,
) -> None:
    await _with_subscriptions(store, "s1", "s2", "off")
    async with store.transaction() as tx:
        await cast(OutboxTransaction, tx).save_subscription(_record("off", status="off"))
        await cast(OutboxTransaction, tx).append_notifications(
            [_event("s1", "o1"), _event("s1", "o2"), _event("s2", "o1"), _event("off", "o1")])
    assert await store.outbox.backlog() == Backlog(events=3, subscriptions=2, retrying=0)
    now = time.time()
    assert await store.outbox.claim("s1", "w", now + 60, now)
    assert await store.outbox.settle("s1", "w", {"delivered": 1, "attempts": 2})
    assert await store.outbox.backlog() == Backlog(events=2, subscriptions=2, retrying=1)
