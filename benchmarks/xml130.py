"""The XML 130 bridge against the FHIR push of the same visits (issue 25).

``run.py [--data-dir DIR] --scenario xml130`` runs, in one run:

- ``xml130-convert``: conversion alone, in this process (decode, check, map, build the
  transaction Bundle; no validation, no storage), visits per second of CPU time on one core;
- ``push-xml130-fhir``: the transaction Bundles converted from synthetic envelopes of one visit
  each (seed A), POSTed to ``[base]`` from 8 connections: the FHIR push of these visits;
- ``push-xml130``: envelopes of one visit each (seed B: other new visits of the same
  generator), POSTed to ``[base]/$import-xml130`` from 8 connections: convert + validate +
  commit through the same push path.

A visit can be new only once, so the two pushes send two sets of new visits drawn the same way
rather than one set twice; both carry the same resources (the envelope's Binary and Provenance
included). Before the first of the two on a server, both routes are pushed for
``SERVER_WARMUP_S`` seconds each (other visits), so that the order does not favour the second;
the dirty pages of a fresh copy of the store are written out first (``os.sync``).
``push-xml130``'s detail gives its ratio to ``push-xml130-fhir`` (``xml_to_this`` in the
FHIR push's when the XML route ran first); each gives the server's CPU per request and cores
used, and the write lock's hold and wait (from ``/metrics``).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import orjson
from machine_use import lock_sums, lock_use
from results import Measurement
from scenarios import WARMUP_S, BenchContext, _from_wrk

__all__ = ["XML130_SCENARIOS"]

SEED = 2_000 + int(time.time()) % 1_000_000_000
#: Envelopes for a run of ``duration`` seconds at up to this many visits/s.
MAX_RATE = 300
CONVERT_VISITS = 600
#: Seconds of each route pushed before the first measured push on a server: with the routes'
#: own 3 s warm-up only, the scenario measured first ran on a cold server and store (3 to 4 ms
#: more CPU per visit in two runs of three on a 1,000,000-resource store); with 10 s it still
#: kept fewer of the cores (1.32-1.46 against 1.44-1.62, four runs); with 40 s both kept the
#: same (docs/performance.md). ``XML130_SERVER_WARMUP_S`` sets another.
SERVER_WARMUP_S = int(os.environ.get("XML130_SERVER_WARMUP_S", "40"))


def envelopes(seed: int, visits: int) -> list[bytes]:
    """``visits`` synthetic envelopes of one visit each (seed ``seed``), one line each."""
    from fhir_server.synthetic.generation import synthetic_visits
    from fhir_server.synthetic.xml130 import visit_envelope

    found: list[bytes] = []
    for visit, bundle in synthetic_visits(visits, seed):
        found.append(visit_envelope(visit, bundle).replace(b"\n", b""))
        if len(found) == visits:
            break
    return found


def _bundle(envelope: bytes) -> bytes:
    from fhir_server.bridges.xml130.transaction import Plan
    from fhir_server.bridges.xml130.visits import convert_only, standard_of

    plan = convert_only(envelope, standard_of("4750"))[0]
    assert isinstance(plan, Plan), plan
    return orjson.dumps(plan.bundle)


def _file(context: BenchContext, name: str, lines: list[bytes]) -> Path:
    path = context.workfile(name)
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def _visits(context: BenchContext, seconds: int | None = None) -> int:
    return MAX_RATE * (seconds or context.settings.load.duration_s)


def run_convert(context: BenchContext) -> list[Measurement]:
    """Conversion alone: visits per second of CPU time in this process."""
    from fhir_server.bridges.xml130.visits import convert_only, standard_of

    standard = standard_of("4750")
    sent = envelopes(SEED + 7, CONVERT_VISITS)
    started = time.process_time()
    for envelope in sent:
        convert_only(envelope, standard)
    spent = time.process_time() - started
    per_s = len(sent) / spent
    return [Measurement("xml130-convert", "in-process", round(per_s, 1),
                        round(1000 / per_s, 3), 0.0, len(sent), 0, (),
                        {"cpu_s": round(spent, 2)})]


def _warm_server(context: BenchContext, threads: int, headers: list[str]) -> None:
    """Before the first measured push on a server, push visits of both routes for
    ``SERVER_WARMUP_S`` seconds each, so that neither pays alone for a fresh server and store
    (cold page caches, first-use caches of the workers)."""
    from loadgen import WrkLoad, run_wrk
    from scenarios import LUA_DIR

    if context.cache.get("xml130-server-warm"):
        return
    context.cache["xml130-server-warm"] = True
    os.sync()  # a fresh copy of the store is not still being written back while measured
    visits = _visits(context, SERVER_WARMUP_S)
    fhir = _file(context, "xml130-fhir-server-warm.ndjson",
                 [_bundle(e) for e in envelopes(SEED + 4, visits)])
    xml = _file(context, "xml130-server-warm.txt", envelopes(SEED + 5, visits))
    doors = _doors(context.server("fhir").base_url)
    for door, lines in (("F", fhir), ("X", xml)):
        url, kind = doors[door]
        run_wrk(url, LUA_DIR / "post_bundles.lua", [str(lines), str(threads), kind],
                WrkLoad(8, threads, SERVER_WARMUP_S), headers)


def _doors(base: str) -> dict[str, tuple[str, str]]:
    """Each door's URL and Content-Type: X the XML route, F the FHIR push."""
    return {"X": (base + "/fhir/$import-xml130", "application/xml"),
            "F": (base + "/fhir", "application/fhir+json")}


