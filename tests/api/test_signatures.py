"""API tests of signed records (docs/signatures.md): what a facility pushes signed is checked on
write (``enforce`` refuses, ``record`` keeps the result), its proof is kept (the signed bytes as
a Binary, the server's Provenance), and ``$verify-signature`` checks it again after storage, for
every kind of caller (an attacker holding another citizen's token learns nothing)."""

from __future__ import annotations

import base64
import copy
import datetime as dt
import hashlib
from pathlib import Path
from typing import Any

import httpx
import pytest
from jwt.api_jws import PyJWS
from prometheus_client.parser import text_string_to_metric_families

from fhir_server.settings import Settings
from fhir_server.signatures.on_write import verify_file
from fhir_server.signatures.proof import PROOF_SOURCE
from fhir_server.signatures.trust import load_trust_list
from fhir_server.signatures.verification import EXTENSION
from tests import builders as b
from tests import pki as k
from tests.api.test_health_book import patient_id, visit_bundle
from tests.conftest import token_for

FHIR = {"Content-Type": "application/fhir+json"}
CCCD_A, CCCD_B = "001090012345", "079085000111"


@pytest.fixture
def trust_list(tmp_path: Path) -> Path:
    """A trust list of the test roots and a CRL revoking nothing."""
    return k.pki().trust_list(tmp_path / "trust", k.pki().crl())


async def _app(client_with: Any, trust: Path, mode: str = "enforce") -> httpx.AsyncClient:
    http: httpx.AsyncClient = await client_with(signature_verification=mode,
                                                signature_trust_list=trust)
    return http


def _result(proof: dict[str, Any]) -> dict[str, Any]:
    """The parts of the verification extension of a proof's first signature."""
    extension = next(e for e in proof["signature"][0]["extension"] if e["url"] == EXTENSION)
    return {p["url"]: next(v for key, v in p.items() if key.startswith("value"))
            for p in extension["extension"]}


async def _proofs(http: httpx.AsyncClient, target: str) -> list[dict[str, Any]]:
    found = (await http.get("/fhir/Provenance", params={"target": target})).json()
    return [e["resource"] for e in found.get("entry", [])
            if e["resource"].get("meta", {}).get("source") == PROOF_SOURCE]


async def _verify(http: httpx.AsyncClient, reference: str, **headers: str) -> httpx.Response:
    return await http.get(f"/fhir/{reference}/$verify-signature", headers=headers)


def _verdict(response: httpx.Response) -> tuple[bool, list[str]]:
    body = response.json()
    verified = next(p["valueBoolean"] for p in body["parameter"] if p["name"] == "verified")
    results = [next(q["valueCode"] for q in p["part"] if q["name"] == "result")
               for p in body["parameter"] if p["name"] == "signature"]
    return verified, results


def _encounter(response: httpx.Response) -> str:
    return next(e["response"]["location"].split("/_history")[0]
                for e in response.json()["entry"]
                if e["response"]["location"].startswith("Encounter/"))


# -- a signed visit push -------------------------------------------------------------------------


@pytest.mark.parametrize("kind, options", [
    ("rsa", {}), ("rsa", {"algorithm": "PS256"}), ("rsa", {"unencoded": True}),
    ("rsa", {"attached": True}), ("ec", {}), ("ec", {"algorithm": "ES256"}),
])
async def test_signed_visit_is_accepted_and_its_proof_kept(
        client_with: Any, trust_list: Path, kind: str, options: dict[str, Any]) -> None:
    http = await _app(client_with, trust_list)
    bundle = k.sign_bundle(visit_bundle(CCCD_A, "S1", day=3), k.pki().signer(kind=kind),
                           **options)
    response = await http.post("/fhir", json=bundle, headers=FHIR)
    assert response.status_code == 200, response.text
    encounter = _encounter(response)
    proofs = await _proofs(http, encounter)
    assert len(proofs) == 1
    proof = proofs[0]
    assert _result(proof)["result"] == "verified"
    assert _result(proof)["signer"].startswith("CN=Bệnh viện Thử nghiệm")
    patient = f"Patient/{await patient_id(http, CCCD_A)}"
    assert patient in {t["reference"] for t in proof["target"]}
    binary = (await http.get(f"/fhir/{proof['entity'][0]['what']['reference']}")).json()
    assert base64.b64decode(binary["data"]) == k.signed_content(bundle)  # the signed bytes


