"""The visit push of two versions of the server, in alternating rounds on copies of one store.

Each round starts a child process on a fresh copy of the same store, with one version's code
first on its path (``--tree``), and pushes the same new visit Bundles in-process through that
version's request path, as a facility's ``system/*.cruds`` token, with auditing on, 8 at a time
(so that group commit works as under HTTP load). It reports the wall time, the CPU time and
the write lock's hold (``fhir_store_write_lock_hold_seconds``) per Bundle. Rounds alternate
A, B, B, A, A, B... so that a drift of the machine weighs on both.

    .venv/bin/python benchmarks/push_ab.py --a /tmp/old --b . --rounds 6 --bundles 200 \\
        --store-patients 2000

The Bundles are generated once (with this checkout's generator) and given to both versions.
The request path is found by what the version has: ``router.door.handle`` (the one door), or
the older ``interactions.bundle.process_bundle`` with the caller in ``security.guard``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CONCURRENCY = 8


def _generate(patients: int, seed: int, out: Path) -> list[Path]:
    from fhir_server.synthetic import generate

    generate(patients, seed, out)
    return sorted(out.glob("*.ndjson"))


async def _child(data_dir: Path, bundles_path: Path) -> dict[str, float]:
    """Push every Bundle of ``bundles_path`` (one per line) into the store of ``data_dir``."""
    from fhir_server.loader import open_services
    from fhir_server.security.scopes import parse_scopes
    from fhir_server.security.setup import audit_trail_for
    from fhir_server.security.tokens import AccessContext
    from fhir_server.settings import Settings

    lines = [line for line in bundles_path.read_bytes().splitlines() if line.strip()]
    context = AccessContext("bench", "https://bench", parse_scopes("system/*.cruds"),
                            2_000_000_000, client_id="bench")
    settings = Settings(data_dir=data_dir, seed_search_parameters=False)
    async with open_services(settings) as services:
        services.audit_trail = audit_trail_for(services)
        push = _push_function(services, context)
        await push(json.loads(lines[0]))  # what the first push builds, outside the timing
        queue = [json.loads(line) for line in lines[1:]]
        held = _lock_held()
        started, cpu = time.perf_counter(), time.process_time()

        async def worker() -> None:
            while queue:
                await push(queue.pop())

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        held = _lock_held() - held
        await services.audit_trail.close()
    count = len(lines) - 1
    return {"bundles": count, "wall_ms": wall * 1000 / count, "cpu_ms": cpu * 1000 / count,
            "per_second": count / wall, "hold_ms": held * 1000 / count}


def _lock_held() -> float:
    """The write lock's hold so far, in seconds (``fhir_store_write_lock_hold_seconds``)."""
    from fhir_server.metrics.catalogue import WRITE_LOCK_HOLD_SECONDS

    for metric in WRITE_LOCK_HOLD_SECONDS.collect():
        for sample in metric.samples:
            if sample.name.endswith("_sum"):
                return float(sample.value)
    return 0.0


def _push_function(services: Any, context: Any) -> Any:
    try:
        from fhir_server.router.door import handle
        from fhir_server.router.request import FhirRequest
        from fhir_server.security.caller import Caller
    except ImportError:
        return _old_push(services, context)
    caller = Caller.from_token(context)

    async def push(bundle: dict[str, Any]) -> None:
        answer = await handle(services, FhirRequest("POST", "bundle", body=bundle), caller)
        assert answer.status == 200

    return push


def _old_push(services: Any, context: Any) -> Any:
    from fhir_server.interactions.bundle import process_bundle  # type: ignore[attr-defined]
    from fhir_server.security import guard  # type: ignore[attr-defined]

    async def push(bundle: dict[str, Any]) -> None:
        token = guard.current.set(guard.RequestSecurity(context, audited=True))
        try:
            outcome = await process_bundle(services, bundle)
            assert outcome.status == 200
        finally:
            guard.current.reset(token)

    return push


def _load(tree: Path, data_dir: Path, ndjson: list[Path]) -> None:
    """Fill the base store with the version of ``tree`` (``fhir-server load``)."""
    code = ("import asyncio, sys; from pathlib import Path; from fhir_server.loader import "
            "load_paths; from fhir_server.settings import Settings; "
            "asyncio.run(load_paths(Settings(data_dir=Path(sys.argv[1]), "
            "seed_search_parameters=False), [Path(p) for p in sys.argv[2:]], 16))")
    subprocess.run([sys.executable, "-c", code, str(data_dir), *map(str, ndjson)],
                   env={**os.environ, "PYTHONPATH": str(tree)}, check=True)


def _round(tree: Path, base: Path, bundles: Path, work: Path) -> dict[str, float]:
    if work.exists():
        shutil.rmtree(work)
    shutil.copytree(base, work)
    out = subprocess.run([sys.executable, __file__, "--child", str(work), str(bundles)],
                         env={**os.environ, "PYTHONPATH": str(tree)}, check=True,
                         capture_output=True, text=True)
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(asyncio.run(_child(Path(sys.argv[2]), Path(sys.argv[3])))))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--a", type=Path, required=True, help="the checkout of version A")
    parser.add_argument("--b", type=Path, default=REPO, help="the checkout of version B")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--bundles", type=int, default=200)
    parser.add_argument("--store-patients", type=int, default=2000)
    args = parser.parse_args()
    temp = Path(tempfile.mkdtemp(prefix="fhir-push-ab-"))
    base = temp / "base"
    _load(args.a, base, _generate(args.store_patients, 1, temp / "store"))
    visit_files = _generate(args.bundles + 1, 9, temp / "visits")
    lines = [line for f in visit_files for line in f.read_bytes().splitlines() if line.strip()]
    bundles = temp / "bundles.ndjson"
    bundles.write_bytes(b"\n".join(lines[: args.bundles + 1]) + b"\n")
    results: dict[str, list[dict[str, float]]] = {"A": [], "B": []}
    order = ["A", "B", "B", "A"] * ((args.rounds + 1) // 2)
    for label in order[: args.rounds * 2]:
        tree = args.a if label == "A" else args.b
        results[label].append(_round(tree, base, bundles, temp / "work"))
        last = results[label][-1]
        print(f"{label}: {last['per_second']:.1f} Bundles/s, wall {last['wall_ms']:.2f} ms, "
              f"CPU {last['cpu_ms']:.2f} ms, lock held {last['hold_ms']:.2f} ms per Bundle",
              file=sys.stderr, flush=True)
    keys = ("per_second", "wall_ms", "cpu_ms", "hold_ms")
    summary = {label: {key: statistics.median(r[key] for r in runs) for key in keys}
               for label, runs in results.items()}
    summary["B/A"] = {key: summary["B"][key] / summary["A"][key] for key in keys}
    print(json.dumps({"rounds": args.rounds, "bundles": args.bundles,
                      "store_patients": args.store_patients, "load": os.getloadavg(),
                      **summary}, indent=1))
    shutil.rmtree(temp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
