"""The audit trail: one R4 AuditEvent per interaction, and how they reach storage.

:func:`audit_event` builds the AuditEvent of an interaction (REST type ``rest`` with the
interaction as subtype; token issuance as DICOM "User Authentication"/"Login"), with the action
(C/R/U/D/E), the outcome (0 success, 4 minor failure for a refused or invalid request, 8 serious
failure for a server error), the agent (who called: the Patient of a ``patient/`` token, or the
token's subject, with the client id as ``altId`` and the network address), the source (this
server) and the entities (each resource touched, and each patient they belong to in the role
"Patient", so ``AuditEvent?patient=Patient/123`` finds every access to a person's records).

Writes record their AuditEvent in the same store transaction (:func:`audit_write_in`). Reads
go through :class:`AuditTrail`, a bounded buffer written in batches (every ``batch_size`` events
or ``flush_seconds``, and on :meth:`AuditTrail.close`); a full buffer makes the caller wait for a
flush instead of dropping events, and a failed batch stays buffered for the next attempt.

AuditEvents are evidence: :func:`is_protected` / :func:`refuse_protected` let the API answer
405 (``MSG_AUDIT_IMMUTABLE``) to updates, patches and deletes of them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from fhir_server.errors import MethodNotAllowed
from fhir_server.security.tokens import AccessContext
from fhir_server.storage.port import StoredResource, StoreTransaction

__all__ = [
    "TOKEN_ISSUANCE",
    "AuditOutcome",
    "AuditTrail",
    "action_of",
    "audit_event",
    "audit_write_in",
    "is_protected",
    "outcome_for_status",
    "refuse_protected",
]

TOKEN_ISSUANCE = "token"
DEFAULT_OBSERVER = "fhir-server"
_LOG = logging.getLogger(__name__)
_DCM = "http://dicom.nema.org/resources/ontology/DCM"
_EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
_RESTFUL = "http://hl7.org/fhir/restful-interaction"
_OPERATION_SYSTEM = "urn:fhir-server:operation"
_ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
_OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
_SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
_CLIENT_SYSTEM = "urn:fhir-server:client"
_ACTIONS = {
    "create": "C",
    "read": "R", "vread": "R", "search-type": "R", "search-system": "R", "history-instance": "R",
    "history-type": "R", "history-system": "R", "capabilities": "R",
    "update": "U", "patch": "U",
    "delete": "D",
}  # fmt: skip
_RESTFUL_CODES = frozenset(_ACTIONS) | {"transaction", "batch", "operation"}
_IMMUTABLE = frozenset(
    {"update", "patch", "delete", "conditional-update", "conditional-patch", "conditional-delete"}
)


class AuditOutcome(StrEnum):
    """AuditEvent.outcome (http://hl7.org/fhir/audit-event-outcome)."""

    SUCCESS = "0"
    MINOR_FAILURE = "4"
    SERIOUS_FAILURE = "8"
    MAJOR_FAILURE = "12"


def outcome_for_status(status: int) -> AuditOutcome:
    """Return the outcome of an HTTP status: a refused or invalid request is a minor failure,
    a server error a serious one (major failure is left for the server becoming unavailable)."""
    if status < 400:
        return AuditOutcome.SUCCESS
    return AuditOutcome.MINOR_FAILURE if status < 500 else AuditOutcome.SERIOUS_FAILURE


def action_of(interaction: str) -> str:
    """Return the AuditEvent.action (C, R, U, D or E) of an interaction or operation."""
    return _ACTIONS.get(str(interaction), "E")


def _coding(system: str, code: str, display: str | None = None) -> dict[str, str]:
    coding = {"system": system, "code": code}
    if display:
        coding["display"] = display
    return coding


def _type_and_subtype(interaction: str) -> tuple[dict[str, str], list[dict[str, str]]]:
    if interaction == TOKEN_ISSUANCE:
        return _coding(_DCM, "110114", "User Authentication"), [_coding(_DCM, "110122", "Login")]
    rest = _coding(_EVENT_TYPE, "rest", "RESTful Operation")
    if interaction.startswith("$"):
        return rest, [_coding(_RESTFUL, "operation"), _coding(_OPERATION_SYSTEM, interaction)]
    code = interaction if interaction in _RESTFUL_CODES else "operation"
    return rest, [_coding(_RESTFUL, code)]


def _requestor(
    context: AccessContext | None, client_id: str | None, address: str | None
) -> dict[str, Any]:
    agent: dict[str, Any] = {
        "type": {"coding": [_coding(_DCM, "110153", "Source Role ID")]},
        "requestor": True,
    }
    if context is not None and context.patient_id:
        agent["who"] = {"reference": f"Patient/{context.patient_id}"}
    elif context is not None:
        agent["who"] = {"identifier": {"system": context.issuer, "value": context.subject}}
    client = client_id or (context.client_id if context else None)
    if client:
        agent["who"] = agent.get("who") or {
            "identifier": {"system": _CLIENT_SYSTEM, "value": client}
        }
        agent["altId"] = client
    if context is not None:
        agent["name"] = context.subject
    if address:
        agent["network"] = {"address": address, "type": "2"}  # 2 = IP address
    return agent


def _agents(
    context: AccessContext | None, client_id: str | None, address: str | None
) -> list[dict[str, Any]]:
    agents = [_requestor(context, client_id, address)]
    if context is not None and context.organization:
        # The facility the client acts for is a participant, not the requestor.
        agents.append({"who": {"reference": context.organization}, "requestor": False})
    return agents


def _entities(
    touched: Iterable[str], patients: Iterable[str], query: str | None
) -> list[dict[str, Any]]:
    patient_refs = [f"Patient/{pid}" for pid in dict.fromkeys(patients)]
    entities = [_patient_entity(reference) for reference in patient_refs]
    for reference in dict.fromkeys(touched):
        if reference not in patient_refs:
            entities.append(_resource_entity(reference))
    if query:
        encoded = base64.b64encode(query.encode("utf-8")).decode("ascii")
        entities.append(
            {
                "type": _coding(_ENTITY_TYPE, "2", "System Object"),
                "role": _coding(_OBJECT_ROLE, "24", "Query"),
                "query": encoded,
            }
        )
    return entities


def _patient_entity(reference: str) -> dict[str, Any]:
    return {
        "what": {"reference": reference},
        "type": _coding(_ENTITY_TYPE, "1", "Person"),
        "role": _coding(_OBJECT_ROLE, "1", "Patient"),
    }


def _resource_entity(reference: str) -> dict[str, Any]:
    return {
        "what": {"reference": reference},
        "type": _coding(_ENTITY_TYPE, "2", "System Object"),
        "role": _coding(_OBJECT_ROLE, "4", "Domain Resource"),
    }


def _instant(moment: datetime | None) -> str:
    value = (moment or datetime.now(UTC)).astimezone(UTC)
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def audit_event(
    interaction: str,
    *,
    status: int,
    context: AccessContext | None = None,
    touched: Sequence[str] = (),
    patients: Iterable[str] = (),
    network_address: str | None = None,
    outcome_desc: str | None = None,
    query: str | None = None,
    client_id: str | None = None,
    observer: str = DEFAULT_OBSERVER,
    recorded: datetime | None = None,
) -> dict[str, Any]:
    """Return the AuditEvent (with a new id) of one interaction.

    ``interaction`` is an ``Interaction`` value (``read``, ``$everything``...), ``transaction``,
    ``batch`` or :data:`TOKEN_ISSUANCE`; ``status`` the HTTP status answered; ``touched`` the
    references of the resources read or written (``Observation/1/_history/2``); ``patients`` the
    ids of the patients they belong to; ``query`` the query string of a search; ``client_id``
    the client when there is no verified token (token issuance, refusals before verification).
    """
    kind, subtype = _type_and_subtype(str(interaction))
    outcome = outcome_for_status(status)
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": str(uuid.uuid4()),
        "type": kind,
        "subtype": subtype,
        "action": action_of(str(interaction)),
        "recorded": _instant(recorded),
        "outcome": outcome.value,
        "agent": _agents(context, client_id, network_address),
        "source": {
            "observer": {"display": observer},
            "type": [_coding(_SOURCE_TYPE, "4", "Application Server")],
        },
    }
    if outcome_desc or outcome is not AuditOutcome.SUCCESS:
        event["outcomeDesc"] = outcome_desc or f"HTTP {status}"
    entities = _entities(touched, patients, query)
    if entities:
        event["entity"] = entities
    return event


