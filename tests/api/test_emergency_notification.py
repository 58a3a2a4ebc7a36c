"""The citizen is told of a break-the-glass on their record (docs/consent.md,
"Break-the-glass"; docs/subscriptions.md, topic ``emergency-access``).

A subscribes with their own token to the emergency accesses of their record, and so does B.
A changes their own Consent, a clinician writes a treatment Consent labelled BTG about A
(neither is an emergency access), then doctor Y breaks the glass on A's record: A's
subscription is notified of exactly the emergency Consent, with who, why and until when; B's
is told nothing, and neither is A's other subscription whose token may not read Consents.
Then Y breaks the glass on B's record: B's subscription hears of that one only. Nobody but
the citizen themself subscribes to a citizen's emergency accesses.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from fhir_server.settings import Settings
from tests.api.subscribing import (
    TOPICS,
    Receiver,
    Subscribed,
    status_of,
    subscribed_app,
    topic_subscription,
    until,
)
from tests.api.two_patients import FHIR, new_id

TOPIC = "emergency-access"
REASON = "Bất tỉnh khi vào cấp cứu, cần tiền sử dị ứng"


@pytest_asyncio.fixture
async def server(settings: Settings) -> AsyncIterator[Subscribed]:
    async for running in subscribed_app(settings, Receiver()):
        yield running


def _on(server: Subscribed, of: str, *filters: str) -> dict[str, Any]:
    """A full-resource subscription to the emergency accesses of A's (or B's) record."""
    patient = getattr(server.world, of).patient
    return topic_subscription(TOPIC, *(filters or (f"Consent?patient=Patient/{patient}",)),
                              content="full-resource")


async def _break(server: Subscribed, of: str) -> dict[str, Any]:
    patient = getattr(server.world, of).patient
    answer = await server.http.post(
        f"/fhir/Patient/{patient}/$break-glass", headers=server.world.headers("dr.Y") | FHIR,
        json={"resourceType": "Parameters",
              "parameter": [{"name": "reason", "valueString": REASON}]})
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


async def _counted(server: Subscribed, id: str) -> int:
    """The events recorded for a subscription (recorded in the write's own transaction)."""
    status = await server.http.get(f"/fhir/Subscription/{id}/$status")
    assert status.status_code == 200, status.text
    return int(status_of(status.json())["events-since-subscription-start"])


async def _not_emergencies(server: Subscribed) -> None:
    """A's own Consent change, and a clinician's treatment Consent labelled BTG about A."""
    world = server.world
    consent = {**world.a.resources["consent"], "id": world.a.ids["consent"],
               "status": "inactive"}
    changed = await server.http.put(f"/fhir/{world.a.ref('consent')}", json=consent,
                                    headers=server.citizen())
    assert changed.status_code == 200, changed.text
    forged = {**world.a.resources["consent"], "id": new_id(),
              "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                    "consentscope", "code": "treatment"}]},
              "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                        "v3-ActReason", "code": "BTG"}]}]}
    written = await server.http.put(f"/fhir/Consent/{forged['id']}", json=forged,
                                    headers=server.world.headers("dr.Y") | FHIR)
    assert written.status_code == 201, written.text


async def test_the_citizen_is_told_of_an_emergency_access_and_nobody_else_is(
    server: Subscribed,
) -> None:
    mine = await server.subscribe(_on(server, "a"), server.citizen())
    blind = await server.subscribe(_on(server, "a"), server.citizen(
        "patient/Subscription.cruds patient/Observation.rs"))
    b_own = await server.subscribe(_on(server, "b"), server.citizen(of="b"))
    for id in (mine, blind, b_own):
        await server.active(id)
    await _not_emergencies(server)
    consent = await _break(server, "a")
    await until(lambda: server.receiver.events(mine))
    assert server.receiver.events(mine) == [(1, f"Consent/{consent['id']}")]
    (bundle,) = server.receiver.bundles(mine, "event-notification")
    assert status_of(bundle)["topic"] == TOPICS + TOPIC
    told = bundle["entry"][1]["resource"]
    assert told["id"] == consent["id"] and told["policyRule"]["text"].endswith(REASON)
    assert told["provision"]["actor"][0]["reference"]["reference"] == (
        f"Practitioner/{server.world.shared['dr_y']}")
    assert told["provision"]["period"] == consent["provision"]["period"]
    # A token that may not read Consents is told nothing; B's subscription hears nothing of A.
    assert (await _counted(server, blind), await _counted(server, b_own)) == (0, 0)
    b_consent = await _break(server, "b")
    await until(lambda: server.receiver.events(b_own))
    assert server.receiver.events(b_own) == [(1, f"Consent/{b_consent['id']}")]
    assert await _counted(server, mine) == 1


@pytest.mark.parametrize("caller", ["attacker B", "dr.Y", "dr.X", "fac.X", "op"])
async def test_nobody_else_subscribes_to_a_citizens_emergency_accesses(
    server: Subscribed, caller: str,
) -> None:
    world = server.world
    headers = server.citizen(of="b") if caller == "attacker B" else world.headers(caller) | FHIR
    for filters in ((), ("status=active",), ("patient=x",)):  # A's, everyone's, another's
        answer = await server.http.post("/fhir/Subscription", json=_on(server, "a", *filters),
                                        headers=headers)
        assert answer.status_code == 403, (filters, answer.text)


async def test_the_citizen_subscribes_only_filtered_on_their_own_record(
    server: Subscribed,
) -> None:
    world = server.world
    refused = [
        _on(server, "a", "status=active"),  # no patient: everyone's
        _on(server, "a", f"Consent?patient=Patient/{world.a.patient},Patient/{world.b.patient}"),
        _on(server, "b"),
    ]
    for subscription in refused:
        answer = await server.http.post("/fhir/Subscription", json=subscription,
                                        headers=server.citizen())
        assert answer.status_code == 403, answer.text
    listed = await server.http.get("/fhir/metadata")
    assert TOPICS + TOPIC in listed.text
