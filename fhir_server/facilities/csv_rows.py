"""The facility list as CSV: one facility a row, checked before anything is written.

UTF-8 (a byte-order mark is allowed), comma-separated, a header row naming the columns
``code,name,level,province,commune,address`` (in any order; other columns are ignored):

- ``code``: the facility code (mã CSKCB), five characters ``[0-9A-Z]`` (required);
- ``name``: the facility's name (required);
- ``level``: the technical level, a code of ``terminology/CodeSystem-facility-level.json``
  (1 primary, 2 basic, 3 specialised; required);
- ``province``: the two-digit code of a province of the 2025 list (required);
- ``commune``: the five-digit code of the ward or commune (optional);
- ``address``: the street address as one line of text (optional).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from fhir_server.conformance.terminology import Terminology

__all__ = ["COLUMNS", "FacilityRow", "MalformedRow", "read_facility_rows"]

COLUMNS = ("code", "name", "level", "province", "commune", "address")
_REQUIRED = ("code", "name", "level", "province")
_CODE = re.compile(r"[0-9A-Z]{5}")
_COMMUNE = re.compile(r"[0-9]{5}")
PROVINCE_SYSTEM = "https://fhir.sskdt.vn/CodeSystem/province"
LEVEL_SYSTEM = "https://fhir.sskdt.vn/CodeSystem/facility-level"


@dataclass(frozen=True)
class FacilityRow:
    """One checked facility: its line in the file and its values (empty when not given)."""

    line: int
    code: str
    name: str
    level: str
    province: str
    commune: str = ""
    address: str = ""


@dataclass(frozen=True)
class MalformedRow:
    """A row that was not loaded: its line number (1 is the header) and why."""

    line: int
    reason: str

    def describe(self) -> str:
        """``line N: reason``."""
        return f"line {self.line}: {self.reason}"


def read_facility_rows(path: Path, terminology: Terminology
                       ) -> tuple[list[FacilityRow], list[MalformedRow]]:
    """The rows of ``path``: the good ones and the malformed ones, in file order.

    A missing required column in the header makes every row malformed (reported once, as
    line 1); a code seen on an earlier line makes the later row malformed.
    """
    text = path.read_bytes().decode("utf-8-sig")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    missing = [c for c in _REQUIRED if c not in (reader.fieldnames or ())]
    if missing:
        return [], [MalformedRow(1, f"the header lacks the column(s) {', '.join(missing)}")]
    rows: list[FacilityRow] = []
    malformed: list[MalformedRow] = []
    first_line: dict[str, int] = {}
    for line, values in _numbered(reader):
        reason = _problem(values, terminology) or _repeated(values["code"], first_line)
        if reason:
            malformed.append(MalformedRow(line, reason))
            continue
        first_line[values["code"]] = line
        rows.append(FacilityRow(line, **{c: values.get(c, "") for c in COLUMNS}))
    return rows, malformed


def _numbered(reader: csv.DictReader[str]) -> Iterator[tuple[int, dict[str, str]]]:
    """Each row with the line it ends on, its values stripped (a missing cell is empty)."""
    for values in reader:
        yield reader.line_num, {k: (v or "").strip() for k, v in values.items()
                                if k is not None and isinstance(v, str | None)}


def _problem(values: dict[str, str], terminology: Terminology) -> str | None:
    code, level, province = values["code"], values["level"], values["province"]
    if not _CODE.fullmatch(code):
        return f"code {code!r} is not five characters 0-9 A-Z"
    if not values["name"]:
        return f"facility {code} has no name"
    if terminology.lookup(LEVEL_SYSTEM, level) is None:
        return f"level {level!r} of {code} is not 1, 2 or 3 (CodeSystem facility-level)"
    if terminology.lookup(PROVINCE_SYSTEM, province) is None:
        return f"province {province!r} of {code} is not a province code of 2025"
    commune = values.get("commune", "")
    if commune and not _COMMUNE.fullmatch(commune):
        return f"commune {commune!r} of {code} is not five digits"
    return None


def _repeated(code: str, first_line: dict[str, int]) -> str | None:
    earlier = first_line.get(code)
    return f"code {code} was already given on line {earlier}" if earlier else None
