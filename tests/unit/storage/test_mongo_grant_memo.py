"""The MongoDB store remembers the Consent grants it read only while they do not change
(``storage.mongo.grant_memo``): a write that changes a Consent's grants increments, in its
own transaction, the counters of the patients and actors they name, and every other store
(another server process) reads them again on its next request; nothing else forgets them.

Two ``MongoStore`` values over one stand-in server are two server processes sharing one
database. The stand-in's ``find`` calls are counted: the reads of Consents are the grant
reads, the reads of ``consent_changes`` the cheap check each request still makes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_asyncio

from fhir_server.search.indexing import index_resource
from fhir_server.search.model import ConsentRule, Visibility
from fhir_server.storage.mongo.finding import default_registry
from fhir_server.storage.mongo.grant_memo import CHANGES, changed_keys
from fhir_server.storage.mongo.store import MongoStore
from tests.contract.mongo_fake import FakeCollection, FakeMongoClient

ORG_X, ORG_Y = "Organization/x", "Organization/y"


@dataclass
class Reads:
    """The ``find`` calls sent to the stand-in: of Consents' grants, and of the counters."""

    grants: int = 0
    counters: int = 0
    filters: list[dict[str, Any]] = field(default_factory=list)

    def reset(self) -> None:
        self.grants = self.counters = 0


@pytest_asyncio.fixture
async def two_processes(monkeypatch: pytest.MonkeyPatch
                        ) -> AsyncIterator[tuple[MongoStore, MongoStore, Reads]]:
    reads = Reads()
    original = FakeCollection.find

    def find(self: FakeCollection, filter_: dict[str, Any] | None = None, **options: Any) -> Any:
        if self.name == CHANGES:
            reads.counters += 1
        elif (filter_ or {}).get("type") == "Consent":
            reads.grants += 1
        return original(self, filter_, **options)

    monkeypatch.setattr(FakeCollection, "find", find)
    client = FakeMongoClient()
    one, other = (MongoStore("mongodb://fake/fhir", client=client) for _ in range(2))
    for store in (one, other):
        await store.open()
    yield one, other, reads


def _consent(id: str, patient: str, actor: str, status: str = "active",
             end: str | None = None) -> dict[str, Any]:
    provision: dict[str, Any] = {"type": "permit", "actor": [{"reference": {"reference": actor},
                                                              "role": {"text": "reader"}}]}
    if end is not None:
        provision["period"] = {"end": end}
    return {"resourceType": "Consent", "id": id, "status": status,
            "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                  "consentscope", "code": "patient-privacy"}]},
            "category": [{"text": "privacy"}], "patient": {"reference": f"Patient/{patient}"},
            "provision": provision}


async def _write(store: MongoStore, resource: dict[str, Any]) -> None:
    async with store.transaction() as tx:
        await tx.update(resource, index_resource(resource, default_registry()))


async def _delete(store: MongoStore, id: str) -> None:
    async with store.transaction() as tx:
        await tx.delete("Consent", id)


def _caller(actor: str) -> Visibility:
    return Visibility(consent=ConsentRule(own=None, actors=frozenset({actor})))


async def _granted(store: MongoStore, actor: str) -> set[str]:
    """The patients whose grants the store resolves for the caller ``actor``."""
    resolved = await store.resolve(_caller(actor))
    assert resolved is not None and resolved.consent is not None
    return {g.patient for g in resolved.consent.grants or ()}


async def test_a_revocation_by_another_process_applies_to_the_next_request(
    two_processes: tuple[MongoStore, MongoStore, Reads]
) -> None:
    reader, writer, _ = two_processes
    await _write(writer, _consent("c1", "p1", ORG_X))
    assert await _granted(reader, ORG_X) == {"p1"}
    assert [g.actor for g in await reader.consent_grants(["p1"], [ORG_X])] == [ORG_X]
    await _write(writer, _consent("c1", "p1", ORG_X, status="inactive"))  # revoked
    assert await _granted(reader, ORG_X) == set()
    assert await reader.consent_grants(["p1"], [ORG_X]) == []
    await _write(writer, _consent("c2", "p1", ORG_X))
    assert await _granted(reader, ORG_X) == {"p1"}
    await _delete(writer, "c2")
    assert await _granted(reader, ORG_X) == set()
    assert await reader.consent_grants(["p1"], None) == []


