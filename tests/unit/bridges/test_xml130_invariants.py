"""The proof that the XML 130 route may skip the base invariants it names proven.

A visit's transaction evaluates, for the resources the route built, only the base R4
invariants that ``bridges.xml130.proven.PROVEN`` does not name
(``base_invariants.check_unproven``). The differential test sends synthetic visits with
changed fields (valid dates in any order, empty fields, numbers, codes of other visits,
hostile text) and compares, for every resource of every visit the route converts, the full
evaluation with the shortcut: the same issues, and never a failure of a pair named proven.
Over the generated corpus every named pair is met (the proof is not vacuous). A built
resource broken in each pair that depends on a sent value is refused by the transaction's
check, and the test fails when the shortcut is made wrong (a sent-value pair named proven).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from fhir_server.bridges.xml130 import proven as proven_module
from fhir_server.bridges.xml130.proven import PROVEN, REASONS
from fhir_server.bridges.xml130.tables import load_standard
from fhir_server.bridges.xml130.transaction import Plan
from fhir_server.bridges.xml130.visits import convert_only
from fhir_server.conformance import base_invariants, built
from fhir_server.conformance.built import Pairs
from fhir_server.errors import FhirError
from fhir_server.resources import validate_structure
from fhir_server.synthetic.generation import synthetic_visits
from fhir_server.synthetic.xml130 import visit_envelope

from .test_xml130_lexical import _ANY, Records, _change, _envelope, _pool

STANDARD = load_standard("4750")
EXAMPLES = int(os.environ.get("XML130_INVARIANT_EXAMPLES", "150"))
Resource = dict[str, Any]
#: What the visit's fields decide, and what the route therefore never skips.
SENT = ("per-1", "app-2", "app-3", "drt-1", "ext-1", "obs-6", "obs-7", "con-4", "con-5")
_TABLES = Path(proven_module.__file__).parent / "data" / "tables"


def _keys(issues: list[Any]) -> list[str]:
    return [f"{i.diagnostics.split(':')[0]}@{i.expression}" for i in issues]


def _resources(plan: Plan) -> list[Resource]:
    return [e["resource"] for e in plan.bundle["entry"] if "resource" in e]


def _differences(plan: Plan, proven: Pairs) -> list[str]:
    """Where the shortcut's answer differs from the full evaluation's, per resource."""
    found = []
    for resource in _resources(plan):
        full = _keys(base_invariants.check_invariants(resource, errors_only=True))
        short = _keys(base_invariants.check_unproven(resource, proven))
        if full != short:
            found.append(f"{resource['resourceType']}: full {full}, shortcut {short}")
    return found


def _evaluated(resource: Resource) -> Iterator[tuple[str, str]]:
    """Every (context, key) error invariant the full evaluation meets in ``resource``."""
    def walk(node: Resource, context: str) -> Iterator[tuple[str, str]]:
        for invariant in base_invariants.invariants_of(context):
            if invariant.severity == "error":
                yield context, invariant.key
        edges = base_invariants._edges(context)
        for name, value in node.items():
            child = edges.get(name) or ("Element" if name[:1] == "_" else None)
            for item in value if isinstance(value, list) else [value]:
                if child is not None and isinstance(item, dict):
                    yield from walk(item, item["resourceType"] if child == "Resource" else child)
    yield from walk(resource, resource["resourceType"])


# --- the changed visits --------------------------------------------------------------------

_DATE_KINDS = frozenset({"date", "datetime", "day", "moment", "birth"})
_NUMBER_KINDS = frozenset({"integer", "decimal"})


def _moments(size: int) -> st.SearchStrategy[str]:
    start = datetime(1995, 1, 1)
    return st.integers(0, 40 * 365 * 24 * 60).map(
        lambda m: (start + timedelta(minutes=m)).strftime("%Y%m%d%H%M" if size >= 12 else
                                                          "%Y%m%d"))


@cache
def _seen() -> dict[tuple[str, str], tuple[str, ...]]:
    """The values each field has in the pool's visits (codes a hospital would send)."""
    found: dict[tuple[str, str], set[str]] = {}
    for _, records in _pool():
        for table, rows in records.items():
            for row in rows:
                for name, value in row.items():
                    found.setdefault((table, name), set()).add(value)
    return {k: tuple(sorted(v)) for k, v in found.items()}


