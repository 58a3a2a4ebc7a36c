"""What a clinician's and a facility's subscription receive under Consent (docs/consent.md,
docs/subscriptions.md): exactly what a read by their token would show at the time, through
real subscriptions delivered to a rest-hook.

The world (tests/api/two_patients.py): facility X (``dr.X``: a clinician of X, ``user/``;
``fac.X``: X's system, ``system/``) holds a Consent of A's that permits X everything; B's
Consent of X expired. Facility Y's clinician writes A's (and B's) new results and visits, so
X wrote none of them: X is told of them only as A's Consent lets it, now. A clinician of a
third facility Z (the attacker, with a valid token) subscribes as well and is told nothing.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from fhir_server.settings import Settings
from tests.api.subscribing import (
    Receiver,
    Subscribed,
    new_encounter,
    new_lab,
    subscribed_app,
    topic_subscription,
)
from tests.api.two_patients import FHIR, privacy_consent
from tests.conftest import token_for

V3 = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
TYPES = "http://hl7.org/fhir/resource-types"
SUBSCRIBERS = ("dr.X", "fac.X", "dr.Z")


@pytest_asyncio.fixture
async def server(settings: Settings) -> AsyncIterator[Subscribed]:
    async for running in subscribed_app(settings, Receiver()):
        yield running


def _headers(server: Subscribed, kind: str) -> dict[str, str]:
    if kind == "dr.Z":  # another facility's clinician: a valid token, no Consent names it
        token = token_for(server.settings, "user/*.cruds", subject="Practitioner/dr-z",
                          fhir_user="Practitioner/dr-z", organization="Organization/org-z",
                          client_id="his-z")
        return {"Authorization": f"Bearer {token}", **FHIR}
    return {**server.world.headers(kind), **FHIR}


async def _subscribe(server: Subscribed, topic: str = "observation") -> dict[str, str]:
    """The subscriptions (full-resource, on A's and B's records) of each subscriber."""
    ids = {}
    for kind in SUBSCRIBERS:
        ids[kind] = await server.subscribe(
            topic_subscription(topic, content="full-resource"), _headers(server, kind))
        await server.active(ids[kind])
    return ids


async def _write_as_y(server: Subscribed, resource: dict[str, Any]) -> str:
    """Store a resource written by facility Y's clinician; its id."""
    return await server.create(resource, _headers(server, "dr.Y"))


async def _settled(server: Subscribed, ids: dict[str, str]) -> None:
    await server.settled(ids.values())


def _received(server: Subscribed, subscription: str) -> dict[str, dict[str, Any]]:
    """The resources the subscription's notifications carried in full, by ``Type/id``."""
    found = {}
    for bundle in server.receiver.bundles(subscription, "event-notification"):
        for entry in bundle["entry"][1:]:
            resource = entry.get("resource")
            if resource is not None:
                found[f"{resource['resourceType']}/{resource['id']}"] = resource
    return found


def _told(server: Subscribed, subscription: str, reference: str) -> bool:
    """Whether anything of the resource reached the subscription (its focus or content)."""
    told = {focus for _, focus in server.receiver.events(subscription) if focus is not None}
    return reference in told or reference.split("/")[1] in str(
        server.receiver.bundles(subscription))


async def _consent(server: Subscribed, **changes: Any) -> None:
    """Replace A's Consent of X (written by an operator's token)."""
    world = server.world
    revoked = changes.pop("revoked", False)
    consent = {**privacy_consent(world.a.ref("patient"), f"Organization/{world.shared['org']}",
                                 **changes), "id": world.a.ids["consent"]}
    if revoked:
        consent["status"] = "inactive"
    response = await world.http.put(f"/fhir/{world.a.ref('consent')}", json=consent,
                                    headers=FHIR)
    assert response.status_code == 200, response.text


def _assert_x_receives_only(server: Subscribed, ids: dict[str, str], shown: set[str],
                            hidden: set[str]) -> None:
    for kind in ("dr.X", "fac.X"):
        received = _received(server, ids[kind])
        assert shown <= set(received), (kind, shown, set(received))
        for reference in hidden:
            assert not _told(server, ids[kind], reference), (kind, reference)
    for reference in shown | hidden:
        assert not _told(server, ids["dr.Z"], reference), reference


async def test_x_receives_what_a_consent_of_a_shares_and_nothing_of_b_without_one(
    server: Subscribed,
) -> None:
    ids = await _subscribe(server)
    of_a = await _write_as_y(server, new_lab(server.world))
    of_b = await _write_as_y(server, new_lab(server.world, of="b"))
    await _settled(server, ids)
    _assert_x_receives_only(server, ids, {f"Observation/{of_a}"}, {f"Observation/{of_b}"})
    for kind in ("dr.X", "fac.X"):  # the full resource, as written by Y
        shared = _received(server, ids[kind])[f"Observation/{of_a}"]
        assert shared["subject"]["reference"] == server.world.a.ref("patient")


@pytest.mark.parametrize("change", [{"revoked": True}, {"expired": True}],
                         ids=["revoked", "expired"])
