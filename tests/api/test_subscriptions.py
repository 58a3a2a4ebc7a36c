"""Subscriptions as the Backport IG describes them (handshake, heartbeat, event numbers,
``$status``, ``$events``, payload kinds), classic criteria, delivery after a receiver was
down, retries ending in ``error``, and what a subscription never delivers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from fhir_server.authorization.store import AuthStore, TokenFamily
from fhir_server.security.clients import auth_database_path
from fhir_server.settings import Settings
from tests.api.subscribing import (
    ENDPOINT,
    Receiver,
    Subscribed,
    classic_subscription,
    events_of,
    new_encounter,
    new_lab,
    status_of,
    subscribed_app,
    topic_subscription,
    until,
)
from tests.api.test_metrics import figures, value
from tests.api.two_patients import FHIR


@pytest_asyncio.fixture
async def server(settings: Settings) -> AsyncIterator[Subscribed]:
    async for running in subscribed_app(settings, Receiver()):
        yield running


async def _a_on(server: Subscribed, topic: str, **options: Any) -> str:
    """An active subscription to ``topic`` filtered on A's record."""
    id = await server.subscribe(topic_subscription(
        topic, f"patient=Patient/{server.world.a.patient}", **options))
    await server.active(id)
    return id


# -- handshake, numbering, payloads ---------------------------------------------------------


async def test_a_rest_hook_subscription_is_requested_until_its_handshake_is_accepted(
    server: Subscribed,
) -> None:
    response = await server.http.post("/fhir/Subscription", json=topic_subscription(
        "encounter-new", f"Encounter?patient=Patient/{server.world.a.patient}"), headers=FHIR)
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "requested"
    id = response.json()["id"]
    await server.active(id)
    (handshake,) = server.receiver.bundles(id, "handshake")
    headers, _ = next(post for post in server.receiver.posts if post[1] is handshake)
    assert handshake["type"] == "history"
    assert handshake["entry"][0]["request"] == {"method": "GET",
                                                "url": f"Subscription/{id}/$status"}
    status = status_of(handshake)
    assert (status["status"], status["events-since-subscription-start"]) == ("requested", "0")
    assert headers["x-api-key"] == "secret-of-the-receiver"
    assert headers["content-type"] == "application/fhir+json"


async def test_events_are_numbered_from_one_without_gaps_in_commit_order(
    server: Subscribed,
) -> None:
    id = await _a_on(server, "encounter-new")
    made = [await server.create(new_encounter(server.world)) for _ in range(4)]
    await until(lambda: len(server.receiver.events(id)) == 4)
    assert server.receiver.events(id) == [(n + 1, f"Encounter/{made[n]}") for n in range(4)]
    numbers = [status_of(b)["events-since-subscription-start"]
               for b in server.receiver.bundles(id, "event-notification")]
    assert numbers == ["1", "2", "3", "4"]


async def test_payload_kinds_empty_id_only_and_full_resource(server: Subscribed) -> None:
    ids = {content: await _a_on(server, "observation", content=content)
           for content in ("empty", "id-only", "full-resource")}
    lab = await server.create(new_lab(server.world))
    await until(lambda: all(server.receiver.events(id) for id in ids.values()))
    empty, = server.receiver.bundles(ids["empty"], "event-notification")
    assert events_of(empty) == [(1, None)] and len(empty["entry"]) == 1
    assert "topic" not in status_of(empty)
    id_only, = server.receiver.bundles(ids["id-only"], "event-notification")
    assert events_of(id_only) == [(1, f"Observation/{lab}")]
    assert [("resource" in e, e["fullUrl"].endswith(lab)) for e in id_only["entry"][1:]] \
        == [(False, True)]
    full, = server.receiver.bundles(ids["full-resource"], "event-notification")
    assert full["entry"][1]["resource"]["id"] == lab
    assert full["entry"][1]["request"] == {"method": "POST", "url": "Observation"}


