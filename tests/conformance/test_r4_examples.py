"""Every official R4 example that R4 allows is accepted (profile validation off), reads back
equal to what was sent (decimals written as they were), is found by ``_id``, and meets the
R4 profiles it claims (vitalsigns, bp...: 1,943 examples claim one) as the server checks them.

By default a fixed sample runs (one in 3 of the records and workflow resources, by a hash of
the name, plus those that once failed: inline images in styles, ``_valueString``, ``que-7``,
long narratives, precise decimals):
``FHIR_SERVER_TEST_R4_EXAMPLES=all`` (``make conformance-examples``) runs all 5,305.
"""

from __future__ import annotations

import os
import re
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from fhir_server import decimals
from fhir_server.conformance.profiles import default_validator
from fhir_server.main import create_app
from fhir_server.settings import Settings
from tests.conformance.r4_examples import R4_INVALID, examples, examples_package
from tests.conftest import token_for

FHIR = {"Content-Type": "application/fhir+json"}
#: Examples kept in the sample whatever their position: each once failed for its own reason.
_ALWAYS = re.compile(r"^(StructureDefinition-Account|CodeSystem-v2-02(07|29|41)|"
                     r"Questionnaire-bb|CodeSystem-dicom-dcim|ActivityDefinition-blood-tubes-"
                     r"supply|Observation-decimal|Observation-example|ig-r4)\.json$")
_EVERY = 3


#: Definitions (thousands of large StructureDefinitions, CodeSystems...) cost most of a run:
#: the sample takes records and workflow resources, and the definitions of ``_ALWAYS``.
_DEFINITIONS = re.compile(r"^(StructureDefinition|CodeSystem|ValueSet|SearchParameter|"
                          r"OperationDefinition|ConceptMap|CapabilityStatement|NamingSystem|"
                          r"ImplementationGuide|CompartmentDefinition|Bundle)-")


def _sampler(all_examples: bool) -> Callable[[int, str], bool]:
    def wanted(index: int, name: str) -> bool:
        return all_examples or bool(_ALWAYS.match(name)) or (
            zlib.crc32(name.encode()) % _EVERY == 0 and not _DEFINITIONS.match(name))

    return wanted


def _comparable(resource: dict[str, Any], id: str | None = None,
                source: bool = True) -> dict[str, Any]:
    """``resource`` without what the server sets: meta.versionId/lastUpdated, meta.source
    when the example had none (the writer, from the token), and the id of a POSTed
    AuditEvent."""
    out = {k: v for k, v in resource.items() if k != "meta"}
    meta = {k: v for k, v in (resource.get("meta") or {}).items()
            if k not in ("versionId", "lastUpdated") and (source or k != "source")}
    if meta:
        out["meta"] = meta
    if id is not None:
        out["id"] = id
    return out


async def _round_trip(http: httpx.AsyncClient, body: bytes) -> str | None:
    """Store one example and check it; return what went wrong, or None."""
    sent = decimals.loads(body)
    kind, id = sent["resourceType"], sent["id"]
    if kind == "AuditEvent":  # the audit log takes AuditEvents by POST only
        stored = await http.post(f"/fhir/{kind}", content=body, headers=FHIR)
    else:
        stored = await http.put(f"/fhir/{kind}/{id}", content=body, headers=FHIR)
    if stored.status_code >= 300:
        issue = stored.json()["issue"][0]
        return f"refused {stored.status_code} {issue['details']['coding'][0]['code']}"
    id = stored.json()["id"]
    read = await http.get(f"/fhir/{kind}/{id}")
    had_source = "source" in (sent.get("meta") or {})
    if _comparable(decimals.loads(read.content), source=had_source) != _comparable(sent, id):
        return "read back differs"
    validator = default_validator()  # the R4 profiles claimed (4 examples claim some R4 lacks)
    core = [u for u in (sent.get("meta") or {}).get("profile", ())
            if u.startswith("http://hl7.org/fhir/") and u.split("|")[0] in validator.profiles]
    if [i for i in validator.validate(sent, core) if i.severity == "error"]:
        return "breaks a core profile it claims"
    found = await http.get(f"/fhir/{kind}", params={"_id": id, "_elements": "id"})
    if [e["resource"]["id"] for e in found.json().get("entry", [])
            if e["search"]["mode"] == "match"] != [id]:
        return "not found by _id"
    return None


async def test_r4_examples_are_accepted_read_back_equal_and_found(tmp_path: Path) -> None:
    package = examples_package()
    every = os.environ.get("FHIR_SERVER_TEST_R4_EXAMPLES") == "all"
    settings = Settings(data_dir=tmp_path, base_url="http://test/fhir", validation="off",
                        referential_integrity=False, audit=False,
                        seed_search_parameters=False, max_body_bytes=64 * 1024 * 1024)
    app = create_app(settings)
    token = token_for(settings, "system/*.cruds")
    failures: dict[str, str] = {}
    refused: dict[str, str] = {}
    tried: list[str] = []
    async with app.router.lifespan_context(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test",
        headers={"Authorization": f"Bearer {token}"},
    ) as http:
        for name, body in examples(package, _sampler(every)):
            tried.append(name)
            problem = await _round_trip(http, body)
            if problem is None:
                continue
            code = problem.rsplit(" ", 1)[-1]
            if name in R4_INVALID and problem.startswith("refused") and code == R4_INVALID[name]:
                refused[name] = code
            else:
                failures[name] = problem
    assert len(tried) >= (5000 if every else 200)
    assert failures == {}
    assert refused == {name: R4_INVALID[name] for name in tried if name in R4_INVALID}
