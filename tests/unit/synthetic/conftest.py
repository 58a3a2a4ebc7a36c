"""Builders for the synthetic-data tests: run the generator into a fresh folder and read it back."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from fhir_server.synthetic import generate

Resource = dict[str, Any]
BundleFactory = Callable[..., list[Resource]]


def _read_bundles(files: list[Path]) -> list[Resource]:
    return [orjson.loads(line) for path in files for line in path.read_bytes().splitlines()]


@pytest.fixture
def read_bundles() -> Callable[[list[Path]], list[Resource]]:
    """Every Bundle of the given NDJSON files, in order."""
    return _read_bundles


@pytest.fixture
def make_bundles(tmp_path: Path) -> BundleFactory:
    """Generate `patients` patients with `seed` into a new folder and return the Bundles."""
    runs = iter(range(1_000))

    def build(patients: int = 30, seed: int = 11) -> list[Resource]:
        summary = generate(patients, seed, tmp_path / f"run-{next(runs)}")
        return _read_bundles(summary.files)

    return build
