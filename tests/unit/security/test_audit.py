"""AuditEvents of interactions, their immutability, and the batched audit trail."""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, datetime
from typing import Any

import pytest
from fhir.resources.R4B.auditevent import AuditEvent

from fhir_server.errors import MethodNotAllowed
from fhir_server.search.indexing import compartment_patients
from fhir_server.search.registry import SearchParameterRegistry
from fhir_server.security.audit import (
    TOKEN_ISSUANCE,
    AuditRecord,
    AuditTrail,
    audit_event,
    audit_record,
    outcome_for_status,
)
from fhir_server.security.caller import Caller
from fhir_server.security.policy import AccessRequest, authorize
from fhir_server.security.scopes import parse_scopes
from fhir_server.security.tokens import AccessContext


def citizen() -> AccessContext:
    return AccessContext(
        subject="cccd-001",
        issuer="https://vneid.example",
        scopes=parse_scopes("patient/*.rs"),
        expires_at=2_000_000_000,
        client_id="vneid-app",
        patient_id="123",
    )


def hospital() -> AccessContext:
    return AccessContext(
        subject="bv-1",
        issuer="https://fhir.example",
        scopes=parse_scopes("system/*.cruds"),
        expires_at=2_000_000_000,
        client_id="bv-1",
        organization="Organization/bv-bach-mai",
    )


# -- the AuditEvent ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("interaction", "action", "subtypes"),
    [
        ("read", "R", ["read"]),
        ("vread", "R", ["vread"]),
        ("search-type", "R", ["search-type"]),
        ("history-instance", "R", ["history-instance"]),
        ("create", "C", ["create"]),
        ("update", "U", ["update"]),
        ("patch", "U", ["patch"]),
        ("delete", "D", ["delete"]),
        ("transaction", "E", ["transaction"]),
        ("$everything", "E", ["operation", "$everything"]),
    ],
)
def test_audit_event_records_the_interaction_as_subtype_and_action(
    interaction: str, action: str, subtypes: list[str]
) -> None:
    event = audit_event(interaction, status=200, context=citizen())
    assert event["type"]["code"] == "rest"
    assert [coding["code"] for coding in event["subtype"]] == subtypes
    assert event["subtype"][0]["system"] == "http://hl7.org/fhir/restful-interaction"
    assert event["action"] == action
    AuditEvent.model_validate(event)


@pytest.mark.parametrize(
    ("status", "outcome"),
    [(200, "0"), (201, "0"), (304, "0"), (401, "4"), (403, "4"), (404, "4"), (500, "8")],
)
def test_outcome_codes_follow_the_http_status(status: int, outcome: str) -> None:
    assert outcome_for_status(status).value == outcome
    event = audit_event("read", status=status, context=citizen())
    assert event["outcome"] == outcome
    assert ("outcomeDesc" in event) is (status >= 400)
    AuditEvent.model_validate(event)


def test_a_patients_read_names_the_patient_as_agent_and_entity() -> None:
    event = audit_event(
        "read",
        status=200,
        context=citizen(),
        touched=["Observation/o1/_history/2"],
        patients=["123"],
        network_address="203.0.113.7",
        recorded=datetime(2026, 3, 1, 8, 30, tzinfo=UTC),
    )
    AuditEvent.model_validate(event)
    (agent,) = event["agent"]
    assert agent["who"] == {"reference": "Patient/123"}
    assert agent["altId"] == "vneid-app"
    assert agent["requestor"] is True
    assert agent["network"] == {"address": "203.0.113.7", "type": "2"}
    assert event["recorded"] == "2026-03-01T08:30:00.000Z"
    roles = {e["what"]["reference"]: e["role"]["code"] for e in event["entity"]}
    assert roles == {"Patient/123": "1", "Observation/o1/_history/2": "4"}
    # found by AuditEvent?patient=Patient/123, and in that patient's compartment
    assert compartment_patients(event, SearchParameterRegistry.load()) == {"123"}


