"""A background job as the job store keeps it, and the caller that started it as data.

A job records who started it (its ``owner``: the ``Caller``, scopes as SMART strings) so that
the work, resumed in another process after a restart, reads with that caller's access, and so
that only that caller can see or stop it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from fhir_server.security.caller import Caller
from fhir_server.security.policy import principal
from fhir_server.security.scopes import parse_scopes

__all__ = ["Job", "JobState", "caller_from_record", "caller_record", "owner_key"]


class JobState(StrEnum):
    """Where a job is: waiting, being worked on, or finished one of three ways."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        """Whether no more work will be done."""
        return self in (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED)


@dataclass(frozen=True)
class Job:
    """One job: its kind, state, owner and the kind's own data.

    ``request`` describes the work (fixed when the job is created); ``checkpoint`` is where
    the work had got to, for resuming; ``result`` what a completed job produced; ``error``
    the OperationOutcome of a failed one; ``progress`` a short text for status requests.
    Times are seconds since the epoch; ``expires`` is when a finished job and what it
    produced are removed.
    """

    id: str
    kind: str
    state: JobState
    owner: dict[str, Any]
    request: dict[str, Any]
    checkpoint: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    progress: str = ""
    created: float = 0.0
    updated: float = 0.0
    expires: float | None = None

    @property
    def caller(self) -> Caller:
        """The caller that started the job."""
        return caller_from_record(self.owner)


def caller_record(caller: Caller) -> dict[str, Any]:
    """The caller as JSON: its fields, the scopes as SMART strings (None: unlimited)."""
    record = {field.name: getattr(caller, field.name) for field in dataclasses.fields(caller)}
    scopes = caller.scopes
    record["scopes"] = None if scopes is None else [scope.to_text() for scope in scopes]
    return record


def caller_from_record(record: dict[str, Any]) -> Caller:
    """The caller of :func:`caller_record` (fields it does not know are left out)."""
    known = {field.name for field in dataclasses.fields(Caller)}
    values = {name: value for name, value in record.items() if name in known}
    scopes = values.get("scopes")
    values["scopes"] = None if scopes is None else parse_scopes(list(scopes))
    values["identities"] = tuple(values.get("identities") or ())  # JSON gave a list
    return Caller(**values)


def owner_key(caller: Caller) -> str:
    """Who a job belongs to: the principal of the access policy (``policy.principal``)."""
    return principal(caller)