def _mapped(records: Records) -> list[tuple[str, str]]:
    return [(t, r.name) for t in records for r in STANDARD.tables[t].rules.values()
            if r.targets]


def _shifted(value: str) -> st.SearchStrategy[str] | None:
    """``value`` (a date or a moment) moved by up to three days either way; None when it is
    not one (a birth date of an unknown day)."""
    size = len(value)
    try:
        moment = datetime.strptime(value, "%Y%m%d%H%M" if size == 12 else "%Y%m%d")
    except ValueError:
        return None
    return st.integers(-3 * 24 * 60, 3 * 24 * 60).map(
        lambda m: (moment + timedelta(minutes=m)).strftime("%Y%m%d%H%M" if size == 12 else
                                                           "%Y%m%d"))


def _value(data: Any, table: str, name: str, current: str) -> str:
    kinds = {t.kind for t in STANDARD.tables[table].rules[name].targets}
    size = STANDARD.tables[table].facts[name].size or 12
    choices: list[st.SearchStrategy[str]] = [st.just(""), _ANY.map(lambda v: v[:size])]
    if kinds & _DATE_KINDS:
        choices += [_moments(size)] * 2
        shifted = _shifted(current) if len(current) in (8, 12) else None
        if shifted is not None:
            choices += [shifted] * 6
    if kinds & _NUMBER_KINDS:
        choices += [st.integers(0, 400).map(str)] * 3
    seen = _seen().get((table, name))
    if seen:
        choices += [st.sampled_from(seen)] * 3
    return str(data.draw(st.one_of(choices)))


def _dated(records: Records) -> list[tuple[str, str]]:
    """The mapped fields written as dates: where ``per-1`` and ``app-2``/``app-3`` are decided."""
    return [(t, n) for t, n in _mapped(records)
            if {x.kind for x in STANDARD.tables[t].rules[n].targets} & _DATE_KINDS]


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_the_shortcut_answers_what_the_full_evaluation_answers(data: Any) -> None:
    facility, records = data.draw(st.sampled_from(_pool()))
    for _ in range(data.draw(st.integers(1, 3))):
        fields = _dated(records) if data.draw(st.booleans()) else _mapped(records)
        table, name = data.draw(st.sampled_from(fields))
        row = data.draw(st.integers(0, 20)) % len(records[table])
        current = records[table][row].get(name, "")
        records = _change(records, table, row, name, _value(data, table, name, current))
    envelope = _envelope(records["XML1"][0].get("MA_CSKCB", "").strip() or facility, records)
    plan = convert_only(envelope, STANDARD)[0]
    if not isinstance(plan, Plan):
        event("refused by the route")
        return
    broken = {k.split("@")[0] for r in _resources(plan)
              for k in _keys(base_invariants.check_invariants(r, errors_only=True))}
    event(f"invariants broken: {sorted(broken)}")
    assert _differences(plan, PROVEN) == []
    assert broken <= set(SENT), broken  # a pair named proven never fails


def _corpus() -> list[Plan]:
    """The corpus sample: 300 patients' visits (referrals, XML13, are rare: a few of them)."""
    plans = []
    for visit, bundle in synthetic_visits(300, 20261207):
        plan = convert_only(visit_envelope(visit, bundle), STANDARD)[0]
        assert isinstance(plan, Plan), [i.diagnostics for i in plan.issues]
        plans.append(plan)
    return plans


