"""What the metrics and the JSON access log cost, as server CPU per read and per push.

    .venv/bin/python benchmarks/observability_cpu.py [--rounds 3] [--duration 10]

Throughput on this 2-core machine, shared with wrk and with other work, moves by more than
the cost being measured (``run.py --scenario observability``). This measures the cost the way
``audit_cost.py`` measures auditing's: a one-worker server on a fresh data directory (1,000
Patients seeded), with metrics
and the JSON access line on (the defaults: ``fhir-observed``), with the access line alone
(``FHIR_SERVER_METRICS=off``: ``fhir-logged``) and with both off (and log level ``warning``:
``fhir-quiet``) in turn, ``--rounds`` times each, in a rotating order; the same random reads
and then new visit Bundles (new patients every round) driven by wrk; the worker's user and
system CPU time read from ``/proc/<pid>/stat`` around each measured run. The ratio of CPU per
request is the throughput ratio a CPU-bound server would show.

First it times the two pieces in-process, in a child process with a multiprocess metrics
directory like a worker's (the best of 5 repeats of 20,000 calls, which load beside the run
disturbs least): counting one request (``observe_request``: a counter and a histogram in
memory-mapped files) and writing one access line (JSON and text) to a file.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from audit_cost import _cpu_s, _token
from loadgen import WrkLoad, run_wrk
from processes import LOOPBACK, free_port, running_server
from scenarios import LUA_DIR, SERVER_ENV, seed_patients

#: Patients whose visits one push run sends (about 1.9 visits each): more than 10 s need.
PUSH_PATIENTS = 2500


_PER_CALL = """
import logging, time
from fhir_server.logs import JsonFormatter, TextFormatter
from fhir_server.metrics.catalogue import observe_request
logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
fields = {"request_id": "4e0c86002359000000000000b7b08e95", "method": "GET",
          "path": "/fhir/Patient/0193", "status": 200, "duration_ms": 1.204,
          "interaction": "read", "resource_type": "Patient", "client_id": "bv-bach-mai"}
def best(call):
    times = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(20000):
            call()
        times.append((time.perf_counter() - started) / 20000 * 1e6)
    return min(times)
print(f"observe_request: {best(lambda: observe_request('read', 'Patient', 200, 0.0012)):.1f} us")
for name, formatter in (("json", JsonFormatter()), ("text", TextFormatter())):
    handler = logging.FileHandler(f"{WORK}/line-{name}.log")
    handler.setFormatter(formatter)
    log = logging.getLogger(f"fhir_server.access.{name}")
    log.addHandler(handler); log.setLevel("INFO"); log.propagate = False
    line = lambda: log.info("%s %s %d %.1f ms %s%s client=%s id=%s", "GET",
                            "/fhir/Patient/0193", 200, 1.2, "read", " Patient", "bv-bach-mai",
                            "4e0c", extra={"fields": fields})
    print(f"access line ({name}, to a file): {best(line):.1f} us")
"""


def _per_call_costs(work: Path) -> str:
    """The per-call figures, from a child process with a metrics directory of its own."""
    directory = work / "metrics"
    directory.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    code = f"WORK = {str(work)!r}\n" + _PER_CALL
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, check=True, timeout=600).stdout


def _visits(work: Path, seed: int) -> Path:
    """An NDJSON file of new visit Bundles (patients of ``seed``)."""
    from fhir_server.synthetic import generate

    out = work / f"visits-{seed}"
    generate(PUSH_PATIENTS, seed, out)
    joined = work / f"visits-{seed}.ndjson"
    with joined.open("wb") as handle:
        for part in sorted(out.glob("visits-*.ndjson")):
            handle.write(part.read_bytes())
    return joined


def _cpu_per(pid: int, requests: int, before: tuple[float, float, int]) -> float:
    user, system, _ = _cpu_s(pid)
    return (user - before[0] + system - before[1]) / max(requests, 1) * 1e6


def _measure(work: Path, server_name: str, seed: int, duration: int) -> dict[str, float]:
    # A fresh store each time: the pushes of earlier runs would make later ones dearer.
    data_dir, ids = work / f"data-{seed}", work / f"ids-{seed}.txt"
    port = free_port()
    command = [sys.executable, "-P", "-m", "fhir_server.cli", "serve", "--host", LOOPBACK, "--port",
               str(port), "--data-dir", str(data_dir), "--workers", "1"]
    env = {**os.environ, **SERVER_ENV[server_name]}
    visits, warm = _visits(work, seed), _visits(work, seed + 1)
    with running_server(server_name, command, port=port, ready_path="/readyz", env=env,
                        log_path=work / f"{server_name}-{seed}.log") as server:
        token = _token(data_dir, server.base_url + "/fhir")
        if not ids.exists():
            ids.write_text("\n".join(seed_patients(server.base_url, 1000, token)) + "\n")
        headers = [f"Authorization: Bearer {token}"]
        reads, pushes = LUA_DIR / "read_patient.lua", LUA_DIR / "post_bundles.lua"
        base, fhir = server.base_url + "/fhir/Patient/", server.base_url + "/fhir"
        run_wrk(base, reads, [str(ids)], WrkLoad(8, 2, 3), headers)  # warm-up
        before = _cpu_s(server.pid)
        read = run_wrk(base, reads, [str(ids)], WrkLoad(8, 2, duration), headers)
        read_cpu = _cpu_per(server.pid, read.requests, before)
        run_wrk(fhir, pushes, [str(warm), "2"], WrkLoad(8, 2, 3), headers)  # warm-up
        before = _cpu_s(server.pid)
        push = run_wrk(fhir, pushes, [str(visits), "2"], WrkLoad(8, 2, duration), headers)
        push_cpu = _cpu_per(server.pid, push.requests, before)
    return {"reads_per_s": read.requests_per_s, "read_cpu_us": read_cpu,
            "pushes_per_s": push.requests_per_s, "push_cpu_us": push_cpu,
            "errors": float(read.errors + push.errors)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fhir-observability-cpu-"))
    print(_per_call_costs(work), end="", flush=True)
    servers = ("fhir-observed", "fhir-logged", "fhir-quiet")
    figures: dict[str, list[dict[str, float]]] = {name: [] for name in servers}
    seed = 500_000
    for number in range(args.rounds):
        for name in servers[number % 3:] + servers[:number % 3]:
            seed += 10
            figures[name].append(_measure(work, name, seed, args.duration))
    print("server          reads/s  cpu us/read  pushes/s  cpu us/push  errors")
    medians: dict[str, dict[str, float]] = {}
    for name, rows in figures.items():
        medians[name] = {key: statistics.median(r[key] for r in rows) for key in rows[0]}
        m, errors = medians[name], sum(r["errors"] for r in rows)
        print(f"{name:<14} {m['reads_per_s']:8.0f} {m['read_cpu_us']:12.0f} "
              f"{m['pushes_per_s']:9.1f} {m['push_cpu_us']:12.0f} {errors:7.0f}")
        print(f"  rounds: cpu us/read {[round(r['read_cpu_us']) for r in rows]}, "
              f"cpu us/push {[round(r['push_cpu_us']) for r in rows]}")
    for label, on, off in (("metrics", "fhir-observed", "fhir-logged"),
                           ("the JSON access line", "fhir-logged", "fhir-quiet"),
                           ("both", "fhir-observed", "fhir-quiet")):
        more = {key: 100 * (medians[on][key] / medians[off][key] - 1)
                for key in ("read_cpu_us", "push_cpu_us")}
        print(f"{label} add {more['read_cpu_us']:.1f} % CPU per read, "
              f"{more['push_cpu_us']:.1f} % per push")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
