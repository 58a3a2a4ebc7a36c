"""Generated narrative (R4 narrative.html): XHTML built so that every text is escaped.

Markup is only made by the functions here; any plain ``str`` given as content is text and is
escaped, so a diagnosis reading ``<script>`` comes out as the characters, never as an element.
Only the elements and attributes the FHIR narrative rules allow are produced (txt-1, txt-3:
basic HTML formatting, tables, lists, links; no scripts, forms or event attributes), and
``check_narrative`` verifies a ``div`` against those rules.

Also here: how values read in Vietnamese (dates in the server's zone, coded concepts).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from html import escape
from typing import Any

from fhir_server.conformance.xhtml import ALLOWED_ATTRIBUTES, ALLOWED_ELEMENTS, XHTML_NS, check_div
from fhir_server.search.dates import SERVER_ZONE

__all__ = [
    "XHTML_NS",
    "Lookup",
    "Markup",
    "allergy_table",
    "appointment_table",
    "check_narrative",
    "concept_text",
    "coverage_table",
    "document_table",
    "element",
    "immunization_table",
    "is_active",
    "medication_table",
    "narrative",
    "paragraph",
    "patient_header",
    "problem_table",
    "procedure_table",
    "reference_text",
    "result_table",
    "table",
    "visit_table",
    "vn_date",
]


class Markup(str):
    """XHTML made by this module: inserted as is, where a plain ``str`` would be escaped."""

    __slots__ = ()


def _content(part: str) -> str:
    return part if isinstance(part, Markup) else escape(part, quote=False)


def element(tag: str, *children: str, **attributes: str) -> Markup:
    """Return ``<tag attributes>children</tag>``; plain-string children are escaped."""
    if tag not in ALLOWED_ELEMENTS:
        raise ValueError(f"<{tag}> is not allowed in FHIR narrative")
    attrs = ""
    for name, value in attributes.items():
        name = name.rstrip("_")  # class_ -> class
        if name not in ALLOWED_ATTRIBUTES:
            raise ValueError(f"attribute {name} is not allowed in FHIR narrative")
        attrs += f' {name}="{escape(value, quote=True)}"'
    return Markup(f"<{tag}{attrs}>{''.join(_content(c) for c in children)}</{tag}>")


def paragraph(*children: str) -> Markup:
    """Return a ``<p>`` of the children."""
    return element("p", *children)


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> Markup:
    """Return a table with a header row; cells are text or markup."""
    head = element("thead", element("tr", *(element("th", h) for h in headers)))
    body_rows = [element("tr", *(element("td", cell) for cell in row)) for row in rows]
    return element("table", head, element("tbody", *body_rows), class_="book")


def narrative(*children: str) -> dict[str, str]:
    """Return a ``Narrative`` (status generated) whose ``div`` holds the children."""
    inner = "".join(_content(c) for c in children)
    return {"status": "generated", "div": f'<div xmlns="{XHTML_NS}">{inner}</div>'}


def check_narrative(div: str) -> list[str]:
    """Return the ways ``div`` breaks the FHIR narrative rules (empty when it keeps them)."""
    return [issue.diagnostics for issue in check_div(div, "div")]


def vn_date(value: str | None, with_time: bool = True) -> str:
    """Return a FHIR date/dateTime as Vietnamese read it (``31/01/2021 13:07``), or ``""``."""
    if not value:
        return ""
    if len(value) <= 10:
        return "/".join(reversed(value.split("-")))
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    if moment.tzinfo is not None:
        moment = moment.astimezone(SERVER_ZONE)
    return moment.strftime("%d/%m/%Y %H:%M" if with_time else "%d/%m/%Y")


def concept_text(concept: Any) -> str:
    """Return how a CodeableConcept or Coding reads: its text, a display, or a code."""
    if not isinstance(concept, dict):
        return ""
    if concept.get("text"):
        return str(concept["text"])
    codings = concept.get("coding") or [concept]
    for coding in codings:
        if coding.get("display"):
            return str(coding["display"])
    return next((str(c["code"]) for c in codings if c.get("code")), "")


def reference_text(reference: Any, resources: dict[str, dict[str, Any]]) -> str:
    """Return the name of the resource a Reference points at (or its display)."""
    if not isinstance(reference, dict):
        return ""
    target = resources.get(str(reference.get("reference")))
    if target is not None:
        name = target.get("name")
        if isinstance(name, str):
            return name
        if isinstance(name, list) and name:
            first = name[0]
            return str(
                first.get("text")
                or " ".join([first.get("family", ""), *first.get("given", [])]).strip()
            )
        if target.get("deviceName"):
            return str(target["deviceName"][0].get("name", ""))
    return str(reference.get("display") or "")


class Lookup:
    """The resources of one document by ``Type/id``, and their ``fullUrl``s on this server."""

    def __init__(self, base_url: str, resources: Iterable[dict[str, Any]]) -> None:
        self.base_url = base_url.rstrip("/")
        self.resources = {f"{r['resourceType']}/{r['id']}": r for r in resources}

    def url(self, resource: dict[str, Any]) -> str:
        """The ``fullUrl`` of a stored resource."""
        return f"{self.base_url}/{resource['resourceType']}/{resource['id']}"

    def get(self, key: str) -> dict[str, Any] | None:
        """The resource ``Type/id``, if the document has it."""
        return self.resources.get(key)

    def by_url(self, url: str) -> dict[str, Any] | None:
        """The resource at a ``fullUrl`` (or relative reference), if the document has it."""
        return self.resources.get(url.removeprefix(self.base_url + "/"))

    def name(self, reference: Any) -> str:
        """How the target of a Reference reads (a facility's or a doctor's name)."""
        return reference_text(reference, self.resources)

    def referenced(self, chosen: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """The resources (two levels deep) that ``chosen`` refer to and the document has."""
        from fhir_server.operations.everything import references_of

        have = {f"{r['resourceType']}/{r['id']}" for r in chosen}
        found: list[dict[str, Any]] = []
        frontier = list(chosen)
        for _level in range(2):
            keys = {f"{t}/{i}" for r in frontier for t, i in references_of(r)} - have
            frontier = [self.resources[k] for k in sorted(keys) if k in self.resources]
            have |= {f"{r['resourceType']}/{r['id']}" for r in frontier}
            found += frontier
        return found

    def diagnoses(self, encounter: dict[str, Any]) -> list[dict[str, Any]]:
        """The Conditions of a visit, the main diagnosis (rank 1) first."""
        ranked = sorted(encounter.get("diagnosis") or [], key=lambda d: d.get("rank", 99))
        found = [c for d in ranked if (c := self.by_url(str(d.get("condition", {})
                                                             .get("reference"))))]  # fmt: skip
        if found:
            return found
        key = f"Encounter/{encounter.get('id')}"
        return [r for r in self.resources.values() if r.get("resourceType") == "Condition"
                and (r.get("encounter") or {}).get("reference") == key]  # fmt: skip


def is_active(condition: dict[str, Any]) -> bool:
    """True for a Condition still going on (active, recurrence, relapse)."""
    codes = {c.get("code") for c in (condition.get("clinicalStatus") or {}).get("coding") or []}
    return bool(codes & {"active", "recurrence", "relapse"})


def _coded(concept: Any) -> str:
    """``J02.9 Viêm họng cấp``: the first code and how it reads."""
    text = concept_text(concept)
    codes = [c.get("code") for c in (concept or {}).get("coding") or [] if c.get("code")]
    return f"{codes[0]} {text}" if codes and codes[0] != text else text


_GENDER = {"male": "Nam", "female": "Nữ", "other": "Khác", "unknown": "Không rõ"}


def patient_header(patient: dict[str, Any], title: str) -> Markup:
    """The document's heading: the title and who it is about."""
    identifiers = [f"{i.get('value')}" for i in patient.get("identifier") or []]
    person = [
        ("Họ và tên", reference_text({"reference": "self"}, {"self": patient})),
        ("Ngày sinh", vn_date(patient.get("birthDate"))),
        ("Giới tính", _GENDER.get(patient.get("gender", ""), "")),
        ("Số định danh", ", ".join(identifiers)),
    ]
    items = [element("li", element("b", f"{label}: "), value) for label, value in person]
    return Markup(element("h1", title) + element("ul", *items))


