"""docs/xml130-mapping.md is what the tables say (regenerate it after changing a table)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def test_field_coverage_report_matches_the_tables(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    spec = importlib.util.spec_from_file_location(
        "generate_doc", ROOT / "scripts" / "generate_xml130_mapping_doc.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "TARGET", tmp_path / "out.md")
    module.main()
    committed = (ROOT / "docs" / "xml130-mapping.md").read_text(encoding="utf-8")
    assert (tmp_path / "out.md").read_text(encoding="utf-8") == committed, \
        "run scripts/generate_xml130_mapping_doc.py"
