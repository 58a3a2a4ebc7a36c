"""SMART v1/v2 scope grammar and what scopes allow."""

from __future__ import annotations

import pytest

from fhir_server.security.scopes import (
    Interaction,
    InvalidScope,
    Scope,
    ScopeContext,
    allows,
    narrow_scopes,
    parse_scope,
    parse_scopes,
    required_permission,
    restriction_params,
)

P, U, S = ScopeContext.PATIENT, ScopeContext.USER, ScopeContext.SYSTEM


@pytest.mark.parametrize(
    ("text", "context", "resource_type", "permissions", "restriction", "version"),
    [
        ("patient/*.read", P, "*", "rs", (), 1),
        ("user/Observation.write", U, "Observation", "cud", (), 1),
        ("system/*.*", S, "*", "cruds", (), 1),
        ("patient/Observation.rs", P, "Observation", "rs", (), 2),
        ("system/*.cruds", S, "*", "cruds", (), 2),
        ("user/Patient.r", U, "Patient", "r", (), 2),
        ("system/Encounter.cu", S, "Encounter", "cu", (), 2),
        (
            "patient/Observation.rs?category=laboratory",
            P,
            "Observation",
            "rs",
            (("category", "laboratory"),),
            2,
        ),
        (
            "patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/"
            "observation-category|laboratory&status=final",
            P,
            "Observation",
            "rs",
            (
                (
                    "category",
                    "http://terminology.hl7.org/CodeSystem/observation-category|laboratory",
                ),
                ("status", "final"),
            ),
            2,
        ),
    ],
)
def test_scope_grammar_parses_v1_and_v2_scopes(
    text: str,
    context: ScopeContext,
    resource_type: str,
    permissions: str,
    restriction: tuple[tuple[str, str], ...],
    version: int,
) -> None:
    scope = parse_scope(text)
    assert scope == Scope(context, resource_type, frozenset(permissions), restriction, version)


@pytest.mark.parametrize(
    "text",
    [
        "patient/Observation.sr",  # v2 letters out of order
        "patient/Observation.rr",  # repeated letter
        "patient/Observation.x",
        "patient/Observation.",
        "patient/observation.rs",  # resource types start upper-case
        "admin/*.read",
        "patient/*.read?category=laboratory",  # restrictions need v2 permissions
        "patient/Observation.rs?",
        "patient/Observation.rs?category",
        "patient/Observation",
        "openid",
        "launch/patient",
    ],
)
def test_malformed_or_non_clinical_scope_is_rejected_by_parse_scope(text: str) -> None:
    with pytest.raises(InvalidScope):
        parse_scope(text)


def test_parse_scopes_ignores_non_clinical_and_malformed_scopes() -> None:
    scopes = parse_scopes("openid fhirUser launch/patient patient/Observation.sr patient/*.read")
    assert scopes == (Scope(P, "*", frozenset("rs"), (), 1),)


def test_parse_scopes_accepts_a_list_claim() -> None:
    assert parse_scopes(["system/*.cruds", "offline_access"]) == (parse_scope("system/*.cruds"),)


@pytest.mark.parametrize(
    ("text", "rendered"),
    [
        ("patient/*.read", "patient/*.read"),
        ("system/*.*", "system/*.*"),
        ("user/Observation.write", "user/Observation.write"),
        ("system/Observation.cud", "system/Observation.cud"),
        (
            "patient/Observation.rs?category=laboratory",
            "patient/Observation.rs?category=laboratory",
        ),
        (
            "patient/Observation.rs?code=http://loinc.org|1-8",
            "patient/Observation.rs?code=http://loinc.org|1-8",
        ),
    ],
)
def test_scope_renders_back_to_its_smart_text(text: str, rendered: str) -> None:
    assert parse_scope(text).to_text() == rendered


@pytest.mark.parametrize(
    ("interaction", "letter"),
    [
        (Interaction.CREATE, "c"),
        (Interaction.READ, "r"),
        (Interaction.VREAD, "r"),
        (Interaction.HISTORY_INSTANCE, "r"),
        (Interaction.UPDATE, "u"),
        (Interaction.PATCH, "u"),
        (Interaction.DELETE, "d"),
        (Interaction.SEARCH_TYPE, "s"),
        (Interaction.SEARCH_SYSTEM, "s"),
        (Interaction.HISTORY_TYPE, "s"),
        (Interaction.HISTORY_SYSTEM, "s"),
        (Interaction.OPERATION_EVERYTHING, "s"),
        (Interaction.OPERATION_SUMMARY, "s"),
        (Interaction.OPERATION_EXPORT, "s"),
        (Interaction.OPERATION_VALIDATE, "c"),
        (Interaction.OPERATION_EXPAND, "r"),
        (Interaction.OPERATION_META, "r"),
    ],
)
def test_each_interaction_requires_its_permission_letter(
    interaction: Interaction, letter: str
) -> None:
    assert required_permission(interaction) == letter


