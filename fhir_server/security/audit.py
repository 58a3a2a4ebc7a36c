"""The audit trail: one R4 AuditEvent per interaction, and how they reach storage.

:func:`audit_record` notes the facts of an interaction as a compact
:class:`~fhir_server.audit_record.AuditRecord` and :func:`audit_event` builds its AuditEvent
(both in ``fhir_server.audit_record``, which describes the AuditEvent's content). A store that
keeps its own audit log (``separate_audit_log``, the SQLite store) takes the records as they
are; others are given the AuditEvents with their search index.

Writes record their AuditEvent in the same store transaction (``Services.record_write``). Reads
go through :class:`AuditTrail`, a bounded buffer written in batches (every ``batch_size`` events
or ``flush_seconds``, and on :meth:`AuditTrail.close`); a full buffer makes the caller wait for a
flush instead of dropping events, and a failed batch stays buffered for the next attempt.

AuditEvents are evidence: the access policy answers 405 (``MSG_AUDIT_IMMUTABLE``) to updates,
patches and deletes of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import orjson

from fhir_server.audit_record import (
    MAX_GROUPS,
    TOKEN_ISSUANCE,
    AuditOutcome,
    AuditRecord,
    action_of,
    audit_event,
    audit_record,
    outcome_for_status,
)
from fhir_server.errors import BadRequest
from fhir_server.search.model import (
    AnyClause,
    ChainClause,
    Clause,
    HasClause,
    Modifier,
    SearchQuery,
)
from fhir_server.security.caller import Caller
from fhir_server.storage.port import StoredResource

__all__ = [
    "TOKEN_ISSUANCE",
    "AuditNote",
    "AuditOutcome",
    "AuditRecord",
    "AuditTrail",
    "BatchAuditLog",
    "action_of",
    "audit_event",
    "audit_record",
    "check_audit_search",
    "outcome_for_status",
]

_LOG = logging.getLogger(__name__)
#: What AuditEvents are searched by: the parameters the audit log keeps (registry
#: ``RESTRICTED_TYPES``) plus ``_id`` and ``_lastUpdated``, sorted by date or ``_lastUpdated``.
AUDIT_SEARCH_PARAMS = frozenset(
    {"_id", "_lastUpdated", "patient", "agent", "entity", "date", "action", "outcome", "type",
     "subtype", "address"}
)  # fmt: skip
AUDIT_SORTS = frozenset({"date", "_lastUpdated"})
_AUDIT = "AuditEvent"
_MODIFIERS = {
    "_id": {None, Modifier.NOT},
    "action": {None, Modifier.NOT},
    "outcome": {None, Modifier.NOT},
    "type": {None, Modifier.NOT},
    "subtype": {None, Modifier.NOT},
    "address": {None, Modifier.EXACT},
    "agent": {None, Modifier.TYPE, Modifier.IDENTIFIER},
    "patient": {None, Modifier.TYPE},
    "entity": {None, Modifier.TYPE},
}


#: How many resources of one request an AuditEvent names (a search page can hold 1,000).
MAX_NAMED = 50


@dataclass
class AuditNote:
    """What one request touched, for its AuditEvents: the resources (``Type/id``, with the
    version for writes), each with the patients it belongs to.

    A request that touched several patients' records leaves one AuditEvent per patient, naming
    only that patient's resources (and one for the resources of no patient): a patient's
    access log never names another patient's records. ``enabled`` False (auditing off)
    collects nothing: finding a resource's patients walks it. ``stored`` is set once the
    AuditEvents went into the store with the request's writes, so the router does not record
    them again.
    """

    interaction: str
    enabled: bool = True
    touched: list[tuple[str, frozenset[str]]] = field(default_factory=list)
    stored: bool = False
    #: Why the caller acted (a v3 PurposeOfUse code: ``TREAT``, ``BTG``, ``PATRQT``...) and
    #: the reason it gave (break-the-glass).
    purpose: str | None = None
    reason: str | None = None
    #: Per patient, the Consents that let the caller read that patient's records.
    policies: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: The rule that hid what the caller asked for (never sent to the caller).
    refusal: str | None = None

    def read(self, resources: Iterable[dict[str, Any]],
             patients_of: Callable[[dict[str, Any]], Iterable[str]]) -> None:
        """Note resources returned to the caller (at most ``MAX_NAMED`` per request)."""
        if not self.enabled:
            return
        for resource in itertools.islice(resources, max(0, MAX_NAMED - len(self.touched))):
            kind, id = resource.get("resourceType"), resource.get("id")
            if kind and id:
                self.touched.append((f"{kind}/{id}", frozenset(patients_of(resource))))

    def read_stored(self, found: Iterable[StoredResource],
                    patients_of: Callable[[dict[str, Any]], Iterable[str]]) -> None:
        """Note stored resources returned to the caller (at most ``MAX_NAMED`` per request):
        their patients as the store read them with the page (``StoredResource.patients``),
        else found in their content by ``patients_of``."""
        if not self.enabled:
            return
        for stored in itertools.islice(found, max(0, MAX_NAMED - len(self.touched))):
            patients = stored.patients
            if patients is None:
                patients = frozenset(patients_of(orjson.loads(stored.content)))
            self.touched.append((f"{stored.resource_type}/{stored.id}", patients))

    def wrote(self, reference: str, patients: Iterable[str] = ()) -> None:
        """Note one written version (``Type/id/_history/n``) and its patients."""
        if self.enabled:
            self.touched.append((reference, frozenset(patients)))

    def discard_writes(self) -> None:
        """Forget what was noted: the writes were rolled back (the refusal names none)."""
        self.touched = []

    def records(self, caller: Caller | None, status: int,
                query: str | None = None) -> list[AuditRecord]:
        """The AuditRecords of the request (their agent: the caller's verified token, if
        any): one per patient whose records it touched, or one."""
        return [event for record in self.grouped_records(caller, status, query)
                for event in record.event_records()]

    def grouped_records(self, caller: Caller | None, status: int,
                        query: str | None = None) -> list[AuditRecord]:
        """The request's AuditEvents as :meth:`records` gives them, held by one record
        (``AuditRecord.groups``; one more per ``MAX_GROUPS`` events, past that)."""
        verified = caller if caller is not None and caller.verified else None
        address = caller.address if caller else None
        groups = self._groups()
        found = []
        for start in range(0, len(groups), MAX_GROUPS):
            (touched, patients), *others = groups[start:start + MAX_GROUPS]
            first = audit_record(self.interaction, status=status, context=verified,
                                 touched=touched, patients=patients, network_address=address,
                                 query=query, purpose=self.purpose, reason=self.reason,
                                 policies=self._policies(patients),
                                 outcome_desc=self.refusal if status >= 400 else None)
            found.append(first.regrouped([(touched, patients, self._policies(patients))
                                          for touched, patients in others])
                         if others else first)
        return found

    def _policies(self, patients: list[str]) -> list[str]:
        return [c for p in patients for c in self.policies.get(p, ())]

    def _groups(self) -> list[tuple[list[str], list[str]]]:
        """Per patient (in id order), the references of that patient's resources; then those
        of no patient. One pass over the touched resources."""
        by_patient: dict[str, list[str]] = {}
        nobody: list[str] = []
        for ref, patients in self.touched:
            for patient in patients:
                by_patient.setdefault(patient, []).append(ref)
            if not patients:
                nobody.append(ref)
        if len(by_patient) <= 1:
            return [([ref for ref, _ in self.touched], list(by_patient))]
        groups = [(by_patient[patient], [patient]) for patient in sorted(by_patient)]
        return groups + ([(nobody, [])] if nobody else [])


def _refuse(text: str) -> BadRequest:
    return BadRequest(text, message_id="MSG_AUDIT_SEARCH")


def check_audit_search(query: SearchQuery) -> None:
    """Raise ``BadRequest`` (``MSG_AUDIT_SEARCH``) for what the audit log cannot answer.

    The audit log (one append-only table, see ``storage.sqlite.audit_log``) answers AuditEvent
    searches on their own, by ``AUDIT_SEARCH_PARAMS`` without chains, ``_has`` or includes;
    and no search of other types can reach AuditEvents through ``_revinclude``, ``_include``,
    chains or ``_has``. A system search without ``_type`` leaves AuditEvents out.
    """
    audit_only = query.resource_type == _AUDIT or query.types == (_AUDIT,)
    if not audit_only and _AUDIT in query.types:
        raise _refuse("AuditEvents are searched on their own (_type=AuditEvent)")
    for item in (*query.includes, *query.revincludes):
        if audit_only or _AUDIT in (item.source_type, item.target_type):
            raise _refuse("_include and _revinclude do not reach AuditEvents")
    for clause in query.clauses:
        if audit_only:
            _check_audit_clause(clause)
        elif _reaches_audit(clause):
            raise _refuse("Chains and _has do not reach AuditEvents")
    for key in query.sort if audit_only else ():
        if key.code not in AUDIT_SORTS:
            raise _refuse(f"AuditEvents sort by date or _lastUpdated, not '{key.code}'")


def _check_audit_clause(clause: AnyClause) -> None:
    if not isinstance(clause, Clause):
        raise _refuse("AuditEvent searches have no chains or _has")
    if clause.code not in AUDIT_SEARCH_PARAMS:
        raise _refuse(f"AuditEvents cannot be searched by '{clause.code}'")
    allowed = _MODIFIERS.get(clause.code, {None})
    if clause.modifier not in allowed:
        raise _refuse(f"'{clause.code}:{clause.modifier}' is not supported on AuditEvent")


def _reaches_audit(clause: AnyClause) -> bool:
    if isinstance(clause, HasClause):
        return clause.resource_type == _AUDIT or _reaches_audit(clause.inner)
    if isinstance(clause, ChainClause):
        return clause.target_types == (_AUDIT,) or _reaches_audit(clause.inner)
    return clause.target_type == _AUDIT


WriteBatch = Callable[[list[Any]], Awaitable[None]]


def _event_count(item: Any) -> int:
    """The AuditEvents one buffered item stands for (a record of several patients: several)."""
    return item.event_count if isinstance(item, AuditRecord) else 1


@runtime_checkable
class BatchAuditLog(Protocol):
    """A store's audit log that writes a batch of read audit records itself, apart from the
    store's write scope (the SQLite store: ``storage.sqlite.audit_writer``)."""

    async def append_batch(self, records: Sequence[Any]) -> None:
        """Store the records in a transaction of their own; raise if nothing was stored."""
        ...


