"""Property: whatever citizen A asks with A's own token, nothing of citizen B comes back and
B's record stays as it was; whatever a clinician or facility asks, nothing of a record its
Consents do not share comes back (the Patient aside, which they all read) and nothing of it
changes.

Each example stores a new pair of records (random names, CCCDs, visit ids, and a random number
of extra results, diagnoses and prescriptions; both see the same facility and doctor, neither
refers to the other) and sends a few random requests with one of A's tokens: reads, vreads and
history of B's ids, searches with B's identifiers, names and references (chains, ``_include``,
``_revinclude``, ``_has``), compartment searches, operations, and writes, conditional writes and
deletes aimed at B's ids and identifiers, alone or as the entries of a transaction or batch.
Requests are sometimes aimed at A's own record or at ids never stored, so the allowed paths run
too. Every answer is searched for B's ids, identifiers, names and the marker text in B's
resources (what the request itself named excepted: an error may echo it); every version of
B's resources is read with a ``system/`` token before and after.
"""

from __future__ import annotations

import copy
import random
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.api.conftest import Door
from tests.api.two_patients import (
    FHIR,
    SEES,
    Call,
    Person,
    World,
    as_entry,
    leaked,
    send,
)
from tests.builders import CCCD_SYSTEM

pytestmark = pytest.mark.asyncio(loop_scope="module")

#: Searches, each a resource type and parameters; ``{...}`` are filled from the target person.
SEARCHES: list[tuple[str, dict[str, str]]] = [
    ("Observation", {"identifier": "{lab_identifier}"}),
    ("Observation", {"subject": "Patient/{patient}"}),
    ("Observation", {"patient": "{patient}", "category": "laboratory"}),
    ("Observation", {"subject:Patient.name": "{family}"}),
    ("Observation", {"subject:Patient.identifier": f"{CCCD_SYSTEM}|{{cccd}}"}),
    ("Observation", {"encounter": "Encounter/{encounter}", "_include": "Observation:subject"}),
    ("Observation", {"_id": "{lab},{vital}", "_include": "Observation:performer"}),
    ("Observation", {"encounter.identifier": "{encounter_identifier}"}),
    ("Patient", {"_id": "{patient}", "_revinclude": "Observation:subject"}),
    ("Patient", {"identifier": f"{CCCD_SYSTEM}|{{cccd}}"}),
    ("Patient", {"name": "{family}"}),
    ("Patient", {"_has:Observation:subject:code": "718-7"}),
    ("Patient", {"_has:Encounter:subject:identifier": "{encounter_identifier}"}),
    ("Practitioner", {"_id": "{dr}", "_revinclude": "Observation:performer"}),
    ("Practitioner", {"_id": "{dr}", "_revinclude": "MedicationRequest:requester"}),
    ("Organization", {"_id": "{org}", "_revinclude": "Encounter:service-provider"}),
    ("Encounter", {"identifier": "{encounter_identifier}",
                   "_revinclude": "Condition:encounter"}),
    ("MedicationRequest", {"identifier": "{medication_identifier}",
                           "_include": "MedicationRequest:requester"}),
    ("Condition", {"subject": "Patient/{patient}", "_summary": "count"}),
    ("DocumentReference", {"patient": "{patient}", "_elements": "id,content"}),
    ("Binary", {"_id": "{binary}"}),
    ("Observation", {"_lastUpdated": "ge2000-01-01", "_sort": "-_lastUpdated",
                     "_count": "200"}),
]
INSTANCE_PATHS = ["/fhir/{ref}", "/fhir/{ref}/_history", "/fhir/{ref}/_history/1",
                  "/fhir/{ref}/_history/2"]
OPERATIONS = ["/fhir/Patient/{patient}/$everything", "/fhir/Patient/{patient}/$summary",
              f"/fhir/Patient/$summary?identifier={CCCD_SYSTEM}|{{cccd}}",
              "/fhir/Encounter/{encounter}/$document", "/fhir/Patient/{patient}/Observation",
              "/fhir?_type=Observation,Binary&_id={lab},{binary}",
              "/fhir/Observation/_history", "/fhir/_history"]
WRITES = ["delete", "conditional delete", "conditional delete by _id", "update", "patch",
          "conditional update", "conditional create"]
TARGETS = ["B", "B", "B", "A", "ghost"]

Spec = tuple[str, str, int, int]
"""A request, before the world exists: (kind, target, role number, variant number)."""

specs = st.tuples(
    st.sampled_from(["read", "search", "operation", "write", "transaction", "batch"]),
    st.sampled_from(TARGETS), st.integers(0, 40), st.integers(0, 40))


def _fill(text: str, world: World, target: Person) -> str:
    values = {**target.ids, **{f"{role}_identifier": target.identifier(role)
                               for role in target.identifiers},
              "family": target.family, "cccd": target.cccd, **world.shared}
    return text.format(**values)


def _role(target: Person, number: int) -> str:
    roles = sorted(target.resources)
    return roles[number % len(roles)]


def _own_copy(world: World, resource_type: str) -> dict[str, Any] | None:
    """A copy of one of A's resources of the type, without its id (None if A has none)."""
    mine = [r for r in world.a.resources.values() if r["resourceType"] == resource_type]
    if not mine:
        return None
    resource = copy.deepcopy(mine[0])
    resource.pop("id", None)
    return resource


