"""Build the compact code tables used by `fhir_server.synthetic` from the shared Vietnamese CSVs.

Reads ../shared/vn/*.csv (not available at run time) and writes fhir_server/synthetic/data/*.json,
each with a `source` line naming the CSV and the legal text it quotes. Run from the repository root:

    python scripts/generate_synthetic_tables.py [--shared ../shared]
"""

from __future__ import annotations

import argparse
import csv
import json
from collections.abc import Mapping
from pathlib import Path

TABLES = {
    "provinces_2025.json": (
        "provinces_2025_qd19.csv",
        "QĐ 19/2025/QĐ-TTg: the 34 province-level units in force since 1 Jul 2025",
        ("code", "name"),
    ),
    "cccd_province_prefixes.json": (
        "cccd_birth_registration_province_codes_tt07_2016.csv",
        "TT 07/2016/TT-BCA Phụ lục 1: 3-digit birth-registration province codes of the CCCD",
        ("code", "province_pre_2025"),
    ),
    "ethnic_groups.json": (
        "ethnic_qd121_1979_mohig.csv",
        "QĐ 121-TCTK/PPCĐ (1979) ethnic-group codes, as published in the MoH IG vn-core-race",
        ("code", "display"),
    ),
}


def read_rows(path: Path, columns: tuple[str, str]) -> list[list[str]]:
    """Return [code, label] pairs from a CSV, in file order."""
    with path.open(encoding="utf-8", newline="") as handle:
        return [
            [row[columns[0]].strip(), row[columns[1]].strip()] for row in csv.DictReader(handle)
        ]


def render(table: Mapping[str, object]) -> str:
    """JSON with one row per line, so that diffs of a regenerated table stay readable."""
    rows = table["rows"]
    assert isinstance(rows, list)
    lines = ",\n".join("    " + json.dumps(row, ensure_ascii=False) for row in rows)
    source = json.dumps(table["source"], ensure_ascii=False)
    return f'{{\n  "source": {source},\n  "rows": [\n{lines}\n  ]\n}}\n'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    root = Path(__file__).resolve().parent.parent
    parser.add_argument("--shared", type=Path, default=root.parent / "shared")
    args = parser.parse_args()
    out_dir = root / "fhir_server" / "synthetic" / "data"
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, (csv_name, source, columns) in TABLES.items():
        rows = read_rows(args.shared / "vn" / csv_name, columns)
        table = {"source": f"shared/vn/{csv_name} — {source}", "rows": rows}
        (out_dir / name).write_text(render(table), encoding="utf-8")
        print(f"{name}: {len(rows)} rows")


if __name__ == "__main__":
    main()
