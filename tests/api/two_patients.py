"""Two citizens, A and B, in one store, and the callers the access tests speak as.

A world holds a shared facility (Organization) and doctor (Practitioner) and, for each of A
and B, the record of :func:`tests.builders.patient_record` with random ids, identifiers and a
random marker text in every resource; one Observation of each (``gone``) is deleted. A third
person, the *ghost*, has ids and identifiers of the same shape that were never stored: what a
request aimed at an unknown id looks like. Every world is new, so the tests of one module share
one app (``door``, see tests/api/conftest.py) and still start from a known state.

The callers (``TOKENS``) are the token kinds of the policy matrix; the patient-bound ones are
A's. :func:`leaked` names what of B a response shows, :meth:`World.snapshot` is B's (or A's)
data as a ``system/`` token reads it, to compare before and after a request.
"""

from __future__ import annotations

import base64
import copy
import json
import random
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import httpx

from fhir_server.settings import Settings
from tests.builders import (
    BHYT_SYSTEM,
    CCCD_SYSTEM,
    HEALTH_BOOK_RESOURCES,
    patient,
    patient_record,
)
from tests.conftest import token_for

FHIR = {"Content-Type": "application/fhir+json"}

#: The callers, by the short name the expectation tables use: (scopes, bound to A's record).
#: ``user`` is a doctor's token (``sub``: the shared Practitioner); nothing narrows a
#: practitioner's ``user/`` scopes yet (the Consent rules will), so it reaches what ``sys`` does.
TOKENS: dict[str, tuple[str, bool]] = {
    "p.rs": ("patient/*.rs", True),
    "p.cruds": ("patient/*.cruds", True),
    "p.lab": ("patient/Observation.rs?category=laboratory", True),
    "user": ("user/*.cruds", False),
    "sys": ("system/*.cruds", False),
    "fac": ("system/*.cruds", False),
    "s.lab": ("system/Observation.rs?category=laboratory", False),
}

#: The roles of a record (see ``tests.builders.patient_record``).
ROLES = ("patient", "encounter", "lab", "vital", "condition", "medication", "document",
         "binary", "gone", "subscription")
_TOPIC = "https://fhir.sskdt.vn/SubscriptionTopic/encounter-new"
_FILTER = ("http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
           "backport-filter-criteria")
_FAMILIES = ["Nguyễn", "Trần", "Phạm", "Hoàng", "Vũ", "Đặng", "Bùi", "Đỗ", "Hồ", "Ngô"]
_GIVEN = ["An", "Bảo", "Châu", "Dũng", "Giang", "Hạnh", "Khánh", "Linh", "Minh", "Ngọc",
          "Phúc", "Quân", "Sơn", "Thảo", "Uyên", "Vy", "Xuân", "Yến"]


def new_id() -> str:
    """A fresh id that no other resource of any world has."""
    return uuid.uuid4().hex


@dataclass(frozen=True)
class Person:
    """One citizen's record as stored (or, for the ghost, as it would look): ids by role
    (``patient``, ``encounter``, ``lab``...), their identifiers, the CCCD, names and marker."""

    ids: dict[str, str]
    identifiers: dict[str, tuple[str, str]]
    cccd: str
    bhyt: str
    family: str
    given: str
    marker: str
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def patient(self) -> str:
        return self.ids["patient"]

    def type_of(self, role: str) -> str:
        return str(self.resources[role]["resourceType"])

    def ref(self, role: str) -> str:
        """``Type/id`` of the resource of ``role``."""
        return f"{self.type_of(role)}/{self.ids[role]}"

    def identifier(self, role: str) -> str:
        """The ``system|value`` search token of the resource of ``role``."""
        return "|".join(self.identifiers[role])

    def secrets(self) -> set[str]:
        """Strings that only this person's data holds: ids, identifier values, the marker."""
        values = {value for _, value in self.identifiers.values()}
        binary = self.resources.get("binary", {}).get("data")
        return {*self.ids.values(), *values, self.bhyt, self.marker,
                f"{self.family} {self.given}", *([binary] if binary else [])}


