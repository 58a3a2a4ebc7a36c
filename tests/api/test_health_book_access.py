"""The citizen's own health book under the citizen's own token: ``Patient/[id]/$summary``,
``Patient/$summary?identifier=`` and ``Encounter/[id]/$document`` with a ``patient/*.rs`` token
are valid FHIR documents, equal resource for resource to what a ``system/`` token gets, and the
``text/html`` page of the book has the book in it.

What must be equal: every entry (``fullUrl`` and resource, in order), the Composition included.
What may differ, because each call generates it anew: the Bundle's ``id``, ``meta``,
``identifier`` and ``timestamp``, and the Composition's ``id`` (so its ``urn:uuid:`` fullUrl)
and ``date``; on the HTML page, the footer that prints the time and the document's identifier.
The data is pushed as hospitals push it (transaction Bundles, tests/api/test_health_book.py):
two visits and the rest of A's book, one visit of B at another facility.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from fhir_server.conformance.profiles import default_validator
from fhir_server.operations.summary import SECTIONS
from tests.api.conftest import Door
from tests.api.test_health_book import patient_id, push, record_bundle, visit_bundle
from tests.builders import CCCD_SYSTEM
from tests.conftest import token_for

pytestmark = pytest.mark.asyncio(loop_scope="module")

DOCUMENT_BUNDLE = "https://fhir.sskdt.vn/StructureDefinition/vn-document-bundle"
PATIENT_SCOPES = ["patient/*.rs", "patient/*.cruds"]


@dataclass
class Books:
    """A's and B's pushed records: ids of A's Patient and of A's first visit."""

    http: httpx.AsyncClient
    a: str
    a_cccd: str
    a_visit: str
    b: str

    def as_a(self, door: Door, scope: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token_for(door.settings, scope, patient_id=self.a)}"}


async def push_books(door: Door) -> Books:
    """Push A's two visits and record, and one visit of B (new CCCDs and visit ids)."""
    rng = random.Random()
    a_cccd, b_cccd = (f"001090{rng.randrange(10**6):06d}" for _ in range(2))
    tag = f"{rng.randrange(10**9):09d}"
    keys = await push(door.http, visit_bundle(a_cccd, f"A0-{tag}", day=1))
    await push(door.http, visit_bundle(a_cccd, f"A1-{tag}", day=2))
    await push(door.http, record_bundle(a_cccd))
    await push(door.http, visit_bundle(b_cccd, f"B0-{tag}", day=10, facility="79088"))
    visit = next(k for k in keys if k.startswith("Encounter/"))
    return Books(door.http, await patient_id(door.http, a_cccd), a_cccd, visit,
                 await patient_id(door.http, b_cccd))


def comparable(document: dict[str, Any]) -> dict[str, Any]:
    """The document without what each call generates anew (see the module's docstring)."""
    kept = {k: v for k, v in document.items() if k not in ("id", "meta", "identifier",
                                                             "timestamp")}
    entries = copy.deepcopy(kept.get("entry") or [])
    if entries:
        first = entries[0]
        first.pop("fullUrl", None)
        for key in ("id", "date"):
            first.get("resource", {}).pop(key, None)
    return {**kept, "entry": entries}


def assert_valid_document(document: dict[str, Any], patient: str) -> None:
    """A document Bundle: Composition first, about the patient, every section entry in the
    Bundle, and no error against the Vietnamese document profile."""
    assert document["resourceType"] == "Bundle" and document["type"] == "document"
    assert document.get("entry"), "a document without entries"
    composition = document["entry"][0]["resource"]
    assert composition["resourceType"] == "Composition"
    assert composition["subject"]["reference"].endswith(f"Patient/{patient}")
    urls = {e["fullUrl"] for e in document["entry"]}
    cited = {e["reference"] for s in composition.get("section", []) for e in s.get("entry", [])}
    assert cited <= urls, cited - urls
    errors = [i for i in default_validator().validate(document, [DOCUMENT_BUNDLE])
              if i.severity == "error"]
    assert errors == []


async def both_views(door: Door, books: Books, scope: str, path: str,
                     **params: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The document as the citizen's token and as the ``system/`` token get it."""
    citizen = await door.http.get(path, params=params or None, headers=books.as_a(door, scope))
    system = await door.http.get(path, params=params or None)
    assert citizen.status_code == 200, citizen.text
    assert system.status_code == 200, system.text
    return citizen.json(), system.json()


#: The citizen's documents: where each is asked for, in a world of pushed books.
DOCUMENTS: dict[str, Callable[[Books], tuple[str, dict[str, str]]]] = {
    "Patient/$summary": lambda books: (f"/fhir/Patient/{books.a}/$summary", {}),
    "Patient/$summary?identifier": lambda books: ("/fhir/Patient/$summary", {
        "identifier": f"{CCCD_SYSTEM}|{books.a_cccd}"}),
    "Encounter/$document": lambda books: (f"/fhir/{books.a_visit}/$document", {}),
}


@pytest.mark.parametrize("scope", PATIENT_SCOPES)
@pytest.mark.parametrize("document", list(DOCUMENTS))
async def test_citizens_own_document_is_valid_and_equal_to_what_the_system_gets(
    door: Door, document: str, scope: str
) -> None:
    books = await push_books(door)
    path, params = DOCUMENTS[document](books)
    citizen, system = await both_views(door, books, scope, path, **params)
    assert_valid_document(citizen, books.a)
    assert comparable(citizen) == comparable(system)


async def test_citizens_summary_page_shows_the_book(door: Door) -> None:
    books = await push_books(door)
    html = {"Accept": "text/html"}
    path = f"/fhir/Patient/{books.a}/$summary"
    citizen = await door.http.get(path, headers={**html, **books.as_a(door, "patient/*.rs")})
    system = await door.http.get(path, headers=html)
    assert citizen.status_code == 200, citizen.text
    assert citizen.headers["content-type"].startswith("text/html")
    page = citizen.text.split("<footer>")[0]
    assert page == system.text.split("<footer>")[0]
    for section in SECTIONS:
        assert f"<h2>{section.title}</h2>" in page, section.title
    assert books.a_cccd in page and "Viêm họng cấp" in page and "Paracetamol 500mg" in page