async def test_signed_push_sent_again_keeps_its_first_proof(
        client_with: Any, trust_list: Path) -> None:
    http = await _app(client_with, trust_list)
    bundle = k.sign_bundle(visit_bundle(CCCD_A, "S2", day=3), k.pki().signer())
    first = await http.post("/fhir", json=copy.deepcopy(bundle), headers=FHIR)
    again = await http.post("/fhir", json=copy.deepcopy(bundle), headers=FHIR)
    assert first.status_code == again.status_code == 200, again.text
    proofs = await _proofs(http, _encounter(first))
    assert len(proofs) == 1 and proofs[0]["meta"]["versionId"] == "1"


async def test_unsigned_push_keeps_no_proof(client_with: Any, trust_list: Path) -> None:
    http = await _app(client_with, trust_list)
    response = await http.post("/fhir", json=visit_bundle(CCCD_A, "U1", day=3), headers=FHIR)
    assert response.status_code == 200, response.text
    assert await _proofs(http, _encounter(response)) == []


def _expired() -> k.Signer:
    return k.pki().signer(start=k.NOW - 400 * k.DAY, end=k.NOW - 10 * k.DAY)


def _future() -> k.Signer:
    return k.pki().signer(start=k.NOW + 10 * k.DAY, end=k.NOW + 400 * k.DAY)


def _stranger() -> k.Signer:
    key = k.rsa_key()
    name = k._name("Self-made CA")
    leaf = k.certificate("Bệnh viện Giả", key, name, key, ca=False, start=k.NOW - k.DAY,
                         end=k.NOW + 100 * k.DAY)
    return k.Signer(key, (leaf,))


def _tampered(bundle: dict[str, Any]) -> dict[str, Any]:
    bundle["entry"][3]["resource"]["period"]["end"] = "2025-03-03T11:00:00+07:00"
    return bundle


CASES = {
    "garbage": (lambda b: {**b, "signature": {**k.signature("bm90IGEgSldT")}},
                "MSG_SIGNATURE_MALFORMED", "malformed"),
    "changed after signing": (lambda b: _tampered(k.sign_bundle(b, k.pki().signer())),
                              "MSG_SIGNATURE_INVALID", "invalid"),
    "expired": (lambda b: k.sign_bundle(b, _expired()), "MSG_SIGNATURE_CERT_EXPIRED",
                "expired"),
    "not yet valid": (lambda b: k.sign_bundle(b, _future()), "MSG_SIGNATURE_CERT_NOT_YET_VALID",
                      "not-yet-valid"),
    "untrusted": (lambda b: k.sign_bundle(b, _stranger()), "MSG_SIGNATURE_UNTRUSTED",
                  "untrusted"),
    "HMAC": (lambda b: {**b, "signature": k.signature(base64.b64encode(
        b"eyJhbGciOiJIUzI1NiJ9..c2ln").decode())}, "MSG_SIGNATURE_UNSUPPORTED", "unsupported"),
}


@pytest.mark.parametrize("case", sorted(CASES))
async def test_bad_signature_is_refused_in_enforce_mode_and_nothing_is_written(
        client_with: Any, trust_list: Path, case: str) -> None:
    make, message_id, _ = CASES[case]
    http = await _app(client_with, trust_list, "enforce")
    response = await http.post("/fhir", json=make(visit_bundle(CCCD_A, "B1", day=3)),
                               headers=FHIR)
    assert response.status_code == 422, response.text
    issue = response.json()["issue"][0]
    assert issue["details"]["coding"][0]["code"] == message_id
    assert issue["expression"] == ["Bundle.signature"]
    found = (await http.get("/fhir/Encounter", params={"_summary": "count"})).json()
    assert found["total"] == 0


@pytest.mark.parametrize("case", sorted(CASES))
async def test_bad_signature_is_recorded_in_record_mode(
        client_with: Any, trust_list: Path, case: str) -> None:
    make, _, status = CASES[case]
    http = await _app(client_with, trust_list, "record")
    response = await http.post("/fhir", json=make(visit_bundle(CCCD_A, "R1", day=3)),
                               headers=FHIR)
    assert response.status_code == 200, response.text
    proofs = await _proofs(http, _encounter(response))
    assert [_result(p)["result"] for p in proofs] == [status]


