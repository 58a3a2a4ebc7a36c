"""Two citizens, A and B, in one store, and the callers the access tests speak as.

A world holds two facilities, X (Ministry facility code 01929, where both were seen) and Y
(79010), each with a doctor, and, for each of A and B, the record of
:func:`tests.builders.patient_record` at X with random ids,
identifiers and a random marker text in every resource; one Observation of each (``gone``) is
deleted. Each has a privacy ``consent``: A's permits facility X (everything), B's permitted X
but has expired. The records are stored by a national operator, so no facility wrote them: what
a facility reads of them is what the Consents allow. A third person, the *ghost*, has ids and
identifiers of the same shape that were never stored: what a request aimed at an unknown id
looks like. Every world is new, so the tests of one module share one app (``door``, see
tests/api/conftest.py) and still start from a known state.

The callers (``TOKENS``) are the token kinds of the policy matrix; the patient-bound ones are
A's (to B's record they are an attacker's valid token for someone else). :func:`leaked` names
what of a person a response shows, :meth:`World.snapshot` is B's (or A's) data as a
``system/`` token reads it, to compare before and after a request.
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
#: ``dr.X`` is a doctor of facility X (``fhirUser`` the Practitioner, ``organization`` X),
#: ``dr.Y`` one of facility Y, ``fac.X`` facility X's own system; ``op`` a national operator
#: (``system/`` without a facility: not governed by Consent) and ``s.lab`` a granular one.
TOKENS: dict[str, tuple[str, bool]] = {
    "p.rs": ("patient/*.rs", True),
    "p.cruds": ("patient/*.cruds", True),
    "p.lab": ("patient/Observation.rs?category=laboratory", True),
    "dr.X": ("user/*.cruds", False),
    "dr.Y": ("user/*.cruds", False),
    "fac.X": ("system/*.cruds", False),
    "op": ("system/*.cruds", False),
    "s.lab": ("system/Observation.rs?category=laboratory", False),
}
#: Whose records (beyond the Patients, which clinicians and facilities all read) each token
#: sees: A's through A's Consent (X) or A's own token, nobody's (Y), or everyone's.
SEES: dict[str, str] = {"p.rs": "A", "p.cruds": "A", "p.lab": "A", "dr.X": "A", "dr.Y": "",
                        "fac.X": "A", "op": "AB", "s.lab": "AB"}
#: The tokens governed by Consent (a clinician or a facility).
GOVERNED = frozenset({"dr.X", "dr.Y", "fac.X"})

#: The roles of a record (see ``tests.builders.patient_record``), and its Consent.
ROLES = ("patient", "encounter", "lab", "vital", "condition", "medication", "document",
         "binary", "gone", "consent", "subscription")
CONSENT_SCOPE = "http://terminology.hl7.org/CodeSystem/consentscope"
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
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

    def secrets(self, records_only: bool = False) -> set[str]:
        """Strings that only this person's data holds: ids, identifier values, the marker
        (``records_only``: without what the Patient itself holds, which every clinician and
        facility reads)."""
        values = {value for role, (_, value) in self.identifiers.items()
                  if not (records_only and role == "patient")}
        binary = self.resources.get("binary", {}).get("data")
        found = {*self.ids.values(), *values, self.marker, *([binary] if binary else [])}
        if records_only:
            return found - {self.patient}
        return found | {self.bhyt, f"{self.family} {self.given}"}


def make_person(rng: random.Random, shared: dict[str, str], family: str, given: str,
                birth_year: int, female: bool, extras: int = 0,
                consent_expired: bool = False) -> Person:
    """Return a person with random ids and identifiers (not stored yet): the record of
    ``patient_record`` and ``extras`` more results, diagnoses or prescriptions
    (roles ``extra0``, ``extra1``...)."""
    ids = {role: new_id() for role in ROLES}
    visit = f"LK{rng.randrange(10**9):09d}"
    marker = f"ghi-chu-{new_id()[:12]}"
    refs = {**{k: f"Organization/{v}" if k.startswith("org") else f"Practitioner/{v}"
               for k, v in shared.items()},
            "encounter": f"Encounter/{ids['encounter']}", "binary": f"Binary/{ids['binary']}"}
    resources = patient_record(f"Patient/{ids['patient']}", refs, visit, marker)
    resources["consent"] = privacy_consent(f"Patient/{ids['patient']}", refs["org"],
                                           expired=consent_expired, marker=marker)
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
                   for role, r in resources.items()
                   if isinstance(r.get("identifier"), list)}
    identifiers["patient"] = (CCCD_SYSTEM, cccd)
    return Person(ids, identifiers, cccd, bhyt, family, given, marker, resources)


def privacy_consent(patient: str, actor: str | None, expired: bool = False,
                    marker: str = "", **provision: Any) -> dict[str, Any]:
    """A privacy Consent of ``patient`` permitting ``actor`` (None: everyone) everything, or
    what ``provision`` adds (class, code, securityLabel, nested provisions...), for a year
    from now (or a year that ended yesterday: ``expired``)."""
    period = ({"start": "2020-01-01", "end": "2021-01-01"} if expired
              else {"start": "2020-01-01", "end": "2099-12-31"})
    root: dict[str, Any] = {"type": "permit", "period": period, **provision}
    if actor is not None:
        root["actor"] = [{"role": {"coding": [{"system": PARTICIPATION, "code": "IRCP"}]},
                          "reference": {"reference": actor}}]
    consent = {"resourceType": "Consent", "status": "active",
               "scope": {"coding": [{"system": CONSENT_SCOPE, "code": "patient-privacy"}]},
               "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
               "patient": {"reference": patient}, "dateTime": "2026-01-01",
               "policyRule": {"coding": [{"system":
                                          "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                          "code": "OPTIN"}]},
               "provision": root}
    if marker:
        consent["text"] = {"status": "generated",
                           "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{marker}</div>'}
    return consent


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
    #: What a case of the policy matrix prepared in the world (``policy_cases.Case.prepare``).
    prepared: dict[str, str] = field(default_factory=dict)

    def token(self, kind: str) -> str:
        """A's token of ``kind`` (see ``TOKENS``), minted once per world."""
        if kind not in self._tokens:
            scope, bound = TOKENS[kind]
            claims: dict[str, Any] = {"patient_id": self.a.patient} if bound else {}
            claims.update(self.claims(kind))
            self._tokens[kind] = token_for(self.settings, scope, **claims)
        return self._tokens[kind]

    def claims(self, kind: str) -> dict[str, Any]:
        """Who a clinician's or facility's token names: its user and facility."""
        org, dr = {"dr.X": ("org", "dr"), "dr.Y": ("org_y", "dr_y"),
                   "fac.X": ("org", None)}.get(kind, (None, None))
        claims: dict[str, Any] = {}
        if org is not None:
            claims["organization"] = f"Organization/{self.shared[org]}"
            claims["client_id"] = f"his-{org}"
        if dr is not None:
            claims["subject"] = claims["fhir_user"] = f"Practitioner/{self.shared[dr]}"
        return claims

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


