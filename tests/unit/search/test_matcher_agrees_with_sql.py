"""Property: the in-memory matcher and the SQLite compiler select the same resources."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fhir_server.search.matching import matches
from fhir_server.search.model import SearchIndex
from tests.unit.search.search_builders import (
    BLOOD_PRESSURE,
    CCCD,
    LOINC,
    UCUM,
    Database,
    index,
    query,
)

FAMILIES = ["Nguyễn", "Trần", "Lê", "Đặng", "Ngô"]
# Nested precisions, so that prefixes meet targets inside, around and beside the search range.
DATES = ["1990", "1990-05", "1990-05-02", "2024-03-01T10:00:00+07:00", "2024-03-01"]
CODES = ["8867-4", "8480-6", "29463-7"]

patients = st.builds(
    lambda ident, family, birth, gender, number, deceased: {
        "resourceType": "Patient",
        "id": f"p{ident}",
        "name": [{"family": family}],
        "identifier": [{"system": CCCD, "value": number}],
        **({"birthDate": birth} if birth else {}),
        **({"gender": gender} if gender else {}),
        **({"deceasedBoolean": deceased} if deceased is not None else {}),
    },
    st.integers(0, 5),
    st.sampled_from(FAMILIES),
    st.sampled_from([None, *DATES[:3], "1991-12-31"]),
    st.sampled_from([None, "male", "female"]),
    st.sampled_from(["0010", "0020", "0030"]),
    st.sampled_from([None, True, False]),
)
#: An Observation's subject: a Patient (relative, absolute, with an identifier), a Group, a
#: logical reference, none. ``patient`` is ``subject``'s Patients: the SQL reads subject's rows.
SUBJECTS = [
    lambda n: {"subject": {"reference": f"Patient/p{n}"}},
    lambda n: {"subject": {"reference": f"Patient/p{n}"}},
    lambda n: {"subject": {"reference": f"http://other.vn/fhir/Patient/p{n}"}},
    lambda n: {"subject": {"reference": f"Patient/p{n}",
                           "identifier": {"system": CCCD, "value": f"00{n}0"}}},
    lambda n: {"subject": {"reference": f"Group/g{n}"}},
    lambda n: {"subject": {"identifier": {"system": CCCD, "value": f"00{n}0"}}},
    lambda n: {},
]
observations = st.builds(
    lambda ident, patient, subject, code, value, unit, when, components: {
        "resourceType": "Observation",
        "id": f"o{ident}",
        "status": "final",
        **SUBJECTS[subject](patient),
        "code": {"coding": [{"system": LOINC, "code": code}]},
        **({"valueQuantity": {"value": value, "system": UCUM, "code": unit}} if value else {}),
        **({"effectiveDateTime": when} if when else {}),
        **({"component": components} if components else {}),
    },
    st.integers(0, 5),
    st.integers(0, 5),
    st.integers(0, len(SUBJECTS) - 1),
    st.sampled_from(CODES),
    st.sampled_from([None, 5, 5.4, 72, 100]),
    st.sampled_from(["mg", "/min"]),
    st.sampled_from([None, *DATES]),
    st.sampled_from([None, BLOOD_PRESSURE, BLOOD_PRESSURE[1:]]),
)
PREFIXES = ["", "eq", "ne", "gt", "lt", "ge", "le", "sa", "eb"]
patient_params = st.one_of(
    st.builds(lambda f: f"name={f}", st.sampled_from(["ng", "nguyen", "tr", "dang", "le", "x"])),
    st.builds(lambda f: f"family:exact={f}", st.sampled_from([*FAMILIES, "nguyen"])),
    st.builds(lambda f: f"family:contains={f}", st.sampled_from(["an", "uy", "e"])),
    st.builds(lambda p, d: f"birthdate={p}{d}", st.sampled_from(PREFIXES), st.sampled_from(DATES)),
    st.builds(lambda v: f"gender={v}", st.sampled_from(["male", "female", "male,female"])),
    st.builds(lambda v: f"gender:not={v}", st.sampled_from(["male", "female"])),
    st.builds(
        lambda m: f"{m}:missing={'true' if m[0] == 'g' else 'false'}",
        st.sampled_from(["gender", "birthdate", "deceased"]),
    ),
    st.builds(lambda v: f"identifier={v}", st.sampled_from([f"{CCCD}|0010", "0020", "|0030"])),
    st.builds(lambda v: f"_id={v}", st.sampled_from(["p1", "p2,p3"])),
    st.builds(lambda c: f"_has:Observation:patient:code={c}", st.sampled_from(CODES)),
    st.builds(lambda c: f"_has:Observation:subject:code={c}", st.sampled_from(CODES)),
    st.builds(lambda v: f"_has:Observation:patient:patient:missing={v}",
              st.sampled_from(["true", "false"])),
    st.builds(lambda c: f"_has:Observation:patient:combo-code={c}", st.sampled_from(CODES)),
)
observation_params = st.one_of(
    st.builds(lambda c: f"code={c}", st.sampled_from([*CODES, f"{LOINC}|8867-4", "x|8867-4"])),
    st.builds(
        lambda p, v, u: f"value-quantity={p}{v}{u}",
        st.sampled_from(PREFIXES),
        st.sampled_from(["5", "5.4", "72", "1e2"]),
        st.sampled_from(["", "||mg", f"|{UCUM}|/min"]),
    ),
    st.builds(lambda p, d: f"date={p}{d}", st.sampled_from(PREFIXES), st.sampled_from(DATES)),
    st.builds(lambda v: f"subject=Patient/p{v}", st.integers(0, 5)),
    st.builds(lambda v: f"patient={v}", st.integers(0, 5)),
    st.builds(lambda f: f"patient.name={f}", st.sampled_from(["ng", "tran", "d"])),
    st.builds(lambda f: f"patient:Patient.gender={f}", st.sampled_from(["male", "female"])),
    st.builds(lambda v: f"patient={v}", st.sampled_from(["Patient/p1", "Group/g1", "g2",
                                                         "http://other.vn/fhir/Patient/p3"])),
    st.builds(lambda v: f"subject={v}", st.sampled_from(["Group/g1", "g2", "p3"])),
    st.builds(lambda v: f"patient:missing={v}", st.sampled_from(["true", "false"])),
    st.builds(lambda v: f"patient:identifier={CCCD}|00{v}0", st.integers(0, 5)),
    st.builds(lambda v: f"subject:identifier={CCCD}|00{v}0", st.integers(0, 5)),
    st.builds(
        lambda c, v: f"code-value-quantity={c}${v}",
        st.sampled_from(CODES),
        st.sampled_from(["gt5", "lt100", "72"]),
    ),
    st.just("value-quantity:missing=true"),
    # Union parameters: the SQL reads the rows of code and component-code (none of their own).
    st.builds(lambda c: f"combo-code={c}", st.sampled_from([*CODES, "8462-4", f"{LOINC}|8480-6"])),
    st.builds(lambda c: f"combo-code:not={c}", st.sampled_from(["8480-6", "8867-4"])),
    st.builds(lambda v: f"combo-code:missing={v}", st.sampled_from(["true", "false"])),
    st.builds(
        lambda p, v: f"combo-value-quantity={p}{v}",
        st.sampled_from(PREFIXES),
        st.sampled_from(["5", "72", "80", "120"]),
    ),
    st.builds(lambda v: f"combo-value-quantity:missing={v}", st.sampled_from(["true", "false"])),
    st.builds(
        lambda c, v: f"component-code-value-quantity={c}${v}",
        st.sampled_from(["8480-6", "8462-4"]),
        st.sampled_from(["120", "80", "gt100"]),
    ),
    # A composite union: the SQL reads code-value-quantity's resource rows and
    # component-code-value-quantity's elements (no elements of its own).
    st.builds(
        lambda c, v: f"combo-code-value-quantity={c}${v}",
        st.sampled_from([*CODES, "8462-4", f"{LOINC}|8480-6", "x|8867-4"]),
        st.sampled_from(["gt5", "lt100", "72", "120", "80", "ne80", "5.4"]),
    ),
    st.builds(lambda v: f"combo-code-value-quantity:missing={v}",
              st.sampled_from(["true", "false"])),
    st.builds(lambda v: f"code-value-quantity:missing={v}", st.sampled_from(["true", "false"])),
)


class _Source:
    """The in-memory view of the same resources, for chains and _has."""

    def __init__(self, indexes: list[SearchIndex]) -> None:
        self.indexes = indexes

    def get(self, resource_type: str, id: str) -> SearchIndex | None:
        found = [i for i in self.indexes if (i.resource_type, i.id) == (resource_type, id)]
        return found[0] if found else None

    def referring(self, resource_type: str, code: str, target: SearchIndex) -> list[SearchIndex]:
        wanted = (code, target.resource_type, target.id)
        return [
            i
            for i in self.indexes
            if i.resource_type == resource_type
            and any((r[0], r[1], r[2]) == wanted for r in i.references)
        ]


def _compare(resources: list[dict[str, Any]], resource_type: str, params: list[str]) -> None:
    db = Database()
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for resource in resources:
        db.add(resource)
        latest[(resource["resourceType"], resource["id"])] = resource
    stored = [
        {**r, "meta": {"lastUpdated": row[0]}}
        for (kind, ident), r in latest.items()
        for row in db.conn.execute(
            "SELECT last_updated FROM resources WHERE type = ? AND id = ?", (kind, ident)
        )
    ]
    indexes = [index(resource) for resource in stored]
    parsed = query(resource_type, "&".join([*params, "_count=1000"]))
    expected = sorted(i.id for i in indexes if matches(parsed, i, _Source(indexes)))
    assert sorted(db.ids(resource_type, "&".join([*params, "_count=1000"]))) == expected


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(patients, min_size=2, max_size=6),
    st.lists(observations, min_size=2, max_size=8),
    st.lists(patient_params, min_size=1, max_size=2),
)
def test_matcher_and_sql_agree_on_patients(
    patient_list: list[dict[str, Any]], observation_list: list[dict[str, Any]], params: list[str]
) -> None:
    _compare(patient_list + observation_list, "Patient", params)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(patients, min_size=2, max_size=6),
    st.lists(observations, min_size=2, max_size=8),
    st.lists(observation_params, min_size=1, max_size=2),
)
def test_matcher_and_sql_agree_on_observations(
    patient_list: list[dict[str, Any]], observation_list: list[dict[str, Any]], params: list[str]
) -> None:
    _compare(patient_list + observation_list, "Observation", params)