async def audit_write_in(
    tx: StoreTransaction, event: dict[str, Any], index: object | None
) -> StoredResource:
    """Store the AuditEvent of a write inside the write's own transaction."""
    return await tx.create(event, index)


def is_protected(resource_type: str | None, interaction: str) -> bool:
    """Return whether the API must refuse the interaction: AuditEvents are never changed."""
    return resource_type == "AuditEvent" and str(interaction) in _IMMUTABLE


def refuse_protected(resource_type: str | None, interaction: str) -> None:
    """Raise 405 (``MSG_AUDIT_IMMUTABLE``) for an update, patch or delete of an AuditEvent."""
    if is_protected(resource_type, interaction):
        raise MethodNotAllowed(
            "AuditEvents cannot be updated or deleted", message_id="MSG_AUDIT_IMMUTABLE"
        )


WriteBatch = Callable[[list[dict[str, Any]]], Awaitable[None]]


class AuditTrail:
    """A bounded buffer of read AuditEvents written in batches, losing none.

    A background task (started by the first :meth:`record`) writes a batch when ``batch_size``
    events wait or every ``flush_seconds``. When ``capacity`` events wait, :meth:`record` makes
    its caller flush first, which slows requests down rather than dropping evidence. A batch
    whose write fails stays at the head of the buffer and is retried. :meth:`close` stops the
    task and writes everything left (raising if that final write fails).
    """

    def __init__(
        self,
        write_batch: WriteBatch,
        *,
        batch_size: int = 50,
        flush_seconds: float = 1.0,
        capacity: int = 10_000,
    ) -> None:
        if batch_size < 1 or capacity < batch_size:
            raise ValueError("need 1 <= batch_size <= capacity")
        self._write_batch = write_batch
        self._batch_size = batch_size
        self._flush_seconds = flush_seconds
        self._capacity = capacity
        self._buffer: list[dict[str, Any]] = []
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def pending(self) -> int:
        """How many events wait to be written."""
        return len(self._buffer)

    async def record(self, event: dict[str, Any]) -> None:
        """Queue one event; wait for a flush if the buffer is full."""
        if self._closed:
            raise RuntimeError("the audit trail is closed")
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        while len(self._buffer) >= self._capacity:
            await self.flush()  # backpressure: the caller pays for the write
        self._buffer.append(event)
        if len(self._buffer) >= self._batch_size:
            self._wake.set()

    async def flush(self) -> None:
        """Write every buffered event, in batches; a failed batch stays buffered."""
        async with self._lock:
            while self._buffer:
                batch = self._buffer[: self._batch_size]
                await self._write_batch(batch)
                # Only flush removes from the head, under the lock: these are the written ones.
                del self._buffer[: len(batch)]

    async def close(self) -> None:
        """Stop the background writer and write what is left."""
        self._closed = True
        if self._task is not None:
            self._wake.set()
            await self._task
            self._task = None
        await self.flush()

    async def _run(self) -> None:
        while not self._closed:
            with contextlib.suppress(TimeoutError):  # the timer ran out: flush anyway
                await asyncio.wait_for(self._wake.wait(), timeout=self._flush_seconds)
            self._wake.clear()
            if self._closed:
                return
            try:
                await self.flush()
            except Exception:  # keep the writer alive; the events stay buffered
                _LOG.exception("writing a batch of AuditEvents failed; will retry")
