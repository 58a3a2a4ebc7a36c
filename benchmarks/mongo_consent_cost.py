"""What Consent costs a clinician's request on the MongoDB adapter, over its in-process
stand-in (``tests/contract/mongo_fake.py``): the grants remembered while they do not change
(``storage.mongo.grant_memo``) against the same store reading them on every request, in one
run, alternating; and how soon a revocation written by another server process applies.

    .venv/bin/python benchmarks/mongo_consent_cost.py [--patients 40] [--rounds 3]

Two apps share one stand-in server (two server processes on one database). The first loads
``--patients`` patients' synthetic visits, 201 facilities and 10 Consents per patient
(``consent_cost.consents_of``: one permits the benchmark facility everything, six other
facilities, one revoked, one everyone's Immunizations, one research). The second answers the
requests of ``consent_cost.SCENARIOS`` for every patient, with an operator's token (not
governed by Consent) and a clinician's of the benchmark facility, the clinician's with the
grants remembered ("memo") and read each time ("no memo"), alternating, ``--rounds`` times.

It reports per request: the ``find`` calls the store sent, by what they read (Consents'
grants, the counters of grant changes, anything else), and the process's CPU time (the
stand-in's own work included: it scans every document of a collection per ``find``, so its
CPU grows with the store and is no estimate of a real server's). Then the first app revokes
one patient's Consent and the second's next read of that patient's record must be refused.
What a real ``mongod`` adds is a network round trip per ``find`` (docs/mongodb.md).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from consent_cost import FACILITY, OTHERS, SCENARIOS, _tokens, consents_of

from fhir_server import main as app_module
from fhir_server.settings import Settings
from fhir_server.storage.mongo.grant_memo import CHANGES, GrantMemo
from fhir_server.storage.mongo.store import MongoStore
from fhir_server.synthetic.generation import visit_bundles
from tests.contract.mongo_fake import FakeMongoClient

FHIR = {"Content-Type": "application/fhir+json"}


class _Counting:
    """A database or collection of the stand-in that counts the ``find`` calls sent through
    it, by what they read."""

    def __init__(self, inner: Any, counted: Counter[str]) -> None:
        self._inner, self._counted = inner, counted

    def __getitem__(self, name: str) -> _Counting:
        return _Counting(self._inner[name], self._counted)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def find(self, filter_: dict[str, Any] | None = None, **options: Any) -> Any:
        if self._inner.name == CHANGES:
            self._counted["counters"] += 1
        elif (filter_ or {}).get("type") == "Consent":
            self._counted["grants"] += 1
        else:
            self._counted["other"] += 1
        started = time.process_time()
        try:  # the stand-in evaluates the whole find here; its cursor only hands it out
            return self._inner.find(filter_, **options)
        finally:
            self._counted["stand-in us"] += (time.process_time() - started) * 1e6

    async def find_one(self, filter_: dict[str, Any], **options: Any) -> Any:
        self._counted["other"] += 1
        started = time.process_time()
        try:
            return await self._inner.find_one(filter_, **options)
        finally:
            self._counted["stand-in us"] += (time.process_time() - started) * 1e6

    async def count_documents(self, filter_: dict[str, Any], **options: Any) -> Any:
        self._counted["other"] += 1
        started = time.process_time()
        try:
            return await self._inner.count_documents(filter_, **options)
        finally:
            self._counted["stand-in us"] += (time.process_time() - started) * 1e6


class _CountingClient(FakeMongoClient):
    def __init__(self, server: FakeMongoClient, counted: Counter[str]) -> None:
        super().__init__()
        self.state_by_db = server.state_by_db
        self.counted = counted

    def __getitem__(self, name: str) -> Any:
        return _Counting(super().__getitem__(name), self.counted)


def _transaction(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
        for r in resources]}


async def _load(http: httpx.AsyncClient, patients: int) -> list[str]:
    """Store the visits, the facilities and the Consents; return the patients' ids."""
    for bundle in visit_bundles(patients, seed=1):
        answer = await http.post("/fhir", json=bundle, headers=FHIR)
        assert answer.status_code == 200, answer.text[:500]
    facilities = [{"resourceType": "Organization", "id": name, "name": name, "identifier": [{
        "system": "http://fhir.ehealth.gov.vn/core/sid/provider-code",
        "value": f"{90000 + n:05d}"}]}
        for n, name in enumerate([FACILITY, *(f"bench-other-{k}" for k in range(OTHERS))])]
    answer = await http.post("/fhir", json=_transaction(facilities), headers=FHIR)
    assert answer.status_code == 200, answer.text[:500]
    found = await http.get("/fhir/Patient?_count=1000&_elements=id")
    ids = sorted(e["resource"]["id"] for e in found.json()["entry"])
    rng = random.Random(26)
    for patient in ids:
        answer = await http.post("/fhir", json=_transaction(consents_of(patient, rng)),
                                 headers=FHIR)
        assert answer.status_code == 200, answer.text[:500]
    return ids


