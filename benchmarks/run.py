"""Run the HTTP benchmark of ``fhir-server serve`` and its baselines; print a report.

    .venv/bin/python benchmarks/run.py [--duration 10] [--connections 16] [--workers 2]
                                       [--scenario core] [--json out.json]

Starts each server as a child process on a free loopback port with a fresh temporary data
directory, drives it with wrk, measures the baselines in the same run, prints one table and a
PASS/FAIL line per target, and stops every process it started, also on error or Ctrl-C. Exits
non-zero only when the run could not be made (wrk missing, a server that does not start).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson
from big_data import BIG_SCENARIOS
from loadgen import INSTALL_HINT, wrk_version
from observability_cost import run_observability
from results import Measurement, check_targets, format_table, report_json
from scenarios import SCENARIOS, SUITES, BenchContext, BenchSettings, Scenario, expand
from xml130 import XML130_SCENARIOS

for _name, (_description, _run) in {**BIG_SCENARIOS, **XML130_SCENARIOS}.items():
    SCENARIOS[_name] = Scenario(_name, _description, _run)
SUITES["big"] = tuple(BIG_SCENARIOS)
SUITES["xml130"] = tuple(XML130_SCENARIOS)
SCENARIOS["observability"] = Scenario(
    "observability", "push and reads with metrics and JSON access log on, then off",
    run_observability)

__all__ = ["main"]

# Asked of the server's interpreter: what uvicorn will pick for its loop and HTTP parser.
_SERVER_STACK_PROBE = (
    "import importlib.metadata as m, importlib.util as u; "
    "print(m.version('uvicorn'), bool(u.find_spec('uvloop')), bool(u.find_spec('httptools')))"
)


def build_parser() -> argparse.ArgumentParser:
    """Return the command-line parser of the benchmark runner."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=10, help="seconds per load (10)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections (16)")
    parser.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count() or 2,
        help="wrk threads (default: number of CPUs)",
    )
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers (2)")
    parser.add_argument(
        "--seed-patients",
        type=int,
        default=1000,
        help="Patients created before the read scenario (1000)",
    )
    parser.add_argument(
        "--scenario",
        action="append",
        default=None,
        help="scenario or suite, repeatable (default: core); "
        f"suites: {', '.join(SUITES)}; scenarios: {', '.join(SCENARIOS)}",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    parser.add_argument("--storage", default=None,
                        help="storage URL of the server under test (e.g. mongodb://...)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="use this prepared data directory (for --scenario big)")
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the temporary directory (server logs, data) for inspection",
    )
    return parser


def describe_machine(python: str) -> dict[str, Any]:
    """Return what the figures depend on: CPUs, Python, SQLite, wrk and the uvicorn stack."""
    probe = subprocess.run(
        [python, "-c", _SERVER_STACK_PROBE], capture_output=True, text=True, timeout=30, check=False
    )
    uvicorn, uvloop, httptools = [*probe.stdout.split(), "?", "?", "?"][:3]
    return {
        "nproc": os.cpu_count(),
        # Other work on the machine skews every figure; the load before the run shows it.
        "loadavg_1min_before": round(os.getloadavg()[0], 2),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "wrk": wrk_version(),
        "uvicorn": uvicorn,
        "uvloop": uvloop == "True",
        "httptools": httptools == "True",
    }


def measure(settings: BenchSettings, names: list[str]) -> list[Measurement]:
    """Run the named scenarios in order; always stop the servers they started."""
    context = BenchContext(settings)
    measurements: list[Measurement] = []
    try:
        for scenario in expand(names):
            print(f"-- {scenario.name}: {scenario.description}", file=sys.stderr, flush=True)
            measurements.extend(scenario.run(context))
    finally:
        context.close()
    return measurements


def _run_settings(settings: BenchSettings, names: list[str]) -> dict[str, Any]:
    return {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "scenarios": [s.name for s in expand(names)],
        "duration_s": settings.duration_s,
        "connections": settings.connections,
        "wrk_threads": min(settings.threads, settings.connections),
        "workers": settings.workers,
        "seed_patients": settings.seed_patients,
        "machine": describe_machine(settings.python),
        "env": {k: v for k, v in os.environ.items() if k.startswith("FHIR_SERVER_")},
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return 0 when it ran (whatever the verdicts), 2 when it could not."""
    args = build_parser().parse_args(argv)
    if wrk_version() is None:
        print(
            f"wrk (the HTTP load generator) is not installed; run: {INSTALL_HINT}", file=sys.stderr
        )
        return 2
    names = args.scenario or ["core"]
    workdir = Path(tempfile.mkdtemp(prefix="fhir-bench-"))
    try:
        settings = BenchSettings(
            args.duration, args.connections, args.threads, args.workers, args.seed_patients,
            workdir, data_dir=args.data_dir, storage=args.storage,
        )
        run = _run_settings(settings, names)
        measurements = measure(settings, names)
    except (KeyError, RuntimeError) as exc:
        print(f"benchmark could not run: {exc}", file=sys.stderr)
        return 2
    finally:
        if args.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    outcomes = check_targets(measurements)
    print(format_table(measurements, outcomes))
    if args.json is not None:
        report = report_json(measurements, outcomes, run)
        args.json.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