def leaked(response: httpx.Response, person: Person, asked: str = "",
           records_only: bool = False) -> set[str]:
    """Return what of ``person`` the response shows, beyond what the request itself named
    (``asked``: an error message may echo the id or identifier the caller sent;
    ``records_only``: what of the person's records beyond their Patient)."""
    text = response.text
    return {secret for secret in person.secrets(records_only)
            if secret in text and secret not in asked}


async def populate(http: httpx.AsyncClient, settings: Settings,
                   rng: random.Random | None = None, extras: int = 0) -> World:
    """Store a new world: the facility and doctor, A's and B's records (with up to ``extras``
    more resources each, as ``rng`` draws), then delete ``gone``."""
    rng = rng or random.Random()
    shared = {"org": new_id(), "dr": new_id(), "org_y": new_id(), "dr_y": new_id()}
    families = rng.sample(_FAMILIES, 3)
    givens = rng.sample(_GIVEN, 6)
    people = [make_person(rng, shared, families[n], f"{givens[2 * n]} {givens[2 * n + 1]}",
                          1960 + rng.randrange(50), female=n == 1,
                          extras=rng.randrange(extras + 1), consent_expired=n == 1)
              for n in range(3)]
    a, b, ghost = people
    entries = [_put({**HEALTH_BOOK_RESOURCES[_SHARED_TYPES[key]], "id": value,
                     **FACILITY_CODES.get(key, {})}) for key, value in shared.items()]
    entries += [_put(r) for person in (a, b) for r in person.resources.values()]
    stored = await http.post("/fhir", json=_transaction(entries), headers=FHIR)
    assert stored.status_code == 200, stored.text
    deletions = [{"request": {"method": "DELETE", "url": p.ref("gone")}} for p in (a, b)]
    deleted = await http.post("/fhir", json=_transaction(deletions), headers=FHIR)
    assert deleted.status_code == 200, deleted.text
    return World(http, settings, a, b, ghost, shared)


_SHARED_TYPES = {"org": "Organization", "org_y": "Organization", "dr": "Practitioner",
                 "dr_y": "Practitioner"}
PROVIDER_CODE = "http://fhir.ehealth.gov.vn/core/sid/provider-code"
#: Facilities X and Y by their Ministry facility codes (each its own: a Consent naming one
#: by its code names only that one).
FACILITY_CODES = {key: {"identifier": [{"system": PROVIDER_CODE, "value": code}]}
                  for key, code in (("org", "01929"), ("org_y", "79010"))}


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
