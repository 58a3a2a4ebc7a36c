"""Write ``examples/facilities/facilities.csv``: the synthetic facility list of the project.

Synthetic, not the Ministry's list: the facilities of ``fhir_server.synthetic.facilities``
(nine in each of the 34 provinces of 2025, the ones ``fhir-server generate`` sends its visits
to), so that a registry loaded from it knows every facility of the generated visits. Levels:
the provincial hospital 3 (specialised), regional centres 2 (basic), commune stations 1
(primary). Commune codes are left empty (no commune list is in the project yet).

Run: ``.venv/bin/python scripts/generate_facility_sample.py``
"""

from __future__ import annotations

import csv
from pathlib import Path

from fhir_server.facilities.csv_rows import COLUMNS
from fhir_server.synthetic.facilities import FacilityLevel, facility_pool
from fhir_server.synthetic.tables import load_tables

OUT = Path(__file__).resolve().parent.parent / "examples" / "facilities" / "facilities.csv"
LEVELS = {FacilityLevel.HOSPITAL: "3", FacilityLevel.CENTRE: "2", FacilityLevel.STATION: "1"}


def main() -> None:
    """Write the CSV (UTF-8, header row first)."""
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with OUT.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(COLUMNS)
        for facility in facility_pool(load_tables()):
            name = facility.resource["name"]
            place = facility.resource["address"][0]["state"]
            writer.writerow([facility.code, name, LEVELS[facility.level],
                             facility.province_code, "", f"{name}, {place}"])


if __name__ == "__main__":
    main()