async def test_revoked_certificate_is_refused_or_recorded(client_with: Any,
                                                         tmp_path: Path) -> None:
    signer = k.pki().signer()
    trust = k.pki().trust_list(tmp_path / "t", k.pki().crl((signer.certificate,
                                                          k.NOW - k.DAY)))
    bundle = k.sign_bundle(visit_bundle(CCCD_A, "V1", 3), signer)
    refused = await (await _app(client_with, trust)).post("/fhir", json=bundle, headers=FHIR)
    assert refused.status_code == 422
    assert refused.json()["issue"][0]["details"]["coding"][0]["code"] == \
        "MSG_SIGNATURE_CERT_REVOKED"
    http = await client_with(signature_verification="record", signature_trust_list=trust,
                             data_dir=tmp_path / "second")
    recorded = await http.post("/fhir", json=bundle, headers=FHIR)
    assert recorded.status_code == 200, recorded.text
    assert [_result(p)["result"] for p in await _proofs(http, _encounter(recorded))] == \
        ["revoked"]


async def test_certificate_revoked_by_an_ocsp_response_is_refused(client_with: Any,
                                                                  tmp_path: Path) -> None:
    signer = k.pki().signer()
    answer = k.pki().ocsp(signer.certificate, k.NOW - k.DAY, responder="delegated")
    trust = k.pki().trust_list(tmp_path / "t", ocsp=(answer,))
    bundle = k.sign_bundle(visit_bundle(CCCD_A, "O1", 3), signer)
    refused = await (await _app(client_with, trust)).post("/fhir", json=bundle, headers=FHIR)
    assert refused.status_code == 422, refused.text
    issue = refused.json()["issue"][0]
    assert issue["details"]["coding"][0]["code"] == "MSG_SIGNATURE_CERT_REVOKED"
    assert "OCSP" in issue["diagnostics"]


async def test_certificate_revoked_after_receipt_still_verifies_later(
        client_with: Any, tmp_path: Path) -> None:
    """Revocation is judged at the moment the server first received the signature."""
    signer = k.pki().signer()
    directory = tmp_path / "t"
    trust = k.pki().trust_list(directory, k.pki().crl())
    http = await _app(client_with, trust)
    response = await http.post("/fhir", json=k.sign_bundle(visit_bundle(CCCD_A, "V2", 3), signer),
                               headers=FHIR)
    assert response.status_code == 200, response.text
    (directory / "crl-0.pem").write_bytes(
        k.pki().crl((signer.certificate, k.NOW + dt.timedelta(hours=1))))
    verified, results = _verdict(await _verify(http, _encounter(response)))
    assert (verified, results) == (True, ["verified"])
    (directory / "crl-0.pem").write_bytes(k.pki().crl((signer.certificate, k.NOW - k.DAY)))
    assert _verdict(await _verify(http, _encounter(response))) == (False, ["revoked"])


async def test_nothing_is_checked_when_verification_is_off(
        client_with: Any, trust_list: Path) -> None:
    http = await _app(client_with, trust_list, "off")
    bundle = CASES["garbage"][0](visit_bundle(CCCD_A, "O1", day=3))
    response = await http.post("/fhir", json=bundle, headers=FHIR)
    assert response.status_code == 200
    assert await _proofs(http, _encounter(response)) == []


# -- documents, Provenances, PDFs ---------------------------------------------------------------


def _document(patient: str) -> dict[str, Any]:
    composition = {"resourceType": "Composition", "id": "c1", "status": "final",
                   "type": {"coding": [{"system": "http://loinc.org", "code": "18842-5"}]},
                   "subject": {"reference": patient}, "date": "2025-03-03T10:00:00+07:00",
                   "author": [{"display": "BS. Trần Thị Bình"}], "title": "Giấy ra viện"}
    return {"resourceType": "Bundle", "identifier": {"system": "urn:ietf:rfc:3986",
                                                     "value": "urn:uuid:1f0d7a3e-1"},
            "type": "document", "timestamp": "2025-03-03T10:00:00+07:00",
            "entry": [{"fullUrl": "urn:uuid:c1", "resource": composition}]}


async def _patient(http: httpx.AsyncClient, cccd: str = CCCD_A) -> str:
    response = await http.post("/fhir/Patient", json=b.patient(cccd=cccd), headers=FHIR)
    assert response.status_code == 201, response.text
    return f"Patient/{response.json()['id']}"