async def _run(http: httpx.AsyncClient, paths: list[str], token: str,
               counted: Counter[str]) -> tuple[float, dict[str, float]]:
    """CPU microseconds and ``find`` calls per request over ``paths`` (and the stand-in's
    CPU microseconds among them: ``stand-in us``)."""
    counted.clear()
    started = time.process_time()
    for path in paths:
        answer = await http.get(path, headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 200, answer.text[:300]
    used = time.process_time() - started
    return used / len(paths) * 1e6, {k: v / len(paths) for k, v in counted.items()}


async def _revocation(one: httpx.AsyncClient, other: httpx.AsyncClient, patient: str,
                      tokens: dict[str, str]) -> tuple[int, float]:
    """Revoke through ``one``; the requests ``other`` answers before refusing, and the time."""
    operator = {"Authorization": f"Bearer {tokens['operator']}"}
    clinician = {"Authorization": f"Bearer {tokens['clinician']}"}
    found = (await other.get(f"/fhir/Observation?patient={patient}&_count=1",
                             headers=operator)).json()
    target = found["entry"][0]["fullUrl"].split("/fhir/")[1]
    assert (await other.get(f"/fhir/{target}", headers=clinician)).status_code == 200
    consent = (await one.get(f"/fhir/Consent/bc-{patient}-0", headers=operator)).json()
    started = time.monotonic()
    revoked = await one.put(f"/fhir/Consent/{consent['id']}", json={
        **consent, "status": "inactive"}, headers={**FHIR, "Authorization":
                                                   f"Bearer {tokens['admin']}"})
    assert revoked.status_code == 200, revoked.text
    allowed = 0
    while (await other.get(f"/fhir/{target}", headers=clinician)).status_code == 200:
        allowed += 1
        if allowed > 100:
            break
    return allowed, time.monotonic() - started


async def measure(patients: int, rounds: int) -> None:
    server = FakeMongoClient()
    counted: Counter[str] = Counter()
    clients = iter([server, _CountingClient(server, counted)])
    stores: list[MongoStore] = []

    def open_fake(settings: Settings, registry: Any = None) -> MongoStore:
        store = MongoStore("mongodb://fake", database="fhir", client=next(clients))
        store.registry = registry
        stores.append(store)
        return store

    app_module.open_store = open_fake  # type: ignore[assignment]
    settings = Settings(data_dir=Path(tempfile.mkdtemp(prefix="fhir-mongo-consent-")),
                        base_url="http://test/fhir", seed_search_parameters=False,
                        log_level="warning")
    apps = [app_module.create_app(settings) for _ in range(2)]
    async with apps[0].router.lifespan_context(apps[0]), \
            apps[1].router.lifespan_context(apps[1]):
        tokens = _tokens(settings.data_dir, settings.public_base_url())
        one, other = (httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                        base_url="http://test") for app in apps)
        loaded = time.monotonic()
        ids = await _load(_writer(one, settings), patients)
        print(f"loaded {len(ids)} patients in {time.monotonic() - loaded:.0f} s; "
              f"{sum(len(d) for d in server.state_by_db['fhir'].docs.values())} documents",
              file=sys.stderr)
        await _report(other, stores[1], ids, tokens, counted, rounds)
        allowed, elapsed = await _revocation(_writer(one, settings), other, ids[0], tokens)
        print(f"revocation through process 1: process 2 answered {allowed} request(s) "
              f"before refusing ({'PASS' if allowed == 0 else 'FAIL'} = 0), "
              f"{elapsed * 1000:.1f} ms")


def _writer(http: httpx.AsyncClient, settings: Settings) -> httpx.AsyncClient:
    from fhir_server.security.keys import load_server_key
    from fhir_server.security.tokens import mint_access_token

    base = settings.public_base_url()
    token = mint_access_token(load_server_key(settings.data_dir), issuer=base, audience=base,
                              subject="bench-loader", scope="system/*.cruds",
                              client_id="bench-loader")
    http.headers["Authorization"] = f"Bearer {token}"
    return http


async def _report(http: httpx.AsyncClient, store: MongoStore, ids: list[str],
                  tokens: dict[str, str], counted: Counter[str], rounds: int) -> None:
    print("CPU per request in microseconds: all, the server's (all but the stand-in's "
          "evaluation of the finds); finds per request by what they read")
    print(f"{'scenario':20} {'who':20} {'all':>7} {'server':>7} {'grants':>7} "
          f"{'counters':>8} {'other':>6}")
    for name, template in SCENARIOS.items():
        paths = [template.format(id=p) for p in ids]
        runs: dict[str, list[tuple[float, dict[str, float]]]] = {}
        for who in ("operator", "clinician"):  # warm-up
            await _run(http, paths, tokens[who], counted)
        for _ in range(rounds):
            for who, memo in (("operator", True), ("clinician", False), ("clinician", True)):
                store._grants = GrantMemo() if memo else None
                if memo:  # first read, then measured
                    await _run(http, paths, tokens[who], counted)
                label = f"{who}{'' if memo else ' (no memo)'}"
                runs.setdefault(label, []).append(await _run(http, paths, tokens[who],
                                                             counted))
        cpu, own = {}, {}
        for label, found in runs.items():
            cpu[label] = statistics.median(r[0] for r in found)
            own[label] = statistics.median(r[0] - r[1].get("stand-in us", 0) for r in found)
            finds = found[-1][1]
            print(f"{name:20} {label:20} {cpu[label]:7.0f} {own[label]:7.0f} "
                  f"{finds.get('grants', 0):7.2f} {finds.get('counters', 0):8.2f} "
                  f"{finds.get('other', 0):6.2f}")
        memo, reread, operator = "clinician", "clinician (no memo)", "operator"
        print(f"{name:20} clinician memo / no memo: all {cpu[memo] / cpu[reread]:.3f}, "
              f"server {own[memo] / own[reread]:.3f}; clinician / operator: all "
              f"{cpu[memo] / cpu[operator]:.3f}, server {own[memo] / own[operator]:.3f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    logging.getLogger("httpx").setLevel(logging.WARNING)
    asyncio.run(measure(args.patients, args.rounds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