async def test_a_filter_on_one_patient_keeps_other_patients_changes_out(
    server: Subscribed,
) -> None:
    id = await _a_on(server, "encounter-new")
    await server.create(new_encounter(server.world, of="b"))
    mine = await server.create(new_encounter(server.world))
    await until(lambda: server.receiver.events(id))
    assert server.receiver.events(id) == [(1, f"Encounter/{mine}")]


async def test_the_finished_visit_topic_fires_on_the_change_to_finished_only(
    server: Subscribed,
) -> None:
    id = await _a_on(server, "encounter-finished")
    encounter = new_encounter(server.world, status="in-progress")
    encounter_id = await server.create(encounter)
    for status in ("finished", "finished"):
        changed = {**encounter, "id": encounter_id, "status": status,
                   "reasonCode": [{"text": f"visit {status} {len(status)}"}]}
        response = await server.http.put(f"/fhir/Encounter/{encounter_id}", json=changed,
                                         headers=FHIR)
        assert response.status_code == 200, response.text
        encounter = changed | {"reasonCode": [{"text": "changed again"}]}
    await until(lambda: server.receiver.events(id))
    await server.worker.drain()
    assert server.receiver.events(id) == [(1, f"Encounter/{encounter_id}")]


async def test_a_classic_criteria_subscription_notifies_what_matches_its_search(
    server: Subscribed,
) -> None:
    criteria = f"Observation?patient=Patient/{server.world.a.patient}&category=laboratory"
    id = await server.subscribe(classic_subscription(criteria))
    await server.active(id)
    await server.create(new_lab(server.world, "vital-signs"))
    lab = await server.create(new_lab(server.world))
    await until(lambda: server.receiver.events(id))
    assert server.receiver.events(id) == [(1, f"Observation/{lab}")]
    assert "topic" not in status_of(server.receiver.bundles(id, "event-notification")[0])


async def test_a_heartbeat_comes_when_nothing_else_was_sent(server: Subscribed) -> None:
    id = await _a_on(server, "condition", heartbeat=1)
    await until(lambda: server.receiver.bundles(id, "heartbeat"), timeout=5)
    beat = server.receiver.bundles(id, "heartbeat")[0]
    assert status_of(beat)["status"] == "active"
    assert len(beat["entry"]) == 1


# -- $status and $events --------------------------------------------------------------------


async def test_status_and_events_tell_a_subscriber_what_happened(server: Subscribed) -> None:
    id = await _a_on(server, "observation")
    labs = [await server.create(new_lab(server.world)) for _ in range(3)]
    await until(lambda: len(server.receiver.events(id)) == 3)
    status = await server.http.get(f"/fhir/Subscription/{id}/$status")
    assert status.status_code == 200, status.text
    (entry,) = status.json()["entry"]
    assert status_of({"entry": [entry]})["events-since-subscription-start"] == "3"
    assert status_of({"entry": [entry]})["type"] == "query-status"
    listed = await server.http.get("/fhir/Subscription/$status", params={"id": id})
    assert listed.json()["total"] == 1
    events = await server.http.get(f"/fhir/Subscription/{id}/$events",
                                   params={"eventsSinceNumber": "2", "eventsUntilNumber": "3"})
    assert events.status_code == 200, events.text
    assert status_of(events.json())["type"] == "query-event"
    assert events_of(events.json()) == [(2, f"Observation/{labs[1]}"),
                                        (3, f"Observation/{labs[2]}")]
    empty = await server.http.get(f"/fhir/Subscription/{id}/$events",
                                  params={"content": "empty"})
    assert [number for number, _ in events_of(empty.json())] == [1, 2, 3]
    assert len(empty.json()["entry"]) == 1
    bad = await server.http.get(f"/fhir/Subscription/{id}/$events",
                                params={"eventsSinceNumber": "two"})
    assert bad.status_code == 400


# -- a receiver that is down ----------------------------------------------------------------