def _write(world: World, target: Person, role: str, variant: int) -> Call:
    kind = WRITES[variant % len(WRITES)]
    ref, type_ = target.ref(role), target.type_of(role)
    criteria = {"identifier": target.identifier(role)} if role in target.identifiers \
        else {"_id": target.ids[role]}
    body = _own_copy(world, type_)
    if kind == "delete":
        return Call("DELETE", f"/fhir/{ref}")
    if kind.startswith("conditional delete"):
        params = {"_id": target.ids[role]} if kind.endswith("_id") else criteria
        return Call("DELETE", f"/fhir/{type_}", params)
    if kind == "patch" or body is None:
        change = [{"op": "add", "path": "/language", "value": "vi"}]
        return Call("PATCH", f"/fhir/{ref}", json=change,
                    headers={"Content-Type": "application/json-patch+json"})
    if kind == "update":
        return Call("PUT", f"/fhir/{ref}", json={**body, "id": target.ids[role]}, headers=FHIR)
    if kind == "conditional update":
        return Call("PUT", f"/fhir/{type_}", criteria, json=body, headers=FHIR)
    if_none_exist = "&".join(f"{k}={v}" for k, v in criteria.items())
    return Call("POST", f"/fhir/{type_}", json=body,
                headers={**FHIR, "If-None-Exist": if_none_exist})


def render(world: World, spec: Spec) -> Call:
    """The request ``spec`` describes, in this world."""
    kind, who, role_number, variant = spec
    target = {"A": world.a, "B": world.b, "ghost": world.ghost}[who]
    role = _role(target, role_number)
    if kind == "read":
        path = INSTANCE_PATHS[variant % len(INSTANCE_PATHS)]
        return Call("GET", path.format(ref=target.ref(role)))
    if kind == "search":
        resource_type, params = SEARCHES[variant % len(SEARCHES)]
        return Call("GET", f"/fhir/{resource_type}",
                    {k: _fill(v, world, target) for k, v in params.items()})
    if kind == "operation":
        return Call("GET", _fill(OPERATIONS[variant % len(OPERATIONS)], world, target))
    return _write(world, target, role, variant)


def hidden(world: World, token: str) -> list[Person]:
    """Whose records the token must show nothing of."""
    return [p for p, name in ((world.a, "A"), (world.b, "B")) if name not in SEES[token]]


async def ask(world: World, spec: Spec, specs_of_bundle: list[Spec], token: str,
              sent: list[str] | None = None) -> None:
    """Send one request (a Bundle of several for ``transaction``/``batch``) with the token;
    assert that the answer shows nothing of the hidden records beyond what the caller's
    requests named, this one and those in ``sent`` (a clinician may write a copy of A's
    record, then read its own copy back), to which this request's text is added; for a
    clinician or facility: nothing of them beyond the Patient."""
    headers = world.headers(token)
    if spec[0] in ("transaction", "batch"):
        calls = [render(world, (("read", "write")[s[2] % 2], *s[1:])) for s in specs_of_bundle]
        bundle = {"resourceType": "Bundle", "type": spec[0],
                  "entry": [as_entry(call) for call in calls]}
        response = await world.http.post("/fhir", json=bundle, headers={**FHIR, **headers})
        asked = " ".join(call.text() for call in calls)
    else:
        call = render(world, spec)
        response = await send(world.http, call, headers)
        asked = call.text()
    assert response.status_code < 500, response.text
    if sent is not None:
        sent.append(asked)
        asked = " ".join(sent)
    governed = not token.startswith("p.")
    for person in hidden(world, token):
        assert leaked(response, person, asked, records_only=governed) == set(), (
            spec, response.text[:2000])


# No shrinking: a failing example is already small and readable, and shrinking one would take
# minutes of requests.
@settings(max_examples=40, deadline=timedelta(seconds=10),
          phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), token=st.sampled_from(["p.cruds", "p.rs", "p.lab"]),
       requests=st.lists(st.tuples(specs, st.lists(specs, min_size=1, max_size=3)),
                         min_size=1, max_size=4))
async def test_nothing_of_another_patient_is_returned_or_changed(
    door: Door, seed: int, token: str, requests: list[tuple[Spec, list[Spec]]]
) -> None:
    world = await door.world(random.Random(seed), extras=3)
    before = await world.snapshot(world.b)
    sent: list[str] = []
    for spec, entries in requests:
        await ask(world, spec, entries, token, sent)
    assert await world.snapshot(world.b) == before, requests


def _records(state: dict[str, Any]) -> dict[str, Any]:
    """A snapshot without the Patient (which a facility reads, and changes only if it wrote
    it: no world's Patient was written by one)."""
    return {role: versions for role, versions in state.items() if role != "patient"}


@settings(max_examples=15, deadline=timedelta(seconds=10),
          phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), token=st.sampled_from(["dr.X", "dr.Y", "fac.X"]),
       requests=st.lists(st.tuples(specs, st.lists(specs, min_size=1, max_size=3)),
                         min_size=1, max_size=4))
async def test_nothing_a_consent_does_not_share_is_returned_or_changed(
    door: Door, seed: int, token: str, requests: list[tuple[Spec, list[Spec]]]
) -> None:
    world = await door.world(random.Random(seed), extras=3)
    before = [await world.snapshot(person) for person in (world.a, world.b)]
    sent: list[str] = []
    for spec, entries in requests:
        await ask(world, spec, entries, token, sent)
    after = [await world.snapshot(person) for person in (world.a, world.b)]
    for person, old, new in zip((world.a, world.b), before, after, strict=True):
        if person in hidden(world, token):
            assert _records(new) == _records(old), requests
        assert new["patient"] == old["patient"], requests