def test_a_hospital_write_names_the_client_and_the_organization_it_acts_for() -> None:
    event = audit_event("create", status=201, context=hospital(), touched=["Encounter/e1"])
    AuditEvent.model_validate(event)
    requestor, facility = event["agent"]
    assert requestor["who"]["identifier"] == {"system": "https://fhir.example", "value": "bv-1"}
    assert requestor["altId"] == "bv-1"
    assert facility == {"who": {"reference": "Organization/bv-bach-mai"}, "requestor": False}


def test_a_search_records_its_query() -> None:
    event = audit_event("search-type", status=200, context=citizen(), query="code=1234-5")
    AuditEvent.model_validate(event)
    (query,) = event["entity"]
    assert base64.b64decode(query["query"]) == b"code=1234-5"
    assert query["role"]["code"] == "24"


def test_a_refusal_before_any_token_is_recorded_with_the_claimed_client() -> None:
    event = audit_event(TOKEN_ISSUANCE, status=401, client_id="bv-9", outcome_desc="bad assertion")
    AuditEvent.model_validate(event)
    assert event["type"]["code"] == "110114"
    assert event["outcome"] == "4"
    assert event["outcomeDesc"] == "bad assertion"
    assert event["agent"][0]["who"]["identifier"]["value"] == "bv-9"


def test_each_audit_event_has_its_own_id() -> None:
    assert audit_event("read", status=200)["id"] != audit_event("read", status=200)["id"]


# -- immutability ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("resource_type", "interaction", "protected"),
    [
        ("AuditEvent", "update", True),
        ("AuditEvent", "patch", True),
        ("AuditEvent", "delete", True),
        ("AuditEvent", "read", False),
        ("AuditEvent", "search-type", False),
        ("AuditEvent", "create", False),
        ("Observation", "delete", False),
    ],
)
@pytest.mark.parametrize("caller", [Caller(), Caller(scopes=parse_scopes("system/*.cruds"),
                                                     verified=True)])
def test_audit_events_cannot_be_updated_or_deleted_by_anyone(
    resource_type: str, interaction: str, protected: bool, caller: Caller
) -> None:
    """The access policy answers 405 to a change of an AuditEvent, whoever asks (the server
    itself may only PUT one, to load an export: the audit log refuses a change); everything
    else is left to the scopes."""
    registry = SearchParameterRegistry.load()
    request = AccessRequest(interaction, resource_type, "e1")
    if protected and not (caller.unlimited and interaction == "update"):
        with pytest.raises(MethodNotAllowed) as caught:
            authorize(caller, request, registry)
        assert caught.value.message_id == "MSG_AUDIT_IMMUTABLE"
    else:
        authorize(caller, request, registry)


# -- the batched trail -------------------------------------------------------------------------


class Sink:
    def __init__(self, fail_times: int = 0, delay: float = 0.0) -> None:
        self.batches: list[list[dict[str, Any]]] = []
        self.fail_times = fail_times
        self.delay = delay

    async def __call__(self, events: list[dict[str, Any]]) -> None:
        await asyncio.sleep(self.delay)
        if self.fail_times:
            self.fail_times -= 1
            raise OSError("disk full")
        self.batches.append(list(events))

    def written(self) -> list[int]:
        return [event["n"] for batch in self.batches for event in batch]


async def test_trail_writes_a_batch_when_batch_size_events_wait() -> None:
    sink = Sink()
    trail = AuditTrail(sink, batch_size=3, flush_seconds=60, capacity=10)
    for n in range(3):
        await trail.record({"n": n})
    await asyncio.sleep(0.05)
    assert sink.batches == [[{"n": 0}, {"n": 1}, {"n": 2}]]
    await trail.close()


async def test_trail_writes_waiting_events_after_flush_seconds() -> None:
    sink = Sink()
    trail = AuditTrail(sink, batch_size=100, flush_seconds=0.05, capacity=100)
    await trail.record({"n": 1})
    assert sink.batches == []
    await asyncio.sleep(0.2)
    assert sink.written() == [1]
    await trail.close()


