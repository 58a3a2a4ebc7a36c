"""The access policy: scopes per interaction, the patient compartment, narrowing, stamping."""

from __future__ import annotations

from typing import Any

import pytest

from fhir_server.errors import Forbidden, NotFound
from fhir_server.security.policy import (
    AccessRequest,
    Decision,
    authorize,
    check_search_parameters,
    compartment_patients,
    ensure_visible,
    ensure_writable,
    filter_visible,
    in_patient_compartment,
    search_narrowing,
    stamp_source,
)
from fhir_server.security.scopes import Interaction, Restriction, parse_scopes
from fhir_server.security.tokens import AccessContext


def token(scopes: str, patient: str | None = None, **extra: Any) -> AccessContext:
    return AccessContext(
        subject=extra.pop("subject", "sub-1"),
        issuer="https://issuer.example",
        scopes=parse_scopes(scopes),
        expires_at=2_000_000_000,
        patient_id=patient,
        **extra,
    )


def observation(patient: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": f"obs-{patient}",
        "status": "final",
        "code": {"text": "glucose"},
        "subject": {"reference": f"Patient/{patient}"},
        **extra,
    }


CITIZEN = token("patient/*.rs", patient="123")


# -- the compartment ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("resource", "expected"),
    [
        (observation("123"), {"123"}),
        (observation("9", performer=[{"reference": "Patient/123"}]), {"9", "123"}),
        ({"resourceType": "Observation", "subject": {"reference": "Group/1"}}, set()),
        ({"resourceType": "Patient", "id": "123"}, {"123"}),
        (
            {"resourceType": "Patient", "id": "7", "link": [{"other": {"reference": "Patient/1"}}]},
            {"7", "1"},
        ),
        ({"resourceType": "Encounter", "subject": {"reference": "Patient/5/_history/2"}}, {"5"}),
        ({"resourceType": "Condition", "subject": {"reference": "Patient/5"}}, {"5"}),
        (
            {"resourceType": "Appointment", "participant": [{"actor": {"reference": "Patient/4"}}]},
            {"4"},
        ),
        (
            {"resourceType": "AuditEvent", "entity": [{"what": {"reference": "Patient/8"}}]},
            {"8"},
        ),
        ({"resourceType": "Encounter", "subject": {"reference": "http://x/Patient/5"}}, set()),
        ({"resourceType": "Organization", "id": "o"}, set()),
    ],
)
def test_compartment_membership_follows_the_r4_compartment_elements(
    resource: dict[str, Any], expected: set[str]
) -> None:
    assert compartment_patients(resource) == expected


def test_a_patient_is_in_its_own_compartment_and_not_in_others() -> None:
    patient = {"resourceType": "Patient", "id": "123"}
    assert in_patient_compartment(patient, "123")
    assert not in_patient_compartment(patient, "124")


# -- reads by a patient token ------------------------------------------------------------------


def test_patient_token_reading_its_own_observation_is_allowed() -> None:
    decision = authorize(CITIZEN, AccessRequest(Interaction.READ, "Observation", "obs-123"))
    assert decision.patient_id == "123"
    ensure_visible(CITIZEN, observation("123"))  # does not raise


def test_patient_token_reading_another_patients_observation_is_hidden() -> None:
    authorize(CITIZEN, AccessRequest(Interaction.READ, "Observation", "obs-999"))
    with pytest.raises(NotFound) as caught:
        ensure_visible(CITIZEN, observation("999"))
    assert caught.value.message_id == "MSG_NO_EXIST"
    assert caught.value.diagnostics == "Observation/obs-999 is not known"


@pytest.mark.parametrize(
    "request_",
    [
        AccessRequest(Interaction.READ, "Patient", "123"),
        AccessRequest(Interaction.VREAD, "Patient", "123"),
        AccessRequest(Interaction.HISTORY_INSTANCE, "Patient", "123"),
        AccessRequest("operation", "Patient", "123", operation="everything"),
        AccessRequest("operation", "Patient", "123", operation="$summary"),
    ],
)
def test_patient_token_reaches_its_own_patient_record(request_: AccessRequest) -> None:
    assert authorize(CITIZEN, request_).patient_id == "123"


