"""The access policy: scopes per interaction, the patient compartment, what a caller may see
(``Visibility``) and write, and the record of who wrote."""

from __future__ import annotations

from functools import cache
from typing import Any

import pytest

from fhir_server.errors import Forbidden, MethodNotAllowed, NotFound
from fhir_server.search.indexing import compartment_patients
from fhir_server.search.model import Visibility
from fhir_server.search.registry import SearchParameterRegistry
from fhir_server.security.caller import Caller
from fhir_server.security.policy import Access, AccessRequest, authorize, source_of
from fhir_server.security.scopes import Interaction, parse_scopes


@cache
def registry() -> SearchParameterRegistry:
    return SearchParameterRegistry.load()


def token(scopes: str, patient: str | None = None, **extra: Any) -> Caller:
    return Caller(subject=extra.pop("subject", "sub-1"), issuer="https://issuer.example",
                  scopes=parse_scopes(scopes), patient_id=patient, verified=True, **extra)


def decide(caller: Caller, request: AccessRequest) -> Access:
    return authorize(caller, request, registry())


def observation(patient: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": f"obs-{patient}",
        "status": "final",
        "code": {"text": "glucose"},
        "subject": {"reference": f"Patient/{patient}"},
        **extra,
    }


def lab(patient: str, category: str) -> dict[str, Any]:
    return observation(patient, category=[{"coding": [{"code": category}]}])


CITIZEN = token("patient/*.rs", patient="123")
READ_OBSERVATION = AccessRequest(Interaction.READ, "Observation", "obs-1")


# -- the compartment ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("resource", "expected"),
    [
        (observation("123"), {"123"}),
        (observation("9", performer=[{"reference": "Patient/123"}]), {"9", "123"}),
        ({"resourceType": "Observation", "subject": {"reference": "Group/1"}}, set()),
        ({"resourceType": "Patient", "id": "123"}, {"123"}),
        ({"resourceType": "Patient", "id": "7", "link": [{"other": {"reference": "Patient/1"}}]},
         {"7", "1"}),
        ({"resourceType": "Encounter", "subject": {"reference": "Patient/5/_history/2"}}, {"5"}),
        ({"resourceType": "Condition", "subject": {"reference": "Patient/5"}}, {"5"}),
        ({"resourceType": "Appointment", "participant": [{"actor": {"reference": "Patient/4"}}]},
         {"4"}),
        ({"resourceType": "AuditEvent", "entity": [{"what": {"reference": "Patient/8"}}]},
         {"8"}),
        ({"resourceType": "Encounter", "subject": {"reference": "http://x/Patient/5"}}, set()),
        ({"resourceType": "Organization", "id": "o"}, set()),
        ({"resourceType": "Binary", "securityContext": {"reference": "Patient/6"}}, {"6"}),
    ],
)
def test_compartment_membership_follows_the_r4_compartment_definition(
    resource: dict[str, Any], expected: set[str]
) -> None:
    assert compartment_patients(resource, registry()) == expected


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


# -- what a patient token sees -----------------------------------------------------------------


def test_patient_token_sees_its_own_records_and_not_another_patients() -> None:
    access = decide(CITIZEN, READ_OBSERVATION)
    assert access.visibility == Visibility(types=None, patient="123")
    assert access.readable(observation("123"))
    with pytest.raises(NotFound) as caught:
        access.check_readable(observation("999"))
    assert caught.value.message_id == "MSG_NO_EXIST"
    assert caught.value.diagnostics == "Observation/obs-999 is not known"


def test_shared_resources_are_seen_unless_they_are_another_patients_binary() -> None:
    access = decide(CITIZEN, AccessRequest(Interaction.READ, "Organization", "o1"))
    assert access.readable({"resourceType": "Organization", "id": "o1"})
    binary = {"resourceType": "Binary", "id": "b", "contentType": "text/plain"}
    assert access.readable(binary)
    assert access.readable({**binary, "securityContext": {"reference": "Patient/123"}})
    assert not access.readable({**binary, "securityContext": {"reference": "Patient/9"}})


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
    assert decide(CITIZEN, request_).visibility is not None


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
        decide(CITIZEN, request_)
    assert caught.value.message_id == "MSG_NO_EXIST"