def test_over_the_corpus_every_named_pair_is_met_and_the_answers_agree() -> None:
    met: Counter[tuple[str, str]] = Counter()
    for plan in _corpus():
        assert _differences(plan, PROVEN) == []
        for resource in _resources(plan):
            assert base_invariants.check_unproven(resource, PROVEN) == []
            met.update(_evaluated(resource))
    assert set(REASONS) <= set(met), set(REASONS) - set(met)
    evaluated = {pair for pair in met if pair not in PROVEN}
    # What the shortcut still evaluates on the route's resources: the sent-value pairs.
    assert {key for _, key in evaluated} == set(SENT), evaluated


def test_no_table_writes_what_the_named_pairs_rule_out() -> None:
    """The members whose absence the reasons rely on appear in no table of any standard."""
    for path in sorted(_TABLES.glob("*/*.json")):
        text = json.dumps(json.loads(path.read_text("utf-8")))
        for member in ("contained", "emptyReason", "cancelationReason", "orderDetail",
                       "comparator", "reference\":", ".reference", "attachment", "content"):
            assert member not in text, (path.name, member)


# --- a broken built resource is still refused ----------------------------------------------

def _plan() -> Plan:
    return _corpus_first()


@cache
def _corpus_first_json() -> str:
    """The first corpus visit with an Appointment, a result and a Condition, as JSON."""
    for visit, bundle in synthetic_visits(30, 20261207):
        plan = convert_only(visit_envelope(visit, bundle), STANDARD)[0]
        assert isinstance(plan, Plan)
        types = {r["resourceType"] for r in _resources(plan)}
        if {"Appointment", "Observation", "Condition"} <= types:
            return json.dumps(plan.bundle)
    raise AssertionError("no corpus visit has an Appointment, a result and a Condition")


def _corpus_first() -> Plan:
    return Plan(json.loads(_corpus_first_json()))


def _first(plan: Plan, resource_type: str, test: Callable[[Resource], bool] = bool) -> Resource:
    return next(r for r in _resources(plan) if r["resourceType"] == resource_type and test(r))


def _break(key: str, plan: Plan) -> Resource:
    """Break ``key`` in one resource of ``plan`` (as a wrong sent value would) and return it."""
    if key == "per-1":
        encounter = _first(plan, "Encounter")
        encounter["period"] = {"start": "2024-01-05T10:00:00+07:00",
                               "end": "2024-01-04T10:00:00+07:00"}
        return encounter
    if key in ("app-2", "app-3"):
        appointment = _first(plan, "Appointment")
        appointment["start"] = "2024-02-05T08:00:00+07:00"
        appointment.pop("end", None)
        appointment["status"] = "booked"
        return appointment
    if key == "drt-1":
        encounter = _first(plan, "Encounter")
        encounter["length"] = {"unit": "ngày", "system": "http://unitsofmeasure.org",
                               "code": "d"}
        return encounter
    if key == "ext-1":
        patient = _first(plan, "Patient")
        patient["extension"] = [{"url": "https://example.org/x"}]
        return patient
    if key == "obs-6":
        result = _first(plan, "Observation")
        result["valueString"] = "7.2"
        result["dataAbsentReason"] = {"text": "unknown"}
        return result
    if key == "obs-7":
        result = _first(plan, "Observation")
        result["valueString"] = "7.2"
        result["component"] = [{"code": result["code"], "valueString": "7.2"}]
        return result
    condition = _first(plan, "Condition")
    clinical = "http://terminology.hl7.org/CodeSystem/condition-clinical"
    condition["clinicalStatus"] = {"coding": [{"system": clinical, "code": "active"}]}
    if key == "con-4":
        condition["abatementDateTime"] = "2024-01-06"
    else:  # con-5
        condition["verificationStatus"] = {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
            "code": "entered-in-error"}]}
    return condition


@pytest.mark.parametrize("key", SENT)
def test_a_built_resource_broken_where_a_sent_value_decides_is_refused(key: str) -> None:
    plan = _plan()
    resource = _break(key, plan)
    with built.structure_built(_resources(plan), PROVEN):
        assert built.proven(resource) == PROVEN
        with pytest.raises(FhirError) as raised:
            validate_structure(resource)
    assert any(i.diagnostics.startswith(f"{key}:") for i in raised.value.issues)