async def test_signed_document_verifies_after_storage(
        client_with: Any, trust_list: Path) -> None:
    http = await _app(client_with, trust_list)
    document = k.sign_bundle(_document(await _patient(http)), k.pki().signer(kind="ec"))
    response = await http.post("/fhir/Bundle", json=document, headers=FHIR)
    assert response.status_code == 201, response.text
    stored = (await http.get(f"/fhir/Bundle/{response.json()['id']}")).json()
    assert stored["meta"]["versionId"] == "1" and "source" in stored["meta"]
    assert _verdict(await _verify(http, f"Bundle/{stored['id']}")) == (True, ["verified"])


async def test_document_changed_after_signing_is_refused(
        client_with: Any, trust_list: Path) -> None:
    http = await _app(client_with, trust_list)
    document = k.sign_bundle(_document(await _patient(http)), k.pki().signer())
    document["entry"][0]["resource"]["title"] = "Giấy ra viện (sửa)"
    response = await http.post("/fhir/Bundle", json=document, headers=FHIR)
    assert response.status_code == 422
    assert response.json()["issue"][0]["expression"] == ["Bundle.signature"]


def _signed_provenance(target: dict[str, Any], signer: k.Signer) -> dict[str, Any]:
    content = k.canonical(target)
    return {"resourceType": "Provenance", "target": [{"reference": "urn:uuid:d"}],
            "recorded": "2025-03-03T10:00:00+07:00",
            "agent": [{"who": {"reference": "urn:uuid:o"}}],
            "signature": [k.signature(k.jws(content, signer),
                                      method="http://hl7.org/fhir/canonicalization/json")]}


async def test_signed_provenance_in_the_transaction_of_what_it_signs(
        client_with: Any, trust_list: Path) -> None:
    http = await _app(client_with, trust_list)
    bundle = visit_bundle(CCCD_A, "P1", day=3)
    paper = next(e["resource"] for e in bundle["entry"] if e["fullUrl"] == "urn:uuid:d")
    bundle["entry"].append({"fullUrl": "urn:uuid:prov",
                            "resource": _signed_provenance(paper, k.pki().signer()),
                            "request": {"method": "POST", "url": "Provenance"}})
    response = await http.post("/fhir", json=bundle, headers=FHIR)
    assert response.status_code == 200, response.text
    provenance = response.json()["entry"][-1]["response"]["location"].split("/_history")[0]
    assert _verdict(await _verify(http, provenance)) == (True, ["verified"])
    paper_ref = next(e["response"]["location"].split("/_history")[0]
                     for e in response.json()["entry"]
                     if e["response"]["location"].startswith("DocumentReference/"))
    assert _verdict(await _verify(http, paper_ref)) == (True, ["verified"])


async def test_signed_provenance_alone_cannot_be_verified(
        client_with: Any, trust_list: Path) -> None:
    http = await _app(client_with, trust_list)
    provenance = _signed_provenance({"resourceType": "Basic"}, k.pki().signer())
    provenance["target"] = [{"reference": await _patient(http)}]
    provenance["agent"] = [{"who": {"display": "Bệnh viện"}}]
    response = await http.post("/fhir/Provenance", json=provenance, headers=FHIR)
    assert response.status_code == 422
    issue = response.json()["issue"][0]
    assert issue["details"]["coding"][0]["code"] == "MSG_SIGNATURE_CONTENT_ABSENT"


def _paper(patient: str, pdf: bytes) -> dict[str, Any]:
    return {"resourceType": "DocumentReference", "status": "current",
            "type": {"coding": [{"system": "http://loinc.org", "code": "34133-9"}],
                     "text": "Giấy ra viện"},
            "subject": {"reference": patient}, "date": "2025-03-03T10:00:00+07:00",
            "context": {"encounter": [{"reference": "Encounter/visit-1"}]},
            "content": [{"attachment": {
                "contentType": "application/pdf", "data": base64.b64encode(pdf).decode(),
                "size": len(pdf), "hash": base64.b64encode(hashlib.sha1(pdf).digest()).decode()}}]}


async def test_signed_pdf_is_verified_and_a_changed_one_refused(
        client_with: Any, trust_list: Path) -> None:
    http = await _app(client_with, trust_list)
    patient = await _patient(http)
    pdf = k.sign_pdf(k.blank_pdf(), k.pki().signer())
    response = await http.post("/fhir/DocumentReference", json=_paper(patient, pdf),
                               headers=FHIR)
    assert response.status_code == 201, response.text
    reference = f"DocumentReference/{response.json()['id']}"
    assert _verdict(await _verify(http, reference)) == (True, ["verified"])
    changed = pdf.replace(b"/MediaBox [ 0 0 595 842 ]", b"/MediaBox [ 0 0 595 841 ]")
    assert changed != pdf
    refused = await http.post("/fhir/DocumentReference", json=_paper(patient, changed),
                              headers=FHIR)
    assert refused.status_code == 422
    assert refused.json()["issue"][0]["details"]["coding"][0]["code"] == "MSG_SIGNATURE_INVALID"


