"""What every interaction is given: the store, the search registry and the server's settings.

Interactions are plain async functions of a ``Services`` value and FHIR-level arguments; they
know nothing of HTTP, so the same code serves the REST API, Bundle entries, the loader and
tests.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from fhir_server.errors import Issue
from fhir_server.interactions.changes import ChangeFeed
from fhir_server.jobs.runner import JobRunner
from fhir_server.router.request import FhirRequest, FhirResponse
from fhir_server.search.indexing import index_resource
from fhir_server.search.model import SearchQuery, SearchResult
from fhir_server.security.actors import ActorNames
from fhir_server.security.audit import AuditNote
from fhir_server.security.caller import Caller, KnownCallers
from fhir_server.security.sharing import SharingRules
from fhir_server.settings import Settings
from fhir_server.storage.port import (
    AuditLogTransaction,
    ResourceReader,
    ResourceStore,
    StoredResource,
    StoreTransaction,
)

__all__ = ["AUDIT_EVENT", "Outcome", "Services", "new_id"]

AUDIT_EVENT = "AuditEvent"


def new_id() -> str:
    """Return a new server-assigned logical id: a UUID version 7 (RFC 9562).

    48 bits of milliseconds since 1970, then 74 random bits (from ``os.urandom``). The random
    part keeps ids unguessable, as version 4 ids were; the time first makes the ids of new
    resources, and the references to them, sort together: in a large store each new row of the
    ``(type, id)`` index, of the reference index and of the compartment index then lands
    next to the newest ones instead of on a random page that must be read and written again
    (docs/performance.md).

    The random bytes are read from ``os.urandom`` 4,080 at a time (408 ids) rather than 10 per
    id: each read is a system call that gives the interpreter lock away, 11 times a visit
    Bundle. A forked process drops what its parent had read (``os.register_at_fork``), so two
    processes never hand out the same bytes. The text is formatted from the integer directly
    (what ``str(uuid.UUID(int=...))`` gives, without its checks): 0.5 us, not 1.3.
    """
    millis = time.time_ns() // 1_000_000 & 0xFFFF_FFFF_FFFF
    random_bits = _random_bits()
    text = "%032x" % (millis << 80 | 0x7 << 76 | (random_bits >> 62 & 0xFFF) << 64
                      | 0b10 << 62 | random_bits & 0x3FFF_FFFF_FFFF_FFFF)
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


_RANDOM_READ = 4080  # bytes read from os.urandom at once: 408 ids of 10 bytes
_random = threading.local()


def _random_bits() -> int:
    """80 fresh random bits (10 bytes of ``os.urandom``, read in blocks); no two calls, in
    any thread or process, return the same bytes of a block."""
    state = _random.__dict__
    block: bytes | None = state.get("block")
    at: int = state.get("at", 0)
    if block is None or at >= len(block):
        block, at = state["block"], state["at"] = os.urandom(_RANDOM_READ), 0
    state["at"] = at + 10
    return int.from_bytes(block[at:at + 10], "big")


def _forget_random() -> None:
    """In a forked child: a new thread-local state, so that no block of the parent is used."""
    global _random
    _random = threading.local()


os.register_at_fork(after_in_child=_forget_random)


class RequestHandler(Protocol):
    """The router's door (``router.door.handle``), for what re-enters it from below (a bridge
    committing the Bundles it made)."""

    async def __call__(self, services: Services, request: FhirRequest, caller: Caller
                       ) -> FhirResponse: ...


@dataclass
class Services:
    """The collaborators of the interactions, built once per application.

    ``verifier`` checks bearer tokens (None when access control is off); ``audit_trail``
    batches the AuditEvents of reads (None disables auditing, e.g. in the loader); ``jobs``
    runs background jobs, bulk exports (None where nothing runs them).
    """

    store: ResourceStore
    settings: Settings
    registry: Any = None
    verifier: Any = None
    audit_trail: Any = None
    jobs: JobRunner | None = None
    #: The router's door, set where the services are made (``main``, the loader).
    handle: RequestHandler | None = None
    #: The CapabilityStatement's JSON, built on first request (it depends only on the
    #: settings and the search registry, both fixed for the life of the services).
    capabilities: bytes | None = None
    #: Follows every stored change inside its transaction (the subscriptions' outbox).
    changes: ChangeFeed | None = None

    @property
    def base_url(self) -> str:
        """The public FHIR base URL (for fullUrl, Location and links)."""
        return self.settings.public_base_url()

    @functools.cached_property
    def callers(self) -> KnownCallers:
        """The callers of the verified tokens, one per token and address while the token
        verifier keeps the token (``security.caller.KnownCallers``)."""
        return KnownCallers()

    @functools.cached_property
    def names(self) -> ActorNames:
        """The identifiers of the callers' facilities and users (the names Consents give
        them), read from the store and remembered a minute."""
        return ActorNames(self.store)

    @functools.cached_property
    def sharing(self) -> SharingRules:
        """The deployment's Consent rules (``consent_*`` and ``break_glass_minutes``
        settings), which every request's access decision uses."""
        s = self.settings
        return SharingRules.configured(
            enforced=s.consent_enforced, open_types=s.consent_open_types,
            secondary_use_clients=s.consent_secondary_use_clients,
            break_glass_minutes=s.break_glass_minutes, labels_file=s.consent_labels_file)

    def reader(self, resource_type: str | None) -> ResourceReader:
        """Where resources of the type are read: the store, or its audit log for AuditEvents
        when it keeps them apart."""
        log = self.store.audit_log
        return log if log is not None and resource_type == AUDIT_EVENT else self.store

    async def search(self, query: SearchQuery) -> SearchResult:
        """Run a search on the store, or on its audit log for a search of AuditEvents."""
        only = query.resource_type or (query.types[0] if len(query.types) == 1 else None)
        return await self.reader(only).search(query)

    def index(self, resource: dict[str, Any]) -> object | None:
        """Return the search index of ``resource`` (computed outside the write lock)."""
        if self.registry is None:
            return None
        return index_resource(resource, self.registry)

    async def audit_write(self, tx: StoreTransaction, note: AuditNote, caller: Caller) -> None:
        """Store the request's AuditEvent inside ``tx``, with the writes it names."""
        if self.audit_trail is None or not note.touched:
            return
        await self.audit_in(tx, note.records(caller, 200))
        note.stored = True

    async def audit_in(self, tx: StoreTransaction, records: Sequence[Any]) -> None:
        """Store audit records (``AuditRecord``, or AuditEvent dicts) inside ``tx``.

        A store that keeps its own audit log (``audit_log``, the SQLite store) takes the
        compact records; any other store is given each AuditEvent with its search index.
        """
        if self.store.audit_log is not None:
            await cast(AuditLogTransaction, tx).append_audit(records)
            return
        for item in records:  # a record of several patients' events: each event its own
            for event in [item] if isinstance(item, dict) else [
                    one.to_event() for one in item.event_records()]:
                await tx.create(event, self.index(event))

    async def store_audit(self, records: Sequence[Any]) -> None:
        """Store a batch of read audit records in a transaction of their own.

        Not fsynced on its own (``durable=False``): these records waited up to a second in
        memory already, which a crash would lose just the same; the commit still survives the
        process being killed, and shares the fsync of the next durable write.
        """
        async with self.store.transaction(durable=False) as tx:
            await self.audit_in(tx, records)


@dataclass(frozen=True)
class Outcome:
    """The result of an interaction: status, the stored version (if any) and extra issues.

    ``body`` is used by interactions that answer with something other than one stored
    resource (a Bundle, an OperationOutcome, the CapabilityStatement); ``headers`` are
    those an operation answers with (the ``Content-Location`` of an asynchronous one).
    ``audited``: every request the operation made through the door left its own AuditEvent
    and the operation did nothing else to note, so the router leaves none for it.
    """

    status: int
    stored: StoredResource | None = None
    body: dict[str, Any] | None = None
    issues: tuple[Issue, ...] = field(default=())
    headers: Mapping[str, str] = field(default_factory=dict)
    audited: bool = False