@pytest.mark.parametrize(
    "request_",
    [
        AccessRequest(Interaction.READ, "Patient", "124"),
        AccessRequest(Interaction.VREAD, "Patient", "124"),
        AccessRequest(Interaction.HISTORY_INSTANCE, "Patient", "124"),
        AccessRequest("operation", "Patient", "124", operation="everything"),
    ],
)
def test_patient_token_touching_another_patient_record_is_hidden(request_: AccessRequest) -> None:
    with pytest.raises(NotFound) as caught:
        authorize(CITIZEN, request_)
    assert caught.value.message_id == "MSG_NO_EXIST"


def test_patient_scopes_without_a_patient_in_the_token_grant_nothing() -> None:
    with pytest.raises(Forbidden):
        authorize(token("patient/*.rs"), AccessRequest(Interaction.READ, "Observation", "1"))


# -- search narrowing --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("resource_type", "expected"),
    [
        ("Observation", [("subject", "Patient/123")]),
        ("Encounter", [("subject", "Patient/123")]),
        ("Condition", [("patient", "Patient/123")]),
        ("MedicationRequest", [("subject", "Patient/123")]),
        ("DocumentReference", [("subject", "Patient/123")]),
        ("AuditEvent", [("patient", "Patient/123")]),
        ("Patient", [("_id", "123")]),
        ("Coverage", [("beneficiary", "Patient/123")]),
        ("Organization", []),
    ],
)
def test_patient_token_searches_are_narrowed_to_its_compartment(
    resource_type: str, expected: list[tuple[str, str]]
) -> None:
    assert search_narrowing(CITIZEN, resource_type) == expected


def test_patient_token_system_search_is_narrowed_through_the_compartment_index() -> None:
    decision = authorize(CITIZEN, AccessRequest(Interaction.SEARCH_SYSTEM))
    assert decision.compartment == ("Patient", "123")


def test_citizen_may_search_who_looked_at_their_health_book() -> None:
    reader = token("patient/AuditEvent.rs", patient="123")
    decision = authorize(reader, AccessRequest(Interaction.SEARCH_TYPE, "AuditEvent"))
    assert decision.search_params == (("patient", "Patient/123"),)
    mine = {"resourceType": "AuditEvent", "entity": [{"what": {"reference": "Patient/123"}}]}
    theirs = {"resourceType": "AuditEvent", "entity": [{"what": {"reference": "Patient/9"}}]}
    assert filter_visible(reader, [mine, theirs]) == [mine]


def test_system_token_searches_are_not_narrowed() -> None:
    hospital = token("system/*.cruds", client_id="bv-1")
    assert search_narrowing(hospital, "Observation") == []
    assert authorize(hospital, AccessRequest(Interaction.SEARCH_SYSTEM)).compartment is None


# -- system scopes per interaction letter ------------------------------------------------------

_LETTER_CASES = [
    ("c", AccessRequest(Interaction.CREATE, "Observation")),
    ("r", AccessRequest(Interaction.READ, "Observation", "1")),
    ("r", AccessRequest(Interaction.VREAD, "Observation", "1")),
    ("r", AccessRequest(Interaction.HISTORY_INSTANCE, "Observation", "1")),
    ("u", AccessRequest(Interaction.UPDATE, "Observation", "1")),
    ("u", AccessRequest(Interaction.PATCH, "Observation", "1")),
    ("d", AccessRequest(Interaction.DELETE, "Observation", "1")),
    ("s", AccessRequest(Interaction.SEARCH_TYPE, "Observation")),
    ("s", AccessRequest(Interaction.HISTORY_TYPE, "Observation")),
]


@pytest.mark.parametrize(("letter", "request_"), _LETTER_CASES)
def test_system_token_needs_the_interactions_permission_letter(
    letter: str, request_: AccessRequest
) -> None:
    granted = token(f"system/Observation.{letter}")
    assert isinstance(authorize(granted, request_), Decision)
    others = "".join(p for p in "cruds" if p != letter)
    with pytest.raises(Forbidden) as caught:
        authorize(token(f"system/Observation.{others}"), request_)
    assert caught.value.message_id == "MSG_SCOPE_INSUFFICIENT"


def test_scope_on_one_type_does_not_reach_another() -> None:
    with pytest.raises(Forbidden):
        authorize(
            token("system/Observation.cruds"), AccessRequest(Interaction.READ, "Condition", "1")
        )