async def test_a_receiver_that_was_down_gets_everything_afterwards_in_order(
    server: Subscribed,
) -> None:
    id = await _a_on(server, "observation")
    server.receiver.up = False
    labs = [await server.create(new_lab(server.world)) for _ in range(5)]
    await until(lambda: server.receiver.refused >= 3)
    assert server.receiver.events(id) == []
    state = await server.app.state.services.store.outbox.state(id)
    assert state.events == 5 and state.delivered == 0 and state.attempts >= 1
    server.receiver.up = True
    await until(lambda: len(server.receiver.events(id)) == 5)
    assert server.receiver.events(id) == [(n + 1, f"Observation/{labs[n]}") for n in range(5)]
    subscription = (await server.http.get(f"/fhir/Subscription/{id}")).json()
    assert subscription["status"] == "active"


async def test_the_delivery_queue_and_retries_are_counted_in_metrics(server: Subscribed) -> None:
    id = await _a_on(server, "observation")
    kinds = {"kind": "event-notification", "channel": "rest-hook"}
    before = await figures(server.http)
    server.receiver.up = False
    for _ in range(2):
        await server.create(new_lab(server.world))
    outbox = server.app.state.services.store.outbox
    for _ in range(500):  # the failed attempt is recorded after the receiver refused it
        state = await outbox.state(id)
        if state.attempts >= 1 and state.events == 2:
            break
        await asyncio.sleep(0.02)
    await server.worker.count_backlog()
    down = await figures(server.http)
    assert value(down, "fhir_subscription_events_waiting") == 2
    assert value(down, "fhir_subscriptions_waiting") == 1
    assert value(down, "fhir_subscriptions_retrying") == 1
    assert value(down, "fhir_subscription_deliveries_total", **kinds, outcome="retry") \
        - value(before, "fhir_subscription_deliveries_total", **kinds, outcome="retry") >= 1
    server.receiver.up = True
    await until(lambda: len(server.receiver.events(id)) == 2)
    await server.worker.drain()  # the delivery is recorded after the post
    await server.worker.count_backlog()
    up = await figures(server.http)
    assert value(up, "fhir_subscription_events_waiting") == 0
    assert value(up, "fhir_subscriptions_retrying") == 0
    assert value(up, "fhir_subscription_deliveries_total", **kinds, outcome="sent") \
        - value(before, "fhir_subscription_deliveries_total", **kinds, outcome="sent") >= 1
    assert value(up, "fhir_subscription_events_total", outcome="focus") \
        - value(before, "fhir_subscription_events_total", outcome="focus") == 2


@pytest_asyncio.fixture
async def giving_up_soon(settings: Settings) -> AsyncIterator[Subscribed]:
    """A server that retries a failing rest-hook for half a second only."""
    async for running in subscribed_app(settings, Receiver(), subscription_retry_window_s=0.5):
        yield running


async def _subscription(server: Subscribed, id: str) -> dict[str, Any]:
    return dict((await server.http.get(f"/fhir/Subscription/{id}")).json())


async def test_retries_end_in_error_with_the_reason_and_a_new_request_resumes(
    giving_up_soon: Subscribed,
) -> None:
    server, receiver = giving_up_soon, giving_up_soon.receiver
    id = await _a_on(server, "observation")
    receiver.up = False
    first = await server.create(new_lab(server.world))
    await until(lambda: receiver.refused >= 2)
    subscription = await _subscription(server, id)
    for _ in range(500):
        if subscription["status"] == "error":
            break
        await asyncio.sleep(0.02)
        subscription = await _subscription(server, id)
    assert subscription["status"] == "error"
    assert "503" in subscription["error"]
    second = await server.create(new_lab(server.world))  # still counted while in error
    status_now = await server.http.get(f"/fhir/Subscription/{id}/$status")
    flat = status_of({"entry": status_now.json()["entry"]})
    assert (flat["status"], flat["events-since-subscription-start"]) == ("error", "2")
    assert "503" in flat["error"]["text"]
    receiver.up = True
    subscription["status"] = "requested"  # the subscriber asks for it again
    response = await server.http.put(f"/fhir/Subscription/{id}", json=subscription,
                                     headers=FHIR)
    assert response.status_code == 200, response.text
    await until(lambda: len(receiver.events(id)) == 2)
    assert receiver.events(id) == [(1, f"Observation/{first}"), (2, f"Observation/{second}")]


