"""``Patient/[id]/$summary`` and ``Patient/$summary?identifier=``: the electronic health book as
a FHIR ``document`` Bundle, modelled on the International Patient Summary.

The Composition (LOINC 60591-5, author: this server as a Device) has one section per part of
the book, each with a LOINC code (IPS section codes where IPS has one), a Vietnamese narrative
generated from the entries, and the entries themselves; an empty section says so with
``emptyReason``. The Bundle holds the Composition first, then every resource it or its
entries refer to. Resources marked ``entered-in-error`` are left out.

``document_bundle`` and the section builders are shared with the per-visit ``$document``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fhir_server.errors import MultipleMatches, NotFound
from fhir_server.interactions.context import Outcome, Services
from fhir_server.interactions.read import read
from fhir_server.operations import narrative as text
from fhir_server.operations.everything import (
    clinical_range,
    compartment_resources,
    display_resources,
)
from fhir_server.operations.narrative import Lookup, Markup, narrative, paragraph
from fhir_server.operations.parameters import OperationInput
from fhir_server.operations.signed_documents import (
    SECTION_SYSTEM,
    is_signature_record,
    signature_table,
)
from fhir_server.search.model import SearchQuery
from fhir_server.search.parse import parse_search
from fhir_server.security.policy import Access
from fhir_server.signatures.server_signing import sign_document
from fhir_server.storage.port import StoredResource

__all__ = ["SECTIONS", "Section", "document_bundle", "signed", "summary"]

LOINC = "http://loinc.org"
EMPTY_REASON = "http://terminology.hl7.org/CodeSystem/list-empty-reason"
BOOK_TITLE = "Sổ sức khỏe điện tử"
#: The server as the author of the documents it assembles (a fixed id: the same every time).
SERVER_DEVICE_ID = str(uuid.uuid5(uuid.NAMESPACE_URL, "https://fhir.sskdt.vn/Device/fhir-server"))
_ERROR_STATES = frozenset({"entered-in-error"})

Resource = dict[str, Any]
Renderer = Callable[[Sequence[Resource], Lookup], Markup]


@dataclass(frozen=True)
class Section:
    """One part of the book: its LOINC code, Vietnamese title and how it is filled."""

    key: str
    code: str
    display: str
    title: str
    accepts: Callable[[Resource], bool]
    render: Renderer
    empty_reason: str = "unavailable"
    system: str = LOINC


def _of(*types: str) -> Callable[[Resource], bool]:
    return lambda r: r.get("resourceType") in types


def _observation(vital: bool) -> Callable[[Resource], bool]:
    def accepts(resource: Resource) -> bool:
        if resource.get("resourceType") != "Observation":
            return False
        codes = {c.get("code") for cat in resource.get("category") or []
                 for c in cat.get("coding") or []}  # fmt: skip
        return ("vital-signs" in codes) == vital

    return accepts


def _active_problem(resource: Resource) -> bool:
    return resource.get("resourceType") == "Condition" and text.is_active(resource)


def _visit_part(resource: Resource) -> bool:
    kind = resource.get("resourceType")
    return kind == "Encounter" or (kind == "Condition" and not text.is_active(resource))


SECTIONS: tuple[Section, ...] = (
    Section("insurance", "48768-6", "Payment sources Document", "Bảo hiểm y tế",
            _of("Coverage"), text.coverage_table),
    Section("visits", "46240-8", "History of Hospitalizations+Outpatient visits Narrative",
            "Lịch sử khám chữa bệnh", _visit_part, text.visit_table),
    Section("problems", "11450-4", "Problem list - Reported",
            "Bệnh đang mắc và bệnh mạn tính", _active_problem, text.problem_table),
    Section("medications", "10160-0", "History of Medication use Narrative", "Thuốc đã kê",
            _of("MedicationRequest", "MedicationStatement", "MedicationDispense"),
            text.medication_table),
    Section("results", "30954-2", "Relevant diagnostic tests/laboratory data Narrative",
            "Kết quả xét nghiệm, cận lâm sàng",
            lambda r: _observation(False)(r) or _of("DiagnosticReport")(r),
            text.result_table),
    Section("vital-signs", "8716-3", "Vital signs", "Dấu hiệu sinh tồn",
            _observation(True), text.result_table),
    Section("immunizations", "11369-6", "History of Immunization Narrative", "Tiêm chủng",
            _of("Immunization"), text.immunization_table),
    Section("allergies", "48765-2", "Allergies and adverse reactions Document", "Dị ứng",
            _of("AllergyIntolerance"), text.allergy_table),
    Section("procedures", "47519-4", "History of Procedures Document",
            "Thủ thuật, phẫu thuật", _of("Procedure"), text.procedure_table),
    Section("documents", "11503-0", "Medical records",
            "Giấy tờ: ra viện, chuyển tuyến, hẹn tái khám",
            _of("DocumentReference", "ServiceRequest"), text.document_table),
    Section("appointments", "18776-5", "Plan of care note", "Lịch hẹn",
            _of("Appointment"), text.appointment_table, empty_reason="nilknown"),
    Section("signatures", "signatures", "Digital signatures of the records", "Chữ ký số",
            is_signature_record, signature_table, empty_reason="nilknown",
            system=SECTION_SYSTEM),
)  # fmt: skip


def newest_first(resources: Sequence[Resource]) -> list[Resource]:
    """Order by care date, newest first (resources without one last)."""

    def when(resource: Resource) -> int:
        found = clinical_range(resource)
        return found[0] if found else -(2**63)

    return sorted(resources, key=when, reverse=True)


def build_section(
    section: Section,
    chosen: Sequence[Resource],
    lookup: Lookup,
) -> Resource:
    """Return the Composition section: coded title, narrative and entries (or emptyReason)."""
    built: Resource = {
        "title": section.title,
        "code": {"coding": [{"system": section.system, "code": section.code,
                             "display": section.display}]},
    }
    if chosen:
        built["text"] = narrative(section.render(chosen, lookup))
        built["entry"] = [{"reference": lookup.url(r)} for r in chosen]
    else:
        built["text"] = narrative(paragraph("Chưa có thông tin."))
        built["emptyReason"] = {"coding": [{"system": EMPTY_REASON, "code": section.empty_reason}]}
    return built


def build_sections(
    resources: Sequence[Resource], lookup: Lookup, sections: Sequence[Section] = SECTIONS
) -> list[Resource]:
    """Return the sections, each resource placed in the first section that accepts it."""
    placed: dict[str, list[Resource]] = {s.key: [] for s in sections}
    for resource in newest_first([r for r in resources if not _withdrawn(r)]):
        home = next((s for s in sections if s.accepts(resource)), None)
        if home is not None:
            placed[home.key].append(resource)
    return [build_section(s, placed[s.key], lookup) for s in sections]


def _withdrawn(resource: Resource) -> bool:
    status = resource.get("status")
    verification = {
        c.get("code") for c in (resource.get("verificationStatus") or {}).get("coding") or []
    }
    return status in _ERROR_STATES or bool(verification & _ERROR_STATES)


def server_device() -> Resource:
    """The Device standing for this server, the author of the generated documents."""
    return {
        "resourceType": "Device",
        "id": SERVER_DEVICE_ID,
        "deviceName": [{"name": "Máy chủ FHIR Sổ sức khỏe điện tử", "type": "user-friendly-name"}],
        "text": narrative(paragraph("Máy chủ FHIR Sổ sức khỏe điện tử")),
    }


def _now() -> str:
    return datetime.now(UTC).astimezone().isoformat(timespec="seconds")


def document_bundle(
    composition: Resource, resources: Sequence[Resource], lookup: Lookup
) -> Resource:
    """Return the document Bundle: Composition first, the server Device, then ``resources``."""
    device = server_device()
    composition.setdefault("author", [{"reference": f"urn:uuid:{device['id']}"}])
    entries = [
        {"fullUrl": f"urn:uuid:{composition['id']}", "resource": composition},
        {"fullUrl": f"urn:uuid:{device['id']}", "resource": device},
    ]
    seen = set()
    for resource in resources:
        url = lookup.url(resource)
        if url not in seen:
            seen.add(url)
            entries.append({"fullUrl": url, "resource": resource})
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "meta": {"lastUpdated": composition["date"]},
        "identifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{uuid.uuid4()}"},
        "type": "document",
        "timestamp": composition["date"],
        "entry": entries,
    }


def composition(
    patient: Resource,
    lookup: Lookup,
    type_code: tuple[str, str],
    title: str,
    sections: list[Resource],
) -> Resource:
    """Return a final Composition about ``patient`` with the given LOINC type and sections."""
    return {
        "resourceType": "Composition",
        "id": str(uuid.uuid4()),
        "text": narrative(text.patient_header(patient, title)),
        "status": "final",
        "type": {"coding": [{"system": LOINC, "code": type_code[0], "display": type_code[1]}]},
        "subject": {"reference": lookup.url(patient)},
        "date": _now(),
        "author": [{"reference": f"urn:uuid:{SERVER_DEVICE_ID}"}],
        "title": title,
        "section": sections,
    }


async def _resolve_patient(
    services: Services, access: Access, call: OperationInput
) -> StoredResource:
    """The Patient of the call: by id, or by ``identifier=<system>|<value>`` (the CCCD),
    among those the caller may see."""
    if call.id is not None:
        stored = (await read(services, access, "Patient", call.id)).stored
        assert stored is not None
        return stored
    identifier = call.value("identifier")
    if not identifier:
        raise NotFound(
            "$summary needs a Patient id or identifier",
            message_id="MSG_PARAM_MISSING",
            expression=("identifier",),
        )
    clauses = parse_search(
        "Patient", [("identifier", identifier)], services.registry, strict=True
    ).query.clauses
    found = await services.search(
        access.scoped(SearchQuery("Patient", clauses=clauses, count=2))
    )
    if not found.matches:
        raise NotFound("No Patient has that identifier", message_id="MSG_NO_EXIST")
    if len(found.matches) > 1:
        raise MultipleMatches(
            "Several Patients have that identifier",
            message_id="MSG_MULTIPLE_MATCHES",
            expression=("identifier",),
        )
    return found.matches[0]


async def summary(services: Services, access: Access, call: OperationInput) -> Outcome:
    """Run ``$summary``: the health book of one Patient as a document Bundle (of what the
    caller may see)."""
    patient = await _resolve_patient(services, access, call)
    stored = await compartment_resources(services, access, patient.id)
    stored += await display_resources(services, access, stored)
    resources = [s.resource() for s in stored]
    lookup = Lookup(services.base_url, resources)
    patient_resource = lookup.get(f"Patient/{patient.id}") or patient.resource()
    sections = build_sections(resources, lookup)
    doc = composition(
        patient_resource, lookup, ("60591-5", "Patient summary Document"), BOOK_TITLE, sections
    )
    bundle = document_bundle(doc, _cited(doc, patient_resource, lookup), lookup)
    return Outcome(200, body=signed(services, bundle))


def signed(services: Services, bundle: Resource) -> Resource:
    """The document signed by the server, when the operator configured its key (the Device
    standing for the server is the signer)."""
    who = {"reference": f"urn:uuid:{SERVER_DEVICE_ID}", "display": "Máy chủ FHIR Sổ sức khỏe "
           "điện tử"}
    return sign_document(services.settings, bundle, who)


def _cited(doc: Resource, patient: Resource, lookup: Lookup) -> list[Resource]:
    """The Patient, the sections' entries, then what those refer to (facilities, doctors)."""
    chosen = [patient]
    for section in doc["section"]:
        chosen += [r for e in section.get("entry", []) if (r := lookup.by_url(e["reference"]))]
    return chosen + lookup.referenced(chosen)
