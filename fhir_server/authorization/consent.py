"""What an app asks for, in plain words, and the R4 ``Consent`` that records what was approved.

The words (Vietnamese by default, English) are data: ``fhir_server/data/app_launch/texts.json``.
Each clinical scope reads as "<permission> your <what>" (``patient/Observation.rs``: "xem kết quả
xét nghiệm và chỉ số sức khỏe của bạn"), with its v2 query restriction spelled out.

The Consent of an app's access (FHIR R4 Consent, scope ``patient-privacy``, category LOINC
59284-0 "Patient Consent", policy rule OPTIN): the citizen's Patient, who decided (the same
Patient), and a ``permit`` provision for one actor, the app (role IRCP "information recipient",
named by the identifier ``urn:fhir-server:client|<client id>``), with one nested provision per
approved clinical scope: the resource type as ``class``, ``access`` for reading and ``correct``
for writing, and the exact SMART scope as the provision's ``code`` text. The root provision
carries the union of those classes (none when a scope names every type) and actions, so that
the Consent permits the app what was approved and nothing more, as ``search.consent`` reads
any Consent (the nested permits restate it per scope). Revoking the app sets the status to
``inactive`` and ends the period.
"""

from __future__ import annotations

import functools
import json
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from fhir_server.security.clients import APP_WORDS, RegisteredClient
from fhir_server.security.scopes import InvalidScope, Scope, parse_scope

__all__ = ["CLIENT_IDENTIFIER_SYSTEM", "LANGUAGES", "consent_resource", "describe", "texts"]

LANGUAGES = ("vi", "en")
CLIENT_IDENTIFIER_SYSTEM = "urn:fhir-server:client"
_READ, _WRITE = frozenset("rs"), frozenset("cud")


@functools.cache
def _all_texts() -> dict[str, Any]:
    source = resources.files("fhir_server") / "data" / "app_launch" / "texts.json"
    loaded: dict[str, Any] = json.loads(source.read_text(encoding="utf-8"))
    return loaded


def texts(language: str) -> dict[str, Any]:
    """Return the texts of ``language`` (Vietnamese for anything unknown)."""
    return dict(_all_texts()[language if language in LANGUAGES else "vi"])


def describe(word: str, language: str) -> str:
    """Return a scope of an authorization request in plain words."""
    words = texts(language)
    if word in words["words"]:
        return str(words["words"][word])
    try:
        scope = parse_scope(word)
    except InvalidScope:
        return word
    return _describe_scope(scope, words)


def _describe_scope(scope: Scope, words: dict[str, Any]) -> str:
    actions = [words["permissions"][name] for name, letters in
               (("read", _READ), ("write", _WRITE)) if scope.permissions & letters]
    what = words["all"] if scope.resource_type == "*" else words["types"].get(
        scope.resource_type, scope.resource_type)
    text = str(words["scope"]).format(permissions=", ".join(actions), what=what)
    text = text[0].upper() + text[1:]
    if scope.restriction:
        condition = ", ".join(f"{name}={value}" for name, value in scope.restriction)
        text += " " + str(words["only"]).format(condition=condition)
    return text


def _instant(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="seconds").replace(
        "+00:00", "Z")


def _coding(system: str, code: str, display: str | None = None) -> dict[str, str]:
    coding = {"system": system, "code": code}
    return coding if display is None else {**coding, "display": display}


def _scope_provision(scope: Scope) -> dict[str, Any]:
    actions = [name for name, letters in (("access", _READ), ("correct", _WRITE))
               if scope.permissions & letters]
    provision: dict[str, Any] = {
        "type": "permit",
        "action": [{"coding": [_coding(
            "http://terminology.hl7.org/CodeSystem/consentaction", name)]} for name in actions],
        "code": [{"text": scope.to_text()}],
    }
    if scope.resource_type != "*":
        provision["class"] = [_coding("http://hl7.org/fhir/resource-types", scope.resource_type)]
    return provision


def consent_resource(client: RegisteredClient, patient_id: str, scope: str, since: float,
                     until: float | None = None) -> dict[str, Any]:
    """Return the Consent that records ``patient_id``'s approval of ``scope`` for the app
    (``active``; ``inactive`` with an end when ``until`` is given)."""
    patient = {"reference": f"Patient/{patient_id}"}
    period = {"start": _instant(since)} | ({"end": _instant(until)} if until else {})
    clinical = [parse_scope(w) for w in scope.split() if w not in APP_WORDS]
    nested = [_scope_provision(s) for s in clinical]
    return {
        "resourceType": "Consent",
        "status": "inactive" if until else "active",
        "scope": {"coding": [_coding("http://terminology.hl7.org/CodeSystem/consentscope",
                                     "patient-privacy", "Privacy Consent")]},
        "category": [{"coding": [_coding("http://loinc.org", "59284-0", "Patient Consent")]}],
        "patient": patient,
        "dateTime": _instant(since),
        "performer": [patient],
        "policyRule": {"coding": [_coding("http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                          "OPTIN", "opt-in")]},
        "provision": {
            "type": "permit",
            "period": period,
            "actor": [{
                "role": {"coding": [_coding(
                    "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "IRCP",
                    "information recipient")]},
                "reference": {"identifier": {"system": CLIENT_IDENTIFIER_SYSTEM,
                                             "value": client.client_id},
                              "display": client.name or client.client_id},
            }],
            **_approved(clinical, nested),
            "provision": nested,
        },
    }


def _approved(clinical: list[Scope], nested: list[dict[str, Any]]) -> dict[str, Any]:
    """The root provision's ``class`` (the approved types; none for ``*``) and ``action``."""
    approved: dict[str, Any] = {}
    if clinical and all(s.resource_type != "*" for s in clinical):
        approved["class"] = list({c["code"]: c for p in nested for c in p["class"]}.values())
    actions = {a["coding"][0]["code"]: a for p in nested for a in p["action"]}
    if actions:
        approved["action"] = [actions[name] for name in ("access", "correct") if name in actions]
    return approved
