"""API tests of the XML 130 bridge: $import-xml130, $convert-xml130 and $export-xml130, as a
facility, a citizen and an attacker."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import pytest

from fhir_server.bridges.xml130.envelope import decode_envelope
from fhir_server.bridges.xml130.tables import load_standard
from fhir_server.main import create_app
from fhir_server.settings import Settings
from tests import builders as b
from tests.conftest import token_for

XML = {"Content-Type": "application/xml"}
IMPORT = "/fhir/$import-xml130"


def _visit(body: dict[str, Any], n: int = 0) -> dict[str, Any]:
    parts = [p for p in body["parameter"] if p["name"] == "visit"][n]["part"]
    return {p["name"]: p.get("valueCode") or p.get("valueString") or p.get("valueReference")
            or p.get("valueInteger") or p.get("resource") for p in parts}


async def _count(http: httpx.AsyncClient, kind: str, **params: str) -> int:
    response = await http.get(f"/fhir/{kind}", params={**params, "_summary": "count"})
    return int(response.json()["total"])


async def _import(http: httpx.AsyncClient, data: bytes, **params: str) -> httpx.Response:
    return await http.post(IMPORT, content=data, headers=XML, params=params)


async def test_import_creates_the_visit_once_and_repeats_change_nothing(
        client: httpx.AsyncClient) -> None:
    data = b.envelope(b.visit())
    first = await _import(client, data)
    assert first.status_code == 200, first.text
    visit = _visit(first.json())
    assert (visit["outcome"], visit["maLk"]) == ("created", b.MA_LK)
    again = await _import(client, data)
    assert _visit(again.json())["outcome"] == "unchanged"
    assert await _count(client, "Encounter") == 1
    assert await _count(client, "MedicationRequest") == 1
    encounter = (await client.get(f"/fhir/{visit['encounter']['reference']}")).json()
    assert encounter["meta"]["versionId"] == "1"


async def test_envelope_is_kept_byte_for_byte_behind_a_provenance(
        client: httpx.AsyncClient) -> None:
    data = b.envelope(b.visit())
    await _import(client, data)
    provenance = (await client.get("/fhir/Provenance")).json()["entry"][0]["resource"]
    binary = provenance["entity"][0]["what"]["reference"]
    stored = (await client.get(f"/fhir/{binary}")).json()
    assert base64.b64decode(stored["data"]) == data
    targets = {t["reference"].partition("/")[0] for t in provenance["target"]}
    assert {"Patient", "Encounter", "MedicationRequest", "Observation"} <= targets


async def test_corrected_visit_updates_in_place_and_drops_removed_rows(
        client: httpx.AsyncClient) -> None:
    await _import(client, b.envelope(b.visit(XML2=[b.xml2(1), b.xml2(2, MA_THUOC="6.41")])))
    corrected = b.visit(XML1=[b.xml1(MA_BENH_CHINH="J20.9")], XML2=[b.xml2(1)])
    response = await _import(client, b.envelope(corrected))
    assert _visit(response.json())["outcome"] == "updated"
    assert await _count(client, "Encounter") == 1
    assert await _count(client, "MedicationRequest") == 1
    codes = [e["resource"]["code"]["coding"][0]["code"] for e in
             (await client.get("/fhir/Condition")).json()["entry"]]
    assert "J20.9" in codes and "J18.9" not in codes


async def test_visit_naming_another_person_is_rejected_not_merged(
        client: httpx.AsyncClient) -> None:
    await _import(client, b.envelope(b.visit()))
    other = b.visit(XML1=[b.xml1(SO_CCCD="079095000111", MA_BN="BN999",
                                 MA_THE_BHYT="GD4790000000001", HO_TEN="Lê Thị Bình")])
    response = await _import(client, b.envelope(other))
    assert response.status_code == 409
    issue = response.json()["issue"][0]
    assert issue["details"]["coding"][0]["code"] == "MSG_XML130_PERSON_MISMATCH"
    assert issue["expression"][0] == "XML1.SO_CCCD"
    assert await _count(client, "Patient") == 1


async def _subtypes_audited(settings: Settings, *envelopes: bytes) -> list[str]:
    """Import the envelopes on an app of its own; the subtype of every AuditEvent left."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        headers = {"Authorization": f"Bearer {token_for(settings, 'system/*.cruds')}"}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://test", headers=headers) as http:
            for data in envelopes:
                await _import(http, data)
            await app.state.services.audit_trail.flush()
            found = (await http.get("/fhir/AuditEvent", params={"_count": "200"})).json()
    return sorted(c["code"] for e in found.get("entry", [])
                  for c in e["resource"].get("subtype", []))