async def test_signed_pdf_as_a_binary(client_with: Any, trust_list: Path) -> None:
    http = await _app(client_with, trust_list)
    patient = await _patient(http)
    pdf = k.sign_pdf(k.blank_pdf(), k.pki().signer(kind="ec"))
    binary = {"resourceType": "Binary", "contentType": "application/pdf",
              "securityContext": {"reference": patient},
              "data": base64.b64encode(pdf).decode()}
    response = await http.post("/fhir/Binary", json=binary, headers=FHIR)
    assert response.status_code == 201, response.text
    assert _verdict(await _verify(http, f"Binary/{response.json()['id']}")) == \
        (True, ["verified"])


# -- XML 130 -------------------------------------------------------------------------------------

XML = {"Content-Type": "application/xml"}


async def test_signed_envelope_is_verified_and_recorded_on_each_visit(
        client_with: Any, trust_list: Path) -> None:
    http = await _app(client_with, trust_list)
    second = b.visit(XML1=[b.xml1(MA_LK="LK2")], XML2=[b.xml2(MA_LK="LK2")],
                     XML4=[b.xml4(MA_LK="LK2")])
    data = k.sign_envelope(b.envelope(b.visit(), second), k.pki().signer())
    response = await http.post("/fhir/$import-xml130", content=data, headers=XML)
    assert response.status_code == 200, response.text
    assert response.text.count('"valueCode":"created"') == 2, response.text
    provenances = (await http.get("/fhir/Provenance")).json()["entry"]
    bridge = [e["resource"] for e in provenances
              if e["resource"].get("meta", {}).get("source") != PROOF_SOURCE]
    assert len(bridge) == 2
    for provenance in bridge:
        assert provenance["signature"][0]["sigFormat"] == "application/signature+xml"
        assert _verdict(await _verify(http, f"Provenance/{provenance['id']}")) == \
            (True, ["verified"])
    envelope = bridge[0]["entity"][0]["what"]["reference"]
    stored = (await http.get(f"/fhir/{envelope}")).json()
    assert base64.b64decode(stored["data"]) == data  # byte for byte


async def test_envelope_changed_after_signing_is_refused_whole(
        client_with: Any, trust_list: Path) -> None:
    http = await _app(client_with, trust_list)
    data = k.sign_envelope(b.envelope(b.visit()), k.pki().signer())
    changed = data.replace(b"<NGAYLAP>20210204", b"<NGAYLAP>20210205")
    response = await http.post("/fhir/$import-xml130", content=changed, headers=XML)
    assert response.status_code == 422, response.text  # every visit rejected
    codes = [i["details"]["coding"][0]["code"] for i in response.json()["issue"]]
    assert "MSG_SIGNATURE_INVALID" in codes
    found = (await http.get("/fhir/Encounter", params={"_summary": "count"})).json()
    assert found["total"] == 0


async def test_envelope_with_a_bad_signature_is_stored_with_a_warning_in_record_mode(
        client_with: Any, trust_list: Path) -> None:
    http = await _app(client_with, trust_list, "record")
    data = k.sign_envelope(b.envelope(b.visit()), _expired())
    response = await http.post("/fhir/$import-xml130", content=data, headers=XML)
    assert response.status_code == 200, response.text
    assert "MSG_SIGNATURE_CERT_EXPIRED" in response.text
    assert "created" in response.text


# -- who may check ------------------------------------------------------------------------------


