"""Importing and converting envelopes, visit by visit.

For each ``HOSO``: check its tables and fields, map them (``engine``), build the transaction
(``transaction``). A dry run validates the Bundle against R4 and the Vietnamese profiles and
answers it. An import then looks at what is stored under the visit's MA_LK (a visit naming
another person is rejected, not merged; the stored version becomes the Encounter's ``ifMatch``;
resources of the previous sending that the new one lacks are deleted, as the insurance portal
replaces a corrected visit's tables) and commits through ``door.commit``. Nothing of a rejected
visit is stored; the other visits of the file go on.

The facility's signature (``CHUKYDONVI``) is checked once per file, over its exact bytes
(``signatures.on_write.check_envelope``); each visit's Provenance records it, and the write of
that Provenance keeps the proof. Under ``enforce`` a file whose signature does not verify is
refused whole (422 for every visit); under ``record`` each visit is stored with a warning.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fhir_server.bridges.xml130 import door
from fhir_server.bridges.xml130.checks import check_visit
from fhir_server.bridges.xml130.engine import Mapped, map_tables
from fhir_server.bridges.xml130.envelope import Envelope, Hoso, decode_envelope, problem
from fhir_server.bridges.xml130.lexical import valid_uri
from fhir_server.bridges.xml130.located import locate_issue
from fhir_server.bridges.xml130.report import ImportReport, VisitResult
from fhir_server.bridges.xml130.stored import StoredVisit, caller_facility, stored_visit
from fhir_server.bridges.xml130.tables import Standard, load_standard, system
from fhir_server.bridges.xml130.transaction import Plan, VisitKeys, binary_id, build_transaction
from fhir_server.conformance.elements import missing_required
from fhir_server.conformance.profiles import default_validator
from fhir_server.errors import BadRequest, FhirError, Issue
from fhir_server.interactions.bundle_entries import at_entry
from fhir_server.interactions.context import Services
from fhir_server.resources import validate_structure
from fhir_server.security.policy import Access
from fhir_server.signatures.on_write import check_envelope, envelope_signature, refuses
from fhir_server.storage.versions import instant_text

__all__ = ["convert_envelope", "convert_only", "decode", "import_envelope", "standard_of"]

Progress = Callable[[VisitResult], None]


@dataclass
class _Visit:
    """A visit that passed its checks and mapping."""

    hoso: Hoso
    keys: VisitKeys
    mapped: Mapped
    originals: dict[str, bytes]
    issues: list[Issue]


@dataclass(frozen=True)
class _Signed:
    """The envelope's signature: the Provenance's ``Signature`` (None: unsigned), what the
    report says of it, and whether the file is refused for it."""

    element: dict[str, Any] | None = None
    issue: Issue | None = None
    refused: bool = False


def _signature(services: Services, envelope: Envelope) -> _Signed:
    if not envelope.signed:  # no CHUKYDONVI: check_envelope would answer None
        return _Signed()
    data = envelope.raw
    verification = check_envelope(services, data, f"Binary/{binary_id(data)}")
    if verification is None:
        return _Signed()
    element = envelope_signature(data, verification)
    if verification.verified:
        return _Signed(element)
    refused = refuses(services, verification)
    issue = problem(verification.message_id, "CHUKYDONVI",
                    f"chữ ký số của cơ sở không hợp lệ ({verification.status})",
                    f"the facility's signature does not verify: {verification.detail}",
                    "error" if refused else "warning")
    return _Signed(element, issue, refused)


def standard_of(name: str | None) -> Standard:
    """The tables of standard ``name`` (default 4750); 400 for an unknown one."""
    try:
        return load_standard(name or "4750")
    except KeyError:
        raise BadRequest(f"Unknown XML 130 standard '{name}': use 130, 4750 or 3176",
                         message_id="MSG_XML130_STANDARD", expression=("standard",)) from None


def decode(data: bytes, standard: Standard) -> Envelope:
    """Decode an envelope with the standard's tables; 400 if it is malformed."""
    return decode_envelope(data, standard.shapes(), standard.skipped())


def _errors(issues: list[Issue]) -> bool:
    return any(i.severity in ("error", "fatal") for i in issues)


def _rejected(hoso: Hoso, ma_lk: str, status: int, issues: list[Issue]) -> VisitResult:
    return VisitResult(hoso.position, ma_lk, "rejected", status, issues)


