"""The generated corpus through the bridge: every envelope converts to a Bundle that validates
against R4 and the Vietnamese profiles, and every mapped field comes back from the store equal.

The suite runs a sample (``XML130_CORPUS_PATIENTS``, default 25 patients, about 50 visits);
``make corpus-xml130`` runs 600 patients (over 1,000 envelopes).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fhir_server.bridges.xml130.engine import unmap_tables
from fhir_server.bridges.xml130.exporting import visit_tables
from fhir_server.bridges.xml130.tables import load_standard
from fhir_server.bridges.xml130.transaction import Plan
from fhir_server.bridges.xml130.values import same_value
from fhir_server.bridges.xml130.visits import (
    convert_envelope,
    convert_only,
    decode,
    import_envelope,
)
from fhir_server.interactions.context import Services
from fhir_server.loader import open_services
from fhir_server.security.caller import SERVER
from fhir_server.security.policy import Access
from fhir_server.settings import Settings
from fhir_server.synthetic.generation import synthetic_visits
from fhir_server.synthetic.xml130 import visit_envelope, visit_records

PATIENTS = int(os.environ.get("XML130_CORPUS_PATIENTS", "25"))
STANDARD = load_standard("4750")


def _mapped_differences(sent: dict[str, list[dict[str, str]]],
                        back: dict[str, list[dict[str, str]]]) -> list[str]:
    found = []
    for name, rows in sent.items():
        table = STANDARD.tables[name]
        got = back.get(name, [])
        if len(got) != len(rows):
            found.append(f"{name}: {len(rows)} rows sent, {len(got)} back")
            continue
        for row, other in zip(rows, got, strict=True):
            found += [f"{name}.{f}: {v!r} != {other.get(f)!r}" for f, v in row.items()
                      if table.rules[f].mapped and not same_value(v, other.get(f, ""))]
    return found


async def test_generated_corpus_imports_valid_and_round_trips(tmp_path: Path) -> None:
    settings_ = Settings(data_dir=tmp_path / "data", seed_search_parameters=False)
    visits = list(synthetic_visits(PATIENTS, 20261206))
    async with open_services(settings_) as services:
        for visit, bundle in visits:
            report = await import_envelope(services, Access(SERVER, services.registry),
                                           visit_envelope(visit, bundle), STANDARD)
            assert [v.outcome for v in report.visits] == ["created"], report.visits[0].issues
            encounter = str(report.visits[0].encounter).partition("/")[2]
            _, _, back = await visit_tables(services, Access(SERVER, services.registry),
                                            STANDARD, encounter)
            assert _mapped_differences(visit_records(visit, bundle), back) == []
    assert len(visits) >= PATIENTS


def test_corpus_sample_covers_every_visit_type_and_table() -> None:
    types, tables = set(), set()
    for visit, bundle in synthetic_visits(max(PATIENTS, 300), 20261206):
        types.add(visit.visit_type.code)
        tables |= set(visit_records(visit, bundle))
    assert types == {f"{n:02d}" for n in range(1, 11)}
    assert tables == {"XML1", "XML2", "XML3", "XML4", "XML5", "XML7", "XML8", "XML11",
                      "XML13", "XML14"}


def _services(tmp: Path) -> Services:
    return Services(store=None, settings=Settings(data_dir=tmp))  # type: ignore[arg-type]


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(min_value=0, max_value=2**31), pick=st.integers(min_value=0, max_value=9))
async def test_any_generated_envelope_converts_to_a_valid_bundle(tmp_path: Path, seed: int,
                                                                 pick: int) -> None:
    visits = list(synthetic_visits(3, seed))
    visit, bundle = visits[pick % len(visits)]
    data = visit_envelope(visit, bundle)
    report = await convert_envelope(_services(tmp_path), data, STANDARD)
    result = report.visits[0]
    assert result.outcome == "converted", [i.diagnostics for i in result.issues]
    entries: list[dict[str, Any]] = (result.bundle or {})["entry"]
    assert {e["request"]["method"] for e in entries} <= {"POST", "PUT"}
    envelope = decode(data, STANDARD)
    assert envelope.visits[0].files


@pytest.mark.parametrize("pick", [0, 3])
def test_conversion_alone_round_trips_in_memory(pick: int) -> None:
    visit, bundle = list(synthetic_visits(4, 99))[pick]
    plan = convert_only(visit_envelope(visit, bundle), STANDARD)[0]
    assert isinstance(plan, Plan)
    instances = [i for i in plan.sources if i is not None]
    back = unmap_tables(STANDARD, instances, visit.ma_lk, visit.facility.code)
    assert _mapped_differences(visit_records(visit, bundle), back) == []
