"""GET /metrics: the request, push and validation figures with their labels, and who may read
them. The registry is the process's own here (no multiprocess directory), shared by every test
of the run, so each test compares the figures before and after what it does."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.builders import valid_example
from tests.conftest import on_sqlite_only, token_for

FHIR = {"Content-Type": "application/fhir+json"}
VISIT = json.loads((Path(__file__).parents[2] / "examples" / "visit-bundle.json").read_text())
VN_PATIENT = "https://fhir.sskdt.vn/StructureDefinition/vn-patient"


async def figures(client: httpx.AsyncClient) -> dict[tuple[str, frozenset[Any]], float]:
    """Every sample of /metrics by (name, labels)."""
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(response.text)
            for sample in family.samples}


def value(figures: dict[tuple[str, frozenset[Any]], float], name: str, **labels: str) -> float:
    return figures.get((name, frozenset(labels.items())), 0.0)


async def test_requests_are_counted_by_interaction_resource_type_and_status(
    client: httpx.AsyncClient,
) -> None:
    before = await figures(client)
    created = await client.post("/fhir/Patient", json=valid_example("Patient"), headers=FHIR)
    for _ in range(3):
        assert (await client.get("/fhir/Patient/nobody")).status_code == 404
    assert (await client.get("/fhir/Patient", params={"gender": "male"})).status_code == 200
    after = await figures(client)
    assert created.status_code == 201

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("fhir_requests_total", interaction="read", resource_type="Patient",
                 status="404") == 3
    assert delta("fhir_requests_total", interaction="create", resource_type="Patient",
                 status="201") == 1
    assert delta("fhir_requests_total", interaction="search-type", resource_type="Patient",
                 status="200") == 1
    assert delta("fhir_request_duration_seconds_count", interaction="read",
                 resource_type="Patient") == 3
    assert delta("fhir_request_duration_seconds_bucket", interaction="read",
                 resource_type="Patient", le="+Inf") == 3


async def test_labels_never_take_what_the_client_made_up(client: httpx.AsyncClient) -> None:
    before = await figures(client)
    assert (await client.get("/fhir/NoSuchType/1")).status_code == 404
    assert (await client.get("/fhir/Patient/$no-such-op")).status_code == 404
    assert (await client.get("/no/such/route")).status_code == 404
    after = await figures(client)
    made_up = [key for key in after if any("NoSuch" in v or "no-such" in v for _, v in key[1])]
    assert made_up == []

    def delta(**labels: str) -> float:
        return (value(after, "fhir_requests_total", **labels)
                - value(before, "fhir_requests_total", **labels))

    assert delta(interaction="read", resource_type="", status="404") == 1
    assert delta(interaction="$unknown", resource_type="Patient", status="404") == 1
    assert delta(interaction="unmatched", resource_type="", status="404") == 1


async def test_pushes_are_counted_accepted_and_rejected_with_their_resources(
    client: httpx.AsyncClient,
) -> None:
    before = await figures(client)
    accepted = await client.post("/fhir", json=VISIT, headers=FHIR)
    broken = json.loads(json.dumps(VISIT))
    broken["entry"][0]["resource"]["gender"] = "sometimes"
    rejected = await client.post("/fhir", json=broken, headers=FHIR)
    after = await figures(client)
    assert accepted.status_code == 200 and rejected.status_code == 400
    entries = len(VISIT["entry"])
    for outcome in ("accepted", "rejected"):
        assert (value(after, "fhir_pushes_total", source="fhir", outcome=outcome)
                - value(before, "fhir_pushes_total", source="fhir", outcome=outcome)) == 1
        assert (value(after, "fhir_pushed_resources_total", source="fhir", outcome=outcome)
                - value(before, "fhir_pushed_resources_total", source="fhir",
                        outcome=outcome)) == entries
    assert (value(after, "fhir_requests_total", interaction="transaction", resource_type="",
                  status="200")
            - value(before, "fhir_requests_total", interaction="transaction", resource_type="",
                    status="200")) == 1


async def test_validation_failures_are_counted_by_profile_and_message_id(
    client: httpx.AsyncClient,
) -> None:
    patient = valid_example("Patient")
    patient["identifier"] = [{"system": "http://fhir.ehealth.gov.vn/core/sid/national_id",
                              "value": "12345"}]
    labels = {"profile": VN_PATIENT, "message_id": "MSG_PROFILE_SLICE"}
    before = value(await figures(client), "fhir_validation_failures_total", **labels)
    response = await client.post("/fhir/Patient", json=patient, headers=FHIR)
    assert response.status_code == 422
    after = value(await figures(client), "fhir_validation_failures_total", **labels)
    assert after - before >= 1


@on_sqlite_only
async def test_writes_report_the_write_lock_wait_and_hold(client: httpx.AsyncClient) -> None:
    before = await figures(client)
    await client.post("/fhir/Patient", json=valid_example("Patient"), headers=FHIR)
    after = await figures(client)
    for name in ("fhir_store_write_lock_wait_seconds_count",
                 "fhir_store_write_lock_hold_seconds_count"):
        assert value(after, name) > value(before, name)


async def test_metrics_answer_loopback_only_by_default(settings: Any) -> None:
    from fhir_server.main import create_app

    app = create_app(settings)
    async with app.router.lifespan_context(app):
        for host, expected in (("127.0.0.1", 200), ("::1", 200), ("10.1.2.3", 403)):
            transport = httpx.ASGITransport(app=app, client=(host, 40000))
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
                assert (await http.get("/metrics")).status_code == expected, host


async def test_metrics_token_mode_wants_the_metrics_token_not_a_fhir_token(
    client_with: Any, settings: Any,
) -> None:
    http = await client_with(metrics="token", metrics_token="s3cret")
    assert (await http.get("/metrics")).status_code == 403  # it carries a FHIR token
    fhir_token = token_for(settings, "system/*.cruds")
    refused = await http.get("/metrics", headers={"Authorization": f"Bearer {fhir_token}"})
    assert refused.status_code == 403
    allowed = await http.get("/metrics", headers={"Authorization": "Bearer s3cret"})
    assert allowed.status_code == 200 and "fhir_requests_total" in allowed.text


async def test_metrics_off_answers_404(client_with: Any) -> None:
    http = await client_with(metrics="off")
    assert (await http.get("/metrics")).status_code == 404