def test_a_nested_resource_in_a_built_one_is_evaluated_in_full() -> None:
    plan = _plan()
    observation = _first(plan, "Observation")
    observation["contained"] = [{"resourceType": "Patient", "id": "p"}]  # referred to by none
    with built.structure_built(_resources(plan), PROVEN), pytest.raises(FhirError) as raised:
        validate_structure(observation)
    assert any(i.diagnostics.startswith("dom-3:") for i in raised.value.issues)


def test_a_resource_not_built_in_this_call_is_evaluated_in_full() -> None:
    plan = _plan()
    copy = json.loads(json.dumps(_first(plan, "Encounter")))
    copy["length"] = {"code": "d"}  # qty-3, named proven for the route's own Durations
    with built.structure_built(_resources(plan), PROVEN):
        assert built.proven(copy) is None
        with pytest.raises(FhirError) as raised:
            validate_structure(copy)
    assert any(i.diagnostics.startswith("qty-3:") for i in raised.value.issues)


# --- the test has teeth ----------------------------------------------------------------------

def _swapped(facility: str, records: Records) -> bytes:
    """The visit with NGAY_RA a day before NGAY_VAO (a value the route passes on)."""
    arrival = records["XML1"][0]["NGAY_VAO"]
    day = datetime.strptime(arrival[:8], "%Y%m%d") - timedelta(days=1)
    changed = _change(records, "XML1", 0, "NGAY_RA", day.strftime("%Y%m%d") + arrival[8:])
    return _envelope(facility, changed)


def test_the_differential_test_fails_when_a_sent_value_pair_is_named_proven() -> None:
    facility, records = _pool()[0]
    plan = convert_only(_swapped(facility, records), STANDARD)[0]
    assert isinstance(plan, Plan)
    assert _differences(plan, PROVEN) == []
    wrong = PROVEN | {("Period", "per-1")}
    assert any("per-1" in d for d in _differences(plan, wrong))


async def test_the_route_import_evaluates_the_unproven_pairs_only(tmp_path: Path) -> None:
    """Wired in: an import's transaction takes the shortcut with the route's pairs (and no
    full evaluation for a visit that breaks nothing); a FHIR push of the same Bundle is
    evaluated in full."""
    from unittest import mock

    from fhir_server.bridges.xml130.visits import import_envelope
    from fhir_server.loader import open_services
    from fhir_server.router.request import FhirRequest
    from fhir_server.security.caller import SERVER
    from fhir_server.security.policy import Access
    from fhir_server.settings import Settings

    visit, bundle = next(iter(synthetic_visits(1, 8)))
    envelope = visit_envelope(visit, bundle)
    plan = convert_only(envelope, STANDARD)[0]
    assert isinstance(plan, Plan)
    full: list[str] = []
    short: list[Pairs] = []
    real_full, real_short = base_invariants.check_invariants, base_invariants.check_unproven

    def counted_full(resource: Resource, **options: Any) -> Any:
        full.append(str(resource.get("resourceType")))
        return real_full(resource, **options)

    def counted_short(resource: Resource, proven: Pairs) -> Any:
        short.append(proven)
        return real_short(resource, proven)

    async with open_services(Settings(data_dir=tmp_path / "d",
                                      seed_search_parameters=False)) as services:
        with mock.patch.object(base_invariants, "check_invariants", counted_full), \
                mock.patch.object(base_invariants, "check_unproven", counted_short):
            report = await import_envelope(services, Access(SERVER, services.registry),
                                           envelope, STANDARD)
            assert [v.outcome for v in report.visits] == ["created"]
            assert full == []
            assert len(short) == len(_resources(plan)) and set(short) == {PROVEN}
            assert services.handle is not None
            pushed = json.loads(json.dumps(plan.bundle))
            await services.handle(services, FhirRequest("POST", "bundle", body=pushed), SERVER)
    assert len(full) == len(_resources(plan)) and len(short) == len(_resources(plan))
