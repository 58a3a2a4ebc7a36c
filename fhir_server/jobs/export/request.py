"""The kick-off of a bulk export, parsed and checked: what to export, for whom, from when.

Implements the kick-off parameters of the FHIR Bulk Data Access IG (v2.0, with ``_until``,
``organizeOutputBy`` and ``allowPartialManifests`` of its later versions):
https://hl7.org/fhir/uv/bulkdata/export.html#query-parameters. A parameter the server cannot
honour is a 400 OperationOutcome; under ``Prefer: handling=lenient`` it is ignored instead
and reported in the export's error file. ``ExportRequest`` is plain data: the job stores it
as JSON and a resumed run reads it back.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from fhir_server.errors import BadRequest, FhirError, Issue, NotSupported
from fhir_server.interactions.instants import instant_range
from fhir_server.resources import resource_types
from fhir_server.search.indexing import compartment_types
from fhir_server.search.parse import parse_search
from fhir_server.search.registry import SearchParameterRegistry
from fhir_server.security.policy import AccessRequest

__all__ = ["FORMATS", "ExportRequest", "Leniency", "parse_export"]

#: ``_outputFormat`` values meaning NDJSON (the IG: the full type and two abbreviations).
FORMATS = frozenset({"application/fhir+ndjson", "application/ndjson", "ndjson"})
#: Types never exported: the audit log is read by search (docs/security.md).
NOT_EXPORTED = frozenset({"AuditEvent"})
_PARAMETERS = frozenset({"_outputFormat", "_since", "_until", "_type", "_typeFilter",
                         "_elements", "patient", "includeAssociatedData", "organizeOutputBy",
                         "allowPartialManifests"})
#: Parameters of the response's rendering, which an export's files do not have.
_RENDERING = frozenset({"_format", "_pretty", "_summary"})
#: Search result parameters, which a ``_typeFilter`` must not hold (the IG).
_RESULT_PARAMETERS = frozenset({"_sort", "_count", "_include", "_revinclude", "_elements",
                                "_summary", "_total", "_contained", "_containedType"})
_ELEMENT = re.compile(r"(?:([A-Z][A-Za-z]+)\.)?([a-z][A-Za-z0-9]*)")


@dataclass(frozen=True)
class ExportRequest:
    """An export as asked: ``level`` (``system``, ``patient`` or ``group``), the Group's id,
    the types, the ``_typeFilter`` queries, ``since``/``until`` instants, ``_elements``,
    the listed patients, ``organize_by``, the kick-off ``url``, the snapshot (``position``
    in the store's write order, ``transaction_time``) and the warnings of what lenient
    handling ignored (OperationOutcome issues)."""

    level: str
    types: tuple[str, ...]
    url: str = ""
    group: str | None = None
    type_filters: tuple[str, ...] = ()
    since: str | None = None
    until: str | None = None
    elements: tuple[str, ...] = ()
    patients: tuple[str, ...] = ()
    organize_by: str | None = None
    position: int = 0
    transaction_time: str = ""
    warnings: tuple[dict[str, Any], ...] = field(default=())

    def question(self) -> AccessRequest:
        """What the access policy is asked for this export (at kick-off, by a run, and by
        every status and file request)."""
        kind = {"system": None, "patient": "Patient", "group": "Group"}[self.level]
        return AccessRequest("operation", kind, self.group, operation="export")

    @property
    def by_patient(self) -> bool:
        """Whether the export goes patient by patient (a Group, listed patients, or output
        organized by patient) rather than type by type."""
        return self.level == "group" or bool(self.patients) or self.organize_by is not None

    def to_json(self) -> dict[str, Any]:
        """The request as JSON (the job's ``request``)."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ExportRequest:
        """The request a job stored."""
        values = dict(data)
        for name in ("types", "type_filters", "elements", "patients", "warnings"):
            values[name] = tuple(values.get(name) or ())
        return cls(**values)


@dataclass
class Leniency:
    """How the kick-off treats what it cannot honour: an error, or (``lenient``) a warning
    kept for the error file."""

    lenient: bool
    warnings: list[dict[str, Any]] = field(default_factory=list)

    def problem(self, error: FhirError) -> None:
        """Raise ``error``, or under lenient handling remember it as a warning."""
        if not self.lenient:
            raise error
        issue = error.issues[0]
        self.warnings.append(Issue("warning", issue.code, issue.message_id, issue.diagnostics,
                                   issue.expression).to_fhir())


def _list(values: dict[str, list[str]], name: str) -> list[str]:
    """A parameter's values, repeated or comma-separated (the IG allows both)."""
    return [part.strip() for value in values.get(name, ()) for part in value.split(",")
            if part.strip()]


def _single(values: dict[str, list[str]], name: str) -> str | None:
    found = values.get(name) or []
    if len(found) > 1:
        raise BadRequest(f"{name} may be given once", message_id="MSG_PARAM_INVALID",
                         expression=(name,))
    return found[0] if found else None


def _instant(values: dict[str, list[str]], name: str) -> str | None:
    value = _single(values, name)
    if value is not None:
        instant_range(value, name)
    return value


def exportable_types(level: str) -> frozenset[str]:
    """The types an export of ``level`` can hold: every type, or the Patient compartment's."""
    every = resource_types() - NOT_EXPORTED
    return every if level == "system" else every & compartment_types()


def _types(values: dict[str, list[str]], level: str, leniency: Leniency) -> tuple[str, ...]:
    allowed = exportable_types(level)
    chosen: list[str] = []
    for name in dict.fromkeys(_list(values, "_type")):
        if name not in resource_types():
            leniency.problem(BadRequest(f"_type: {name} is not a resource type",
                                        message_id="MSG_EXPORT_TYPE", expression=("_type",)))
        elif name not in allowed:
            where = "this server's exports" if level == "system" else "a patient's compartment"
            leniency.problem(NotSupported(f"_type: {name} is not in {where}",
                                          message_id="MSG_EXPORT_TYPE", expression=("_type",)))
        else:
            chosen.append(name)
    if values.get("_type") and not chosen:
        raise BadRequest("_type names no type this export can hold",
                         message_id="MSG_EXPORT_TYPE", expression=("_type",))
    return tuple(chosen) if chosen else tuple(sorted(allowed))


def _type_filter(text: str, types: tuple[str, ...], registry: SearchParameterRegistry,
                 leniency: Leniency) -> str | None:
    """A ``_typeFilter`` query checked (a search of one type, no result parameters)."""
    kind, _, query = text.partition("?")
    params = parse_qsl(query, keep_blank_values=True)
    if kind not in types or not params:
        leniency.problem(BadRequest(
            f"_typeFilter '{text[:100]}' must be 'Type?query' for a type this export holds",
            message_id="MSG_EXPORT_TYPE_FILTER", expression=("_typeFilter",)))
        return None
    results = sorted({name.split(":")[0] for name, _ in params} & _RESULT_PARAMETERS)
    if results:
        leniency.problem(BadRequest(f"_typeFilter may not use {', '.join(results)}",
                                    message_id="MSG_EXPORT_TYPE_FILTER",
                                    expression=("_typeFilter",)))
        return None
    try:
        parse_search(kind, params, registry, strict=True)
    except FhirError as exc:
        leniency.problem(BadRequest(f"_typeFilter '{text[:100]}': {exc.diagnostics}",
                                    message_id="MSG_EXPORT_TYPE_FILTER",
                                    expression=("_typeFilter",)))
        return None
    return text


def _elements(values: dict[str, list[str]], leniency: Leniency) -> tuple[str, ...]:
    kept = []
    for element in _list(values, "_elements"):
        match = _ELEMENT.fullmatch(element)
        if match is None or (match[1] is not None and match[1] not in resource_types()):
            leniency.problem(BadRequest(f"_elements: '{element[:80]}' is not [Type.]element",
                                        message_id="MSG_PARAM_INVALID",
                                        expression=("_elements",)))
        else:
            kept.append(element)
    return tuple(kept)


def _patients(values: dict[str, list[str]], level: str) -> tuple[str, ...]:
    references = _list(values, "patient")
    if references and level == "system":
        raise BadRequest("patient applies to Patient and Group exports only",
                         message_id="MSG_PARAM_INVALID", expression=("patient",))
    ids = []
    for reference in references:
        kind, _, id = reference.rpartition("/")
        if kind.rsplit("/", 1)[-1] != "Patient" or not id:
            raise BadRequest(f"patient: '{reference[:80]}' is not a reference to a Patient",
                             message_id="MSG_PARAM_INVALID", expression=("patient",))
        ids.append(id)
    return tuple(dict.fromkeys(ids))


def _checked_options(values: dict[str, list[str]], level: str, leniency: Leniency) -> str | None:
    """``_outputFormat``, ``includeAssociatedData``, ``allowPartialManifests``, unknown
    parameters; returns ``organizeOutputBy``."""
    output = _single(values, "_outputFormat")
    if output is not None and output not in FORMATS:
        raise NotSupported(f"_outputFormat '{output[:80]}' is not supported; this server "
                           "writes application/fhir+ndjson", message_id="MSG_EXPORT_FORMAT",
                           expression=("_outputFormat",))
    if values.get("includeAssociatedData"):
        leniency.problem(NotSupported("includeAssociatedData is not supported",
                                      message_id="MSG_EXPORT_PARAM_UNSUPPORTED",
                                      expression=("includeAssociatedData",)))
    partial = _single(values, "allowPartialManifests")
    if partial is not None and partial not in ("true", "false"):
        raise BadRequest("allowPartialManifests is true or false",
                         message_id="MSG_PARAM_INVALID", expression=("allowPartialManifests",))
    for name in sorted(set(values) - _PARAMETERS - _RENDERING):
        leniency.problem(BadRequest(f"$export has no parameter '{name[:60]}'",
                                    message_id="MSG_PARAM_UNKNOWN", expression=(name,)))
    organize = _single(values, "organizeOutputBy")
    if organize is not None and (organize != "Patient" or level == "system"):
        leniency.problem(NotSupported(
            "organizeOutputBy: only Patient, in Patient and Group exports",
            message_id="MSG_EXPORT_PARAM_UNSUPPORTED", expression=("organizeOutputBy",)))
        return None
    return organize


def parse_export(values: dict[str, list[str]], level: str, registry: SearchParameterRegistry,
                 *, lenient: bool = False, group: str | None = None,
                 url: str = "") -> ExportRequest:
    """Check the kick-off's parameters and return the export they ask for; raise
    ``BadRequest``/``NotSupported`` (400) for what cannot be honoured (unless ``lenient``)."""
    leniency = Leniency(lenient)
    organize = _checked_options(values, level, leniency)
    types = _types(values, level, leniency)
    filters = [_type_filter(text, types, registry, leniency)
               for text in values.get("_typeFilter", ())]
    since, until = _instant(values, "_since"), _instant(values, "_until")
    return ExportRequest(
        level=level, types=types, url=url, group=group,
        type_filters=tuple(text for text in filters if text is not None),
        since=since, until=until, elements=_elements(values, leniency),
        patients=_patients(values, level), organize_by=organize,
        warnings=tuple(leniency.warnings))
