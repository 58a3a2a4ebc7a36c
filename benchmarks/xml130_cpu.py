"""CPU per visit of the XML 130 route and of the FHIR push of the same visits, in-process.

    .venv/bin/python benchmarks/xml130_cpu.py STORE_A STORE_B [--visits 200] [--seed N]

Over HTTP on this 2-core machine (``run.py --scenario push-xml130 --scenario
push-xml130-fhir``) the rates move with whatever else runs. This measures what the two doors
cost the server itself: two apps in one process, each over its own copy of a store (the two
directories are written to: give copies), driven through ``httpx``'s ASGI transport. The same
synthetic one-visit envelopes go to ``$import-xml130`` on STORE_A and, converted to their
transaction Bundles (as ``benchmarks/xml130.py`` sends them), to ``POST [base]`` on STORE_B,
one request of each in turn (the order alternating), so load beside the run disturbs both
alike. The process's CPU time (every thread: the SQLite commits too) is summed per route; the
ratio of CPU per visit is the throughput ratio a CPU-bound server would show.

Then, in the same process: the XML route's own steps per visit (decoding, checks and mapping,
building the Bundle), the FHIR push's parse of the same Bundle (``resources.parse_json``), and
the transaction both share (``interactions.bundle.transaction``), timed around each call.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
from xml130 import envelopes

from fhir_server.bridges.xml130 import visits
from fhir_server.interactions import bundle
from fhir_server.main import create_app
from fhir_server.router import dispatch
from fhir_server.security.keys import load_server_key
from fhir_server.security.tokens import mint_access_token
from fhir_server.settings import Settings

BASE = "http://test/fhir"
WARM_VISITS = 10
SPENT: Counter[str] = Counter()
ROUTE = ["-"]


def _timed(module: Any, name: str, label: str) -> None:
    """Sum the CPU time of ``module.name`` under the running route's label."""
    inner = getattr(module, name)

    def charge(started: float) -> None:
        SPENT[f"{ROUTE[0]}: {label}"] += time.process_time() - started

    if asyncio.iscoroutinefunction(inner):
        @functools.wraps(inner)
        async def timed_async(*args: Any, **kwargs: Any) -> Any:
            started = time.process_time()
            try:
                return await inner(*args, **kwargs)
            finally:
                charge(started)
        setattr(module, name, timed_async)
        return

    @functools.wraps(inner)
    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.process_time()
        try:
            return inner(*args, **kwargs)
        finally:
            charge(started)
    setattr(module, name, timed)


def _client(directory: Path) -> tuple[Any, httpx.AsyncClient, dict[str, str]]:
    app = create_app(Settings(data_dir=directory, base_url=BASE))
    token = mint_access_token(load_server_key(directory), issuer=BASE, audience=BASE,
                              subject="benchmark", scope="system/*.cruds", ttl=7200)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
    return app, client, {"Authorization": f"Bearer {token}"}


async def _post(client: httpx.AsyncClient, url: str, body: bytes,
                headers: dict[str, str]) -> None:
    answer = await client.post(url, content=body, headers=headers)
    if answer.status_code != 200 or b'"valueCode":"rejected"' in answer.content:
        raise SystemExit(f"{url}: {answer.status_code} {answer.text[:500]}")


async def _run(store_a: Path, store_b: Path, count: int, seed: int) -> None:
    standard = visits.standard_of("4750")
    sent = envelopes(seed, count + WARM_VISITS)
    bundles = [orjson.dumps(visits.convert_only(e, standard)[0].bundle)  # type: ignore[union-attr]
               for e in sent]
    app_a, xml_client, xml_headers = _client(store_a)
    app_b, fhir_client, fhir_headers = _client(store_b)
    xml_headers["Content-Type"] = "application/xml"
    fhir_headers["Content-Type"] = "application/fhir+json"
    sends: dict[str, Callable[[int], Any]] = {
        "xml": lambda n: _post(xml_client, "/fhir/$import-xml130", sent[n], xml_headers),
        "fhir": lambda n: _post(fhir_client, "/fhir", bundles[n], fhir_headers),
    }
    async with app_a.router.lifespan_context(app_a), app_b.router.lifespan_context(app_b):
        for n in range(WARM_VISITS):
            await sends["xml"](n)
            await sends["fhir"](n)
        SPENT.clear()
        for n in range(WARM_VISITS, WARM_VISITS + count):
            for route in (("xml", "fhir") if n % 2 else ("fhir", "xml")):
                ROUTE[0] = route
                started = time.process_time()
                await sends[route](n)
                SPENT[f"{route}: request"] += time.process_time() - started
    await xml_client.aclose()
    await fhir_client.aclose()
    _report(count)


def _report(count: int) -> None:
    for label in sorted(SPENT):
        print(f"{label:32s} {SPENT[label] / count * 1000:7.3f} ms CPU per visit")
    xml, fhir = SPENT["xml: request"], SPENT["fhir: request"]
    print(f"XML route / FHIR push, visits per CPU second: {fhir / xml:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store_a", type=Path, help="a copy of a store, for the XML route")
    parser.add_argument("store_b", type=Path, help="another copy, for the FHIR push")
    parser.add_argument("--visits", type=int, default=200)
    parser.add_argument("--seed", type=int, default=2_000 + int(time.time()) % 1_000_000)
    args = parser.parse_args()
    _timed(visits, "decode", "decode the envelope")
    _timed(visits, "_prepare", "check and map")
    _timed(visits, "build_transaction", "build the Bundle")
    _timed(visits, "stored_visit", "read the stored visit")
    _timed(dispatch, "parse_json", "parse the JSON body")
    _timed(bundle, "transaction", "the transaction")
    asyncio.run(_run(args.store_a, args.store_b, args.visits, args.seed))


if __name__ == "__main__":
    sys.exit(main())
