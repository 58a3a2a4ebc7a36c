"""The synthetic XML 130 envelopes: the same visits as the FHIR Bundles, within the annex."""

from __future__ import annotations

import re
from pathlib import Path

from fhir_server.bridges.xml130.tables import load_standard
from fhir_server.synthetic.generation import synthetic_visits, visit_bundles
from fhir_server.synthetic.xml130 import generate_xml130, visit_records

STANDARD = load_standard("4750")
_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")


def test_every_generated_field_fits_the_annex_types_and_sizes() -> None:
    for visit, bundle in synthetic_visits(60, 5):
        for name, rows in visit_records(visit, bundle).items():
            facts = STANDARD.tables[name].facts
            for row in rows:
                for field, value in row.items():
                    assert field in facts, f"{name}.{field}"
                    size = facts[field].size
                    assert size is None or len(value) <= size, f"{name}.{field}={value!r}"
                    if facts[field].kind == "number" and value:
                        assert _NUMBER.match(value), f"{name}.{field}={value!r}"


def test_envelopes_are_the_same_visits_as_the_bundles() -> None:
    for (visit, bundle), plain in zip(synthetic_visits(5, 11), visit_bundles(5, 11),
                                      strict=True):
        assert bundle == plain
        xml1 = visit_records(visit, bundle)["XML1"][0]
        assert (xml1["MA_LK"], xml1["SO_CCCD"]) == (visit.ma_lk, visit.patient.cccd)


def test_generate_writes_one_envelope_per_visit_deterministically(tmp_path: Path) -> None:
    first = generate_xml130(4, 3, tmp_path / "a")
    second = generate_xml130(4, 3, tmp_path / "b")
    assert first.visits == len(first.files) >= 4
    assert [p.read_bytes() for p in first.files] == [p.read_bytes() for p in second.files]