async def test_every_caller_on_a_signed_record(
        client_with: Any, trust_list: Path, settings: Settings) -> None:
    """``$verify-signature`` is a read of the resource it is asked about: the citizen's own
    tokens (read-only, read-write, granular), a clinician of the facility that made the
    record, the facility's and an operator's get the verdict; a scope without the type is
    refused (403); an attacker holding another citizen's token, or a clinician of a facility
    the citizen has not shared the record with, learns nothing, not even that the record
    exists (404)."""
    http = await _app(client_with, trust_list)

    def bearer(scope: str, **claims: str) -> dict[str, str]:
        changed = settings.model_copy(update={"signature_trust_list": trust_list,
                                              "signature_verification": "enforce"})
        return {"Authorization": f"Bearer {token_for(changed, scope, **claims)}"}

    hospital = bearer("system/*.cruds", organization="Organization/01001",
                      client_id="his-01001")  # the facility that made and signed the record
    response = await http.post("/fhir", json=k.sign_bundle(visit_bundle(CCCD_A, "A1", 3),
                                                           k.pki().signer()),
                               headers={**FHIR, **hospital})
    other = await http.post("/fhir", json=visit_bundle(CCCD_B, "B9", 4), headers=FHIR)
    assert response.status_code == other.status_code == 200, response.text
    encounter = _encounter(response)
    proof = (await _proofs(http, encounter))[0]
    a, b_ = await patient_id(http, CCCD_A), await patient_id(http, CCCD_B)

    allowed = {
        "citizen, read-only": bearer("patient/*.rs", patient_id=a),
        "citizen, read-write": bearer("patient/*.cruds", patient_id=a),
        "citizen, granular": bearer("patient/Encounter.rs patient/Provenance.rs", patient_id=a),
        "clinician": bearer("user/*.cruds", fhir_user="Practitioner/bs-1",
                            organization="Organization/01001"),
        "facility": bearer("system/*.rs", organization="Organization/01001"),
        "operator": bearer("system/*.cruds"),
        "granular system": bearer("system/Encounter.rs system/Provenance.rs"),
    }
    attackers = {"read-only": bearer("patient/*.rs", patient_id=b_),
                 "read-write": bearer("patient/*.cruds", patient_id=b_),
                 # a clinician of another facility, without the citizen's Consent
                 "clinician elsewhere": bearer("user/*.cruds", fhir_user="Practitioner/bs-9",
                                               organization="Organization/79001")}
    governed = {"clinician", "facility"}  # by Consent: they read the record, not the proof
    for reference in (encounter, f"Provenance/{proof['id']}"):
        for caller, headers in allowed.items():
            answer = await _verify(http, reference, **headers)
            if caller in governed and reference.startswith("Provenance/"):
                assert answer.status_code == 404, (caller, answer.text)
                continue
            assert answer.status_code == 200, (caller, answer.text)
            assert _verdict(answer) == (True, ["verified"]), caller
        for caller, headers in attackers.items():
            refused = await _verify(http, reference, **headers)
            assert refused.status_code == 404, (caller, refused.text)
            assert "Bệnh viện" not in refused.text
        unknown = await _verify(http, f"{reference.split('/')[0]}/no-such-id",
                                **attackers["read-only"])
        assert unknown.status_code == 404  # the same answer as for B's record
    narrow = bearer("patient/Observation.rs?category=laboratory", patient_id=a)
    assert (await _verify(http, encounter, **narrow)).status_code == 403
    assert (await _verify(http, encounter, **bearer("system/Observation.rs"))).status_code == 403
    binary = proof["entity"][0]["what"]["reference"]
    citizen, attacker = allowed["citizen, read-only"], attackers["read-only"]
    assert (await http.get(f"/fhir/{binary}", headers=citizen)).status_code == 200
    assert (await http.get(f"/fhir/{binary}", headers=attacker)).status_code == 404


# -- the health book ------------------------------------------------------------------------------


def _section(bundle: dict[str, Any], code: str) -> dict[str, Any]:
    composition = bundle["entry"][0]["resource"]
    return next(s for s in composition["section"] if s["code"]["coding"][0]["code"] == code)


