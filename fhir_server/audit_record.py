"""What an AuditEvent records, kept compact until someone reads it.

Every interaction leaves an AuditEvent, so building one must cost next to nothing. An
:class:`AuditRecord` holds the facts of one interaction (what was done, with which outcome,
by whom, from where, on which resources and patients, when) as a few strings; its
:meth:`~AuditRecord.to_event` builds the R4 AuditEvent from them, always the same JSON for the
same record. Stores may keep records in this compact form (:meth:`~AuditRecord.compact`) and
build the AuditEvent only when it is read; :meth:`~AuditRecord.refs` lists what it is searched
by (the patients, entities and agents it names).

The AuditEvent: type ``rest`` with the interaction as subtype (token issuance: DICOM "User
Authentication"/"Login"; token revocation: "User Authentication"/"Logout"), action (C/R/U/D/E),
recorded time, outcome (0 success, 4 minor failure for a refused or invalid request, 8 serious
failure for a server error), the agent (who called: the Patient of a ``patient/`` token, the
user (``fhirUser``) of a clinician's, or the token's subject, with the client id as ``altId``
and the network address; the Organization a
client acts for as a second agent), the source (this server) and the entities (each resource
touched, and each patient they belong to in the role "Patient", so
``AuditEvent?patient=Patient/123`` finds every access to a person's records; a search's query
string as a "Query" entity).
"""

from __future__ import annotations

import base64
import itertools
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import cache
from typing import Any, Protocol

__all__ = [
    "AGENT_REF",
    "DEFAULT_OBSERVER",
    "ENTITY_REF",
    "MAX_GROUPS",
    "PATIENT_REF",
    "TOKEN_ISSUANCE",
    "TOKEN_REVOCATION",
    "AuditOutcome",
    "AuditRecord",
    "Group",
    "action_of",
    "audit_event",
    "audit_record",
    "event_id_in_group",
    "group_of_event_id",
    "new_event_id",
    "outcome_for_status",
    "type_and_subtype_keys",
]

TOKEN_ISSUANCE = "token"
TOKEN_REVOCATION = "token-revocation"
DEFAULT_OBSERVER = "fhir-server"
_DCM = "http://dicom.nema.org/resources/ontology/DCM"
_EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
_RESTFUL = "http://hl7.org/fhir/restful-interaction"
_OPERATION_SYSTEM = "urn:fhir-server:operation"
_ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
_OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
_SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
_CLIENT_SYSTEM = "urn:fhir-server:client"
_PURPOSE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
_ACTIONS = {
    "create": "C",
    "read": "R", "vread": "R", "search-type": "R", "search-system": "R", "history-instance": "R",
    "history-type": "R", "history-system": "R", "capabilities": "R",
    "update": "U", "patch": "U",
    "delete": "D",
}  # fmt: skip
_RESTFUL_CODES = frozenset(_ACTIONS) | {"transaction", "batch", "operation"}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: The kinds of :meth:`AuditRecord.refs`.
PATIENT_REF, ENTITY_REF, AGENT_REF = 0, 1, 2
#: Version 1 of the compact form held the id and the recorded time; version 2 leaves them to
#: the store, which keeps both in columns of their own; version 3 adds the purpose, its
#: reason, the policies and the user (``fhirUser``); version 4 adds the groups after the
#: first (a record of several patients' events, see :attr:`AuditRecord.groups`).
_COMPACT_VERSION = 3
_GROUPED_VERSION = 4
#: The low bits of an event id that number the events of one record (see :func:`new_event_id`).
_GROUP_BITS = 6
#: How many events one record holds at most (its first and its :attr:`AuditRecord.groups`).
MAX_GROUPS = 1 << _GROUP_BITS
#: One more event of a record: the resources it names, their patients, the Consents.
Group = tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]


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


class Caller(Protocol):
    """What a record takes from a verified token (``security.tokens.AccessContext``)."""

    @property
    def subject(self) -> str: ...
    @property
    def issuer(self) -> str: ...
    @property
    def client_id(self) -> str | None: ...
    @property
    def patient_id(self) -> str | None: ...
    @property
    def organization(self) -> str | None: ...
    @property
    def fhir_user(self) -> str | None: ...