def _prepare(standard: Standard, envelope: Envelope, hoso: Hoso) -> _Visit | VisitResult:
    records, ma_lk, issues = check_visit(standard, hoso)
    facility = (records.get("XML1") or [{}])[0].get("MA_CSKCB", "").strip()
    if not _errors(issues) and not facility:
        issues.append(problem("MSG_XML130_FACILITY", "XML1.MA_CSKCB", "thiếu mã cơ sở KBCB",
                              "MA_CSKCB is missing"))
    if facility and not valid_uri(system("@record", facility)):
        issues.append(problem("MSG_XML130_VALUE", "XML1.MA_CSKCB",
                              f"mã cơ sở '{facility}' không hợp lệ",
                              f"'{facility}' cannot be part of an R4 uri (white space)"))
    if envelope.facility and facility and facility != envelope.facility:
        issues.append(problem("MSG_XML130_FACILITY", "XML1.MA_CSKCB",
                              f"khác MACSKCB của tệp ({envelope.facility})",
                              f"differs from the envelope's MACSKCB ({envelope.facility})"))
    if _errors(issues):
        return _rejected(hoso, ma_lk, 400, issues)
    mapped = map_tables(standard, records, facility)
    issues += mapped.issues
    if _errors(issues):
        return _rejected(hoso, ma_lk, 400, issues)
    originals = {f.kind: f.content for f in hoso.files}
    keys = VisitKeys(facility, ma_lk, envelope.raw, envelope.created)
    return _Visit(hoso, keys, mapped, originals, issues)


def _located(issues: list[Issue], plan: Plan, standard: Standard) -> list[Issue]:
    return [locate_issue(i, plan, standard) for i in issues]


def _entry_issues(services: Services, index: int, resource: dict[str, Any]) -> list[Issue]:
    kind = str(resource.get("resourceType"))
    try:
        validate_structure(resource, expected_type=kind)
    except FhirError as exc:
        return at_entry(exc, index, kind).issues
    if services.settings.validation_mode(kind) == "off":
        return []
    found = default_validator().validate_resource(resource)
    return at_entry(FhirError("", issues=list(found)), index, kind).issues if found else []


def _converted(services: Services, standard: Standard, visit: _Visit) -> VisitResult:
    plan = build_transaction(standard, visit.mapped, visit.keys, visit.originals)
    found = [i for n, e in enumerate(plan.bundle["entry"]) if "resource" in e
             for i in _entry_issues(services, n, e["resource"])]
    issues = visit.issues + _located(found, plan, standard)
    if _errors(issues):
        return _rejected(visit.hoso, visit.keys.ma_lk, 422, issues)
    return VisitResult(visit.hoso.position, visit.keys.ma_lk, "converted", 200, issues,
                       f"Encounter/{plan.encounter_id}", plan.bundle)


def _required(plan: Plan, standard: Standard) -> list[Issue]:
    """The required elements (min >= 1) missing at the top of a resource the visit made (a
    required element whose field was empty), located at the field: the route's guarantee of
    cardinality, which the push's structural check does not repeat for it."""
    found = [i for n, e in enumerate(plan.bundle["entry"]) if "resource" in e
             for i in _missing(n, e["resource"])]
    return _located(found, plan, standard)


#: ``missing_required``'s answer by resource type and top-level members (all it reads): the
#: roles make resources of a few shapes. Bounded, emptied when full.
_MISSING: dict[tuple[str, ...], list[Issue]] = {}
_MISSING_MAX = 4096


def _missing(index: int, resource: dict[str, Any]) -> list[Issue]:
    shape = (resource["resourceType"], *resource)
    issues = _MISSING.get(shape)
    if issues is None:
        if len(_MISSING) >= _MISSING_MAX:
            _MISSING.clear()
        issues = _MISSING[shape] = missing_required(resource)
    return at_entry(FhirError("", issues=issues), index, resource["resourceType"]).issues \
        if issues else []


def _built(standard: Standard, visit: _Visit) -> Plan | VisitResult:
    plan = build_transaction(standard, visit.mapped, visit.keys, visit.originals)
    missing = _required(plan, standard)
    return _rejected(visit.hoso, visit.keys.ma_lk, 400, visit.issues + missing) \
        if missing else plan