def test_patient_scopes_without_a_patient_in_the_token_grant_nothing() -> None:
    with pytest.raises(Forbidden):
        decide(token("patient/*.rs"), READ_OBSERVATION)


@pytest.mark.parametrize(("patient", "bound"), [("123", True), (None, False)])
def test_user_scopes_are_bound_when_the_user_is_a_patient(
    patient: str | None, bound: bool
) -> None:
    visibility = decide(token("user/*.rs", patient=patient), READ_OBSERVATION).visibility
    assert (visibility is not None and visibility.patient == "123") is bound


def test_a_user_who_is_a_patient_is_bound_by_fhir_user() -> None:
    from fhir_server.security.tokens import AccessContext

    context = AccessContext("cccd-1", "https://issuer", parse_scopes("user/*.rs"),
                            2_000_000_000, fhir_user="Patient/123")
    assert Caller.from_token(context).patient_id == "123"


def test_system_token_sees_everything() -> None:
    hospital = token("system/*.cruds", client_id="bv-1")
    assert decide(hospital, AccessRequest(Interaction.SEARCH_SYSTEM)).visibility is None


def test_a_broader_scope_unbinds_the_types_it_names() -> None:
    mixed = token("patient/*.rs system/Organization.rs", patient="123")
    visibility = decide(mixed, READ_OBSERVATION).visibility
    assert visibility is not None
    assert visibility.patient == "123" and visibility.unbound == {"Organization"}


def test_readable_types_are_the_scopes_types() -> None:
    reader = token("patient/Observation.rs patient/Organization.rs", patient="123")
    access = decide(reader, READ_OBSERVATION)
    condition = {"resourceType": "Condition", "id": "c", "subject": {"reference": "Patient/123"}}
    assert access.visible_of([observation("123"), observation("9"), condition,
                              {"resourceType": "Organization", "id": "o1"}]) == [
        observation("123"), {"resourceType": "Organization", "id": "o1"}]


# -- scopes per interaction letter -------------------------------------------------------------

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
def test_a_token_needs_the_interactions_permission_letter(
    letter: str, request_: AccessRequest
) -> None:
    assert isinstance(decide(token(f"system/Observation.{letter}"), request_), Access)
    others = "".join(p for p in "cruds" if p != letter)
    with pytest.raises(Forbidden) as caught:
        decide(token(f"system/Observation.{others}"), request_)
    assert caught.value.message_id == "MSG_SCOPE_INSUFFICIENT"


def test_scope_on_one_type_does_not_reach_another() -> None:
    with pytest.raises(Forbidden):
        decide(token("system/Observation.cruds"), AccessRequest(Interaction.READ, "Condition", "1"))


def test_system_level_interactions_need_a_wildcard_scope() -> None:
    with pytest.raises(Forbidden):
        decide(token("system/Observation.s"), AccessRequest(Interaction.SEARCH_SYSTEM))
    decide(token("system/*.s"), AccessRequest(Interaction.HISTORY_SYSTEM))


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
        decide(token(scope), request_)
    else:
        with pytest.raises(Forbidden):
            decide(token(scope), request_)


def test_audit_events_are_never_changed_or_deleted_even_by_the_server() -> None:
    for caller in (Caller(), token("system/*.cruds")):
        for interaction in (Interaction.DELETE, Interaction.PATCH):
            with pytest.raises(MethodNotAllowed):
                decide(caller, AccessRequest(interaction, "AuditEvent", "e1"))
    with pytest.raises(MethodNotAllowed):
        decide(token("system/*.cruds"), AccessRequest(Interaction.UPDATE, "AuditEvent", "e1"))


# -- SMART v2 query restrictions ---------------------------------------------------------------


def test_v2_query_restrictions_limit_what_is_seen() -> None:
    restricted = token("patient/Observation.rs?category=laboratory", patient="123")
    access = decide(restricted, READ_OBSERVATION)
    assert access.visibility is not None
    assert access.visibility.restricted("Observation") is not None
    assert access.visible_of([lab("123", "laboratory"), lab("123", "vital-signs"),
                              lab("9", "laboratory")]) == [lab("123", "laboratory")]


