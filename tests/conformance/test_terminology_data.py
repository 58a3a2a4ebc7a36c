"""Conformance of the generated Vietnamese terminology (terminology/) and NamingSystems."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class

from fhir_server.conformance.terminology import Terminology

ROOT = Path(__file__).resolve().parents[2]
TERMINOLOGY_FILES = sorted((ROOT / "terminology").glob("*.json"))
NAMING_SYSTEM_FILES = sorted((ROOT / "profiles").glob("NamingSystem-*.json"))
ALL_FILES = TERMINOLOGY_FILES + NAMING_SYSTEM_FILES
BASE = "https://fhir.sskdt.vn"
MOH = "http://fhir.ehealth.gov.vn/core/sid"
HL7VN = "http://fhir.hl7.org.vn/core/sid"


def load(path: Path) -> dict[str, Any]:
    """Return one JSON resource."""
    return dict(json.loads(path.read_text(encoding="utf-8")))


def resources(resource_type: str) -> list[dict[str, Any]]:
    """Return every generated resource of one type."""
    return [r for r in map(load, ALL_FILES) if r["resourceType"] == resource_type]


def code_system(ident: str) -> dict[str, Any]:
    """Return the generated CodeSystem with this id."""
    return load(ROOT / "terminology" / f"CodeSystem-{ident}.json")


@pytest.fixture(scope="module")
def service() -> Terminology:
    return Terminology.from_directory(ROOT / "terminology")


def test_there_are_terminology_and_naming_system_files() -> None:
    assert len(TERMINOLOGY_FILES) >= 30 and len(NAMING_SYSTEM_FILES) >= 9


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: p.name)
def test_every_file_is_a_valid_r4_resource(path: Path) -> None:
    resource = load(path)
    get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    assert path.name == f"{resource['resourceType']}-{resource['id']}.json"


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: p.name)
def test_every_resource_is_active_or_draft_dated_and_in_viet_nam(path: Path) -> None:
    resource = load(path)
    assert resource["status"] in {"active", "draft"}
    assert resource["date"]
    codings = [c for j in resource["jurisdiction"] for c in j["coding"]]
    assert [(c["system"], c["code"]) for c in codings] == [("urn:iso:std:iso:3166", "VN")]


@pytest.mark.parametrize("path", TERMINOLOGY_FILES, ids=lambda p: p.name)
def test_canonicals_use_the_project_base_and_carry_a_version(path: Path) -> None:
    resource = load(path)
    assert resource["url"] == f"{BASE}/{resource['resourceType']}/{resource['id']}"
    assert resource["version"]


@pytest.mark.parametrize("cs", resources("CodeSystem"), ids=lambda r: r["id"])
def test_every_code_system_has_a_value_set_of_all_its_codes(cs: dict[str, Any]) -> None:
    vs = load(ROOT / "terminology" / f"ValueSet-{cs['id']}.json")
    assert cs["valueSet"] == vs["url"] == f"{BASE}/ValueSet/{cs['id']}"
    assert vs["compose"]["include"] == [{"system": cs["url"], "version": cs["version"]}]


@pytest.mark.parametrize("cs", resources("CodeSystem"), ids=lambda r: r["id"])
def test_code_system_concepts_are_unique_counted_and_displayed(cs: dict[str, Any]) -> None:
    codes = [c["code"] for c in cs["concept"]]
    assert len(codes) == len(set(codes)) == cs["count"]
    assert all(c["display"].strip() for c in cs["concept"])
    assert cs["content"] in {"complete", "fragment"}
    assert cs["copyright"] and cs["description"] and cs["language"] == "vi"


@pytest.mark.parametrize(
    ("ident", "count", "content"),
    [
        ("ethnic-group", 56, "complete"),
        ("province", 34, "complete"),
        ("cccd-province-prefix", 63, "complete"),
        ("visit-type", 10, "complete"),
        ("treatment-outcome", 8, "complete"),
        ("discharge-type", 5, "complete"),
        ("insurance-routing", 24, "fragment"),
        ("injury-cause", 8, "complete"),
        ("bhyt-participant-category", 43, "complete"),
        ("bhyt-benefit-level", 5, "complete"),
        ("occupation-social-class", 13, "complete"),
        ("gender-vn", 3, "complete"),
        ("religion", 4, "fragment"),
        ("document-type", 5, "complete"),
    ],
)
def test_code_system_sizes(ident: str, count: int, content: str) -> None:
    cs = code_system(ident)
    assert (len(cs["concept"]), cs["content"]) == (count, content)


def test_ethnic_groups_follow_qd_121_and_flag_the_ministry_additions() -> None:
    cs = code_system("ethnic-group")
    displays = {c["code"]: c["display"] for c in cs["concept"]}
    assert [displays[k] for k in ("01", "04", "06", "54")] == ["Kinh", "Hoa", "Mường", "Rơ măm"]
    added = {
        c["code"]
        for c in cs["concept"]
        if {"code": "ministry-addition", "valueBoolean": True} in c["property"]
    }
    assert added == {"55", "99"}
    assert "121-TCTK/PPCĐ" in cs["copyright"]


def test_province_list_is_the_2025_version() -> None:
    cs = code_system("province")
    assert cs["version"] == "2025" and "19/2025" in cs["copyright"]
    assert {"01", "46", "79", "96"} <= {c["code"] for c in cs["concept"]}


def test_visit_type_10_alone_is_flagged_unverified() -> None:
    flagged = {
        c["code"]
        for c in code_system("visit-type")["concept"]
        if {"code": "unverified", "valueBoolean": True} in c.get("property", [])
    }
    assert flagged == {"10"}


def test_fragment_lists_say_they_are_incomplete() -> None:
    for ident in ("insurance-routing", "religion"):
        assert "INCOMPLETE" in code_system(ident)["description"]
    assert "unofficial" in code_system("insurance-routing")["description"]


def test_defects_of_the_moh_draft_guide_are_not_copied() -> None:
    assert "Dân tộc" not in code_system("religion")["description"]
    occupation = code_system("occupation-social-class")
    assert "4069/2001" in occupation["copyright"] and "4069/2011" not in json.dumps(occupation)


@pytest.mark.parametrize("cm", resources("ConceptMap"), ids=lambda r: r["id"])
def test_concept_maps_use_only_existing_codes(cm: dict[str, Any], service: Terminology) -> None:
    for group in cm["group"]:
        for element in group["element"]:
            assert service.lookup(group["source"], element["code"]) is not None
            for target in element["target"]:
                if group["target"] in service.code_systems and "code" in target:
                    assert service.lookup(group["target"], target["code"]) is not None


def test_old_provinces_all_map_onto_the_34_new_ones(service: Terminology) -> None:
    group = service.concept_map(f"{BASE}/ConceptMap/province-2016-to-2025")["group"][0]
    sources = {e["code"] for e in group["element"]}
    targets = {t["code"] for e in group["element"] for t in e["target"]}
    assert (len(sources), len(targets)) == (63, 34)


@pytest.mark.parametrize(("code", "gender"), [("1", "male"), ("2", "female"), ("3", "unknown")])
def test_gender_vn_translates_to_administrative_gender(
    code: str, gender: str, service: Terminology
) -> None:
    [match] = service.translate(
        f"{BASE}/CodeSystem/gender-vn", code, url=f"{BASE}/ConceptMap/gender-vn"
    )
    assert match.concept is not None
    assert (match.concept.system, match.concept.code) == (
        "http://hl7.org/fhir/administrative-gender",
        gender,
    )


@pytest.mark.parametrize(
    ("value_set", "text", "display"),
    [
        ("ethnic-group", "kinh", "Kinh"),
        ("ethnic-group", "hmong", "HMông"),
        ("province", "ha noi", "Thành phố Hà Nội"),
        ("province", "hanoi", "Thành phố Hà Nội"),
        ("province", "HO CHI MINH", "Thành phố Hồ Chí Minh"),
        ("province", "dak lak", "Tỉnh Đắk Lắk"),
        ("cccd-province-prefix", "thua thien", "Thừa Thiên Huế"),
    ],
)
def test_expand_finds_vietnamese_displays_without_accents(
    value_set: str, text: str, display: str, service: Terminology
) -> None:
    found = service.expand(f"{BASE}/ValueSet/{value_set}", text)
    assert display in [c.display for c in found]


def test_every_value_set_expands_to_its_code_system(service: Terminology) -> None:
    for cs in resources("CodeSystem"):
        expanded = service.expand(f"{BASE}/ValueSet/{cs['id']}")
        assert [c.code for c in expanded] == [c["code"] for c in cs["concept"]]


EXPECTED_NAMING_SYSTEMS = {
    "cccd": (f"{MOH}/national_id", [f"{HL7VN}/cccd"]),
    "cmnd": (f"{MOH}/citizen_id", [f"{HL7VN}/cmnd"]),
    "bhyt": (f"{MOH}/insurance_number", [f"{HL7VN}/bhyt"]),
    "passport": (f"{MOH}/passport_number", [f"{HL7VN}/passport"]),
    "facility-code": (f"{MOH}/provider-code", [f"{HL7VN}/ma-cskcb"]),
    "ma-lk": (f"{BASE}/sid/ma-lk", []),
    "record": (f"{BASE}/sid/record", []),
    "ma-bn": (f"{BASE}/sid/ma-bn", []),
    "practice-license": (f"{BASE}/sid/practice-license", [f"{HL7VN}/cchn"]),
}


@pytest.mark.parametrize(("ident", "expected"), EXPECTED_NAMING_SYSTEMS.items())
def test_naming_systems_declare_their_preferred_uri_and_aliases(
    ident: str, expected: tuple[str, list[str]]
) -> None:
    ns = load(ROOT / "profiles" / f"NamingSystem-{ident}.json")
    assert (ns["kind"], ns["status"]) == ("identifier", "active")
    preferred = [u["value"] for u in ns["uniqueId"] if u["preferred"]]
    aliases = [u["value"] for u in ns["uniqueId"] if not u["preferred"]]
    assert (preferred, aliases) == ([expected[0]], expected[1])


def test_naming_system_uris_are_distinct() -> None:
    uris = [u["value"] for ns in resources("NamingSystem") for u in ns["uniqueId"]]
    assert len(uris) == len(set(uris))


@pytest.mark.parametrize("ident", ["ma-lk", "record", "ma-bn"])
def test_per_facility_systems_describe_the_facility_scheme(ident: str) -> None:
    ns = load(ROOT / "profiles" / f"NamingSystem-{ident}.json")
    assert f"{BASE}/sid/{ident}/{{MA_CSKCB}}" in ns["description"]
