"""The Vietnamese code tables the generator draws from, loaded from `data/*.json`.

The JSON files are produced by `scripts/generate_synthetic_tables.py` from the shared CSVs
(provinces of QĐ 19/2025, CCCD prefixes of TT 07/2016, ethnic groups of QĐ 121/1979).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources

__all__ = ["CodeTables", "Coded", "load_tables"]


@dataclass(frozen=True, slots=True)
class Coded:
    """One row of a code table: a code and its Vietnamese label."""

    code: str
    label: str


@dataclass(frozen=True, slots=True)
class CodeTables:
    """The three tables, each in its source order."""

    provinces: tuple[Coded, ...]
    cccd_prefixes: tuple[Coded, ...]
    ethnic_groups: tuple[Coded, ...]


def _read(name: str) -> tuple[Coded, ...]:
    text = (
        resources.files("fhir_server.synthetic")
        .joinpath("data")
        .joinpath(name)
        .read_text(encoding="utf-8")
    )
    return tuple(Coded(code, label) for code, label in json.loads(text)["rows"])


@cache
def load_tables() -> CodeTables:
    """Return the code tables shipped with the package (read once per process)."""
    return CodeTables(
        provinces=_read("provinces_2025.json"),
        cccd_prefixes=_read("cccd_province_prefixes.json"),
        ethnic_groups=_read("ethnic_groups.json"),
    )