def test_system_level_interactions_need_a_wildcard_scope() -> None:
    with pytest.raises(Forbidden):
        authorize(token("system/Observation.s"), AccessRequest(Interaction.SEARCH_SYSTEM))
    authorize(token("system/*.s"), AccessRequest(Interaction.HISTORY_SYSTEM))


# -- operations --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("operation", "resource_type", "scope", "allowed"),
    [
        ("everything", "Patient", "system/Patient.s", True),
        ("$everything", "Patient", "system/Patient.r", False),
        ("summary", "Patient", "system/Patient.s", True),
        ("validate", "Observation", "system/Observation.c", True),
        ("validate", "Observation", "system/Observation.rs", False),
        ("expand", "ValueSet", "system/ValueSet.r", True),
        ("meta", "Observation", "system/Observation.r", True),
        ("export", None, "system/*.s", True),
        ("purge-everything", "Patient", "system/*.cruds", False),
    ],
)
def test_operations_map_to_an_explicit_permission(
    operation: str, resource_type: str | None, scope: str, allowed: bool
) -> None:
    request_ = AccessRequest("operation", resource_type, None, operation=operation)
    if allowed:
        assert authorize(token(scope), request_).interaction == Interaction(
            "$" + operation.lstrip("$")
        )
    else:
        with pytest.raises(Forbidden):
            authorize(token(scope), request_)


# -- v2 query restrictions ---------------------------------------------------------------------


def category_matcher(resource: dict[str, Any], restriction: Restriction) -> bool:
    codes = {c.get("code") for cat in resource.get("category", []) for c in cat.get("coding", [])}
    return all(code == "category" and value in codes for code, value in restriction)


def lab(patient: str, category: str) -> dict[str, Any]:
    return observation(patient, category=[{"coding": [{"code": category}]}])


@pytest.mark.parametrize(
    ("scopes", "expected"),
    [
        (
            "patient/Observation.rs?category=laboratory",
            [("subject", "Patient/123"), ("category", "laboratory")],
        ),
        (
            "patient/Observation.rs?category=laboratory"
            " patient/Observation.rs?category=vital-signs",
            [("subject", "Patient/123"), ("category", "laboratory,vital-signs")],
        ),
        (
            "patient/Observation.rs?category=laboratory patient/Observation.rs",
            [("subject", "Patient/123")],
        ),
    ],
)
def test_v2_query_restrictions_become_search_parameters(
    scopes: str, expected: list[tuple[str, str]]
) -> None:
    assert search_narrowing(token(scopes, patient="123"), "Observation") == expected


def test_restrictions_that_cannot_be_one_search_are_refused() -> None:
    scopes = "patient/Observation.rs?category=laboratory patient/Observation.rs?code=1234-5"
    with pytest.raises(Forbidden):
        search_narrowing(token(scopes, patient="123"), "Observation")


def test_restricted_reads_keep_only_matching_resources() -> None:
    restricted = token("patient/Observation.rs?category=laboratory", patient="123")
    resources = [lab("123", "laboratory"), lab("123", "vital-signs"), lab("9", "laboratory")]
    visible = filter_visible(restricted, resources, category_matcher)
    assert visible == [resources[0]]


def test_restricted_reads_without_a_matcher_fail_closed() -> None:
    restricted = token("patient/Observation.rs?category=laboratory", patient="123")
    assert filter_visible(restricted, [lab("123", "laboratory")]) == []


# -- includes, history, operations -------------------------------------------------------------


def test_included_resources_outside_the_compartment_or_scopes_are_dropped() -> None:
    reader = token("patient/Observation.rs patient/Organization.rs", patient="123")
    own, other = observation("123"), observation("9")
    organization = {"resourceType": "Organization", "id": "o1"}
    condition = {"resourceType": "Condition", "id": "c", "subject": {"reference": "Patient/123"}}
    result = filter_visible(reader, [own, other, organization, condition])
    assert result == [own, organization]


# -- writes ------------------------------------------------------------------------------------


def test_patient_token_may_write_only_into_its_own_compartment() -> None:
    writer = token("patient/Observation.cu", patient="123")
    ensure_writable(writer, Interaction.CREATE, observation("123"))
    with pytest.raises(Forbidden):
        ensure_writable(writer, Interaction.CREATE, observation("9"))