def _push(context: BenchContext, name: str, path: str, lines: Path, warm: Path,
          content_type: str) -> Measurement:
    from loadgen import WrkLoad, run_wrk
    from scenarios import LUA_DIR

    url = context.server("fhir").base_url + path
    load = context.settings.load
    threads = min(load.threads, 8)
    headers = [f"Authorization: Bearer {context.token()}"]
    _warm_server(context, threads, headers)
    run_wrk(url, LUA_DIR / "post_bundles.lua", [str(warm), str(threads), content_type],
            WrkLoad(8, threads, WARMUP_S), headers)
    server = context.server("fhir")
    locks = lock_sums(server.base_url)
    result = run_wrk(url, LUA_DIR / "post_bundles.lua", [str(lines), str(threads), content_type],
                     WrkLoad(8, threads, load.duration_s), headers, server.pid)
    held = lock_use(locks, lock_sums(server.base_url), result.requests)
    measured = _from_wrk(name, result, url, ())
    measured = Measurement(measured.name, measured.kind, measured.requests_per_s,
                           measured.p50_ms, measured.p99_ms, measured.operations,
                           measured.errors, (), {**measured.detail, **held})
    sent = len(lines.read_bytes().splitlines())
    if measured.operations > sent:
        print(f"{name}: {measured.operations - sent} re-pushes (only {sent} visits generated)",
              file=sys.stderr)
    return measured


def run_push_fhir(context: BenchContext) -> list[Measurement]:
    """The FHIR push of visits converted from envelopes (seed A)."""
    lines = _file(context, "xml130-fhir.ndjson",
                  [_bundle(e) for e in envelopes(SEED, _visits(context))])
    warm = _file(context, "xml130-fhir-warm.ndjson",
                 [_bundle(e) for e in envelopes(SEED + 1, _visits(context, WARMUP_S))])
    measured = _push(context, "push-xml130-fhir", "/fhir", lines, warm, "application/fhir+json")
    context.cache["push-xml130-fhir"] = measured.requests_per_s
    xml = context.cache.get("push-xml130")  # the XML import ran first
    if isinstance(xml, float) and measured.requests_per_s:
        ratio = round(xml / measured.requests_per_s, 3)
        measured = Measurement(measured.name, measured.kind, measured.requests_per_s,
                               measured.p50_ms, measured.p99_ms, measured.operations,
                               measured.errors, (), {**measured.detail, "xml_to_this": ratio})
    return [measured]


def run_push_xml(context: BenchContext) -> list[Measurement]:
    """The XML 130 import of other new visits of the same kind (seed B)."""
    lines = _file(context, "xml130-envelopes.txt", envelopes(SEED + 2, _visits(context)))
    warm = _file(context, "xml130-warm.txt", envelopes(SEED + 3, _visits(context, WARMUP_S)))
    measured = _push(context, "push-xml130", "/fhir/$import-xml130", lines, warm,
                     "application/xml")
    context.cache["push-xml130"] = measured.requests_per_s
    fhir = context.cache.get("push-xml130-fhir")
    ratio = round(measured.requests_per_s / fhir, 3) if isinstance(fhir, float) and fhir else None
    return [Measurement(measured.name, measured.kind, measured.requests_per_s, measured.p50_ms,
                        measured.p99_ms, measured.operations, measured.errors,
                        ("push-xml130-fhir",), {**measured.detail, "ratio_to_fhir_push": ratio})]