def test_every_interaction_has_a_required_permission() -> None:
    assert {required_permission(i) for i in Interaction} <= set("cruds")


@pytest.mark.parametrize(
    ("granted", "interaction", "allowed"),
    [
        ("system/Observation.c", Interaction.CREATE, True),
        ("system/Observation.c", Interaction.READ, False),
        ("system/Observation.r", Interaction.READ, True),
        ("system/Observation.r", Interaction.VREAD, True),
        ("system/Observation.r", Interaction.HISTORY_INSTANCE, True),
        ("system/Observation.r", Interaction.SEARCH_TYPE, False),
        ("system/Observation.u", Interaction.UPDATE, True),
        ("system/Observation.u", Interaction.PATCH, True),
        ("system/Observation.u", Interaction.DELETE, False),
        ("system/Observation.d", Interaction.DELETE, True),
        ("system/Observation.d", Interaction.UPDATE, False),
        ("system/Observation.s", Interaction.SEARCH_TYPE, True),
        ("system/Observation.s", Interaction.HISTORY_TYPE, True),
        ("system/Observation.s", Interaction.READ, False),
        ("system/Observation.read", Interaction.SEARCH_TYPE, True),
        ("system/Observation.read", Interaction.CREATE, False),
        ("system/Observation.write", Interaction.CREATE, True),
        ("system/Observation.write", Interaction.DELETE, True),
        ("system/Observation.write", Interaction.READ, False),
        ("system/*.cruds", Interaction.DELETE, True),
        ("system/Patient.cruds", Interaction.READ, False),  # other resource type
    ],
)
def test_allows_checks_the_permission_letter_for_each_interaction(
    granted: str, interaction: Interaction, allowed: bool
) -> None:
    assert allows(parse_scopes(granted), None, "Observation", interaction) is allowed


def test_allows_only_counts_scopes_of_the_given_context() -> None:
    scopes = parse_scopes("patient/Observation.rs")
    assert allows(scopes, P, "Observation", Interaction.READ)
    assert not allows(scopes, S, "Observation", Interaction.READ)


def test_whole_system_interaction_needs_a_wildcard_scope() -> None:
    assert not allows(parse_scopes("system/Observation.s"), S, None, Interaction.SEARCH_SYSTEM)
    assert allows(parse_scopes("system/*.s"), S, None, Interaction.SEARCH_SYSTEM)


def test_no_scopes_allow_nothing() -> None:
    assert not allows((), None, "Patient", Interaction.READ)


def test_restriction_params_lists_v2_query_restrictions_as_alternatives() -> None:
    scopes = parse_scopes(
        "patient/Observation.rs?category=laboratory patient/Observation.rs?category=vital-signs"
    )
    assert restriction_params(scopes, "Observation") == (
        (("category", "laboratory"),),
        (("category", "vital-signs"),),
    )


def test_restriction_params_is_none_when_an_unrestricted_scope_grants() -> None:
    scopes = parse_scopes("patient/Observation.rs?category=laboratory patient/*.rs")
    assert restriction_params(scopes, "Observation") is None


def test_restriction_params_ignores_scopes_that_do_not_grant_the_interaction() -> None:
    scopes = parse_scopes("patient/Observation.c patient/Observation.rs?category=laboratory")
    assert restriction_params(scopes, "Observation", Interaction.CREATE) is None
    assert restriction_params(scopes, "Observation", Interaction.READ) == (
        (("category", "laboratory"),),
    )
    assert restriction_params(scopes, "Patient") == ()


@pytest.mark.parametrize(
    ("requested", "allowed", "granted"),
    [
        ("system/Observation.rs", "system/*.cruds", "system/Observation.rs"),
        ("system/*.cruds", "system/Observation.rs", "system/Observation.rs"),
        ("system/*.read", "system/*.*", "system/*.read"),
        ("system/*.*", "system/*.read", "system/*.rs"),
        ("system/Observation.rs", "system/Patient.rs", ""),
        ("patient/*.rs", "system/*.cruds", ""),
        ("system/Observation.cd", "system/Observation.rs", ""),
        (
            "system/Observation.rs",
            "system/Observation.rs?category=laboratory",
            "system/Observation.rs?category=laboratory",
        ),
        (
            "system/Observation.rs system/Patient.c",
            "system/*.c system/Observation.r",
            "system/Observation.r system/Patient.c",
        ),
    ],
)
def test_narrow_scopes_grants_only_what_both_requested_and_allowed_cover(
    requested: str, allowed: str, granted: str
) -> None:
    result = narrow_scopes(parse_scopes(requested), parse_scopes(allowed))
    assert " ".join(scope.to_text() for scope in result) == granted
