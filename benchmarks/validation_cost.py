"""What profile validation costs (issue 5), measured in-process.

    .venv/bin/python benchmarks/validation_cost.py

Reports: start-up time and memory of compiling profiles, terminology and the ICD-10 list;
p50 of validating a typical Vietnamese Patient, a 12-resource visit Bundle, and R4's blood
pressure example against R4's ``bp`` and ``vitalsigns`` (slices within slices, bindings on a
choice; the example is ``tests/conformance/r4_vital_signs.json``'s); and the cost of
validation inside the visit push (transactions through the same code as the API) with
``FHIR_SERVER_VALIDATION=enforce`` against ``off``, measured in the same run.
"""

from __future__ import annotations

import asyncio
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parent.parent


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _p50_us(action: Any, repeat: int = 300) -> float:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        samples.append((time.perf_counter() - started) * 1e6)
    return statistics.median(samples)


def _visit_bundles(count: int) -> list[dict[str, Any]]:
    from fhir_server.synthetic import generate

    out = Path(tempfile.mkdtemp(prefix="fhir-validation-cost-"))
    generate(count, 5, out)
    lines = (out / "visits-00001.ndjson").read_bytes().splitlines()
    return [orjson.loads(line) for line in lines]


async def _push_rate(bundles: list[dict[str, Any]], mode: str) -> float:
    """Bundles per second through the router (no HTTP), one process, as the server itself."""
    from fhir_server.loader import open_services
    from fhir_server.router.door import handle
    from fhir_server.router.request import FhirRequest
    from fhir_server.security.caller import SERVER
    from fhir_server.settings import Settings

    settings = Settings(data_dir=Path(tempfile.mkdtemp(prefix="fhir-push-")), validation=mode,
                        seed_search_parameters=False)
    async with open_services(settings) as services:
        started = time.perf_counter()
        for bundle in bundles:
            body = orjson.loads(orjson.dumps(bundle))
            await handle(services, FhirRequest("POST", "bundle", body=body), SERVER)
        return len(bundles) / (time.perf_counter() - started)


def main() -> int:
    before = _rss_mb()
    started = time.perf_counter()
    from fhir_server.conformance.profiles import default_validator

    patient = orjson.loads((REPO / "examples" / "valid" / "Patient-vn-patient.json").read_bytes())
    validator = default_validator()
    for example in sorted((REPO / "examples" / "valid").glob("*.json")):
        # The first validations load what is loaded lazily (the ICD-10 list, value sets).
        validator.validate_resource(orjson.loads(example.read_bytes()))
    startup_s = time.perf_counter() - started
    memory_mb = _rss_mb() - before
    bundles = _visit_bundles(60)
    resources = [e["resource"] for e in bundles[0]["entry"]]
    patient_us = _p50_us(lambda: validator.validate_resource(patient))
    vitals = orjson.loads((REPO / "tests" / "conformance" / "r4_vital_signs.json").read_bytes())
    bp = next(e["resource"] for e in vitals["examples"] if e["profile"] == "bp")
    core = [f"http://hl7.org/fhir/StructureDefinition/{p}" for p in ("vitalsigns", "bp")]
    bp_us = _p50_us(lambda: validator.validate(bp, core))
    bundle_us = _p50_us(lambda: [validator.validate_resource(r) for r in resources])
    enforce = asyncio.run(_push_rate(bundles, "enforce"))
    off = asyncio.run(_push_rate(bundles, "off"))
    print(f"start-up (profiles, terminology, ICD-10): {startup_s:.2f} s, {memory_mb:.0f} MB RSS")
    print(f"validate a Vietnamese Patient: p50 {patient_us:.0f} us (target <= 1000)")
    print(f"validate a {len(resources)}-resource visit: p50 {bundle_us / 1000:.2f} ms "
          "(target <= 10)")
    print(f"validate R4's blood pressure example against bp and vitalsigns: p50 {bp_us:.0f} us")
    print(f"push in-process: {enforce:.1f} bundles/s with validation enforce, {off:.1f} with "
          f"off; profile validation costs {100 * (1 - enforce / off):.0f}% of push throughput")
    return 0


if __name__ == "__main__":
    sys.exit(main())