async def test_each_visit_leaves_one_audit_event_and_a_refused_one_its_own(
        settings: Settings) -> None:
    """The transaction's AuditEvent is the visit's; the import adds one only for a visit
    rejected before its transaction (another person under the same MA_LK)."""
    other = b.visit(XML1=[b.xml1(SO_CCCD="079095000111", MA_BN="BN999",
                                 MA_THE_BHYT="GD4790000000001", HO_TEN="Lê Thị Bình")])
    subtypes = await _subtypes_audited(settings, b.envelope(b.visit()), b.envelope(b.visit()),
                                       b.envelope(other))
    assert subtypes.count("transaction") == 2
    assert subtypes.count("$import-xml130") == 1


def _visit_of(ma_lk: str, **xml1: str) -> dict[str, list[dict[str, str]]]:
    return b.visit(XML1=[b.xml1(MA_LK=ma_lk, **xml1)], XML2=[b.xml2(1, MA_LK=ma_lk)],
                   XML4=[b.xml4(1, MA_LK=ma_lk)])


async def test_a_ma_lk_with_a_comma_is_one_value_not_a_search_list(
        client: httpx.AsyncClient) -> None:
    """The stored visit is looked up by the whole MA_LK: "LK1,LK2" is not LK1 or LK2."""
    assert (await _import(client, b.envelope(_visit_of("LK2")))).status_code == 200
    other = _visit_of("LK1,LK2", SO_CCCD="079095000111", MA_BN="BN999",
                      MA_THE_BHYT="GD4790000000001", HO_TEN="Lê Thị Bình")
    response = await _import(client, b.envelope(other))
    assert response.status_code == 200, response.text
    assert (_visit(response.json())["outcome"], _visit(response.json())["maLk"]) == (
        "created", "LK1,LK2")
    assert await _count(client, "Encounter") == 2


@pytest.mark.parametrize(("mangle", "message_id", "where"), [
    (lambda d: d.replace(b"<NOIDUNGFILE>", b"<NOIDUNGFILE>%%", 1), "MSG_XML130_BASE64",
     "XML1.NOIDUNGFILE"),
    (lambda d: d.replace(b"<LOAIHOSO>XML2<", b"<LOAIHOSO>XML3<"), "MSG_XML130_ROOT_MISMATCH",
     "XML3"),
    (lambda d: d.replace(b"<LOAIHOSO>XML1<", b"<LOAIHOSO>XML10<"), "MSG_XML130_XML1", "XML1"),
])
async def test_malformed_tables_are_400_and_store_nothing(
        client: httpx.AsyncClient, mangle: Any, message_id: str, where: str) -> None:
    response = await _import(client, mangle(b.envelope(b.visit())))
    assert response.status_code == 400, response.text
    issues = response.json()["issue"]
    assert (message_id, where) in {(i["details"]["coding"][0]["code"], i["expression"][0])
                                   for i in issues}
    assert await _count(client, "Encounter") == 0 and await _count(client, "Binary") == 0


@pytest.mark.parametrize(("tables", "message_id", "where"), [
    ({"XML1": [b.xml1(NGAY_VAO="202102300800")]}, "MSG_XML130_VALUE", "XML1.NGAY_VAO"),
    ({"XML2": [b.xml2(1), b.xml2(2, DUONG_DUNG="1.01.23")]}, "MSG_XML130_TOO_LONG",
     "XML2[2].DUONG_DUNG"),
    ({"XML2": [b.xml2(1, SO_LUONG="mười")]}, "MSG_XML130_NOT_NUMBER", "XML2[1].SO_LUONG"),
])
async def test_invalid_fields_are_400_located_at_the_field(
        client: httpx.AsyncClient, tables: dict[str, Any], message_id: str, where: str) -> None:
    response = await _import(client, b.envelope(b.visit(**tables)))
    assert response.status_code == 400
    issue = response.json()["issue"][0]
    assert (issue["details"]["coding"][0]["code"], issue["expression"][0]) == (message_id, where)
    assert " / " in issue["diagnostics"]
    assert await _count(client, "Encounter") == 0


