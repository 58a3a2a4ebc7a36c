"""The MongoDB stand-in follows MongoDB's semantics for the operators the adapter uses."""

from __future__ import annotations

from typing import Any

import pytest

from tests.contract.mongo_fake import FakeMongoClient, matches

DOC = {"rows": [{"p": "a", "v": 1}, {"p": "b", "v": 5}], "n": 3, "s": "nguyen"}


@pytest.mark.parametrize(
    ("filter_", "expected"),
    [
        ({"rows": {"$elemMatch": {"p": "a", "v": 5}}}, False),  # one row must hold both
        ({"rows.p": "a", "rows.v": 5}, True),  # without $elemMatch, any row each
        ({"rows": {"$elemMatch": {"p": "b", "$or": [{"v": {"$lt": 2}}, {"v": 5}]}}}, True),
        ({"rows.p": {"$ne": "c"}}, True),
        ({"rows.p": {"$ne": "a"}}, False),
        ({"n": {"$nin": [1, 2]}}, True),
        ({"s": {"$regex": "uye"}}, True),
        ({"$nor": [{"n": 3}]}, False),
        ({"n": {"$gt": "2"}}, False),  # type bracketing: a number is never above a string
        ({"missing": None}, True),
        ({"missing": {"$ne": None}}, False),
    ],
)
def test_filters_evaluate_as_mongodb_does(filter_: dict[str, Any], expected: bool) -> None:
    assert matches(DOC, filter_) is expected


async def test_sort_on_an_array_uses_its_least_element_ascending_and_greatest_descending() -> None:
    collection = FakeMongoClient()["db"]["c"]
    for id_, values in (("x", [1, 9]), ("y", [3, 4]), ("z", None)):
        await collection.insert_one({"_id": id_, "v": values})
    ascending = [d["_id"] async for d in collection.find({}, sort=[("v", 1)])]
    descending = [d["_id"] async for d in collection.find({}, sort=[("v", -1)])]
    assert (ascending, descending) == (["z", "x", "y"], ["x", "y", "z"])
    assert await collection.count_documents({"v": {"$gt": 3}}) == 2
