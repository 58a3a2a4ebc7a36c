"""The other names a Consent may give a clinician or a facility: the identifiers of the
Organization its token acts for (the Ministry of Health facility code, ``mã CSKCB``) and of
its user (a practitioner's licence number), as ``identifier|system|value``.

A citizen grants a facility by its code (``actor.reference.identifier``) as often as by its
id; the token names the facility by id (the ``organization`` claim). So before the policy
decides, the door reads those resources (``ActorNames.named``) and the caller carries their
identifiers (``Caller.identities``). Each is remembered for ``ttl`` seconds (a facility's
code does not change; one read a minute per facility and worker), and so is the named caller
of a caller met before (the same ``Caller`` object: ``security.caller.KnownCallers`` hands
out one per token), so that what was derived for it is kept with it.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from fhir_server.errors import FhirError
from fhir_server.security.caller import Caller
from fhir_server.storage.port import ResourceReader

__all__ = ["ActorNames"]

_NAMED_TYPES = ("Organization", "Practitioner", "PractitionerRole")


class ActorNames:
    """The identifiers of the callers' facilities and users, read from the store."""

    def __init__(self, store: ResourceReader, ttl: float = 60.0) -> None:
        self._store = store
        self._ttl = ttl
        self._known: dict[str, tuple[float, tuple[str, ...]]] = {}
        self._named: dict[int, tuple[Caller, Caller, float]] = {}

    async def named(self, caller: Caller) -> Caller:
        """The caller with the identifiers of its facility and user as ``identities``."""
        met = self._named.get(id(caller))  # the caller is held: its id is not reused
        if met is not None and met[0] is caller and met[2] > time.monotonic():
            return met[1]
        references = [r for r in (caller.organization, caller.fhir_user)
                      if r and r.split("/")[0] in _NAMED_TYPES and r.count("/") == 1]
        if caller.unlimited or not references:
            return caller
        read = [await self._names(reference) for reference in references]
        found = tuple(dict.fromkeys(name for _, names in read for name in names))
        named = caller if found == caller.identities else replace(caller, identities=found)
        if len(self._named) >= 10_000:
            self._named.clear()
        self._named[id(caller)] = (caller, named, min(until for until, _ in read))
        return named

    async def _names(self, reference: str) -> tuple[float, tuple[str, ...]]:
        """Until when the identifiers of ``reference`` are known, and they."""
        known = self._known.get(reference)
        if known is not None and known[0] > time.monotonic():
            return known
        kind, id = reference.split("/")
        try:
            resource = (await self._store.read(kind, id)).resource()
        except FhirError:
            resource = {}
        names = tuple(_identifiers(resource))
        if len(self._known) >= 10_000:
            self._known.clear()
        self._known[reference] = (time.monotonic() + self._ttl, names)
        return self._known[reference]


def _identifiers(resource: dict[str, Any]) -> list[str]:
    return [f"identifier|{i.get('system', '')}|{i['value']}"
            for i in resource.get("identifier") or () if isinstance(i, dict) and i.get("value")]