@dataclass(slots=True)
class AuditRecord:
    """The facts of one interaction; ``recorded`` is in microseconds since 1970 (UTC).

    Not frozen (a frozen dataclass sets each field through ``object.__setattr__``, which made
    building one cost 3.5 µs instead of 0.5 µs, on every request): treat it as a value.

    ``has_caller`` tells whether a verified token was presented (``issuer``, ``subject``,
    ``patient_id`` and ``organization`` come from it); ``client_id`` is the token's client,
    or the client claimed by a request that had no valid token.

    ``groups``: a request that touched several patients' records leaves one AuditEvent per
    patient, each naming only that patient's resources. One record holds them all: its own
    ``touched``, ``patients`` and ``policies`` are the first event's, and each group the next
    one's; :meth:`event_records` gives the records of the events one by one (event ``k`` has
    the id ``event_id_in_group(id, k)``), and everything else is shared. A store may keep the
    record whole (the SQLite audit log: one row per request instead of one per patient) as long
    as it shows each event as :meth:`event_records` gives it.
    """

    interaction: str
    status: int
    id: str
    recorded: int
    has_caller: bool = False
    issuer: str | None = None
    subject: str | None = None
    patient_id: str | None = None
    organization: str | None = None
    client_id: str | None = None
    touched: tuple[str, ...] = ()
    patients: tuple[str, ...] = ()
    address: str | None = None
    query: str | None = None
    outcome_desc: str | None = None
    observer: str = DEFAULT_OBSERVER
    purpose: str | None = None
    reason: str | None = None
    policies: tuple[str, ...] = ()
    user: str | None = None
    groups: tuple[Group, ...] = ()

    @property
    def action(self) -> str:
        """AuditEvent.action."""
        return action_of(self.interaction)

    @property
    def outcome(self) -> AuditOutcome:
        """AuditEvent.outcome."""
        return outcome_for_status(self.status)

    @property
    def recorded_instant(self) -> str:
        """AuditEvent.recorded: the instant in UTC, to the millisecond."""
        moment = _EPOCH + timedelta(microseconds=self.recorded)
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def compact(self) -> list[Any]:
        """Return the record as a JSON array, without ``id`` and ``recorded`` (the store keeps
        those beside it; see :meth:`from_compact`); with groups, version 4 (the groups last)."""
        version = _GROUPED_VERSION if self.groups else _COMPACT_VERSION
        values = [version, self.interaction, self.status, self.has_caller, self.issuer,
                  self.subject, self.patient_id, self.organization, self.client_id,
                  self.touched, self.patients, self.address, self.query, self.outcome_desc,
                  self.observer, self.purpose, self.reason, self.policies,
                  self.user]  # fmt: skip
        return [*values, self.groups] if self.groups else values

    @classmethod
    def from_compact(cls, values: Sequence[Any], id: str, recorded: int) -> AuditRecord:
        """Return the record :meth:`compact` wrote (``id`` and ``recorded`` are only used for
        versions 2 and 3; version 1 arrays carry their own)."""
        why: Sequence[Any] = (None, None, (), None)
        groups: Sequence[Any] = ()
        if values and values[0] == _GROUPED_VERSION:
            values, groups = values[:-1], values[-1]
            values = [_COMPACT_VERSION, *values[1:]]
        if values and values[0] == 1:
            (_, interaction, status, id, recorded, has_caller, issuer, subject, patient_id,
             organization, client_id, touched, patients, address, query, outcome_desc,
             observer) = values  # fmt: skip
        elif values and values[0] in (2, _COMPACT_VERSION):
            (_, interaction, status, has_caller, issuer, subject, patient_id, organization,
             client_id, touched, patients, address, query, outcome_desc, observer) = values[:15]
            why = values[15:] or why
        else:
            raise ValueError("not a compact audit record")
        purpose, reason, policies, user = why
        return cls(interaction, status, id, recorded, has_caller, issuer, subject, patient_id,
                   organization, client_id, tuple(touched), tuple(patients), address, query,
                   outcome_desc, observer, purpose, reason, tuple(policies), user,
                   tuple((tuple(t), tuple(p), tuple(c)) for t, p, c in groups))  # fmt: skip

    @property
    def event_count(self) -> int:
        """How many AuditEvents the record stands for (1 plus its groups)."""
        return 1 + len(self.groups)

    def event_record(self, k: int) -> AuditRecord:
        """The record of the record's ``k``-th event alone (``0 <= k < event_count``)."""
        if k == 0:
            if not self.groups:
                return self
            return self._with_group(self.id, self.touched, self.patients, self.policies)
        touched, patients, policies = self.groups[k - 1]
        return self._with_group(event_id_in_group(self.id, k), touched, patients, policies)

    def event_records(self) -> list[AuditRecord]:
        """The records of the record's events one by one (one, without groups)."""
        return [self.event_record(k) for k in range(self.event_count)]

    def _with_group(self, id: str, touched: tuple[str, ...], patients: tuple[str, ...],
                    policies: tuple[str, ...]) -> AuditRecord:
        return AuditRecord(
            self.interaction, self.status, id, self.recorded, self.has_caller, self.issuer,
            self.subject, self.patient_id, self.organization, self.client_id, touched,
            patients, self.address, self.query, self.outcome_desc, self.observer,
            self.purpose, self.reason, policies, self.user)

    def regrouped(self, groups: Sequence[tuple[Sequence[str], Sequence[str], Sequence[str]]]
                  ) -> AuditRecord:
        """The record with more events (``(touched, patients, policies)`` each, at most
        ``MAX_GROUPS - 1``), the first event's facts its own; the rest is shared."""
        if len(groups) >= MAX_GROUPS:
            raise ValueError(f"a record holds at most {MAX_GROUPS} events")
        record = self._with_group(self.id, self.touched, self.patients, self.policies)
        record.groups = tuple((tuple(touched), tuple(dict.fromkeys(patients)),
                               tuple(dict.fromkeys(policies)))
                              for touched, patients, policies in groups)
        return record

    def refs(self) -> set[tuple[int, str]]:
        """Return what the AuditEvent is searched by, as ``(kind, reference)`` pairs.

        Kinds: :data:`PATIENT_REF` (an entity that is a Patient), :data:`ENTITY_REF` (every
        other entity: ``Type/id`` without ``_history``), :data:`AGENT_REF` (``Type/id`` or
        ``identifier|system|value`` of each agent's ``who``). So the R4 parameter ``patient``
        is the kinds patient and agent, and ``entity`` the kinds patient and entity. With groups,
        those of all its events (:meth:`named_refs` gives each event's own).
        """
        found = self.named_refs()
        for touched, patients, _ in self.groups:
            found |= _named(touched, patients)
        found |= self.agent_refs()
        return found

    def named_refs(self) -> set[tuple[int, str]]:
        """The patients and entities the first event names (not the agents: see
        :meth:`agent_refs`, shared by every event of the record)."""
        return _named(self.touched, self.patients)

    def agent_refs(self) -> set[tuple[int, str]]:
        """The agents of the record's events, as :meth:`refs` gives them."""
        found: set[tuple[int, str]] = set()
        if self.has_caller:
            found.add((AGENT_REF, f"Patient/{self.patient_id}" if self.patient_id
                       else self.user or f"identifier|{self.issuer}|{self.subject}"))
            if self.organization:
                found.add((AGENT_REF, self.organization))
        elif self.client_id:
            found.add((AGENT_REF, f"identifier|{_CLIENT_SYSTEM}|{self.client_id}"))
        return found

    def group_refs(self) -> list[set[tuple[int, str]]]:
        """The patients and entities each event names, in event order (agents apart)."""
        return [self.named_refs(), *(_named(t, p) for t, p, _ in self.groups)]

    def _who(self) -> dict[str, Any] | None:
        if self.has_caller and self.patient_id:
            return {"reference": f"Patient/{self.patient_id}"}
        if self.has_caller and self.user:
            return {"reference": self.user}
        if self.has_caller:
            return {"identifier": {"system": self.issuer, "value": self.subject}}
        if self.client_id:
            return {"identifier": {"system": _CLIENT_SYSTEM, "value": self.client_id}}
        return None

    def to_event(self) -> dict[str, Any]:
        """Return the R4 AuditEvent of the record (without ``meta``)."""
        kind, subtype = _type_and_subtype(self.interaction)
        outcome = self.outcome
        event: dict[str, Any] = {
            "resourceType": "AuditEvent",
            "id": self.id,
            "type": dict(kind),
            "subtype": [dict(coding) for coding in subtype],
            "action": self.action,
            "recorded": self.recorded_instant,
            "outcome": outcome.value,
            "agent": self._agents(),
            "source": {
                "observer": {"display": self.observer},
                "type": [_coding(_SOURCE_TYPE, "4", "Application Server")],
            },
        }
        if self.outcome_desc or outcome is not AuditOutcome.SUCCESS:
            event["outcomeDesc"] = self.outcome_desc or f"HTTP {self.status}"
        if self.purpose:
            purpose: dict[str, Any] = {"coding": [_coding(_PURPOSE_SYSTEM, self.purpose)]}
            event["purposeOfEvent"] = [purpose | ({"text": self.reason} if self.reason else {})]
        entities = _entities(self.touched, self.patients, self.query)
        if entities:
            event["entity"] = entities
        return event

    def _agents(self) -> list[dict[str, Any]]:
        agent: dict[str, Any] = {
            "type": {"coding": [_coding(_DCM, "110153", "Source Role ID")]},
            "requestor": True,
        }
        who = self._who()
        if who is not None:
            agent["who"] = who
        if self.client_id:
            agent["altId"] = self.client_id
        if self.has_caller and self.subject is not None:
            agent["name"] = self.subject
        if self.address:
            agent["network"] = {"address": self.address, "type": "2"}  # 2 = IP address
        if self.policies:
            agent["policy"] = list(self.policies)
        agents = [agent]
        if self.has_caller and self.organization:
            # The facility the client acts for is a participant, not the requestor.
            agents.append({"who": {"reference": self.organization}, "requestor": False})
        return agents


