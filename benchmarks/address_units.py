"""What the administrative-unit checks of addresses cost, against the same work without them,
measured in the same run.

    .venv/bin/python benchmarks/address_units.py [--repeat 2000]

Prints the p50 in microseconds, and the ratio, of:

- ``profile``: ``validate_resource`` of a Patient with a current address (province and commune)
  and of one with a 2024 address (province, district, commune, read at the visit's date),
  against a validator compiled from the same profiles without the ``address-units-by-date``
  mark (the baseline);
- ``annotate``: ``geography.addresses.annotate`` of each Patient (what a write adds);
- ``load``: the terminology of ``terminology/`` loaded from disk with and without the files of
  ``scripts/generate_geography.py``, and the unit tables (``Units``) built from it;
- ``start``: the start-up of the app (lifespan: registry, store, seeding of the conformance
  resources, warm-up) on a fresh and on an existing embedded store, with ``terminology/`` and
  with a copy of it without those files.

Samples of the two sides are taken alternately, so machine noise hits both alike.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import logging
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import orjson

from fhir_server.conformance.profiles import UNITS_BY_DATE_EXT, ProfileValidator
from fhir_server.conformance.terminology import Terminology, default_terminology
from fhir_server.geography.addresses import address_context, annotate
from fhir_server.geography.units import Units
from fhir_server.main import create_app
from fhir_server.settings import Settings

REPO = Path(__file__).resolve().parent.parent
SD = "https://fhir.sskdt.vn/StructureDefinition"
GEOGRAPHY = ("commune", "province-pre-2025", "district-pre-2025", "commune-pre-2025",
             "address-", "commune-of-", "-pre-2025-to-2025")  # fmt: skip
Json = dict[str, Any]


def patient(codes: list[tuple[str, str]]) -> Json:
    resource: Json = orjson.loads((REPO / "examples/valid/Patient-vn-patient.json").read_bytes())
    resource["address"][0]["extension"] = [
        {"url": f"{SD}/address-{level}-code", "valueCode": code} for level, code in codes]
    return resource


def validators() -> tuple[ProfileValidator, ProfileValidator]:
    """The project's validator, and one compiled without the address-units-by-date mark."""
    files = sorted((REPO / "profiles").glob("StructureDefinition-*.json"))
    definitions = [orjson.loads(p.read_bytes()) for p in files]
    unmarked = copy.deepcopy(definitions)
    for sd in unmarked:
        for element in sd.get("differential", {}).get("element", ()):
            element["extension"] = [e for e in element.get("extension", ())
                                    if e.get("url") != UNITS_BY_DATE_EXT]  # fmt: skip
    terminology = default_terminology()
    return ProfileValidator(definitions, terminology), ProfileValidator(unmarked, terminology)


def p50(samples: list[float]) -> float:
    return statistics.median(samples) * 1e6


def compare(name: str, with_: Callable[[], object], without: Callable[[], object],
            repeat: int) -> None:  # fmt: skip
    """Time both sides alternately; print their p50 and ratio."""
    a: list[float] = []
    b: list[float] = []
    for _ in range(repeat):
        for side, samples in ((with_, a), (without, b)):
            start = time.perf_counter()
            side()
            samples.append(time.perf_counter() - start)
    print(f"{name:38} {p50(a):9.1f} us  baseline {p50(b):9.1f} us  ratio {p50(a) / p50(b):5.2f}")


def load(skip_geography: bool) -> Terminology:
    files = sorted((REPO / "terminology").glob("*.json"))
    if skip_geography:
        files = [f for f in files if not any(g in f.name for g in GEOGRAPHY)]
    return Terminology(orjson.loads(f.read_bytes()) for f in files)


def start(data_dir: Path, terminology: Path) -> None:
    """Run the app's lifespan once (start and stop)."""
    settings = Settings(data_dir=data_dir, terminology_dir=terminology,
                        seed_search_parameters=False)

    async def run() -> None:
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            pass

    asyncio.run(run())


def compare_start(rounds: int) -> None:
    """Start-up with and without the geography files, on fresh and on existing stores."""
    logging.disable(logging.CRITICAL)
    work = Path(tempfile.mkdtemp())
    small = work / "terminology"
    small.mkdir()
    for path in (REPO / "terminology").glob("*.json"):
        if not any(g in path.name for g in GEOGRAPHY):
            (small / path.name).symlink_to(path)
    counter = iter(range(10**6))
    start(work / "warm", small)
    compare("start, fresh store", lambda: start(work / f"f{next(counter)}", REPO / "terminology"),
            lambda: start(work / f"f{next(counter)}", small), rounds)
    start(work / "full", REPO / "terminology")
    start(work / "small", small)
    compare("start, existing store", lambda: start(work / "full", REPO / "terminology"),
            lambda: start(work / "small", small), rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=2000)
    args = parser.parse_args()
    marked, unmarked = validators()
    current = patient([("province", "19"), ("commune", "05443")])
    old = patient([("province", "02"), ("district", "026"), ("commune", "00715")])
    with address_context(visit=date(2024, 3, 5)):
        for name, resource in (("current", current), ("2024", old)):
            assert not [i for i in marked.validate_resource(resource) if i.severity == "error"]
            compare(f"profile, {name} address", lambda r=resource: marked.validate_resource(r),
                    lambda r=resource: unmarked.validate_resource(r), args.repeat)
            compare(f"annotate, {name} address", lambda r=resource: annotate(copy.deepcopy(r)),
                    lambda r=resource: copy.deepcopy(r), args.repeat)
    rounds = max(3, args.repeat // 400)
    compare("load terminology/ (whole vs without)", lambda: load(False), lambda: load(True),
            rounds)
    terminology = load(False)
    began = time.perf_counter()
    Units(terminology)
    print(f"{'build Units from it':38} {(time.perf_counter() - began) * 1e3:9.1f} ms")
    compare_start(rounds)


if __name__ == "__main__":
    main()