async def test_health_book_shows_which_records_were_signed_and_how_they_verified(
        client_with: Any, trust_list: Path, settings: Settings) -> None:
    http = await _app(client_with, trust_list, "record")
    signed = await http.post("/fhir", json=k.sign_bundle(visit_bundle(CCCD_A, "H1", 3),
                                                         k.pki().signer()), headers=FHIR)
    expired = await http.post("/fhir", json=k.sign_bundle(visit_bundle(CCCD_A, "H2", 5),
                                                          _expired()), headers=FHIR)
    plain = await http.post("/fhir", json=visit_bundle(CCCD_A, "H3", 7), headers=FHIR)
    assert signed.status_code == expired.status_code == plain.status_code == 200
    a = await patient_id(http, CCCD_A)
    citizen = {"Authorization": "Bearer " + token_for(
        settings.model_copy(update={"signature_trust_list": trust_list}), "patient/*.rs",
        patient_id=a)}
    book = (await http.get(f"/fhir/Patient/{a}/$summary", headers=citizen)).json()
    div = _section(book, "signatures")["text"]["div"]
    assert div.count("Bệnh viện Thử nghiệm") == 2
    assert "Hợp lệ: chữ ký số đã được xác minh" in div
    assert "Chứng thư số đã hết hạn khi ký" in div
    assert "03/03/2025" in div and "05/03/2025" in div and "07/03/2025" not in div
    page = await http.get(f"/fhir/Patient/{a}/$summary", headers={**citizen,
                                                                   "Accept": "text/html"})
    assert "Chữ ký số" in page.text and "Hợp lệ: chữ ký số đã được xác minh" in page.text
    visit = (await http.get(f"/fhir/{_encounter(signed)}/$document", headers=citizen)).json()
    assert "Hợp lệ" in _section(visit, "signatures")["text"]["div"]
    unsigned = (await http.get(f"/fhir/{_encounter(plain)}/$document", headers=citizen)).json()
    codes = {s["code"]["coding"][0]["code"] for s in unsigned["entry"][0]["resource"]["section"]}
    assert "signatures" not in codes


def _check_detached(bundle: dict[str, Any], certificate: Any) -> None:
    """Verify the server's signature with PyJWT alone (an outside verifier's view)."""
    token = base64.b64decode(bundle["signature"]["data"]).decode()
    head, payload, value = token.split(".")
    assert payload == ""
    content = base64.urlsafe_b64encode(k.signed_content(bundle)).rstrip(b"=").decode()
    PyJWS().decode_complete(f"{head}.{content}.{value}", key=certificate.public_key(),
                            algorithms=["ES256"])


async def test_server_signs_the_health_book_and_the_visit_document(
        client_with: Any, trust_list: Path, tmp_path: Path, settings: Settings) -> None:
    server = k.pki().signer("Máy chủ Sổ sức khỏe điện tử", kind="ec", under="ec-root")
    (tmp_path / "server-key.pem").write_bytes(server.key_pem())
    (tmp_path / "server-chain.pem").write_bytes(k.pem(*server.chain))
    http: httpx.AsyncClient = await client_with(
        signature_verification="enforce", signature_trust_list=trust_list,
        signature_key_file=tmp_path / "server-key.pem",
        signature_certificate_file=tmp_path / "server-chain.pem")
    response = await http.post("/fhir", json=visit_bundle(CCCD_A, "D1", 3), headers=FHIR)
    a = await patient_id(http, CCCD_A)
    book = (await http.get(f"/fhir/Patient/{a}/$summary")).json()
    visit = (await http.get(f"/fhir/{_encounter(response)}/$document")).json()
    for document in (book, visit):
        _check_detached(document, server.certificate)
        assert document["signature"]["who"]["reference"].startswith("urn:uuid:")
    stored = await http.post("/fhir/Bundle", json=book, headers=FHIR)  # a third party keeps it
    assert stored.status_code == 201, stored.text
    assert _verdict(await _verify(http, f"Bundle/{stored.json()['id']}")) == (True, ["verified"])
    page = await http.get(f"/fhir/Patient/{a}/$summary", headers={"Accept": "text/html"})
    assert "Ký số bởi Máy chủ FHIR Sổ sức khỏe điện tử" in page.text


# -- every signed resource, stored, read and checked again -----------------------------------------


async def _created(http: httpx.AsyncClient, path: str, body: dict[str, Any]) -> str:
    response = await http.post(f"/fhir/{path}", json=body, headers=FHIR)
    assert response.status_code in (200, 201), response.text
    if path == "":
        return _encounter(response)
    return f"{body['resourceType']}/{response.json()['id']}"