async def test_profile_errors_point_at_the_xml_field(client: httpx.AsyncClient) -> None:
    response = await _import(client, b.envelope(b.visit(XML2=[b.xml2(1), b.xml2(2, LIEU_DUNG="",
                                                                             CACH_DUNG="x")])))
    assert response.status_code == 422, response.text
    expressions = [e for i in response.json()["issue"] for e in i.get("expression", [])]
    assert "XML2[2].LIEU_DUNG" in expressions
    assert await _count(client, "Encounter") == 0


async def test_malformed_envelope_is_400(client: httpx.AsyncClient) -> None:
    response = await _import(client, b"<GIAMDINHHS><oops>")
    assert response.status_code == 400
    assert response.json()["issue"][0]["details"]["coding"][0]["code"] == "MSG_XML130_ENVELOPE"


async def test_one_bad_visit_does_not_stop_the_others(client: httpx.AsyncClient) -> None:
    good = b.visit(XML1=[b.xml1(MA_LK="LK2")], XML2=[b.xml2(MA_LK="LK2")],
                   XML4=[b.xml4(MA_LK="LK2")])
    bad = b.visit(XML1=[b.xml1(NGAY_RA="2021")])
    response = await _import(client, b.envelope(bad, good))
    assert response.status_code == 200
    assert [_visit(response.json(), n)["outcome"] for n in (0, 1)] == ["rejected", "created"]
    assert await _count(client, "Encounter") == 1 and await _count(client, "Binary") == 1


async def test_dry_run_answers_the_bundle_and_writes_nothing(client: httpx.AsyncClient) -> None:
    data = b.envelope(b.visit())
    converted = await client.post("/fhir/$convert-xml130", content=data, headers=XML)
    assert converted.status_code == 200
    bundle = converted.json()
    assert bundle["type"] == "transaction"
    kinds = [e["resource"]["resourceType"] for e in bundle["entry"]]
    assert kinds[:3] == ["Patient", "Organization", "Encounter"] and "Binary" in kinds
    dry = await _import(client, data, **{"dry-run": "true"})
    assert dry.json() == bundle
    assert await _count(client, "Encounter") == 0
    committed = await client.post("/fhir", json=bundle,
                                  headers={"Content-Type": "application/fhir+json"})
    assert committed.status_code == 200, committed.text


async def test_envelope_as_base64_in_parameters(client: httpx.AsyncClient) -> None:
    data = b.envelope(b.visit())
    parameters = {"resourceType": "Parameters", "parameter": [
        {"name": "envelope", "valueBase64Binary": base64.b64encode(data).decode()}]}
    response = await client.post(IMPORT, json=parameters,
                                 headers={"Content-Type": "application/fhir+json"})
    assert _visit(response.json())["outcome"] == "created"


async def test_export_gives_back_every_mapped_field(client: httpx.AsyncClient) -> None:
    tables = b.visit(XML2=[b.xml2(1), b.xml2(2, MA_THUOC="6.41", TEN_THUOC="Amoxicilin")])
    response = await _import(client, b.envelope(tables))
    encounter = _visit(response.json())["encounter"]["reference"]
    exported = await client.get(f"/fhir/{encounter}/$export-xml130")
    assert exported.status_code == 200
    data = base64.b64decode(exported.json()["data"])
    standard = load_standard("4750")
    visit = decode_envelope(data, standard.shapes()).visits[0]
    for name, rows in tables.items():
        back = visit.tables(name)[0].records
        for sent, got in zip(rows, back, strict=True):
            for field, value in sent.items():
                if standard.tables[name].rules[field].mapped:
                    assert got[field] == value, f"{name}.{field}"


async def test_capability_statement_lists_the_operations(client: httpx.AsyncClient) -> None:
    statement = (await client.get("/fhir/metadata")).json()["rest"][0]
    system = {o["name"] for o in statement.get("operation", [])}
    assert {"import-xml130", "convert-xml130"} <= system
    encounter = next(r for r in statement["resource"] if r["type"] == "Encounter")
    assert "export-xml130" in {o["name"] for o in encounter.get("operation", [])}


def _headers(settings: Settings, scope: str, **claims: Any) -> dict[str, str]:
    return {**XML, "Authorization": f"Bearer {token_for(settings, scope, **claims)}"}


