"""API tests of the citizen's health book: Patient/$everything, Patient/$summary and
Encounter/$document, with data pushed through the transaction path (docs/hospital-push.md)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from fhir_server.operations.html import render_document
from fhir_server.operations.signed_documents import SECTION_SYSTEM
from tests.builders import BHYT_SYSTEM, CCCD_SYSTEM, patient, valid_example

FHIR = {"Content-Type": "application/fhir+json"}
ORG_SYSTEM = "http://fhir.ehealth.gov.vn/core/sid/provider-code"
LICENSE_SYSTEM = "https://fhir.sskdt.vn/sid/practice-license"
HOSTILE = "Viêm họng <script>alert('x')</script> & \"sốt\""
CCCD_A, CCCD_B = "001090012345", "079085000111"


def _put(resource: dict[str, Any], system: str, value: str, urn: str) -> dict[str, Any]:
    kind = resource["resourceType"]
    resource = {**resource, "identifier": [{"system": system, "value": value}]}
    return {
        "fullUrl": urn,
        "resource": resource,
        "request": {"method": "PUT", "url": f"{kind}?identifier={system}|{value}"},
    }


def _subject_entries(cccd: str, facility: str) -> list[dict[str, Any]]:
    """The Patient and the facility, created only if they do not exist (conditional create)."""
    card = {"system": BHYT_SYSTEM, "value": f"HN1{cccd[-12:]}"[:15].ljust(15, "0")}
    person = patient(cccd=cccd)
    person["identifier"].append(card)
    return [
        {
            "fullUrl": "urn:uuid:p",
            "resource": person,
            "request": {
                "method": "POST",
                "url": "Patient",
                "ifNoneExist": f"identifier={CCCD_SYSTEM}|{cccd}",
            },
        },
        {
            "fullUrl": "urn:uuid:o",
            "resource": {
                "resourceType": "Organization",
                "name": f"Bệnh viện {facility}",
                "identifier": [{"system": ORG_SYSTEM, "value": facility}],
            },
            "request": {
                "method": "POST",
                "url": "Organization",
                "ifNoneExist": f"identifier={ORG_SYSTEM}|{facility}",
            },
        },
    ]


def visit_bundle(
    cccd: str, ma_lk: str, day: int, facility: str = "01929", diagnosis_text: str = "Viêm họng cấp"
) -> dict[str, Any]:
    """A visit push: encounter, two diagnoses, a lab and a vital sign, a prescription from a
    doctor, and the discharge paper (a PDF attachment)."""
    record = f"https://fhir.sskdt.vn/sid/record/{facility}"
    when = f"2025-03-{day:02d}T08:00:00+07:00"
    subject, visit = {"reference": "urn:uuid:p"}, {"reference": "urn:uuid:e"}
    doctor = {
        "resourceType": "Practitioner",
        "name": [{"text": "BS. Trần Thị Bình"}],
        "identifier": [{"system": LICENSE_SYSTEM, "value": f"{facility}-BS1"}],
    }
    entries = [
        *_subject_entries(cccd, facility),
        {
            "fullUrl": "urn:uuid:dr",
            "resource": doctor,
            "request": {
                "method": "POST",
                "url": "Practitioner",
                "ifNoneExist": f"identifier={LICENSE_SYSTEM}|{facility}-BS1",
            },
        },
    ]
    encounter = {
        "resourceType": "Encounter",
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "type": [
            {
                "coding": [
                    {
                        "system": "https://fhir.sskdt.vn/CodeSystem/visit-type",
                        "code": "01",
                        "display": "Khám bệnh",
                    }
                ]
            }
        ],
        "period": {"start": when, "end": when.replace("T08", "T10")},
        "subject": subject,
        "serviceProvider": {"reference": "urn:uuid:o"},
        "diagnosis": [
            {"condition": {"reference": "urn:uuid:c1"}, "rank": 1},
            {"condition": {"reference": "urn:uuid:c2"}, "rank": 2},
        ],
    }
    entries.append(
        _put(encounter, f"https://fhir.sskdt.vn/sid/ma-lk/{facility}", ma_lk, "urn:uuid:e")
    )
    for n, (code, text) in enumerate([("J02.9", diagnosis_text), ("R50.9", "Sốt")], 1):
        condition = {
            "resourceType": "Condition",
            "clinicalStatus": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                        "code": "resolved",
                    }
                ]
            },
            "category": [
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/condition-category",
                            "code": "encounter-diagnosis",
                        }
                    ]
                }
            ],
            "code": {
                "coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": code}],
                "text": text,
            },
            "subject": subject,
            "encounter": visit,
            "recordedDate": when,
        }
        entries.append(_put(condition, record, f"{ma_lk}/Condition/{n}", f"urn:uuid:c{n}"))
    for n, category, code, text, value in [
        (1, "laboratory", "718-7", "Hemoglobin", 135),
        (2, "vital-signs", "8867-4", "Mạch", 80),
    ]:
        observation = {
            "resourceType": "Observation",
            "status": "final",
            "category": [
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                            "code": category,
                        }
                    ]
                }
            ],
            "code": {"coding": [{"system": "http://loinc.org", "code": code}], "text": text},
            "subject": subject,
            "encounter": visit,
            "effectiveDateTime": when,
            "valueQuantity": {"value": value, "unit": "g/L"},
        }
        entries.append(_put(observation, record, f"{ma_lk}/Observation/{n}", f"urn:uuid:ob{n}"))
    prescription = {
        "resourceType": "MedicationRequest",
        "status": "completed",
        "intent": "order",
        "medicationCodeableConcept": {
            "coding": [
                {
                    "system": "https://fhir.sskdt.vn/CodeSystem/active-ingredient",
                    "code": "1.1",
                    "display": "Paracetamol 500mg",
                }
            ],
            "text": "Paracetamol 500mg",
        },
        "subject": subject,
        "encounter": visit,
        "authoredOn": when,
        "requester": {"reference": "urn:uuid:dr"},
        "dosageInstruction": [{"text": "1 viên/lần * 2 lần/ngày * 5 ngày"}],
    }
    entries.append(_put(prescription, record, f"{ma_lk}/MedicationRequest/1", "urn:uuid:m"))
    paper = {
        "resourceType": "DocumentReference",
        "status": "current",
        "type": {
            "coding": [{"system": "http://loinc.org", "code": "34133-9"}],
            "text": "Giấy ra viện",
        },
        "subject": subject,
        "date": when,
        "author": [{"reference": "urn:uuid:o"}],
        "content": [
            {
                "attachment": {
                    "contentType": "application/pdf",
                    "data": "JVBERi0xLjQK",
                    "title": "Giấy ra viện.pdf",
                    "size": 9,
                    "hash": "lWB7AtSKeGy3hol9cnEU/HmBSx4=",
                }
            }
        ],
        "context": {"encounter": [visit]},
    }
    entries.append(_put(paper, record, f"{ma_lk}/DocumentReference/1", "urn:uuid:d"))
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def record_bundle(cccd: str, facility: str = "01929") -> dict[str, Any]:
    """The rest of the book: insurance card, a chronic problem, a vaccination, an allergy,
    a lab report and a re-exam appointment (in the future)."""
    record = f"https://fhir.sskdt.vn/sid/record/{facility}"
    subject = {"reference": "urn:uuid:p"}
    resources = [
        {**valid_example("Coverage"), "beneficiary": subject},
        {
            "resourceType": "Condition",
            "subject": subject,
            "recordedDate": "2024-01-01",
            "clinicalStatus": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                        "code": "active",
                    }
                ]
            },
            "category": [
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/condition-category",
                            "code": "problem-list-item",
                        }
                    ]
                }
            ],
            "code": {
                "coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "I10"}],
                "text": "Tăng huyết áp",
            },
        },
        {**valid_example("Immunization"), "patient": subject},
        {
            "resourceType": "AllergyIntolerance",
            "clinicalStatus": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
                "code": "active"}]},
            "patient": subject,
            "code": {"text": "Penicillin"},
        },
        {
            "resourceType": "DiagnosticReport",
            "status": "final",
            "subject": subject,
            "code": {"text": "Công thức máu"},
            "effectiveDateTime": "2025-03-02",
        },
        {
            "resourceType": "Appointment",
            "status": "booked",
            "description": "Tái khám",
            "start": "2099-01-05T08:00:00+07:00",
            "end": "2099-01-05T08:30:00+07:00",
            "participant": [{"actor": subject, "status": "accepted"}],
        },
    ]
    entries = _subject_entries(cccd, facility)[:1]
    for n, resource in enumerate(resources, 1):
        kind = resource["resourceType"]
        entries.append(_put(resource, record, f"{cccd}/{kind}/{n}", f"urn:uuid:r{n}"))
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


async def push(client: httpx.AsyncClient, bundle: dict[str, Any]) -> list[str]:
    """POST a transaction; return the ``Type/id`` of each entry."""
    response = await client.post("/fhir", json=bundle, headers=FHIR)
    assert response.status_code == 200, response.text
    return [e["response"]["location"].split("/_history")[0] for e in response.json()["entry"]]


async def patient_id(client: httpx.AsyncClient, cccd: str) -> str:
    found = await client.get("/fhir/Patient", params={"identifier": f"{CCCD_SYSTEM}|{cccd}"})
    return str(found.json()["entry"][0]["resource"]["id"])


async def book(client: httpx.AsyncClient, visits: int = 3) -> dict[str, Any]:
    """Push ``visits`` visits and the record of patient A, two visits of patient B."""
    a_keys: set[str] = set()
    for n in range(visits):
        a_keys |= set(await push(client, visit_bundle(CCCD_A, f"A{n}", day=n + 1)))
    a_keys |= set(await push(client, record_bundle(CCCD_A)))
    b_keys: set[str] = set()
    for n in range(2):
        b_keys |= set(
            await push(client, visit_bundle(CCCD_B, f"B{n}", day=n + 10, facility="79088"))
        )
    shared = {k for k in a_keys & b_keys}
    return {
        "a": await patient_id(client, CCCD_A),
        "b": await patient_id(client, CCCD_B),
        "a_keys": a_keys,
        "b_keys": b_keys - shared,
    }


async def everything_pages(
    client: httpx.AsyncClient, url: str, **params: Any
) -> list[dict[str, Any]]:
    """Follow ``next`` links from ``url``; return every page."""
    pages = [(await client.get(url, params=params or None)).json()]
    assert "link" in pages[0], pages[0]
    while link := next((x["url"] for x in pages[-1]["link"] if x["relation"] == "next"), None):
        pages.append((await client.get(link.removeprefix("http://test"))).json())
        assert "link" in pages[-1], pages[-1]
    return pages


def keys(pages: list[dict[str, Any]], mode: str | None = None) -> list[str]:
    return [
        f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for page in pages
        for e in page.get("entry", [])
        if mode is None or e["search"]["mode"] == mode
    ]


# $everything -----------------------------------------------------------------------------------


async def test_everything_returns_the_whole_compartment_and_what_it_refers_to(
    client: httpx.AsyncClient,
) -> None:
    data = await book(client)
    pages = await everything_pages(client, f"/fhir/Patient/{data['a']}/$everything")
    assert len(pages) == 1 and pages[0]["type"] == "searchset"
    assert set(keys(pages)) == data["a_keys"]
    assert keys(pages)[0] == f"Patient/{data['a']}"
    included = {k.split("/")[0] for k in keys(pages, "include")}
    assert included == {"Organization", "Practitioner"}


async def test_everything_holds_nothing_of_another_patient(client: httpx.AsyncClient) -> None:
    data = await book(client)
    pages = await everything_pages(client, f"/fhir/Patient/{data['a']}/$everything")
    assert not set(keys(pages)) & data["b_keys"]
    other = await everything_pages(client, f"/fhir/Patient/{data['b']}/$everything")
    assert not set(keys(other, "match")) & data["a_keys"]


async def test_everything_pages_with_next_links_without_repeats_or_gaps(
    client: httpx.AsyncClient,
) -> None:
    data = await book(client)
    pages = await everything_pages(client, f"/fhir/Patient/{data['a']}/$everything", _count=4)
    matches = keys(pages, "match")
    assert len(pages) > 3
    assert all(
        len([e for e in p.get("entry", []) if e["search"]["mode"] == "match"]) <= 4 for p in pages
    )
    assert len(matches) == len(set(matches))
    assert set(keys(pages)) == data["a_keys"]


async def test_everything_pages_send_each_included_resource_once(
    client: httpx.AsyncClient,
) -> None:
    data = await book(client)
    pages = await everything_pages(client, f"/fhir/Patient/{data['a']}/$everything", _count=2)
    included = keys(pages, "include")
    assert included and len(included) == len(set(included))
    assert set(keys(pages)) == data["a_keys"]
    assert {k.split("/")[0] for k in included} == {"Organization", "Practitioner"}
    bad = await client.get(f"/fhir/Patient/{data['a']}/$everything", params={"_sent": "abc"})
    assert bad.status_code == 400


async def test_everything_pages_stay_correct_while_hospitals_push(
    client: httpx.AsyncClient,
) -> None:
    data = await book(client)
    url = f"/fhir/Patient/{data['a']}/$everything"
    first = (await client.get(url, params={"_count": 5})).json()
    pushed = set(await push(client, visit_bundle(CCCD_A, "A-late", day=20)))
    pages = [
        first,
        *(
            await everything_pages(
                client,
                next(x["url"] for x in first["link"] if x["relation"] == "next").removeprefix(
                    "http://test"
                ),
            )
        ),
    ]
    matches = keys(pages, "match")
    assert len(matches) == len(set(matches))
    assert set(matches) == data["a_keys"] - {
        k for k in data["a_keys"] if k.split("/")[0] in ("Organization", "Practitioner")
    }
    late = await everything_pages(client, url, _since=first["meta"]["lastUpdated"])
    assert {
        k for k in pushed if k.split("/")[0] not in ("Organization", "Practitioner", "Patient")
    } <= set(keys(late))


async def test_everything_since_returns_only_what_changed(
    client: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from datetime import timedelta

    from fhir_server.operations import everything

    monkeypatch.setattr(everything, "COMMIT_MARGIN", timedelta(0))
    data = await book(client)
    url = f"/fhir/Patient/{data['a']}/$everything"
    watermark = (await client.get(url)).json()["meta"]["lastUpdated"]
    pushed = await push(client, visit_bundle(CCCD_A, "A9", day=25))
    changed = await everything_pages(client, url, _since=watermark)
    new = {k for k in pushed if k not in data["a_keys"]}
    assert set(keys(changed, "match")) == new
    again = await everything_pages(client, url, _since=changed[0]["meta"]["lastUpdated"])
    assert keys(again, "match") == []


@pytest.mark.parametrize(
    ("params", "expected_types"),
    [
        ({"_type": "Encounter,Condition"}, {"Encounter", "Condition"}),
        ({"_type": "Immunization"}, {"Immunization"}),
    ],
)
async def test_everything_type_limits_the_resource_types(
    client: httpx.AsyncClient,
    params: dict[str, str],
    expected_types: set[str],
) -> None:
    data = await book(client)
    pages = await everything_pages(client, f"/fhir/Patient/{data['a']}/$everything", **params)
    assert {k.split("/")[0] for k in keys(pages, "match")} == expected_types


async def test_everything_start_end_keep_care_in_the_range(client: httpx.AsyncClient) -> None:
    data = await book(client)
    pages = await everything_pages(
        client,
        f"/fhir/Patient/{data['a']}/$everything",
        start="2025-03-02",
        end="2025-03-02",
        _type="Encounter",
    )
    periods = [
        e["resource"]["period"]["start"][:10]
        for e in pages[0]["entry"]
        if e["search"]["mode"] == "match"
    ]
    assert periods == ["2025-03-02"]


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"_since": "yesterday"}, 400),
        ({"_type": "Organization"}, 400),
        ({"foo": "1"}, 400),
        ({"start": "2025-13"}, 400),
        ({"_cursor": "forged"}, 400),
    ],
)
async def test_everything_rejects_invalid_parameters(
    client: httpx.AsyncClient,
    params: dict[str, str],
    status: int,
) -> None:
    data = await book(client, visits=1)
    response = await client.get(f"/fhir/Patient/{data['a']}/$everything", params=params)
    assert response.status_code == status


async def test_everything_of_an_unknown_patient_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/fhir/Patient/nobody/$everything")
    assert response.status_code == 404


# $summary --------------------------------------------------------------------------------------

SECTION_OF = {  # where each pushed resource belongs in the book
    "Coverage": "48768-6",
    "Encounter": "46240-8",
    "MedicationRequest": "10160-0",
    "DiagnosticReport": "30954-2",
    "Immunization": "11369-6",
    "AllergyIntolerance": "48765-2",
    "DocumentReference": "11503-0",
    "Appointment": "18776-5",
}


def composition_of(document: dict[str, Any]) -> dict[str, Any]:
    first: dict[str, Any] = document["entry"][0]["resource"]
    assert first["resourceType"] == "Composition"
    return first


def section_entries(document: dict[str, Any]) -> dict[str, set[str]]:
    """LOINC code of each section -> the ``Type/id`` of its entries."""
    return {
        s["code"]["coding"][0]["code"]: {
            e["reference"].removeprefix("http://test/fhir/") for e in s.get("entry", [])
        }
        for s in composition_of(document)["section"]
    }


def expected_section(key: str, resource: dict[str, Any]) -> str | None:
    kind = key.split("/")[0]
    if kind == "Observation":
        vital = resource["category"][0]["coding"][0]["code"] == "vital-signs"
        return "8716-3" if vital else "30954-2"
    if kind == "Condition":
        active = resource["clinicalStatus"]["coding"][0]["code"] == "active"
        return "11450-4" if active else "46240-8"
    return SECTION_OF.get(kind)


async def test_summary_places_every_pushed_resource_in_its_section(
    client: httpx.AsyncClient,
) -> None:
    data = await book(client)
    response = await client.get(f"/fhir/Patient/{data['a']}/$summary")
    assert response.status_code == 200
    document = response.json()
    assert document["type"] == "document" and document["identifier"]["value"]
    assert document["timestamp"]
    placed = section_entries(document)
    in_bundle = {
        e["fullUrl"].removeprefix("http://test/fhir/"): e["resource"] for e in document["entry"]
    }
    for key in data["a_keys"]:
        section = expected_section(key, in_bundle.get(key, {"resourceType": ""}) or {})
        if section is not None:
            assert key in placed[section], (key, section)
        assert key in in_bundle, key  # Patient, facility and doctor are in the Bundle too
    assert not set(in_bundle) & data["b_keys"]


async def test_summary_composition_is_the_ips_shape_and_validates(
    client: httpx.AsyncClient,
) -> None:
    from fhir_server.conformance.profiles import default_validator
    from fhir_server.operations.narrative import check_narrative
    from fhir_server.resources import validate_structure

    data = await book(client, visits=1)
    document = (await client.get(f"/fhir/Patient/{data['a']}/$summary")).json()
    composition = composition_of(document)
    assert composition["type"]["coding"][0]["code"] == "60591-5"
    assert composition["status"] == "final" and composition["title"] == "Sổ sức khỏe điện tử"
    assert composition["subject"]["reference"] == f"http://test/fhir/Patient/{data['a']}"
    author = composition["author"][0]["reference"]
    assert any(
        e["fullUrl"] == author and e["resource"]["resourceType"] == "Device"
        for e in document["entry"]
    )
    for section in composition["section"]:  # LOINC, but the book's signatures (no LOINC code)
        assert section["code"]["coding"][0]["system"] in ("http://loinc.org", SECTION_SYSTEM)
        assert check_narrative(section["text"]["div"]) == []
        assert ("entry" in section) != ("emptyReason" in section)
    profile = "https://fhir.sskdt.vn/StructureDefinition/vn-composition"
    assert [
        i for i in default_validator().validate(composition, [profile]) if i.severity == "error"
    ] == []
    validate_structure(document, expected_type="Bundle")
    bundle_profile = "https://fhir.sskdt.vn/StructureDefinition/vn-document-bundle"
    assert [
        i for i in default_validator().validate(document, [bundle_profile])
        if i.severity == "error"
    ] == []
    urls = [e["fullUrl"] for e in document["entry"]]
    assert len(urls) == len(set(urls))


async def test_summary_visits_are_newest_first_with_diagnoses_and_facility(
    client: httpx.AsyncClient,
) -> None:
    data = await book(client, visits=3)
    document = (await client.get(f"/fhir/Patient/{data['a']}/$summary")).json()
    visits = next(
        s
        for s in composition_of(document)["section"]
        if s["code"]["coding"][0]["code"] == "46240-8"
    )
    div = visits["text"]["div"]
    positions = [div.index(f"0{day}/03/2025 08:00") for day in (3, 2, 1)]
    assert positions == sorted(positions)
    assert "Bệnh viện 01929" in div and "J02.9 Viêm họng cấp" in div and "R50.9 Sốt" in div


async def test_summary_empty_sections_say_so(client: httpx.AsyncClient) -> None:
    await push(client, visit_bundle(CCCD_A, "A0", day=1))
    document = (
        await client.get(f"/fhir/Patient/{await patient_id(client, CCCD_A)}/$summary")
    ).json()
    sections = {s["code"]["coding"][0]["code"]: s for s in composition_of(document)["section"]}
    for code in ("11369-6", "48765-2", "18776-5"):
        assert "entry" not in sections[code]
        reason = sections[code]["emptyReason"]["coding"][0]
        assert reason["system"] == "http://terminology.hl7.org/CodeSystem/list-empty-reason"
        assert reason["code"] in ("unavailable", "nilknown")
        assert "Chưa có thông tin" in sections[code]["text"]["div"]


async def test_summary_narrative_makes_hostile_text_inert(client: httpx.AsyncClient) -> None:
    from fhir_server.operations.narrative import check_narrative

    await push(client, visit_bundle(CCCD_A, "A0", day=1, diagnosis_text=HOSTILE))
    pid = await patient_id(client, CCCD_A)
    document = (await client.get(f"/fhir/Patient/{pid}/$summary")).json()
    for section in composition_of(document)["section"]:
        div = section["text"]["div"]
        assert "<script" not in div and check_narrative(div) == []
    assert any(
        "&lt;script&gt;alert('x')&lt;/script&gt; &amp; \"sốt\"" in s["text"]["div"]
        for s in composition_of(document)["section"]
    )
    page = render_document(document)
    assert "<script" not in page and "&lt;script&gt;" in page


async def test_summary_by_cccd_identifier(client: httpx.AsyncClient) -> None:
    data = await book(client, visits=1)
    for method in ("GET", "POST"):
        if method == "GET":
            response = await client.get(
                "/fhir/Patient/$summary", params={"identifier": f"{CCCD_SYSTEM}|{CCCD_A}"}
            )
        else:
            response = await client.post(
                "/fhir/Patient/$summary",
                headers=FHIR,
                json={
                    "resourceType": "Parameters",
                    "parameter": [{"name": "identifier", "valueString": f"{CCCD_SYSTEM}|{CCCD_A}"}],
                },
            )
        assert response.status_code == 200, response.text
        assert composition_of(response.json())["subject"]["reference"].endswith(data["a"])
    missing = await client.get(
        "/fhir/Patient/$summary", params={"identifier": f"{CCCD_SYSTEM}|000000000000"}
    )
    assert missing.status_code == 404


async def test_summary_takes_the_identifier_as_a_value_identifier(
    client: httpx.AsyncClient,
) -> None:
    data = await book(client, visits=1)
    response = await client.post("/fhir/Patient/$summary", headers=FHIR, json={
        "resourceType": "Parameters",
        "parameter": [{"name": "identifier",
                       "valueIdentifier": {"system": CCCD_SYSTEM, "value": CCCD_A}}]})
    assert response.status_code == 200, response.text
    assert composition_of(response.json())["subject"]["reference"].endswith(data["a"])


async def test_summary_html_page_is_printable_vietnamese(client: httpx.AsyncClient) -> None:
    data = await book(client, visits=2)
    document = (await client.get(f"/fhir/Patient/{data['a']}/$summary")).json()
    page = render_document(document)
    assert page.startswith("<!DOCTYPE html>")
    assert '<html lang="vi">' in page and '<meta charset="utf-8">' in page
    for title in (
        "Sổ sức khỏe điện tử",
        "Lịch sử khám chữa bệnh",
        "Tiêm chủng",
        "Bệnh viện 01929",
        "@media print",
        "Chưa có thông tin",
    ):
        assert title in page


async def test_summary_and_document_answer_the_page_to_text_html(
    client: httpx.AsyncClient,
) -> None:
    data = await book(client, visits=1)
    for params, headers in (({}, {"Accept": "text/html"}), ({"_format": "html"}, {})):
        page = await client.get(f"/fhir/Patient/{data['a']}/$summary", params=params,
                                headers=headers)
        assert page.status_code == 200, page.text[:300]
        assert page.headers["content-type"].startswith("text/html")
        assert page.text.startswith("<!DOCTYPE html>")
    everything = await client.get(f"/fhir/Patient/{data['a']}/$everything",
                                  headers={"Accept": "text/html"})
    assert everything.status_code == 406  # no HTML form: a searchset is not a document


def test_html_page_shows_a_foreign_narrative_as_text() -> None:
    document = {
        "resourceType": "Bundle",
        "type": "document",
        "entry": [
            {
                "resource": {
                    "resourceType": "Composition",
                    "title": "X",
                    "section": [
                        {
                            "title": "S",
                            "text": {
                                "div": '<div xmlns="http://www.w3.org/1999/xhtml">'
                                '<p onclick="steal()">a</p>'
                                "<script>steal()</script></div>"
                            },
                        }
                    ],
                }
            }
        ],
    }
    page = render_document(document)
    assert "<script" not in page and "onclick=" not in page.replace("onclick=&quot;", "")


@pytest.mark.parametrize(
    "ask", [{"headers": {"Accept": "text/html"}}, {"params": {"_format": "html"}}]
)
async def test_summary_answers_html_over_http(
    client: httpx.AsyncClient, ask: dict[str, Any]
) -> None:
    data = await book(client, visits=1)
    response = await client.get(f"/fhir/Patient/{data['a']}/$summary", **ask)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "Sổ sức khỏe điện tử" in response.text


# Encounter/$document ---------------------------------------------------------------------------


async def test_visit_document_holds_the_visit_and_nothing_else(
    client: httpx.AsyncClient,
) -> None:
    from fhir_server.conformance.profiles import default_validator

    keys_a0 = await push(client, visit_bundle(CCCD_A, "A0", day=1))
    keys_a1 = await push(client, visit_bundle(CCCD_A, "A1", day=2))
    encounter = next(k for k in keys_a0 if k.startswith("Encounter/"))
    response = await client.get(f"/fhir/{encounter}/$document")
    assert response.status_code == 200, response.text
    document = response.json()
    composition = composition_of(document)
    assert composition["type"]["coding"][0]["code"] == "34133-9"
    assert composition["encounter"]["reference"] == f"http://test/fhir/{encounter}"
    in_bundle = {e["fullUrl"].removeprefix("http://test/fhir/") for e in document["entry"]}
    assert set(keys_a0) <= in_bundle
    assert not (set(keys_a1) - set(keys_a0)) & in_bundle
    profile = "https://fhir.sskdt.vn/StructureDefinition/vn-composition"
    assert [
        i for i in default_validator().validate(composition, [profile]) if i.severity == "error"
    ] == []
    bundle_profile = "https://fhir.sskdt.vn/StructureDefinition/vn-document-bundle"
    assert [
        i for i in default_validator().validate(document, [bundle_profile])
        if i.severity == "error"
    ] == []
    page = render_document(document)
    assert "Tóm tắt lượt khám" in page and "Giấy ra viện.pdf" in page


async def test_visit_document_of_an_unknown_encounter_is_404(client: httpx.AsyncClient) -> None:
    assert (await client.get("/fhir/Encounter/nothing/$document")).status_code == 404


async def test_deletions_are_learned_from_type_history_since_the_watermark(
    client: httpx.AsyncClient,
) -> None:
    data = await book(client, visits=1)
    url = f"/fhir/Patient/{data['a']}/$everything"
    watermark = (await client.get(url)).json()["meta"]["lastUpdated"]
    condition = next(k for k in data["a_keys"] if k.startswith("Condition/"))
    assert (await client.delete(f"/fhir/{condition}")).status_code in (200, 204)
    changed = await everything_pages(client, url, _since=watermark)
    assert condition not in keys(changed)
    history = (await client.get("/fhir/Condition/_history", params={"_since": watermark})).json()
    deleted = [e["request"]["url"] for e in history["entry"] if e["request"]["method"] == "DELETE"]
    assert deleted == [condition]