def _period(period: Any) -> tuple[str, str]:
    period = period if isinstance(period, dict) else {}
    return vn_date(period.get("start")), vn_date(period.get("end"))


def coverage_table(chosen: Sequence[dict[str, Any]], lookup: Lookup) -> Markup:
    """Insurance cards: number, validity, payer, status."""
    rows = [[c.get("subscriberId") or "", *_period(c.get("period")),
             ", ".join(lookup.name(p) for p in c.get("payor") or []), c.get("status", "")]
            for c in chosen]  # fmt: skip
    return table(["Số thẻ", "Từ ngày", "Đến ngày", "Nơi chi trả", "Trạng thái"], rows)


def _outcome(encounter: dict[str, Any]) -> str:
    for extension in encounter.get("extension") or []:
        if extension.get("url", "").endswith("encounter-treatment-outcome"):
            return concept_text(extension.get("valueCodeableConcept"))
    return concept_text((encounter.get("hospitalization") or {}).get("dischargeDisposition"))


def visit_table(chosen: Sequence[dict[str, Any]], lookup: Lookup) -> Markup:
    """Visits, newest first: dates, facility, kind, main and other diagnoses, outcome."""
    rows = []
    for encounter in (r for r in chosen if r["resourceType"] == "Encounter"):
        diagnoses = [_coded(c.get("code")) for c in lookup.diagnoses(encounter)]
        kind = ", ".join(concept_text(t) for t in encounter.get("type") or []) or concept_text(
            encounter.get("class")
        )
        rows.append(
            [
                *_period(encounter.get("period")),
                lookup.name(encounter.get("serviceProvider")),
                kind,
                diagnoses[0] if diagnoses else "",
                "; ".join(diagnoses[1:]),
                _outcome(encounter),
            ]
        )
    return table(
        [
            "Ngày vào",
            "Ngày ra",
            "Cơ sở khám chữa bệnh",
            "Loại khám",
            "Chẩn đoán chính",
            "Chẩn đoán kèm theo",
            "Kết quả điều trị",
        ],
        rows,
    )