async def test_every_signed_resource_verifies_after_store_and_read(
        client_with: Any, trust_list: Path, tmp_path: Path) -> None:
    """0 false rejections: each kind of signed record, stored, read back and checked again,
    by the server (``$verify-signature``) and, where the record carries its signature, by a
    verifier outside it (``verify_file`` over the JSON as read)."""
    server = k.pki().signer("Máy chủ", kind="ec", under="ec-root")
    (tmp_path / "k.pem").write_bytes(server.key_pem())
    (tmp_path / "c.pem").write_bytes(k.pem(*server.chain))
    http: httpx.AsyncClient = await client_with(
        signature_verification="enforce", signature_trust_list=trust_list,
        signature_key_file=tmp_path / "k.pem", signature_certificate_file=tmp_path / "c.pem")
    rsa, ec = k.pki().signer(), k.pki().signer(kind="ec")
    patient = await _patient(http, "001090099999")
    visit = visit_bundle(CCCD_A, "E1", 3)
    paper = next(e["resource"] for e in visit["entry"] if e["fullUrl"] == "urn:uuid:d")
    visit["entry"].append({"fullUrl": "urn:uuid:prov", "resource": _signed_provenance(paper, ec),
                           "request": {"method": "POST", "url": "Provenance"}})
    signed: list[str] = [
        await _created(http, "", k.sign_bundle(visit, rsa)),
        await _created(http, "Bundle", k.sign_bundle(_document(patient), ec)),
        await _created(http, "DocumentReference", _paper(patient, k.sign_pdf(k.blank_pdf(), rsa))),
        await _created(http, "Binary", {"resourceType": "Binary", "contentType": "application/pdf",
                                        "securityContext": {"reference": patient}, "data":
                                        base64.b64encode(k.sign_pdf(k.blank_pdf(), ec)).decode()}),
    ]
    imported = await http.post("/fhir/$import-xml130", content=k.sign_envelope(
        b.envelope(b.visit()), rsa, xades=True), headers=XML)
    assert imported.status_code == 200, imported.text
    a = await patient_id(http, CCCD_A)
    book = (await http.get(f"/fhir/Patient/{a}/$summary")).json()
    signed.append(await _created(http, "Bundle", book))
    provenances = (await http.get("/fhir/Provenance", params={"_count": "100"})).json()["entry"]
    signed += [f"Provenance/{e['resource']['id']}" for e in provenances]
    assert len(signed) >= 10
    trust = load_trust_list(trust_list)
    rejected = []
    for reference in signed:
        stored = await http.get(f"/fhir/{reference}")
        assert stored.status_code == 200
        verified, results = _verdict(await _verify(http, reference))
        if not verified:  # true only with at least one signature, all verified
            rejected.append(f"{reference}: {results}")
        if reference.startswith(("Bundle/", "DocumentReference/", "Binary/")):
            outside = verify_file(stored.content, trust) or []
            if not outside or not all(v.verified for v in outside):
                rejected.append(f"{reference} (outside): {outside}")
    assert rejected == []


# -- counted on /metrics ---------------------------------------------------------------------------


async def _checks(http: httpx.AsyncClient) -> dict[tuple[str, str], float]:
    """``fhir_signature_checks_total`` by (kind, result), as /metrics shows it."""
    response = await http.get("/metrics")
    assert response.status_code == 200
    return {(s.labels["kind"], s.labels["result"]): s.value
            for family in text_string_to_metric_families(response.text)
            for s in family.samples if s.name == "fhir_signature_checks_total"}


async def test_each_signature_checked_on_write_is_counted_once_by_kind_and_result(
        client_with: Any, trust_list: Path) -> None:
    http = await _app(client_with, trust_list, "record")
    before = await _checks(http)
    signed = k.sign_bundle(visit_bundle(CCCD_A, "M1", day=3), k.pki().signer())
    assert (await http.post("/fhir", json=signed, headers=FHIR)).status_code == 200
    bad = _tampered(k.sign_bundle(visit_bundle(CCCD_A, "M2", day=3), k.pki().signer()))
    assert (await http.post("/fhir", json=bad, headers=FHIR)).status_code == 200
    two = b.visit(XML1=[b.xml1(MA_LK="M4")], XML2=[b.xml2(MA_LK="M4")],
                  XML4=[b.xml4(MA_LK="M4")])
    envelope = k.sign_envelope(b.envelope(b.visit(XML1=[b.xml1(MA_LK="M3")],
                                                  XML2=[b.xml2(MA_LK="M3")],
                                                  XML4=[b.xml4(MA_LK="M3")]), two),
                               _expired())
    imported = await http.post("/fhir/$import-xml130", content=envelope, headers=XML)
    assert imported.status_code == 200, imported.text
    assert (await http.post("/fhir", json=visit_bundle(CCCD_A, "M5", day=3),
                            headers=FHIR)).status_code == 200  # unsigned: nothing to count
    after = await _checks(http)
    added = {key: after[key] - before.get(key, 0.0) for key in after
             if after[key] != before.get(key, 0.0)}
    # the envelope is checked once for its two visits' Provenances
    assert added == {("jws", "verified"): 1, ("jws", "invalid"): 1, ("xmldsig", "expired"): 1}