# -- transactions ---------------------------------------------------------------------------


async def test_a_transaction_records_its_events_and_a_failed_one_records_none(
    server: Subscribed,
) -> None:
    id = await _a_on(server, "observation")
    entries = [{"fullUrl": f"urn:uuid:{n}0000000-0000-4000-8000-000000000000",
                "resource": new_lab(server.world),
                "request": {"method": "POST", "url": "Observation"}} for n in range(2)]
    broken = {"resourceType": "Bundle", "type": "transaction",
              "entry": [*entries, {"request": {"method": "DELETE", "url": "Observation/gone"},
                                   "resource": {"resourceType": "Basic"}}]}
    failed = await server.http.post("/fhir", json={**broken, "entry": [
        *entries, {"request": {"method": "PUT", "url": "Observation/x1"},
                   "resource": {"resourceType": "Observation", "id": "x1"}}]}, headers=FHIR)
    assert failed.status_code >= 400
    pushed = await server.http.post("/fhir", json={"resourceType": "Bundle",
                                                  "type": "transaction", "entry": entries},
                                    headers=FHIR)
    assert pushed.status_code == 200, pushed.text
    await until(lambda: len(server.receiver.events(id)) == 2)
    assert [n for n, _ in server.receiver.events(id)] == [1, 2]
    state = await server.app.state.services.store.outbox.state(id)
    assert state.events == 2


# -- what a subscription never delivers -----------------------------------------------------


async def test_a_citizen_subscribes_to_their_own_record_and_no_one_elses(
    server: Subscribed,
) -> None:
    world, mine = server.world, server.citizen()
    own = topic_subscription("encounter-new", f"patient=Patient/{world.a.patient}")
    response = await server.http.post("/fhir/Subscription", json=own, headers=mine)
    assert response.status_code == 201, response.text
    id = response.json()["id"]
    for filters in ([f"patient=Patient/{world.b.patient}"], [],
                    [f"patient=Patient/{world.a.patient},Patient/{world.b.patient}"]):
        theirs = topic_subscription("encounter-new", *filters)
        refused = await server.http.post("/fhir/Subscription", json=theirs, headers=mine)
        assert refused.status_code == 403, (filters, refused.text)
    others = await server.http.get(f"/fhir/Subscription/{id}", headers=server.citizen(of="b"))
    assert others.status_code == 404
    listed = await server.http.get("/fhir/Subscription", headers=server.citizen(of="b"))
    assert id not in listed.text and world.a.patient not in listed.text
    await server.active(id)
    await server.create(new_encounter(server.world, of="b"))
    mine_too = await server.create(new_encounter(server.world))
    await until(lambda: server.receiver.events(id))
    assert server.receiver.events(id) == [(1, f"Encounter/{mine_too}")]


async def test_a_granular_owner_is_never_notified_of_what_its_scopes_hide(
    server: Subscribed,
) -> None:
    owner = server.headers("system/Subscription.cruds system/Observation.rs"
                           "?category=laboratory")
    id = await server.subscribe(topic_subscription("observation", content="full-resource"),
                                owner)
    await server.active(id)
    await server.create(new_lab(server.world, "vital-signs"))
    lab = await server.create(new_lab(server.world))
    await until(lambda: server.receiver.events(id))
    await server.worker.drain()
    assert server.receiver.events(id) == [(1, f"Observation/{lab}")]


