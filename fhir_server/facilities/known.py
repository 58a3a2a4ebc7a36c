"""Which facility codes the registry holds, and the check of a write that names a facility.

:func:`check_facility_codes` is the one check (called by the preparation of every write): a
resource names a facility by the ``provider-code`` identifier (an Organization), by the
facility part of its ``ma-lk``, ``ma-bn`` or ``record`` identifier systems (the NamingSystems
of those names), or by the Coverage's registered facility (MA_DKBD). A code the registry lacks
is a warning (``MSG_FACILITY_UNKNOWN``) or, with ``FHIR_SERVER_UNKNOWN_FACILITY=error``, a
422. The check applies once the registry holds a facility: a server whose operator never
loaded the list cannot tell a known code from an unknown one.

The check runs in the preparation of a write, which does not wait for the store, so the codes
are kept in memory per store (:class:`KnownFacilities`): read in full when the server starts
(:func:`load_known_facilities`), then every ``REFRESH_S`` the entries changed since are read in
the background, so a ``facilities load`` run beside a running server is seen within that
time. Registry entries are the Organizations with the registry tag written by
``facilities load``, whose ``meta.source`` says so: a FHIR client cannot forge that source
(the access layer writes its own identity there), so a push cannot register a facility.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Iterator
from typing import Any

from fhir_server.errors import Issue, Unprocessable
from fhir_server.facilities.organization import FACILITY_SYSTEM, REGISTRY_SOURCE, REGISTRY_TAG
from fhir_server.interactions.context import Services
from fhir_server.search.parse import parse_search

__all__ = ["KnownFacilities", "check_facility_codes", "load_known_facilities"]

log = logging.getLogger("fhir_server.facilities")
#: How often the codes are read again (only the entries changed since the last reading).
REFRESH_S = 30.0
#: Identifier systems scoped by facility (NamingSystems ma-lk, ma-bn, record): prefix + code.
_SCOPED_SYSTEMS = ("https://fhir.sskdt.vn/sid/ma-lk/", "https://fhir.sskdt.vn/sid/ma-bn/",
                   "https://fhir.sskdt.vn/sid/record/")
_REGISTERED_FACILITY = "https://fhir.sskdt.vn/StructureDefinition/coverage-registered-facility"
_TAG = f"{REGISTRY_TAG['system']}|{REGISTRY_TAG['code']}"


class KnownFacilities:
    """The registry's facility codes in one store, and when they were last read."""

    def __init__(self) -> None:
        self.codes: set[str] = set()
        self.loaded = False
        self._read_at = 0.0
        self._since: str | None = None  # the newest lastUpdated read so far
        self._reading: asyncio.Task[None] | None = None

    async def read(self, services: Services) -> None:
        """Read the registry entries changed since the last reading (all, the first time)."""
        self._read_at = time.monotonic()
        params = [("_tag", _TAG), ("_count", "1000")]
        if self._since is not None:
            params.append(("_lastUpdated", f"ge{self._since}"))
        cursor: str | None = None
        while True:
            page = parse_search("Organization", params + ([("_cursor", cursor)] if cursor else []),
                                services.registry)
            result = await services.store.search(page.query)
            for stored in result.matches:
                self._note(stored.resource())
                self._since = max(self._since or "", stored.last_updated)
            if (cursor := result.next_cursor) is None:
                break
        self.loaded = True

    def _note(self, organization: dict[str, Any]) -> None:
        if not is_registry_entry(organization):
            return
        for identifier in organization.get("identifier") or []:
            if identifier.get("system") == FACILITY_SYSTEM and identifier.get("value"):
                self.codes.add(identifier["value"])

    def read_when_stale(self, services: Services) -> None:
        """Start a background reading if the last one is older than ``REFRESH_S`` (and an
        event loop runs: outside one, as in a synchronous warm-up, nothing is read)."""
        if time.monotonic() - self._read_at < REFRESH_S:
            return
        if self._reading is not None and not self._reading.done():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._read_at = time.monotonic()
        self._reading = loop.create_task(self._read_in_background(services))

    async def _read_in_background(self, services: Services) -> None:
        try:
            await self.read(services)
        except Exception:  # the store closing, a busy store: the next check tries again
            log.warning("reading the facility registry failed; keeping the codes read before",
                        exc_info=True)


_KNOWN: weakref.WeakKeyDictionary[Any, KnownFacilities] = weakref.WeakKeyDictionary()


async def load_known_facilities(services: Services) -> KnownFacilities:
    """Read the registry's codes for ``services.store`` (at start-up, or after a load)."""
    known = _KNOWN.setdefault(services.store, KnownFacilities())
    await known.read(services)
    return known


def is_registry_entry(resource: dict[str, Any]) -> bool:
    """Whether ``resource`` is an Organization written by ``facilities load``."""
    meta = resource.get("meta") or {}
    tagged = any(t.get("system") == REGISTRY_TAG["system"] and t.get("code") == "registry"
                 for t in meta.get("tag") or [] if isinstance(t, dict))
    return tagged and meta.get("source") == REGISTRY_SOURCE


def named_facilities(resource: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """The facility codes ``resource`` names, each with the FHIRPath of where."""
    kind = resource.get("resourceType")
    for i, identifier in enumerate(resource.get("identifier") or []):
        if not isinstance(identifier, dict):
            continue
        system, value = identifier.get("system") or "", identifier.get("value")
        if system == FACILITY_SYSTEM and isinstance(value, str):
            yield value, f"{kind}.identifier[{i}].value"
        for prefix in _SCOPED_SYSTEMS:
            if system.startswith(prefix):
                yield system.removeprefix(prefix), f"{kind}.identifier[{i}].system"
    for i, extension in enumerate(resource.get("extension") or []):
        if isinstance(extension, dict) and extension.get("url") == _REGISTERED_FACILITY:
            yield str(extension.get("valueCode")), f"{kind}.extension[{i}].value"


def check_facility_codes(services: Services, resource: dict[str, Any]) -> tuple[Issue, ...]:
    """The issues of the facility codes ``resource`` names that the registry lacks.

    Warnings under ``unknown_facility=warn``; under ``error`` raises ``Unprocessable`` (422,
    ``MSG_FACILITY_UNKNOWN``). Nothing is checked while the registry is empty or ``off``.
    """
    mode = services.settings.unknown_facility
    if mode == "off" or is_registry_entry(resource):
        return ()
    known = _KNOWN.setdefault(services.store, KnownFacilities())
    known.read_when_stale(services)
    if not known.codes:
        return ()
    severity = "error" if mode == "error" else "warning"
    issues = tuple(
        Issue(severity, "code-invalid", "MSG_FACILITY_UNKNOWN",
              f"The facility code '{code}' is not in the facility registry", (where,))
        for code, where in named_facilities(resource) if code not in known.codes)
    if issues and mode == "error":
        raise Unprocessable(issues[0].diagnostics, message_id="MSG_FACILITY_UNKNOWN",
                            issues=list(issues))
    return issues
