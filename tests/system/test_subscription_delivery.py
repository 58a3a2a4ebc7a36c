"""Subscriptions against real server processes (loopback only): ``kill -9`` between the commit
of a change and its delivery loses nothing, with two worker processes sharing the outbox; and a
subscriber library from the ecosystem (``fhir-tbs``, topic-based subscriptions for Python on
aiohttp) receives the notifications and reads ``$events``."""

from __future__ import annotations

import asyncio
import copy
import json
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from tests.api.subscribing import new_id, topic_subscription
from tests.builders import patient, patient_record
from tests.system.server_process import ServerProcess

pytestmark = pytest.mark.slow

SERVER_ENV = {
    "FHIR_SERVER_SUBSCRIPTION_ALLOW_HTTP": "true",
    "FHIR_SERVER_SUBSCRIPTION_ALLOW_PRIVATE_ENDPOINTS": "true",
    "FHIR_SERVER_SUBSCRIPTION_POLL_S": "0.1",
    "FHIR_SERVER_SUBSCRIPTION_RETRY_FIRST_S": "0.2",
    "FHIR_SERVER_SUBSCRIPTION_RETRY_MAX_INTERVAL_S": "0.5",
    "FHIR_SERVER_REFERENTIAL_INTEGRITY": "false",
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _serve(app: web.Application) -> AsyncIterator[str]:
    """Run an aiohttp app on a loopback port; yield its base URL."""
    runner = web.AppRunner(app)
    await runner.setup()
    port = _free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def _until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def _lab(patient_id: str) -> dict[str, Any]:
    refs = {"org": "Organization/o1", "dr": "Practitioner/d1", "encounter": "Encounter/e1",
            "binary": "Binary/b1"}
    lab = copy.deepcopy(patient_record(f"Patient/{patient_id}", refs, "LK1", "x")["lab"])
    lab["identifier"] = [{"system": "urn:test:lab", "value": new_id()}]
    return lab


async def _active(http: httpx.AsyncClient, id: str) -> None:
    deadline = time.monotonic() + 30
    while (await http.get(f"/fhir/Subscription/{id}")).json()["status"] != "active":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)


class Endpoint:
    """A plain rest-hook receiver: what arrived, and whether it accepts."""

    def __init__(self) -> None:
        self.up = True
        self.bundles: list[dict[str, Any]] = []

    async def handle(self, request: web.Request) -> web.Response:
        if not self.up:
            return web.Response(status=503)
        self.bundles.append(json.loads(await request.read()))
        return web.Response(status=200)

    def events(self) -> list[tuple[int, str]]:
        found = []
        for bundle in self.bundles:
            for parameter in bundle["entry"][0]["resource"]["parameter"]:
                if parameter["name"] == "notification-event":
                    parts = {p["name"]: p for p in parameter["part"]}
                    focus = parts["focus"]["valueReference"]["reference"]
                    found.append((int(parts["event-number"]["valueString"]),
                                  focus.rsplit("/", 1)[-1]))
        return found


async def test_kill_9_between_commit_and_delivery_loses_nothing(tmp_path: Path) -> None:
    endpoint = Endpoint()
    app = web.Application()
    app.router.add_post("/hook", endpoint.handle)
    server = ServerProcess(tmp_path / "data", workers=2, env=SERVER_ENV,
                           log_path=tmp_path / "server.log")
    async for receiver in _serve(app):
        await asyncio.to_thread(server.start)
        try:
            async with httpx.AsyncClient(base_url=server.base, headers=server.headers(),
                                         timeout=30) as http:
                person = await http.post("/fhir/Patient", json=patient(cccd="001090099999"))
                patient_id = person.json()["id"]
                subscription = topic_subscription("observation", f"patient=Patient/{patient_id}",
                                                  endpoint=f"{receiver}/hook")
                created = await http.post("/fhir/Subscription", json=subscription)
                assert created.status_code == 201, created.text
                id = created.json()["id"]
                await _active(http, id)
                endpoint.up = False  # nothing can be delivered from now on
                labs = []
                for _ in range(20):
                    response = await http.post("/fhir/Observation", json=_lab(patient_id))
                    assert response.status_code == 201, response.text
                    labs.append(response.json()["id"])
            server.kill()  # every change above was acknowledged, none delivered
            assert endpoint.events() == []
            endpoint.up = True
            await asyncio.to_thread(server.start)
            await _until(lambda: len(endpoint.events()) >= 20)
            await asyncio.sleep(1)  # anything sent twice would arrive by now
            assert endpoint.events() == [(n + 1, labs[n]) for n in range(20)]
        finally:
            server.kill()


async def test_fhir_tbs_receives_the_notifications_and_reads_events(tmp_path: Path) -> None:
    fhir_tbs = pytest.importorskip("fhir_tbs")
    from fhir_tbs.r4b import R4BTBS
    from fhirpy import AsyncFHIRClient

    received: list[tuple[str, str | None]] = []
    tbs = R4BTBS()

    @tbs.define(topic="https://fhir.sskdt.vn/SubscriptionTopic/observation",
                webhook_id="new-results", filter_by=[])
    async def new_result(app: web.Application, reference: str, included: list[Any],
                         timestamp: str | None) -> None:
        received.append((reference, timestamp))

    app = web.Application()
    fhir_tbs.setup_tbs(app, tbs, webhook_path_prefix="webhook", webhook_token="tbs-secret")
    server = ServerProcess(tmp_path / "data", env=SERVER_ENV)
    async for receiver in _serve(app):
        await asyncio.to_thread(server.start)
        try:
            token = server.headers()["Authorization"]
            client = AsyncFHIRClient(f"{server.base}/fhir", authorization=token)
            person = await client.resource("Patient", **patient(cccd="001090088888")).save()
            subscription = topic_subscription(
                "observation", f"patient=Patient/{person.id}", content="id-only",
                endpoint=f"{receiver}/webhook/new-results",
                payload="application/fhir+json; fhirVersion=4.3",
                headers=("X-Api-Key: tbs-secret",))
            saved = await client.resource("Subscription", **subscription).save()
            async with httpx.AsyncClient(base_url=server.base, headers=server.headers(),
                                         timeout=30) as http:
                await _active(http, saved.id)
                labs = [(await client.resource("Observation", **_lab(person.id)).save()).id
                        for _ in range(3)]
            await _until(lambda: len(received) == 3)
            assert [reference.rsplit("/", 2)[-2:] for reference, _ in received] == \
                [["Observation", lab] for lab in labs]
            events = await R4BTBS.fetch_subscription_events(
                client, _r4b_subscription(saved.id), since=2, until=3)
            assert [(e["event_number"], e["reference"].rsplit("/", 1)[-1]) for e in events] \
                == [(2, labs[1]), (3, labs[2])]
        finally:
            server.kill()


def _r4b_subscription(id: str) -> Any:
    import fhirpy_types_r4b as r4b

    return r4b.Subscription(id=id, status="active", reason="test",
                            criteria="https://fhir.sskdt.vn/SubscriptionTopic/observation",
                            channel=r4b.SubscriptionChannel(type="rest-hook"))