def convert_only(data: bytes, standard: Standard) -> list[Plan | VisitResult]:
    """Conversion alone (decode, check, map, build; no validation, no store): each visit's
    transaction, or its rejection."""
    envelope = decode(data, standard)
    found: list[Plan | VisitResult] = []
    for hoso in envelope.visits:
        prepared = _prepare(standard, envelope, hoso)
        found.append(prepared if isinstance(prepared, VisitResult) else
                     _built(standard, prepared))
    return found


async def convert_envelope(services: Services, data: bytes, standard: Standard) -> ImportReport:
    """The transaction Bundle each visit would commit (validated), without touching the store."""
    envelope = decode(data, standard)
    report = ImportReport()
    for hoso in envelope.visits:
        prepared = _prepare(standard, envelope, hoso)
        report.visits.append(prepared if isinstance(prepared, VisitResult)
                             else _converted(services, standard, prepared))
    return report


def _outcome(plan: Plan, response: dict[str, Any], since: str, deletions: int) -> str:
    entries = response.get("entry") or []
    changed = deletions > 0
    for source, entry in zip(plan.sources, entries, strict=False):
        answer = entry.get("response") or {}
        if source is not None and source.role == "encounter" and \
                str(answer.get("status", "")).startswith("201"):
            return "created"
        if source is not None and str(answer.get("lastModified", "")) >= since:
            changed = True
    return "updated" if changed else "unchanged"


async def _commit(services: Services, access: Access, standard: Standard, visit: _Visit,
                  stored: StoredVisit, with_binary: bool, signed: _Signed) -> VisitResult:
    plan = build_transaction(standard, visit.mapped, visit.keys, visit.originals,
                             encounter_id=stored.encounter_id, if_match=stored.version,
                             with_binary=with_binary, deletions=stored.deletions,
                             signature=signed.element)
    missing = _required(plan, standard)
    if missing:
        return _rejected(visit.hoso, visit.keys.ma_lk, 400, visit.issues + missing)
    since = instant_text(datetime.now(UTC))
    try:
        response = await door.commit(services, access, plan.bundle)
    except FhirError as exc:
        issues = visit.issues + _located(exc.issues, plan, standard)
        rejected = _rejected(visit.hoso, visit.keys.ma_lk, exc.status, issues)
        rejected.audited = True
        return rejected
    result = _outcome(plan, response, since, len(stored.deletions))
    return VisitResult(visit.hoso.position, visit.keys.ma_lk, result, 200, visit.issues,
                       f"Encounter/{plan.encounter_id}", audited=True)


async def _import(services: Services, access: Access, standard: Standard, visit: _Visit,
                  caller: str | None, with_binary: bool, signed: _Signed) -> VisitResult:
    keys = visit.keys
    if signed.issue is not None:
        visit.issues.append(signed.issue)
    if signed.refused:
        return _rejected(visit.hoso, keys.ma_lk, 422, visit.issues)
    if caller is not None and caller != keys.facility:
        issue = problem("MSG_XML130_FACILITY_NOT_CALLER", "XML1.MA_CSKCB",
                        f"cơ sở {keys.facility} không phải cơ sở của token ({caller})",
                        f"facility {keys.facility} is not the token's facility ({caller})")
        return _rejected(visit.hoso, keys.ma_lk, 403, [*visit.issues, issue])
    stored = await stored_visit(services, visit.mapped, keys)
    if stored.problem is not None:
        return _rejected(visit.hoso, keys.ma_lk, 409, [*visit.issues, stored.problem])
    return await _commit(services, access, standard, visit, stored, with_binary, signed)


async def import_envelope(services: Services, access: Access, data: bytes, standard: Standard,
                          progress: Progress | None = None) -> ImportReport:
    """Import every visit of an envelope, each in its own transaction, as the caller of
    ``access``."""
    envelope = decode(data, standard)
    caller = await caller_facility(services, access)
    signed = _signature(services, envelope)
    report = ImportReport()
    stored_binary = False
    for hoso in envelope.visits:
        prepared = _prepare(standard, envelope, hoso)
        if not isinstance(prepared, VisitResult):
            prepared = await _import(services, access, standard, prepared, caller,
                                     not stored_binary, signed)
            stored_binary = stored_binary or not prepared.rejected
        report.visits.append(prepared)
        if progress is not None:
            progress(prepared)
    return report
