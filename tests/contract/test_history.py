"""Contract: history at instance, type and system level, newest first, paged by cursor."""

from __future__ import annotations

from typing import Any

import pytest

from fhir_server.storage.port import HistoryQuery, ResourceStore, StoredResource
from tests.builders import observation, patient


def _entry(stored: StoredResource) -> tuple[str, str, int, bool]:
    return (stored.resource_type, stored.id, stored.version, stored.deleted)


async def _write_story(store: ResourceStore) -> list[StoredResource]:
    """Patient p1 v1, Observation o1 v1, p1 v2, p2 v1, p1 deleted (v3): in that order."""
    written: list[StoredResource] = []
    steps: list[tuple[str, Any]] = [
        ("create", {**patient(), "id": "p1"}),
        ("create", {**observation(), "id": "o1"}),
        ("update", {**patient(gender="female"), "id": "p1"}),
        ("create", {**patient(cccd="079200000001"), "id": "p2"}),
        ("delete", ("Patient", "p1")),
    ]
    for action, payload in steps:
        async with store.transaction() as tx:
            if action == "create":
                written.append(await tx.create(payload, None))
            elif action == "update":
                written.append((await tx.update(payload, None)).stored)
            else:
                marker = await tx.delete(*payload)
                assert marker is not None
                written.append(marker)
    return written


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (
            HistoryQuery("Patient", "p1"),
            [("Patient", "p1", 3, True), ("Patient", "p1", 2, False), ("Patient", "p1", 1, False)],
        ),
        (
            HistoryQuery("Patient"),
            [
                ("Patient", "p1", 3, True),
                ("Patient", "p2", 1, False),
                ("Patient", "p1", 2, False),
                ("Patient", "p1", 1, False),
            ],
        ),
        (
            HistoryQuery(),
            [
                ("Patient", "p1", 3, True),
                ("Patient", "p2", 1, False),
                ("Patient", "p1", 2, False),
                ("Observation", "o1", 1, False),
                ("Patient", "p1", 1, False),
            ],
        ),
    ],
    ids=["instance", "type", "system"],
)
async def test_history_lists_versions_newest_first(
    store: ResourceStore, query: HistoryQuery, expected: list[tuple[str, str, int, bool]]
) -> None:
    await _write_story(store)
    page = await store.history(query)
    assert [_entry(e) for e in page.entries] == expected
    assert page.next_seq is None
    assert len(page.seqs) == len(expected)
    assert list(page.seqs) == sorted(page.seqs, reverse=True)


async def test_history_entries_carry_content_except_for_deletions(store: ResourceStore) -> None:
    await _write_story(store)
    page = await store.history(HistoryQuery("Patient", "p1"))
    assert [e.content == b"" for e in page.entries] == [True, False, False]
    assert [e.method for e in page.entries] == ["DELETE", "PUT", "POST"]
    assert page.entries[1].resource()["gender"] == "female"


async def test_history_pages_follow_the_cursor_without_gaps_or_repeats(
    store: ResourceStore,
) -> None:
    await _write_story(store)
    seen: list[tuple[str, str, int, bool]] = []
    cursor: int | None = None
    pages = 0
    while True:
        page = await store.history(HistoryQuery(count=2, before_seq=cursor))
        pages += 1
        seen.extend(_entry(e) for e in page.entries)
        if page.next_seq is None:
            break
        assert page.next_seq == page.seqs[-1]
        cursor = page.next_seq
    everything = await store.history(HistoryQuery(count=100))
    assert seen == [_entry(e) for e in everything.entries]
    assert pages == 3


async def test_history_page_is_stable_while_others_write(store: ResourceStore) -> None:
    await _write_story(store)
    first = await store.history(HistoryQuery(count=2))
    async with store.transaction() as tx:
        await tx.create({**patient(cccd="001200000009"), "id": "p3"}, None)
    second = await store.history(HistoryQuery(count=2, before_seq=first.next_seq))
    assert [_entry(e) for e in second.entries] == [
        ("Patient", "p1", 2, False),
        ("Observation", "o1", 1, False),
    ]


async def test_history_since_keeps_versions_written_at_or_after_the_instant(
    store: ResourceStore,
) -> None:
    written = await _write_story(store)
    page = await store.history(HistoryQuery(since=written[2].last_updated))
    assert [_entry(e) for e in page.entries] == [_entry(w) for w in reversed(written[2:])]


async def test_history_at_keeps_the_versions_current_at_the_instant(
    store: ResourceStore,
) -> None:
    written = await _write_story(store)
    at_third = await store.history(HistoryQuery(at=written[2].last_updated))
    assert [_entry(e) for e in at_third.entries] == [
        ("Patient", "p1", 2, False),
        ("Observation", "o1", 1, False),
    ]
    at_end = await store.history(HistoryQuery("Patient", at=written[4].last_updated))
    assert [_entry(e) for e in at_end.entries] == [
        ("Patient", "p1", 3, True),
        ("Patient", "p2", 1, False),
    ]


async def test_history_of_an_unknown_resource_is_empty(store: ResourceStore) -> None:
    page = await store.history(HistoryQuery("Patient", "nobody"))
    assert (list(page.entries), page.next_seq) == ([], None)