def problem_table(chosen: Sequence[dict[str, Any]], lookup: Lookup) -> Markup:
    """Problems still going on: diagnosis, since when, recorded where."""
    rows = [[_coded(c.get("code")), vn_date(c.get("onsetDateTime") or c.get("recordedDate")),
             concept_text(c.get("clinicalStatus")), lookup.name(c.get("asserter"))]
            for c in chosen]  # fmt: skip
    return table(["Bệnh", "Từ ngày", "Tình trạng", "Người ghi nhận"], rows)


def medication_table(chosen: Sequence[dict[str, Any]], lookup: Lookup) -> Markup:
    """Prescriptions, newest first: date, drug, dosage, prescriber."""
    rows = []
    for request in chosen:
        drug = concept_text(request.get("medicationCodeableConcept")) or lookup.name(
            request.get("medicationReference")
        )
        dosage = "; ".join(d.get("text", "") for d in request.get("dosageInstruction") or [])
        rows.append(
            [
                vn_date(request.get("authoredOn") or request.get("dateAsserted")),
                drug,
                dosage,
                lookup.name(request.get("requester")),
                request.get("status", ""),
            ]
        )
    return table(["Ngày kê", "Thuốc", "Cách dùng", "Người kê", "Trạng thái"], rows)


def _value(observation: dict[str, Any]) -> str:
    quantity = observation.get("valueQuantity")
    if isinstance(quantity, dict):
        return f"{quantity.get('value', '')} {quantity.get('unit', '')}".strip()
    if "valueString" in observation:
        return str(observation["valueString"])
    if observation.get("valueCodeableConcept"):
        return concept_text(observation["valueCodeableConcept"])
    parts = [
        f"{concept_text(c.get('code'))}: {_value(c)}" for c in observation.get("component") or []
    ]
    return (
        "; ".join(parts)
        or concept_text(observation.get("conclusionCode", [None])[0])
        or str(observation.get("conclusion", ""))
    )