def audit_record(
    interaction: str,
    *,
    status: int,
    context: Caller | None = None,
    touched: Sequence[str] = (),
    patients: Iterable[str] = (),
    network_address: str | None = None,
    outcome_desc: str | None = None,
    query: str | None = None,
    client_id: str | None = None,
    observer: str = DEFAULT_OBSERVER,
    recorded: datetime | None = None,
    purpose: str | None = None,
    reason: str | None = None,
    policies: Sequence[str] = (),
) -> AuditRecord:
    """Return the record (with a new id) of one interaction.

    ``interaction`` is an ``Interaction`` value (``read``, ``$everything``...), ``transaction``,
    ``batch``, :data:`TOKEN_ISSUANCE` or :data:`TOKEN_REVOCATION`; ``status`` the HTTP status
    answered; ``touched`` the references of the resources read or written
    (``Observation/1/_history/2``); ``patients`` the ids of the patients they belong to;
    ``query`` the query string of a search; ``client_id`` the client when there is no verified
    token (token issuance, refusals before verification); ``purpose`` the v3 PurposeOfUse
    code of the access, ``reason`` the reason given for it (break-the-glass), ``policies``
    the Consents (``Consent/id``) that allowed it.
    """
    if recorded is None:
        micros = time.time_ns() // 1000
    else:
        micros = (recorded.astimezone(UTC) - _EPOCH) // timedelta(microseconds=1)
    if context is None:
        return AuditRecord(str(interaction), status, new_event_id(micros), micros,
                           client_id=client_id, touched=tuple(touched),
                           patients=tuple(dict.fromkeys(patients)), address=network_address,
                           query=query, outcome_desc=outcome_desc, observer=observer,
                           purpose=purpose, reason=reason,
                           policies=tuple(dict.fromkeys(policies)))
    return AuditRecord(
        str(interaction), status, new_event_id(micros), micros, True, context.issuer,
        context.subject, context.patient_id, context.organization,
        client_id or context.client_id, tuple(touched), tuple(dict.fromkeys(patients)),
        network_address, query, outcome_desc, observer, purpose, reason,
        tuple(dict.fromkeys(policies)), getattr(context, "fhir_user", None),
    )