async def test_trail_close_writes_everything_left() -> None:
    sink = Sink()
    trail = AuditTrail(sink, batch_size=4, flush_seconds=60, capacity=20)
    for n in range(10):
        await trail.record({"n": n})
    await trail.close()
    assert sink.written() == list(range(10))
    assert trail.pending == 0
    with pytest.raises(RuntimeError):
        await trail.record({"n": 99})


async def test_a_full_trail_makes_the_caller_wait_instead_of_dropping() -> None:
    sink = Sink(delay=0.01)
    trail = AuditTrail(sink, batch_size=2, flush_seconds=60, capacity=4)
    await asyncio.gather(*(trail.record({"n": n}) for n in range(50)))
    assert trail.pending <= 4
    await trail.close()
    assert sorted(sink.written()) == list(range(50))
    assert all(len(batch) <= 2 for batch in sink.batches)


async def test_a_caller_of_a_full_trail_waits_for_one_batch_not_the_whole_buffer() -> None:
    sink = Sink(delay=0.01)
    trail = AuditTrail(sink, batch_size=2, flush_seconds=60, capacity=10)
    for n in range(10):  # below capacity nothing waits, so the writer has not run yet
        await trail.record({"n": n})
    assert sink.batches == []
    await trail.record({"n": 10})
    assert sink.written() == [0, 1]  # the caller went on after the writer's first batch
    assert trail.pending == 9
    await trail.close()
    assert sink.written() == list(range(11))


async def test_a_caller_waiting_for_room_gets_the_failed_batchs_error() -> None:
    sink = Sink(fail_times=1, delay=0.01)
    trail = AuditTrail(sink, batch_size=2, flush_seconds=60, capacity=4)
    for n in range(4):
        await trail.record({"n": n})
    with pytest.raises(OSError):
        await trail.record({"n": 4})
    assert trail.pending == 4  # nothing lost, nothing added
    await trail.close()
    assert sink.written() == [0, 1, 2, 3]


async def test_a_failed_batch_stays_buffered_and_is_retried() -> None:
    sink = Sink(fail_times=1)
    trail = AuditTrail(sink, batch_size=2, flush_seconds=0.02, capacity=10)
    await trail.record({"n": 1})
    await trail.record({"n": 2})
    await asyncio.sleep(0.2)
    assert sink.written() == [1, 2]
    await trail.close()


async def test_a_failing_final_write_is_reported_not_swallowed() -> None:
    sink = Sink(fail_times=5)
    trail = AuditTrail(sink, batch_size=10, flush_seconds=60, capacity=10)
    await trail.record({"n": 1})
    with pytest.raises(OSError):
        await trail.close()
    assert trail.pending == 1


async def test_the_trail_reports_its_backlog_as_it_grows_and_drains() -> None:
    seen: list[int] = []

    async def sink(batch: list[Any]) -> None:
        pass

    trail = AuditTrail(sink, batch_size=2, flush_seconds=60, capacity=10,
                       on_backlog=seen.append)
    for event in range(3):
        await trail.record(event)
    await trail.close()
    assert seen[:3] == [1, 2, 3] and seen[-1] == 0


async def test_the_trail_counts_a_record_as_the_events_it_holds() -> None:
    """A page's record holds an event per patient: the batch and the capacity count those."""
    def page(patients: int) -> AuditRecord:
        record = audit_record("search-type", status=200, touched=["Patient/p0"], patients=["p0"])
        return record.regrouped([([f"Patient/p{n}"], [f"p{n}"], []) for n in range(1, patients)])

    sink = Sink()
    trail = AuditTrail(sink, batch_size=100, flush_seconds=60, capacity=200)
    await trail.record_many([page(50)])
    assert trail.pending == 50 and sink.batches == []
    await trail.record_many([page(50)])
    await asyncio.sleep(0.05)
    assert [len(batch) for batch in sink.batches] == [2] and trail.pending == 0
    await trail.record_many([page(60), page(60)])
    await trail.close()
    assert [len(batch) for batch in sink.batches] == [2, 1, 1]  # 120 > 100: one at a time
