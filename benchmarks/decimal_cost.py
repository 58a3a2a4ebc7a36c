"""What keeping decimals exact (``fhir_server.decimals``) costs the push, against plain orjson,
measured in the same run.

    .venv/bin/python benchmarks/decimal_cost.py [--bundles 150] [--rounds 6]

Synthetic visit Bundles (new patients of seed 77) are pushed in-process (httpx over ASGI,
access control off, validation on, a fresh SQLite store per side), in rounds that alternate
``before`` (``decimals.loads``/``dumps`` replaced by orjson's, the code as it was) and
``after`` (the code as it is), so machine noise hits both alike. Two kinds of Bundle:

- ``as generated``: the generator's numbers (``36.6``, ``72``), which a float gives back:
  ``after`` only adds the regex pass that finds none;
- ``with zeros``: every number with a fraction written with one more ``0`` (``36.60``): each
  Bundle takes the exact parse, the worst case.

It prints the median seconds per Bundle of each side and the ratio after/before, and the
microseconds per Bundle of the JSON steps alone (parse the body; serialise each resource as
the store does; parse each stored resource back).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from fhir_server import decimals  # noqa: E402
from fhir_server.main import create_app  # noqa: E402
from fhir_server.settings import Settings  # noqa: E402
from fhir_server.synthetic.generation import visit_bundles  # noqa: E402

_FRACTION = re.compile(rb"(:-?[0-9]+\.[0-9]+)(?=[,}\]])")


def bundles(count: int, seed: int, zeros: bool) -> list[bytes]:
    """``count`` visit Bundles as sent (orjson), numbers with a fraction given one more 0."""
    out: list[bytes] = []
    for bundle in visit_bundles(count, seed):
        body = orjson.dumps(bundle)
        out.append(_FRACTION.sub(rb"\g<1>0", body) if zeros else body)
        if len(out) == count:
            break
    return out


@contextmanager
def plain_orjson(on: bool) -> Iterator[None]:
    """Replace ``decimals.loads``/``dumps`` by orjson's while ``on`` (the code before)."""
    saved = decimals.loads, decimals.dumps
    if on:
        decimals.loads = orjson.loads  # type: ignore[assignment]
        decimals.dumps = lambda value, option=0: orjson.dumps(value, option=option)  # type: ignore[assignment]
    try:
        yield
    finally:
        decimals.loads, decimals.dumps = saved  # type: ignore[assignment]


async def push_round(bodies: list[bytes], before: bool) -> float:
    """Push ``bodies`` into a fresh store; return the median seconds per Bundle."""
    with tempfile.TemporaryDirectory() as tmp, plain_orjson(before):
        settings = Settings(data_dir=Path(tmp), base_url="http://bench/fhir", auth="off",
                            audit=False, seed_search_parameters=False, log_level="warning")
        app = create_app(settings)
        async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://bench"
        ) as client:
            times = []
            for body in bodies:
                started = time.perf_counter()
                response = await client.post("/fhir", content=body, headers={
                    "Content-Type": "application/fhir+json", "Prefer": "return=minimal"})
                times.append(time.perf_counter() - started)
                if response.status_code != 200:
                    raise SystemExit(f"push failed: {response.status_code} {response.text}")
    return statistics.median(times)


def json_steps(bodies: list[bytes], loads: Callable[[bytes], Any],
               dumps: Callable[[Any], bytes]) -> float:
    """Microseconds per Bundle of: parse it, serialise each resource, parse each back."""
    started = time.perf_counter()
    for body in bodies:
        bundle = loads(body)
        for entry in bundle["entry"]:
            loads(dumps(entry["resource"]))
    return (time.perf_counter() - started) / len(bodies) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundles", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    for zeros in (False, True):
        label = "with zeros" if zeros else "as generated"
        sides: dict[str, list[float]] = {"before": [], "after": []}
        steps: dict[str, list[float]] = {"before": [], "after": []}
        for round_ in range(args.rounds):
            bodies = bundles(args.bundles, 77 + round_, zeros)
            for side in (("before", "after") if round_ % 2 == 0 else ("after", "before")):
                sides[side].append(asyncio.run(push_round(bodies, side == "before")))
            steps["before"].append(json_steps(bodies, orjson.loads, orjson.dumps))
            steps["after"].append(json_steps(bodies, decimals.loads, decimals.dumps))
        before, after = (statistics.median(sides[s]) for s in ("before", "after"))
        json_before, json_after = (statistics.median(steps[s]) for s in ("before", "after"))
        print(f"{label}: push {before * 1e3:.2f} ms -> {after * 1e3:.2f} ms per Bundle "
              f"(after/before {after / before:.3f}); JSON steps {json_before:.0f} us -> "
              f"{json_after:.0f} us per Bundle")


if __name__ == "__main__":
    main()