def test_v2_restrictions_are_alternatives_and_an_unrestricted_scope_wins() -> None:
    either = token("system/Observation.rs?category=laboratory "
                   "system/Observation.rs?category=vital-signs")
    access = decide(either, READ_OBSERVATION)
    assert access.visible_of([lab("1", "laboratory"), lab("1", "vital-signs"),
                              lab("1", "imaging")]) == [lab("1", "laboratory"),
                                                        lab("1", "vital-signs")]
    wider = token("system/Observation.rs?category=laboratory system/Observation.rs")
    visibility = decide(wider, READ_OBSERVATION).visibility
    assert visibility is not None and visibility.restricted("Observation") is None


def test_a_restriction_the_server_cannot_search_is_refused() -> None:
    with pytest.raises(Forbidden):
        decide(token("system/Observation.rs?nonsense=1"), READ_OBSERVATION)


# -- writes ------------------------------------------------------------------------------------


def test_patient_token_may_write_only_into_its_own_compartment() -> None:
    writer = token("patient/Observation.cu", patient="123")
    access = decide(writer, AccessRequest(Interaction.CREATE, "Observation"))
    access.check_write(Interaction.CREATE, None, observation("123"))
    with pytest.raises(Forbidden):
        access.check_write(Interaction.CREATE, None, observation("9"))
    with pytest.raises(NotFound):  # another patient's target: as if unknown
        access.check_write(Interaction.UPDATE, observation("9"), observation("123"))


def test_patient_token_cannot_write_shared_resources_or_other_patients() -> None:
    writer = token("patient/*.cruds", patient="123")
    with pytest.raises(Forbidden):
        decide(writer, AccessRequest(Interaction.CREATE, "Organization"))
    with pytest.raises(Forbidden):
        decide(writer, AccessRequest(Interaction.CREATE, "Patient"))
    access = decide(writer, AccessRequest(Interaction.UPDATE, "Patient", "123"))
    linked = {"resourceType": "Patient", "id": "999", "link": [
        {"other": {"reference": "Patient/123"}, "type": "seealso"}]}
    with pytest.raises(Forbidden):
        access.check_write(Interaction.UPDATE, None, linked)


def test_a_scope_escalation_attempt_is_refused() -> None:
    with pytest.raises(Forbidden):
        decide(token("system/Observation.rs"), AccessRequest(Interaction.UPDATE, "Observation"))


def test_restricted_writes_must_satisfy_the_restriction() -> None:
    writer = token("patient/Observation.cu?category=laboratory", patient="123")
    access = decide(writer, AccessRequest(Interaction.CREATE, "Observation"))
    access.check_write(Interaction.CREATE, None, lab("123", "laboratory"))
    with pytest.raises(Forbidden):
        access.check_write(Interaction.CREATE, None, lab("123", "vital-signs"))


@pytest.mark.parametrize(
    ("extra", "source"),
    [
        ({"client_id": "bv-1", "organization": "Organization/bv-bach-mai"},
         "Organization/bv-bach-mai"),
        ({"client_id": "bv-1"}, "urn:fhir-server:client:bv-1"),
        ({"subject": "cccd-1"}, "urn:fhir-server:subject:cccd-1"),
    ],
)
def test_writes_are_stamped_with_the_facility_or_client(extra: dict[str, Any], source: str) -> None:
    caller = token("system/*.cruds", **extra)
    resource = observation("123", meta={"source": "forged", "profile": ["p"]})
    original_meta = resource["meta"]
    decide(caller, AccessRequest(Interaction.CREATE, "Observation")).stamp(resource)
    assert resource["meta"] == {"source": source, "profile": ["p"]}
    assert original_meta["source"] == "forged"  # the client's meta object is not changed
    assert source_of(caller) == source


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
        assert isinstance(decide(token(scopes, patient), request), Access)
        return
    with pytest.raises(Forbidden):
        decide(token(scopes, patient), request)