async def test_facility_token_imports_its_own_visits_only(
        client: httpx.AsyncClient, settings: Settings) -> None:
    own = _headers(settings, "system/*.cruds", organization="Organization/01001")
    response = await client.post(IMPORT, content=b.envelope(b.visit()), headers=own)
    assert _visit(response.json())["outcome"] == "created"
    other = _headers(settings, "system/*.cruds", organization="Organization/79001")
    attack = await client.post(IMPORT, content=b.envelope(
        b.visit(XML1=[b.xml1(MA_BENH_CHINH="A09")])), headers=other)
    assert attack.status_code == 403
    issue = attack.json()["issue"][0]
    assert issue["details"]["coding"][0]["code"] == "MSG_XML130_FACILITY_NOT_CALLER"
    codes = [e["resource"]["code"]["coding"][0]["code"] for e in
             (await client.get("/fhir/Condition")).json()["entry"]]
    assert "A09" not in codes


@pytest.mark.parametrize("scope", ["patient/*.cruds", "user/*.cruds", "system/Encounter.cru"])
async def test_citizens_and_narrow_tokens_cannot_import(
        client: httpx.AsyncClient, settings: Settings, scope: str) -> None:
    headers = _headers(settings, scope, patient_id="p1") if scope.startswith("patient") \
        else _headers(settings, scope)
    for path in (IMPORT, "/fhir/$convert-xml130"):
        response = await client.post(path, content=b.envelope(b.visit()), headers=headers)
        assert response.status_code == 403
        assert response.json()["issue"][0]["details"]["coding"][0]["code"] == \
            "MSG_SCOPE_INSUFFICIENT"
    assert await _count(client, "Encounter") == 0


async def test_citizen_exports_own_visit_and_not_anothers(
        client: httpx.AsyncClient, settings: Settings) -> None:
    response = await _import(client, b.envelope(b.visit()))
    encounter = _visit(response.json())["encounter"]["reference"]
    stored = (await client.get(f"/fhir/{encounter}")).json()
    patient = stored["subject"]["reference"].partition("/")[2]
    own = {"Authorization": f"Bearer {token_for(settings, 'patient/*.rs', patient_id=patient)}"}
    assert (await client.get(f"/fhir/{encounter}/$export-xml130", headers=own)).status_code == 200
    stranger = {"Authorization":
                f"Bearer {token_for(settings, 'patient/*.rs', patient_id='someone-else')}"}
    assert (await client.get(f"/fhir/{encounter}/$export-xml130",
                             headers=stranger)).status_code == 404


OLD_ADDRESS = {"MATINH_CU_TRU": "02", "MAHUYEN_CU_TRU": "026", "MAXA_CU_TRU": "00715",
               "DIA_CHI": "Xã Lũng Cú, Huyện Đồng Văn, Tỉnh Hà Giang"}


def _dated(day: str) -> dict[str, str]:
    """The XML1 dates of a visit on ``day`` (yyyyMMdd)."""
    return {"NGAY_VAO": f"{day}0800", "NGAY_VAO_NOI_TRU": f"{day}0900",
            "NGAY_RA": f"{day}1000", "NGAY_TTOAN": f"{day}1100", "NGAY_TAI_KHAM": day}


async def test_a_2024_claim_keeps_its_old_address_codes_and_is_found_by_todays_province(
        client: httpx.AsyncClient) -> None:
    """Issue 33 with issue 25: a claim of 2024 carries the units of 2024 (Hà Giang, Đồng
    Văn, Lũng Cú), stored as written, with where the address lies today (Tuyên Quang)."""
    xml1 = b.xml1(**OLD_ADDRESS, **_dated("20240510"))
    response = await _import(client, b.envelope(b.visit(XML1=[xml1])))
    assert response.status_code == 200, response.text
    assert _visit(response.json())["outcome"] == "created", response.text
    found = (await client.get("/fhir/Patient", params={"address-province": "08"})).json()
    patient = found["entry"][0]["resource"]
    extensions = {e["url"].rsplit("/", 1)[1]: e for e in patient["address"][0]["extension"]}
    assert extensions["address-province-code"]["valueCode"] == "02"
    assert extensions["address-district-code"]["valueCode"] == "026"
    assert "address-current-units" in extensions


async def test_a_2026_claim_with_a_province_of_before_july_2025_is_refused(
        client: httpx.AsyncClient) -> None:
    xml1 = b.xml1(**OLD_ADDRESS, **_dated("20260510"))
    response = await _import(client, b.envelope(b.visit(XML1=[xml1])))
    assert response.status_code >= 400, response.text
    assert await _count(client, "Encounter") == 0
