"""What an app may be granted, how it reads to the citizen, and the Consent that records it."""

from __future__ import annotations

import time

import pytest

from fhir_server.authorization.consent import consent_resource, describe
from fhir_server.authorization.model import grantable_scope
from fhir_server.resources import validate_structure
from fhir_server.search.consent import consent_allows, consent_grants
from fhir_server.search.model import ConsentRule, SearchIndex
from fhir_server.security.clients import RegisteredClient

APP = RegisteredClient("app", {}, "launch/patient openid offline_access patient/*.rs "
                       "patient/Observation.cruds", kind="public", name="Ứng dụng",
                       redirect_uris=("https://app.example.vn/cb",))


@pytest.mark.parametrize(("requested", "granted"), [
    ("launch/patient patient/*.rs", "launch/patient patient/*.rs"),
    ("patient/*.read", "patient/*.read"),
    ("patient/*.cruds", "patient/*.rs patient/Observation.cruds"),
    ("patient/Condition.rs?clinical-status=active", "patient/Condition.rs?clinical-status=active"),
    ("fhirUser patient/Observation.rs profile launch", "patient/Observation.rs"),
    ("system/*.cruds user/*.rs", None),
    ("openid offline_access", None),
    ("patient/Observation.xyz", None),
])
def test_grantable_scope(requested: str, granted: str | None) -> None:
    assert grantable_scope(requested, APP) == granted


@pytest.mark.parametrize(("word", "language", "text"), [
    ("patient/Observation.rs", "vi", "Xem kết quả xét nghiệm và chỉ số sức khỏe của bạn"),
    ("patient/Observation.rs", "en", "See your test results and measurements"),
    ("patient/*.cruds", "en", "See, add, change or delete your whole health book"),
    ("patient/Condition.rs?clinical-status=active", "en",
     "See your diagnoses and conditions (only when clinical-status=active)"),
    ("offline_access", "vi",
     "Tiếp tục truy cập cả khi bạn không mở ứng dụng, cho tới khi bạn thu hồi"),
])
def test_scopes_read_in_plain_words(word: str, language: str, text: str) -> None:
    assert describe(word, language) == text


def test_consent_is_a_valid_r4_consent_naming_the_app_and_each_scope() -> None:
    consent = consent_resource(APP, "p1", "launch/patient patient/*.rs "
                               "patient/Observation.cruds", 1_700_000_000.0)
    validate_structure(consent, expected_type="Consent")
    assert consent["status"] == "active"
    provision = consent["provision"]
    assert provision["actor"][0]["reference"]["identifier"]["value"] == "app"
    nested = provision["provision"]
    assert [p["code"][0]["text"] for p in nested] == ["patient/*.rs", "patient/Observation.cruds"]
    assert "class" not in nested[0]
    assert [a["coding"][0]["code"] for a in nested[1]["action"]] == ["access", "correct"]
    assert "class" not in provision  # patient/*.rs approves every type
    assert [a["coding"][0]["code"] for a in provision["action"]] == ["access", "correct"]
    ended = consent_resource(APP, "p1", "patient/*.rs", 1_700_000_000.0, 1_700_000_100.0)
    assert ended["status"] == "inactive" and "end" in ended["provision"]["period"]


def test_the_app_consent_permits_what_was_approved_and_nothing_more() -> None:
    """Read as any Consent is read (``search.consent``), the app may read the approved types."""
    consent = {**consent_resource(APP, "p1", "launch/patient patient/Observation.rs "
                                  "patient/Condition.rs", time.time() - 60), "id": "c1"}
    grants = consent_grants(consent, ["p1"])
    actor = "identifier|urn:fhir-server:client|app"
    assert {g.resource_type for g in grants if g.permit and g.actor == actor} == {
        "Observation", "Condition"}
    rule = ConsentRule(None, frozenset({actor}))
    lab = SearchIndex("Observation", "o1", compartments=("p1",))
    note = SearchIndex("DocumentReference", "d1", compartments=("p1",))
    assert consent_allows(rule, lab, grants, time.time_ns() // 1000)
    assert not consent_allows(rule, note, grants, time.time_ns() // 1000)
    revoked = {**consent_resource(APP, "p1", "patient/Observation.rs", time.time() - 60,
                                  time.time()), "id": "c1"}
    assert consent_grants(revoked, ["p1"]) == ()