async def test_what_the_owner_may_no_longer_read_is_withheld_at_delivery(
    server: Subscribed,
) -> None:
    """A's subscription records A's new result; before it is delivered the result is
    corrected to B's record: A may no longer read it, so the event keeps its number and
    loses its focus and content."""
    world = server.world
    id = await server.subscribe(topic_subscription(
        "observation", f"patient=Patient/{world.a.patient}", content="full-resource"),
        server.citizen())
    await server.active(id)
    server.receiver.up = False
    lab = new_lab(world)
    lab_id = await server.create(lab)
    await until(lambda: server.receiver.refused >= 1)
    corrected = {**lab, "id": lab_id, "subject": {"reference": f"Patient/{world.b.patient}"}}
    response = await server.http.put(f"/fhir/Observation/{lab_id}", json=corrected,
                                     headers=FHIR)
    assert response.status_code == 200, response.text
    server.receiver.up = True
    await until(lambda: server.receiver.events(id))
    await server.worker.drain()
    (bundle,) = server.receiver.bundles(id, "event-notification")
    assert events_of(bundle) == [(1, None)]
    assert len(bundle["entry"]) == 1 and world.b.patient not in str(bundle)


async def test_endpoints_on_private_addresses_or_without_https_are_refused(
    settings: Settings,
) -> None:
    async for server in subscribed_app(settings, Receiver(), subscription_allow_http=False,
                                       subscription_allow_private_endpoints=False):
        for endpoint in ("http://receiver.test/hook", "https://127.0.0.1/hook",
                         "https://10.1.2.3/hook", "https://[::1]/hook", "https://localhost/x",
                         "https://169.254.169.254/latest"):
            subscription = topic_subscription("observation", endpoint=endpoint)
            response = await server.http.post("/fhir/Subscription", json=subscription,
                                              headers=FHIR)
            assert response.status_code == 400, (endpoint, response.text)
            code = response.json()["issue"][0]["details"]["coding"][0]["code"]
            assert code == "MSG_SUBSCRIPTION_ENDPOINT"
        allowed = topic_subscription("observation", endpoint=ENDPOINT)
        response = await server.http.post("/fhir/Subscription", json=allowed, headers=FHIR)
        assert response.status_code == 201, response.text


@pytest.mark.parametrize(("change", "message"), [
    ({"criteria": "https://fhir.sskdt.vn/SubscriptionTopic/no-such-topic"},
     "MSG_SUBSCRIPTION_INVALID"),
    ({"channel": {"type": "email", "endpoint": "mailto:a@b.vn", "payload": "text/plain"}},
     "MSG_SUBSCRIPTION_INVALID"),
    ({"_criteria": {"extension": [{"url": "http://hl7.org/fhir/uv/subscriptions-backport/"
                                   "StructureDefinition/backport-filter-criteria",
                                   "valueString": "Encounter?no-such-parameter=1"}]}},
     "MSG_SUBSCRIPTION_INVALID"),
])
async def test_a_subscription_the_server_cannot_serve_is_refused(
    server: Subscribed, change: dict[str, Any], message: str,
) -> None:
    subscription = {**topic_subscription("encounter-new"), **change}
    response = await server.http.post("/fhir/Subscription", json=subscription, headers=FHIR)
    assert response.status_code == 400, response.text
    assert response.json()["issue"][0]["details"]["coding"][0]["code"] == message


async def test_nothing_is_delivered_after_the_owners_app_authorization_is_revoked(
    server: Subscribed,
) -> None:
    """The citizen withdraws the app's authorization (App Launch) while a notification waits:
    it goes out without its focus, and so do later ones."""
    world = server.world
    store = AuthStore(auth_database_path(server.settings.data_dir))
    store.open_family(TokenFamily("grant-1", "citizen-app", "cccd", world.a.patient,
                                  "patient/*.cruds", int(time.time()), time.time()))
    app_token = server.citizen(grant_id="grant-1")
    id = await server.subscribe(topic_subscription(
        "observation", f"patient=Patient/{world.a.patient}"), app_token)
    await server.active(id)
    await server.create(new_lab(world))
    await until(lambda: server.receiver.events(id))
    server.receiver.up = False
    await server.create(new_lab(world))
    await until(lambda: server.receiver.refused >= 1)
    store.revoke_family("grant-1")
    server.receiver.up = True
    await until(lambda: len(server.receiver.events(id)) == 2)
    first, second = server.receiver.events(id)
    assert first[1] is not None and second == (2, None)
