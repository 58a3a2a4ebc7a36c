"""Fuzzing every route of the route table (hypothesis, bounded): whatever the method, path,
query, headers and body, the server never answers 5xx, every error is an OperationOutcome,
and a write that fails leaves nothing stored (the newest entry of the system history stays).

``FHIR_SERVER_TEST_FUZZ_EXAMPLES`` sets the number of requests (default 300, about 10 s);
``FHIR_SERVER_TEST_FUZZ_RANDOM=1`` draws new ones instead of the fixed sequence.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fhir_server.api.routes import ROUTES
from fhir_server.main import create_app
from fhir_server.settings import Settings
from tests.builders import HEALTH_BOOK_RESOURCES, observation, patient
from tests.conftest import token_for

EXAMPLES = int(os.environ.get("FHIR_SERVER_TEST_FUZZ_EXAMPLES", "300"))
#: Fixed examples by default (the suite is repeatable); set to explore new ones.
RANDOM = bool(os.environ.get("FHIR_SERVER_TEST_FUZZ_RANDOM"))
_WRITES = {"POST", "PUT", "PATCH", "DELETE"}
_PUBLIC = ("/healthz", "/readyz", "/fhir/.well-known/jwks.json")
_OAUTH = ("/fhir/auth/", "/dev-idp/")

_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)
_NUMBERS = st.sampled_from(["0", "1", "-1", "9" * 30, "1e400", "²", "0x10", "", "3.5"])
_TYPES = st.sampled_from(["Patient", "Observation", "Encounter", "Bundle", "AuditEvent",
                          "ValueSet", "Patients", "", "metadata", "_history"])
_IDS = st.one_of(st.sampled_from(["p1", "a" * 65, "x%00", "..", "1", "-"]), _TEXT)
_OPS = st.sampled_from(["everything", "summary", "validate", "expand", "lookup",
                        "validate-code", "document", "json-schema", "nope"])
_PARAM_NAMES = st.sampled_from([
    "_count", "_sort", "_include", "_revinclude", "_total", "_summary", "_elements", "_id",
    "_lastUpdated", "_has:Observation:subject:code", "subject.name", "name", "family",
    "identifier", "birthdate", "gender", "code:below", "code:in", "value-quantity",
    "_since", "_at", "_cursor", "_type", "_format", "_pretty", "url", "identifier:of-type",
    "subject:Patient", "name:exact", "near", "_text", "_sent", "start", "end",
])
_PARAM_VALUES = st.one_of(_TEXT, _NUMBERS, st.sampled_from([
    "*", "*:*", "Patient:organization", "sa100", "ge2020-01-01", "http://x|y", "-name,_id",
    "count", "J00-J99", "http://hl7.org/fhir/sid/icd-10|J00-J99", "Patient/p1", "true",
]))
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _TEXT,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(["resourceType", "id", "meta", "entry", "type",
                                       "resource", "request", "method", "url", "name",
                                       "value", "status", "_value", "extension"]) | _TEXT,
                      children, max_size=4),
    max_leaves=12,
)
_RESOURCES = st.sampled_from([patient(), observation("Patient/p1"),
                              *HEALTH_BOOK_RESOURCES.values()])


@st.composite
def _body(draw: st.DrawFn) -> bytes | None:
    kind = draw(st.sampled_from(["none", "json", "resource", "mutated", "bytes", "bundle"]))
    if kind == "none":
        return None
    if kind == "bytes":
        return draw(st.binary(max_size=60))
    if kind == "json":
        return json.dumps(draw(_JSON)).encode()
    resource = dict(draw(_RESOURCES))
    if kind == "mutated":
        resource[draw(st.sampled_from([*resource, "id", "meta", "text"]))] = draw(_JSON)
    if kind == "bundle":
        entry = {"resource": resource, "request": {
            "method": draw(st.sampled_from(["POST", "PUT", "GET", "DELETE", "PATCH", "X"])),
            "url": draw(st.sampled_from(["Patient", "Patient/p1", "Patient?name=x", ""]))}}
        resource = {"resourceType": "Bundle",
                    "type": draw(st.sampled_from(["transaction", "batch", "collection"])),
                    "entry": [entry, draw(_JSON)] if draw(st.booleans()) else [entry]}
    return json.dumps(resource).encode()


@st.composite
def _request(draw: st.DrawFn) -> tuple[str, str, list[tuple[str, str]], dict[str, str],
                                       bytes | None]:
    method, pattern, _ = draw(st.sampled_from(ROUTES))
    path = pattern
    for name, values in (("{type}", _TYPES), ("{compartment}", _TYPES), ("{id}", _IDS),
                         ("{vid}", _NUMBERS), ("{op}", _OPS)):
        while name in path:
            path = path.replace(name, quote(draw(values), safe="") or "x", 1)
    params = draw(st.lists(st.tuples(_PARAM_NAMES, _PARAM_VALUES), max_size=4))
    headers = draw(st.dictionaries(st.sampled_from([
        "If-Match", "If-None-Match", "If-None-Exist", "Prefer", "Accept", "If-Modified-Since",
        "Content-Type"]), st.sampled_from([
        'W/"1"', 'W/"' + "9" * 5000 + '"', "*", "handling=strict", "return=minimal",
        "text/html", "application/xml", "identifier=x|y", "application/fhir+json",
        "application/x-www-form-urlencoded", "application/json-patch+json",
        "Sat, 01 Jan 2000 00:00:00 GMT", "garbage"]), max_size=3))
    headers.setdefault("Content-Type", "application/fhir+json")
    return method, path, params, headers, draw(_body())


class _Client:
    """The app on an event loop of its own, driven from the synchronous hypothesis test."""

    def __init__(self, config: Settings) -> None:
        self.loop = asyncio.new_event_loop()
        self.app = create_app(config)
        self.lifespan = self.app.router.lifespan_context(self.app)
        self.loop.run_until_complete(self.lifespan.__aenter__())
        token = token_for(config, "system/*.cruds")
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app),
                                      base_url="http://testserver",
                                      headers={"Authorization": f"Bearer {token}"})

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.loop.run_until_complete(self.http.request(method, path, **kwargs))

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def close(self) -> None:
        self.loop.run_until_complete(self.http.aclose())
        self.loop.run_until_complete(self.lifespan.__aexit__(None, None, None))
        self.loop.close()


@pytest.fixture(scope="module")
def http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Client]:
    data = Path(tmp_path_factory.mktemp("fuzz"))
    config = Settings(data_dir=data, base_url="http://testserver/fhir", audit=False,
                      seed_search_parameters=False, max_body_bytes=64 * 1024)
    client = _Client(config)
    client.request("POST", "/fhir/Patient", json=patient(),
                   headers={"Content-Type": "application/fhir+json"})
    yield client
    client.close()


def _newest_write(http: _Client) -> Any:
    history = http.get("/fhir/_history", params={"_count": "1"}).json()
    return [(e["fullUrl"], e["response"]["etag"]) for e in history.get("entry", [])]


@settings(max_examples=EXAMPLES, deadline=None, derandomize=not RANDOM,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                 HealthCheck.data_too_large])
@given(request=_request())
def test_no_request_gets_a_5xx_and_failed_writes_store_nothing(
    http: _Client, request: tuple[str, str, list[tuple[str, str]], dict[str, str],
                                     bytes | None],
) -> None:
    method, path, params, headers, body = request
    before = _newest_write(http) if method in _WRITES else None
    response = http.request(method, path, params=params, headers=headers, content=body)
    assert response.status_code < 500, (method, path, params, response.text[:500])
    if response.status_code >= 400 and not path.startswith(_PUBLIC):
        if path.startswith(_OAUTH):  # the authorization server answers as OAuth does
            answer = response.json()
            assert "error" in answer or answer.get("resourceType") == "OperationOutcome", \
                response.text[:300]
        else:
            assert response.json()["resourceType"] == "OperationOutcome", response.text[:300]
    if before is not None and response.status_code >= 400:
        assert _newest_write(http) == before, (method, path, response.text[:300])