def result_table(chosen: Sequence[dict[str, Any]], lookup: Lookup) -> Markup:
    """Results and measurements, newest first: date, test, value, status."""
    rows = [[vn_date(r.get("effectiveDateTime") or r.get("issued")), concept_text(r.get("code")),
             _value(r), r.get("status", "")] for r in chosen]  # fmt: skip
    return table(["Ngày", "Xét nghiệm / chỉ số", "Kết quả", "Trạng thái"], rows)


def immunization_table(chosen: Sequence[dict[str, Any]], lookup: Lookup) -> Markup:
    """Vaccinations: date, vaccine, dose, where."""
    rows = [[vn_date(i.get("occurrenceDateTime")), concept_text(i.get("vaccineCode")),
             ", ".join(str(p.get("doseNumberPositiveInt", "")) for p in
                       i.get("protocolApplied") or []),
             lookup.name(i.get("performer", [{}])[0].get("actor") if i.get("performer") else
                         i.get("location"))]
            for i in chosen]  # fmt: skip
    return table(["Ngày tiêm", "Vắc xin", "Mũi", "Nơi tiêm"], rows)


def allergy_table(chosen: Sequence[dict[str, Any]], lookup: Lookup) -> Markup:
    """Allergies: substance, reaction, criticality."""
    rows = [[concept_text(a.get("code")),
             "; ".join(concept_text(m) for r in a.get("reaction") or []
                       for m in r.get("manifestation") or []),
             a.get("criticality", ""), vn_date(a.get("recordedDate"))]
            for a in chosen]  # fmt: skip
    return table(["Dị nguyên", "Phản ứng", "Mức độ", "Ngày ghi nhận"], rows)


def procedure_table(chosen: Sequence[dict[str, Any]], lookup: Lookup) -> Markup:
    """Procedures: date, procedure, status."""
    rows = [[vn_date(p.get("performedDateTime") or (p.get("performedPeriod") or {})
                     .get("start")), _coded(p.get("code")), p.get("status", "")]
            for p in chosen]  # fmt: skip
    return table(["Ngày", "Thủ thuật", "Trạng thái"], rows)


def _attachments(resource: dict[str, Any], lookup: Lookup) -> Markup:
    items = []
    for content in resource.get("content") or []:
        attachment = content.get("attachment") or {}
        label = f"{attachment.get('title') or 'Tệp đính kèm'} ({attachment.get('contentType', '')}"
        label += f", {attachment['size']} byte)" if "size" in attachment else ")"
        items.append(element("li", element("a", label, href=lookup.url(resource))))
    return element("ul", *items) if items else Markup("")


def document_table(chosen: Sequence[dict[str, Any]], lookup: Lookup) -> Markup:
    """Papers (discharge, referral, re-exam), newest first, with their attachments."""
    rows = [[vn_date(d.get("date") or d.get("authoredOn")), concept_text(d.get("type") or
             d.get("code")), d.get("description") or "",
             lookup.name((d.get("author") or [d.get("requester")])[0]), _attachments(d, lookup)]
            for d in chosen]  # fmt: skip
    return table(["Ngày", "Loại giấy tờ", "Mô tả", "Nơi cấp", "Tệp"], rows)


def appointment_table(chosen: Sequence[dict[str, Any]], lookup: Lookup) -> Markup:
    """Appointments, the next one first: when, what, where, status."""
    ordered = sorted(chosen, key=lambda a: str(a.get("start", "")))
    rows = [[vn_date(a.get("start")), a.get("description") or concept_text(
             (a.get("serviceType") or [None])[0]),
             ", ".join(lookup.name(p.get("actor")) for p in a.get("participant") or []
                       if not str((p.get("actor") or {}).get("reference", ""))
                       .startswith(("Patient/", lookup.base_url + "/Patient/"))),
             a.get("status", "")] for a in ordered]  # fmt: skip
    return table(["Thời gian", "Nội dung", "Nơi hẹn", "Trạng thái"], rows)
