"""`generate`: determinism, file layout, counts and progress reporting."""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fhir_server.synthetic import generate, generation

Reader = Callable[[list[Path]], list[dict[str, Any]]]


def _bytes(files: list[Path]) -> list[bytes]:
    return [path.read_bytes() for path in files]


def test_same_patients_and_seed_give_byte_identical_files(tmp_path: Path) -> None:
    first = generate(25, 42, tmp_path / "a")
    second = generate(25, 42, tmp_path / "b")
    assert [p.name for p in first.files] == [p.name for p in second.files]
    assert _bytes(first.files) == _bytes(second.files)


def test_different_seed_gives_different_files(tmp_path: Path) -> None:
    first = generate(25, 42, tmp_path / "a")
    second = generate(25, 43, tmp_path / "b")
    assert _bytes(first.files) != _bytes(second.files)


def test_smaller_run_is_a_prefix_of_a_larger_run_with_the_same_seed(tmp_path: Path) -> None:
    small = _bytes(generate(10, 5, tmp_path / "small").files)[0]
    large = _bytes(generate(20, 5, tmp_path / "large").files)[0]
    assert large.startswith(small)


def test_summary_counts_match_what_was_written(tmp_path: Path, read_bundles: Reader) -> None:
    summary = generate(40, 1, tmp_path)
    bundles = read_bundles(summary.files)
    cccds = {b["entry"][0]["resource"]["identifier"][0]["value"] for b in bundles}
    assert summary.patients == 40 == len(cccds)
    assert summary.visits == summary.bundles == len(bundles)
    assert summary.resources == sum(len(b["entry"]) for b in bundles)


def test_files_hold_at_most_bundles_per_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(generation, "BUNDLES_PER_FILE", 7)
    summary = generate(20, 1, tmp_path)
    lines = [len(path.read_bytes().splitlines()) for path in summary.files]
    assert [p.name for p in summary.files][:2] == ["visits-00001.ndjson", "visits-00002.ndjson"]
    assert all(count == 7 for count in lines[:-1]) and 1 <= lines[-1] <= 7
    assert sum(lines) == summary.bundles


def test_stale_parts_of_an_earlier_larger_run_are_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(generation, "BUNDLES_PER_FILE", 5)
    generate(30, 1, tmp_path)
    summary = generate(2, 1, tmp_path)
    assert sorted(tmp_path.glob("visits-*.ndjson")) == summary.files


def test_progress_reports_patients_done_and_ends_with_the_total(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(generation, "PROGRESS_EVERY", 10)
    reported: list[int] = []
    generate(25, 1, tmp_path, progress=reported.append)
    assert reported == [10, 20, 25]


def test_negative_patient_count_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        generate(-1, 1, tmp_path)


def test_bundles_hold_about_twelve_entries_and_patients_about_two_visits(
    tmp_path: Path, read_bundles: Reader
) -> None:
    summary = generate(300, 9, tmp_path)
    bundles = read_bundles(summary.files)
    sizes = [len(b["entry"]) for b in bundles]
    assert 10 <= statistics.mean(sizes) <= 13
    assert min(sizes) >= 7 and max(sizes) <= 15
    per_patient = Counter(b["entry"][0]["fullUrl"] for b in bundles)
    assert set(per_patient.values()) <= {1, 2, 3, 4}
    assert 1.7 <= summary.visits / summary.patients <= 2.3
