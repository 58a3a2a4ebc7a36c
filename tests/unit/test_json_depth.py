"""The nesting limit of request bodies (``resources.parse_json``): values may lie at most
``MAX_DEPTH`` levels below the top object, scalars included."""

from __future__ import annotations

import orjson
import pytest

from fhir_server.errors import BadRequest
from fhir_server.resources import MAX_DEPTH, parse_json


def _nested(levels: int, leaf: object) -> bytes:
    """A top object whose ``leaf`` lies ``levels`` levels below it, through arrays and an
    object."""
    value: object = leaf
    for level in range(levels - 1):
        value = [value] if level % 2 else {"x": value}
    return orjson.dumps({"resourceType": "Basic", "deep": value})


@pytest.mark.parametrize("leaf", [1, "text", [], {}])
def test_the_deepest_allowed_value_passes_and_one_level_more_is_refused(leaf: object) -> None:
    assert parse_json(_nested(MAX_DEPTH, leaf))["resourceType"] == "Basic"
    with pytest.raises(BadRequest) as refused:
        parse_json(_nested(MAX_DEPTH + 1, leaf))
    assert refused.value.message_id == "MSG_JSON_TOO_DEEP"