def make_person(rng: random.Random, shared: dict[str, str], family: str, given: str,
                birth_year: int, female: bool, extras: int = 0) -> Person:
    """Return a person with random ids and identifiers (not stored yet): the record of
    ``patient_record`` and ``extras`` more results, diagnoses or prescriptions
    (roles ``extra0``, ``extra1``...)."""
    ids = {role: new_id() for role in ROLES}
    visit = f"LK{rng.randrange(10**9):09d}"
    marker = f"ghi-chu-{new_id()[:12]}"
    refs = {**{k: f"Organization/{v}" if k == "org" else f"Practitioner/{v}"
               for k, v in shared.items()},
            "encounter": f"Encounter/{ids['encounter']}", "binary": f"Binary/{ids['binary']}"}
    resources = patient_record(f"Patient/{ids['patient']}", refs, visit, marker)
    century_sex = (1 if female else 0) + (2 if birth_year >= 2000 else 0)
    cccd = f"001{century_sex}{birth_year % 100:02d}{rng.randrange(10**6):06d}"
    bhyt = f"HN4{rng.randrange(10**12):012d}"
    person = patient(cccd=cccd, family=family, given=given,
                     gender="female" if female else "male", birth_date=f"{birth_year}-03-04")
    person["identifier"].append({"system": BHYT_SYSTEM, "value": bhyt})
    resources["patient"] = person
    resources["subscription"] = _subscription(ids["patient"])
    for n in range(extras):
        extra = copy.deepcopy(resources[rng.choice(["lab", "vital", "condition", "medication"])])
        extra["identifier"][0]["value"] += f"/x{n}"
        resources[f"extra{n}"], ids[f"extra{n}"] = extra, new_id()
    for role, resource in resources.items():
        resource["id"] = ids[role]
    identifiers = {role: (r["identifier"][0]["system"], r["identifier"][0]["value"])
                   for role, r in resources.items() if r.get("identifier")}
    identifiers["patient"] = (CCCD_SYSTEM, cccd)
    return Person(ids, identifiers, cccd, bhyt, family, given, marker, resources)


def _subscription(patient_id: str) -> dict[str, Any]:
    """The person's app subscription to new visits: websocket, switched off (it records
    nothing), filtered on the person's record, so it is in the person's compartment."""
    return {"resourceType": "Subscription", "status": "off", "reason": "the citizen app",
            "criteria": _TOPIC,
            "_criteria": {"extension": [{"url": _FILTER,
                                         "valueString": f"patient=Patient/{patient_id}"}]},
            "channel": {"type": "websocket", "payload": "application/fhir+json"}}


@dataclass
class World:
    """A store with A's and B's records, reached through ``http`` (a ``system/*.cruds``
    client of the app)."""

    http: httpx.AsyncClient
    settings: Settings
    a: Person
    b: Person
    ghost: Person
    shared: dict[str, str]
    _tokens: dict[str, str] = field(default_factory=dict)

    def token(self, kind: str) -> str:
        """A's token of ``kind`` (see ``TOKENS``), minted once per world."""
        if kind not in self._tokens:
            scope, bound = TOKENS[kind]
            claims: dict[str, Any] = {"patient_id": self.a.patient} if bound else {}
            if kind == "user":
                claims["subject"] = f"Practitioner/{self.shared['dr']}"
            if kind == "fac":  # a facility's client, acting for its Organization
                claims.update(subject="bv-test", client_id="bv-test",
                              organization=f"Organization/{self.shared['org']}")
            self._tokens[kind] = token_for(self.settings, scope, **claims)
        return self._tokens[kind]

    def headers(self, kind: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(kind)}"}

    def a_with(self, scope: str) -> dict[str, str]:
        """Headers of a token of A's with the given scopes."""
        token = token_for(self.settings, scope, patient_id=self.a.patient)
        return {"Authorization": f"Bearer {token}"}

    async def snapshot(self, person: Person) -> dict[str, Any]:
        """Every version of every resource of ``person``, as a ``system/`` token reads it."""
        state: dict[str, Any] = {}
        for role in person.resources:
            response = await self.http.get(f"/fhir/{person.ref(role)}/_history")
            assert response.status_code in (200, 404), response.text
            state[role] = [(e.get("request"), e.get("response"), e.get("resource"))
                           for e in response.json().get("entry", [])]
        return state


