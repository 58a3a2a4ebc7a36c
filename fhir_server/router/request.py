"""A FHIR request and its response as plain values, whatever carried them.

The HTTP adapter builds a ``FhirRequest`` from a Starlette request; a Bundle builds one from
each ``entry.request``; tools build them directly. The router answers each with a
``FhirResponse``, which the HTTP adapter renders and a Bundle turns into an entry.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

from fhir_server.errors import Issue
from fhir_server.storage.port import StoredResource

__all__ = ["FhirRequest", "FhirResponse", "Prefer", "parse_prefer"]


@dataclass(frozen=True)
class Prefer:
    """The parts of the ``Prefer`` header the server honours (R4 http.html#ops)."""

    return_: str | None = None
    strict: bool = False
    respond_async: bool = False


def parse_prefer(value: str | None) -> Prefer:
    """Parse ``Prefer`` (``return=minimal|representation|OperationOutcome``, ``handling``,
    ``respond-async``)."""
    if not value:
        return Prefer()
    return_: str | None = None
    strict = respond_async = False
    for part in value.split(","):
        for token in part.split(";"):
            key, _, val = token.strip().partition("=")
            val = val.strip().strip('"')
            if key == "return" and val in ("minimal", "representation", "OperationOutcome"):
                return_ = val
            elif key == "handling":
                strict = val == "strict"
            elif key == "respond-async":
                respond_async = True
    return Prefer(return_, strict, respond_async)


@dataclass(frozen=True)
class FhirRequest:
    """One FHIR interaction request.

    ``route`` names the interaction (the route table's names: ``read``, ``search-type``,
    ``operation``...). ``params`` are the query (and form) parameters in order; ``body`` the
    parsed JSON body (a resource, a JSON Patch, ``Parameters``), ``raw`` the body's bytes
    when it is not JSON, with its ``content_type``. For ``search-compartment``,
    ``compartment`` is the compartment's type and ``id`` its id.
    """

    method: str
    route: str
    resource_type: str | None = None
    id: str | None = None
    version: str | None = None
    operation: str | None = None
    compartment: str | None = None
    params: tuple[tuple[str, str], ...] = ()
    body: Any = None
    raw: bytes | None = None
    content_type: str | None = None
    if_match: str | None = None
    if_none_match: str | None = None
    if_none_exist: str | None = None
    if_modified_since: str | None = None
    prefer: Prefer = field(default_factory=Prefer)

    def param(self, name: str) -> str | None:
        """The first value of query parameter ``name``, or None."""
        return next((value for key, value in self.params if key == name), None)

    @property
    def query_string(self) -> str:
        """The query parameters as a query string (for conditional criteria and audit)."""
        return urlencode(self.params)

    @staticmethod
    def split_query(query: str) -> tuple[tuple[str, str], ...]:
        """The parameters of a query string, blank values kept."""
        return tuple(parse_qsl(query, keep_blank_values=True))


@dataclass(frozen=True)
class FhirResponse:
    """The answer to a ``FhirRequest``: status, body (a JSON value, or stored JSON bytes sent
    as they are), headers (``ETag``, ``Location``...), the resource version it is about
    (``stored``), the issues to report beside it (validation warnings) and the interaction
    it turned out to be (a Bundle: ``transaction`` or ``batch``)."""

    status: int
    body: dict[str, Any] | bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    stored: StoredResource | None = None
    issues: tuple[Issue, ...] = ()
    interaction: str | None = None