#: The order of the measured slices: X the XML route, F the FHIR push. It is the Thue-Morse
#: sequence of 16, whose two halves are mirror images: a drift of the machine's speed that is
#: a polynomial of degree up to three over the run falls on both doors alike. (Eight slices,
#: balanced for a steady drift only, put the XML route first and slowest in four runs of four
#: while a fresh copy of the store warmed up: docs/performance.md.)
SLICE_ORDER = "XFFXFXXFFXXFXFFX"


def run_push_slices(context: BenchContext) -> list[Measurement]:
    """The two doors in alternating slices of the same minutes: 8 connections, one door at a
    time, ``duration / 4`` seconds a slice, eight slices each in the order ``SLICE_ORDER``."""
    from loadgen import WrkLoad, run_wrk
    from scenarios import LUA_DIR

    load = context.settings.load
    threads = min(load.threads, 8)
    seconds = max(2, load.duration_s // 4)
    base = context.server("fhir").base_url  # started first: the token is the server's
    server = context.server("fhir").pid
    headers = [f"Authorization: Bearer {context.token()}"]
    _warm_server(context, threads, headers)
    doors = _doors(base)
    count = _visits(context, seconds)
    files = []
    for index, door in enumerate(SLICE_ORDER):
        sent = envelopes(SEED + 20 + index, count)
        files.append(_file(context, f"xml130-slice-{index}.txt", sent) if door == "X" else
                     _file(context, f"xml130-slice-{index}.ndjson", [_bundle(e) for e in sent]))
    for door in "XF":  # each door's connections and caches warm before the first slice
        warm = envelopes(SEED + 40 + ord(door), _visits(context, WARMUP_S))
        path = _file(context, f"xml130-slice-warm-{door}",
                     warm if door == "X" else [_bundle(e) for e in warm])
        run_wrk(doors[door][0], LUA_DIR / "post_bundles.lua",
                [str(path), str(threads), doors[door][1]], WrkLoad(8, threads, WARMUP_S), headers)
    done: dict[str, list[float]] = {"X": [], "F": []}
    p50: dict[str, list[float]] = {"X": [], "F": []}
    p99: dict[str, list[float]] = {"X": [], "F": []}
    cpu: dict[str, list[float]] = {"X": [], "F": []}
    others: list[float] = []
    errors = 0
    for door, path in zip(SLICE_ORDER, files, strict=True):
        url, kind = doors[door]
        result = run_wrk(url, LUA_DIR / "post_bundles.lua", [str(path), str(threads), kind],
                         WrkLoad(8, threads, seconds), headers, server)
        cpu[door].append(result.use.get("server_cpu_ms_per_request", 0.0))
        others.append(result.use.get("other_cores", 0.0))
        done[door].append(result.requests_per_s)
        p50[door].append(result.percentiles_ms.get(50, 0.0))
        p99[door].append(result.percentiles_ms.get(99, 0.0))
        errors += result.errors
    xml, fhir = (sum(done[d]) / len(done[d]) for d in "XF")
    ratio = round(xml / fhir, 3) if fhir else 0.0
    pairs = [round(x / f, 3) for x, f in zip(done["X"], done["F"], strict=True) if f]
    detail = {"slice_s": seconds, "order": SLICE_ORDER,
              "xml_visits_per_s": round(xml, 1), "fhir_visits_per_s": round(fhir, 1),
              "xml_slices": done["X"], "fhir_slices": done["F"], "slice_ratios": pairs,
              "xml_p50_ms": _median(p50["X"]), "fhir_p50_ms": _median(p50["F"]),
              "xml_p99_ms": max(p99["X"]), "fhir_p99_ms": max(p99["F"]),
              "xml_cpu_ms_per_visit": _median(cpu["X"]), "fhir_cpu_ms_per_visit": _median(cpu["F"]),
              "other_cores_max": max(others, default=0.0),
              "other_cores_mean": round(sum(others) / max(len(others), 1), 2),
              "ratio_xml_to_fhir": ratio}
    return [Measurement("push-xml130-slices", "http", ratio, 0.0, 0.0,
                        int((xml + fhir) * seconds * len(SLICE_ORDER) / 2), errors, (), detail)]


def _median(values: list[float]) -> float:
    """The upper median of the slices' values (0 when there are none)."""
    return sorted(values)[len(values) // 2] if values else 0.0


XML130_SCENARIOS = {
    "xml130-convert": ("XML 130 conversion alone, in-process, one core", run_convert),
    "push-xml130-fhir": ("POST the converted Bundles (FHIR push), 8 connections", run_push_fhir),
    "push-xml130": ("POST envelopes to $import-xml130, 8 connections", run_push_xml),
    "push-xml130-slices": ("both doors in alternating slices, 8 connections (XML / FHIR)",
                           run_push_slices),
}
