"""What real FHIR clients expect of a server: ``_count=0`` gives the total, ``POST [base]/``
is ``POST [base]``, and browser apps get CORS when origins are configured."""

from __future__ import annotations

from typing import Any

import httpx

from tests.builders import patient

FHIR = {"Content-Type": "application/fhir+json"}


async def test_count_zero_returns_the_total_and_no_entries(client: httpx.AsyncClient) -> None:
    for given in ("An", "Binh", "Chi"):
        response = await client.post("/fhir/Patient", json=patient(family="Le", given=given),
                                     headers=FHIR)
        assert response.status_code == 201
    body = (await client.get("/fhir/Patient", params={"family": "Le", "_count": "0"})).json()
    assert body["total"] == 3
    assert "entry" not in body
    asked_none = await client.get("/fhir/Patient", params={"_count": "0", "_total": "none"})
    assert "total" not in asked_none.json()


async def test_post_to_the_base_with_a_trailing_slash_is_a_bundle(
    client: httpx.AsyncClient,
) -> None:
    bundle = {"resourceType": "Bundle", "type": "batch",
              "entry": [{"resource": patient(), "request": {"method": "POST",
                                                            "url": "Patient"}}]}
    response = await client.post("/fhir/", json=bundle, headers=FHIR)
    assert response.status_code == 200, response.text
    assert response.json()["type"] == "batch-response"


async def test_cors_is_off_by_default(client: httpx.AsyncClient) -> None:
    preflight = await client.options("/fhir/Patient", headers={
        "Origin": "https://app.example.vn", "Access-Control-Request-Method": "GET"})
    assert "access-control-allow-origin" not in preflight.headers
    read = await client.get("/fhir/metadata", headers={"Origin": "https://app.example.vn"})
    assert "access-control-allow-origin" not in read.headers
    assert read.json()["rest"][0]["security"]["cors"] is False


async def test_cors_answers_preflight_and_exposes_headers(client_with: Any) -> None:
    client = await client_with(cors_origins=["https://app.example.vn"])
    preflight = await client.options("/fhir/Patient", headers={
        "Origin": "https://app.example.vn", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type, prefer"})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://app.example.vn"
    assert "POST" in preflight.headers["access-control-allow-methods"]
    created = await client.post("/fhir/Patient", json=patient(),
                                headers={**FHIR, "Origin": "https://app.example.vn"})
    assert created.status_code == 201
    assert created.headers["access-control-allow-origin"] == "https://app.example.vn"
    exposed = {h.strip().lower()
               for h in created.headers["access-control-expose-headers"].split(",")}
    assert {"location", "etag", "content-location", "last-modified"} <= exposed
    other = await client.options("/fhir/Patient", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "GET"})
    assert "access-control-allow-origin" not in other.headers
    metadata = await client.get("/fhir/metadata")
    assert metadata.json()["rest"][0]["security"]["cors"] is True
