"""What the metrics and the JSON access log cost the push and the reads (issue 31).

Scenario ``observability``: the visit push (new visits from 8 connections, as ``push``) and
``GET Patient/{id}`` (as ``fhir-read``) against two servers on the same data directory, one
with metrics and the JSON access line on (the defaults: ``fhir-observed``), one with both off
(``FHIR_SERVER_METRICS=off``, log level ``warning``: ``fhir-quiet``). Each is measured
``ROUNDS`` times on freshly started servers in the order observed, quiet, quiet, observed,
observed, quiet (so that the store's growth by the pushes weighs on both alike), each push
round with visits of new patients, and reported by its median run; the observed figures carry
their ratio to the quiet ones.

    .venv/bin/python benchmarks/run.py --scenario observability --duration 10
"""

from __future__ import annotations

from big_data import PUSH_SEED, _push_bundles
from loadgen import WrkLoad, run_wrk
from results import Measurement
from scenarios import LUA_DIR, WARMUP_S, BenchContext, _from_wrk, _median_run

__all__ = ["run_observability"]

ROUNDS = 3
_ORDER = (("fhir-observed", "fhir-quiet"), ("fhir-quiet", "fhir-observed"),
          ("fhir-observed", "fhir-quiet"))


def _push(context: BenchContext, server: str, number: int) -> Measurement:
    """One push run of visits of new patients (their own seed) on a fresh ``server``."""
    lines = _push_bundles(context, f"obs-push-{number}", PUSH_SEED + 100 + number)
    warm = _push_bundles(context, f"obs-warm-{number}", PUSH_SEED + 200 + number, WARMUP_S)
    url = context.server(server).base_url + "/fhir"
    threads = min(context.settings.load.threads, 8)
    headers = [f"Authorization: Bearer {context.token()}"]
    run_wrk(url, LUA_DIR / "post_bundles.lua", [str(warm), str(threads)],
            WrkLoad(8, threads, WARMUP_S), headers)
    result = run_wrk(url, LUA_DIR / "post_bundles.lua", [str(lines), str(threads)],
                     WrkLoad(8, threads, context.settings.load.duration_s), headers)
    context.close()
    baselines = ("push-quiet",) if server == "fhir-observed" else ()
    name = "push-observed" if server == "fhir-observed" else "push-quiet"
    return _from_wrk(name, result, url, baselines)


def _read(context: BenchContext, server: str) -> Measurement:
    ids = context.seeded_ids()
    url = context.server(server).base_url + "/fhir/Patient/"
    result = context.wrk(url, "read_patient.lua", [str(ids)])
    context.close()
    observed = server == "fhir-observed"
    return _from_wrk("read-observed" if observed else "read-quiet", result, url,
                     ("read-quiet",) if observed else ())


def run_observability(context: BenchContext) -> list[Measurement]:
    """Push and reads, observed and quiet, alternating; the median run of each."""
    runs: dict[str, list[Measurement]] = {}
    for number, pair in enumerate(_ORDER[:ROUNDS]):
        for server in pair:
            for measured in (_push(context, server, number), _read(context, server)):
                runs.setdefault(measured.name, []).append(measured)
    return [_median_run(found) for found in runs.values()]