async def test_nothing_changed_no_grant_is_read_again(
    two_processes: tuple[MongoStore, MongoStore, Reads]
) -> None:
    reader, writer, reads = two_processes
    await _write(writer, _consent("c1", "p1", ORG_X))
    first = await reader.consent_grants(["p1"], [ORG_X])
    await _granted(reader, ORG_X)
    reads.reset()
    for _ in range(5):  # five requests of the same caller about the same patient
        assert await reader.consent_grants(["p1"], [ORG_X]) is first
        assert await _granted(reader, ORG_X) == {"p1"}
    assert (reads.grants, reads.counters) == (0, 10)  # one cheap check per question


async def test_other_writes_keep_what_was_read_and_changes_are_read_once(
    two_processes: tuple[MongoStore, MongoStore, Reads]
) -> None:
    reader, writer, reads = two_processes
    await _write(writer, _consent("c1", "p1", ORG_X))
    mine = await reader.consent_grants(["p1"], [ORG_X])
    await _granted(reader, ORG_X)
    await _write(writer, {"resourceType": "Patient", "id": "p1"})  # a visit, an AuditEvent
    await _write(writer, _consent("c9", "p2", ORG_Y))  # another patient, another caller
    same = _consent("c1", "p1", ORG_X)
    same["category"] = [{"text": "edited, same provision"}]
    await _write(writer, same)  # the grants themselves are the same
    reads.reset()
    assert await reader.consent_grants(["p1"], [ORG_X]) is mine
    assert await _granted(reader, ORG_X) == {"p1"}
    assert reads.grants == 0
    await _write(writer, _consent("c3", "p1", "*"))  # everyone: every caller reads again
    assert await _granted(reader, ORG_X) == {"p1"}
    assert len(await reader.consent_grants(["p1"], [ORG_X])) == 2
    assert reads.grants == 2
    await _granted(reader, ORG_X)
    await reader.consent_grants(["p1"], [ORG_X])
    assert reads.grants == 2


async def test_grants_are_counted_in_the_consents_own_transaction(
    two_processes: tuple[MongoStore, MongoStore, Reads]
) -> None:
    """A scope that fails writes neither the Consent nor its counters."""
    reader, writer, _ = two_processes
    await _granted(reader, ORG_X)
    with pytest.raises(RuntimeError):
        async with writer.transaction() as tx:
            consent = _consent("c1", "p1", ORG_X)
            await tx.update(consent, index_resource(consent, default_registry()))
            raise RuntimeError("the request failed after planning its writes")
    assert [d async for d in writer.db[CHANGES].find({})] == []
    await _write(writer, _consent("c1", "p1", ORG_X))
    counted = {d["_id"]: d["n"] async for d in writer.db[CHANGES].find({})}
    assert counted == {"patient|p1": 1, f"actor|{ORG_X}": 1}


async def test_an_expired_consent_stops_applying_without_a_write(
    two_processes: tuple[MongoStore, MongoStore, Reads]
) -> None:
    """The grants are remembered, not the decision: their periods are judged at each use."""
    reader, writer, _ = two_processes
    await _write(writer, _consent("c1", "p1", ORG_X, end="2001-01-01"))
    grants = await reader.consent_grants(["p1"], [ORG_X])
    rule = ConsentRule(own=None, actors=frozenset({ORG_X}))
    assert grants and not any(rule.applies_to(g, 2**62 // 2) for g in grants)


async def test_a_standalone_server_reads_the_grants_each_time() -> None:
    """Without transactions a write and its counters are not atomic: nothing is kept."""
    client = FakeMongoClient(replica_set=False)
    store = MongoStore("mongodb://fake/fhir", client=client)
    await store.open()
    await _write(store, _consent("c1", "p1", ORG_X))
    assert await store.consent_grants(["p1"], [ORG_X]) is not await store.consent_grants(
        ["p1"], [ORG_X])


def test_only_a_change_of_grants_is_counted() -> None:
    row = {"k": "c1", "pt": "p1", "a": ORG_X}
    assert changed_keys(None, {"tokens": []}) == ()
    assert changed_keys({"grants": [row]}, {"grants": [row]}) == ()
    assert changed_keys({"grants": [row]}, None) == ("actor|Organization/x", "patient|p1")
    moved = {**row, "a": ORG_Y}
    assert changed_keys({"grants": [row]}, {"grants": [moved]}) == (
        "actor|Organization/x", "actor|Organization/y", "patient|p1")