def test_patient_token_cannot_write_shared_resources() -> None:
    writer = token("patient/*.cruds", patient="123")
    with pytest.raises(Forbidden):
        authorize(writer, AccessRequest(Interaction.CREATE, "Organization"))


def test_a_scope_escalation_attempt_is_refused() -> None:
    reader = token("system/Observation.rs")
    with pytest.raises(Forbidden):
        ensure_writable(reader, Interaction.UPDATE, observation("123"))


@pytest.mark.parametrize(
    ("extra", "source"),
    [
        (
            {"client_id": "bv-1", "organization": "Organization/bv-bach-mai"},
            "Organization/bv-bach-mai",
        ),
        ({"client_id": "bv-1"}, "urn:fhir-server:client:bv-1"),
        ({"subject": "cccd-1"}, "urn:fhir-server:subject:cccd-1"),
    ],
)
def test_writes_are_stamped_with_the_facility_or_client(extra: dict[str, Any], source: str) -> None:
    original = observation("123", meta={"source": "forged", "profile": ["p"]})
    stamped = stamp_source(original, token("system/*.cruds", **extra))
    assert stamped["meta"] == {"source": source, "profile": ["p"]}
    assert original["meta"]["source"] == "forged"  # the input is not changed


@pytest.mark.parametrize(
    ("patient", "expected"),
    [("123", [("subject", "Patient/123")]), (None, [])],
)
def test_user_scopes_are_narrowed_when_the_user_is_a_patient(
    patient: str | None, expected: list[tuple[str, str]]
) -> None:
    assert search_narrowing(token("user/*.rs", patient=patient), "Observation") == expected


def test_patient_token_reads_shared_resources_without_compartment_rules() -> None:
    decision = authorize(CITIZEN, AccessRequest(Interaction.READ, "Organization", "o1"))
    assert (decision.patient_id, decision.search_params, decision.compartment) == (None, (), None)


def test_every_compartment_parameter_has_element_paths() -> None:
    from importlib import resources

    import orjson

    data = resources.files("fhir_server").joinpath("data/r4")
    codes = orjson.loads(data.joinpath("compartment_patient.json").read_bytes())
    paths = orjson.loads(data.joinpath("compartment_paths.json").read_bytes())
    for kind, params in codes.items():
        if not kind.startswith("_"):
            assert sorted(paths[kind]) == sorted(params), kind
            assert all(paths[kind][code] for code in params), kind


def test_restricted_writes_must_satisfy_the_restriction() -> None:
    writer = token("patient/Observation.cu?category=laboratory", patient="123")
    ensure_writable(writer, Interaction.CREATE, lab("123", "laboratory"), category_matcher)
    with pytest.raises(Forbidden):
        ensure_writable(writer, Interaction.CREATE, lab("123", "vital-signs"), category_matcher)
    with pytest.raises(Forbidden):
        ensure_writable(writer, Interaction.CREATE, lab("123", "laboratory"))


@pytest.mark.parametrize(
    ("resource_type", "code", "refused"),
    [
        ("Organization", "_has:Observation:performer:code", True),
        ("Organization", "name", False),
        ("Patient", "_has:Observation:subject:code", False),
        ("Observation", "subject.name", False),
    ],
)
def test_patient_token_cannot_reverse_chain_from_shared_resources(
    resource_type: str, code: str, refused: bool
) -> None:
    if refused:
        with pytest.raises(Forbidden):
            check_search_parameters(CITIZEN, resource_type, [code])
    else:
        check_search_parameters(CITIZEN, resource_type, [code])
    check_search_parameters(token("system/*.rs"), resource_type, [code])


@pytest.mark.parametrize("operation", ["import-xml130", "convert-xml130"])
@pytest.mark.parametrize(("scopes", "patient", "allowed"), [
    ("system/*.cruds", None, True),
    ("system/*.c", None, True),
    ("system/Encounter.cruds", None, False),
    ("user/*.cruds", None, False),
    ("patient/*.cruds", "p1", False),
])
def test_xml130_import_is_open_to_system_scopes_only(operation: str, scopes: str,
                                                     patient: str | None, allowed: bool) -> None:
    request = AccessRequest("operation", None, None, operation=operation)
    if allowed:
        assert authorize(token(scopes, patient), request).interaction == f"${operation}"
        return
    with pytest.raises(Forbidden):
        authorize(token(scopes, patient), request)