def new_event_id(micros: int) -> str:
    """Return a new AuditEvent id that sorts by time, laid out like a UUID.

    48 bits of milliseconds, then 32 random bits drawn once per process and a 48-bit field
    (as UUIDv7 puts time first), so the id index of an append-only log grows at its end and no
    system call is needed per event; processes differ by their random bits. The field is a
    counter in its high 42 bits and 0 in its low 6: the ids of a record's further events
    (:func:`event_id_in_group`) fill those.
    """
    counter = (next(_ID_COUNTER) << _GROUP_BITS) & 0xFFFFFFFFFFFF
    millis = f"{(micros // 1000) & 0xFFFFFFFFFFFF:012x}"
    return f"{millis[:8]}-{millis[8:]}-{_ID_PREFIX}-{counter:012x}"


def event_id_in_group(id: str, k: int) -> str:
    """Return the id of the ``k``-th event of the record whose id is ``id``."""
    if k == 0:
        return id
    return f"{id[:-12]}{int(id[-12:], 16) + k:012x}"


def group_of_event_id(id: str) -> tuple[str, int] | None:
    """Return ``(record id, k)`` for the id of a record's ``k``-th event (``k > 0``), or None
    when ``id`` cannot be one (not laid out by :func:`new_event_id`, or ``k`` would be 0)."""
    tail = id[-12:]
    if len(id) != 36 or id[-13:-12] != "-" or not all(c in _HEX for c in tail):
        return None
    k = int(tail, 16) & (MAX_GROUPS - 1)
    return (f"{id[:-12]}{int(tail, 16) - k:012x}", k) if k else None