def leaked(response: httpx.Response, person: Person, asked: str = "") -> set[str]:
    """Return what of ``person`` the response shows, beyond what the request itself named
    (``asked``: an error message may echo the id or identifier the caller sent)."""
    text = response.text
    return {secret for secret in person.secrets() if secret in text and secret not in asked}


async def populate(http: httpx.AsyncClient, settings: Settings,
                   rng: random.Random | None = None, extras: int = 0) -> World:
    """Store a new world: the facility and doctor, A's and B's records (with up to ``extras``
    more resources each, as ``rng`` draws), then delete ``gone``."""
    rng = rng or random.Random()
    shared = {"org": new_id(), "dr": new_id()}
    families = rng.sample(_FAMILIES, 3)
    givens = rng.sample(_GIVEN, 6)
    people = [make_person(rng, shared, families[n], f"{givens[2 * n]} {givens[2 * n + 1]}",
                          1960 + rng.randrange(50), female=n == 1,
                          extras=rng.randrange(extras + 1)) for n in range(3)]
    a, b, ghost = people
    entries = [_put({**HEALTH_BOOK_RESOURCES["Organization"], "id": shared["org"]}),
               _put({**HEALTH_BOOK_RESOURCES["Practitioner"], "id": shared["dr"]})]
    entries += [_put(r) for person in (a, b) for r in person.resources.values()]
    stored = await http.post("/fhir", json=_transaction(entries), headers=FHIR)
    assert stored.status_code == 200, stored.text
    deletions = [{"request": {"method": "DELETE", "url": p.ref("gone")}} for p in (a, b)]
    deleted = await http.post("/fhir", json=_transaction(deletions), headers=FHIR)
    assert deleted.status_code == 200, deleted.text
    return World(http, settings, a, b, ghost, shared)


def _put(resource: dict[str, Any]) -> dict[str, Any]:
    url = f"{resource['resourceType']}/{resource['id']}"
    return {"fullUrl": f"http://test/fhir/{url}", "resource": resource,
            "request": {"method": "PUT", "url": url}}


def _transaction(entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


# -- requests ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One HTTP request, relative to the server's base."""

    method: str
    path: str
    params: dict[str, str] = field(default_factory=dict)
    json: Any = None
    form: dict[str, str] | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def text(self) -> str:
        """Everything the caller said (errors may echo it)."""
        return " ".join([self.path, *self.params.values(), json.dumps(self.json or {}),
                         *(self.form or {}).values(), *self.headers.values()])


async def send(http: httpx.AsyncClient, call: Call, auth: dict[str, str]) -> httpx.Response:
    """Send ``call`` with the ``auth`` headers (and the call's own)."""
    content = json.dumps(call.json).encode() if call.json is not None else None
    return await http.request(call.method, call.path, params=call.params or None,
                              content=content, data=call.form,
                              headers={**call.headers, **auth})


def as_entry(call: Call) -> dict[str, Any]:
    """The Bundle entry making the same request as ``call``."""
    query = urlencode(call.params)
    url = call.path.removeprefix("/fhir/") + (f"?{query}" if query else "")
    request: dict[str, Any] = {"method": call.method, "url": url}
    if "If-None-Exist" in call.headers:
        request["ifNoneExist"] = call.headers["If-None-Exist"]
    entry: dict[str, Any] = {"request": request}
    if call.method == "PATCH":
        data = base64.b64encode(json.dumps(call.json).encode()).decode()
        entry["resource"] = {"resourceType": "Binary",
                             "contentType": "application/json-patch+json", "data": data}
    elif call.json is not None:
        entry["resource"] = call.json
        entry["fullUrl"] = f"urn:uuid:{uuid.uuid4()}"
    return entry
