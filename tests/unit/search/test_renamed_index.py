"""``renamed_index``: patching the references of an index equals indexing the renamed resource."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from fhir_server.search.indexing import index_resource, renamed_index
from fhir_server.search.registry import SearchParameterRegistry
from fhir_server.search.setup import prepare_search
from fhir_server.settings import Settings

_EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "visit-bundle.json"
_RESOURCES = [entry["resource"] for entry in orjson.loads(_EXAMPLE.read_bytes())["entry"]]
_TARGETS = ["Patient/planned-p", "Organization/planned-o", "Encounter/planned-e"]


@pytest.fixture(scope="module")
def registry() -> SearchParameterRegistry:
    return prepare_search(Settings())


def _pointing(value: Any, targets: list[str], seen: list[int] | None = None) -> Any:
    """``value`` with its references (``urn:uuid`` ones of the example) set to ``targets`` in
    turn: the first to the first target, the second to the second, and so on, cycling."""
    seen = [0] if seen is None else seen
    if isinstance(value, dict):
        out = {key: _pointing(item, targets, seen) for key, item in value.items()}
        if isinstance(value.get("reference"), str):
            out["reference"] = targets[seen[0] % len(targets)]
            seen[0] += 1
        return out
    if isinstance(value, list):
        return [_pointing(item, targets, seen) for item in value]
    return value


@pytest.mark.parametrize("resource", _RESOURCES, ids=[r["resourceType"] for r in _RESOURCES])
def test_a_renamed_index_is_the_index_of_the_renamed_resource(
    resource: dict[str, Any], registry: SearchParameterRegistry
) -> None:
    resource = {**resource, "id": "self-1"}
    renames = {old: old.replace("planned", "existing") for old in _TARGETS}
    planned = _pointing(resource, _TARGETS)
    found = _pointing(resource, [renames[old] for old in _TARGETS])
    before, after = index_resource(planned, registry), index_resource(found, registry)
    assert (before == after) == (not before.references)  # the renaming shows in the index
    assert renamed_index(before, renames) == after