_HEX = frozenset("0123456789abcdef")


_PREFIX_HEX = os.urandom(4).hex()
_ID_PREFIX = f"{_PREFIX_HEX[:4]}-{_PREFIX_HEX[4:]}"
_ID_COUNTER = itertools.count(int.from_bytes(os.urandom(4), "big"))


def audit_event(interaction: str, **facts: Any) -> dict[str, Any]:
    """Return the AuditEvent (with a new id) of one interaction (see :func:`audit_record`)."""
    return audit_record(interaction, **facts).to_event()


def _coding(system: str, code: str, display: str | None = None) -> dict[str, str]:
    coding = {"system": system, "code": code}
    if display:
        coding["display"] = display
    return coding


@cache
def _type_and_subtype(interaction: str) -> tuple[dict[str, str], tuple[dict[str, str], ...]]:
    if interaction == TOKEN_ISSUANCE:
        return _coding(_DCM, "110114", "User Authentication"), (_coding(_DCM, "110122", "Login"),)
    if interaction == TOKEN_REVOCATION:
        return _coding(_DCM, "110114", "User Authentication"), (_coding(_DCM, "110123", "Logout"),)
    rest = _coding(_EVENT_TYPE, "rest", "RESTful Operation")
    if interaction.startswith("$"):
        return rest, (_coding(_RESTFUL, "operation"), _coding(_OPERATION_SYSTEM, interaction))
    code = interaction if interaction in _RESTFUL_CODES else "operation"
    return rest, (_coding(_RESTFUL, code),)


def type_and_subtype_keys(interaction: str) -> tuple[str, tuple[str, ...]]:
    """Return ``system|code`` of the AuditEvent type and of each subtype of an interaction."""
    kind, subtype = _type_and_subtype(interaction)
    return f"{kind['system']}|{kind['code']}", tuple(f"{c['system']}|{c['code']}" for c in subtype)


def _named(touched: Iterable[str], patients: Iterable[str]) -> set[tuple[int, str]]:
    found = {(PATIENT_REF, f"Patient/{pid}") for pid in patients}
    for reference in touched:
        plain = reference.split("/_history/", 1)[0]
        found.add((PATIENT_REF if plain.startswith("Patient/") else ENTITY_REF, plain))
    return found


def _patient_refs(patients: Iterable[str]) -> list[str]:
    return [f"Patient/{pid}" for pid in dict.fromkeys(patients)]


def _entities(
    touched: Iterable[str], patients: Iterable[str], query: str | None
) -> list[dict[str, Any]]:
    patient_refs = _patient_refs(patients)
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
