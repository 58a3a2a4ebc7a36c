"""What checking the facility's signature adds to the push: signed against unsigned visit
Bundles, measured in the same run.

    .venv/bin/python benchmarks/signature_cost.py [--bundles 150] [--rounds 4]

Synthetic visit Bundles (new patients of seeds 91...) are pushed in-process (httpx over ASGI,
access control off, validation on, ``signature_verification=enforce`` with a trust list of the
test PKI, a fresh SQLite store per round); each round alternates a signed Bundle (RS256 by a
facility certificate under the test intermediate, ``Bundle.signature`` over the ``#document``
canonical form) and an unsigned one, so machine noise hits both alike. The signed side pays the
canonical form, the JWS check, the chain and CRL check, and the proof's two writes (Binary and
Provenance). It prints p50 and p95 of each side over all rounds, and the p95 difference
against the target (<= 20 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from fhir_server.main import create_app  # noqa: E402
from fhir_server.settings import Settings  # noqa: E402
from fhir_server.synthetic.generation import visit_bundles  # noqa: E402
from tests import pki  # noqa: E402

TARGET_MS = 20.0


def bodies(count: int, seed: int) -> list[tuple[str, bytes]]:
    """``count`` visit Bundles, every other one signed, as sent."""
    signer = pki.pki().signer()
    out: list[tuple[str, bytes]] = []
    for n, bundle in enumerate(visit_bundles(count, seed)):
        if len(out) == count:
            break
        if n % 2 == 0:
            out.append(("signed", orjson.dumps(pki.sign_bundle(bundle, signer))))
        else:
            out.append(("unsigned", orjson.dumps(bundle)))
    return out


async def push_round(batch: list[tuple[str, bytes]], trust: Path) -> dict[str, list[float]]:
    """Push ``batch`` into a fresh store; return the seconds of each push by side."""
    times: dict[str, list[float]] = {"signed": [], "unsigned": []}
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), base_url="http://bench/fhir", auth="off",
                            audit=False, seed_search_parameters=False, log_level="warning",
                            signature_verification="enforce", signature_trust_list=trust)
        app = create_app(settings)
        async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://bench"
        ) as client:
            for side, body in batch:
                started = time.perf_counter()
                response = await client.post("/fhir", content=body, headers={
                    "Content-Type": "application/fhir+json", "Prefer": "return=minimal"})
                times[side].append(time.perf_counter() - started)
                if response.status_code != 200:
                    raise SystemExit(f"push failed: {response.status_code} {response.text}")
    return times


def _p(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundles", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        trust = pki.pki().trust_list(Path(tmp), pki.pki().crl())
        sides: dict[str, list[float]] = {"signed": [], "unsigned": []}
        for round_ in range(args.rounds):
            found = asyncio.run(push_round(bodies(args.bundles, 91 + round_), trust))
            for side, values in found.items():
                sides[side] += values[1:]  # the first push of a store warms it up
    for side, values in sides.items():
        print(f"{side:9s} n={len(values)} p50 {_p(values, 50):.2f} ms  p95 {_p(values, 95):.2f} ms")
    added = _p(sides["signed"], 95) - _p(sides["unsigned"], 95)
    added50 = _p(sides["signed"], 50) - _p(sides["unsigned"], 50)
    verdict = "PASS" if added <= TARGET_MS else "FAIL"
    print(f"added by the signature: p50 {added50:.2f} ms, p95 {added:.2f} ms "
          f"(target <= {TARGET_MS:.0f} ms): {verdict}")


if __name__ == "__main__":
    main()