class AuditTrail:
    """A bounded buffer of the audit records of reads, written in batches, losing none.

    A background task (started by the first :meth:`record`) writes a batch when ``batch_size``
    events wait or every ``flush_seconds``, and goes on while a batch's worth waits. When
    ``capacity`` events wait, :meth:`record` makes its caller wait until the writer has written
    the next batch (or raises that batch's error), which slows requests down rather than
    dropping evidence; every waiting caller is let go after one batch, so under overload no
    request waits for the whole buffer. A batch
    whose write fails stays at the head of the buffer and is retried. :meth:`close` stops the
    task and writes everything left (raising if that final write fails). ``on_backlog`` is
    told the number of waiting events whenever it changes (the ``fhir_audit_backlog`` gauge).
    """

    def __init__(
        self,
        write_batch: WriteBatch,
        *,
        batch_size: int = 50,
        flush_seconds: float = 1.0,
        capacity: int = 10_000,
        on_backlog: Callable[[int], object] | None = None,
    ) -> None:
        if batch_size < 1 or capacity < batch_size:
            raise ValueError("need 1 <= batch_size <= capacity")
        self._write_batch = write_batch
        self._batch_size = batch_size
        self._flush_seconds = flush_seconds
        self._capacity = capacity
        self._buffer: list[Any] = []
        self._events = 0  # the AuditEvents the buffer holds (a record may hold several)
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._on_backlog = on_backlog
        self._waiting: list[asyncio.Future[None]] = []  # callers of a full trail

    @property
    def pending(self) -> int:
        """How many events wait to be written."""
        return self._events

    async def record(self, event: Any) -> None:
        """Queue one event; wait for a flush if the buffer is full."""
        await self.record_many((event,))

    async def record_many(self, events: Sequence[Any]) -> None:
        """Queue the events of one request together (a page's, one per patient); wait for a
        flush first if the buffer is full."""
        if self._closed:
            raise RuntimeError("the audit trail is closed")
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        while self._events >= self._capacity:  # backpressure: wait for the next batch
            written = asyncio.get_running_loop().create_future()
            self._waiting.append(written)
            self._wake.set()
            await written
            if self._closed:
                raise RuntimeError("the audit trail closed while this request waited")
        self._buffer.extend(events)
        self._events += sum(_event_count(event) for event in events)
        if self._on_backlog is not None:
            self._on_backlog(self._events)
        if self._events >= self._batch_size:
            self._wake.set()

    async def flush(self) -> None:
        """Write every buffered event, in batches; a failed batch stays buffered."""
        while self._buffer:
            await self._write_oldest()

    async def _write_oldest(self) -> None:
        """Write the oldest batch (if any is left once the lock is had); a failed one stays."""
        async with self._lock:
            batch: list[Any] = []
            events = 0
            for item in self._buffer:  # records up to batch_size events (at least one)
                if batch and events + _event_count(item) > self._batch_size:
                    break
                batch.append(item)
                events += _event_count(item)
            if not batch:
                return
            try:
                await self._write_batch(batch)
            except Exception as error:
                self._release_waiting(error)
                raise
            # Only this removes from the head, under the lock: these are the written ones.
            del self._buffer[: len(batch)]
            self._events -= events
            if self._on_backlog is not None:
                self._on_backlog(self._events)
            self._release_waiting(None)

    def _release_waiting(self, error: Exception | None) -> None:
        """Let the callers waiting for room go on (or raise ``error`` in them)."""
        waiting, self._waiting = self._waiting, []
        for written in waiting:
            if not written.done():
                written.set_exception(error) if error is not None else written.set_result(None)

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
