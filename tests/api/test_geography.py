"""Administrative geography over the API: visits of both eras pushed, searched by today's
province and commune, and the unit code lists' terminology operations."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from fhir_server.main import create_app
from fhir_server.settings import PROJECT_DIR, Settings
from tests.api.test_bundles import visit_bundle
from tests.builders import CCCD_SYSTEM, patient
from tests.conftest import token_for

FHIR = {"Content-Type": "application/fhir+json"}
SD = "https://fhir.sskdt.vn/StructureDefinition"
CURRENT = f"{SD}/address-current-units"
HAGIANG = {"province": "02", "district": "026", "commune": "00715"}  # Xã Lũng Cú, Đồng Văn


def vn_address(province: str, district: str | None = None, commune: str | None = None,
               district_text: str | None = None) -> dict[str, Any]:  # fmt: skip
    codes = [("province", province), ("district", district), ("commune", commune)]
    out: dict[str, Any] = {"extension": [{"url": f"{SD}/address-{level}-code", "valueCode": code}
                                         for level, code in codes if code],
                           "use": "home", "country": "VN"}  # fmt: skip
    if district_text:
        out["district"] = district_text
    return out


def visit(cccd: str, address: dict[str, Any], day: str, ma_lk: str) -> dict[str, Any]:
    """The visit push of test_bundles, its Patient living at ``address``, on ``day``."""
    bundle = visit_bundle(cccd=cccd, ma_lk=ma_lk)
    bundle["entry"][0]["resource"]["address"] = [address]
    encounter = bundle["entry"][2]["resource"]
    encounter["period"] = {"start": f"{day}T08:00:00+07:00", "end": f"{day}T09:00:00+07:00"}
    return bundle


@dataclass
class People:
    """Patients pushed with visits of 2024 (old codes) and 2026 (current codes)."""

    http: httpx.AsyncClient
    settings: Settings
    ids: dict[str, str]

    def as_patient(self, name: str) -> dict[str, str]:
        token = token_for(self.settings, "patient/*.rs", patient_id=self.ids[name])
        return {"Authorization": f"Bearer {token}"}

    async def found(self, query: dict[str, str], headers: dict[str, str] | None = None
                    ) -> set[str]:  # fmt: skip
        response = await self.http.get("/fhir/Patient", params=query, headers=headers)
        assert response.status_code == 200, response.text
        by_id = {v: k for k, v in self.ids.items()}
        return {by_id[e["resource"]["id"]] for e in response.json().get("entry", [])
                if e["search"]["mode"] == "match"}  # fmt: skip


PUSHES = {
    # name: (CCCD, address, visit day)
    "hagiang_2024": ("002090000001", vn_address(**HAGIANG, district_text="Huyện Đồng Văn"),
                     "2024-03-05"),
    "tuyenquang_2026": ("008090000002", vn_address("08", None, "00691"), "2026-03-01"),
    "ngocha_2024": ("001090000003", vn_address("01", "001", "00016"), "2024-08-20"),
    "hanoi_2026": ("001090000004", vn_address("01", None, "00008"), "2026-02-10"),
}


@pytest.fixture
async def people(settings: Settings) -> AsyncIterator[People]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        admin = {"Authorization": f"Bearer {token_for(settings, 'system/*.cruds')}"}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://test", headers=admin) as http:
            ids = {}
            for n, (name, (cccd, address, day)) in enumerate(PUSHES.items()):
                pushed = await http.post("/fhir", json=visit(cccd, address, day, f"LK{n}"),
                                         headers=FHIR)
                assert pushed.status_code == 200, pushed.text
                location = pushed.json()["entry"][0]["response"]["location"]
                ids[name] = location.split("/")[1]
            yield People(http, settings, ids)


async def test_a_2024_visit_with_old_codes_is_stored_with_todays_units(people: People) -> None:
    stored = (await people.http.get(f"/fhir/Patient/{people.ids['hagiang_2024']}")).json()
    address = stored["address"][0]
    assert address["district"] == "Huyện Đồng Văn"
    current = next(e for e in address["extension"] if e["url"] == CURRENT)
    parts = {p["url"]: p.get("valueCoding", p.get("valueDate")) for p in current["extension"]}
    assert parts["province"]["code"] == "08" and parts["province"]["display"] == "Tỉnh Tuyên Quang"
    assert parts["commune"]["code"] == "00715" and parts["readOn"] == "2024-03-05"
    today = (await people.http.get(f"/fhir/Patient/{people.ids['tuyenquang_2026']}")).json()
    assert all(e["url"] != CURRENT for e in today["address"][0]["extension"])


async def test_the_same_codes_in_a_2026_visit_are_refused_naming_unit_and_date(
    people: People,
) -> None:
    refused = await people.http.post("/fhir", headers=FHIR, json=visit(
        "002090000009", vn_address(**HAGIANG), "2026-03-01", "LK9"))
    assert refused.status_code == 422
    issues = refused.json()["issue"]
    codes = [i["details"]["coding"][0]["code"] for i in issues]
    assert "MSG_ADDRESS_UNIT_NOT_IN_FORCE" in codes
    text = next(i["diagnostics"] for i in issues if "Hà Giang" in i.get("diagnostics", ""))
    assert "'02' (Tỉnh Hà Giang)" in text and "2026-03-01" in text
    assert await people.found({"identifier": f"{CCCD_SYSTEM}|002090000009"}) == set()


async def test_search_by_todays_province_finds_records_written_with_old_codes(
    people: People,
) -> None:
    assert await people.found({"address-province": "08"}) == {"hagiang_2024", "tuyenquang_2026"}
    assert await people.found({"address-province": "02"}) == {"hagiang_2024"}
    assert await people.found({"address-province": "01"}) == {"ngocha_2024", "hanoi_2026"}
    assert await people.found({"address-province": "08,01", "_count": "10"}) == set(PUSHES)


async def test_search_by_todays_commune_does_not_guess_for_a_split_one(people: People) -> None:
    assert await people.found({"address-commune": "00715"}) == {"hagiang_2024"}
    # Ngọc Hà (old 00016) was divided between Ba Đình (00004) and Ngọc Hà (00008).
    assert await people.found({"address-commune": "00008"}) == {"hanoi_2026"}
    assert await people.found({"address-commune": "00004"}) == set()
    assert await people.found({"address-commune": "00016"}) == {"ngocha_2024"}


async def test_a_citizen_finds_only_their_own_record_by_province(people: People) -> None:
    mine = people.as_patient("hagiang_2024")
    assert await people.found({"address-province": "08"}, mine) == {"hagiang_2024"}
    other = people.as_patient("tuyenquang_2026")  # a valid token of someone else
    assert await people.found({"address-province": "02"}, other) == set()


async def test_an_unknown_commune_is_refused_or_warned_as_configured(client_with: Any) -> None:
    unknown = patient(cccd="008090000005", address=[vn_address("08", None, "99999")])
    strict = await client_with()
    refused = await strict.post("/fhir/Patient", json=unknown, headers=FHIR)
    assert refused.status_code == 422
    issue = refused.json()["issue"][0]
    assert issue["details"]["coding"][0]["code"] == "MSG_ADDRESS_UNIT_UNKNOWN"
    assert issue["expression"] == ["Patient.address[0].extension[1].value"]
    lenient = await client_with(unknown_unit_code="warning")
    assert (await lenient.post("/fhir/Patient", json=unknown, headers=FHIR)).status_code == 201
    known = patient(cccd="008090000006", address=[vn_address("08", None, "00691")])
    assert (await strict.post("/fhir/Patient", json=known, headers=FHIR)).status_code == 201


async def test_validate_reports_a_commune_outside_its_province(client: httpx.AsyncClient) -> None:
    wrong = patient(address=[vn_address("08", None, "00004")])
    response = await client.post("/fhir/Patient/$validate", json=wrong, headers=FHIR)
    issues = [i for i in response.json()["issue"]
              if i["details"]["coding"][0]["code"].startswith("MSG_ADDRESS")]
    assert [i["details"]["coding"][0]["code"] for i in issues] == ["MSG_ADDRESS_UNIT_MISMATCH"]
    assert "Phường Ba Đình" in issues[0]["diagnostics"]
    assert issues[0]["expression"] == ["Patient.address[0].extension[1].value"]


async def _contains(response: httpx.Response) -> list[tuple[str, str]]:
    assert response.status_code == 200, response.text
    return [(c["code"], c["display"]) for c in response.json()["expansion"].get("contains", [])]


async def test_expand_communes_by_province_and_accent_insensitive_filter(
    client: httpx.AsyncClient,
) -> None:
    vs = "https://fhir.sskdt.vn/ValueSet"
    of_08 = await client.get("/fhir/ValueSet/$expand", params={
        "url": f"{vs}/commune-of-08", "filter": "lung cu"})
    assert await _contains(of_08) == [("00715", "Xã Lũng Cú")]
    everywhere = await client.get("/fhir/ValueSet/$expand", params={
        "url": f"{vs}/commune", "filter": "PHUONG ba đình"})
    assert ("00004", "Phường Ba Đình") in await _contains(everywhere)
    total = await client.get("/fhir/ValueSet/$expand", params={"url": f"{vs}/commune-of-08",
                                                                "count": "0"})
    assert total.json()["expansion"]["total"] == 124
    old_era = {"resourceType": "ValueSet", "status": "active", "compose": {"include": [{
        "system": "https://fhir.sskdt.vn/CodeSystem/commune-pre-2025",
        "filter": [{"property": "province", "op": "=", "value": "02"}]}]}}
    posted = await client.post("/fhir/ValueSet/$expand", headers=FHIR, json={
        "resourceType": "Parameters", "parameter": [
            {"name": "valueSet", "resource": old_era},
            {"name": "filter", "valueString": "lũng cú"}]})
    assert await _contains(posted) == [("00715", "Xã Lũng Cú")]


async def test_lookup_gives_the_parent_and_validate_code_the_era(
    client: httpx.AsyncClient,
) -> None:
    lookup = await client.get("/fhir/CodeSystem/$lookup", params={
        "system": "https://fhir.sskdt.vn/CodeSystem/commune-pre-2025", "code": "00715"})
    parameters = lookup.json()["parameter"]
    assert {"name": "display", "valueString": "Xã Lũng Cú"} in parameters
    properties = {p["part"][0]["valueCode"]: p["part"][1] for p in parameters
                  if p["name"] == "property"}  # fmt: skip
    assert properties["district"] == {"name": "value", "valueCode": "026"}
    assert properties["province"] == {"name": "value", "valueCode": "02"}

    async def valid(value_set: str, code: str) -> bool:
        response = await client.get("/fhir/ValueSet/$validate-code", params={
            "url": f"https://fhir.sskdt.vn/ValueSet/{value_set}", "code": code})
        return bool(response.json()["parameter"][0]["valueBoolean"])

    assert await valid("address-province", "02") and not await valid("province", "02")
    assert await valid("commune", "00715") and not await valid("commune", "99999")
    assert await valid("commune-pre-2025", "00016") and not await valid("commune", "00016")


async def test_the_unit_lists_are_readable_through_the_api(client_with: Any) -> None:
    full = await client_with(terminology_dir=PROJECT_DIR / "terminology")
    communes = (await full.get("/fhir/CodeSystem/commune")).json()
    assert communes["count"] == len(communes["concept"]) == 3321
    found = await full.get("/fhir/ConceptMap", params={
        "url": "https://fhir.sskdt.vn/ConceptMap/commune-pre-2025-to-2025"})
    assert found.json()["entry"][0]["resource"]["group"][1]["element"][0]["code"] == "318"