async def test_a_revoked_or_expired_consent_stops_the_next_notification(
    server: Subscribed, change: dict[str, bool],
) -> None:
    ids = await _subscribe(server)
    before = await _write_as_y(server, new_lab(server.world))
    await _settled(server, ids)
    await _consent(server, **change)
    after = await _write_as_y(server, new_lab(server.world))
    await _settled(server, ids)
    _assert_x_receives_only(server, ids, {f"Observation/{before}"}, {f"Observation/{after}"})


async def test_a_consent_revoked_before_delivery_withholds_the_recorded_event(
    server: Subscribed,
) -> None:
    """An event recorded while the Consent permitted it, but delivered after its revocation,
    is delivered without its focus: the owner is judged at delivery time."""
    ids = await _subscribe(server)
    shown = await _write_as_y(server, new_lab(server.world))
    await _settled(server, ids)
    server.receiver.up = False
    late = await _write_as_y(server, new_lab(server.world))
    await _consent(server, revoked=True)
    server.receiver.up = True
    await _settled(server, ids)
    _assert_x_receives_only(server, ids, {f"Observation/{shown}"}, {f"Observation/{late}"})
    for kind in ("dr.X", "fac.X"):  # the late event is told, without its focus
        assert [focus for _, focus in server.receiver.events(ids[kind])] == [
            f"Observation/{shown}", None]


async def test_a_deny_class_inside_the_permit_withholds_that_class(server: Subscribed) -> None:
    observations = await _subscribe(server)
    encounters = await _subscribe(server, "encounter-new")
    await _consent(server, provision=[{"type": "deny", "class": [
        {"system": TYPES, "code": "Observation"}]}])
    lab = await _write_as_y(server, new_lab(server.world))
    visit = await _write_as_y(server, new_encounter(server.world))
    await _settled(server, {**{f"o{k}": v for k, v in observations.items()},
                            **{f"e{k}": v for k, v in encounters.items()}})
    _assert_x_receives_only(server, encounters, {f"Encounter/{visit}"}, set())
    _assert_x_receives_only(server, observations, set(), {f"Observation/{lab}"})


async def test_a_sensitive_label_is_withheld_unless_the_consent_names_it(
    server: Subscribed,
) -> None:
    ids = await _subscribe(server)
    plain = await _write_as_y(server, new_lab(server.world))
    labelled = new_lab(server.world)
    labelled["meta"] = {"security": [{"system": V3, "code": "HIV"}]}
    hiv = await _write_as_y(server, copy.deepcopy(labelled))
    await _settled(server, ids)
    _assert_x_receives_only(server, ids, {f"Observation/{plain}"}, {f"Observation/{hiv}"})
    await _consent(server, provision=[{"type": "permit", "securityLabel": [
        {"system": V3, "code": "HIV"}]}])
    named = await _write_as_y(server, copy.deepcopy(labelled))
    await _settled(server, ids)
    _assert_x_receives_only(server, ids, {f"Observation/{named}"}, set())


async def test_a_consent_naming_the_facility_by_its_code_shares_with_it(
    server: Subscribed,
) -> None:
    """A Consent names the facility by its Ministry facility code, not its id: the owner is
    named as the router names a caller."""
    ids = await _subscribe(server)
    world = server.world
    consent = {**privacy_consent(world.a.ref("patient"), "Organization/placeholder"),
               "id": world.a.ids["consent"]}
    facility = await world.http.get(f"/fhir/Organization/{world.shared['org']}")
    code = facility.json()["identifier"][0]
    consent["provision"]["actor"][0]["reference"] = {"identifier": {
        "system": code["system"], "value": code["value"]}}
    response = await world.http.put(f"/fhir/{world.a.ref('consent')}", json=consent,
                                    headers=FHIR)
    assert response.status_code == 200, response.text
    lab = await _write_as_y(server, new_lab(world))
    await _settled(server, ids)
    _assert_x_receives_only(server, ids, {f"Observation/{lab}"}, set())


async def test_the_events_operation_shows_x_what_the_consent_shares(server: Subscribed) -> None:
    ids = await _subscribe(server)
    of_a = await _write_as_y(server, new_lab(server.world))
    await _settled(server, ids)
    await _consent(server, revoked=True)
    for kind in ("dr.X", "fac.X"):
        asked = await server.http.get(f"/fhir/Subscription/{ids[kind]}/$events",
                                      headers=_headers(server, kind))
        assert asked.status_code == 200, asked.text
        assert of_a not in asked.text  # revoked: no longer shown
    await _consent(server)
    for kind in ("dr.X", "fac.X"):
        asked = await server.http.get(f"/fhir/Subscription/{ids[kind]}/$events",
                                      headers=_headers(server, kind))
        assert f"Observation/{of_a}" in asked.text, kind


async def test_the_deployments_sharing_settings_apply_to_subscriptions(
    settings: Settings,
) -> None:
    """A deployment that opens Observations to every facility (``consent_open_types``): X's
    subscriptions are told of B's results too, without a Consent, as X's reads show them."""
    async for server in subscribed_app(settings, Receiver(),
                                       consent_open_types=["Patient", "Observation"]):
        ids = await _subscribe(server)
        of_b = await _write_as_y(server, new_lab(server.world, of="b"))
        await _settled(server, ids)
        for kind in ("dr.X", "fac.X", "dr.Z"):
            assert f"Observation/{of_b}" in _received(server, ids[kind]), kind
