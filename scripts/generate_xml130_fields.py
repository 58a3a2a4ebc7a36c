"""Build the field facts of the XML 130 tables (name, type, maximum size, per standard) from the
annex of QĐ 4750 in the shared reference folder.

Reads ../shared/vn/xml130_4750_annex.txt (not available at run time) and writes
fhir_server/bridges/xml130/data/fields.json. Run from the repository root:

    python scripts/generate_xml130_fields.py [--shared ../shared]

How each standard's list is read from the annex (each sheet row: STT | field | type | size |
QĐ 130 text [| QĐ 4750 amendment]):

- 130: the numbered rows, without those the annex marks as added later ("Bổ sung trường mới",
  "Bổ sung thêm trường"), with the type and size of QĐ 130. Tables 13-15 did not exist.
- 4750: every numbered row, with the amendments applied ("Đổi kiểu dữ liệu thành chuỗi" makes a
  number a string, "Tăng kích thước tối đa lên N" raises the size); tables 13-15 added.
- 3176: the 4750 list plus the rows without a number (NHOM_MAU in XML1, NGAY_TH_YL in XML2),
  which xml130_envelope.md reports as additions of QĐ 3176 (sizes not reconciled there).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

SHEETS = {
    "Bang Check-in": "CHECKIN", "Bang 1_Tong hop": "XML1", "Bang 2_Thuoc": "XML2",
    "Bang 3_DVKT, VTYT": "XML3", "Bang 4_Dich vu CLS": "XML4",
    "Bang 5_Dien bien lam sang": "XML5", "Bang 6_HIV.AIDS": "XML6",
    "Bang 7_Giay ra vien": "XML7", "Bang 8_Tom tat HSBA": "XML8",
    "Bang 9_Giay chung sinh": "XML9", "Bang 10_Giay nghi duong thai": "XML10",
    "Bang 11_Giay nghi huong BHXH": "XML11", "Bang 12_GDYK": "XML12",
    "Bang 13_Giay chuyen tuyen BHYT": "XML13", "Bang 14_Giay hen kham lai": "XML14",
    "Bang 15_Lao": "XML15",
}  # fmt: skip
NEW_IN_4750 = ("XML13", "XML14", "XML15")
_FIELD = re.compile(r"^[A-Z][A-Z0-9_]*$")
_LARGER = re.compile(r"Tăng kích thước tối đa lên (\d+)")


def _kind(text: str) -> str:
    return "number" if text.strip() == "Số" else "string"


def _size(text: str) -> int | None:
    text = text.strip()
    return int(text) if text.isdigit() else None


def _added_later(cells: list[str]) -> bool:
    return any(c.strip().startswith("Bổ sung trường mới") or "Bổ sung thêm trường" in c
               for c in cells[4:])


def _row(cells: list[str]) -> dict[str, object] | None:
    """One annex row as facts; None for headers, notes and continuation lines."""
    numbered = cells[0].strip().isdigit()
    if numbered:
        cells = cells[1:]
    if len(cells) < 3 or not _FIELD.match(cells[0].strip()) or cells[1].strip() == "Chỉ tiêu":
        return None
    name, kind, size = cells[0].strip(), _kind(cells[1]), _size(cells[2])
    amendment = cells[4] if len(cells) > 4 else ""
    kind_4750 = "string" if "Đổi kiểu dữ liệu thành chuỗi" in amendment else kind
    larger = _LARGER.search(amendment)
    size_4750 = int(larger.group(1)) if larger else size
    return {"name": name, "numbered": numbered, "later": _added_later(["", *cells]),
            "130": [kind, size], "4750": [kind_4750, size_4750]}


def read_annex(path: Path) -> dict[str, list[dict[str, object]]]:
    """Rows of every sheet, by table id, in annex order."""
    tables: dict[str, list[dict[str, object]]] = {}
    current: str | None = None
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("=== SHEET"):
            current = SHEETS[line.removeprefix("=== SHEET").strip()]
            tables[current] = []
        elif current is not None and " | " in line:
            row = _row(line.split(" | "))
            if row is not None:
                tables[current].append(row)
    return tables


def standards(table: str, rows: list[dict[str, object]]) -> dict[str, list[list[object]]]:
    """The field list of each standard: [name, kind, size] rows."""
    numbered = [r for r in rows if r["numbered"]]
    out: dict[str, list[list[object]]] = {}
    if table not in NEW_IN_4750:
        out["130"] = [[r["name"], *r["130"]] for r in numbered if not r["later"]]  # type: ignore[list-item]
    out["4750"] = [[r["name"], *r["4750"]] for r in numbered]  # type: ignore[list-item]
    out["3176"] = [[r["name"], *r["4750"]] for r in rows]  # type: ignore[list-item]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shared", type=Path, default=Path("../shared"))
    args = parser.parse_args()
    annex = args.shared / "vn" / "xml130_4750_annex.txt"
    tables = {t: standards(t, rows) for t, rows in read_annex(annex).items()}
    out = {
        "_source": "scripts/generate_xml130_fields.py from the annex of QĐ 4750/QĐ-BYT "
                   "(xml130_4750_annex.txt); rows: [field, number|string, max size or null]",
        "tables": tables,
    }
    target = Path("fhir_server/bridges/xml130/data/fields.json")
    target.write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    counts = {t: {s: len(f) for s, f in v.items()} for t, v in tables.items()}
    print(json.dumps(counts))


if __name__ == "__main__":
    main()
